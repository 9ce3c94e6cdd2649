//! `spawn_app()`: the real service in-process on a random port, on a Tokio
//! runtime of its own (so its log lines reach only its own capture: see
//! `logs.rs`), on a fresh database (a new SQLite file, or a new PostgreSQL
//! database created here and dropped afterwards), with a clock the test
//! moves by hand.
//!
//! # PostgreSQL variants without a PostgreSQL
//!
//! `both_backends!` runs each test on SQLite and on PostgreSQL. A PostgreSQL
//! variant must never pass without a database: an early `return` is a pass,
//! and a printed "skipping" is hidden by libtest for passing tests and
//! counted as passed anyway. libtest cannot mark a test ignored at run time,
//! so the decision is taken when the tests are compiled:
//!
//! - `build.rs` probes (a TCP connect, [`pg_probe`]) the address of
//!   `TOKENGATE_TEST_PG_URL` (default 127.0.0.1:5432). Outside CI, when
//!   nothing listens there, it sets `cfg(tokengate_pg_unreachable)` and
//!   `both_backends!` compiles every `postgres` variant with `#[ignore]`: the
//!   summary line counts them as ignored, and `cargo test -- --include-ignored`
//!   still runs them (and they fail).
//! - Under `CI=true` (or `CI=1`) nothing is ignored: a missing database fails
//!   every PostgreSQL variant ([`create_pg_database`] panics).
//! - The verdict can go stale: the probe reruns when `build.rs`, the URL or
//!   `CI` change, not when the database starts or stops (probing on every
//!   build would rebuild the whole crate each time on a machine without
//!   PostgreSQL). So `postgres_reachability_matches_the_build`, never
//!   ignored, compares it with now; on a mismatch it fails, saying so, and
//!   touches a marker the build script watches, as does a PostgreSQL variant
//!   that finds no database: the next `cargo test` probes again. A database
//!   that came up is never left untested in silence; one that went away
//!   fails one run, then counts as ignored.
//!
//! [`pg_probe`]: crate::pg_probe

use std::sync::Arc;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokengate_server::http::state::AppState;
use tokengate_server::infra::clock::ManualClock;
use tokengate_server::infra::config::{Overrides, Settings};
use tokengate_server::startup::Application;
use tokio::runtime::Runtime;

use crate::logs::Logs;
use crate::pg_probe;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub metrics_base: Option<String>,
    pub client: Client,
    pub clock: ManualClock,
    pub state: Arc<AppState>,
    pub settings: Settings,
    pub dir: TempDir,
    logs: Logs,
    /// The app's own runtime: every thread of it logs into `logs`.
    runtime: Option<Runtime>,
    pg_database: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Asks the next build to probe for PostgreSQL again (see the module doc).
fn request_reprobe() {
    let marker = std::path::Path::new(env!("OUT_DIR")).join("recheck-postgres");
    if let Ok(file) = std::fs::File::options().write(true).open(marker) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// The build-time verdict on PostgreSQL (see the module doc) still holds.
#[test]
fn postgres_reachability_matches_the_build() {
    let url = pg_probe::admin_url();
    let listening = pg_probe::listening(&url);
    if cfg!(tokengate_pg_unreachable) {
        assert!(
            !pg_probe::in_ci(),
            "built outside CI while PostgreSQL was unreachable, so its tests were ignored; under CI=true rebuild"
        );
        if listening != Some(false) {
            request_reprobe();
            panic!(
                "PostgreSQL at {url} listens now but did not when these tests were built, so its tests were ignored in this run: run again (the next build probes again)"
            );
        }
    } else if listening == Some(false) {
        assert!(
            !pg_probe::in_ci(),
            "PostgreSQL at {url} is required under CI=true"
        );
        request_reprobe();
        panic!(
            "PostgreSQL at {url} listened when these tests were built but does not now, so its tests failed in this run: run again and they will be counted as ignored"
        );
    }
}

/// A new, empty PostgreSQL database: its name and URL. Panics without a
/// server: the test must not pass (see the module doc).
pub async fn create_pg_database() -> (String, String) {
    use sqlx::Connection;
    let admin = pg_probe::admin_url();
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::PgConnection::connect(&admin),
    )
    .await;
    let mut conn = match connect {
        Ok(Ok(conn)) => conn,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            assert!(
                !pg_probe::in_ci(),
                "PostgreSQL at {admin} is required under CI=true: {why}"
            );
            let hint = if pg_probe::listening(&admin) == Some(false) {
                request_reprobe();
                "nothing listens there: start it (scripts/services), or run again and the next build counts these tests as ignored"
            } else {
                "something listens there: check the URL and its credentials"
            };
            panic!("cannot reach PostgreSQL at {admin} ({why}); {hint}");
        }
    };
    let name = format!(
        "tg_test_{}",
        tokengate::b64::encode(rand_bytes())
            .to_lowercase()
            .replace(['-', '_'], "x")
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("admin url has a database");
    (name.clone(), format!("{base}/{name}"))
}

fn rand_bytes() -> [u8; 12] {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).expect("rng");
    b
}

pub fn drop_pg_database(name: String) {
    // Drop runs outside any runtime that could block on it: use a thread.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_probe::admin_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    })
    .join();
}

