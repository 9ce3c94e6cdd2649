//! The caller's own account: `/auth/me`, `/auth/sessions`, `/auth/password`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, Authenticated};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

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
        "roles": user.roles.as_slice(),
        "session_id": auth.session_id,
    }))
    .into_response())
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
                "user_agent": s.user_agent, "ip": s.ip, "current": current == s.id.as_str(),
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
    ApiPath(id): ApiPath<String>,
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
