//! `/auth/verify`: forward-auth for reverse proxies (nginx `auth_request`,
//! Caddy `forward_auth`, Traefik `forwardAuth`). The proxy asks before
//! passing a request on; a 2xx lets it through with the identity headers
//! copied onto it, anything else is answered to the client as is.
//!
//! The hot path is the request guard alone — signature (or the verified
//! token cache), claims, denylist — and no database read, so a protected
//! API pays about what the library's axum layer costs.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokengate::guard::{Requirement, VerifiedToken, cookie_value};
use utoipa::IntoParams;

use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, check_csrf};
use crate::http::openapi::{
    BadRequest, InsufficientScope, InternalError, ServiceUnavailable, Unauthorized,
};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

/// The path of this endpoint, as its audit rows name it.
const VERIFY_PATH: &str = "/auth/verify";

/// What the proxy's configuration asks of the token, beyond being valid.
/// Each is a comma-separated list; every item is required.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Requirements {
    /// Roles the token must carry (`?role=admin`).
    #[serde(default)]
    #[param(pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    role: Option<String>,
    /// Scopes the token must grant (`?scope=orders:write`).
    #[serde(default)]
    #[param(pattern = "^[^\\x00-\\x1F\\x7F]*$")]
    scope: Option<String>,
}

impl Requirements {
    fn each(&self) -> impl Iterator<Item = Requirement> + '_ {
        let items = |list: &'_ Option<String>| {
            list.iter()
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let roles = items(&self.role).into_iter().map(Requirement::Role);
        let scopes = items(&self.scope).into_iter().map(Requirement::Scope);
        roles.chain(scopes)
    }
}

/// Methods a cross-site page cannot use to change anything: a request
/// authenticated by cookie with any other must pass the CSRF check.
fn is_safe_method(method: &str) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS]
        .iter()
        .any(|m| m.as_str().eq_ignore_ascii_case(method))
}

/// Whether the request the proxy asks about used a safe method. Caddy and
/// Traefik send `X-Forwarded-Method`, the documented nginx configuration
/// too; others send `X-Original-Method`. nginx passes the client's own
/// headers on to the subrequest, so a client can add the one its proxy
/// does not set: every method header present must be safe, and none at
/// all counts as unsafe.
fn forwarded_method_is_safe(headers: &HeaderMap) -> bool {
    let mut seen = false;
    for name in ["x-forwarded-method", "x-original-method"] {
        for value in headers.get_all(name) {
            seen = true;
            if !value.to_str().is_ok_and(is_safe_method) {
                return false;
            }
        }
    }
    seen
}

/// The method the CSRF check is run for: the client's own when every
/// method header agrees it is safe, else an unsafe one (a client could
/// add the header its proxy does not set).
fn forwarded_method(headers: &HeaderMap) -> Method {
    if forwarded_method_is_safe(headers) {
        Method::GET
    } else {
        Method::POST
    }
}

/// `/auth/verify` (any method): 200 with the identity headers, 401 with a
/// challenge, 403 when a required role or scope is missing. The router
/// serves it for every method (a proxy may ask with the client's); the
/// document lists the eight OpenAPI can name. The 200's header names
/// follow `forward_auth_header_prefix`: the document names them when the
/// router is built ([`crate::http::openapi::name_forward_auth_headers`]).
#[utoipa::path(
    method(get, head, post, put, patch, delete, options, trace),
    path = "/auth/verify",
    tag = "forward-auth",
    operation_id = "verify",
    security(("bearer" = [])),
    params(Requirements),
    responses(
        (status = 200, description = "The token is valid, unrevoked and has every role and scope asked for; the identity is in the headers (no body)."),
        (status = 400, response = inline(BadRequest)),
        (status = 401, response = inline(Unauthorized)),
        (status = 403, response = inline(InsufficientScope)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    ClientIp(client): ClientIp,
    ApiQuery(requirements): ApiQuery<Requirements>,
    // The request itself rather than a `HeaderMap`, which the extractor
    // would copy on every call of this hot path.
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _body) = request.into_parts();
    let headers = &parts.headers;
    // The Authorization header, then the cookie-mode access cookie (with
    // the CSRF rule for the client's method), then `forward_auth_cookie`.
    // The guard's `check_request` in its steps, so that a CSRF refusal is
    // stored with whose token it refused.
    let method = forwarded_method(headers);
    let verified = match state.guard.presented_token(headers)? {
        Some(presented) => {
            let verified = state.guard.verify(presented.value()).await?;
            if presented.from_cookie() {
                check_csrf(
                    &state,
                    Some(client),
                    VERIFY_PATH,
                    &method,
                    headers,
                    &verified,
                )
                .await?;
            }
            verified
        }
        None => from_cookie(&state, client, &method, headers).await?,
    };
    for requirement in requirements.each() {
        requirement.check(&verified)?;
    }
    identity_response(&state.identity_headers, &verified)
}

