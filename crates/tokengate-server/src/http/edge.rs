//! What every request passes on its way to a route and back, in one layer.
//!
//! In order: the request's latency is timed for the metrics; headers over
//! [`HEADER_LIMIT`] are refused (431); the client's address is resolved once
//! ([`ClientIp`]); the route gets `request_timeout` (408); an error answer
//! without a body becomes problem+json; the security headers are set. The
//! separate metrics listener has only the last two ([`Edge::for_metrics`]).
//!
//! One hand-written [`tower::Service`] rather than a stack of `from_fn`
//! middlewares and header layers, because this runs on every request of
//! the hottest routes (`/auth/verify` answers in tens of microseconds):
//! each `from_fn` layer boxes its inner service and its future on every
//! request, and the stack it replaced (four of them, a timeout and six
//! header layers) cost the unauthenticated `/healthz` about a third of its
//! time (docs/BENCHMARKS.md). Here the layer allocates once, its future
//! (the latency metric's labels aside, as before).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::Service;

use super::HEADER_LIMIT;
use super::error::ApiError;
use crate::infra::client_ip::ClientIpResolver;

/// The headers every answer carries, in the order they go out. Each
/// replaces one a handler set, except `Content-Security-Policy`: the pages
/// set their own (this origin's script and style).
static SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    ),
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    ),
];

/// The strictest policy, for everything but the pages.
static DEFAULT_CSP: HeaderValue =
    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'");

/// Two years, subdomains included: only sent when serving TLS.
static HSTS: HeaderValue = HeaderValue::from_static("max-age=63072000; includeSubDomains");

/// What the edge needs to know, fixed at start-up.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeSettings>,
}

struct EdgeSettings {
    /// The API's: the header-size limit, the client's address and the
    /// timeout. The metrics listener has none of them.
    api: Option<ApiLimits>,
    /// `Strict-Transport-Security`: only behind TLS.
    hsts: bool,
    /// Record each request in `tokengate_http_request_duration_seconds`.
    observe: bool,
}

struct ApiLimits {
    client_ip: ClientIpResolver,
    request_timeout: Duration,
}

impl Edge {
    /// `request_timeout` is raised to 100 ms at least: below that even a
    /// healthy request could miss it.
    pub fn new(client_ip: ClientIpResolver, request_timeout: Duration, hsts: bool) -> Edge {
        Edge {
            inner: Arc::new(EdgeSettings {
                api: Some(ApiLimits {
                    client_ip,
                    request_timeout: request_timeout.max(Duration::from_millis(100)),
                }),
                hsts,
                observe: true,
            }),
        }
    }

    /// For the separate metrics listener: only the problem body and the
    /// security headers, as it always had (no header-size limit, client
    /// address or timeout), never HSTS (it is plain HTTP), and its scrapes
    /// are not recorded in the metrics they read.
    pub fn for_metrics() -> Edge {
        Edge {
            inner: Arc::new(EdgeSettings {
                api: None,
                hsts: false,
                observe: false,
            }),
        }
    }
}

impl<S> tower::Layer<S> for Edge {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            edge: self.inner.clone(),
        }
    }
}

/// [`Edge`] around one route.
#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    edge: Arc<EdgeSettings>,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let edge = self.edge.clone();
        // The route's template, never the raw path (a client's text, which
        // could carry ids): labels from a closed set.
        let route = edge.observe.then(|| {
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
        });
        let method = crate::infra::metrics::method_label(request.method());
        let refused = edge.api.is_some() && headers_size(request.headers()) > HEADER_LIMIT;
        if !refused
            && let Some(api) = &edge.api
            && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        {
            let client = api.client_ip.resolve(peer.ip(), request.headers());
            request.extensions_mut().insert(client);
        }
        // The service that was readied answers; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = if refused {
                ApiError::HeadersTooLarge.into_response()
            } else if let Some(api) = &edge.api {
                match tokio::time::timeout(api.request_timeout, inner.call(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_elapsed) => StatusCode::REQUEST_TIMEOUT.into_response(),
                }
            } else {
                match inner.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            };
            let mut response = problem_for_bare_error(response);
            set_security_headers(response.headers_mut(), edge.hsts);
            if let Some(route) = route {
                crate::infra::metrics::request(
                    route,
                    method,
                    response.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
            }
            Ok(response)
        })
    }
}

/// Total size of the header names and values, as [`HEADER_LIMIT`] counts.
fn headers_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// An error status without a body of its own (axum's rejections of a
/// method or a path, the timeout's 408) gets the problem+json body of
/// [`ApiError::Status`]; an answer that has a content type already is
/// left as it is.
fn problem_for_bare_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let (problem_parts, body) = ApiError::Status(status).into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    // An answer made outside the routes (the timeout's 408) passed none of
    // their middleware: an error is never worth caching, under /auth least.
    parts
        .headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Some(content_type) = problem_parts.headers.get(header::CONTENT_TYPE) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    Response::from_parts(parts, body)
}

