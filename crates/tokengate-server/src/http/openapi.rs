//! The OpenAPI 3.1 document of the service, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries its
//! `#[utoipa::path]` (method, path, parameters, bodies, responses), the
//! request and response bodies are the types the handlers (de)serialise,
//! and `utoipa_axum::routes!` registers a handler on the router and its
//! operation in the document in one step, so no route can be served
//! undocumented. What the layers around the routes answer (the request
//! budget, the header limit, the timeout) is added here, by the code that
//! applies those layers ([`crate::http::router`]).
//!
//! Every error is one `Problem` (RFC 9457) as `application/problem+json`;
//! the reusable error responses below name the headers that come with
//! each (`WWW-Authenticate` on a 401, `Retry-After` on a 429 and a 503).

use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{OpenApi, ToResponse};

use crate::http::error::{ApiError, Problem};

/// The security scheme of the access tokens (`Authorization: Bearer`).
pub const BEARER: &str = "bearer";
/// The security scheme of `/metrics` on the API port: `metrics_token`,
/// a static secret, not a JWT.
pub const METRICS_TOKEN: &str = "metrics_token";

/// The security scheme of cookie mode: the access token in its cookie.
pub const COOKIE: &str = "cookie";

/// The security scheme of `/auth/verify`'s cookie, when one is configured.
pub const FORWARD_AUTH_COOKIE: &str = "forward_auth_cookie";

/// The content type of every error response.
const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokengate",
        description = "JWT authentication for APIs: registration, login, refresh-token rotation, logout, sessions, user administration, forward-auth and the JWKS. Every error is an RFC 9457 problem document (`application/problem+json`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Tokens: register, log in, refresh, log out."),
        (name = "account", description = "The caller's own account and sessions."),
        (name = "admin", description = "User administration and the audit log (role `admin`)."),
        (name = "forward-auth", description = "For reverse proxies (nginx `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`)."),
        (name = "public", description = "What anyone may read: keys, metadata, health, this document."),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /auth/login or /auth/refresh (`typ: at+jwt`), in `Authorization: Bearer` only; never in the query string.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            METRICS_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The configured `metrics_token` (not a JWT); only where /metrics is served on the API port.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's skeleton: info, the `Problem` schema, the security
/// schemes. The routes add their operations to it.
pub fn base() -> Document {
    ApiDoc::openapi()
}

/// A header every such response carries. utoipa's header object has no
/// `required` member (OpenAPI 3.1's Header Object does), so it is written
/// as the extension map is: serialised flat into the header object.
fn required_header(schema: Type, description: &str) -> Header {
    let mut header = HeaderBuilder::new()
        .schema(Some(Object::with_type(schema)))
        .description(Some(description))
        .build();
    header.extensions = Some(Extensions::from_iter([("required", true)]));
    header
}

/// A problem+json response with its description and headers.
fn problem_response(description: &str, headers: &[(&str, Header)]) -> RefOr<ApiResponse> {
    let mut builder = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    for (name, header) in headers {
        builder = builder.header(*name, header.clone());
    }
    RefOr::T(builder.build())
}

fn retry_after(description: &str) -> (&'static str, Header) {
    ("Retry-After", required_header(Type::Integer, description))
}

fn www_authenticate(description: &str) -> (&'static str, Header) {
    (
        "WWW-Authenticate",
        required_header(Type::String, description),
    )
}

/// Declares a reusable problem+json response: its name in the document and
/// how it is built.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $build:expr;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<ApiResponse>) {
                    (stringify!($name), $build)
                }
            }
        )*
    };
}

