//! Cookie mode over real HTTP: the three cookies and their attributes, the
//! CSRF rule (header, session binding, origin), refresh and logout by
//! cookie, clearing, the insecure development switch, and a race of
//! refreshes on one refresh cookie.

use std::collections::BTreeMap;

use reqwest::header::{COOKIE, HeaderValue, SET_COOKIE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::app::{Backend, TestApp, problem, spawn_app_with};
use crate::both_backends;
use tokengate_server::infra::clock::Clock as _;

const PASSWORD: &str = "a long passphrase for the cookie tests";
const APP_ORIGIN: &str = "https://app.test";

both_backends!(
    refresh_by_cookie_rotates_both_cookies_and_the_old_one_triggers_reuse_detection,
    logout_clears_the_cookies_and_the_old_refresh_cookie_cannot_resurrect_the_session,
    logout_after_the_access_cookie_expired_ends_the_session_by_its_refresh_cookie,
    a_late_refresh_cookie_never_outlives_its_session,
);

/// A cookie as a `Set-Cookie` header gave it: its value and its
/// attributes exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    pub value: String,
    pub attributes: String,
}

/// The `Set-Cookie` headers of a response, by cookie name.
pub fn set_cookies(response: &Response) -> BTreeMap<String, SetCookie> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let text = v.to_str().unwrap();
            let (pair, attributes) = text.split_once("; ").unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            (
                name.to_owned(),
                SetCookie {
                    value: value.to_owned(),
                    attributes: attributes.to_owned(),
                },
            )
        })
        .collect()
}

/// A browser session in cookie mode: the values of its three cookies.
pub struct CookieSession {
    pub access: String,
    pub refresh: String,
    pub csrf: String,
}

impl CookieSession {
    fn from_cookies(app: &TestApp, cookies: &BTreeMap<String, SetCookie>) -> CookieSession {
        let session = CookieSession {
            access: cookies["__Host-tg_access"].value.clone(),
            refresh: cookies["__Secure-tg_refresh"].value.clone(),
            csrf: cookies["__Host-tg_csrf"].value.clone(),
        };
        app.logs().remember(&session.access);
        app.logs().remember(&session.refresh);
        session
    }

    /// The `Cookie` header a browser sends to `/` (access and CSRF).
    pub fn cookie_header(&self) -> String {
        format!(
            "__Host-tg_access={}; __Host-tg_csrf={}",
            self.access, self.csrf
        )
    }

    /// The `Cookie` header a browser sends to `/auth/` (all three).
    pub fn refresh_cookie_header(&self) -> String {
        format!(
            "__Host-tg_access={}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
            self.access, self.refresh, self.csrf
        )
    }
}

/// Registers `email` (if needed) and logs in with `?mode=cookie`.
pub async fn login_in_cookie_mode(app: &TestApp, email: &str) -> CookieSession {
    let _ = app.register(email, PASSWORD).await;
    let response = app
        .client
        .post(app.url("/auth/login?mode=cookie"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookies = set_cookies(&response);
    CookieSession::from_cookies(app, &cookies)
}

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.cookie_allowed_origins = vec![APP_ORIGIN.to_owned()];
        // The service's own origin is allowed besides those listed.
        s.public_url = "https://auth.test".to_owned();
        // A used refresh token is reuse at once: races and replays show.
        s.refresh_reuse_interval = std::time::Duration::ZERO;
    })
    .await
}

