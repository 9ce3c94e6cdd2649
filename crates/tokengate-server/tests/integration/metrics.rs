//! `/metrics`: the counters move as traffic flows; the endpoint is on its
//! own loopback listener unless a bearer token guards it; no label tells
//! an unknown user from a wrong password, and every label is bounded.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};

use crate::app::{Backend, TestApp, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    counters_move_with_traffic,
    by_default_metrics_are_on_the_metrics_listener_only,
    a_metrics_token_guards_metrics_on_the_api_port,
    a_metrics_token_guards_the_metrics_listener_too,
    unknown_users_and_wrong_passwords_move_the_same_series,
);

const TOKEN: &str = "metrics-token-0123456789abcdef-0123456789";

/// The series the login counter may have: nothing that tells an unknown
/// account from a wrong password.
const LOGIN_OUTCOMES: &[&str] = &["success", "failure", "disabled", "rate_limited"];

/// The values the `method` label may take.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// GET `{base}/metrics`, with a bearer token when given.
async fn get_metrics(app: &TestApp, base: &str, token: Option<&str>) -> reqwest::Response {
    let request = app.client.get(format!("{base}/metrics"));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

/// Parses the Prometheus text format into series → value.
async fn scrape_with(app: &TestApp, base: &str, token: Option<&str>) -> BTreeMap<String, f64> {
    let r = get_metrics(app, base, token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0.0)))
        })
        .collect()
}

/// Scrapes the metrics listener (the harness binds it on a free loopback port).
async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let base = app.metrics_base.clone().expect("a metrics listener");
    scrape_with(app, &base, None).await
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The values label `label` takes in series of `metric`.
fn label_values(m: &BTreeMap<String, f64>, metric: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    m.keys()
        .filter_map(|k| k.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|labels| {
            let start = labels.find(&needle)? + needle.len();
            let value = labels.get(start..)?;
            value.split('"').next().map(str::to_owned)
        })
        .collect()
}

async fn counters_move_with_traffic(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = scrape(&app).await;
    let t = app.user("mia@example.com").await;
    problem(
        app.login("mia@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.refresh(&t.refresh).await;
    app.me("not.a.token").await;
    let after = scrape(&app).await;
    // Other tests share the process-wide recorder: counts grow by at least ours.
    for (series, at_least) in [
        (r#"tokengate_logins_total{outcome="success"}"#, 1.0),
        (r#"tokengate_logins_total{outcome="failure"}"#, 1.0),
        (r#"tokengate_refreshes_total{outcome="rotated"}"#, 1.0),
        (
            r#"tokengate_token_rejections_total{reason="malformed"}"#,
            1.0,
        ),
        (
            r#"tokengate_http_request_duration_seconds_count{route="/auth/login",method="POST",status="200"}"#,
            1.0,
        ),
    ] {
        assert!(
            get(&after, series) - get(&before, series) >= at_least,
            "{series}: {} -> {}",
            get(&before, series),
            get(&after, series)
        );
    }
    assert!(get(&after, "tokengate_active_sessions") >= 1.0);
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("tokengate_http_request_duration_seconds_bucket{"))
    );
    // Never a raw path: only route templates label the histogram.
    assert!(!after.keys().any(|k| k.contains("mia@example.com")));
}

async fn by_default_metrics_are_on_the_metrics_listener_only(backend: Backend) {
    let app = spawn_app(backend).await;
    assert!(app.settings.metrics_token.is_none());
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    problem(public, StatusCode::NOT_FOUND).await;
    let m = scrape(&app).await;
    assert!(m.contains_key("tokengate_active_sessions"));
}

async fn a_metrics_token_guards_metrics_on_the_api_port(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.metrics_addr = None;
        s.metrics_token = Some(tokengate_server::infra::config::Settings::secret(
            TOKEN.into(),
        ));
    })
    .await;
    assert!(app.metrics_base.is_none(), "no separate listener");
    assert_token_required(&app, &app.base).await;
}

async fn a_metrics_token_guards_the_metrics_listener_too(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.metrics_token = Some(tokengate_server::infra::config::Settings::secret(
            TOKEN.into(),
        ));
    })
    .await;
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    problem(public, StatusCode::NOT_FOUND).await;
    let base = app.metrics_base.clone().expect("a metrics listener");
    assert_token_required(&app, &base).await;
}

