//! Prometheus metrics: what an operator watches. The recorder is process
//! global (the `metrics` facade); `/metrics` renders it.

use std::sync::OnceLock;

use axum::http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Request latency buckets, in seconds: from a cached JWKS to a slow login.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the recorder once per process and returns its handle (`None`
/// if another recorder was installed first).
pub fn init() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("tokengate_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// How a login attempt ended, as the metrics may tell it.
///
/// There is one `Failure` for an unknown account and a wrong password: the
/// client gets the same 401 for both, and a label that told them apart
/// would let whoever reads the metrics find out which emails have accounts.
/// The audit log, which only the operator reads, keeps the difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Tokens issued.
    Success,
    /// Unknown account or wrong password.
    Failure,
    /// The right password for a disabled account.
    Disabled,
    /// Refused by the failed-login throttle before any check.
    RateLimited,
}

impl LoginOutcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
            LoginOutcome::Disabled => "disabled",
            LoginOutcome::RateLimited => "rate_limited",
        }
    }
}

/// A login attempt, by [`LoginOutcome`].
pub fn login(outcome: LoginOutcome) {
    metrics::counter!("tokengate_logins_total", "outcome" => outcome.label()).increment(1);
}

/// A refresh: `rotated`, `replayed`, `reuse_detected`, `session_ended`, `invalid`.
pub fn refresh(outcome: &'static str) {
    metrics::counter!("tokengate_refreshes_total", "outcome" => outcome).increment(1);
    if outcome == "reuse_detected" {
        metrics::counter!("tokengate_refresh_reuse_detections_total").increment(1);
    }
}

/// An access token refused, by reason (`expired`, `bad_signature`, `revoked`, …).
pub fn token_rejected(reason: &'static str) {
    metrics::counter!("tokengate_token_rejections_total", "reason" => reason).increment(1);
}

/// A request refused by a limit: `login` (failed-login throttle) or `budget`.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!("tokengate_rate_limited_total", "limit" => limit).increment(1);
}

/// Live sessions, set when `/metrics` is scraped.
pub fn active_sessions(n: i64) {
    metrics::gauge!("tokengate_active_sessions").set(n as f64);
}

/// The `method` label: the standard methods by name, anything else
/// `other`. A client chooses the method, and each distinct label value is
/// a series kept for the life of the process, so the set must be closed.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One HTTP request's latency, by route and status. `route` must be a
/// route template or `unmatched`, never the raw path (which a client
/// chooses, and which could carry ids).
pub fn request(route: String, method: &'static str, status: u16, seconds: f64) {
    metrics::histogram!(
        "tokengate_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => status.to_string()
    )
    .record(seconds);
}
