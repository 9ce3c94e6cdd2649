//! The endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokengate::{AccessClaims, Audience, SignOptions, b64};
use zeroize::Zeroizing;

use super::error::ApiError;
use super::extract::{ApiJson, Authenticated};
use crate::domain::{Email, NewPassword};
use crate::state::AppState;
use crate::storage::{RevokeScope, Rotation, RotationRules, SessionRef, User};

fn random_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::Internal("rng".into()))?;
    Ok(b64::encode(bytes))
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

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Marks a response that carries tokens as never cacheable.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Deserialize)]
pub struct Credentials {
    email: String,
    password: Zeroizing<String>,
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    if !state.settings.registration {
        return Err(ApiError::RegistrationDisabled);
    }
    let email = Email::parse(&body.email).map_err(|detail| ApiError::Invalid {
        field: "email",
        detail,
    })?;
    let context: Vec<&str> = email
        .as_str()
        .split(['@', '.', '_', '-', '+'])
        .filter(|p| !p.is_empty())
        .collect();
    let password =
        NewPassword::parse(&body.password, &context).map_err(|detail| ApiError::Invalid {
            field: "password",
            detail,
        })?;
    let hash = state.hasher.hash(password.expose()).await?;
    let user = User {
        id: random_id()?,
        email: email.as_str().to_owned(),
        password_hash: hash,
        roles: "user".into(),
        not_before: None,
    };
    let now = state.clock.now().as_secs();
    match state.store.create_user(&user, now).await {
        Ok(()) => {}
        Err(crate::storage::StoreError::Conflict) => {
            tracing::info!(target: "audit", event = "register_rejected", reason = "email_taken", email = %email, ip = %peer.ip());
            return Err(ApiError::EmailTaken);
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(target: "audit", event = "user_registered", user_id = %user.id, email = %email, ip = %peer.ip());
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "email": user.email})),
    )
        .into_response())
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
    no_store(
        Json(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": secs(state.settings.access_ttl),
            "refresh_token": refresh,
            "refresh_expires_in": refresh_expires_in,
        }))
        .into_response(),
    )
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let ip = peer.ip();
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
    let keys = [format!("acct:{email}"), format!("ip:{ip}")];
    if let Some(retry_after) = state.throttle.blocked_for(&keys, now.as_secs()).await {
        tracing::warn!(target: "audit", event = "login_rate_limited", email = %email, ip = %ip, retry_after);
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let user = state.store.user_by_email(email.as_str()).await?;
    let known = user.is_some();
    let verdict = state
        .hasher
        .verify(
            &body.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;
    let Some(user) = user.filter(|_| verdict.matches) else {
        state.throttle.record_failure(&keys, now.as_secs()).await;
        // The client gets one answer for both; the log keeps the difference.
        let reason = if known {
            "wrong_password"
        } else {
            "unknown_user"
        };
        tracing::warn!(target: "audit", event = "login_failed", reason, email = %email, ip = %ip);
        return Err(ApiError::InvalidCredentials);
    };
    if verdict.needs_rehash {
        match state.hasher.hash(&body.password).await {
            Ok(hash) => {
                if let Err(e) = state
                    .store
                    .set_password_hash(&user.id, &hash, now.as_secs())
                    .await
                {
                    tracing::error!(cause = %e, user_id = %user.id, "password rehash not saved");
                } else {
                    tracing::info!(target: "audit", event = "password_rehashed", user_id = %user.id);
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
    state
        .store
        .create_session(
            &session,
            &token_hash(&refresh),
            now.as_secs(),
            session_expires_at,
            refresh_expires_at,
        )
        .await?;
    let access = access_token(&state, &user, &session.id, now)?;
    tracing::info!(target: "audit", event = "login_succeeded", user_id = %user.id, session_id = %session.id, ip = %ip);
    Ok(token_response(
        &state,
        &access,
        &refresh,
        refresh_expires_at - now.as_secs(),
    ))
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: Zeroizing<String>,
}

/// `POST /auth/refresh`: rotation with reuse detection.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let presented = body.refresh_token.trim();
    if presented.len() != 43 || b64::decode(presented).is_err() {
        tracing::info!(target: "audit", event = "refresh_failed", reason = "malformed", ip = %peer.ip());
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
        .rotate_refresh(&token_hash(presented), &token_hash(&child), rules)
        .await?;
    let session = match outcome {
        Rotation::Rotated(session) => {
            tracing::info!(target: "audit", event = "refresh_rotated", user_id = %session.user_id, session_id = %session.id, ip = %peer.ip());
            session
        }
        Rotation::Replayed(session) => {
            tracing::info!(target: "audit", event = "refresh_replayed_within_interval", user_id = %session.user_id, session_id = %session.id, ip = %peer.ip());
            session
        }
        Rotation::ReuseDetected(session) => {
            let until = now.as_secs() + secs(state.settings.access_ttl);
            state.revocations.revoke_session(&session.id, until).await;
            tracing::warn!(target: "audit", event = "refresh_reuse_detected", user_id = %session.user_id, session_id = %session.id, ip = %peer.ip(), action = "session_revoked");
            return Err(ApiError::InvalidGrant);
        }
        Rotation::SessionEnded => {
            tracing::info!(target: "audit", event = "refresh_failed", reason = "session_ended", ip = %peer.ip());
            return Err(ApiError::InvalidGrant);
        }
        Rotation::Invalid => {
            tracing::info!(target: "audit", event = "refresh_failed", reason = "unknown_or_expired", ip = %peer.ip());
            return Err(ApiError::InvalidGrant);
        }
    };
    let user = state
        .store
        .user_by_id(&session.user_id)
        .await?
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    let until = now + secs(state.settings.access_ttl);
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
    let ended = state
        .store
        .revoke_sessions(&claims.sub, revoke, &format!("logout_{scope}"), now)
        .await?;
    if scope == "local" {
        // Also when the session row was already gone: the token must die.
        state.revocations.revoke_session(&sid, until).await;
    }
    for id in &ended {
        state.revocations.revoke_session(id, until).await;
    }
    if scope == "global" {
        state
            .revocations
            .revoke_user_before(&claims.sub, now, until)
            .await;
    }
    tracing::info!(target: "audit", event = "logout", scope, user_id = %claims.sub, session_id = %sid, sessions_ended = ended.len(), ip = %peer.ip());
    Ok(no_store(StatusCode::NO_CONTENT.into_response()))
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
    Ok(no_store(
        Json(json!({
            "id": user.id,
            "email": user.email,
            "roles": user.role_list(),
            "session_id": auth.claims.sid,
        }))
        .into_response(),
    ))
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.jwks_json.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `GET /.well-known/openid-configuration`.
pub async fn discovery(State(state): State<Arc<AppState>>) -> Response {
    let base = &state.settings.public_url;
    let algs: Vec<String> = state
        .keys
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
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
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
