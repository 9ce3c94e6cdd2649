//! `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`: the token
//! endpoints. Each translates HTTP into one service call and back.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Authenticated, OptionalApiJson};
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, InternalError, InvalidCredentials, InvalidGrant,
    PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized, UnprocessableEntity,
    UnsupportedMediaType,
};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;
use crate::service::{Actor, IssuedTokens, LoginRequest, LogoutScope, NewAccount};

/// An email and a password: the body of registration and login.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Trimmed and lower-cased before use.
    #[schema(example = "ada@example.com")]
    email: String,
    /// 12 to 128 characters and hard to guess to register; 1 to 128 to
    /// log in.
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 128)]
    password: Zeroizing<String>,
}

/// The account just registered.
#[derive(Serialize, ToSchema)]
pub struct RegisteredUser {
    /// The user id (the `sub` of their tokens).
    id: String,
    /// The normalised email.
    email: String,
}

/// `POST /auth/register`.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    operation_id = "register",
    request_body = Credentials,
    responses(
        (status = 201, description = "The account is created, with the role `user`.", body = RegisteredUser),
        (status = 400, response = inline(BadRequest)),
        (status = 403, response = inline(Forbidden)),
        (status = 409, response = inline(Conflict)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
        Json(RegisteredUser {
            id: user.id.to_string(),
            email: user.email,
        }),
    )
        .into_response())
}

/// A new token pair, from a login or a refresh.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse<'a> {
    /// The access JWT (`typ: at+jwt`), for `Authorization: Bearer`.
    access_token: &'a str,
    /// Always `Bearer`.
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds the access token is valid for.
    expires_in: i64,
    /// The refresh token: one use, for `/auth/refresh`.
    refresh_token: &'a str,
    /// Seconds the refresh token is valid for.
    refresh_expires_in: i64,
}

fn token_response(tokens: &IssuedTokens) -> Response {
    Json(TokenResponse {
        access_token: &tokens.access,
        token_type: "Bearer",
        expires_in: tokens.access_expires_in,
        refresh_token: tokens.refresh.expose(),
        refresh_expires_in: tokens.refresh_expires_in,
    })
    .into_response()
}

/// `POST /auth/login`.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = Credentials,
    responses(
        (status = 200, description = "A new session: an access token and a refresh token.", body = TokenResponse),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(InvalidCredentials)),
        (status = 403, response = inline(Forbidden)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 429, response = inline(TooManyRequests)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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

/// The body of a refresh.
#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    #[schema(value_type = String)]
    refresh_token: Zeroizing<String>,
}

/// `POST /auth/refresh`: rotation with reuse detection.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access token and a new refresh token; the one presented is used up.", body = TokenResponse),
        (status = 400, response = inline(InvalidGrant)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let tokens = state.sessions.refresh(&body.refresh_token, client).await?;
    Ok(token_response(&tokens))
}

/// The optional body of a logout.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// `local` (the default): this session; `others`: every other session
    /// of the user; `global`: all of them.
    #[serde(default)]
    #[schema(pattern = "^(local|others|global)$")]
    scope: Option<String>,
}

/// `POST /auth/logout` {scope: local | others | global}.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    operation_id = "logout",
    security(("bearer" = [])),
    request_body(content = Option<LogoutRequest>, description = "Optional: no body is a local logout."),
    responses(
        (status = 204, description = "Logged out; the access tokens of the ended sessions are rejected at once."),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 413, response = inline(PayloadTooLarge)),
        (status = 415, response = inline(UnsupportedMediaType)),
        (status = 422, response = inline(UnprocessableEntity)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
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
