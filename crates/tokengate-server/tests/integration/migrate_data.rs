//! `tokengate migrate-data`: an embedded SQLite install moved to PostgreSQL
//! by the real binary, then served from there with the same master key;
//! refusals, atomicity (a constraint failing midway, a SIGKILL midway), a
//! large copy, round trips through every dialect pair, and the guard that
//! the copied tables are the tables the migrations create.
//!
//! Every test here needs PostgreSQL, and each makes its own databases: the
//! `tokengate_pg_unreachable` scheme of `app.rs` applies (ignored when built
//! without one outside CI, failing under `CI=true`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;
use tokengate_server::infra::audit::AuditEvent;
use tokengate_server::store::migrate_data::TABLES;
use tokengate_server::store::{AuditQuery, Store};

use crate::app::{Backend, TestApp, create_pg_database, drop_pg_database, spawn_app};
use crate::helpers::{Run, tokengate};
use crate::process::{Server, start_with_env};

/// A fresh PostgreSQL database of this test's own, dropped at the end.
struct PgDatabase {
    name: Option<String>,
    url: String,
}

impl PgDatabase {
    async fn new() -> PgDatabase {
        let (name, url) = create_pg_database().await;
        PgDatabase {
            name: Some(name),
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            drop_pg_database(name);
        }
    }
}

fn migrate_data(from: &str, to: &str, extra: &[&str]) -> Run {
    let mut args = vec!["migrate-data", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    tokengate(&args)
}

fn sqlite_url(file: &Path) -> String {
    format!("sqlite://{}", file.display())
}

/// The database URL of an in-process app.
fn url_of(app: &TestApp) -> String {
    app.settings.database_url.expose_secret().to_owned()
}

/// Every row of every data table as text (`CAST(… AS TEXT)` reads alike in
/// both dialects), columns by name, rows sorted: two databases holding the
/// same data dump equal. Written apart from the copy's own code, so that a
/// column it skipped or a value it changed shows up here.
type Dump = BTreeMap<&'static str, (Vec<String>, Vec<Vec<Option<String>>>)>;

macro_rules! dump_table {
    ($conn:expr, $table:expr, $columns_sql:expr) => {{
        let mut columns: Vec<String> = sqlx::query_scalar($columns_sql)
            .bind($table)
            .fetch_all(&mut $conn)
            .await
            .unwrap();
        columns.sort();
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST(\"{c}\" AS TEXT)"))
            .collect();
        let sql = format!("SELECT {} FROM \"{}\"", select.join(", "), $table);
        let mut rows: Vec<Vec<Option<String>>> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut $conn)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                use sqlx::Row as _;
                (0..columns.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                    .collect()
            })
            .collect();
        rows.sort();
        (columns, rows)
    }};
}

async fn dump(url: &str) -> Dump {
    let mut out = Dump::new();
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        for table in TABLES {
            let t = dump_table!(conn, *table, "SELECT name FROM pragma_table_info($1)");
            out.insert(table, t);
        }
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        for table in TABLES {
            let t = dump_table!(
                conn,
                *table,
                "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1"
            );
            out.insert(table, t);
        }
        conn.close().await.unwrap();
    }
    out
}

fn rows(dump: &Dump, table: &str) -> usize {
    dump[table].1.len()
}

