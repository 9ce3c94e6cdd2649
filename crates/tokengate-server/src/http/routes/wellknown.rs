//! What anyone may read: the JWKS, RFC 8414 metadata, health and readiness, and
//! `/metrics` where it is served.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::openapi::{InternalError, ServiceUnavailable, Unauthorized};
use crate::http::state::AppState;

/// Caches may keep the JWKS at most as long as a new key waits before it
/// signs, so every verifier has it in time (capped at a day).
fn jwks_cache_control(state: &AppState) -> HeaderValue {
    let max_age = state.settings.key_publish_delay.as_secs().min(86_400);
    HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
}

/// The JWKS as published (RFC 7517 §5). The body is the library's own
/// serialisation of the key ring (`tokengate::JwkSet`); this type only
/// describes it for the OpenAPI document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JwkSetDocument {
    /// The public keys that verify access tokens, each with its `kid`.
    keys: Vec<JwkDocument>,
}

/// One public key (RFC 7517 §4; members by key type).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JwkDocument {
    /// `EC`, `OKP`, `RSA` or `oct`.
    kty: String,
    /// The key id tokens name in their header.
    kid: Option<String>,
    /// The one algorithm the key verifies.
    alg: Option<String>,
    /// `sig`.
    #[schema(rename = "use")]
    use_: Option<String>,
    /// Curve (`EC`, `OKP`).
    crv: Option<String>,
    /// Public point coordinates (`EC`, `OKP`).
    x: Option<String>,
    y: Option<String>,
    /// RSA modulus and exponent.
    n: Option<String>,
    e: Option<String>,
}

/// `GET /.well-known/jwks.json`.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "public",
    operation_id = "jwks",
    responses(
        (status = 200, description = "The public signing keys; cacheable for `key_publish_delay`.", body = JwkSetDocument, content_type = "application/jwk-set+json",
            headers(("Cache-Control" = String, description = "`public, max-age=<key_publish_delay, at most a day>`"))),
    )
)]
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

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): only what
/// holds. There is no authorization endpoint, so no response types; login
/// and refresh are JSON endpoints rather than RFC 6749 grants, so the grant
/// list is empty (left out, it would default to `authorization_code` and
/// `implicit`). The endpoint names are tokengate's: `token_endpoint` is
/// the JSON login, `refresh_endpoint` and `userinfo_endpoint` are not
/// RFC 8414 names. There is no `openid-configuration`: without ID tokens
/// no document there could be both valid OpenID discovery and true.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "public",
    operation_id = "authorization_server_metadata",
    responses(
        (status = 200, description = "RFC 8414 metadata; cacheable like the JWKS.", body = AuthorizationServerMetadata,
            headers(("Cache-Control" = String))),
    )
)]
pub async fn authorization_server_metadata(State(state): State<Arc<AppState>>) -> Response {
    let base = &state.settings.public_url;
    let algs: Vec<String> = state
        .keys
        .current()
        .ring
        .active()
        .map(|k| vec![k.alg().name().to_owned()])
        .unwrap_or_default();
    let mut response = Json(AuthorizationServerMetadata {
        issuer: &state.settings.issuer,
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        token_endpoint: format!("{base}/auth/login"),
        refresh_endpoint: format!("{base}/auth/refresh"),
        registration_endpoint: format!("{base}/auth/register"),
        revocation_endpoint: format!("{base}/auth/logout"),
        userinfo_endpoint: format!("{base}/auth/me"),
        response_types_supported: [],
        grant_types_supported: [],
        token_endpoint_auth_methods_supported: ["none"],
        access_token_signing_alg_values_supported: algs,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, jwks_cache_control(&state));
    response
}

/// RFC 8414 authorization server metadata, tokengate's endpoints named.
#[derive(Serialize, ToSchema)]
pub struct AuthorizationServerMetadata<'a> {
    /// The `iss` of access tokens.
    issuer: &'a str,
    jwks_uri: String,
    /// The JSON login (not an RFC 6749 token endpoint).
    token_endpoint: String,
    refresh_endpoint: String,
    registration_endpoint: String,
    /// The logout.
    revocation_endpoint: String,
    /// `/auth/me`.
    userinfo_endpoint: String,
    /// Empty: there is no authorization endpoint.
    #[schema(value_type = Vec<String>, max_items = 0)]
    response_types_supported: [&'static str; 0],
    /// Empty: login and refresh are JSON endpoints, not RFC 6749 grants.
    #[schema(value_type = Vec<String>, max_items = 0)]
    grant_types_supported: [&'static str; 0],
    #[schema(value_type = Vec<String>)]
    token_endpoint_auth_methods_supported: [&'static str; 1],
    /// The algorithm of the signing key in force.
    access_token_signing_alg_values_supported: Vec<String>,
}

/// The body of `/healthz` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(value_type = String)]
    status: &'static str,
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "public",
    operation_id = "healthz",
    responses(
        (status = 200, description = "The process is up.", body = Health),
    )
)]
pub async fn healthz() -> Response {
    Json(Health { status: "ok" }).into_response()
}

/// `GET /readyz`: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "public",
    operation_id = "readyz",
    responses(
        (status = 200, description = "The database answers.", body = Health),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if state.store.ping().await {
        Ok(Json(Health { status: "ready" }).into_response())
    } else {
        Err(ApiError::Unavailable("database unreachable".into()))
    }
}

/// `GET /metrics`: Prometheus text format. On the API port only behind
/// `metrics_token` (the route layer in [`crate::http::router`]), and only
/// then in the document.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "public",
    operation_id = "metrics",
    security(("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, response = inline(Unauthorized)),
        (status = 500, response = inline(InternalError)),
        (status = 503, response = inline(ServiceUnavailable)),
    )
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let handle = crate::infra::metrics::init()
        .ok_or_else(|| ApiError::Internal("metrics recorder not installed".into()))?;
    let live = state
        .store
        .count_active_sessions(state.clock.now().as_secs())
        .await?;
    crate::infra::metrics::active_sessions(live);
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
