//! The HTTP surface: routes, and the middleware every response passes.

pub mod cookies;
pub mod edge;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pages;
pub mod routes;
pub mod server;
pub mod state;

use secrecy::ExposeSecret as _;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use axum::{Extension, Router};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use self::error::ApiError;
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

/// Request bodies on `/auth/*` are small JSON documents.
pub const AUTH_BODY_LIMIT: usize = 16 * 1024;
/// Total size of request header names and values.
pub const HEADER_LIMIT: usize = 8 * 1024;

/// The application router, and its OpenAPI document served at
/// `/openapi.json`: each route is registered with `routes!`, which adds
/// the handler's operation to the document in the same step.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, document) = router_and_document(&state);
    let served = document.served.clone();
    match document.openapi.to_json() {
        Ok(json) => {
            // Set once, here, before the router serves anything.
            let _ = served.set(json.into());
        }
        // `/openapi.json` then answers 500; everything else is served.
        Err(e) => tracing::error!(error = %e, "the OpenAPI document does not serialise"),
    }
    router.with_state(state)
}

/// The router before its state, and the document of every route it serves.
struct Documented {
    openapi: utoipa::openapi::OpenApi,
    /// Where `/openapi.json` finds the document once it is complete.
    served: openapi::Served,
}

fn router_and_document(state: &Arc<AppState>) -> (Router<Arc<AppState>>, Documented) {
    let (auth, mut document) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(routes::auth::register))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::account::me))
        .routes(routes!(routes::account::sessions))
        .routes(routes!(routes::account::end_session))
        .routes(routes!(routes::account::change_password))
        .routes(routes!(
            routes::admin::admin_list_users,
            routes::admin::admin_create_user
        ))
        .routes(routes!(routes::admin::admin_update_user))
        .routes(routes!(routes::admin::admin_revoke_sessions))
        .routes(routes!(routes::admin::admin_audit))
        .routes(routes!(routes::admin::admin_stats))
        .split_for_parts();
    // The request budget below refuses any of these.
    openapi::add_response_to_every_operation::<openapi::TooManyRequests>(&mut document, 429);
    let auth = auth
        // Before the layers, so the 405 passes them like any answer (and
        // after every route: it applies to the routes present).
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(AUTH_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_budget,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            clear_rejected_access_cookie,
        ))
        .layer(no_store());
    // Forward-auth: outside the per-client budget, which would count every
    // user behind a proxy as one client (the proxy), and cheap without it.
    // Served for any method, documented for the eight OpenAPI names.
    let (schemas, paths, _): UtoipaMethodRouter<Arc<AppState>> = routes!(routes::verify::verify);
    let (forward_auth, verify_document) = OpenApiRouter::default()
        .routes((schemas, paths, any(routes::verify::verify)))
        .split_for_parts();
    document.merge(verify_document);
    let forward_auth = forward_auth.layer(no_store());
    let served = openapi::Served::default();
    let (schemas, paths, openapi_route): UtoipaMethodRouter<Arc<AppState>> =
        routes!(openapi::openapi_json);
    let mut public = OpenApiRouter::default()
        .routes(routes!(routes::wellknown::jwks))
        .routes(routes!(routes::wellknown::authorization_server_metadata))
        .routes(routes!(routes::wellknown::healthz))
        .routes(routes!(routes::wellknown::readyz))
        .routes((
            schemas,
            paths,
            openapi_route.layer(Extension(served.clone())),
        ));
    // On the public port only behind a token, and only when there is no
    // separate listener for it.
    let settings = &state.settings;
    if settings.metrics && settings.metrics_addr.is_none() && settings.metrics_token.is_some() {
        let (schemas, paths, metrics): UtoipaMethodRouter<Arc<AppState>> =
            routes!(routes::wellknown::metrics);
        public = public.routes((schemas, paths, guarded_by_metrics_token(metrics, state)));
    }
    let (public, public_document) = public.split_for_parts();
    document.merge(public_document);
    let mut router = Router::new().merge(auth).merge(forward_auth).merge(public);
    // The pages sign in by cookie: without cookie mode they could not.
    if cookies::BrowserCookies::of(&state.settings).enabled() {
        router = router.merge(pages::router(state));
    }
    let router = router
        // The `/auth` and `/admin` routes above already have theirs.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_endpoint_or_the_prefix)
        .layer(edge::Edge::new(
            state.client_ip.clone(),
            state.settings.request_timeout,
            state.settings.tls_cert.is_some(),
        ));
    // What the edge answers on any route.
    openapi::add_response_to_every_operation::<openapi::HeadersTooLarge>(&mut document, 431);
    openapi::add_response_to_every_operation::<openapi::RequestTimeout>(&mut document, 408);
    let cookies = cookies::BrowserCookies::of(&state.settings);
    openapi::finish_cookie_mode(
        &mut document,
        cookies.enabled().then(|| cookies.access_name()),
    );
    openapi::finish_forward_auth(
        &mut document,
        &state.settings.forward_auth_header_prefix,
        state.settings.forward_auth_cookie.as_deref(),
    );
    (
        router,
        Documented {
            openapi: document,
            served,
        },
    )
}

/// The router for a separate metrics listener (`metrics_addr`).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    // Plain HTTP even when the API serves TLS: no HSTS (RFC 6797 §7.2).
    let edge = edge::Edge::for_metrics();
    Router::new()
        .route("/metrics", metrics_route(&state))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_endpoint)
        .layer(edge)
        .with_state(state)
}