/// A SQLite install made by the service itself: two users, a refresh, a
/// logout, the first signing key, their audit rows.
async fn populated_sqlite(prefix: &str) -> TestApp {
    let app = spawn_app(Backend::Sqlite).await;
    let ann = app.user(&format!("{prefix}-ann@example.com")).await;
    let refreshed = app.refresh(&ann.refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let ben = app.user(&format!("{prefix}-ben@example.com")).await;
    assert_eq!(
        app.logout(&ben.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    app
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test]
async fn copied_tables_are_the_tables_the_migrations_create() {
    let dir = TempDir::new().unwrap();
    let sqlite = sqlite_url(&dir.path().join("fresh.db"));
    let pg = PgDatabase::new().await;
    for url in [&sqlite, &pg.url] {
        Store::connect(url).await.unwrap().close().await;
    }
    let mut expected: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
    expected.sort();

    // SQLite: every table but its own (sqlite_sequence) and the migrator's.
    let mut conn = sqlx::SqliteConnection::connect(&sqlite).await.unwrap();
    let made: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        made, expected,
        "a migration creates a table migrate-data does not copy (or the reverse): update store::migrate_data::TABLES"
    );
    // Parents before children, or the inserts break foreign keys.
    for (i, table) in TABLES.iter().enumerate() {
        let parents: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)")
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for parent in parents {
            let at = TABLES.iter().position(|t| *t == parent).unwrap();
            assert!(at < i, "{parent} must come before {table} in TABLES");
        }
    }
    conn.close().await.unwrap();

    // PostgreSQL: the same list, and the same order constraint.
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let made: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(made, expected);
    let references: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(CAST(conrelid AS regclass) AS TEXT), CAST(CAST(confrelid AS regclass) AS TEXT) FROM pg_constraint WHERE contype = 'f'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!references.is_empty());
    for (child, parent) in references {
        let position = |t: &str| TABLES.iter().position(|x| *x == t).unwrap();
        assert!(
            position(&parent) < position(&child),
            "{parent} before {child}"
        );
    }
    conn.close().await.unwrap();

    // Every column of every table, in both dialects, is of a type the copy
    // knows: planning reads them all even when there are no rows.
    let copied = tokengate_server::store::migrate_data(&sqlite, &pg.url, false, &|_| {})
        .await
        .unwrap();
    let names: Vec<&str> = copied.tables.iter().map(|(t, _)| *t).collect();
    assert_eq!(names, TABLES);
    assert!(copied.tables.iter().all(|(_, n)| *n == 0));
}

/// The base64url JSON header of a JWS, its `kid`.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&tokengate::b64::decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// The settings both servers of the end-to-end test run with: a used
/// refresh token counts as reuse after one second, and a rotated key signs
/// one second after it is published.
const SERVE_ENV: &[(&str, &str)] = &[
    ("TOKENGATE_REFRESH_REUSE_INTERVAL", "1s"),
    ("TOKENGATE_KEY_PUBLISH_DELAY", "1s"),
];

