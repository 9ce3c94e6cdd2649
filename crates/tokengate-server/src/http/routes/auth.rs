//! `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`: the token
//! endpoints. Each translates HTTP into one service call and back.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::http::cookies::{BrowserCookies, Delivery};
use crate::http::error::{ApiError, RejectedAccessCookie};
use crate::http::extract::{ApiJson, ApiQuery, Authenticated, OptionalApiJson};
use crate::http::openapi::{
    BadRequest, Conflict, CsrfFailed, Forbidden, InternalError, InvalidCredentials, InvalidGrant,
    PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized, UnprocessableEntity,
    UnsupportedMediaType,
};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;
use crate::service::{
    Actor, CsrfRefusal, IssuedTokens, LoginRequest, LogoutScope, NewAccount, ServiceError,
};

/// An email and a password: the body of registration.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// Trimmed and lower-cased before use.
    #[schema(example = "ada@example.com")]
    email: String,
    /// 12 to 128 characters and hard to guess.
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

/// A new token pair in cookie mode: the tokens are in `Set-Cookie`
/// headers (`__Host-tg_access`, `__Secure-tg_refresh`, `__Host-tg_csrf`),
/// never in the body.
#[derive(Serialize, ToSchema)]
pub struct CookieTokenResponse<'a> {
    /// Always `cookie`.
    #[schema(value_type = String, pattern = "^cookie$")]
    mode: &'static str,
    /// Always `Bearer`: the access cookie holds a bearer token.
    #[schema(value_type = String, pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds the access token (and its cookie) is valid for.
    expires_in: i64,
    /// Seconds the refresh token (and its cookie) is valid for.
    refresh_expires_in: i64,
    /// The session's CSRF token, also in the `__Host-tg_csrf` cookie: send
    /// it in `X-CSRF-Token` on every request that is not GET, HEAD or
    /// OPTIONS.
    csrf_token: &'a str,
}

