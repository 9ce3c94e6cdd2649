//! The endpoints.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokengate::{AccessClaims, Audience, SignOptions, b64};
use zeroize::Zeroizing;

use super::error::ApiError;
use super::extract::{ApiJson, Authenticated};
use crate::audit::AuditEvent;
use crate::client_ip::ClientIp;
use crate::domain::{Email, NewPassword};
use crate::state::AppState;
use crate::storage::{
    AuditQuery, ClientInfo, RevokeScope, Rotation, RotationRules, SessionRef, User,
};

fn random_id() -> Result<String, ApiError> {
    crate::domain::random_id().ok_or_else(|| ApiError::Internal("random generator failed".into()))
}

fn random_token() -> Result<Zeroizing<String>, ApiError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut *bytes).map_err(|_| ApiError::Internal("rng".into()))?;
    Ok(Zeroizing::new(b64::encode(*bytes)))
}

/// Refresh tokens are stored only as base64url(SHA-256(token)).
fn token_hash(token: &str) -> String {
    b64::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

use crate::config::secs;

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: Zeroizing<String>,
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    if !state.settings.registration {
        return Err(ApiError::RegistrationDisabled);
    }
    let email = Email::parse(&body.email).map_err(|detail| ApiError::Invalid {
        field: "email",
        detail,
    })?;
    let context = crate::domain::email_words(email.as_str());
    let password =
        NewPassword::parse(&body.password, &context).map_err(|detail| ApiError::Invalid {
            field: "password",
            detail,
        })?;
    let hash = state.hasher.hash(password.expose()).await?;
    let user = new_user(email.as_str(), hash, "user")?;
    let event = AuditEvent::new("user_registered")
        .user(&user.id)
        .ip(client)
        .with("email", email.as_str());
    create_user(&state, &user, event, client).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "email": user.email})),
    )
        .into_response())
}

fn new_user(email: &str, password_hash: String, roles: &str) -> Result<User, ApiError> {
    User::new(email, password_hash, roles)
        .ok_or_else(|| ApiError::Internal("random generator failed".into()))
}

/// Stores a new user with its audit row; a taken email is refused and
/// recorded on its own (the rolled-back insert leaves no row).
async fn create_user(
    state: &AppState,
    user: &User,
    event: AuditEvent,
    client: std::net::IpAddr,
) -> Result<(), ApiError> {
    let now = state.clock.now().as_secs();
    match state.store.create_user(user, now, &event).await {
        Ok(()) => {
            event.log();
            Ok(())
        }
        Err(crate::storage::StoreError::Conflict(crate::storage::Unique::Email)) => {
            state
                .record(
                    AuditEvent::new("register_rejected")
                        .ip(client)
                        .with("reason", "email_taken")
                        .with("email", user.email.as_str()),
                )
                .await;
            Err(ApiError::EmailTaken)
        }
        Err(e) => Err(e.into()),
    }
}

fn roles_text(roles: &[String]) -> Result<String, ApiError> {
    crate::domain::roles_text(roles).map_err(|detail| ApiError::Invalid {
        field: "roles",
        detail,
    })
}

/// Signs an access token for `user` in session `sid`.
fn access_token(
    state: &AppState,
    user: &User,
    sid: &str,
    now: tokengate::UnixTime,
) -> Result<String, ApiError> {
    let claims = AccessClaims {
        iss: state.settings.issuer.clone(),
        sub: user.id.clone(),
        aud: Audience::One(state.settings.audience.clone()),
        exp: now.as_secs() + secs(state.settings.access_ttl),
        iat: now.as_secs(),
        nbf: None,
        jti: random_id()?,
        sid: Some(sid.to_owned()),
        scope: Some(state.settings.access_scope.clone()),
        roles: user.role_list(),
    };
    state
        .keys
        .current()
        .ring
        .sign(
            &claims,
            &SignOptions::access_token(state.settings.access_ttl),
            now,
        )
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))
}

