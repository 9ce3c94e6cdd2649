//! What anyone may read: the JWKS, RFC 8414 metadata, health and readiness, and
//! `/metrics` where it is served.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::state::AppState;

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

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): only what
/// holds. There is no authorization endpoint, so no response types; login
/// and refresh are JSON endpoints rather than RFC 6749 grants, so the grant
/// list is empty (left out, it would default to `authorization_code` and
/// `implicit`). The endpoint names are tokengate's: `token_endpoint` is
/// the JSON login, `refresh_endpoint` and `userinfo_endpoint` are not
/// RFC 8414 names. There is no `openid-configuration`: without ID tokens
/// no document there could be both valid OpenID discovery and true.
pub async fn authorization_server_metadata(State(state): State<Arc<AppState>>) -> Response {
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
        "response_types_supported": [],
        "grant_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
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

/// `GET /metrics`: Prometheus text format.
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
