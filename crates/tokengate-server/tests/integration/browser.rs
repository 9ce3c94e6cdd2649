//! The pages in a real browser: headless Chromium (Debian's `chromium`),
//! driven over WebDriver (`chromedriver`, started here on a free port; the
//! client is `webdriver.rs`), against the real service on a free port.
//!
//! The service runs over plain http on 127.0.0.1 with `cookie_insecure_dev`
//! — the switch made for exactly this (a browser on the same machine): TLS
//! would only add a test CA the browser must be told to trust, and the
//! cookies' `Secure` and `__Host-` attributes are checked byte for byte by
//! `cookies.rs`. What only a browser can show is checked here: that a
//! script cannot read the access cookie, that the pages refresh and sign out
//! as they should, and that another origin's form and `fetch` are refused.
//!
//! Without `chromium` and `chromedriver` (`scripts/browsers` installs them)
//! each test prints SKIPPED and passes, except under `CI=true`, where it
//! fails. No fixed sleeps: every wait polls a DOM condition under a deadline.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::{Backend, TestApp, spawn_app_with};
use crate::webdriver::Session;

const PASSWORD: &str = "a long passphrase for the browser tests";
/// How long any one condition may take to hold.
const DEADLINE: Duration = Duration::from_secs(15);

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether Chromium and chromedriver are here; SKIPPED (or, under CI, a
/// failure) when not.
fn browser_available(test: &str) -> bool {
    if on_path("chromium") && on_path("chromedriver") {
        return true;
    }
    assert!(
        !in_ci(),
        "chromium and chromedriver are required under CI=true: run scripts/browsers"
    );
    println!(
        "SKIPPED {test}: chromium or chromedriver is missing (scripts/browsers installs them)"
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver of this test's own, killed when dropped, after it has
/// ended every browser it started (a failed test never closes its
/// sessions, and a chromedriver killed with them open leaves Chromium
/// running).
struct Driver {
    child: Child,
    port: u16,
    url: String,
    sessions: std::sync::Mutex<Vec<String>>,
}

impl Driver {
    async fn start() -> Driver {
        // The free port may be taken again before chromedriver binds it:
        // then it exits at once, and another port is tried.
        for _ in 0..3 {
            if let Some(driver) = Driver::start_on(free_port()).await {
                return driver;
            }
        }
        panic!("chromedriver would not start on three free ports");
    }

    async fn start_on(port: u16) -> Option<Driver> {
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut driver = Driver {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            sessions: std::sync::Mutex::new(Vec::new()),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(response) = ready {
                let status: Value = response.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    return Some(driver);
                }
            }
            if let Ok(Some(_)) = driver.child.try_wait() {
                return None;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new browser session: a fresh profile of its own (chromedriver
    /// makes a temporary one per session), so no cookie is shared.
    async fn browser(&self) -> Session {
        self.browser_with(&[]).await
    }

    /// A new browser session with more command-line switches for Chromium
    /// (`--user-agent=...`).
    async fn browser_with(&self, extra_args: &[&str]) -> Session {
        let mut args = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            "--no-first-run",
            "--no-default-browser-check",
        ];
        args.extend_from_slice(extra_args);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_binary(), "args": args }),
        );
        let session = Session::start(&self.url, Value::Object(capabilities)).await;
        self.sessions
            .lock()
            .unwrap()
            .push(session.path().to_owned());
        session
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A plain blocking request: Drop cannot await. A session already
        // closed answers an error, which is fine.
        let sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|e| e.into_inner()));
        for path in sessions {
            end_session(self.port, &path);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE <path>` to the chromedriver on `port`, waiting for its answer
/// (the browser has quit when it comes). chromedriver keeps the connection
/// open: the answer ends after `Content-Length` bytes of body.
fn end_session(port: u16, path: &str) {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let request = format!("DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if answer.len() >= head_end + 4 + length {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn chromium_binary() -> String {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file())
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// The service as the pages need it: cookie mode over plain http on
/// 127.0.0.1 (the insecure development cookies), its public URL the
/// address the browser uses (the CSRF check compares origins with it).
async fn spawn_for_browser(
    tweak: impl FnOnce(&mut tokengate_server::infra::config::Settings),
) -> TestApp {
    let port = free_port();
    spawn_app_with(Backend::Sqlite, move |s| {
        s.addr = format!("127.0.0.1:{port}").parse().unwrap();
        s.public_url = format!("http://127.0.0.1:{port}");
        s.cookie_insecure_dev = true;
        tweak(s);
    })
    .await
}

/// Waits until `condition` (a JavaScript expression) is true in the page.
async fn wait_until(browser: &Session, condition: &str) {
    let script = format!("try {{ return Boolean({condition}); }} catch (e) {{ return false; }}");
    let started = Instant::now();
    loop {
        // A navigation in progress can fail a script: poll again.
        if let Ok(Value::Bool(true)) = browser.execute(&script).await {
            return;
        }
        if started.elapsed() > DEADLINE {
            let url = browser.current_url().await;
            let text = text_of(browser, "document.body ? document.body.innerText : ''").await;
            panic!("timed out waiting for `{condition}` on {url}; the page says: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the browser is back on the sign-in page, showing the form
/// (hidden while the page checks whether a session is still here).
async fn wait_for_sign_in_page(browser: &Session) {
    wait_until(
        browser,
        "location.pathname === '/' && document.body.dataset.ready === 'true' \
         && !document.querySelector('main').hidden",
    )
    .await;
}

/// What `/auth/me` answers to this access cookie (the dev-mode name).
async fn me_with_access_cookie(app: &TestApp, access: &str) -> StatusCode {
    app.client
        .get(app.url("/auth/me"))
        .header("cookie", format!("tg_access={access}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn text_of(browser: &Session, expression: &str) -> String {
    match browser
        .execute(&format!("return String({expression});"))
        .await
    {
        Ok(Value::String(text)) => text,
        _ => String::new(),
    }
}

async fn path_of(browser: &Session) -> String {
    text_of(browser, "location.pathname").await
}

async fn click(browser: &Session, id: &str) {
    browser.css(&format!("#{id}")).await.click().await;
}

/// Signs in with the keyboard only: the email field has the focus when the
/// page opens, Tab moves to the password (with a visible focus ring), Enter
/// submits.
async fn sign_in_by_keyboard(browser: &Session, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/")).await;
    wait_until(browser, "document.activeElement.id === 'signin-email'").await;
    browser
        .active_element()
        .await
        .send_keys(&format!("{email}\u{e004}"))
        .await;
    wait_until(
        browser,
        "document.activeElement.id === 'signin-password' \
         && getComputedStyle(document.activeElement).outlineStyle === 'solid' \
         && getComputedStyle(document.activeElement).outlineWidth !== '0px'",
    )
    .await;
    browser
        .active_element()
        .await
        .send_keys(&format!("{password}\u{e007}"))
        .await;
}

async fn sign_in(browser: &Session, app: &TestApp, email: &str) {
    sign_in_by_keyboard(browser, app, email, PASSWORD).await;
    wait_until(
        browser,
        "location.pathname === '/account' && document.body.dataset.ready === 'true'",
    )
    .await;
}

/// Saves a PNG of the page under `target/screenshots/` for review.
async fn screenshot(browser: &Session, name: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn register(app: &TestApp, email: &str) {
    assert_eq!(
        app.register(email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

/// The id of the user with this email.
async fn user_id(app: &TestApp, email: &str) -> String {
    app.state
        .store
        .user_by_email(email)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no user {email}"))
        .id
        .as_str()
        .to_owned()
}

/// Gives a registered user the admin role, as `tokengate user set-roles`
/// does.
async fn promote_to_admin(app: &TestApp, email: &str) {
    let id = user_id(app, email).await;
    app.state
        .accounts
        .update(
            &id,
            Some(&["user".to_owned(), "admin".to_owned()]),
            None,
            &tokengate_server::service::Actor::Cli,
        )
        .await
        .unwrap();
}

/// Tells the log check the browser's access token, if it still holds one
/// (no log line may carry it).
async fn remember_the_access_cookie(app: &TestApp, browser: &Session) {
    if let Some(access) = cookie_value(&cookie_jar(browser).await, "tg_access") {
        app.logs().remember(&access);
    }
}

/// Waits until the browser has dropped the access cookie: its `Max-Age`
/// ran out in real time (the service's clock, moved by hand, plays no
/// part).
async fn wait_for_the_access_cookie_to_run_out(browser: &Session) {
    let started = Instant::now();
    while cookie_value(&cookie_jar(browser).await, "tg_access").is_some() {
        assert!(
            started.elapsed() < DEADLINE,
            "the access cookie outlived its Max-Age"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names of the cookies the browser holds for the service, with
/// whether each is HttpOnly (WebDriver sees them all; a page's script
/// does not).
async fn cookie_jar(browser: &Session) -> Vec<(String, String, bool)> {
    browser
        .cookies()
        .await
        .into_iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["value"].as_str().unwrap_or_default().to_owned(),
                c["httpOnly"] == true,
            )
        })
        .collect()
}

fn cookie_value(jar: &[(String, String, bool)], name: &str) -> Option<String> {
    jar.iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, v, _)| v.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_hides_the_access_cookie_survives_reload_refreshes_silently_and_sign_out_everywhere_ends_it()
 {
    if !browser_available(
        "browser::sign_in_hides_the_access_cookie_survives_reload_refreshes_silently_and_sign_out_everywhere_ends_it",
    ) {
        return;
    }
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    let email = "ada@example.com";
    register(&app, email).await;

    // Sign in, by keyboard, and land on /account.
    let first = driver.browser().await;
    sign_in(&first, &app, email).await;
    assert_eq!(
        text_of(&first, "document.getElementById('me-email').textContent").await,
        email
    );

    // The access token is out of any script's reach; the CSRF token is not
    // (the page must echo it).
    let script_sees = text_of(&first, "document.cookie").await;
    assert!(!script_sees.contains("tg_access"), "{script_sees}");
    assert!(!script_sees.contains("tg_refresh"), "{script_sees}");
    assert!(script_sees.contains("tg_csrf="), "{script_sees}");
    let jar = cookie_jar(&first).await;
    assert!(
        jar.iter()
            .any(|(n, _, http_only)| n == "tg_access" && *http_only),
        "{jar:?}"
    );
    let access_before = cookie_value(&jar, "tg_access").unwrap();
    app.logs().remember(&access_before);

    // A reload keeps the session, with no refresh needed.
    first.refresh().await;
    wait_until(&first, "document.body.dataset.ready === 'true'").await;
    assert_eq!(path_of(&first).await, "/account");
    assert_eq!(
        text_of(&first, "document.body.dataset.refreshes || '0'").await,
        "0"
    );

    // Not an admin: /admin says so plainly.
    first.goto(&app.url("/admin")).await;
    wait_until(&first, "document.body.dataset.ready === 'refused'").await;
    let refusal = text_of(&first, "document.getElementById('refused').innerText").await;
    assert!(refusal.contains("admin"), "{refusal}");
    first.goto(&app.url("/account")).await;
    wait_until(&first, "document.body.dataset.ready === 'true'").await;

    // The access token expires (the service's clock moves past its
    // lifetime and the leeway); the page's next call meets a 401, refreshes
    // by cookie once (a POST with the CSRF header), and goes through. (A
    // sign-out would not show it: with no valid access token it ends the
    // session by the refresh cookie, no refresh needed.)
    let lifetime = app.settings.access_ttl + app.settings.leeway;
    app.clock.advance(lifetime.as_secs() as i64 + 1);
    first.goto(&app.url("/account")).await;
    wait_until(&first, "document.body.dataset.ready === 'true'").await;
    assert_eq!(
        text_of(&first, "document.body.dataset.refreshes").await,
        "1"
    );
    // A state-changing action with the refreshed token and the same CSRF
    // token goes through.
    click(&first, "signout-others").await;
    wait_until(
        &first,
        "document.getElementById('page-message').textContent.includes('other sessions are signed out')",
    )
    .await;
    assert_eq!(path_of(&first).await, "/account");
    assert_eq!(app.audit_events("refresh_rotated").await.len(), 1);
    let access_after = cookie_value(&cookie_jar(&first).await, "tg_access").unwrap();
    app.logs().remember(&access_after);
    assert_ne!(access_before, access_after, "the access cookie was rotated");

    // A second profile signs in as the same user: both sessions listed,
    // this one marked.
    let second = driver.browser().await;
    sign_in(&second, &app, email).await;
    wait_until(&second, "document.body.dataset.sessions === '2'").await;
    let marked = text_of(&second, "document.querySelector('tr.current').innerText").await;
    assert!(marked.contains("this device"), "{marked}");
    screenshot(&second, "account").await;

    // Sign out everywhere from the second: it lands on the sign-in page...
    click(&second, "signout-everywhere").await;
    wait_for_sign_in_page(&second).await;
    // ...and the first's next action finds its session gone: the refresh
    // fails too, and it is back on the sign-in page.
    click(&first, "signout-others").await;
    wait_for_sign_in_page(&first).await;
    assert_eq!(
        me_with_access_cookie(&app, &access_after).await,
        StatusCode::UNAUTHORIZED
    );

    // The header's "Sign out" (this session only): it leaves the page only
    // once the service has ended the session, and that session is over.
    let third = driver.browser().await;
    sign_in(&third, &app, email).await;
    wait_until(&third, "document.body.dataset.ready === 'true'").await;
    let third_access = cookie_value(&cookie_jar(&third).await, "tg_access").unwrap();
    app.logs().remember(&third_access);
    click(&third, "signout").await;
    wait_for_sign_in_page(&third).await;
    assert_eq!(
        me_with_access_cookie(&app, &third_access).await,
        StatusCode::UNAUTHORIZED
    );

    first.close().await;
    second.close().await;
    third.close().await;
    app.logs().assert_clean();
}

/// The attacker's pages, on another origin (same host, another port: the
/// browser still sends the `SameSite=Strict` cookies, since ports do not
/// make another site — exactly when the CSRF check must hold on its own).
async fn serve_attacker(target: String) -> (String, tokio::task::JoinHandle<()>) {
    use axum::response::Html;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let form = format!(
        r#"<!doctype html><title>prize</title>
<form id="f" method="POST" action="{target}/auth/logout" enctype="text/plain">
<input name='{{"scope":"global","x":"' value='"}}'></form>
<script>document.getElementById('f').submit();</script>"#
    );
    let fetches = format!(
        r#"<!doctype html><title>prize</title><pre id="out"></pre>
<script>
const out = document.getElementById('out');
const note = (line) => {{ out.textContent += line + '\n'; }};
async function attempt(name, init) {{
  try {{
    const r = await fetch('{target}/auth/logout', Object.assign({{ method: 'POST', credentials: 'include' }}, init));
    note(name + ': status ' + r.status);
  }} catch (e) {{
    note(name + ': refused ' + e);
  }}
}}
(async () => {{
  // A simple request: no preflight, sent with the cookies.
  await attempt('plain', {{ headers: {{ 'content-type': 'text/plain' }}, body: '{{"scope":"global"}}' }});
  // Cookies ignore ports, so this page can read the CSRF cookie, but
  // sending it in a header needs a CORS preflight the service never grants.
  const csrf = (document.cookie.match(/tg_csrf=([^;]+)/) || [])[1] || '';
  await attempt('with-header', {{ headers: {{ 'content-type': 'application/json', 'x-csrf-token': csrf }}, body: '{{"scope":"global"}}' }});
  note('done');
}})();
</script>"#
    );
    let router = axum::Router::new()
        .route("/form", get(move || async move { Html(form.clone()) }))
        .route("/fetch", get(move || async move { Html(fetches.clone()) }));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (origin, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_origins_form_post_and_credentialed_fetch_are_refused() {
    if !browser_available("browser::another_origins_form_post_and_credentialed_fetch_are_refused") {
        return;
    }
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    let email = "grace@example.com";
    // Registered through the page's own form, which signs her in.
    let browser = driver.browser().await;
    browser.goto(&app.url("/")).await;
    wait_until(
        &browser,
        "!document.getElementById('register-section').hidden",
    )
    .await;
    browser.css("#register-email").await.send_keys(email).await;
    browser
        .css("#register-password")
        .await
        .send_keys(&format!("{PASSWORD}\u{e007}"))
        .await;
    wait_until(
        &browser,
        "location.pathname === '/account' && document.body.dataset.ready === 'true'",
    )
    .await;
    let (attacker, server) = serve_attacker(app.base.clone()).await;
    let session_alive = || async {
        let sessions = app
            .state
            .store
            .audit_page(&tokengate_server::store::AuditQuery {
                kind: Some("logout".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        sessions.is_empty()
    };

    // fetch with credentials, from the other origin.
    browser.goto(&format!("{attacker}/fetch")).await;
    wait_until(
        &browser,
        "document.getElementById('out').textContent.includes('done')",
    )
    .await;
    let outcome = text_of(&browser, "document.getElementById('out').textContent").await;
    // The browser hides the answer (no CORS grant), and the service refused
    // the request it did receive: nothing was logged out.
    assert!(outcome.contains("plain: refused TypeError"), "{outcome}");
    assert!(
        outcome.contains("with-header: refused TypeError"),
        "{outcome}"
    );
    assert!(session_alive().await, "a cross-origin fetch logged out");
    // The guard's refusal lines; the audit row's own line (`csrf_refused`,
    // one per client per minute) names the reason too and is counted apart.
    let refused_by_origin = || {
        app.logs()
            .text()
            .lines()
            .filter(|line| line.contains("csrf_foreign_origin") && !line.contains("csrf_refused"))
            .count()
    };
    assert_eq!(
        refused_by_origin(),
        1,
        "the plain fetch reached the CSRF check and failed it; the other never left the browser"
    );

    // A form POST: the browser navigates to the service's answer, a 403.
    browser.goto(&format!("{attacker}/form")).await;
    wait_until(
        &browser,
        "document.body && document.body.innerText.includes('csrf')",
    )
    .await;
    let shown = text_of(&browser, "document.body.innerText").await;
    assert!(shown.contains("\"status\":403"), "{shown}");
    assert!(session_alive().await, "a cross-origin form logged out");
    assert_eq!(refused_by_origin(), 2, "the form refused by origin too");
    // Both refusals came from one client within a minute: one audit row.
    let rows = app
        .state
        .store
        .audit_page(&tokengate_server::store::AuditQuery {
            kind: Some("csrf_refused".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "{rows:?}");

    // And the session still works for its own pages.
    browser.goto(&app.url("/account")).await;
    wait_until(&browser, "document.body.dataset.ready === 'true'").await;
    assert_eq!(
        text_of(&browser, "document.body.dataset.refreshes || '0'").await,
        "0"
    );
    assert_eq!(
        text_of(&browser, "document.getElementById('me-email').textContent").await,
        email
    );

    // The page's own writes pass: a password change (the form checks the
    // repeat, the service the current password).
    let new_password = "another long passphrase, changed in the page";
    app.logs().remember(new_password);
    browser
        .css("#password-current")
        .await
        .send_keys("not her password")
        .await;
    browser
        .css("#password-new")
        .await
        .send_keys(new_password)
        .await;
    browser
        .css("#password-repeat")
        .await
        .send_keys(&format!("{new_password}\u{e007}"))
        .await;
    wait_until(
        &browser,
        "document.getElementById('password-message').textContent.includes('current password is incorrect')",
    )
    .await;
    browser.css("#password-current").await.clear().await;
    browser
        .css("#password-current")
        .await
        .send_keys(&format!("{PASSWORD}\u{e007}"))
        .await;
    wait_until(
        &browser,
        "document.getElementById('password-message').textContent.includes('password is changed')",
    )
    .await;
    assert_eq!(app.audit_events("password_changed").await.len(), 1);
    assert_eq!(
        app.login(email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(email, new_password).await.status(),
        StatusCode::OK
    );
    server.abort();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_sees_the_failed_logins_in_the_audit_table_and_the_chart() {
    if !browser_available(
        "browser::an_admin_sees_the_failed_logins_in_the_audit_table_and_the_chart",
    ) {
        return;
    }
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    let victim = "victim@example.com";
    register(&app, victim).await;
    let admin_email = "root@example.com";
    register(&app, admin_email).await;
    promote_to_admin(&app, admin_email).await;

    // Five wrong passwords through the page, each met by the same generic
    // message; the sixth is refused by the limit, and the page says how
    // long to wait.
    let browser = driver.browser().await;
    let failures = app.settings.login_max_failures;
    for attempt in 1..=failures + 1 {
        if attempt == 1 {
            sign_in_by_keyboard(&browser, &app, victim, "not the password at all").await;
        } else {
            let password = browser.css("#signin-password").await;
            password.clear().await;
            password.send_keys("not the password at all\u{e007}").await;
        }
        let expected = if attempt <= failures {
            "The email or password is incorrect."
        } else {
            "Too many attempts"
        };
        wait_until(
            &browser,
            &format!(
                "document.getElementById('signin-message').textContent.startsWith({expected:?}) \
                 && !document.getElementById('signin-submit').disabled === {}",
                attempt <= failures
            ),
        )
        .await;
        // The message must change between attempts to be waited on: clear it.
        if attempt < failures {
            browser
                .execute("document.getElementById('signin-message').textContent = '';")
                .await
                .unwrap();
        }
    }
    let message = text_of(
        &browser,
        "document.getElementById('signin-message').textContent",
    )
    .await;
    assert!(message.contains("wait"), "{message}");
    screenshot(&browser, "sign-in").await;

    // The admin signs in (same browser, other account) and opens /admin.
    browser.delete_all_cookies().await;
    sign_in_by_keyboard(&browser, &app, admin_email, PASSWORD).await;
    wait_until(&browser, "location.pathname === '/account'").await;
    wait_until(&browser, "!document.getElementById('nav-admin').hidden").await;
    click(&browser, "nav-admin").await;
    wait_until(
        &browser,
        "location.pathname === '/admin' && document.body.dataset.ready === 'true'",
    )
    .await;

    // The chart: five failed logins, one rate-limit refusal, one success
    // (the admin's sign-in).
    let total = |series: &str| {
        format!(
            "[...document.querySelectorAll('#activity-chart rect[data-series={series}]')]\
             .reduce((sum, r) => sum + Number(r.dataset.count), 0)"
        )
    };
    assert_eq!(
        text_of(&browser, &total("logins_failed")).await,
        failures.to_string()
    );
    assert_eq!(text_of(&browser, &total("rate_limited")).await, "1");
    assert_eq!(text_of(&browser, &total("logins_succeeded")).await, "1");
    assert_eq!(
        text_of(
            &browser,
            "document.querySelectorAll('#activity-chart rect[data-series=logins_failed]').length"
        )
        .await,
        "24",
        "one bar per hour"
    );
    let summary = text_of(
        &browser,
        "document.getElementById('activity-summary').textContent",
    )
    .await;
    assert!(
        summary.contains(&format!("{failures} failed logins")),
        "{summary}"
    );

    // The audit table: every failure, filtered by type.
    let failed_rows = "document.querySelectorAll('#audit tbody tr[data-type=login_failed]').length";
    assert_eq!(text_of(&browser, failed_rows).await, failures.to_string());
    screenshot(&browser, "admin").await;
    browser
        .css("#audit-type option[value='login_failed']")
        .await
        .click()
        .await;
    browser.css("#audit-filter button").await.click().await;
    wait_until(
        &browser,
        &format!(
            "document.querySelectorAll('#audit tbody tr').length === {failures} \
             && document.querySelectorAll('#audit tbody tr[data-type=login_failed]').length === {failures}"
        ),
    )
    .await;
    let rows = text_of(
        &browser,
        "document.getElementById('audit').tBodies[0].innerText",
    )
    .await;
    // What the admin reads, not only the rows' attributes: each failure
    // is shown by its type.
    assert!(
        rows.matches("login_failed").count() >= failures as usize,
        "{rows}"
    );

    // The users table: disable the victim from the page; the service agrees.
    wait_until(
        &browser,
        "document.querySelector('#users tr[data-user=\"victim@example.com\"]')",
    )
    .await;
    browser
        .xpath("//tr[@data-user='victim@example.com']//button[text()='Disable']")
        .await
        .click()
        .await;
    wait_until(
        &browser,
        "document.querySelector('#users tr[data-user=\"victim@example.com\"]').innerText.includes('disabled')",
    )
    .await;
    let victim_row = app
        .state
        .store
        .user_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(victim_row.disabled);

    // Search by email, then change the roles in the row.
    browser
        .css("#user-search-email")
        .await
        .send_keys("Victim@Example.com\u{e007}")
        .await;
    wait_until(
        &browser,
        "document.querySelectorAll('#users tbody tr').length === 1 \
         && document.querySelector('#users tr[data-user=\"victim@example.com\"]')",
    )
    .await;
    let roles = browser.css("#users tbody tr input.roles").await;
    roles.clear().await;
    roles.send_keys("user, support").await;
    browser
        .xpath("//tr[@data-user='victim@example.com']//button[text()='Save roles']")
        .await
        .click()
        .await;
    wait_until(
        &browser,
        "document.getElementById('page-message').textContent.includes('Roles of victim@example.com saved')",
    )
    .await;
    let victim_row = app
        .state
        .store
        .user_by_email("victim@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(victim_row.roles.as_slice(), ["user", "support"]);
    browser.close().await;
}

/// A user agent is any header text the client likes: markup here, with a
/// handler and a script that would mark the window if either ever ran.
const MARKUP_USER_AGENT: &str =
    r#"<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>"#;
/// The most markup an email can carry: its parse refuses `<`, `>`, `"` and
/// `;`, but lets `&` and `'` through, and parsed as HTML `&lt` (no `;`)
/// still decodes to `<`: shown as typed only if it is never parsed.
const MARKUP_EMAIL: &str = "&ltimg&gt'o&amp@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn markup_in_a_user_agent_or_an_email_is_shown_as_text_and_never_runs() {
    if !browser_available(
        "browser::markup_in_a_user_agent_or_an_email_is_shown_as_text_and_never_runs",
    ) {
        return;
    }
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    register(&app, MARKUP_EMAIL).await;
    promote_to_admin(&app, MARKUP_EMAIL).await;
    // A failed sign-in for the address: its audit row carries it.
    assert_eq!(
        app.login(MARKUP_EMAIL, "not the password at all")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let user_agent = format!("--user-agent={MARKUP_USER_AGENT}");
    let browser = driver.browser_with(&[&user_agent]).await;
    sign_in(&browser, &app, MARKUP_EMAIL).await;
    assert_eq!(
        text_of(&browser, "navigator.userAgent").await,
        MARKUP_USER_AGENT,
        "the browser sends the markup as its user agent"
    );
    let email_literal = serde_json::to_string(MARKUP_EMAIL).unwrap();

    // /account: the session's device is the user agent, as text.
    let device = "document.querySelector('#sessions tr.current td')";
    assert_eq!(
        text_of(&browser, &format!("{device}.firstChild.textContent")).await,
        MARKUP_USER_AGENT
    );
    let shown = text_of(&browser, &format!("{device}.innerText")).await;
    assert!(shown.starts_with(MARKUP_USER_AGENT), "{shown}");
    assert_eq!(
        text_of(&browser, "document.getElementById('me-email').innerText").await,
        MARKUP_EMAIL
    );
    // Nothing was parsed into elements, and nothing ran. (The policy would
    // also stop the inline handler and script; the point is that the text
    // never became markup at all.)
    let parsed = "document.querySelectorAll('main img, main script').length";
    assert_eq!(text_of(&browser, parsed).await, "0");
    assert_eq!(text_of(&browser, "typeof window.__xss").await, "undefined");
    // And Trusted Types are enforced: a string written into an HTML sink
    // is refused by the browser itself.
    assert_eq!(
        text_of(
            &browser,
            "(() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return 'written'; } \
             catch (e) { return e.name; } })()"
        )
        .await,
        "TypeError"
    );

    // /admin: the users table and the audit row of the failed sign-in.
    browser.goto(&app.url("/admin")).await;
    wait_until(&browser, "document.body.dataset.ready === 'true'").await;
    let user_row = format!(
        "[...document.querySelectorAll('#users tbody tr')].find((r) => r.dataset.user === {email_literal})"
    );
    assert_eq!(
        text_of(&browser, &format!("{user_row}.cells[0].innerText")).await,
        MARKUP_EMAIL
    );
    let failure = text_of(
        &browser,
        "document.querySelector('#audit tr[data-type=login_failed] td.detail').innerText",
    )
    .await;
    let detail: Value = serde_json::from_str(&failure).unwrap();
    assert_eq!(detail["email"], MARKUP_EMAIL, "{failure}");
    let parsed = "document.querySelectorAll('#console img, #console script').length";
    assert_eq!(text_of(&browser, parsed).await, "0");
    assert_eq!(text_of(&browser, "typeof window.__xss").await, "undefined");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_out_another_sessions_row_ends_that_browser_and_keeps_this_one() {
    if !browser_available(
        "browser::signing_out_another_sessions_row_ends_that_browser_and_keeps_this_one",
    ) {
        return;
    }
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    let email = "lin@example.com";
    register(&app, email).await;
    let this = driver.browser().await;
    sign_in(&this, &app, email).await;
    let other = driver.browser().await;
    sign_in(&other, &app, email).await;
    let this_access = cookie_value(&cookie_jar(&this).await, "tg_access").unwrap();
    let other_access = cookie_value(&cookie_jar(&other).await, "tg_access").unwrap();
    app.logs().remember(&this_access);
    app.logs().remember(&other_access);

    // This page lists both; the other's row has a Sign out of its own.
    this.refresh().await;
    wait_until(
        &this,
        "document.body.dataset.ready === 'true' && document.body.dataset.sessions === '2'",
    )
    .await;
    this.xpath("//table[@id='sessions']/tbody/tr[not(contains(@class, 'current'))]//button[text()='Sign out']")
        .await
        .click()
        .await;
    wait_until(
        &this,
        "document.getElementById('page-message').textContent.includes('That session is signed out') \
         && document.body.dataset.sessions === '1'",
    )
    .await;
    assert_eq!(path_of(&this).await, "/account");
    assert_eq!(
        text_of(
            &this,
            "document.querySelectorAll('#sessions tbody tr.current').length"
        )
        .await,
        "1",
        "the row left is this device's"
    );
    assert_eq!(app.audit_events("session_revoked").await.len(), 1);
    // The service agrees at once: the other's access token is refused, this
    // one's still works.
    assert_eq!(
        me_with_access_cookie(&app, &other_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_access_cookie(&app, &this_access).await,
        StatusCode::OK
    );

    // The other browser's next visit finds its session over (its refresh
    // fails too) and asks for a password.
    other.refresh().await;
    wait_for_sign_in_page(&other).await;
    // This one carries on.
    this.refresh().await;
    wait_until(&this, "document.body.dataset.ready === 'true'").await;
    assert_eq!(path_of(&this).await, "/account");
    assert_eq!(
        text_of(&this, "document.body.dataset.refreshes || '0'").await,
        "0"
    );
    this.close().await;
    other.close().await;
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sign_out_the_service_refuses_keeps_the_page_and_the_session() {
    if !browser_available("browser::a_sign_out_the_service_refuses_keeps_the_page_and_the_session")
    {
        return;
    }
    // A budget of 3 requests a minute per client: the sign-in and the
    // account page's two calls use it up, and the next request is allowed
    // only 20 s after the first (governor, in real time).
    let app = spawn_for_browser(|s| s.auth_requests_per_minute = 3).await;
    let driver = Driver::start().await;
    let email = "pat@example.com";
    // Created without the API, so as not to spend the budget.
    let account = tokengate_server::service::NewAccount::parse(email, PASSWORD, &["user"]).unwrap();
    app.state
        .accounts
        .create(account, &tokengate_server::service::Actor::Cli)
        .await
        .unwrap();
    let browser = driver.browser().await;
    sign_in(&browser, &app, email).await;
    // The budget is spent (the test's requests come from the same address).
    let refused = app.client.get(app.url("/auth/me")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    for button in ["signout", "signout-everywhere"] {
        browser
            .execute("document.getElementById('page-message').textContent = '';")
            .await
            .unwrap();
        click(&browser, button).await;
        wait_until(
            &browser,
            "document.getElementById('page-message').textContent.startsWith('You are still signed in. Too many attempts')",
        )
        .await;
        assert_eq!(path_of(&browser).await, "/account", "{button}");
    }
    // Nothing ended: no logout recorded, the session is live.
    assert!(app.audit_events("logout").await.is_empty());
    let id = user_id(&app, email).await;
    let now = tokengate_server::infra::clock::Clock::now(&app.clock).as_secs();
    assert_eq!(
        app.state.store.list_sessions(&id, now).await.unwrap().len(),
        1
    );
    assert!(app.logs().text().contains("request_budget_exceeded"));
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_cookie_that_runs_out_is_refreshed_silently_and_the_sign_in_page_resumes_the_session()
 {
    if !browser_available(
        "browser::an_access_cookie_that_runs_out_is_refreshed_silently_and_the_sign_in_page_resumes_the_session",
    ) {
        return;
    }
    // Three seconds of access, in real time: the cookie's Max-Age.
    let app = spawn_for_browser(|s| s.access_ttl = Duration::from_secs(3)).await;
    let driver = Driver::start().await;
    let email = "kim@example.com";
    register(&app, email).await;
    let browser = driver.browser().await;
    sign_in(&browser, &app, email).await;
    remember_the_access_cookie(&app, &browser).await;
    // Counted from here: a machine slow enough to take 3 s over the
    // sign-in has refreshed once already, silently.
    let rotated = app.audit_events("refresh_rotated").await.len();

    // The browser drops the access cookie; the page's next call meets a
    // 401, refreshes by cookie once, and goes on.
    wait_for_the_access_cookie_to_run_out(&browser).await;
    browser.refresh().await;
    wait_until(&browser, "document.body.dataset.ready === 'true'").await;
    assert_eq!(path_of(&browser).await, "/account");
    assert_eq!(
        text_of(&browser, "document.body.dataset.refreshes").await,
        "1"
    );
    assert_eq!(
        text_of(&browser, "document.getElementById('me-email').textContent").await,
        email
    );
    assert_eq!(app.audit_events("refresh_rotated").await.len(), rotated + 1);
    remember_the_access_cookie(&app, &browser).await;

    // Run out again, and open the sign-in page: it refreshes once and goes
    // straight to the account, no password asked.
    wait_for_the_access_cookie_to_run_out(&browser).await;
    browser.goto(&app.url("/")).await;
    wait_until(
        &browser,
        "location.pathname === '/account' && document.body.dataset.ready === 'true'",
    )
    .await;
    assert_eq!(app.audit_events("refresh_rotated").await.len(), rotated + 2);
    remember_the_access_cookie(&app, &browser).await;

    // The session ends elsewhere (an operator ends it): the sign-in page's
    // one refresh fails, and it shows the form, focused.
    let id = user_id(&app, email).await;
    app.state
        .accounts
        .end_all_sessions(&id, &tokengate_server::service::Actor::Cli)
        .await
        .unwrap();
    wait_for_the_access_cookie_to_run_out(&browser).await;
    let failed_before = app.audit_events("refresh_failed").await.len();
    browser.goto(&app.url("/")).await;
    wait_until(
        &browser,
        "document.body.dataset.ready === 'true' && !document.querySelector('main').hidden \
         && document.activeElement.id === 'signin-email'",
    )
    .await;
    assert_eq!(path_of(&browser).await, "/");
    assert_eq!(
        app.audit_events("refresh_failed").await.len(),
        failed_before + 1
    );
    // The refused refresh cleared the cookies: the next visit asks nothing.
    let jar = cookie_jar(&browser).await;
    assert_eq!(cookie_value(&jar, "tg_csrf"), None, "{jar:?}");
    browser.refresh().await;
    wait_until(&browser, "document.body.dataset.ready === 'true'").await;
    assert_eq!(
        app.audit_events("refresh_failed").await.len(),
        failed_before + 1
    );
    browser.close().await;
    app.logs().assert_clean();
}

/// The time of day (`HH:MM`) of a Unix instant at UTC+05:30.
fn kolkata_clock(start: i64) -> String {
    let seconds = (start + 5 * 3600 + 30 * 60).rem_euclid(86_400);
    format!("{:02}:{:02}", seconds / 3600, seconds % 3600 / 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_console_filters_the_audit_log_by_user_pages_it_and_labels_hours_in_local_time() {
    if !browser_available(
        "browser::the_admin_console_filters_the_audit_log_by_user_pages_it_and_labels_hours_in_local_time",
    ) {
        return;
    }
    use tokengate_server::infra::audit::AuditEvent;
    use tokengate_server::infra::clock::Clock as _;
    let app = spawn_for_browser(|_| {}).await;
    let driver = Driver::start().await;
    let admin_email = "ops@example.com";
    register(&app, admin_email).await;
    promote_to_admin(&app, admin_email).await;
    register(&app, "mallory@example.com").await;
    register(&app, "bob@example.com").await;
    let mallory = user_id(&app, "mallory@example.com").await;
    let bob = user_id(&app, "bob@example.com").await;
    // 30 rows of Mallory's, numbered, after her registration's (31: more
    // than a page of 25), and 3 of Bob's between them.
    let now = app.clock.now().as_secs();
    for attempt in 0..30 {
        let event = AuditEvent::new("login_failed")
            .user(&mallory)
            .ip("192.0.2.7")
            .with("attempt", attempt);
        app.state.store.record_audit(&event, now).await.unwrap();
        if attempt % 10 == 0 {
            let event = AuditEvent::new("login_failed").user(&bob).ip("192.0.2.8");
            app.state.store.record_audit(&event, now).await.unwrap();
        }
    }

    // A viewer in India: UTC+05:30 (the zone by DevTools, for this tab).
    let browser = driver.browser().await;
    browser
        .cdp(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": "Asia/Kolkata"}),
        )
        .await
        .unwrap();
    sign_in(&browser, &app, admin_email).await;
    browser.goto(&app.url("/admin")).await;
    wait_until(&browser, "document.body.dataset.ready === 'true'").await;
    assert_eq!(
        text_of(&browser, "new Date(0).getTimezoneOffset()").await,
        "-330",
        "the page runs at UTC+05:30"
    );

    // Each hour's label is its start in that zone: 24 UTC hours start at
    // HH:30 there.
    let labels = browser
        .execute(
            "return [...document.querySelectorAll('#activity-chart text.hour')]\
             .map((t) => [Number(t.dataset.start), t.textContent]);",
        )
        .await
        .unwrap();
    let labels = labels.as_array().unwrap();
    assert_eq!(labels.len(), 8, "every third hour is labelled");
    for label in labels {
        let start = label[0].as_i64().unwrap();
        assert_eq!(start % 3600, 0, "buckets are whole UTC hours");
        let text = label[1].as_str().unwrap();
        assert_eq!(text, kolkata_clock(start));
        assert!(text.ends_with(":30"), "{text}");
    }
    // A bar's tooltip names its hour the same way, start to end.
    let newest = text_of(
        &browser,
        "[...document.querySelectorAll('#activity-chart rect[data-series=logins_failed]')].pop().dataset.start",
    )
    .await
    .parse::<i64>()
    .unwrap();
    let tooltip = text_of(
        &browser,
        "[...document.querySelectorAll('#activity-chart rect[data-series=logins_failed]')].pop().textContent",
    )
    .await;
    assert_eq!(
        tooltip,
        format!(
            "{}–{}: 33 failed logins",
            kolkata_clock(newest),
            kolkata_clock(newest + 3600)
        )
    );
    let zone = text_of(
        &browser,
        "document.getElementById('activity-zone').textContent",
    )
    .await;
    assert!(zone.contains("(UTC+05:30)"), "{zone}");

    // The audit log filtered by Mallory's id: the 25 newest, then the 6
    // older.
    let rows_of = |user: &str| {
        format!(
            "[...document.querySelectorAll('#audit tbody tr')].every((r) => r.cells[2].textContent === '{user}')"
        )
    };
    // Each row as its attempt's number, or its event type.
    let attempts = "[...document.querySelectorAll('#audit tbody tr')]\
                    .map((r) => JSON.parse(r.cells[4].textContent).attempt ?? r.cells[1].textContent)\
                    .join(',')";
    let numbers = |range: std::ops::Range<i32>| {
        range
            .rev()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    browser
        .css("#audit-user")
        .await
        .send_keys(&format!("{mallory}\u{e007}"))
        .await;
    wait_until(
        &browser,
        &format!(
            "document.querySelectorAll('#audit tbody tr').length === 25 && {}",
            rows_of(&mallory)
        ),
    )
    .await;
    assert_eq!(text_of(&browser, attempts).await, numbers(5..30));
    assert_eq!(
        text_of(&browser, "document.getElementById('audit-older').disabled").await,
        "false"
    );
    assert_eq!(
        text_of(&browser, "document.getElementById('audit-first').disabled").await,
        "true"
    );
    click(&browser, "audit-older").await;
    wait_until(
        &browser,
        &format!(
            "document.querySelectorAll('#audit tbody tr').length === 6 && {}",
            rows_of(&mallory)
        ),
    )
    .await;
    assert_eq!(
        text_of(&browser, attempts).await,
        format!("{},user_registered", numbers(0..5))
    );
    assert_eq!(
        text_of(&browser, "document.getElementById('audit-older').disabled").await,
        "true",
        "no older page"
    );
    click(&browser, "audit-first").await;
    wait_until(
        &browser,
        "document.querySelectorAll('#audit tbody tr').length === 25",
    )
    .await;
    assert_eq!(text_of(&browser, attempts).await, numbers(5..30));

    // Bob's id: his rows only (his registration, his three failures).
    browser.css("#audit-user").await.clear().await;
    browser
        .css("#audit-user")
        .await
        .send_keys(&format!("{bob}\u{e007}"))
        .await;
    wait_until(
        &browser,
        &format!(
            "document.querySelectorAll('#audit tbody tr').length === 4 && {}",
            rows_of(&bob)
        ),
    )
    .await;
    assert_eq!(
        text_of(&browser, attempts).await,
        "login_failed,login_failed,login_failed,user_registered"
    );
    browser.close().await;
}