/// The answer of a login or refresh: the token pair in the body, or in
/// cookies.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Documentation only: the handlers write each shape themselves.
pub enum TokenAnswer<'a> {
    /// `mode=body` (the default).
    Body(TokenResponse<'a>),
    /// `mode=cookie`.
    Cookie(CookieTokenResponse<'a>),
}

fn token_response(
    settings: &crate::infra::config::Settings,
    delivery: Delivery,
    tokens: &IssuedTokens,
) -> Result<Response, ApiError> {
    match delivery {
        Delivery::Body => Ok(Json(TokenResponse {
            access_token: &tokens.access,
            token_type: "Bearer",
            expires_in: tokens.access_expires_in,
            refresh_token: tokens.refresh.expose(),
            refresh_expires_in: tokens.refresh_expires_in,
        })
        .into_response()),
        Delivery::Cookie => {
            let cookies = BrowserCookies::of(settings).issued(tokens)?;
            let mut response = Json(CookieTokenResponse {
                mode: "cookie",
                token_type: "Bearer",
                expires_in: tokens.access_expires_in,
                refresh_expires_in: tokens.refresh_expires_in,
                csrf_token: &tokens.csrf_token,
            })
            .into_response();
            for cookie in cookies {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
    }
}

/// `?mode=`: how the tokens are handed over.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModeQuery {
    /// `body` (the default: tokens in the JSON body) or `cookie` (tokens in
    /// `HttpOnly` cookies, none in the body; see `cookie_mode`).
    #[serde(default)]
    #[param(inline)]
    mode: Option<Delivery>,
}

/// The body of a login.
#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    /// Trimmed and lower-cased before use.
    #[schema(example = "ada@example.com")]
    email: String,
    /// 1 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 128)]
    password: Zeroizing<String>,
    /// As `?mode=` (they must agree when both are given).
    #[serde(default)]
    #[schema(inline)]
    mode: Option<Delivery>,
}

/// `POST /auth/login`.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    operation_id = "login",
    params(ModeQuery),
    request_body = LoginBody,
    responses(
        (status = 200, description = "A new session: an access token and a refresh token, in the body or (cookie mode) in `Set-Cookie` headers.", body = TokenAnswer),
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
    ApiQuery(query): ApiQuery<ModeQuery>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let delivery = Delivery::choose(state.settings.cookie_mode, query.mode, body.mode)?;
    let tokens = state
        .sessions
        .login(LoginRequest {
            email: &body.email,
            password: &body.password,
            client,
            user_agent: user_agent_of(&headers),
        })
        .await?;
    token_response(&state.settings, delivery, &tokens)
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
    /// The refresh token of the last login or refresh. Leave it out to
    /// refresh with the refresh cookie (cookie mode; then `X-CSRF-Token`
    /// is required and the answer is in cookies).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    refresh_token: Option<Zeroizing<String>>,
    /// As `?mode=` (they must agree when both are given).
    #[serde(default)]
    #[schema(inline)]
    mode: Option<Delivery>,
}

/// `POST /auth/refresh`: rotation with reuse detection.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    operation_id = "refresh",
    params(ModeQuery),
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new access token and a new refresh token; the one presented is used up. In cookie mode (always when the refresh token came from the cookie) both are in `Set-Cookie` headers.", body = TokenAnswer),
        (status = 400, response = inline(InvalidGrant)),
        (status = 403, response = inline(CsrfFailed)),
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
    ApiQuery(query): ApiQuery<ModeQuery>,
    method: Method,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Response, ApiError> {
    let cookies = BrowserCookies::of(&state.settings);
    if let Some(presented) = &body.refresh_token {
        let delivery = Delivery::choose(state.settings.cookie_mode, query.mode, body.mode)?;
        let tokens = state.sessions.refresh(presented, client).await?;
        return token_response(&state.settings, delivery, &tokens);
    }
    let from_cookie = if cookies.enabled() {
        match refresh_cookie_to_use(&state, (client, "/auth/refresh"), &method, &headers).await {
            Ok(found) => found,
            // Several refresh cookies of this session: a browser that
            // still holds the pre-release one (Path=/auth/refresh) beside
            // the current one sends both. That one is cleared, so the next
            // refresh finds one cookie and works.
            Err(ApiError::InvalidGrant) => {
                let mut response = ApiError::InvalidGrant.into_response();
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, cookies.cleared_legacy_refresh()?);
                return Ok(response);
            }
            Err(other) => return Err(other),
        }
    } else {
        None
    };
    let Some(presented) = from_cookie else {
        return Err(ApiError::Invalid {
            field: "refresh_token".into(),
            detail: "The refresh token is missing.".to_owned(),
        });
    };
    // A token that came from a cookie goes back in cookies: never to a script.
    if query.mode == Some(Delivery::Body) || body.mode == Some(Delivery::Body) {
        return Err(ApiError::Invalid {
            field: "mode".into(),
            detail: "A refresh by cookie answers in cookies.".to_owned(),
        });
    }
    match state.sessions.refresh(presented, client).await {
        Ok(tokens) => token_response(&state.settings, Delivery::Cookie, &tokens),
        // The grant is refused (reuse, the session ended, a token we do
        // not know): the cookies are of no further use, clear them.
        Err(ServiceError::InvalidGrant) => {
            let mut response = ApiError::InvalidGrant.into_response();
            for cookie in cookies.cleared()? {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Ok(response)
        }
        // The service could not answer (database away, …): nothing was
        // used up and the session may well be alive; the browser keeps its
        // cookies and tries again.
        Err(e) => Err(e.into()),
    }
}

/// The most refresh cookies of one request that are looked up: more than
/// a browser ever holds for itself (one, or two briefly beside a planted
/// one); past it the request is refused.
const MAX_REFRESH_COOKIES: usize = 8;

/// The refresh cookie a request may use (to refresh, or to log out
/// without an access token), after the CSRF check against its session —
/// before anything is used up.
///
/// Named once: that one. A token we never issued has no session to check
/// against and changes nothing; the caller refuses it.
///
/// Named more than once: a sibling subdomain can plant a
/// `__Secure-tg_refresh` for the parent domain (with a longer `Path`, sent
/// first) and we cannot clear it. The candidate used is the one whose
/// session's CSRF token the request echoes: `X-CSRF-Token` comes from the
/// host-only `__Host-tg_csrf`, which no sibling can set, so a planted
/// cookie never matches. None or several matching: refused. The look-ups
/// are read-only: nothing is used up for the others.
///
/// A CSRF refusal is stored in the audit log under the client and the
/// endpoint's path (the service keeps one row per client per minute).
async fn refresh_cookie_to_use<'h>(
    state: &AppState,
    (client, path): (IpAddr, &'static str),
    method: &Method,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, ApiError> {
    let cookies = BrowserCookies::of(&state.settings);
    let candidates = tokengate::guard::cookie_values(headers, cookies.refresh_name());
    let policy = state.guard.csrf_policy();
    let refused = |reason: &'static str, detail: &dyn std::fmt::Display| {
        tracing::info!(event = "refresh_cookie_refused", reason, detail = %detail, "refresh cookie refused");
        crate::infra::metrics::token_rejected(reason);
    };
    // The audit row of a CSRF refusal. Whose session the refresh cookie
    // continues is not looked up for it: only the client is named.
    let csrf_refused = |reason: &'static str| {
        state.sessions.csrf_refused(CsrfRefusal {
            client,
            user_id: None,
            session_id: None,
            path,
            reason,
        })
    };
    match candidates.as_slice() {
        [] => return Ok(None),
        [only] => {
            if let Some(bound) = state.sessions.csrf_digest_of_refresh_token(only).await?
                && let Err(failure) = policy.check(method, headers, Some(&bound))
            {
                refused(failure.code(), &failure);
                csrf_refused(failure.code()).await;
                return Err(ApiError::CsrfFailed);
            }
            return Ok(Some(only));
        }
        many if many.len() > MAX_REFRESH_COOKIES => {
            refused(
                "too_many_cookies",
                &"more refresh cookies than any browser holds",
            );
            return Err(ApiError::InvalidGrant);
        }
        _ => {}
    }
    let mut matching = Vec::new();
    let mut ours = 0;
    for candidate in &candidates {
        if let Some(bound) = state
            .sessions
            .csrf_digest_of_refresh_token(candidate)
            .await?
        {
            ours += 1;
            if policy.check(method, headers, Some(&bound)).is_ok() {
                matching.push(*candidate);
            }
        }
    }
    match matching.as_slice() {
        [one] => Ok(Some(one)),
        [] => {
            refused(
                "csrf_no_matching_cookie",
                &"no refresh cookie belongs to the session of the CSRF token",
            );
            // Stored only when a cookie was one of our sessions': cookies
            // we never issued are no CSRF attempt on anyone (as with a
            // single one), and a client with no account must not be able
            // to write false CSRF alarms.
            if ours > 0 {
                csrf_refused("csrf_no_matching_cookie").await;
            }
            Err(ApiError::CsrfFailed)
        }
        _ => {
            refused(
                "several_cookies",
                &"several refresh cookies belong to the session of the CSRF token",
            );
            Err(ApiError::InvalidGrant)
        }
    }
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
        (status = 204, description = "Logged out; the access tokens of the ended sessions are rejected at once. In cookie mode without a valid access token (the access cookie expired), the refresh cookie names the session, with the same CSRF rule; a 401 then clears the cookies."),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(CsrfFailed)),
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
    method: Method,
    headers: HeaderMap,
    auth: Result<Authenticated, ApiError>,
    body: Result<OptionalApiJson<LogoutRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let cookies = BrowserCookies::of(&state.settings);
    // Who asks is settled before what they ask: a refused token or CSRF
    // check is answered as such whatever the body (a cross-site form post
    // meets the CSRF refusal, not a content-type one).
    let outcome = match auth {
        Ok(auth) => {
            let scope = logout_scope(body)?;
            state
                .sessions
                .logout(&auth.user_id, &auth.session_id, scope, client)
                .await
                .map_err(ApiError::from)
                .map(|()| scope)
        }
        // No valid access token (a browser drops the access cookie when
        // its Max-Age runs out): the refresh cookie, sent to `/auth/`,
        // names the session, under the same CSRF rule as a refresh.
        Err(rejected) if rejected.rejects_the_token() && cookies.enabled() => {
            match refresh_cookie_to_use(&state, (client, "/auth/logout"), &method, &headers).await {
                Ok(Some(presented)) => {
                    let scope = logout_scope(body)?;
                    state
                        .sessions
                        .logout_by_refresh_token(presented, scope, client)
                        .await
                        .map_err(|e| match e {
                            ServiceError::InvalidGrant => {
                                ApiError::InvalidToken { presented: true }
                            }
                            other => other.into(),
                        })
                        .map(|()| scope)
                }
                Ok(None) => Err(rejected),
                // No one refresh cookie to sign out with: nothing valid.
                Err(ApiError::InvalidGrant) => Err(ApiError::InvalidToken { presented: true }),
                Err(other) => Err(other),
            }
        }
        Err(other) => Err(other),
    };
    let (mut response, scope) = match outcome {
        Ok(scope) => (StatusCode::NO_CONTENT.into_response(), scope),
        // Nothing valid to sign out with: whatever cookies the browser
        // holds are of no use, and it must not keep them.
        Err(e) if e.rejects_the_token() && cookies.any_in(&headers) => {
            let mut response = e.into_response();
            response.extensions_mut().remove::<RejectedAccessCookie>();
            for cookie in cookies.cleared()? {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            return Ok(response);
        }
        Err(e) => return Err(e),
    };
    // This browser's session ended (not for `others`): its cookies go too.
    if scope != LogoutScope::Others && cookies.any_in(&headers) {
        for cookie in cookies.cleared()? {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    Ok(response)
}

/// The scope a logout body asks for (none: this session).
fn logout_scope(
    body: Result<OptionalApiJson<LogoutRequest>, ApiError>,
) -> Result<LogoutScope, ApiError> {
    let OptionalApiJson(request) = body?;
    Ok(LogoutScope::parse(request.scope.as_deref())?)
}
