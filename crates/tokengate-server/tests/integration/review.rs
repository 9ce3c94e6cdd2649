//! Security review of cookie mode (issue 14 part 1): failing tests that
//! demonstrate findings. Each test states the property it expects.

use reqwest::header::{COOKIE, HeaderValue};
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::app::{Backend, TestApp, spawn_app_with};
use crate::cookies::{CookieSession, login_in_cookie_mode, set_cookies};
use secrecy::ExposeSecret as _;
use tokengate_server::infra::clock::Clock as _;

const APP_ORIGIN: &str = "https://app.test";

async fn spawn() -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| {
        s.cookie_allowed_origins = vec![APP_ORIGIN.to_owned()];
        s.public_url = "https://auth.test".to_owned();
    })
    .await
}

fn refresh_cookie_header(s: &CookieSession) -> String {
    format!(
        "__Host-tg_access={}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
        s.access, s.refresh, s.csrf
    )
}

async fn refresh_by_cookie(app: &TestApp, cookie: &str, csrf: &str) -> Response {
    app.client
        .post(app.url("/auth/refresh"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .header("origin", APP_ORIGIN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

/// Finding 1. A user signs out after the access cookie has expired (idle
/// for longer than `access_ttl`, 15 min by default). The browser has
/// already dropped `__Host-tg_access` (its `Max-Age` ran out) and never
/// sends `__Secure-tg_refresh` to `/auth/logout` (its `Path` is
/// `/auth/refresh`). Expected (issue 14: "Logout clears the cookies … a
/// later refresh attempt with the cleared cookie does not resurrect the
/// session"): the browser's logout ends the session, so the refresh cookie
/// it still holds no longer works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_logout_after_the_access_cookie_expired_still_ends_the_session() {
    let app = spawn().await;
    let session = login_in_cookie_mode(&app, "idle@example.com").await;
    // Idle past the access cookie's Max-Age (900) and the token's leeway.
    app.clock.advance(900 + 31);
    // What the browser sends to /auth/logout now: only the CSRF cookie
    // (the access cookie expired; the refresh cookie is path-scoped).
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", format!("__Host-tg_csrf={}", session.csrf))
        .header("x-csrf-token", &session.csrf)
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cleared = set_cookies(&response);
    // The refresh cookie the browser still holds: it must not sign the
    // next user of this browser back in.
    let refreshed = refresh_by_cookie(&app, &refresh_cookie_header(&session), &session.csrf).await;
    assert!(
        cleared
            .get("__Secure-tg_refresh")
            .is_some_and(|c| c.value.is_empty())
            || refreshed.status() != StatusCode::OK,
        "logout answered {status} without clearing the refresh cookie {cleared:?}, \
         and the refresh cookie still refreshes: {}",
        refreshed.status()
    );
}

/// Finding 2. A cookie with a non-ASCII value anywhere in the `Cookie`
/// header (browsers accept UTF-8 in cookie values; a sibling subdomain can
/// set one for the parent domain, or the site's own analytics may) makes
/// the whole header "not text": the access, CSRF and refresh cookies are
/// all ignored. Expected: the session cookies are still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_non_ascii_cookie_beside_the_session_cookies_does_not_sign_the_user_out() {
    let app = spawn().await;
    let session = login_in_cookie_mode(&app, "utf8@example.com").await;
    let raw = format!(
        "city=Z\u{fc}rich; __Host-tg_access={}; __Host-tg_csrf={}",
        session.access, session.csrf
    );
    let value = HeaderValue::from_bytes(raw.as_bytes()).unwrap();
    let me = app
        .client
        .get(app.url("/auth/me"))
        .header(COOKIE, value)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK, "a planted UTF-8 cookie signs the user out");
    let raw = format!(
        "city=Z\u{fc}rich; {}",
        refresh_cookie_header(&session)
    );
    let response = app
        .client
        .post(app.url("/auth/refresh"))
        .header(COOKIE, HeaderValue::from_bytes(raw.as_bytes()).unwrap())
        .header("x-csrf-token", &session.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "nor can the session refresh");
}

/// Finding 3. A cookie refresh late in a session (after `session_lifetime -
/// refresh_ttl`) stores a refresh token that expires with the session, but
/// the refresh and CSRF cookies get `Max-Age = refresh_ttl` (and the body
/// `refresh_expires_in` says the same). Expected: the cookies expire no
/// later than the token they hold (as a login computes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_late_refresh_cookie_does_not_outlive_its_session() {
    let app = spawn().await;
    // Defaults: refresh_ttl 14 d, session_lifetime 30 d, idle 14 d.
    let started = app.clock.now().as_secs();
    let mut session = login_in_cookie_mode(&app, "late@example.com").await;
    let day = 86_400;
    for _ in 0..2 {
        app.clock.advance(10 * day);
        let response =
            refresh_by_cookie(&app, &refresh_cookie_header(&session), &session.csrf).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookies = set_cookies(&response);
        session = CookieSession {
            access: cookies["__Host-tg_access"].value.clone(),
            refresh: cookies["__Secure-tg_refresh"].value.clone(),
            csrf: cookies["__Host-tg_csrf"].value.clone(),
        };
        let max_age: i64 = cookies["__Secure-tg_refresh"]
            .attributes
            .split("; ")
            .find_map(|a| a.strip_prefix("Max-Age="))
            .unwrap()
            .parse()
            .unwrap();
        // Day 10: 14 d left on the token; day 20: the session ends at day 30.
        let remaining_in_session = started + 30 * day - app.clock.now().as_secs();
        assert!(
            max_age <= remaining_in_session,
            "refresh cookie Max-Age {max_age} s outlives the session ({remaining_in_session} s left)"
        );
    }
}