/// The headers every answer carries, errors included, in a fixed order.
fn set_security_headers(headers: &mut HeaderMap, hsts: bool) {
    if hsts {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, DEFAULT_CSP.clone());
    }
    for (name, value) in &SECURITY_HEADERS {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::client_ip::ClientIp;
    use crate::infra::config::ClientIpHeader;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt as _;

    fn edge(timeout_ms: u64, hsts: bool) -> Edge {
        let resolver = ClientIpResolver::new(Vec::new(), ClientIpHeader::XForwardedFor);
        Edge::new(resolver, Duration::from_millis(timeout_ms), hsts)
    }

    fn request(path: &str) -> Request {
        let mut request = Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 4711);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn every_answer_gets_the_security_headers_in_order_and_a_page_keeps_its_csp() {
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .route(
                "/page",
                get(|| async {
                    (
                        [(header::CONTENT_SECURITY_POLICY, "script-src 'self'")],
                        "page",
                    )
                }),
            )
            .layer(edge(1_000, false));
        let response = app
            .clone()
            .oneshot(request("/"))
            .await
            .unwrap_or_else(|e| match e {});
        let names: Vec<&str> = response.headers().keys().map(HeaderName::as_str).collect();
        let at = |name: &str| names.iter().position(|n| *n == name);
        assert!(at("content-security-policy") < at("x-content-type-options"));
        assert!(at("x-content-type-options") < at("x-frame-options"));
        assert!(at("referrer-policy") < at("cross-origin-resource-policy"));
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            DEFAULT_CSP
        );
        assert!(
            !response
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );
        let page = app
            .oneshot(request("/page"))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "script-src 'self'"
        );
        assert_eq!(page.headers()["x-frame-options"], "DENY");
    }

    #[tokio::test]
    async fn hsts_only_when_asked() {
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(edge(1_000, true));
        let response = app
            .oneshot(request("/"))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }

    #[tokio::test]
    async fn a_bare_error_status_gets_a_problem_body_that_is_not_cached() {
        let app = Router::new()
            .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
            .layer(edge(1_000, false));
        let response = app
            .oneshot(request("/teapot"))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(body_json(response).await["status"], 418);
    }

    #[tokio::test]
    async fn a_route_past_the_timeout_is_a_408_problem() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .layer(edge(0, false));
        let started = Instant::now();
        let response = app
            .oneshot(request("/slow"))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        // Raised to the 100 ms floor, never 0.
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(body_json(response).await["status"], 408);
    }

    #[tokio::test]
    async fn oversized_headers_are_refused_before_the_route_and_at_the_limit_pass() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { "hello" }
                }),
            )
            .layer(edge(1_000, false));
        let with_header = |value_len: usize| {
            let mut r = request("/");
            // Non-ASCII bytes, counted as bytes.
            let text = "é".repeat(value_len / 2) + &"a".repeat(value_len % 2);
            let value =
                HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("x"));
            r.headers_mut().insert("x-pad", value);
            r
        };
        // "x-pad" is 5 bytes.
        let at_limit = with_header(HEADER_LIMIT - 5);
        assert_eq!(headers_size(at_limit.headers()), HEADER_LIMIT);
        let response = app
            .clone()
            .oneshot(at_limit)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::OK);
        let over = with_header(HEADER_LIMIT - 4);
        let response = app.oneshot(over).await.unwrap_or_else(|e| match e {});
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_metrics_edge_has_no_header_limit_nor_timeout_but_the_headers() {
        let app = Router::new()
            .route(
                "/metrics",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "scraped"
                }),
            )
            .layer(Edge::for_metrics());
        let mut big = request("/metrics");
        big.headers_mut().insert(
            "x-pad",
            HeaderValue::from_str(&"a".repeat(HEADER_LIMIT))
                .unwrap_or_else(|_| HeaderValue::from_static("x")),
        );
        let response = app.oneshot(big).await.unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            DEFAULT_CSP
        );
    }

    #[tokio::test]
    async fn the_client_address_is_resolved_for_the_route() {
        let app = Router::new()
            .route(
                "/",
                get(|client: axum::Extension<ClientIp>| async move { client.0.0.to_string() }),
            )
            .layer(edge(1_000, false));
        let mut forged = request("/");
        // From an untrusted peer the header is not believed.
        forged
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let response = app.oneshot(forged).await.unwrap_or_else(|e| match e {});
        let bytes = axum::body::to_bytes(response.into_body(), 64)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&bytes[..], b"192.0.2.7");
    }
}