/// `GET /metrics`, behind `metrics_token` when one is set.
fn metrics_route(state: &Arc<AppState>) -> MethodRouter<Arc<AppState>> {
    guarded_by_metrics_token(get(routes::wellknown::metrics), state)
}

fn guarded_by_metrics_token(
    route: MethodRouter<Arc<AppState>>,
    state: &Arc<AppState>,
) -> MethodRouter<Arc<AppState>> {
    route.route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_metrics_token,
    ))
}

/// With `metrics_token` set, only `Authorization: Bearer <token>` passes;
/// anything else is a 401 that challenges for a bearer token.
async fn require_metrics_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.settings.metrics_token else {
        return next.run(request).await;
    };
    let authorization = request.headers().get(header::AUTHORIZATION);
    let token = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Digests of equal length, compared in constant time: neither how much
    // of the token a guess has right nor the token's length shows in the
    // time the answer takes.
    let digest =
        |text: &str| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let authorized = token.is_some_and(|token| {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            digest(token).as_ref(),
            digest(expected.expose_secret()).as_ref(),
        )
        .is_ok()
    });
    if authorized {
        next.run(request).await
    } else {
        ApiError::InvalidToken {
            presented: authorization.is_some(),
        }
        .into_response()
    }
}

/// Any path no route serves.
async fn no_such_endpoint() -> ApiError {
    ApiError::NoSuchEndpoint
}

/// Any path no route serves, except the path prefix the service is
/// published under (`public_url`'s path, `/tg`) without its trailing
/// slash, which a person types and a proxy may pass on as is: a
/// permanent redirect (308, the method kept) to the prefix with the slash,
/// where the proxy serves the sign-in page. Without it the pages, whose
/// links are relative (`ui/app.js`), would resolve them against the host's
/// root. The `Location` is relative (`./tg/`: the last segment and the
/// slash; `./` so that a segment with a colon never reads as a scheme),
/// right whatever host, scheme and outer prefix the client used, and made
/// from the configuration, never from what the client sent but the query,
/// which is kept.
async fn no_such_endpoint_or_the_prefix(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
) -> Response {
    let prefix = state.settings.public_path();
    if prefix.is_empty() || uri.path() != prefix {
        return ApiError::NoSuchEndpoint.into_response();
    }
    let last_segment = prefix.rsplit('/').next().unwrap_or_default();
    let location = match uri.query() {
        Some(query) => format!("./{last_segment}/?{query}"),
        None => format!("./{last_segment}/"),
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => ApiError::NoSuchEndpoint.into_response(),
    }
}

/// A path served, with a method it is not served for; axum adds `Allow`.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Nothing under `/auth/` may be cached: those responses carry tokens or
/// personal data (`Pragma` for HTTP/1.0 caches, as RFC 6749 §5.1 asks).
fn no_store() -> NoStore {
    // Header layers rather than a `from_fn` middleware: no allocation on
    // `/auth/verify`, the hot path (see [`edge`]).
    tower::layer::util::Stack::new(
        SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ),
        SetResponseHeaderLayer::overriding(header::PRAGMA, HeaderValue::from_static("no-cache")),
    )
}

type NoStore = tower::layer::util::Stack<
    SetResponseHeaderLayer<HeaderValue>,
    SetResponseHeaderLayer<HeaderValue>,
>;

/// A 401 that rejected the token of the access cookie clears it (same
/// attributes, `Max-Age=0`): the token in it is expired, revoked or bad,
/// and a browser would otherwise keep sending it. Only such a 401
/// ([`error::RejectedAccessCookie`], set where the token was refused): a
/// wrong password or a bad bearer token says nothing about the cookie.
async fn clear_rejected_access_cookie(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if response
        .extensions_mut()
        .remove::<error::RejectedAccessCookie>()
        .is_some()
    {
        match cookies::BrowserCookies::of(&state.settings).cleared_access() {
            Ok(cleared) => {
                response.headers_mut().append(header::SET_COOKIE, cleared);
            }
            Err(e) => tracing::error!(error = %e, "the access cookie could not be cleared"),
        }
    }
    response
}

/// The overall per-client request budget on `/auth/*`. A flood past it is
/// answered cheaply: one audit row per client per minute (the metric
/// counts every refusal), so it cannot become a flood of fsyncs.
async fn request_budget(
    State(state): State<Arc<AppState>>,
    client: ClientIp,
    request: Request,
    next: Next,
) -> Response {
    let key = state.limit_key(client.0);
    let now = state.clock.now().as_secs();
    match state.budget.take(key, now).await {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            crate::infra::metrics::rate_limited("budget");
            if state.budget.first_refusal_this_minute(key, now) {
                state
                    .record(
                        crate::infra::audit::AuditEvent::new("request_budget_exceeded")
                            .ip(client.0)
                            // The route's template, never the path sent
                            // (the client's text, up to a URI's 64 KiB).
                            .with(
                                "path",
                                request
                                    .extensions()
                                    .get::<axum::extract::MatchedPath>()
                                    .map_or("unmatched", axum::extract::MatchedPath::as_str),
                            )
                            .with("retry_after", retry_after)
                            .with("note", "first refusal this minute; the rest are counted in tokengate_rate_limited_total"),
                    )
                    .await;
            }
            ApiError::TooManyRequests { retry_after }.into_response()
        }
    }
}