/// Finding 4. A cookie refresh that fails for a server-side reason (the
/// database refuses the write: 5xx, nothing used up) still answers with
/// all three cookies cleared, signing the browser out of a session that
/// is alive. Expected: only a refusal of the grant clears the cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_server_error_during_a_cookie_refresh_keeps_the_cookies() {
    let app = spawn().await;
    let session = login_in_cookie_mode(&app, "blip@example.com").await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER review_blip BEFORE UPDATE ON refresh_tokens BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let response = refresh_by_cookie(&app, &refresh_cookie_header(&session), &session.csrf).await;
    let status = response.status();
    let cleared = set_cookies(&response);
    sqlx::query("DROP TRIGGER review_blip")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(status.is_server_error(), "{status}");
    // The refresh token was not used up: the session is alive …
    let again = refresh_by_cookie(&app, &refresh_cookie_header(&session), &session.csrf).await;
    assert_eq!(again.status(), StatusCode::OK);
    // … but the browser was told to forget it.
    assert!(
        cleared.is_empty(),
        "a {status} cleared the cookies of a live session: {cleared:?}"
    );
}

/// Exploratory: odd cookie-mode inputs never give a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_odd_inputs_never_5xx() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.cookie_allowed_origins = vec![APP_ORIGIN.to_owned()];
        s.auth_requests_per_minute = 1_000_000;
    })
    .await;
    let s = login_in_cookie_mode(&app, "odd@example.com").await;
    let good = s.cookie_header();
    let cookies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b";;;;".to_vec(),
        b"=".to_vec(),
        b"__Host-tg_access".to_vec(),
        b"__Host-tg_access=".to_vec(),
        b"__Host-tg_access=\"\"".to_vec(),
        b"__Host-tg_access=\xff\xfe".to_vec(),
        format!("__Host-tg_access={}; __Host-tg_access={}", s.access, s.access).into_bytes(),
        format!("{good}; __Secure-tg_refresh=; __Secure-tg_refresh=x").into_bytes(),
        format!("__Host-tg_access=\"{}\"; __Host-tg_csrf=\"{}\"", s.access, s.csrf).into_bytes(),
        format!("__Host-tg_access={}x", s.access).into_bytes(),
        format!("{good}; __Secure-tg_refresh={}", "A".repeat(43)).into_bytes(),
        format!("{good}; __Secure-tg_refresh={}", "é".repeat(20)).into_bytes(),
        "x=y; ".repeat(1500).into_bytes(),
    ];
    let extras: Vec<(&str, Vec<u8>)> = vec![
        ("x-csrf-token", s.csrf.clone().into_bytes()),
        ("x-csrf-token", b"\xff".to_vec()),
        ("x-csrf-token", "a".repeat(5000).into_bytes()),
        ("origin", b"null".to_vec()),
        ("origin", b"\xff".to_vec()),
        ("referer", b"https://".to_vec()),
        ("referer", b"http://[".to_vec()),
        ("referer", b"://".to_vec()),
        ("x-forwarded-method", b"\xff".to_vec()),
        ("x-forwarded-method", b"".to_vec()),
    ];
    let mut bad = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for cookie in &cookies {
        for (name, value) in &extras {
            for (method, path, body) in [
                (reqwest::Method::POST, "/auth/refresh", Some("{}")),
                (reqwest::Method::POST, "/auth/refresh?mode=cookie", Some("{\"mode\":\"cookie\"}")),
                (reqwest::Method::POST, "/auth/logout", None),
                (reqwest::Method::GET, "/auth/me", None),
                (reqwest::Method::POST, "/auth/verify", None),
                (reqwest::Method::GET, "/auth/verify", None),
                (reqwest::Method::DELETE, "/auth/sessions/x", None),
            ] {
                let mut r = app
                    .client
                    .request(method.clone(), app.url(path))
                    .header(COOKIE, HeaderValue::from_bytes(cookie).unwrap())
                    .header(*name, HeaderValue::from_bytes(value).unwrap());
                if let Some(body) = body {
                    r = r.header("content-type", "application/json").body(body);
                }
                let response = r.send().await.unwrap();
                *seen.entry(response.status().as_u16()).or_insert(0) += 1;
                if response.status().is_server_error() {
                    bad.push(format!("{method} {path} {name} -> {}", response.status()));
                }
            }
        }
    }
    eprintln!("statuses: {seen:?}");
    assert!(bad.is_empty(), "{bad:#?}");
    app.logs().assert_clean();
}

