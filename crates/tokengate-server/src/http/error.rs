//! The one place errors become HTTP: RFC 9457 problem documents with the
//! right status; server-side causes are logged, never sent.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::infra::password::HashError;
use crate::store::{StoreError, Unique};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON body")]
    MalformedJson,
    /// The body could not be read to its end (the client stopped sending).
    #[error("body unreadable")]
    BodyUnreadable,
    /// A query parameter is missing, unknown or of the wrong type.
    #[error("invalid query parameter {field}: {detail}")]
    InvalidQuery {
        /// The parameter.
        field: Cow<'static, str>,
        /// What is wrong, in plain words.
        detail: String,
    },
    /// A path segment does not parse.
    #[error("invalid path segment {field}: {detail}")]
    InvalidPath {
        /// The segment's name in the route.
        field: Cow<'static, str>,
        /// What is wrong, in plain words.
        detail: String,
    },
    /// The body has the wrong content type.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A field failed validation; the message says what to do.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The field (`"body"` when the body as a whole is wrong).
        field: Cow<'static, str>,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// Wrong email or password (deliberately one answer for both).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The current password given to change it is wrong. The caller is
    /// already known, so unlike a login this can say which input is wrong.
    #[error("wrong current password")]
    WrongCurrentPassword,
    /// No, bad, expired or revoked access token.
    #[error("invalid token")]
    InvalidToken {
        /// Whether a token was presented at all (RFC 6750 §3.1).
        presented: bool,
    },
    /// The access token of the cookie-mode access cookie is not valid
    /// (expired, revoked, bad, its user gone): answered as
    /// `InvalidToken { presented: true }`, and marked
    /// ([`RejectedAccessCookie`]) so that the cookie is cleared.
    #[error("invalid access cookie")]
    InvalidAccessCookie,
    /// Bad, used, expired or revoked refresh token (RFC 6749 `invalid_grant`).
    #[error("invalid grant")]
    InvalidGrant,
    /// The account is disabled (said only after the right password).
    #[error("account disabled")]
    AccountDisabled,
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// A request authenticated by cookie with an unsafe method that failed
    /// the CSRF check (no or a wrong `X-CSRF-Token`, a foreign origin).
    #[error("CSRF check failed")]
    CsrfFailed,
    /// A valid access token that lacks the role or scope asked for
    /// (RFC 6750 `insufficient_scope`).
    #[error("insufficient scope")]
    InsufficientScope {
        /// The scope to name in the challenge, when one was asked for.
        scope: Option<String>,
    },
    /// No such resource (or not the caller's).
    #[error("not found")]
    NotFound,
    /// No route serves the path.
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// The path exists, the method does not (axum adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// An error status something below the handlers answered with no body
    /// (the request timeout, say): given a problem document in
    /// the edge ([`crate::http::edge`]).
    #[error("{0}")]
    Status(StatusCode),
    /// Registration is switched off.
    #[error("registration disabled")]
    RegistrationDisabled,
    /// The email is taken.
    #[error("conflict")]
    EmailTaken,
    /// Too many attempts.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Header fields too large.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// Temporarily unable (hashing pool saturated, database down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else: logged, answered with a generic 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(Unique::Email) => ApiError::EmailTaken,
            StoreError::Unavailable(cause) => ApiError::Unavailable(format!("database: {cause}")),
            StoreError::Interrupted(what) => ApiError::Unavailable(what.to_owned()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::service::ServiceError> for ApiError {
    fn from(e: crate::service::ServiceError) -> Self {
        use crate::service::ServiceError as S;
        match e {
            S::Invalid { field, detail } => ApiError::Invalid {
                field: field.into(),
                detail,
            },
            S::InvalidCredentials => ApiError::InvalidCredentials,
            S::WrongCurrentPassword => ApiError::WrongCurrentPassword,
            S::AccountDisabled => ApiError::AccountDisabled,
            S::RateLimited { retry_after } => ApiError::TooManyRequests { retry_after },
            S::EmailTaken(_) => ApiError::EmailTaken,
            S::InvalidGrant => ApiError::InvalidGrant,
            S::NotFound => ApiError::NotFound,
            S::CallerGone => ApiError::InvalidToken { presented: true },
            S::Store(e) => e.into(),
            S::Hash(e) => e.into(),
            S::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<tokengate::guard::Rejection> for ApiError {
    fn from(rejection: tokengate::guard::Rejection) -> Self {
        use tokengate::guard::Rejection as R;
        match rejection {
            R::Missing => ApiError::InvalidToken { presented: false },
            R::InsufficientScope { scope } => ApiError::InsufficientScope { scope },
            R::Unavailable => ApiError::Unavailable("token verification unavailable".into()),
            R::Csrf => ApiError::CsrfFailed,
            // `Rejection` may grow; anything else about a token is a bad token.
            _ => ApiError::InvalidToken { presented: true },
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError::Unavailable("password hashing saturated".into()),
            HashError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// An RFC 9457 problem document: the body of every error response, and
/// the one `Problem` schema of the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:tokengate:problem:invalid-field",
    "title": "Invalid field",
    "status": 422,
    "detail": "The password is missing.",
    "field": "password"
}))]
pub struct Problem {
    /// `urn:tokengate:problem:<slug>`, or `about:blank` for a plain HTTP
    /// error (an unknown path, a method not served, a timeout).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What happened and what to do, in plain words; never a secret.
    pub detail: String,
    /// The field, query parameter or path segment at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The OAuth 2.0 error code (`invalid_grant`), where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Problem {
    Problem {
        kind: format!("urn:tokengate:problem:{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        field: None,
        error: None,
    }
}

/// A plain HTTP error: `about:blank` (RFC 9457 §4.2.1).
fn blank_problem(status: StatusCode, title: &str, detail: &str) -> Problem {
    Problem {
        kind: "about:blank".to_owned(),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        field: None,
        error: None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use ApiError as E;
        let (status, body) = match &self {
            E::MalformedJson => (
                StatusCode::BAD_REQUEST,
                problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                    "The body is not valid JSON.",
                ),
            ),
            E::BodyUnreadable => (
                StatusCode::BAD_REQUEST,
                problem(
                    StatusCode::BAD_REQUEST,
                    "body-unreadable",
                    "Body unreadable",
                    "The request body could not be read to its end.",
                ),
            ),
            E::InvalidQuery { field, detail } => {
                let mut body = problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-query",
                    "Invalid query parameter",
                    detail,
                );
                body.field = Some(field.to_string());
                (StatusCode::BAD_REQUEST, body)
            }
            E::InvalidPath { field, detail } => {
                let mut body = problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-path",
                    "Invalid path",
                    detail,
                );
                body.field = Some(field.to_string());
                (StatusCode::BAD_REQUEST, body)
            }
            E::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                problem(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "Send the body as JSON, with Content-Type: application/json.",
                ),
            ),
            E::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                    "The request body is over the 16 KiB limit.",
                ),
            ),
            E::Invalid { field, detail } => {
                let mut body = problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-field",
                    "Invalid field",
                    detail,
                );
                body.field = Some(field.to_string());
                (StatusCode::UNPROCESSABLE_ENTITY, body)
            }
            E::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                problem(
                    StatusCode::UNAUTHORIZED,
                    "invalid-credentials",
                    "Invalid credentials",
                    "The email or password is incorrect.",
                ),
            ),
            // 403, not 401: the bearer token is good, and a 401 (with its
            // WWW-Authenticate challenge) would tell the client to refresh
            // or log in again, which would not help.
            E::WrongCurrentPassword => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    "wrong-current-password",
                    "Wrong current password",
                    "The current password is incorrect.",
                ),
            ),
            E::InvalidToken { .. } | E::InvalidAccessCookie => (
                StatusCode::UNAUTHORIZED,
                problem(
                    StatusCode::UNAUTHORIZED,
                    "invalid-token",
                    "Invalid token",
                    tokengate::Error::Expired.public_message(),
                ),
            ),
            E::InvalidGrant => {
                let mut body = problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-grant",
                    "Invalid grant",
                    "The refresh token is invalid, expired or revoked. Log in again.",
                );
                body.error = Some("invalid_grant".to_owned());
                (StatusCode::BAD_REQUEST, body)
            }
            E::AccountDisabled => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    "account-disabled",
                    "Account disabled",
                    "This account is disabled; contact an administrator.",
                ),
            ),
            E::Forbidden => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Forbidden",
                    "This needs the admin role.",
                ),
            ),
            E::CsrfFailed => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    tokengate::guard::Rejection::Csrf.slug(),
                    tokengate::guard::Rejection::Csrf.title(),
                    tokengate::guard::Rejection::Csrf.public_message(),
                ),
            ),
            E::InsufficientScope { .. } => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    "insufficient-scope",
                    "Insufficient scope",
                    tokengate::guard::Rejection::InsufficientScope { scope: None }.public_message(),
                ),
            ),
            E::NotFound => (
                StatusCode::NOT_FOUND,
                problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    "Not found",
                    "No such resource.",
                ),
            ),
            // `about:blank`: a path we do not serve is a plain HTTP 404,
            // with no problem type of our own (RFC 9457 §4.2.1).
            E::NoSuchEndpoint => (
                StatusCode::NOT_FOUND,
                blank_problem(StatusCode::NOT_FOUND, "Not found", "no such endpoint"),
            ),
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                blank_problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    "This endpoint does not accept this method; the Allow header lists those it does.",
                ),
            ),
            E::Status(status) => (
                *status,
                blank_problem(
                    *status,
                    status.canonical_reason().unwrap_or("Error"),
                    bare_status_detail(*status),
                ),
            ),
            E::RegistrationDisabled => (
                StatusCode::FORBIDDEN,
                problem(
                    StatusCode::FORBIDDEN,
                    "registration-disabled",
                    "Registration disabled",
                    "This service does not accept new accounts.",
                ),
            ),
            E::EmailTaken => (
                StatusCode::CONFLICT,
                problem(
                    StatusCode::CONFLICT,
                    "email-taken",
                    "Email taken",
                    "An account with this email already exists.",
                ),
            ),
            E::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-requests",
                    "Too many requests",
                    "Too many attempts; wait before trying again.",
                ),
            ),
            E::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                problem(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "headers-too-large",
                    "Request header fields too large",
                    "The request headers are over the 8 KiB limit.",
                ),
            ),
            E::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "service unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "Service unavailable",
                        "The service is busy; try again shortly.",
                    ),
                )
            }
            E::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "Internal error",
                        "Something went wrong on our side.",
                    ),
                )
            }
        };
        // Strings and a number: serialising them cannot fail.
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            E::InvalidToken { presented: true } | E::InvalidAccessCookie => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="tokengate", error="invalid_token""#),
                );
            }
            E::InvalidToken { presented: false } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="tokengate""#),
                );
            }
            E::InsufficientScope { scope } => {
                let challenge = tokengate::guard::Rejection::InsufficientScope {
                    scope: scope.clone(),
                }
                .challenge("tokengate");
                if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            E::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            E::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        if matches!(self, E::InvalidAccessCookie) {
            response.extensions_mut().insert(RejectedAccessCookie);
        }
        response
    }
}

/// Marks a 401 whose rejected token came from the cookie-mode access
/// cookie: the `/auth` layer then clears that cookie. Any other 401 (a
/// wrong password, a bad bearer token) leaves a live cookie alone.
#[derive(Debug, Clone, Copy)]
pub struct RejectedAccessCookie;

impl ApiError {
    /// Whether this refuses the access token (a 401: none, or none valid).
    pub fn rejects_the_token(&self) -> bool {
        matches!(
            self,
            ApiError::InvalidToken { .. } | ApiError::InvalidAccessCookie
        )
    }
}

/// Words for a status answered below the handlers.
fn bare_status_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::REQUEST_TIMEOUT => "The request took too long; try again.",
        s if s.is_server_error() => "Something went wrong on our side.",
        _ => "The request could not be served.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_path_gets_the_plain_404_problem() {
        let response = ApiError::NoSuchEndpoint.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let expected = serde_json::json!({
            "type": "about:blank", "title": "Not found", "status": 404, "detail": "no such endpoint"
        });
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, expected);
    }
}