/// A state-changing request that can be repeated: `POST /auth/logout`
/// with scope `others` (ends the user's other sessions, keeps this one).
async fn write(app: &TestApp, cookie: Option<&str>, headers: &[(&str, &str)]) -> Response {
    let mut request = app
        .client
        .post(app.url("/auth/logout"))
        .json(&json!({"scope": "others"}));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn refresh_by_cookie(app: &TestApp, cookie: &str, csrf: Option<&str>) -> Response {
    let mut request = app
        .client
        .post(app.url("/auth/refresh?mode=cookie"))
        .header("cookie", cookie)
        .json(&json!({}));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request.send().await.unwrap()
}

async fn me_by_cookie(app: &TestApp, cookie: &str) -> Response {
    app.client
        .get(app.url("/auth/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_in_cookie_mode_sets_three_exact_cookies_and_no_token_in_the_body() {
    let app = spawn(Backend::Sqlite).await;
    app.register("ada@example.com", PASSWORD).await;
    for (url, body) in [
        (
            "/auth/login?mode=cookie",
            json!({"email": "ada@example.com", "password": PASSWORD}),
        ),
        (
            "/auth/login",
            json!({"email": "ada@example.com", "password": PASSWORD, "mode": "cookie"}),
        ),
    ] {
        let response = app.post_json(url, &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let cookies = set_cookies(&response);
        assert_eq!(cookies.len(), 3, "{cookies:?}");
        let session = CookieSession::from_cookies(&app, &cookies);
        assert_eq!(
            cookies["__Host-tg_access"].attributes,
            "Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Strict"
        );
        assert_eq!(
            cookies["__Secure-tg_refresh"].attributes,
            "Path=/auth/; Max-Age=1209600; HttpOnly; Secure; SameSite=Strict"
        );
        // Readable by the page's script (no HttpOnly), which echoes it.
        assert_eq!(
            cookies["__Host-tg_csrf"].attributes,
            "Path=/; Max-Age=1209600; Secure; SameSite=Strict"
        );
        assert_eq!(session.access.split('.').count(), 3);
        assert_eq!(session.refresh.len(), 43);
        assert_eq!(session.csrf.len(), 43);
        let text = response.text().await.unwrap();
        assert!(!text.contains(&session.access) && !text.contains(&session.refresh));
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({
                "mode": "cookie",
                "token_type": "Bearer",
                "expires_in": 900,
                "refresh_expires_in": 1_209_600,
                "csrf_token": session.csrf,
            })
        );
        // The cookie alone authenticates a read.
        let me = me_by_cookie(&app, &session.cookie_header()).await;
        assert_eq!(me.status(), StatusCode::OK);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["email"], "ada@example.com");
    }
    // The query and the body must agree.
    let response = app
        .post_json(
            "/auth/login?mode=cookie",
            &json!({"email": "ada@example.com", "password": PASSWORD, "mode": "body"}),
        )
        .await;
    assert_eq!(
        problem(response, StatusCode::UNPROCESSABLE_ENTITY).await["field"],
        "mode"
    );
    let response = app
        .post_json(
            "/auth/login?mode=jar",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    problem(response, StatusCode::BAD_REQUEST).await;
    // Without a mode: the body, as before, and no cookie.
    let response = app.login("ada@example.com", PASSWORD).await;
    assert!(set_cookies(&response).is_empty());
    app.tokens(response).await;
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cookie_authenticated_write_needs_this_sessions_csrf_token_from_an_allowed_origin() {
    let app = spawn(Backend::Sqlite).await;
    let ada = login_in_cookie_mode(&app, "ada@example.com").await;
    let bob = login_in_cookie_mode(&app, "bob@example.com").await;
    let csrf_failed = |response: Response| async move {
        let body = problem(response, StatusCode::FORBIDDEN).await;
        assert_eq!(body["type"], "urn:tokengate:problem:csrf-failed");
    };
    let cookie = ada.cookie_header();
    // No header.
    csrf_failed(write(&app, Some(&cookie), &[]).await).await;
    // A wrong one.
    csrf_failed(write(&app, Some(&cookie), &[("x-csrf-token", "guess")]).await).await;
    // Another session's, in header and cookie (as a cookie planted by a
    // sibling subdomain and echoed would arrive).
    let planted = format!(
        "__Host-tg_access={}; __Host-tg_csrf={}",
        ada.access, bob.csrf
    );
    csrf_failed(write(&app, Some(&planted), &[("x-csrf-token", &bob.csrf)]).await).await;
    // The right one, sent twice.
    csrf_failed(
        write(
            &app,
            Some(&cookie),
            &[("x-csrf-token", &ada.csrf), ("x-csrf-token", &ada.csrf)],
        )
        .await,
    )
    .await;
    // The right one, from a foreign origin (or one named by Referer).
    for (name, value) in [
        ("origin", "https://evil.test"),
        ("origin", "null"),
        ("referer", "https://evil.test/app.test"),
    ] {
        csrf_failed(
            write(
                &app,
                Some(&cookie),
                &[("x-csrf-token", &ada.csrf), (name, value)],
            )
            .await,
        )
        .await;
    }
    // Refusals changed nothing: Bob's session is alive.
    assert_eq!(
        me_by_cookie(&app, &bob.cookie_header()).await.status(),
        StatusCode::OK
    );
    // The right one: from the application, the service itself, or a
    // client that names no origin.
    for extra in [
        vec![("origin", APP_ORIGIN)],
        vec![("referer", "https://app.test/settings")],
        vec![("origin", "https://auth.test")],
        vec![],
    ] {
        let mut headers = vec![("x-csrf-token", ada.csrf.as_str())];
        headers.extend(extra.iter().copied());
        let response = write(&app, Some(&cookie), &headers).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{extra:?}");
        // `others` keeps this session: its cookies stay.
        assert!(set_cookies(&response).is_empty());
    }
    // A read by cookie never needs it, whatever the origin.
    let response = app
        .client
        .get(app.url("/auth/sessions"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The Authorization header never needs it (a cross-site page cannot
    // send one), even with a foreign origin and a stale cookie beside it.
    let bearer = app.login_ok("ada@example.com", PASSWORD).await;
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&bearer.access)
        .header("origin", "https://evil.test")
        .header("cookie", "__Host-tg_access=stale")
        .json(&json!({"scope": "others"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.logs().assert_clean();
}

async fn refresh_by_cookie_rotates_both_cookies_and_the_old_one_triggers_reuse_detection(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let first = login_in_cookie_mode(&app, "cy@example.com").await;
    // Without the CSRF header: refused before the token is used.
    let response = refresh_by_cookie(&app, &first.refresh_cookie_header(), None).await;
    problem(response, StatusCode::FORBIDDEN).await;
    // With another session's: the same.
    let other = login_in_cookie_mode(&app, "dee@example.com").await;
    let forged = format!(
        "__Secure-tg_refresh={}; __Host-tg_csrf={}",
        first.refresh, other.csrf
    );
    let response = refresh_by_cookie(&app, &forged, Some(&other.csrf)).await;
    problem(response, StatusCode::FORBIDDEN).await;
    // With it: both tokens rotate, the CSRF token (the session's) stays.
    let response = refresh_by_cookie(&app, &first.refresh_cookie_header(), Some(&first.csrf)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookies = set_cookies(&response);
    assert_eq!(
        cookies["__Secure-tg_refresh"].attributes,
        "Path=/auth/; Max-Age=1209600; HttpOnly; Secure; SameSite=Strict"
    );
    let second = CookieSession::from_cookies(&app, &cookies);
    assert_ne!(second.access, first.access);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.csrf, first.csrf);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert_eq!(
        me_by_cookie(&app, &second.cookie_header()).await.status(),
        StatusCode::OK
    );
    // A token from a cookie never comes back in a body.
    let response = app
        .client
        .post(app.url("/auth/refresh?mode=body"))
        .header("cookie", second.refresh_cookie_header())
        .header("x-csrf-token", &second.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    // The old refresh cookie again: reuse. Refused, its cookies cleared,
    // and the whole session revoked (the new access cookie included).
    let response = refresh_by_cookie(&app, &first.refresh_cookie_header(), Some(&first.csrf)).await;
    let cleared = set_cookies(&response);
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(cleared.len(), 3);
    assert!(cleared.values().all(|c| c.value.is_empty()));
    assert_eq!(app.audit_events("refresh_reuse_detected").await.len(), 1);
    let response = me_by_cookie(&app, &second.cookie_header()).await;
    // The rejected access cookie is cleared in the 401.
    let cleared = set_cookies(&response);
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        cleared["__Host-tg_access"],
        SetCookie {
            value: String::new(),
            attributes: "Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict".into()
        }
    );
    app.logs().assert_clean();
}

async fn logout_clears_the_cookies_and_the_old_refresh_cookie_cannot_resurrect_the_session(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let session = login_in_cookie_mode(&app, "eve@example.com").await;
    let cookie = session.cookie_header();
    // Logout by cookie is a write: the CSRF token is required.
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &session.csrf)
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&response);
    let expected = [
        (
            "__Host-tg_access",
            "Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
        (
            "__Secure-tg_refresh",
            "Path=/auth/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
        (
            "__Host-tg_csrf",
            "Path=/; Max-Age=0; Secure; SameSite=Strict",
        ),
    ];
    assert_eq!(cleared.len(), 3);
    for (name, attributes) in expected {
        assert_eq!(
            cleared[name],
            SetCookie {
                value: String::new(),
                attributes: attributes.into()
            },
            "{name}"
        );
    }
    // A browser that kept the old values (or an attacker who copied them)
    // cannot bring the session back.
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    assert_eq!(
        me_by_cookie(&app, &cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_access_cookie_is_refused_and_cleared() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "fay@example.com").await;
    // access_ttl 15 min + leeway 30 s: the last second it verifies, then not.
    app.clock.advance(900 + 30 - 1);
    let response = me_by_cookie(&app, &session.cookie_header()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(set_cookies(&response).is_empty());
    app.clock.advance(1);
    let response = me_by_cookie(&app, &session.cookie_header()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        set_cookies(&response)["__Host-tg_access"].attributes,
        "Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    // The refresh cookie still works, and brings a fresh access cookie.
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = CookieSession::from_cookies(&app, &set_cookies(&response));
    assert_eq!(
        me_by_cookie(&app, &fresh.cookie_header()).await.status(),
        StatusCode::OK
    );
    app.logs().assert_clean();
}

/// Many tabs refresh at once with one refresh cookie and no reuse grace:
/// the single-use check lets one through; the rest are reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_parallel_refreshes_with_one_refresh_cookie_at_most_one_wins() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "gus@example.com").await;
    let cookie = session.refresh_cookie_header();
    let attempts = (0..24).map(|_| refresh_by_cookie(&app, &cookie, Some(&session.csrf)));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookie_mode_always_and_off() {
    use tokengate_server::infra::config::CookieMode;
    let always = spawn_app_with(Backend::Sqlite, |s| s.cookie_mode = CookieMode::Always).await;
    always.register("hal@example.com", PASSWORD).await;
    let response = always.login("hal@example.com", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(set_cookies(&response).len(), 3);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("access_token").is_none());
    let response = always
        .post_json(
            "/auth/login?mode=body",
            &json!({"email": "hal@example.com", "password": PASSWORD}),
        )
        .await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    let off = spawn_app_with(Backend::Sqlite, |s| s.cookie_mode = CookieMode::Off).await;
    off.register("ida@example.com", PASSWORD).await;
    let response = off
        .post_json(
            "/auth/login?mode=cookie",
            &json!({"email": "ida@example.com", "password": PASSWORD}),
        )
        .await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Nor is a cookie read: a token in one is no token.
    let tokens = off.login_ok("ida@example.com", PASSWORD).await;
    let response = me_by_cookie(&off, &format!("__Host-tg_access={}", tokens.access)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&response).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_insecure_dev_switch_drops_secure_and_the_prefixes_and_warns_at_start() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.cookie_insecure_dev = true).await;
    assert!(
        app.logs().text().contains("cookie_insecure_dev is on"),
        "no warning at start"
    );
    app.register("jo@example.com", PASSWORD).await;
    let response = app
        .post_json(
            "/auth/login?mode=cookie",
            &json!({"email": "jo@example.com", "password": PASSWORD}),
        )
        .await;
    let cookies = set_cookies(&response);
    assert_eq!(
        cookies.keys().map(String::as_str).collect::<Vec<_>>(),
        ["tg_access", "tg_csrf", "tg_refresh"]
    );
    assert_eq!(
        cookies["tg_access"].attributes,
        "Path=/; Max-Age=900; HttpOnly; SameSite=Strict"
    );
    assert_eq!(
        cookies["tg_csrf"].attributes,
        "Path=/; Max-Age=1209600; SameSite=Strict"
    );
    assert!(cookies.values().all(|c| !c.attributes.contains("Secure")));
    app.logs().remember(&cookies["tg_access"].value);
    app.logs().remember(&cookies["tg_refresh"].value);
    let cookie = format!(
        "tg_access={}; tg_csrf={}",
        cookies["tg_access"].value, cookies["tg_csrf"].value
    );
    assert_eq!(me_by_cookie(&app, &cookie).await.status(), StatusCode::OK);
    // The prefixed names are not read in this mode.
    let prefixed = format!("__Host-tg_access={}", cookies["tg_access"].value);
    assert_eq!(
        me_by_cookie(&app, &prefixed).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = write(
        &app,
        Some(&cookie),
        &[("x-csrf-token", &cookies["tg_csrf"].value)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    app.logs().assert_clean();
}

/// The real binary refuses the switch on an address others can reach,
/// with one line naming it.
#[test]
fn the_insecure_dev_switch_is_refused_off_loopback() {
    let dir = tempfile::TempDir::new().unwrap();
    for (addr, public_url) in [
        ("0.0.0.0:0", ""),
        ("127.0.0.1:0", "http://auth.example.com"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
            .env("TOKENGATE_COOKIE_INSECURE_DEV", "true")
            .env("TOKENGATE_ADDR", addr)
            .env("TOKENGATE_PUBLIC_URL", public_url)
            .env("TOKENGATE_METRICS", "false")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{addr} {public_url}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains("cookie_insecure_dev = true is for local development only"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"));
    }
}

/// Any method the router serves with a cookie alone and no CSRF token:
/// every unsafe one is 403, and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_unsafe_route_refuses_a_cookie_without_the_csrf_token() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "kim@example.com").await;
    let cookie = session.cookie_header();
    for (method, path, body) in [
        (Method::POST, "/auth/logout", json!({})),
        (Method::DELETE, "/auth/sessions/some-id", json!(null)),
        (
            Method::POST,
            "/auth/password",
            json!({"current_password": PASSWORD, "new_password": "another long passphrase of mine"}),
        ),
        (
            Method::POST,
            "/admin/users",
            json!({"email": "x@example.com", "password": PASSWORD}),
        ),
    ] {
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .header("cookie", &cookie);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["type"], "urn:tokengate:problem:csrf-failed",
            "{method} {path}"
        );
    }
    // What a cross-site HTML form can send (a form body, no custom
    // header) meets the CSRF refusal too, not a content-type one: who asks
    // is settled before what they ask.
    for (method, path) in [
        (Method::POST, "/auth/logout"),
        (Method::POST, "/auth/password"),
        (Method::POST, "/admin/users"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("scope=global")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "form {method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["type"], "urn:tokengate:problem:csrf-failed",
            "form {method} {path}"
        );
    }
    // The password did not change and the session lives.
    assert_eq!(me_by_cookie(&app, &cookie).await.status(), StatusCode::OK);
    app.login_ok("kim@example.com", PASSWORD).await;
}

/// Forward-auth reads the cookie-mode access cookie: a read passes with it
/// alone; a write (as the proxy reports the method) needs the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_auth_takes_the_access_cookie_with_the_same_csrf_rule() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "lou@example.com").await;
    let ask = |method: &'static str, csrf: Option<&str>| {
        let mut request = app
            .client
            .get(app.url("/auth/verify"))
            .header("cookie", session.cookie_header())
            .header("x-forwarded-method", method)
            .header("origin", APP_ORIGIN);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf.to_owned());
        }
        request.send()
    };
    let response = ask("GET", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-auth-email"], "lou@example.com");
    for method in ["POST", "DELETE", "PATCH"] {
        let response = ask(method, None).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
        let response = ask(method, Some("wrong")).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
        let response = ask(method, Some(&session.csrf)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
    }
    app.logs().assert_clean();
}

/// A sibling subdomain can set a `__Secure-` cookie for the parent domain
/// (unlike a `__Host-` one), with a longer `Path` (sent first), and the
/// service cannot clear it. Beside the victim's own, the refresh cookie
/// used is the one whose session's CSRF token the request echoes (from the
/// host-only `__Host-tg_csrf`): the victim still refreshes, as the victim.
/// Alone, the planted one needs its own session's CSRF token, which the
/// victim's is not. Nothing is used up by a refusal or for the cookie not
/// chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planted_refresh_cookie_signs_nobody_in_and_locks_nobody_out() {
    let app = spawn(Backend::Sqlite).await;
    let victim = login_in_cookie_mode(&app, "max@example.com").await;
    let attacker = login_in_cookie_mode(&app, "mallory@example.com").await;
    let planted_alone = format!(
        "__Secure-tg_refresh={}; __Host-tg_csrf={}",
        attacker.refresh, victim.csrf
    );
    let response = refresh_by_cookie(&app, &planted_alone, Some(&victim.csrf)).await;
    problem(response, StatusCode::FORBIDDEN).await;
    // Planted beside the victim's, in either order: the victim's is used.
    let mut victim_now = victim;
    for planted_first in [true, false] {
        let (first, second) = if planted_first {
            (&attacker.refresh, &victim_now.refresh)
        } else {
            (&victim_now.refresh, &attacker.refresh)
        };
        let both = format!(
            "__Secure-tg_refresh={first}; __Host-tg_access={}; __Secure-tg_refresh={second}; __Host-tg_csrf={}",
            victim_now.access, victim_now.csrf
        );
        let response = refresh_by_cookie(&app, &both, Some(&victim_now.csrf)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "planted first: {planted_first}"
        );
        let fresh = CookieSession::from_cookies(&app, &set_cookies(&response));
        let me: Value = me_by_cookie(&app, &fresh.cookie_header())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["email"], "max@example.com");
        victim_now = fresh;
    }
    // A refresh cookie of another session of the same user beside the
    // current one: only the CSRF token's session matches, and is used.
    let other = login_in_cookie_mode(&app, "max@example.com").await;
    let two_sessions = format!(
        "__Secure-tg_refresh={}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
        other.refresh, victim_now.refresh, victim_now.csrf
    );
    let response = refresh_by_cookie(&app, &two_sessions, Some(&victim_now.csrf)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let previous = victim_now.refresh.clone();
    let victim_now = CookieSession::from_cookies(&app, &set_cookies(&response));
    // Two of this session's own tokens (the used one and the current
    // one): which is meant is unknowable; refused, nothing used up.
    let same_session = format!(
        "__Secure-tg_refresh={previous}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
        victim_now.refresh, victim_now.csrf
    );
    let response = refresh_by_cookie(&app, &same_session, Some(&victim_now.csrf)).await;
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // More refresh cookies than any browser holds: refused unread.
    let many = format!(
        "{}__Host-tg_csrf={}",
        "__Secure-tg_refresh=AAAA; ".repeat(9),
        victim_now.csrf
    );
    let response = refresh_by_cookie(&app, &many, Some(&victim_now.csrf)).await;
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // The attacker's token was never used up for the victim's requests.
    for session in [&victim_now, &attacker] {
        let response =
            refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let fresh = CookieSession::from_cookies(&app, &set_cookies(&response));
        assert_ne!(fresh.refresh, session.refresh);
    }
    app.logs().assert_clean();
}

/// A browser idle past the access cookie's `Max-Age` has dropped
/// `__Host-tg_access`, but still sends `__Secure-tg_refresh` (scoped to
/// `/auth/`) to the logout: the session its refresh token continues is
/// ended server-side, under the CSRF rule of a refresh, and all three
/// cookies are cleared. A 401 on the logout clears them in any case.
async fn logout_after_the_access_cookie_expired_ends_the_session_by_its_refresh_cookie(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let session = login_in_cookie_mode(&app, "idle@example.com").await;
    let other_device = login_in_cookie_mode(&app, "idle@example.com").await;
    // Idle past the access cookie's Max-Age (900) and the token's leeway.
    app.clock.advance(900 + 31);
    let sent = format!(
        "__Secure-tg_refresh={}; __Host-tg_csrf={}",
        session.refresh, session.csrf
    );
    let logout = |cookie: String, csrf: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/auth/logout"))
            .header("cookie", cookie)
            .header("origin", APP_ORIGIN);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    // Without the CSRF token (a forged cross-site logout): refused, and
    // nothing changed.
    let response = logout(sent.clone(), None).await.unwrap();
    assert!(set_cookies(&response).is_empty());
    problem(response, StatusCode::FORBIDDEN).await;
    // Another session's CSRF token: the same.
    let response = logout(sent.clone(), Some(other_device.csrf.clone()))
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = logout(sent.clone(), Some(session.csrf.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&response);
    assert_eq!(cleared.len(), 3, "{cleared:?}");
    assert!(cleared.values().all(|c| c.value.is_empty()));
    assert_eq!(
        cleared["__Secure-tg_refresh"].attributes,
        "Path=/auth/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    let logouts = app.audit_events("logout").await;
    assert_eq!(logouts.len(), 1);
    // The refresh cookie the browser may still hold signs nobody in.
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // The other device is untouched (a local logout).
    let response = refresh_by_cookie(
        &app,
        &other_device.refresh_cookie_header(),
        Some(&other_device.csrf),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let other_device = CookieSession::from_cookies(&app, &set_cookies(&response));
    // The same logout again (the refresh token is of an ended session),
    // or with nothing valid at all: 401, and every cookie cleared.
    for cookie in [sent, format!("__Host-tg_csrf={}", session.csrf)] {
        let response = logout(cookie, Some(session.csrf.clone())).await.unwrap();
        let cleared = set_cookies(&response);
        assert_eq!(cleared.len(), 3, "{cleared:?}");
        assert!(cleared.values().all(|c| c.value.is_empty()));
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    // Global logout by refresh cookie ends every session of the user.
    app.clock.advance(900 + 31);
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header(
            "cookie",
            format!(
                "__Secure-tg_refresh={}; __Host-tg_csrf={}",
                other_device.refresh, other_device.csrf
            ),
        )
        .header("x-csrf-token", &other_device.csrf)
        .json(&json!({"scope": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = refresh_by_cookie(
        &app,
        &other_device.refresh_cookie_header(),
        Some(&other_device.csrf),
    )
    .await;
    problem(response, StatusCode::BAD_REQUEST).await;
    app.logs().assert_clean();
}

/// A cookie that is not ASCII anywhere in the `Cookie` header (browsers
/// accept UTF-8 values; another part of the site may set one) hides
/// nothing: the session's cookies are still read, for a read, a write and
/// a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_ascii_cookie_beside_the_session_cookies_hides_nothing() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "utf8@example.com").await;
    let raw = |cookies: String| {
        HeaderValue::from_bytes(format!("city=Z\u{fc}rich; {cookies}; 名前=値").as_bytes()).unwrap()
    };
    let me = app
        .client
        .get(app.url("/auth/me"))
        .header(COOKIE, raw(session.cookie_header()))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header(COOKIE, raw(session.cookie_header()))
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"scope": "others"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .client
        .post(app.url("/auth/refresh"))
        .header(COOKIE, raw(session.refresh_cookie_header()))
        .header("x-csrf-token", &session.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    CookieSession::from_cookies(&app, &set_cookies(&response));
    app.logs().assert_clean();
}

/// A refresh late in a session (after `session_lifetime - refresh_ttl`)
/// gets a refresh token that ends with the session: `refresh_expires_in`
/// and the refresh and CSRF cookies' `Max-Age` say so, as at login.
async fn a_late_refresh_cookie_never_outlives_its_session(backend: Backend) {
    let app = spawn(backend).await;
    // Defaults: refresh_ttl 14 d, session_lifetime 30 d, idle 14 d.
    let started = app.clock.now().as_secs();
    let mut session = login_in_cookie_mode(&app, "late@example.com").await;
    let day = 86_400;
    // Day 10: 14 d left on the new token; day 20: 10 d, the session's end.
    for (advance, expected) in [(10 * day, 14 * day), (10 * day, 10 * day)] {
        app.clock.advance(advance);
        let response =
            refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookies = set_cookies(&response);
        session = CookieSession::from_cookies(&app, &cookies);
        for name in ["__Secure-tg_refresh", "__Host-tg_csrf"] {
            assert!(
                cookies[name]
                    .attributes
                    .contains(&format!("; Max-Age={expected};")),
                "{name}: {}",
                cookies[name].attributes
            );
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["refresh_expires_in"], expected);
    }
    assert_eq!(started + 30 * day - app.clock.now().as_secs(), 10 * day);
    // The last second of the session the token refreshes; then it is over.
    app.clock.advance(10 * day - 1);
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    let cookies = set_cookies(&response);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        cookies["__Secure-tg_refresh"]
            .attributes
            .contains("; Max-Age=1;")
    );
    session = CookieSession::from_cookies(&app, &cookies);
    app.clock.advance(1);
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    problem(response, StatusCode::BAD_REQUEST).await;
    app.logs().assert_clean();
}

/// A cookie refresh that fails on the service's side (the database
/// refuses the write: 5xx, nothing used up) keeps the cookies: the session
/// is alive and the next try works. Only a refused grant clears them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_error_during_a_cookie_refresh_keeps_the_cookies() {
    use secrecy::ExposeSecret as _;
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "blip@example.com").await;
    let url = app.settings.database_url.expose_secret().to_owned();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER blip BEFORE UPDATE ON refresh_tokens BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let response =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    let status = response.status();
    let cleared = set_cookies(&response);
    sqlx::query("DROP TRIGGER blip")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(status.is_server_error(), "{status}");
    assert!(cleared.is_empty(), "{cleared:?}");
    let again =
        refresh_by_cookie(&app, &session.refresh_cookie_header(), Some(&session.csrf)).await;
    assert_eq!(again.status(), StatusCode::OK);
    CookieSession::from_cookies(&app, &set_cookies(&again));
}

/// Only a 401 that refused the access cookie's own token clears it: a
/// wrong password at login (a second account, a re-authentication
/// prompt) or a bad bearer token beside a live cookie leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_refused_access_cookie_is_cleared() {
    let app = spawn(Backend::Sqlite).await;
    let s = login_in_cookie_mode(&app, "two@example.com").await;
    let response = app
        .client
        .post(app.url("/auth/login?mode=cookie"))
        .header("cookie", s.cookie_header())
        .json(&json!({"email": "two@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&response).is_empty());
    problem(response, StatusCode::UNAUTHORIZED).await;
    let response = app
        .client
        .get(app.url("/auth/me"))
        .header("cookie", s.cookie_header())
        .header("authorization", "Bearer not.a.token")
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&response).is_empty());
    problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        me_by_cookie(&app, &s.cookie_header()).await.status(),
        StatusCode::OK
    );
    app.logs().assert_clean();
}

/// A browser behind a proxy's HTTP Basic realm (a staging site) sends
/// `Authorization: Basic …` on every request: it is no bearer token, so the
/// access cookie is read (and a live one never cleared). A malformed
/// `Bearer` header stays a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_bearer_authorization_header_falls_through_to_the_access_cookie() {
    let app = spawn(Backend::Sqlite).await;
    let s = login_in_cookie_mode(&app, "basic@example.com").await;
    let ask = |authorization: &'static str| {
        app.client
            .get(app.url("/auth/me"))
            .header("cookie", s.cookie_header())
            .header("authorization", authorization)
            .send()
    };
    let response = ask("Basic c3RhZ2luZzpzdGFnaW5n").await.unwrap();
    assert!(set_cookies(&response).is_empty());
    assert_eq!(response.status(), StatusCode::OK);
    for malformed in ["Bearer", "Bearer   "] {
        let response = ask(malformed).await.unwrap();
        assert!(set_cookies(&response).is_empty(), "{malformed}");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    // A write with Basic beside the cookie is a cookie write: CSRF applies.
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", s.cookie_header())
        .header("authorization", "Basic c3RhZ2luZzpzdGFnaW5n")
        .json(&json!({"scope": "others"}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    app.logs().assert_clean();
}

/// Odd cookie-mode inputs (empty, bare, quoted, doubled, not ASCII, huge
/// cookies; bad CSRF, Origin, Referer and forwarded-method headers) on
/// every cookie-reading endpoint: never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_cookie_inputs_never_give_a_5xx() {
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
        format!(
            "__Host-tg_access={}; __Host-tg_access={}",
            s.access, s.access
        )
        .into_bytes(),
        format!("{good}; __Secure-tg_refresh=; __Secure-tg_refresh=x").into_bytes(),
        format!(
            "__Host-tg_access=\"{}\"; __Host-tg_csrf=\"{}\"",
            s.access, s.csrf
        )
        .into_bytes(),
        format!("__Host-tg_access={}x", s.access).into_bytes(),
        format!("{good}; __Secure-tg_refresh={}", "A".repeat(43)).into_bytes(),
        format!("{good}; __Secure-tg_refresh={}", "é".repeat(20)).into_bytes(),
        format!("{good}; __Secure-tg_refresh=a; __Secure-tg_refresh=b").into_bytes(),
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
        ("authorization", b"Basic \xff".to_vec()),
        ("x-forwarded-method", b"\xff".to_vec()),
        ("x-forwarded-method", b"".to_vec()),
    ];
    let mut bad = Vec::new();
    for cookie in &cookies {
        for (name, value) in &extras {
            for (method, path, body) in [
                (Method::POST, "/auth/refresh", Some("{}")),
                (
                    Method::POST,
                    "/auth/refresh?mode=cookie",
                    Some("{\"mode\":\"cookie\"}"),
                ),
                (Method::POST, "/auth/logout", None),
                (Method::GET, "/auth/me", None),
                (Method::POST, "/auth/verify", None),
                (Method::GET, "/auth/verify", None),
                (Method::DELETE, "/auth/sessions/x", None),
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
                if response.status().is_server_error() {
                    bad.push(format!("{method} {path} {name} -> {}", response.status()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
    app.logs().assert_clean();
}

/// Forward-auth with the access cookie and no CSRF token: any lie or
/// omission about the client's method is taken as an unsafe one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_auth_takes_any_doubt_about_the_method_as_unsafe() {
    let app = spawn(Backend::Sqlite).await;
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
        vec![
            ("x-forwarded-method", "GET"),
            ("x-forwarded-method", "POST"),
        ],
        vec![("x-forwarded-method", "GET, POST")],
        vec![("x-forwarded-method", "")],
        vec![("x-forwarded-method", "TRACE")],
        vec![
            ("x-forwarded-method", "POST"),
            ("x-http-method-override", "GET"),
        ],
    ] {
        let status = ask(headers.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    for headers in [
        vec![("x-forwarded-method", "GET")],
        vec![
            ("x-forwarded-method", "HEAD"),
            ("x-original-method", "OPTIONS"),
        ],
    ] {
        let status = ask(headers.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "{headers:?}");
    }
    app.logs().assert_clean();
}

/// A logout by refresh cookie at the edges of the refresh token's life:
/// the last second it could refresh, it ends the session; a second later
/// (expired, so it could not refresh either) it ends nothing, answers 401
/// and clears the cookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_by_refresh_cookie_works_until_the_refresh_token_expires() {
    let app = spawn(Backend::Sqlite).await;
    // Defaults: refresh_ttl and session_idle_timeout 14 d.
    let first = login_in_cookie_mode(&app, "edge@example.com").await;
    let second = login_in_cookie_mode(&app, "edge@example.com").await;
    let logout = |s: &CookieSession| {
        app.client
            .post(app.url("/auth/logout"))
            .header(
                "cookie",
                format!(
                    "__Secure-tg_refresh={}; __Host-tg_csrf={}",
                    s.refresh, s.csrf
                ),
            )
            .header("x-csrf-token", s.csrf.clone())
            .send()
    };
    app.clock.advance(14 * 86_400 - 1);
    let response = logout(&first).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(set_cookies(&response).len(), 3);
    app.clock.advance(1);
    let response = logout(&second).await.unwrap();
    assert_eq!(set_cookies(&response).len(), 3);
    problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(app.audit_events("logout").await.len(), 1);
    app.logs().assert_clean();
}

/// A tab refreshes while another signs out with the refresh cookie it
/// read a moment before: within `refresh_reuse_interval` (as for a refresh
/// race) the used token still names the session, which ends, so the
/// cookies the refresh just set sign nobody in. Past the interval a used
/// token ends nothing (401, and the cookies cleared).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_racing_a_refresh_still_ends_the_session() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.public_url = "https://auth.test".to_owned();
        s.refresh_reuse_interval = std::time::Duration::from_secs(10);
    })
    .await;
    let logout = |s: &CookieSession| {
        app.client
            .post(app.url("/auth/logout"))
            .header(
                "cookie",
                format!(
                    "__Secure-tg_refresh={}; __Host-tg_csrf={}",
                    s.refresh, s.csrf
                ),
            )
            .header("x-csrf-token", s.csrf.clone())
            .send()
    };
    for (wait, ends) in [(10, true), (11, false)] {
        let old = login_in_cookie_mode(&app, "race@example.com").await;
        let response = refresh_by_cookie(&app, &old.refresh_cookie_header(), Some(&old.csrf)).await;
        let new = CookieSession::from_cookies(&app, &set_cookies(&response));
        app.clock.advance(wait);
        let response = logout(&old).await.unwrap();
        assert_eq!(set_cookies(&response).len(), 3);
        let after = refresh_by_cookie(&app, &new.refresh_cookie_header(), Some(&new.csrf)).await;
        if ends {
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "after {wait} s");
            problem(after, StatusCode::BAD_REQUEST).await;
        } else {
            problem(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(after.status(), StatusCode::OK, "after {wait} s");
            CookieSession::from_cookies(&app, &set_cookies(&after));
        }
    }
    app.logs().assert_clean();
}

/// The library's layer clears a refused access cookie with the service's
/// own clearing `Set-Cookie`, byte for byte, in every cookie configuration
/// (`SameSite`, the insecure development names): the guard the service
/// builds is the one an API would use behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_guard_clears_the_access_cookie_exactly_as_the_service_does() {
    use tokengate_server::http::cookies::BrowserCookies;
    use tokengate_server::infra::config::SameSite;
    for (same_site, insecure) in [
        (SameSite::Strict, false),
        (SameSite::Lax, false),
        (SameSite::Lax, true),
    ] {
        let app = spawn_app_with(Backend::Sqlite, |s| {
            s.cookie_same_site = same_site;
            s.cookie_insecure_dev = insecure;
        })
        .await;
        let cookies = BrowserCookies::of(&app.state.settings);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            format!("{}=whatever", cookies.access_name())
                .parse()
                .unwrap(),
        );
        let guard = &app.state.guard;
        let presented = guard.presented_token(&headers).unwrap().unwrap();
        assert!(presented.from_cookie());
        assert_eq!(
            guard.clearing_cookie(&presented),
            Some(cookies.cleared_access().unwrap()),
            "{same_site:?}, insecure: {insecure}"
        );
    }
}

/// The `Set-Cookie` values of a response as sent, in order.
fn raw_set_cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const LEGACY_CLEARED: &str =
    "__Secure-tg_refresh=; Path=/auth/refresh; Max-Age=0; HttpOnly; Secure; SameSite=Strict";

/// A browser from the pre-release cookie mode holds a refresh cookie at
/// `Path=/auth/refresh` and, after a refresh, the current one at `/auth/`:
/// it sends both, which is refused as ambiguous. Every answer that sets or
/// clears the refresh cookie clears the old path too (before the current
/// cookie, so a client that keeps one cookie per name keeps the right one),
/// and the ambiguous refusal itself clears it: the browser heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pre_release_refresh_cookie_path_is_cleared_so_such_a_browser_heals() {
    let app = spawn(Backend::Sqlite).await;
    app.register("old@example.com", PASSWORD).await;
    let response = app
        .post_json(
            "/auth/login?mode=cookie",
            &json!({"email": "old@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = raw_set_cookies(&response);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0], LEGACY_CLEARED);
    let refresh_at = sent
        .iter()
        .position(|c| c.starts_with("__Secure-tg_refresh=") && c.contains("Path=/auth/;"))
        .unwrap();
    assert!(refresh_at > 0);
    // The pre-release cookie: a used token of the same session.
    let legacy = CookieSession::from_cookies(&app, &set_cookies(&response));
    let response =
        refresh_by_cookie(&app, &legacy.refresh_cookie_header(), Some(&legacy.csrf)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(raw_set_cookies(&response)[0], LEGACY_CLEARED);
    let current = CookieSession::from_cookies(&app, &set_cookies(&response));
    // Both sent, the longer path first (as a browser orders them).
    let both = format!(
        "__Secure-tg_refresh={}; __Secure-tg_refresh={}; __Host-tg_csrf={}",
        legacy.refresh, current.refresh, current.csrf
    );
    let response = refresh_by_cookie(&app, &both, Some(&current.csrf)).await;
    assert_eq!(raw_set_cookies(&response), [LEGACY_CLEARED]);
    assert_eq!(
        problem(response, StatusCode::BAD_REQUEST).await["error"],
        "invalid_grant"
    );
    // The browser dropped the old one: the next refresh works, and
    // nothing was used up by the refusal.
    let response =
        refresh_by_cookie(&app, &current.refresh_cookie_header(), Some(&current.csrf)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let current = CookieSession::from_cookies(&app, &set_cookies(&response));
    // A logout clears it as well.
    let response = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", current.refresh_cookie_header())
        .header("x-csrf-token", &current.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let sent = raw_set_cookies(&response);
    assert!(sent.contains(&LEGACY_CLEARED.to_owned()), "{sent:?}");
    assert_eq!(sent.len(), 4, "{sent:?}");
    app.logs().assert_clean();
}

/// Behind a path prefix, the legacy path is under it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pre_release_refresh_cookie_is_cleared_under_the_path_prefix() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.public_url = "https://auth.test/tg".to_owned();
    })
    .await;
    app.register("pre@example.com", PASSWORD).await;
    let response = app
        .post_json(
            "/auth/login?mode=cookie",
            &json!({"email": "pre@example.com", "password": PASSWORD}),
        )
        .await;
    let sent = raw_set_cookies(&response);
    assert_eq!(
        sent[0],
        "__Secure-tg_refresh=; Path=/tg/auth/refresh; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    CookieSession::from_cookies(&app, &set_cookies(&response));
}

/// A CSRF refusal is stored in the audit log (`csrf_refused`: the client,
/// the verified token's user and session, the path and which check
/// failed; never a token), once per client per minute like the other
/// refusal rows, however many arrive: on the service's own endpoints, on a
/// refresh by cookie and on `/auth/verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_csrf_refusal_leaves_one_audit_row_per_client_per_minute() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "zed@example.com").await;
    let me: Value = me_by_cookie(&app, &session.cookie_header())
        .await
        .json()
        .await
        .unwrap();
    let cookie = session.cookie_header();
    let cross_site = || write(&app, Some(&cookie), &[("origin", "https://evil.test")]);
    let rows = || app.audit_events("csrf_refused");
    // Not yet a refusal: none.
    assert!(rows().await.is_empty());

    let response = cross_site().await;
    problem(response, StatusCode::FORBIDDEN).await;
    let stored = rows().await;
    assert_eq!(stored.len(), 1);
    let row = &stored[0];
    assert_eq!(row.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.user_id.as_deref(), me["id"].as_str());
    assert_eq!(row.session_id.as_deref(), me["session_id"].as_str());
    assert_eq!(row.detail["path"], "/auth/logout");
    assert_eq!(row.detail["reason"], "csrf_foreign_origin");
    let text = row.detail.to_string();
    for secret in [&session.access, &session.refresh, &session.csrf] {
        assert!(!text.contains(secret.as_str()));
    }

    // A flood of 100 at once in the same minute: refused, no new row.
    let flood: Vec<_> = (0..100).map(|_| cross_site()).collect();
    for response in futures_util::future::join_all(flood).await {
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(rows().await.len(), 1);

    // The next minute: one more, from `/auth/verify` (forward-auth asked
    // about an unsafe request), however many.
    app.clock.advance(60);
    let verify = || {
        app.client
            .get(app.url("/auth/verify"))
            .header("cookie", session.cookie_header())
            .header("x-forwarded-method", "POST")
            .send()
    };
    let flood: Vec<_> = (0..100).map(|_| verify()).collect();
    for response in futures_util::future::join_all(flood).await {
        assert_eq!(response.unwrap().status(), StatusCode::FORBIDDEN);
    }
    let stored = rows().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].detail["path"], "/auth/verify");
    assert_eq!(stored[0].detail["reason"], "csrf_missing_header");
    assert_eq!(stored[0].user_id.as_deref(), me["id"].as_str());

    // The next: a refresh by cookie with another CSRF token (the session
    // of a refresh cookie is not looked up: the client alone is named).
    app.clock.advance(60);
    let response = refresh_by_cookie(&app, &session.refresh_cookie_header(), Some("guess")).await;
    problem(response, StatusCode::FORBIDDEN).await;
    let stored = rows().await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0].detail["path"], "/auth/refresh");
    assert_eq!(stored[0].detail["reason"], "csrf_cookie_mismatch");
    assert_eq!(stored[0].user_id, None);

    // A bearer-authenticated or accepted request leaves none.
    app.clock.advance(60);
    let response = write(
        &app,
        Some(&session.cookie_header()),
        &[("x-csrf-token", &session.csrf), ("origin", APP_ORIGIN)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(rows().await.len(), 3);
    app.logs().assert_clean();
}

/// The `path` of a `csrf_refused` row is the route's template, not the
/// path the client sent: a cookie-authenticated write to a route with an
/// id in its path (`DELETE /auth/sessions/{id}`) would otherwise store
/// whatever the client put there, up to the 64 KiB a URI may hold, in the
/// row and its log line, once per client per minute from every address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_csrf_refusal_row_names_the_route_never_the_path_sent() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "long@example.com").await;
    let sent = "a".repeat(60_000);
    let response = app
        .client
        .delete(app.url(&format!("/auth/sessions/{sent}")))
        .header("cookie", session.cookie_header())
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let stored = app.audit_events("csrf_refused").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].detail["path"], "/auth/sessions/{id}");
    assert!(!stored[0].detail.to_string().contains(&sent[..100]));
}

/// Refresh cookies none of which we issued are no CSRF attempt on a
/// session, and leave no `csrf_refused` row: one such cookie never did
/// (it has no session to check against), and several made up by a client
/// with no account at all must not either, or anyone could fill the table
/// with false CSRF alarms. Several where one is a session's are still
/// stored when the request fails that session's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_cookies_we_never_issued_leave_no_csrf_row() {
    let app = spawn(Backend::Sqlite).await;
    let rows = || app.audit_events("csrf_refused");
    let made_up = format!(
        "__Secure-tg_refresh={}; __Secure-tg_refresh={}",
        "A".repeat(43),
        "B".repeat(43)
    );
    let response = refresh_by_cookie(&app, &made_up, Some("guess")).await;
    problem(response, StatusCode::FORBIDDEN).await;
    assert!(rows().await.is_empty());

    let session = login_in_cookie_mode(&app, "real@example.com").await;
    let one_real = format!(
        "__Secure-tg_refresh={}; __Secure-tg_refresh={}",
        "A".repeat(43),
        session.refresh
    );
    let response = refresh_by_cookie(&app, &one_real, Some("guess")).await;
    problem(response, StatusCode::FORBIDDEN).await;
    let stored = rows().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].detail["reason"], "csrf_no_matching_cookie");
}

/// No CORS, by design (docs/SECURITY.md): a preflight from another origin
/// for a credentialed write with the CSRF header, and a credentialed read,
/// get no `Access-Control-Allow-*` header, so a browser sends neither the
/// write nor shows the read to the foreign page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_answer_grants_cross_origin_access() {
    let app = spawn(Backend::Sqlite).await;
    let session = login_in_cookie_mode(&app, "cors@example.com").await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/auth/logout"))
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-csrf-token, content-type",
        )
        .send()
        .await
        .unwrap();
    let read = app
        .client
        .get(app.url("/auth/me"))
        .header("origin", APP_ORIGIN)
        .header("cookie", session.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    for response in [&preflight, &read] {
        let granted: Vec<_> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(granted.is_empty(), "{granted:?}");
    }
    app.logs().assert_clean();
}