/// Finding 5. `clear_rejected_access_cookie` clears the access cookie on
/// *any* 401 of an `/auth/*` route, not only a token rejection: a signed-in
/// browser that sends a wrong password to `/auth/login` (a second account,
/// a re-authentication prompt) loses its live access cookie. Expected: only
/// a 401 about the token (`WWW-Authenticate: Bearer … invalid_token`)
/// clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_wrong_password_does_not_clear_a_live_access_cookie() {
    let app = spawn().await;
    let s = login_in_cookie_mode(&app, "two@example.com").await;
    let response = app
        .client
        .post(app.url("/auth/login?mode=cookie"))
        .header("cookie", s.cookie_header())
        .json(&json!({"email": "two@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let cleared = set_cookies(&response);
    // The cookie it would clear is still a valid session.
    let me = app
        .client
        .get(app.url("/auth/me"))
        .header("cookie", s.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert!(
        cleared.is_empty(),
        "a wrong password cleared a live access cookie: {cleared:?}"
    );
}

/// Finding 7 (design, availability). A sibling subdomain can set a
/// `__Secure-tg_refresh` cookie for the parent domain with a longer `Path`
/// (sent first) and a long `Max-Age`; tokengate cannot clear it (it is not
/// host-only). Every refresh by cookie is then refused as ambiguous and
/// nothing the victim does (log out, log in again) ends that, until the
/// planted cookie expires. Expected: the ambiguity is resolved by the
/// session binding the attacker cannot forge — the candidate whose
/// session's CSRF token is the `X-CSRF-Token` (echoed from the host-only
/// `__Host-tg_csrf`) is used; the others are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_planted_refresh_cookie_does_not_lock_the_victim_out_of_refresh() {
    let app = spawn().await;
    let victim = login_in_cookie_mode(&app, "vic@example.com").await;
    let attacker = login_in_cookie_mode(&app, "mal@example.com").await;
    // Even a fresh login does not help: the planted cookie is still sent.
    let victim = {
        let _ = victim;
        login_in_cookie_mode(&app, "vic@example.com").await
    };
    let both = format!(
        "__Secure-tg_refresh={}; __Host-tg_access={}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
        attacker.refresh, victim.access, victim.refresh, victim.csrf
    );
    let response = refresh_by_cookie(&app, &both, &victim.csrf).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a sibling's planted refresh cookie locks the victim out of refresh"
    );
}

/// Finding 5b. A browser behind a proxy's HTTP Basic realm (a staging site)
/// sends `Authorization: Basic …` on every request: the guard takes it as
/// a malformed bearer token (401) before looking at the cookie, so cookie
/// mode cannot work there, and each 401 also clears the live access
/// cookie. Expected: a non-Bearer `Authorization` does not hide the
/// cookie-mode access cookie (or at least does not clear it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_basic_authorization_header_does_not_hide_or_clear_the_access_cookie() {
    let app = spawn().await;
    let s = login_in_cookie_mode(&app, "basic@example.com").await;
    let response = app
        .client
        .get(app.url("/auth/me"))
        .header("cookie", s.cookie_header())
        .header("authorization", "Basic c3RhZ2luZzpzdGFnaW5n")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cleared = set_cookies(&response);
    assert!(
        status == StatusCode::OK || cleared.is_empty(),
        "{status}, and the live access cookie was cleared: {cleared:?}"
    );
}

/// Exploratory (sound): forward-auth with the access cookie and no CSRF
/// token: any lie or omission about the method is treated as unsafe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_forward_auth_method_lies_are_unsafe() {
    let app = spawn().await;
    let s = login_in_cookie_mode(&app, "fa@example.com").await;
    let ask = |headers: Vec<(&'static str, &'static str)>| {
        let mut r = app
            .client
            .get(app.url("/auth/verify"))
            .header("cookie", s.cookie_header());
        for (n, v) in headers {
            r = r.header(n, v);
        }
        r.send()
    };
    for headers in [
        vec![],
        vec![("x-forwarded-method", "POST"), ("x-original-method", "GET")],
        vec![("x-forwarded-method", "GET"), ("x-forwarded-method", "POST")],
        vec![("x-forwarded-method", "GET, POST")],
        vec![("x-forwarded-method", "")],
        vec![("x-forwarded-method", "TRACE")],
        vec![("x-forwarded-method", "POST"), ("x-http-method-override", "GET")],
    ] {
        let status = ask(headers.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    for headers in [
        vec![("x-forwarded-method", "GET")],
        vec![("x-forwarded-method", "HEAD"), ("x-original-method", "OPTIONS")],
    ] {
        let status = ask(headers.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "{headers:?}");
    }
    app.logs().assert_clean();
}