fn token_response(
    state: &AppState,
    access: &str,
    refresh: &str,
    refresh_expires_in: i64,
) -> Response {
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": secs(state.settings.access_ttl),
        "refresh_token": refresh,
        "refresh_expires_in": refresh_expires_in,
    }))
    .into_response()
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let ip = client;
    let user_agent = user_agent_of(&headers);
    let email = Email::parse(&body.email).map_err(|detail| ApiError::Invalid {
        field: "email",
        detail,
    })?;
    if body.password.is_empty() || body.password.chars().count() > crate::domain::MAX_PASSWORD_CHARS
    {
        return Err(ApiError::Invalid {
            field: "password",
            detail: "password must be 1 to 128 characters".into(),
        });
    }
    let now = state.clock.now();
    // Room for one password check is reserved before hashing, so however
    // many attempts arrive at once, no more than the limit reach the hasher.
    let reservation = match state
        .throttle
        .reserve(email.as_str(), state.limit_key(ip), now.as_secs())
        .await
    {
        Ok(reservation) => reservation,
        Err(retry_after) => {
            crate::metrics::login(crate::metrics::LoginOutcome::RateLimited);
            crate::metrics::rate_limited("login");
            state
                .record(
                    AuditEvent::new("login_rate_limited")
                        .ip(ip)
                        .with("email", email.as_str())
                        .with("retry_after", retry_after),
                )
                .await;
            return Err(ApiError::TooManyRequests { retry_after });
        }
    };
    let user = state.store.user_by_email(email.as_str()).await?;
    let known = user.is_some();
    // The hasher never computes a stored hash over the cost ceilings (it
    // takes the dummy's time instead); the operator must hear of it.
    let refused_hash = user.as_ref().and_then(|u| {
        let rule = crate::password::check_stored_hash_costs(&u.password_hash).err()?;
        tracing::error!(user_id = %u.id, %rule, "stored password hash refused: it never matches");
        Some(rule)
    });
    let verdict = state
        .hasher
        .verify(
            &body.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await;
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(e) => {
            state
                .throttle
                .settle(reservation, crate::ratelimit::Attempt::Unchecked)
                .await;
            return Err(e.into());
        }
    };
    let user = user.filter(|_| verdict.matches);
    state
        .throttle
        .settle(
            reservation,
            if user.is_some() {
                crate::ratelimit::Attempt::Succeeded
            } else {
                crate::ratelimit::Attempt::Failed
            },
        )
        .await;
    let Some(user) = user else {
        // The client gets one answer for both; the log keeps the difference.
        let reason = match (known, refused_hash) {
            (true, Some(_)) => "unusable_password_hash",
            (true, None) => "wrong_password",
            (false, _) => "unknown_user",
        };
        crate::metrics::login(crate::metrics::LoginOutcome::Failure);
        state
            .record(
                AuditEvent::new("login_failed")
                    .ip(ip)
                    .with("reason", reason)
                    .with("email", email.as_str()),
            )
            .await;
        return Err(ApiError::InvalidCredentials);
    };
    if user.disabled {
        crate::metrics::login(crate::metrics::LoginOutcome::Disabled);
        // Only after the right password: a disabled account is no secret to its owner.
        state
            .record(
                AuditEvent::new("login_failed")
                    .user(&user.id)
                    .ip(ip)
                    .with("reason", "user_disabled"),
            )
            .await;
        return Err(ApiError::AccountDisabled);
    }
    if verdict.needs_rehash {
        match state.hasher.hash(&body.password).await {
            Ok(hash) => {
                let event = AuditEvent::new("password_rehashed").user(&user.id).ip(ip);
                match state
                    .store
                    .set_password_hash(&user.id, &hash, now.as_secs(), &event)
                    .await
                {
                    Ok(()) => event.log(),
                    Err(e) => {
                        tracing::error!(cause = %e, user_id = %user.id, "password rehash not saved")
                    }
                }
            }
            Err(e) => tracing::error!(cause = %e, user_id = %user.id, "password rehash failed"),
        }
    }
    let session = SessionRef {
        id: random_id()?,
        user_id: user.id.clone(),
    };
    let refresh = random_token()?;
    let session_expires_at = now.as_secs() + secs(state.settings.session_lifetime);
    let refresh_expires_at =
        (now.as_secs() + secs(state.settings.refresh_ttl)).min(session_expires_at);
    let client = ClientInfo {
        user_agent,
        ip: Some(ip.to_string()),
    };
    let event = AuditEvent::new("login_succeeded")
        .user(&user.id)
        .session(&session.id)
        .ip(ip);
    let created = state
        .store
        .create_session(
            &session,
            user.session_epoch,
            &token_hash(&refresh),
            now.as_secs(),
            session_expires_at,
            refresh_expires_at,
            &client,
            &event,
        )
        .await?;
    if !created {
        // "Log out everywhere", a password change or disabling happened
        // while this login waited for the hasher: it must not outlive them.
        crate::metrics::login(crate::metrics::LoginOutcome::Failure);
        state
            .record(
                AuditEvent::new("login_failed")
                    .user(&user.id)
                    .ip(ip)
                    .with("reason", "sessions_ended_during_login"),
            )
            .await;
        return Err(ApiError::InvalidCredentials);
    }
    event.log();
    let access = access_token(&state, &user, &session.id, now)?;
    crate::metrics::login(crate::metrics::LoginOutcome::Success);
    Ok(token_response(
        &state,
        &access,
        &refresh,
        refresh_expires_at - now.as_secs(),
    ))
}