/// `tokengate user|keys …` on the data directory, as an operator runs it
/// (with the servers' settings: `keys rotate` reads the publish delay).
fn admin_command(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TOKENGATE_ARGON2_MEMORY_KIB", "7168")
        .env("TOKENGATE_ARGON2_ITERATIONS", "5")
        .env_remove("TOKENGATE_CONFIG")
        .env_remove("TOKENGATE_DATABASE_URL")
        .envs(SERVE_ENV.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

struct Http {
    client: reqwest::Client,
}

impl Http {
    async fn post(&self, server: &Server, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, server: &Server, email: &str, password: &str) -> reqwest::Response {
        server.logs().remember(password);
        self.post(
            server,
            "/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs in and returns (access, refresh).
    async fn tokens(&self, server: &Server, email: &str, password: &str) -> (String, String) {
        let r = self.login(server, email, password).await;
        assert_eq!(r.status(), StatusCode::OK, "login {email}");
        Self::pair(server, r).await
    }

    async fn pair(server: &Server, r: reqwest::Response) -> (String, String) {
        let body: Value = r.json().await.unwrap();
        let access = body["access_token"].as_str().unwrap().to_owned();
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        server.logs().remember(&access);
        server.logs().remember(&refresh);
        (access, refresh)
    }

    async fn refresh(&self, server: &Server, token: &str) -> reqwest::Response {
        self.post(server, "/auth/refresh", json!({"refresh_token": token}))
            .await
    }

    async fn me(&self, server: &Server, access: &str) -> StatusCode {
        self.client
            .get(server.url("/auth/me"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn kids(&self, server: &Server) -> Vec<String> {
        crate::app::jwks_kids_at(&self.client, server.url("/.well-known/jwks.json")).await
    }

    /// The whole audit log, oldest first, as the admin API shows it.
    async fn audit(&self, server: &Server, admin_access: &str) -> Vec<Value> {
        let r = self
            .client
            .get(server.url("/admin/audit?limit=500"))
            .bearer_auth(admin_access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert!(body["next_before"].is_null(), "more than one page");
        let mut events = body["events"].as_array().unwrap().clone();
        events.reverse();
        events
    }
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test]
async fn a_sqlite_install_moves_to_postgresql_and_keeps_working() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let http = Http {
        client: reqwest::Client::new(),
    };
    let password = |who: &str| format!("{who} walks the long winding river road");

    // ---- The embedded install, in use.
    let old = start_with_env(d, None, &[], SERVE_ENV);
    for who in ["alice", "bob", "carol"] {
        old.logs().remember(&password(who));
        let r = http
            .post(
                &old,
                "/auth/register",
                json!({"email": format!("{who}@example.com"), "password": password(who)}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let added = admin_command(
        d,
        &[
            "user",
            "add",
            "--email",
            "admin@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &format!("{}\n", password("admin")),
    );
    added.ok();
    let (admin_access, _) = http
        .tokens(&old, "admin@example.com", &password("admin"))
        .await;
    // Alice's first session: refreshed once, so its first token is used.
    let (_, used_refresh) = http
        .tokens(&old, "alice@example.com", &password("alice"))
        .await;
    let r = http.refresh(&old, &used_refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (alice_access, alice_refresh) = Http::pair(&old, r).await;
    // Alice's second session: logged out.
    let (out_access, out_refresh) = http
        .tokens(&old, "alice@example.com", &password("alice"))
        .await;
    let r = http
        .client
        .post(old.url("/auth/logout"))
        .bearer_auth(&out_access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Carol: logged in, then disabled by the admin (her sessions revoked,
    // her not-before set).
    let r = http
        .login(&old, "carol@example.com", &password("carol"))
        .await;
    let (carol_access, _) = Http::pair(&old, r).await;
    let me: Value = http
        .client
        .get(old.url("/auth/me"))
        .bearer_auth(&carol_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let carol_id = me["id"].as_str().unwrap().to_owned();
    let r = http
        .client
        .patch(old.url(&format!("/admin/users/{carol_id}")))
        .bearer_auth(&admin_access)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A second signing key, rotated in by the CLI; Bob logs in until the
    // new key signs his token.
    let first_kid = kid_of(&alice_access);
    admin_command(d, &["keys", "rotate"], "").ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (bob_access, bob_refresh) = loop {
        let tokens = http.tokens(&old, "bob@example.com", &password("bob")).await;
        if kid_of(&tokens.0) != first_kid {
            break tokens;
        }
        assert!(Instant::now() < deadline, "the rotated key never signed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let kids_before = http.kids(&old).await;
    assert_eq!(kids_before.len(), 2, "{kids_before:?}");
    assert_eq!(http.me(&old, &carol_access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(http.me(&old, &out_access).await, StatusCode::UNAUTHORIZED);
    let audit_before = http.audit(&old, &admin_access).await;
    old.logs().assert_clean();
    drop(old);

    // ---- The copy, by the real binary.
    let pg = PgDatabase::new().await;
    let source = sqlite_url(&d.join("tokengate.db"));
    let run = migrate_data(&source, &pg.url, &[]);
    let out = run.ok();
    assert_eq!(
        run.stderr, "",
        "no progress bar when stderr is not a terminal"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("master key") && lines[0].contains("same"),
        "{out}"
    );
    let source_dump = dump(&source).await;
    let target_dump = dump(&pg.url).await;
    assert_eq!(source_dump, target_dump);
    let summary = format!(
        "copied 4 users, {} sessions, {} refresh tokens, 2 signing keys, {} audit events from {source} to ",
        rows(&source_dump, "sessions"),
        rows(&source_dump, "refresh_tokens"),
        rows(&source_dump, "audit_events"),
    );
    assert!(lines[1].starts_with(&summary), "{}\n{summary}", lines[1]);

    // ---- The same install, served from PostgreSQL with the same master
    // key (the data directory's master.key).
    let new = start_with_env(d, Some(&pg.url), &[], SERVE_ENV);
    assert_eq!(http.kids(&new).await, kids_before, "both keys published");
    // Tokens signed before the copy, by either key, still verify; the
    // admin's (old key) reads the same audit log.
    assert_eq!(http.me(&new, &alice_access).await, StatusCode::OK);
    assert_eq!(http.me(&new, &bob_access).await, StatusCode::OK);
    let audit_after = http.audit(&new, &admin_access).await;
    assert_eq!(audit_after, audit_before);
    // Revocations hold: the logged-out session, the disabled user.
    assert_eq!(http.me(&new, &out_access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.refresh(&new, &out_refresh).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(http.me(&new, &carol_access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.login(&new, "carol@example.com", &password("carol"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Passwords work.
    for who in ["alice", "bob", "admin"] {
        http.tokens(&new, &format!("{who}@example.com"), &password(who))
            .await;
    }
    // Live refresh tokens refresh; the used one is reuse, which ends its
    // session (the child it led to included).
    let r = http.refresh(&new, &bob_refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.refresh(&new, &alice_refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (newest_access, newest_refresh) = Http::pair(&new, r).await;
    assert_eq!(http.me(&new, &newest_access).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        http.refresh(&new, &used_refresh).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        http.refresh(&new, &newest_refresh).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        http.me(&new, &newest_access).await,
        StatusCode::UNAUTHORIZED
    );
    // New audit rows carry on after the copied ids (the sequence moved).
    let audit_now = http.audit(&new, &admin_access).await;
    assert_eq!(audit_now[..audit_before.len()], audit_before[..]);
    let last_before = audit_before.last().unwrap()["id"].as_i64().unwrap();
    let added: Vec<&Value> = audit_now[audit_before.len()..].iter().collect();
    assert!(
        added
            .iter()
            .all(|e| e["id"].as_i64().unwrap() > last_before)
    );
    assert!(
        added.iter().any(|e| e["type"] == "refresh_reuse_detected"),
        "{added:?}"
    );
    new.logs().assert_clean();
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_empty_target_is_refused_unless_forced() {
    let first = populated_sqlite("first").await;
    let second = populated_sqlite("second").await;
    let pg = PgDatabase::new().await;
    migrate_data(&url_of(&first), &pg.url, &[]).ok();
    let held = dump(&pg.url).await;
    assert_eq!(held, dump(&url_of(&first)).await);

    let refused = migrate_data(&url_of(&second), &pg.url, &[]);
    assert_eq!(
        refused.fails(2),
        "error: the target database is not empty (users has 2 rows); nothing was copied: --force deletes its data first, in the same transaction as the copy"
    );
    assert_eq!(refused.stdout, "");
    assert_eq!(dump(&pg.url).await, held, "the target is unchanged");

    let forced = migrate_data(&url_of(&second), &pg.url, &["--force"]).ok();
    let total: usize = held.values().map(|(_, rows)| rows.len()).sum();
    assert!(
        forced.ends_with(&format!("(replacing the {total} rows the target held)")),
        "{forced}"
    );
    assert_eq!(dump(&pg.url).await, dump(&url_of(&second)).await);

    // A row in any data table makes a target non-empty: here one audit row.
    let other = PgDatabase::new().await;
    let store = Store::connect(&other.url).await.unwrap();
    store
        .record_audit(&AuditEvent::new("login_failed"), 1_700_000_000)
        .await
        .unwrap();
    store.close().await;
    let refused = migrate_data(&url_of(&first), &other.url, &[]);
    assert!(
        refused
            .fails(2)
            .starts_with("error: the target database is not empty (audit_events has 1 row);"),
        "{}",
        refused.stderr
    );
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_midway_leaves_the_target_as_it_was() {
    let good = populated_sqlite("good").await;
    let bad = populated_sqlite("bad").await;
    // A refresh token of a session that does not exist: SQLite lets it in
    // with foreign keys off; PostgreSQL refuses it when the copy reaches
    // refresh_tokens, after users and sessions are already inserted.
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url_of(&bad))
        .unwrap()
        .foreign_keys(false);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, parent_hash, created_at, expires_at, used_at) VALUES ('orphan', 'no-such-session', NULL, 1, 2, NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    // Into an empty target: it stays empty.
    let empty = PgDatabase::new().await;
    let failed = migrate_data(&url_of(&bad), &empty.url, &[]);
    let line = failed.fails(2);
    assert!(
        line.starts_with("error: --to: table refresh_tokens: ")
            && line.contains("foreign key")
            && line.ends_with("; nothing was copied"),
        "{line}"
    );
    assert!(dump(&empty.url).await.values().all(|(_, r)| r.is_empty()));

    // Over another install's data with --force: the deletes roll back too.
    let held = PgDatabase::new().await;
    migrate_data(&url_of(&good), &held.url, &[]).ok();
    let before = dump(&held.url).await;
    assert!(rows(&before, "users") == 2 && rows(&before, "refresh_tokens") == 3);
    migrate_data(&url_of(&bad), &held.url, &["--force"]).fails(2);
    assert_eq!(dump(&held.url).await, before, "the target is unchanged");
}

/// A SQLite install with many rows, made fast with SQL: `users` users and
/// `events` audit events.
async fn bulk_rows(db: &Path, users: u32, events: u32) {
    let mut conn = sqlx::SqliteConnection::connect(&sqlite_url(db))
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 WHERE $1 > 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO users (id, email, password_hash, roles, created_at, updated_at) \
         SELECT 'bulk' || i, 'bulk' || i || '@example.com', '$2b$04$notarealhashnotarealhashnotarealhashnotarealhash', 'user', 1700000000, 1700000000 FROM n",
    )
    .bind(users)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO audit_events (at, kind, user_id, session_id, ip, detail) \
         SELECT 1700000000 + i, 'login_failed', NULL, NULL, '192.0.2.1', '{\"n\":' || i || '}' FROM n",
    )
    .bind(events)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

/// `tokengate migrate` into a new data directory; its database file.
fn migrated_install(dir: &Path) -> std::path::PathBuf {
    admin_command(dir, &["migrate"], "").ok();
    dir.join("tokengate.db")
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test]
async fn ten_thousand_imported_users_and_a_hundred_thousand_audit_events_copy_in_seconds() {
    let dir = TempDir::new().unwrap();
    let db = migrated_install(dir.path());
    let hash = bcrypt::hash("legacy password alpha", 4).unwrap();
    let mut csv = String::from("email,password_hash,roles\n");
    for i in 0..10_000 {
        let roles = if i % 1000 == 0 { "user admin" } else { "user" };
        csv.push_str(&format!("user{i}@example.com,{hash},{roles}\n"));
    }
    let file = dir.path().join("users.csv");
    std::fs::write(&file, csv).unwrap();
    let imported = admin_command(dir.path(), &["user", "import", file.to_str().unwrap()], "");
    assert_eq!(imported.ok(), "imported 10000 users");
    bulk_rows(&db, 0, 100_000).await;

    let pg = PgDatabase::new().await;
    let started = Instant::now();
    let out = migrate_data(&sqlite_url(&db), &pg.url, &[]).ok();
    let took = started.elapsed();
    // 100 multi-row INSERTs for the audit log, 10 for the users.
    eprintln!("migrate-data copied 110,001 rows in {took:?}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        out.contains(
            "copied 10000 users, 0 sessions, 0 refresh tokens, 0 signing keys, 100001 audit events from "
        ),
        "{out}"
    );
    let source = dump(&sqlite_url(&db)).await;
    let target = dump(&pg.url).await;
    assert_eq!(rows(&target, "users"), 10_000);
    assert_eq!(rows(&target, "audit_events"), 100_001);
    assert_eq!(source, target);
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test]
async fn a_copy_killed_midway_leaves_the_target_empty() {
    let dir = TempDir::new().unwrap();
    let db = migrated_install(dir.path());
    bulk_rows(&db, 10_000, 200_000).await;
    let pg = PgDatabase::new().await;
    let database = pg.url.rsplit('/').next().unwrap().to_owned();
    let mut watcher = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["migrate-data", "--from", &sqlite_url(&db), "--to", &pg.url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the copy is inserting audit events: the users are in its
    // transaction by then. Then SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inserting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'INSERT INTO \"audit_events\"%'",
        )
        .bind(&database)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if inserting > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy ended before it could be killed midway"
        );
        assert!(
            Instant::now() < deadline,
            "the copy never reached audit_events"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Committed rows are all anyone can see: none.
    let target = dump(&pg.url).await;
    for (table, (_, rows)) in &target {
        assert!(rows.is_empty(), "{table} has {} rows", rows.len());
    }
    watcher.close().await.unwrap();
    // And the copy, run again, goes through.
    let out = migrate_data(&sqlite_url(&db), &pg.url, &[]).ok();
    assert!(out.contains("copied 10000 users"), "{out}");
    assert!(out.contains("200000 audit events"), "{out}");
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_survives_sqlite_to_postgresql_to_postgresql_to_sqlite() {
    let app = populated_sqlite("trip").await;
    let (pg1, pg2) = (PgDatabase::new().await, PgDatabase::new().await);
    let dir = TempDir::new().unwrap();
    let back = sqlite_url(&dir.path().join("back.db"));
    migrate_data(&url_of(&app), &pg1.url, &[]).ok();
    migrate_data(&pg1.url, &pg2.url, &[]).ok();
    migrate_data(&pg2.url, &back, &[]).ok();
    let original = dump(&url_of(&app)).await;
    for table in TABLES {
        assert!(rows(&original, table) > 0, "{table} is empty");
    }
    for url in [&pg1.url, &pg2.url, &back] {
        assert_eq!(dump(url).await, original);
    }
    // Both kinds of target go on numbering the audit log after the copied
    // ids (a PostgreSQL sequence, SQLite's AUTOINCREMENT).
    let last = original["audit_events"]
        .1
        .iter()
        .map(|r| r[2].as_deref().unwrap().parse::<i64>().unwrap())
        .max()
        .unwrap();
    assert_eq!(original["audit_events"].0[2], "id");
    for url in [&pg2.url, &back] {
        let store = Store::connect(url).await.unwrap();
        store
            .record_audit(&AuditEvent::new("login_failed"), 1_800_000_000)
            .await
            .unwrap();
        let newest = store
            .audit_page(&AuditQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest[0].id, last + 1, "{url}");
        store.close().await;
    }
}

/// `url` with a password in it (or the one it has), and that password.
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_owned(), password.to_owned()),
        None => {
            let password = "hunter2-never-printed".to_owned();
            (format!("{scheme}://{userinfo}:{password}@{host}"), password)
        }
    }
}

#[cfg_attr(
    tokengate_pg_unreachable,
    ignore = "no PostgreSQL at TOKENGATE_TEST_PG_URL when built (see tests/integration/app.rs)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_checked_first_and_their_passwords_never_printed() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let db = migrated_install(d);
    let pg = PgDatabase::new().await;
    // Trust authentication ignores the password: the copy succeeds, and
    // only the redacted URL is shown.
    let (url, password) = with_password(&pg.url);
    let run = migrate_data(&sqlite_url(&db), &url, &[]);
    let out = run.ok();
    assert!(out.contains(":[redacted]@"), "{out}");
    assert!(!out.contains(&password) && !run.stderr.contains(&password));

    // Nobody listens on port 1; no such database: one line, no password.
    let (host_and_db, _) = url.rsplit_once('/').unwrap();
    let unreachable = url.replacen(host_and_db.rsplit_once('@').unwrap().1, "127.0.0.1:1", 1);
    let missing = format!("{host_and_db}/tg_no_such_database");
    for target in [&unreachable, &missing] {
        let line = migrate_data(&sqlite_url(&db), target, &[]).fails(2);
        assert!(line.starts_with("error: --to: "), "{line}");
        assert!(!line.contains(&password), "{line}");
    }
    let line = migrate_data(&missing, &url, &[]).fails(2);
    assert!(
        line.starts_with("error: --from: ") && !line.contains(&password),
        "{line}"
    );

    // One database, however it is written, is refused before connecting.
    let refused = |from: &str, to: &str| migrate_data(from, to, &[]).fails(2);
    let expected = "error: --from and --to name the same database";
    assert_eq!(refused(&url, &pg.url), expected);
    let dotted = format!("sqlite:{}/./tokengate.db", d.display());
    assert_eq!(refused(&sqlite_url(&db), &dotted), expected);

    // A source file that is not there is not created, nor is the target.
    let line = refused(
        &sqlite_url(&d.join("typo.db")),
        &sqlite_url(&d.join("new.db")),
    );
    assert!(line.contains("typo.db does not exist"), "{line}");
    assert!(!d.join("typo.db").exists() && !d.join("new.db").exists());

    // Other schemes are refused, without echoing the URL.
    let line = refused("mysql://app:hunter3@db/tg", &pg.url);
    assert_eq!(
        line,
        "error: --from: must be a sqlite:// or postgres:// URL"
    );
}