problem_responses! {
    /// 400: the body is not JSON or could not be read; a query parameter or
    /// path segment does not parse.
    BadRequest => problem_response(
        "The request is malformed: the body is not JSON (or was cut off), or a query parameter or path segment is not valid (`field` names it).",
        &[],
    );
    /// 400 from `/auth/refresh`: RFC 6749's `invalid_grant` besides the
    /// malformed requests.
    InvalidGrant => problem_response(
        "The refresh token is invalid, used, expired or revoked (`error: invalid_grant`), or the request is malformed.",
        &[],
    );
    /// 401 with a bearer challenge: no, bad, expired or revoked token.
    Unauthorized => problem_response(
        "No valid access token: missing, malformed, expired, revoked, or its user gone or disabled.",
        &[www_authenticate("`Bearer realm=\"tokengate\"`, with `error=\"invalid_token\"` when a token was presented (RFC 6750 §3).")],
    );
    /// 401 of a login: wrong email or password, one answer for both.
    InvalidCredentials => problem_response("The email or password is incorrect.", &[]);
    /// 403 without a challenge: the token is good, the action is not allowed.
    Forbidden => problem_response(
        "Not allowed: the account or the caller's role does not permit this.",
        &[],
    );
    /// 403 of a request authenticated by cookie that failed the CSRF check.
    CsrfFailed => problem_response(
        "Authenticated by cookie, with a method other than GET, HEAD or OPTIONS, and without the session's CSRF token in `X-CSRF-Token` (from the CSRF cookie) or from an origin that is not allowed (`type` `urn:tokengate:problem:csrf-failed`).",
        &[],
    );
    /// 403 with an `insufficient_scope` challenge (forward-auth).
    InsufficientScope => problem_response(
        "The token is valid but lacks a required role or scope.",
        &[www_authenticate("`Bearer realm=\"tokengate\", error=\"insufficient_scope\"` (RFC 6750 §3.1).")],
    );
    /// 404 of an id that is not (or not the caller's).
    NotFound => problem_response("No such resource (or not the caller's).", &[]);
    /// 409: the email is taken.
    Conflict => problem_response("An account with this email already exists.", &[]);
    /// 413: the body is over the limit.
    PayloadTooLarge => problem_response("The request body is over the 16 KiB limit.", &[]);
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType => problem_response(
        "The body must be sent with `Content-Type: application/json`.",
        &[],
    );
    /// 422: a field does not fit (`field` names it, `detail` says what to do).
    UnprocessableEntity => problem_response(
        "A field is missing, of the wrong type or not valid; `field` names it and `detail` says what to do.",
        &[],
    );
    /// 429: a limit was reached.
    TooManyRequests => problem_response(
        "Too many requests from this client (the request budget) or too many failed attempts (the login throttle).",
        &[retry_after("Seconds to wait before trying again.")],
    );
    /// 408: the request took longer than `request_timeout`.
    RequestTimeout => problem_response("The request took longer than `request_timeout`.", &[]);
    /// 431: the headers are over the limit.
    HeadersTooLarge => problem_response("The request headers are over the 8 KiB limit.", &[]);
    /// 500: a fault on our side (the detail is in the log, never sent).
    InternalError => problem_response("Something went wrong on our side.", &[]);
    /// 503: the database, password hashing or the denylist is unavailable.
    ServiceUnavailable => problem_response(
        "Temporarily unavailable: the database, the password hasher or the revocation denylist.",
        &[retry_after("Seconds to wait before trying again.")],
    );
}

/// Adds `status` → `R` to every operation of `openapi` that does not
/// document that status yet: for what a layer answers around the routes.
pub fn add_response_to_every_operation<'r, R: ToResponse<'r>>(openapi: &mut Document, status: u16) {
    let (_, response) = R::response();
    for item in openapi.paths.paths.values_mut() {
        for (_, operation) in operations_mut(item) {
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| response.clone());
        }
    }
}

/// The operations of a path, with their method's name.
fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}