/// No token, a wrong one (same length, a prefix, longer, another scheme):
/// 401 with `WWW-Authenticate: Bearer`. The right one: the metrics.
async fn assert_token_required(app: &TestApp, base: &str) {
    let same_length_wrong = TOKEN.replace('0', "1");
    let longer = format!("{TOKEN}x");
    for token in [
        None,
        Some(""),
        Some(same_length_wrong.as_str()),
        Some(&TOKEN[..TOKEN.len() - 1]),
        Some(longer.as_str()),
    ] {
        let r = get_metrics(app, base, token).await;
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{token:?}: {challenge:?}");
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    let basic = app
        .client
        .get(format!("{base}/metrics"))
        .basic_auth("prometheus", Some(TOKEN))
        .send()
        .await
        .unwrap();
    problem(basic, StatusCode::UNAUTHORIZED).await;
    let m = scrape_with(app, base, Some(TOKEN)).await;
    assert!(m.contains_key("tokengate_active_sessions"));
}

async fn unknown_users_and_wrong_passwords_move_the_same_series(backend: Backend) {
    let app = spawn_app(backend).await;
    app.user("nora@example.com").await;
    let failures = r#"tokengate_logins_total{outcome="failure"}"#;
    let before = scrape(&app).await;
    problem(
        app.login("nora@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let after_wrong_password = scrape(&app).await;
    problem(
        app.login("nobody@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let after_unknown_user = scrape(&app).await;
    assert!(get(&after_wrong_password, failures) >= get(&before, failures) + 1.0);
    assert!(get(&after_unknown_user, failures) >= get(&after_wrong_password, failures) + 1.0);
    let outcomes = label_values(&after_unknown_user, "tokengate_logins_total", "outcome");
    assert!(outcomes.contains("failure"), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| LOGIN_OUTCOMES.contains(&o.as_str())),
        "an outcome outside {LOGIN_OUTCOMES:?}: {outcomes:?}"
    );
}

/// Fifty made-up methods add no series: each is `method="other"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_methods_are_counted_as_other() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut sent = BTreeSet::new();
    for _ in 0..50 {
        let mut bytes = [0u8; 4];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        let method = format!("M{}", u32::from_le_bytes(bytes) % 100_000);
        let r = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/healthz"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        sent.insert(method);
    }
    assert!(sent.len() > 40, "the methods were not random: {sent:?}");
    let m = scrape(&app).await;
    let methods = label_values(
        &m,
        "tokengate_http_request_duration_seconds_count",
        "method",
    );
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods.iter().all(|v| METHODS.contains(&v.as_str())),
        "a method outside {METHODS:?}: {methods:?}"
    );
    let routes = label_values(&m, "tokengate_http_request_duration_seconds_count", "route");
    assert!(routes.contains("/healthz"), "{routes:?}");
    assert!(
        routes
            .iter()
            .all(|r| r == "unmatched" || r.starts_with('/')),
        "{routes:?}"
    );
}

/// The metrics listener never had the API's header-size limit (nor its
/// timeout or client address): only the problem body and the security
/// headers. A scraper's large headers are served as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metrics_listener_has_no_header_size_limit() {
    let app = spawn_app(Backend::Sqlite).await;
    let base = app.metrics_base.clone().expect("a metrics listener");
    let r = app
        .client
        .get(format!("{base}/metrics"))
        .header("x-filler", "y".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = app
        .client
        .get(format!("{base}/nope"))
        .header("x-filler", "y".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    problem(r, StatusCode::NOT_FOUND).await;
}

/// The metrics listener is plain HTTP even when the API serves TLS, so it
/// never sends HSTS: RFC 6797 §7.2 forbids the header over a non-secure
/// transport. The API port sends it (`tls::serves_https_with_hsts…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plain_metrics_listener_never_sends_hsts() {
    let certs = tempfile::TempDir::new().unwrap();
    crate::tls::issue(certs.path());
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
    })
    .await;
    let base = app.metrics_base.clone().expect("a metrics listener");
    for path in ["/metrics", "/nope"] {
        let r = app
            .client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert!(
            !r.headers().contains_key("strict-transport-security"),
            "{path}: {:?}",
            r.headers()
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
}
