//! The caller's own account: `/auth/me`, `/auth/sessions`, `/auth/password`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, Authenticated};
use crate::http::openapi::{
    BadRequest, Forbidden, InternalError, NotFound, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, UnprocessableEntity, UnsupportedMediaType,
};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

/// The caller, as `/auth/me` shows them.
#[derive(Serialize, ToSchema)]
pub struct Me<'a> {
    /// The user id (`sub`).
    id: &'a str,
    /// The email.
    email: &'a str,
    /// The current roles (from the database, not the token).
    roles: &'a [String],
    /// The session of the token presented (`sid`).
    session_id: &'a str,
}

/// `GET /auth/me`: who the token's user is now.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "account",
    operation_id = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller.", body = Me),
        (status = 401, response = inline(Unauthorized)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn me(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let user = state
        .store
        .user_by_id(&auth.user_id)
        .await?
        .ok_or_else(|| auth.gone())?;
    Ok(Json(Me {
        id: user.id.as_str(),
        email: &user.email,
        roles: user.roles.as_slice(),
        session_id: auth.session_id.as_str(),
    })
    .into_response())
}

/// One of the caller's live sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// The session id (`sid` of its tokens).
    id: String,
    /// Started, Unix seconds.
    created_at: i64,
    /// Last refreshed, Unix seconds.
    last_used_at: i64,
    /// The client software that logged in, when it said.
    user_agent: Option<String>,
    /// The client address that logged in.
    ip: Option<String>,
    /// Whether this is the session of the token presented.
    current: bool,
}

/// The caller's live sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

/// `GET /auth/sessions`: the caller's live sessions.
#[utoipa::path(
    get,
    path = "/auth/sessions",
    tag = "account",
    operation_id = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live sessions.", body = SessionList),
        (status = 401, response = inline(Unauthorized)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let now = state.clock.now().as_secs();
    let current = auth.session_id.clone();
    let sessions = state
        .store
        .list_sessions(&auth.user_id, now)
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: current == s.id.as_str(),
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(Json(SessionList { sessions }).into_response())
}

/// `DELETE /auth/sessions/{id}`: ends one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/auth/sessions/{id}",
    tag = "account",
    operation_id = "end_session",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id from `/auth/sessions`; never a control character.", pattern = "^[^\\x00-\\x1F\\x7F]*$")),
    responses(
        (status = 204, description = "The session is ended; its access tokens are rejected at once."),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 404, response = inline(NotFound)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn end_session(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state
        .sessions
        .end_session(&auth.user_id, &id, client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of a password change.
#[derive(Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password in force.
    #[schema(value_type = String, format = Password)]
    current_password: Zeroizing<String>,
    /// 12 to 128 characters, hard to guess (registration's policy).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    new_password: Zeroizing<String>,
}

/// `POST /auth/password`: changes the password, ends every other session.
#[utoipa::path(
    post,
    path = "/auth/password",
    tag = "account",
    operation_id = "change_password",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; every other session is ended, this one goes on."),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(Forbidden)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 429, response = inline(TooManyRequests)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
