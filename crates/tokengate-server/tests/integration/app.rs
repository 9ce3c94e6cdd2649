//! `spawn_app()`: the real service in-process on a random port, on a fresh
//! database (a new SQLite file, or a new PostgreSQL database created here and
//! dropped afterwards), with a clock the test moves by hand.

use std::sync::Arc;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokengate_server::clock::ManualClock;
use tokengate_server::config::{Overrides, Settings};
use tokengate_server::startup::Application;
use tokengate_server::state::AppState;

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
    pg_database: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn pg_admin_url() -> String {
    std::env::var("TOKENGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub async fn create_pg_database() -> Option<(String, String)> {
    use sqlx::Connection;
    let admin = pg_admin_url();
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
            assert!(!in_ci(), "PostgreSQL at {admin} is required in CI: {why}");
            eprintln!("\n*** SKIPPING a PostgreSQL test: cannot reach {admin} ({why}) ***\n");
            return None;
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
    Some((name.clone(), format!("{base}/{name}")))
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
            if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
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

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Settings),
) -> Option<TestApp> {
    crate::logs::init();
    let dir = TempDir::new().expect("tempdir");
    let (pg_database, url) = match backend {
        Backend::Sqlite => (None, None),
        Backend::Postgres => {
            let (name, url) = create_pg_database().await?;
            (Some(name), Some(url))
        }
    };
    let mut settings = test_settings(&dir, url.as_deref());
    tweak(&mut settings);
    Some(start(settings, dir, pg_database, ManualClock::default()).await)
}

async fn start(
    settings: Settings,
    dir: TempDir,
    pg_database: Option<String>,
    clock: ManualClock,
) -> TestApp {
    let app = Application::build(settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("application builds");
    let addr = app.local_addr().expect("addr");
    let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        metrics_base,
        client: Client::new(),
        clock,
        state,
        settings,
        dir,
        pg_database,
        shutdown: Some(tx),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
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
        let old_dir = std::mem::replace(&mut self.dir, dir);
        let pg = self.pg_database.take();
        start(settings, old_dir, pg, self.clock.clone()).await
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
        crate::logs::remember(password);
        self.post_json(
            "/auth/register",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        crate::logs::remember(password);
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
        tokens(response).await
    }
}

pub async fn tokens(response: Response) -> Tokens {
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
    crate::logs::remember(&tokens.access);
    crate::logs::remember(&tokens.refresh);
    tokens
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

/// Runs each listed test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name($crate::app::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name($crate::app::Backend::Postgres).await
                }
            }
        )*
    };
}