fn user_agent_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect())
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: Zeroizing<String>,
}

/// `POST /auth/refresh`: rotation with reuse detection.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = body.refresh_token.trim();
    let ip = client.to_string();
    if presented.len() != 43 || b64::decode(presented).is_err() {
        state
            .record(
                AuditEvent::new("refresh_failed")
                    .ip(&ip)
                    .with("reason", "malformed"),
            )
            .await;
        return Err(ApiError::InvalidGrant);
    }
    // The child is derived from the parent, so a concurrent refresh of the
    // same token (a second tab) gets the same child, never a second one.
    let child = Zeroizing::new(b64::encode(aws_lc_rs::hmac::sign(
        &state.refresh_key,
        presented.as_bytes(),
    )));
    let now = state.clock.now();
    let rules = RotationRules {
        now: now.as_secs(),
        refresh_ttl: secs(state.settings.refresh_ttl),
        reuse_interval: secs(state.settings.refresh_reuse_interval),
        idle_timeout: secs(state.settings.session_idle_timeout),
    };
    let outcome = state
        .store
        .rotate_refresh(&token_hash(presented), &token_hash(&child), rules, &ip)
        .await?;
    // The row is already stored with the change; the log line follows.
    if let Some(event) = outcome.audit_event(&ip) {
        event.log();
    }
    crate::metrics::refresh(match &outcome {
        Rotation::Rotated(_) => "rotated",
        Rotation::Replayed(_) => "replayed",
        Rotation::ReuseDetected(_) => "reuse_detected",
        Rotation::SessionEnded => "session_ended",
        Rotation::Invalid => "invalid",
    });
    let session = match outcome {
        Rotation::Rotated(session) | Rotation::Replayed(session) => session,
        Rotation::ReuseDetected(session) => {
            state.deny_session(&session.id, now.as_secs()).await;
            return Err(ApiError::InvalidGrant);
        }
        Rotation::SessionEnded => {
            state
                .record(
                    AuditEvent::new("refresh_failed")
                        .ip(&ip)
                        .with("reason", "session_ended"),
                )
                .await;
            return Err(ApiError::InvalidGrant);
        }
        Rotation::Invalid => {
            state
                .record(
                    AuditEvent::new("refresh_failed")
                        .ip(&ip)
                        .with("reason", "unknown_or_expired"),
                )
                .await;
            return Err(ApiError::InvalidGrant);
        }
    };
    let user = state
        .store
        .user_by_id(&session.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(ApiError::InvalidGrant)?;
    let access = access_token(&state, &user, &session.id, now)?;
    Ok(token_response(
        &state,
        &access,
        &child,
        secs(state.settings.refresh_ttl),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /auth/logout` {scope: local | others | global}.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutRequest::default()
    } else {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid {
            field: "body",
            detail: e.to_string(),
        })?
    };
    let claims = auth.claims;
    let sid = claims.sid.clone().unwrap_or_default();
    let now = state.clock.now().as_secs();
    let scope = request.scope.as_deref().unwrap_or("local");
    let revoke = match scope {
        "local" => RevokeScope::Only(&sid),
        "others" => RevokeScope::AllExcept(&sid),
        "global" => RevokeScope::All,
        _ => {
            return Err(ApiError::Invalid {
                field: "scope",
                detail: "scope must be local, others or global".into(),
            });
        }
    };
    let event = AuditEvent::new("logout")
        .user(&claims.sub)
        .session(&sid)
        .ip(client)
        .with("scope", scope);
    let ended = state
        .store
        .revoke_sessions(&claims.sub, revoke, now, &event)
        .await?;
    if RevokeScope::changed(revoke, &ended) {
        event.with("sessions_ended", ended.len()).log();
    }
    if scope == "local" {
        // Also when the session row was already gone: the token must die.
        state.deny_session(&sid, now).await;
    }
    for id in &ended {
        state.deny_session(id, now).await;
    }
    if scope == "global" {
        state.deny_user_before(&claims.sub, now).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /auth/me`.
pub async fn me(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let user = state
        .store
        .user_by_id(&auth.claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken { presented: true })?;
    Ok(Json(json!({
        "id": user.id,
        "email": user.email,
        "roles": user.role_list(),
        "session_id": auth.claims.sid,
    }))
    .into_response())
}

/// Caches may keep the JWKS at most as long as a new key waits before it
/// signs, so every verifier has it in time (capped at a day).
fn jwks_cache_control(state: &AppState) -> HeaderValue {
    let max_age = state.settings.key_publish_delay.as_secs().min(86_400);
    HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.keys.current().jwks_json.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(header::CACHE_CONTROL, jwks_cache_control(&state));
    response
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let base = &state.settings.public_url;
    let algs: Vec<String> = state
        .keys
        .current()
        .ring
        .active()
        .map(|k| vec![k.alg().name().to_owned()])
        .unwrap_or_default();
    let mut response = Json(json!({
        "issuer": state.settings.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/auth/login"),
        "refresh_endpoint": format!("{base}/auth/refresh"),
        "registration_endpoint": format!("{base}/auth/register"),
        "revocation_endpoint": format!("{base}/auth/logout"),
        "userinfo_endpoint": format!("{base}/auth/me"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["none"],
        "id_token_signing_alg_values_supported": algs,
        "access_token_signing_alg_values_supported": algs,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, jwks_cache_control(&state));
    response
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the database answers.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if state.store.ping().await {
        Ok(Json(json!({"status": "ready"})).into_response())
    } else {
        Err(ApiError::Unavailable("database unreachable".into()))
    }
}

/// `GET /auth/sessions`: the caller's live sessions.
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let now = state.clock.now().as_secs();
    let current = auth.claims.sid.clone().unwrap_or_default();
    let sessions: Vec<Value> = state
        .store
        .list_sessions(&auth.claims.sub, now)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id, "created_at": s.created_at, "last_used_at": s.last_used_at,
                "user_agent": s.user_agent, "ip": s.ip, "current": s.id == current,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

/// `DELETE /auth/sessions/{id}`: ends one of the caller's sessions.
pub async fn end_session(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = state.clock.now().as_secs();
    let event = AuditEvent::new("session_revoked")
        .user(&auth.claims.sub)
        .session(&id)
        .ip(client)
        .with("by", "user");
    let ended = state
        .store
        .revoke_sessions(&auth.claims.sub, RevokeScope::Only(&id), now, &event)
        .await?;
    if ended.is_empty() {
        // Not the caller's, already ended, or unknown: one answer for all.
        return Err(ApiError::NotFound);
    }
    event.log();
    state.deny_session(&id, now).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct PasswordChange {
    current_password: Zeroizing<String>,
    new_password: Zeroizing<String>,
}

/// `POST /auth/password`: changes the password, ends every other session.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let now = state.clock.now().as_secs();
    let user = state
        .store
        .user_by_id(&auth.claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken { presented: true })?;
    let reservation = state
        .throttle
        .reserve(&user.email, state.limit_key(client), now)
        .await
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let verdict = state
        .hasher
        .verify(&body.current_password, Some(&user.password_hash))
        .await;
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(e) => {
            state
                .throttle
                .settle(reservation, crate::ratelimit::Attempt::Unchecked)
                .await;
            return Err(e.into());
        }
    };
    let attempt = if verdict.matches {
        crate::ratelimit::Attempt::Succeeded
    } else {
        crate::ratelimit::Attempt::Failed
    };
    state.throttle.settle(reservation, attempt).await;
    if !verdict.matches {
        state
            .record(
                AuditEvent::new("password_change_failed")
                    .user(&user.id)
                    .ip(client)
                    .with("reason", "wrong_current_password"),
            )
            .await;
        return Err(ApiError::InvalidCredentials);
    }
    let context = crate::domain::email_words(&user.email);
    let new_password =
        NewPassword::parse(&body.new_password, &context).map_err(|detail| ApiError::Invalid {
            field: "new_password",
            detail,
        })?;
    let hash = state.hasher.hash(new_password.expose()).await?;
    let sid = auth.claims.sid.clone().unwrap_or_default();
    let event = AuditEvent::new("password_changed")
        .user(&user.id)
        .session(&sid)
        .ip(client);
    let ended = state
        .store
        .change_password(&user.id, &hash, &sid, now, &event)
        .await?;
    event.with("sessions_ended", ended.len()).log();
    for id in &ended {
        state.deny_session(id, now).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An authenticated caller whose *current* roles (read from the database,
/// not trusted from the token) include `admin`, and who is not disabled.
pub struct Admin {
    /// The admin's user id.
    pub id: String,
}

async fn require_admin(state: &AppState, auth: &Authenticated) -> Result<Admin, ApiError> {
    let user = state
        .store
        .user_by_id(&auth.claims.sub)
        .await?
        .filter(|u| !u.disabled)
        .ok_or(ApiError::InvalidToken { presented: true })?;
    if user.role_list().iter().any(|r| r == "admin") {
        Ok(Admin { id: user.id })
    } else {
        Err(ApiError::Forbidden)
    }
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id, "email": u.email, "roles": u.role_list(),
        "disabled": u.disabled, "created_at": u.created_at,
    })
}

#[derive(Deserialize)]
pub struct UserListQuery {
    email: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/users?email=&after=&limit=`.
pub async fn admin_list_users(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
    Query(q): Query<UserListQuery>,
) -> Result<Response, ApiError> {
    require_admin(&state, &auth).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let users = state
        .store
        .list_users(
            q.email.as_deref().filter(|s| !s.is_empty()),
            q.after.as_deref(),
            limit,
        )
        .await?;
    let next = if users.len() as i64 == limit {
        users.last().map(|u| u.email.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "users": users.iter().map(user_json).collect::<Vec<_>>(),
        "next_after": next,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct NewUser {
    email: String,
    password: Zeroizing<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// `POST /admin/users`.
pub async fn admin_create_user(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let admin = require_admin(&state, &auth).await?;
    let email = Email::parse(&body.email).map_err(|detail| ApiError::Invalid {
        field: "email",
        detail,
    })?;
    let roles = roles_text(body.roles.as_deref().unwrap_or(&["user".to_owned()]))?;
    let context = crate::domain::email_words(email.as_str());
    let password =
        NewPassword::parse(&body.password, &context).map_err(|detail| ApiError::Invalid {
            field: "password",
            detail,
        })?;
    let hash = state.hasher.hash(password.expose()).await?;
    let mut user = new_user(email.as_str(), hash, &roles)?;
    let event = AuditEvent::new("admin_user_created")
        .user(&user.id)
        .ip(client)
        .with("actor", admin.id.as_str())
        .with("roles", roles.as_str());
    create_user(&state, &user, event, client).await?;
    user.created_at = state.clock.now().as_secs();
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// `PATCH /admin/users/{id}` {roles?, disabled?}.
pub async fn admin_update_user(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    let admin = require_admin(&state, &auth).await?;
    let roles = body.roles.as_deref().map(roles_text).transpose()?;
    if roles.is_none() && body.disabled.is_none() {
        return Err(ApiError::Invalid {
            field: "body",
            detail: "give roles and/or disabled".into(),
        });
    }
    let mut event = AuditEvent::new("admin_user_updated")
        .user(&id)
        .ip(client)
        .with("actor", admin.id.as_str());
    if let Some(roles) = &roles {
        event = event.with("roles", roles.as_str());
    }
    if let Some(disabled) = body.disabled {
        event = event.with("disabled", disabled);
    }
    let now = state.clock.now().as_secs();
    let (user, ended) = state
        .store
        .update_user(&id, roles.as_deref(), body.disabled, now, &event)
        .await?
        .ok_or(ApiError::NotFound)?;
    event.with("sessions_ended", ended.len()).log();
    if body.disabled == Some(true) {
        for sid in &ended {
            state.deny_session(sid, now).await;
        }
        // Every access token issued so far, even of sessions already gone.
        state.deny_user_before(&id, now + 1).await;
    }
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /admin/users/{id}/revoke-sessions`.
pub async fn admin_revoke_sessions(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let admin = require_admin(&state, &auth).await?;
    if state.store.user_by_id(&id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let now = state.clock.now().as_secs();
    let event = AuditEvent::new("admin_sessions_revoked")
        .user(&id)
        .ip(client)
        .with("actor", admin.id.as_str());
    let ended = state
        .store
        .revoke_sessions(&id, RevokeScope::All, now, &event)
        .await?;
    event.with("sessions_ended", ended.len()).log();
    for sid in &ended {
        state.deny_session(sid, now).await;
    }
    state.deny_user_before(&id, now).await;
    Ok(Json(json!({ "sessions_ended": ended.len() })).into_response())
}

#[derive(Deserialize)]
pub struct AuditParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    user: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/audit?type=&user=&before=&limit=`: newest first, by cursor.
pub async fn admin_audit(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
    Query(q): Query<AuditParams>,
) -> Result<Response, ApiError> {
    require_admin(&state, &auth).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = state
        .store
        .audit_page(&AuditQuery {
            kind: q.kind.filter(|s| !s.is_empty()),
            user_id: q.user.filter(|s| !s.is_empty()),
            before: q.before,
            limit,
        })
        .await?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(json!({ "events": rows, "next_before": next })).into_response())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let handle = crate::metrics::init()
        .ok_or_else(|| ApiError::Internal("metrics recorder not installed".into()))?;
    let live = state
        .store
        .count_active_sessions(state.clock.now().as_secs())
        .await?;
    crate::metrics::active_sessions(live);
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