/// Cookie mode (unless `cookie_mode = off`): the access cookie is a
/// second way into every operation that takes a bearer token, and every
/// such operation that is not GET, HEAD or OPTIONS may answer 403 when a
/// cookie-authenticated request fails the CSRF check.
pub fn finish_cookie_mode(openapi: &mut Document, access_cookie: Option<&str>) {
    let Some(name) = access_cookie else {
        return;
    };
    let mut key = ApiKeyValue::new(name);
    key.description = Some(
        "Cookie mode: the access token in this HttpOnly cookie, set by `POST /auth/login?mode=cookie` or `/auth/refresh`. A request with any method but GET, HEAD and OPTIONS must also send the session's CSRF token (the CSRF cookie's value) in `X-CSRF-Token`, and from an allowed origin; otherwise 403.".to_owned(),
    );
    openapi
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(COOKIE, SecurityScheme::ApiKey(ApiKey::Cookie(key)));
    let (_, csrf_failed) = CsrfFailed::response();
    for item in openapi.paths.paths.values_mut() {
        for (method, operation) in operations_mut(item) {
            let Some(security) = operation.security.as_mut() else {
                continue;
            };
            let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
            if !security.contains(&bearer) {
                continue;
            }
            security.push(SecurityRequirement::new(COOKIE, Vec::<String>::new()));
            if !matches!(method, "get" | "head" | "options") {
                operation
                    .responses
                    .responses
                    .entry("403".to_owned())
                    .or_insert_with(|| csrf_failed.clone());
            }
        }
    }
}

/// `/auth/verify`'s operations, one handler under eight methods: each
/// gets an operation id of its own (OpenAPI wants them unique), its 200
/// the identity headers named with the configured prefix
/// (`forward_auth_header_prefix`), as the handler names them, and, with a
/// `forward_auth_cookie`, the cookie as a second way in.
pub fn finish_forward_auth(openapi: &mut Document, prefix: &str, cookie: Option<&str>) {
    if let Some(name) = cookie {
        let mut key = ApiKeyValue::new(name);
        key.description = Some(
            "The access token in this cookie, when neither the Authorization header nor the cookie-mode access cookie is sent. For a method other than GET, HEAD and OPTIONS (as named by X-Forwarded-Method or X-Original-Method; none counts as unsafe) the session's CSRF token must be in X-CSRF-Token, as in cookie mode.".to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                FORWARD_AUTH_COOKIE,
                SecurityScheme::ApiKey(ApiKey::Cookie(key)),
            );
    }
    let Some(item) = openapi.paths.paths.get_mut("/auth/verify") else {
        return;
    };
    let headers = [
        ("User", "The user id (`sub`)."),
        (
            "Email",
            "The email claim as visible ASCII (other bytes percent-encoded); empty when the token has none.",
        ),
        ("Roles", "The roles, comma-separated; empty when none."),
        ("Session", "The session id (`sid`); empty when none."),
    ];
    for (method, operation) in operations_mut(item) {
        operation.operation_id = Some(format!("verify_{method}"));
        if cookie.is_some() {
            operation
                .security
                .get_or_insert_with(Vec::new)
                .push(SecurityRequirement::new(
                    FORWARD_AUTH_COOKIE,
                    Vec::<String>::new(),
                ));
        }
        if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
            for (suffix, description) in headers {
                ok.headers.insert(
                    format!("{prefix}{suffix}"),
                    RefOr::T(required_header(Type::String, description)),
                );
            }
        }
    }
}

/// Where the finished document is kept for its handler: the route is
/// registered (with its own operation) before the document is complete.
pub type Served = Arc<OnceLock<Bytes>>;

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "public",
    operation_id = "openapi",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1). Cacheable for an hour.", body = Object,
            headers(("Cache-Control" = String, description = "`public, max-age=3600`"))),
    )
)]
pub async fn openapi_json(Extension(served): Extension<Served>) -> Result<Response, ApiError> {
    let Some(document) = served.get() else {
        return Err(ApiError::Internal(
            "the OpenAPI document was not set".into(),
        ));
    };
    let mut response = document.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Public and the same for everyone; it changes only with a new
    // version or configuration, so an hour is safe.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(response)
}
