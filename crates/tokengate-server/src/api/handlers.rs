//! The endpoints: each translates HTTP into a service call and its outcome
//! back into HTTP. The rules live in [`crate::service`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::error::ApiError;
use super::extract::{Admin, ApiJson, Authenticated};
use crate::client_ip::ClientIp;
use crate::service::{Actor, IssuedTokens, LoginRequest, LogoutScope, NewAccount};
use crate::state::AppState;
use crate::storage::{AuditQuery, User};

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
    let account = NewAccount::parse(&body.email, &body.password, &["user"])?;
    let user = state
        .accounts
        .create(account, &Actor::Registration { ip: client })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": user.id, "email": user.email})),
    )
        .into_response())
}

fn token_response(tokens: &IssuedTokens) -> Response {
    Json(json!({
        "access_token": tokens.access,
        "token_type": "Bearer",
        "expires_in": tokens.access_expires_in,
        "refresh_token": tokens.refresh.expose(),
        "refresh_expires_in": tokens.refresh_expires_in,
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
    let tokens = state
        .sessions
        .login(LoginRequest {
            email: &body.email,
            password: &body.password,
            client,
            user_agent: user_agent_of(&headers),
        })
        .await?;
    Ok(token_response(&tokens))
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
    let tokens = state.sessions.refresh(&body.refresh_token, client).await?;
    Ok(token_response(&tokens))
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
    let scope = LogoutScope::parse(request.scope.as_deref())?;
    state
        .sessions
        .logout(&auth.user_id, &auth.session_id, scope, client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn me(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let user = state
        .store
        .user_by_id(&auth.user_id)
        .await?
        .ok_or(ApiError::InvalidToken { presented: true })?;
    Ok(Json(json!({
        "id": user.id,
        "email": user.email,
        "roles": user.role_list(),
        "session_id": auth.session_id,
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
    let current = auth.session_id.clone();
    let sessions: Vec<Value> = state
        .store
        .list_sessions(&auth.user_id, now)
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
    state
        .sessions
        .end_session(&auth.user_id, &id, client)
        .await?;
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
    let sid = auth.session_id;
    state
        .accounts
        .change_password(
            &auth.user_id,
            &sid,
            &body.current_password,
            &body.new_password,
            client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
    _admin: Admin,
    Query(q): Query<UserListQuery>,
) -> Result<Response, ApiError> {
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
    admin: Admin,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let roles = body.roles.unwrap_or_else(|| vec!["user".to_owned()]);
    let account = NewAccount::parse(&body.email, &body.password, &roles)?;
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let user = state.accounts.create(account, &actor).await?;
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
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let (user, _) = state
        .accounts
        .update(&id, body.roles.as_deref(), body.disabled, &actor)
        .await?;
    Ok(Json(user_json(&user)).into_response())
}

/// `POST /admin/users/{id}/revoke-sessions`.
pub async fn admin_revoke_sessions(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let actor = Actor::Admin {
        id: admin.id,
        ip: client,
    };
    let ended = state.accounts.end_all_sessions(&id, &actor).await?;
    Ok(Json(json!({ "sessions_ended": ended })).into_response())
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
    _admin: Admin,
    Query(q): Query<AuditParams>,
) -> Result<Response, ApiError> {
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