/// Settings for a test: fast password hashing, a generous request budget.
pub fn test_settings(dir: &TempDir, database_url: Option<&str>) -> Settings {
    let data_dir = dir.path().display().to_string();
    let vars: Vec<(String, String)> = vec![
        ("TOKENGATE_ADDR".into(), "127.0.0.1:0".into()),
        ("TOKENGATE_DATA_DIR".into(), data_dir),
        ("TOKENGATE_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ("TOKENGATE_AUTH_REQUESTS_PER_MINUTE".into(), "100000".into()),
        ("TOKENGATE_ISSUER".into(), "https://auth.test".into()),
    ]
    .into_iter()
    .chain(database_url.map(|u| ("TOKENGATE_DATABASE_URL".to_string(), u.to_string())))
    .collect();
    let mut settings = Settings::load_from(&Overrides::default(), &|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .expect("test settings");
    // Cheap hashing, below what the loader accepts from an operator: these
    // tests check behaviour, not strength (the timing test sets real costs).
    settings.argon2_memory_kib = 1024;
    settings.argon2_iterations = 1;
    settings
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    crate::logs::init();
    let logs = Logs::default();
    // What the test body does through `app.state` is this app's too.
    logs.attach_current_thread();
    let runtime = app_runtime(&logs);
    let dir = TempDir::new().expect("tempdir");
    let (pg_database, url) = match backend {
        Backend::Sqlite => (None, None),
        Backend::Postgres => {
            let (name, url) = create_pg_database().await;
            (Some(name), Some(url))
        }
    };
    let mut settings = test_settings(&dir, url.as_deref());
    tweak(&mut settings);
    let app = Running {
        dir,
        pg_database,
        clock: ManualClock::default(),
        runtime,
        logs,
    };
    app.start(settings).await
}

/// A runtime whose every thread, workers and blocking pool, logs into
/// `logs`. Four workers, as the tests' own runtimes have.
pub fn app_runtime(logs: &Logs) -> Runtime {
    let logs = logs.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("test-app")
        .on_thread_start(move || logs.attach_current_thread())
        .enable_all()
        .build()
        .expect("app runtime")
}

/// What outlives a restart.
struct Running {
    dir: TempDir,
    pg_database: Option<String>,
    clock: ManualClock,
    runtime: Runtime,
    logs: Logs,
}

impl Running {
    /// Builds and serves the application on the app's runtime.
    async fn start(self, settings: Settings) -> TestApp {
        let build = Application::build(settings.clone(), Arc::new(self.clock.clone()));
        let app = self
            .runtime
            .spawn(build)
            .await
            .expect("build task")
            .expect("application builds");
        let addr = app.local_addr().expect("addr");
        let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
        let state = app.state();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.runtime.spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            metrics_base,
            client: Client::new(),
            clock: self.clock,
            state,
            settings,
            dir: self.dir,
            logs: self.logs,
            runtime: Some(self.runtime),
            pg_database: self.pg_database,
            shutdown: Some(tx),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Dropping a runtime may not block inside the test's async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(name);
        }
    }
}

pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    /// Stops this server and starts a new one on the same database and
    /// data directory (and clock), as after a restart.
    pub async fn restart(mut self) -> TestApp {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Let the old server release its connections.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut settings = self.settings.clone();
        settings.addr = "127.0.0.1:0".parse().expect("addr");
        settings.metrics_addr = settings
            .metrics_addr
            .map(|_| "127.0.0.1:0".parse().expect("addr"));
        let dir = TempDir::new().expect("tempdir");
        let running = Running {
            dir: std::mem::replace(&mut self.dir, dir),
            pg_database: self.pg_database.take(),
            clock: self.clock.clone(),
            runtime: self.runtime.take().expect("a running app has its runtime"),
            logs: self.logs.clone(),
        };
        running.start(settings).await
    }

    /// This app's captured log, and the secrets that must stay out of it
    /// (shared across restarts).
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The stored audit events of `kind`, newest first.
    pub async fn audit_events(&self, kind: &str) -> Vec<tokengate_server::store::AuditRow> {
        self.state
            .store
            .audit_page(&tokengate_server::store::AuditQuery {
                kind: Some(kind.into()),
                limit: 500,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.logs.remember(password);
        self.post_json(
            "/auth/register",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.logs.remember(password);
        self.post_json(
            "/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/auth/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn me(&self, access: &str) -> Response {
        self.client
            .get(self.url("/auth/me"))
            .bearer_auth(access)
            .send()
            .await
            .expect("request")
    }

    pub async fn logout(&self, access: &str, scope: Option<&str>) -> Response {
        let request = self
            .client
            .post(self.url("/auth/logout"))
            .bearer_auth(access);
        let request = match scope {
            Some(scope) => request.json(&json!({"scope": scope})),
            None => request,
        };
        request.send().await.expect("request")
    }

    /// Registers a user with a strong password and logs in.
    pub async fn user(&self, email: &str) -> Tokens {
        let password = format!("{email} walks the long winding river road");
        assert_eq!(
            self.register(email, &password).await.status(),
            StatusCode::CREATED
        );
        self.login_ok(email, &password).await
    }

    pub async fn login_ok(&self, email: &str, password: &str) -> Tokens {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        self.tokens(response).await
    }

    /// The token pair of a successful answer, remembered as secrets.
    pub async fn tokens(&self, response: Response) -> Tokens {
        let body: Value = response.json().await.expect("json");
        let tokens = Tokens {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        };
        self.logs.remember(&tokens.access);
        self.logs.remember(&tokens.refresh);
        tokens
    }
}

/// Asserts a problem+json error with this status and returns its body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let ct = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// Runs each listed test on SQLite and on PostgreSQL; the PostgreSQL
/// variants are ignored when built without a database (module doc).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::app::Backend::Sqlite).await
                }
                #[cfg_attr(
                    tokengate_pg_unreachable,
                    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
                )]
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::app::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The kids of the JWKS at `url`, sorted.
pub async fn jwks_kids_at(client: &Client, url: String) -> Vec<String> {
    let set: Value = client
        .get(url)
        .send()
        .await
        .expect("jwks request")
        .json()
        .await
        .expect("jwks json");
    let mut kids: Vec<String> = set["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect();
    kids.sort();
    kids
}
