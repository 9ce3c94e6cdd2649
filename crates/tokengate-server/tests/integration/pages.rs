//! The web pages over plain HTTP (what a browser does with them is
//! `browser.rs`): served with a strict policy and no inline code, only in
//! cookie mode; and `GET /admin/stats`, the chart's counts, on both
//! backends.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate_server::infra::audit::AuditEvent;
use tokengate_server::infra::clock::Clock as _;
use tokengate_server::infra::config::CookieMode;

use crate::accounts::admin;
use crate::app::{Backend, TestApp, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    stats_count_logins_failures_and_refusals_per_hour_at_the_window_edges,
    stats_refuse_bad_windows_and_non_admins,
);

const PAGES: [&str; 3] = ["/", "/account", "/admin"];

async fn get_text(app: &TestApp, path: &str) -> (reqwest::header::HeaderMap, String) {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let headers = response.headers().clone();
    (headers, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_carry_a_strict_policy_and_no_inline_code_or_outside_resource() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in PAGES {
        let (headers, html) = get_text(&app, path).await;
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            // Trusted Types: no string reaches an HTML or script sink, and
            // no policy may be made to wrap one.
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        // Another origin's window that opens this page, or that it opens,
        // holds no reference to it.
        assert_eq!(
            headers["cross-origin-opener-policy"], "same-origin",
            "{path}"
        );
        // Not kept, even in the back-forward cache: Back after a sign-out
        // must not show the account or the console again.
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        // A form with a password is never a GET: submitted before the
        // script is ready (or without it), its fields must not land in a
        // URL (history, proxy logs).
        for form in html.split("<form").skip(1) {
            let (tag, rest) = form.split_once('>').unwrap();
            let body = rest.split("</form>").next().unwrap();
            if body.contains("type=\"password\"") {
                assert!(tag.contains("method=\"post\""), "{path}: <form{tag}>");
            }
        }
        // Every script is a file of this origin; no inline script, style
        // or event handler (the policy would block them: the page would
        // break in silence).
        let lower = html.to_ascii_lowercase();
        let scripts: Vec<&str> = lower.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1, "{path}");
        assert!(scripts[0].starts_with(" src=\"ui/app.js\""), "{path}");
        assert!(scripts[0].contains("></script>"), "{path}");
        assert!(!lower.contains("<style"), "{path}");
        assert!(!lower.contains(" style="), "{path}");
        assert!(
            !lower.split_whitespace().any(|w| w.starts_with("on")
                && w.contains('=')
                && w.split('=').next().is_some_and(|n| n.len() > 2)),
            "{path}: an inline event handler"
        );
        // Nothing from elsewhere: relative URLs only.
        assert!(
            !lower.contains("http://") && !lower.contains("https://") && !lower.contains("\"//"),
            "{path}"
        );
    }
    let (headers, script) = get_text(&app, "/ui/app.js").await;
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    for forbidden in [
        "eval(",
        "new Function",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "setAttribute('style'",
        "localStorage",
        "sessionStorage",
    ] {
        assert!(!script.contains(forbidden), "app.js uses {forbidden}");
    }
    let (headers, _) = get_text(&app, "/ui/app.css").await;
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    // The API keeps the strictest policy.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        response.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_register_form_is_offered_only_while_registration_is_open() {
    let open = spawn_app(Backend::Sqlite).await;
    let (_, html) = get_text(&open, "/").await;
    assert!(html.contains("data-registration=\"true\""));
    let closed = spawn_app_with(Backend::Sqlite, |s| s.registration = false).await;
    let (_, html) = get_text(&closed, "/").await;
    assert!(html.contains("data-registration=\"false\""));
    assert!(!html.contains("{{"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_cookie_mode_no_page_is_served() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.cookie_mode = CookieMode::Off).await;
    for path in PAGES.iter().chain(&["/ui/app.js", "/ui/app.css"]) {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        problem(response, StatusCode::NOT_FOUND).await;
    }
}

async fn stats(app: &TestApp, access: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/admin/stats{query}")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

/// Records an audit event at an exact time, as the service would have.
async fn event_at(app: &TestApp, kind: &'static str, at: i64) {
    app.state
        .store
        .record_audit(&AuditEvent::new(kind).ip("192.0.2.7"), at)
        .await
        .unwrap();
}

async fn stats_count_logins_failures_and_refusals_per_hour_at_the_window_edges(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await; // one login_succeeded, now
    let now = app.clock.now().as_secs();
    let hour = 3600;
    let current = now / hour * hour;
    let first = current - 23 * hour; // the window's first second
    // At the first second: counted, in the first bucket; one second before:
    // outside.
    event_at(&app, "login_failed", first).await;
    event_at(&app, "login_failed", first - 1).await;
    // The last second of the first hour, and the first of the second.
    event_at(&app, "login_failed", first + hour - 1).await;
    event_at(&app, "login_rate_limited", first + hour).await;
    event_at(&app, "request_budget_exceeded", first + hour).await;
    // Other kinds are not counted.
    event_at(&app, "logout", current).await;
    event_at(&app, "refresh_failed", current).await;
    // Real failures through the API, in the current hour.
    for _ in 0..3 {
        let response = app
            .login("root@example.com", "not the right password")
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = stats(&app, &admin.access, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["hours"], 24);
    assert_eq!(body["bucket_seconds"], 3600);
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24);
    for (i, bucket) in buckets.iter().enumerate() {
        assert_eq!(bucket["start"], first + i as i64 * hour);
    }
    assert_eq!(
        buckets[0],
        json!({"start": first, "logins_succeeded": 0, "logins_failed": 2, "rate_limited": 0})
    );
    assert_eq!(
        buckets[1],
        json!({"start": first + hour, "logins_succeeded": 0, "logins_failed": 0, "rate_limited": 2})
    );
    assert_eq!(
        buckets[23],
        json!({"start": current, "logins_succeeded": 1, "logins_failed": 3, "rate_limited": 0})
    );
    let sum = |key: &str| {
        buckets
            .iter()
            .map(|b| b[key].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        (
            sum("logins_succeeded"),
            sum("logins_failed"),
            sum("rate_limited")
        ),
        (1, 5, 2)
    );

    // An hour later the window has moved: the first bucket is gone.
    app.clock.advance(hour);
    let admin = app
        .login_ok(
            "root@example.com",
            "root@example.com walks the long winding river road",
        )
        .await;
    let body: Value = stats(&app, &admin.access, "?hours=24")
        .await
        .json()
        .await
        .unwrap();
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets[0]["start"], first + hour);
    assert_eq!(buckets[0]["rate_limited"], 2);
    assert_eq!(buckets[22]["logins_failed"], 3);
    assert_eq!(buckets[23]["logins_failed"], 0);

    // The widest window is a week, and sees everything.
    let body: Value = stats(&app, &admin.access, "?hours=168")
        .await
        .json()
        .await
        .unwrap();
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 168);
    let failed: i64 = buckets
        .iter()
        .map(|b| b["logins_failed"].as_i64().unwrap())
        .sum();
    assert_eq!(failed, 6, "the event before the 24-hour window too");
    // The narrowest: the current hour alone.
    let body: Value = stats(&app, &admin.access, "?hours=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["buckets"].as_array().unwrap().len(), 1);
}

async fn stats_refuse_bad_windows_and_non_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    for bad in ["0", "-1", "169", "9223372036854775807"] {
        let body = problem(
            stats(&app, &admin.access, &format!("?hours={bad}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("1 to 168"),
            "{bad}: {body}"
        );
    }
    for bad in ["", "abc", "1.5", "%F0%9F%98%80", "99999999999999999999999"] {
        problem(
            stats(&app, &admin.access, &format!("?hours={bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let user = app.user("plain@example.com").await;
    problem(stats(&app, &user.access, "").await, StatusCode::FORBIDDEN).await;
    let response = app
        .client
        .get(app.url("/admin/stats"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
}
