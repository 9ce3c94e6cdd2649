//! `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`: the token
//! endpoints. Each translates HTTP into one service call and back.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Authenticated, OptionalApiJson};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;
use crate::service::{Actor, IssuedTokens, LoginRequest, LogoutScope, NewAccount};

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
pub struct LogoutRequest {
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /auth/logout` {scope: local | others | global}.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    auth: Authenticated,
    OptionalApiJson(request): OptionalApiJson<LogoutRequest>,
) -> Result<Response, ApiError> {
    let scope = LogoutScope::parse(request.scope.as_deref())?;
    state
        .sessions
        .logout(&auth.user_id, &auth.session_id, scope, client)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