/// With neither: `forward_auth_cookie`, under the same CSRF rule.
async fn from_cookie(
    state: &AppState,
    client: IpAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<VerifiedToken, ApiError> {
    let cookie = state.settings.forward_auth_cookie.as_deref();
    let found = match cookie {
        Some(name) => cookie_value(headers, name).map_err(|e| refused("several_cookies", &e))?,
        None => None,
    };
    let Some(token) = found else {
        return Err(ApiError::InvalidToken { presented: false });
    };
    let verified = state.guard.verify(token).await?;
    check_csrf(state, Some(client), VERIFY_PATH, method, headers, &verified).await?;
    Ok(verified)
}

/// A cookie refused before the guard saw it: logged and counted as the
/// guard logs and counts its own refusals.
fn refused(reason: &'static str, detail: &dyn std::fmt::Display) -> ApiError {
    tracing::info!(event = "access_token_rejected", reason, detail = %detail, "access token rejected");
    crate::infra::metrics::token_rejected(reason);
    ApiError::InvalidToken { presented: true }
}

/// The names of the identity headers: `forward_auth_header_prefix` and
/// `User`, `Email`, `Roles`, `Session`. Made once at start-up, not per
/// answer.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    user: HeaderName,
    email: HeaderName,
    roles: HeaderName,
    session: HeaderName,
}

impl IdentityHeaderNames {
    /// Fails only for a prefix that is not a header token, which the
    /// settings refuse before this runs.
    pub fn new(prefix: &str) -> Result<IdentityHeaderNames, axum::http::header::InvalidHeaderName> {
        let name = |suffix: &str| HeaderName::try_from(format!("{prefix}{suffix}"));
        Ok(IdentityHeaderNames {
            user: name("User")?,
            email: name("Email")?,
            roles: name("Roles")?,
            session: name("Session")?,
        })
    }
}

/// 200 with `<prefix>User`, `-Email`, `-Roles` and `-Session`. Every header
/// is always sent (empty when the token has no such claim), so that a proxy
/// that copies them overwrites whatever the client sent.
fn identity_response(
    names: &IdentityHeaderNames,
    token: &VerifiedToken,
) -> Result<Response, ApiError> {
    let roles = token.roles().collect::<Vec<_>>().join(",");
    let email = ascii_header_text(token.str_claim("email").unwrap_or(""));
    let fields = [
        (&names.user, token.subject()),
        (&names.email, email.as_str()),
        (&names.roles, roles.as_str()),
        (&names.session, token.session().unwrap_or("")),
    ];
    let mut response = StatusCode::OK.into_response();
    for (name, value) in fields {
        // Our own token's claims; bytes a header cannot carry (a control
        // character) would mean a claim we did not write.
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| ApiError::Internal(format!("claim for {name} is not header text")))?;
        response.headers_mut().insert(name.clone(), value);
    }
    Ok(response)
}

/// `text` as visible ASCII: every other byte (UTF-8 of a non-ASCII
/// address, a space) and `%` itself percent-encoded (RFC 3986), so an
/// ASCII address arrives unchanged and no address arrives as bytes a
/// framework would decode its own way (Latin-1 or UTF-8).
fn ascii_header_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_split_on_commas_and_ignore_blanks() {
        let r = Requirements {
            role: Some("admin, auditor,,".into()),
            scope: Some(" orders:write ".into()),
        };
        let each: Vec<String> = r.each().map(|r| format!("{r:?}")).collect();
        assert_eq!(
            each,
            [
                "role \"admin\"",
                "role \"auditor\"",
                "scope \"orders:write\""
            ]
        );
        assert_eq!(Requirements::default().each().count(), 0);
    }

    #[test]
    fn header_text_is_visible_ascii_and_ascii_addresses_are_unchanged() {
        assert_eq!(ascii_header_text("ada@example.com"), "ada@example.com");
        assert_eq!(ascii_header_text("a%b@x.com"), "a%25b@x.com");
        assert_eq!(ascii_header_text("josé@x.de"), "jos%C3%A9@x.de");
        assert_eq!(ascii_header_text("a b\r\n"), "a%20b%0D%0A");
        assert_eq!(ascii_header_text(""), "");
    }

    #[test]
    fn every_method_header_present_must_be_safe() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            forwarded_method_is_safe(&headers)
        };
        assert!(with(&[("x-forwarded-method", "GET")]));
        assert!(with(&[("x-original-method", "HEAD")]));
        assert!(!with(&[]));
        assert!(!with(&[
            ("x-forwarded-method", "GET"),
            ("x-original-method", "POST")
        ]));
        assert!(!with(&[
            ("x-original-method", "GET"),
            ("x-forwarded-method", "POST")
        ]));
        assert!(!with(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-method", "PUT")
        ]));
    }

    #[test]
    fn only_get_head_and_options_are_safe_for_a_cookie() {
        for safe in ["GET", "get", "HEAD", "OPTIONS"] {
            assert!(is_safe_method(safe), "{safe}");
        }
        for unsafe_ in ["POST", "PUT", "DELETE", "PATCH", "", "GÉT", "GET "] {
            assert!(!is_safe_method(unsafe_), "{unsafe_}");
        }
    }
}
