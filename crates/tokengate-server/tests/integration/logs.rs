//! Log capture per test app. Every password and token a test handles is
//! remembered in its app's [`Logs`]; the test ends by checking that none of
//! them appears in that app's log (`app.logs().assert_clean()`), and reads
//! the audit lines it expects from the same place (`app.logs().text()`).
//!
//! How a line finds its app: each app runs on a Tokio runtime of its own
//! (`app.rs`), whose `on_thread_start` hook attaches every thread of that
//! runtime — workers and blocking pool alike — to the app's [`Logs`]. One
//! global subscriber, the service's own JSON format (`telemetry::init`),
//! writes each line to the capture attached to the thread that logs it. So
//! everything the server does, including the tasks it spawns per connection
//! and `spawn_blocking` hashing, lands in its own app's capture, and a line
//! of app A can never reach app B's: no task migrates between runtimes.
//! Spans or fields would not do — `tokio::spawn` does not carry the current
//! span into the per-connection tasks — and a thread-local default
//! subscriber on a runtime shared by several apps could not tell them apart.
//!
//! `spawn_app` also attaches the test's own thread (where the test body
//! runs), so what the test does through `app.state` directly is captured
//! too; with two apps, that goes to the one started last. A restarted app
//! keeps its runtime, hence its capture. Lines from threads attached to no
//! app (the test runtime's workers: the HTTP client) go to stderr through
//! libtest's capture, so they show beside a failing test and are never read
//! by any check. Child processes (`process.rs`) feed their stdout into a
//! [`Logs`] of their own.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokengate_server::infra::config::LogFormat;

use crate::app::{Backend, TestApp, spawn_app};

/// One app's captured log and the secrets that must never appear in it.
/// Clones share the capture (as a restarted app does).
#[derive(Clone, Default)]
pub struct Logs(Arc<Capture>);

#[derive(Default)]
struct Capture {
    lines: Mutex<Vec<u8>>,
    secrets: Mutex<BTreeSet<String>>,
}

thread_local! {
    static ATTACHED: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Installs the global subscriber (once per test binary): debug and up,
/// each line routed by the thread that logs it.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tokengate_server::infra::telemetry::init(
            LogFormat::Json,
            "debug,sqlx=warn,hyper=warn",
            || Route {
                to: ATTACHED.try_with(|a| a.borrow().clone()).ok().flatten(),
            },
            false,
        );
    });
}

/// The writer for one line: the attached capture, else stderr.
struct Route {
    to: Option<Logs>,
}

impl Write for Route {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.to {
            Some(logs) => logs.append(buf),
            // `eprint!`, not `io::stderr()`: libtest captures it per test.
            None => eprint!("[not from a test app] {}", String::from_utf8_lossy(buf)),
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// From now on, what the current thread logs goes to this capture.
    pub fn attach_current_thread(&self) {
        let logs = self.clone();
        ATTACHED.with(|a| *a.borrow_mut() = Some(logs));
    }

    /// Adds raw log output (a child process's stdout, say).
    pub fn append(&self, bytes: &[u8]) {
        if let Ok(mut lines) = self.0.lines.lock() {
            lines.extend_from_slice(bytes);
        }
    }

    /// Remembers a value that must never be logged.
    pub fn remember(&self, secret: &str) {
        if secret.len() >= 8 {
            self.0
                .secrets
                .lock()
                .expect("secrets")
                .insert(secret.to_owned());
        }
    }

    /// The captured log text so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lines.lock().expect("logs")).into_owned()
    }

    /// Fails if any remembered secret appears in the log.
    pub fn assert_clean(&self) {
        let logs = self.text();
        let secrets = self.0.secrets.lock().expect("secrets");
        for secret in secrets.iter() {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret appeared in the logs: {}…",
                &secret[..6]
            );
            // The signature part of a JWT alone is also a leak.
            if let Some((_, sig)) = secret.rsplit_once('.') {
                assert!(
                    sig.len() < 16 || !logs.contains(sig),
                    "a token signature appeared in the logs"
                );
            }
        }
    }
}

/// Registers `email` (the service logs it in the audit line) and waits
/// until that line reaches `app`'s capture.
async fn log_through(app: &TestApp, email: &str) {
    let password = format!("{email} walks the long winding river road");
    assert_eq!(
        app.register(email, &password).await.status(),
        StatusCode::CREATED
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.logs().text().contains(email) {
        assert!(
            Instant::now() < deadline,
            "{email} never reached its app's log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_side_by_side_capture_only_their_own_lines() {
    let (a, b) = tokio::join!(spawn_app(Backend::Sqlite), spawn_app(Backend::Sqlite));
    // Both at once, so their lines interleave in time.
    tokio::join!(
        log_through(&a, "marker-of-app-a@example.com"),
        log_through(&b, "marker-of-app-b@example.com"),
    );
    assert!(!b.logs().text().contains("marker-of-app-a"));
    assert!(!a.logs().text().contains("marker-of-app-b"));

    // A restarted app writes on into the same capture, and still only it.
    let a = a.restart().await;
    log_through(&a, "marker-after-restart@example.com").await;
    let a_text = a.logs().text();
    assert!(a_text.contains("marker-of-app-a"), "{a_text}");
    assert!(!b.logs().text().contains("marker-after-restart"));
    a.logs().assert_clean();
    b.logs().assert_clean();
}
