//! `/metrics`: the counters move as traffic flows.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::app::{Backend, TestApp, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(counters_move_with_traffic, metrics_addr_moves_the_endpoint);

/// Parses the Prometheus text format into series → value.
async fn scrape(app: &TestApp, base: &str) -> BTreeMap<String, f64> {
    let r = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
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

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

async fn counters_move_with_traffic(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let before = scrape(&app, &app.base).await;
    let t = app.user("mia@example.com").await;
    problem(
        app.login("mia@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        app.login("nobody@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.refresh(&t.refresh).await;
    app.me("not.a.token").await;
    let after = scrape(&app, &app.base).await;
    // Other tests share the process-wide recorder: counts grow by at least ours.
    for (series, at_least) in [
        (r#"tokengate_logins_total{outcome="success"}"#, 1.0),
        (r#"tokengate_logins_total{outcome="wrong_password"}"#, 1.0),
        (r#"tokengate_logins_total{outcome="unknown_user"}"#, 1.0),
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

async fn metrics_addr_moves_the_endpoint(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await
    else {
        return;
    };
    let main = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(
        main.status(),
        StatusCode::NOT_FOUND,
        "not on the public listener"
    );
    let base = app.metrics_base.clone().unwrap();
    let m = scrape(&app, &base).await;
    assert!(m.contains_key("tokengate_active_sessions"));
}
