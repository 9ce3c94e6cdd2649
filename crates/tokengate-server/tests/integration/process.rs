//! The service as its operator runs it: the real `tokengate` binary in a
//! child process, stopped by signals, killed with SIGKILL mid-burst.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::app::{Backend, create_pg_database, drop_pg_database};
use crate::logs;

pub struct Server {
    child: Child,
    base: String,
    stdout: Arc<Mutex<String>>,
}

fn command(data_dir: &Path, database_url: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    cmd.arg("serve")
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("TOKENGATE_ARGON2_MEMORY_KIB", "7168")
        .env("TOKENGATE_ARGON2_ITERATIONS", "5")
        .env("TOKENGATE_AUTH_REQUESTS_PER_MINUTE", "100000")
        .env("TOKENGATE_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("TOKENGATE_CONFIG")
        .current_dir(data_dir);
    if let Some(url) = database_url {
        cmd.env("TOKENGATE_DATABASE_URL", url);
    }
    cmd
}

/// Starts the binary and waits for its "listening" line.
pub fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
    start_with(data_dir, database_url, &[])
}

/// [`start`] with extra `serve` arguments.
pub fn start_with(data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> Server {
    start_with_env(data_dir, database_url, args, &[])
}

/// [`start_with`] with extra environment.
pub fn start_with_env(
    data_dir: &Path,
    database_url: Option<&str>,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Server {
    let mut child = command(data_dir, database_url)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokengate serve");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let captured = Arc::new(Mutex::new(String::new()));
    let sink = captured.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut text = sink.lock().expect("stdout");
            text.push_str(&line);
            text.push('\n');
        }
    });
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .expect("stderr line");
        if let Some(rest) = line.strip_prefix("tokengate is listening on ") {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base,
        stdout: captured,
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    client.post(url).json(&body).send().await
}

async fn kill_during_a_burst_of_refreshes_loses_and_duplicates_nothing(backend: Backend) {
    let dir = TempDir::new().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => match create_pg_database().await {
            Some(pg) => Some(pg),
            None => return,
        },
    };
    let url = pg.as_ref().map(|(_, url)| url.as_str());
    let server = start(dir.path(), url);
    let client = reqwest::Client::new();
    let password = "quentin walks the long winding river road";
    logs::remember(password);
    let r = post(
        &client,
        server.url("/auth/register"),
        json!({"email": "quentin@example.com", "password": password}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    const SESSIONS: usize = 4;
    let mut held = Vec::new();
    for _ in 0..SESSIONS {
        let r = post(
            &client,
            server.url("/auth/login"),
            json!({"email": "quentin@example.com", "password": password}),
        )
        .await
        .unwrap();
        let body: Value = r.json().await.unwrap();
        held.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    // Each session refreshes in a loop; what it holds is the last token it
    // was *acknowledged*. SIGKILL lands while requests are in flight.
    let held = Arc::new(Mutex::new(held));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let held = held.clone();
        let client = client.clone();
        let url = server.url("/auth/refresh");
        tasks.spawn(async move {
            loop {
                let token = held.lock().unwrap()[i].clone();
                match post(&client, url.clone(), json!({"refresh_token": token})).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let Ok(body) = r.json::<Value>().await else {
                            return;
                        };
                        let next = body["refresh_token"].as_str().unwrap().to_owned();
                        held.lock().unwrap()[i] = next;
                    }
                    Ok(r) => panic!("refresh refused before the crash: {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(server); // SIGKILL, no graceful shutdown
    while tasks.join_next().await.is_some() {}

    let server = start(dir.path(), url);
    let held: Vec<String> = held.lock().unwrap().clone();
    for (i, token) in held.iter().enumerate() {
        logs::remember(token);
        // The acknowledged token still works: either it was never used, or
        // its rotation committed but the answer was lost, and the same child
        // comes back within the reuse interval.
        let r = post(
            &client,
            server.url("/auth/refresh"),
            json!({"refresh_token": token}),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "session {i} was lost in the crash"
        );
        let body: Value = r.json().await.unwrap();
        logs::remember(body["refresh_token"].as_str().unwrap());
    }
    // Nothing duplicated: one session per login, each a single chain with
    // exactly one live token, and no parent with two children.
    let db_url = match url {
        Some(u) => u.to_owned(),
        None => format!(
            "sqlite://{}",
            dir.path().join("tokengate-data-unused").display()
        ),
    };
    let counts = match url {
        Some(_) => chain_counts_pg(&db_url).await,
        None => chain_counts_sqlite(&dir.path().join("tokengate.db")).await,
    };
    assert_eq!(counts.sessions, SESSIONS as i64);
    assert_eq!(counts.live_per_session, vec![1; SESSIONS]);
    assert_eq!(counts.max_children_per_parent, 1);
    let out = server.stdout.lock().unwrap().clone();
    drop(server);
    if let Some((name, _)) = pg {
        drop_pg_database(name);
    }
    assert!(out.contains("refresh_rotated") || out.contains("refresh_replayed"));
    logs::assert_clean();
    for token in held {
        assert!(!out.contains(&token), "token in the server's log");
    }
}

struct ChainCounts {
    sessions: i64,
    live_per_session: Vec<i64>,
    max_children_per_parent: i64,
}

const LIVE: &str = "SELECT COUNT(*) FROM refresh_tokens WHERE used_at IS NULL GROUP BY session_id ORDER BY session_id";
const CHILDREN: &str = "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM refresh_tokens WHERE parent_hash IS NOT NULL GROUP BY parent_hash) AS c";

async fn chain_counts_sqlite(path: &Path) -> ChainCounts {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    ChainCounts {
        sessions: sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        live_per_session: sqlx::query_scalar(LIVE).fetch_all(&mut conn).await.unwrap(),
        max_children_per_parent: sqlx::query_scalar(CHILDREN)
            .fetch_one(&mut conn)
            .await
            .unwrap(),
    }
}

async fn chain_counts_pg(url: &str) -> ChainCounts {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    ChainCounts {
        sessions: sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&mut conn)
            .await
            .unwrap(),
        live_per_session: sqlx::query_scalar(LIVE).fetch_all(&mut conn).await.unwrap(),
        max_children_per_parent: sqlx::query_scalar(CHILDREN)
            .fetch_one(&mut conn)
            .await
            .unwrap(),
    }
}

crate::both_backends!(kill_during_a_burst_of_refreshes_loses_and_duplicates_nothing);

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_cleanly() {
    let dir = TempDir::new().unwrap();
    // A registration that takes a while (heavy argon2), so SIGTERM lands mid-request.
    let mut server = start_with_env(
        dir.path(),
        None,
        &[],
        &[
            ("TOKENGATE_ARGON2_MEMORY_KIB", "65536"),
            ("TOKENGATE_ARGON2_ITERATIONS", "6"),
        ],
    );
    let client = reqwest::Client::new();
    // Warm up one keep-alive connection: the slow request reuses it, so it
    // is in flight on an accepted connection when the signal arrives.
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let request = tokio::spawn({
        let client = client.clone();
        let url = server.url("/auth/register");
        async move {
            let body = json!({"email": "rupert@example.com", "password": "rupert walks the long winding river road"});
            let status = post(&client, url, body).await.map(|r| r.status());
            (status, std::time::Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = server.child.id().to_string();
    let signalled = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, finished) = request.await.unwrap();
    assert_eq!(status.unwrap(), StatusCode::CREATED);
    assert!(
        finished > signalled,
        "the request was still in flight when SIGTERM arrived"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, server)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let out = status.1.stdout.lock().unwrap().clone();
    assert!(out.contains("stopped cleanly"), "{out}");
    assert!(out.contains("shutdown signal received"), "{out}");
    // WAL checkpointed and closed: no -wal file left behind.
    assert!(!dir.path().join("tokengate.db-wal").exists());
}

fn run(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("TOKENGATE_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn bad_configuration_refuses_to_start_with_one_line() {
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    for (envs, needle) in [
        (
            vec![
                ("TOKENGATE_SIGNING_ALG", "HS256"),
                ("TOKENGATE_HS_SECRET", "mysecret"),
            ],
            "hs_secret",
        ),
        (vec![("TOKENGATE_LEEWAY", "10m")], "leeway"),
        (vec![("TOKENGATE_ACCESS_TTL", "48h")], "24h"),
        (
            vec![("TOKENGATE_REFRESH_TTL", "1m")],
            "shorter than access_ttl",
        ),
        (vec![("TOKENGATE_MASTER_KEY", "too-short")], "master key"),
    ] {
        let (code, _, stderr) = run(
            &["serve", "--addr", "127.0.0.1:0", "--data-dir", d],
            &envs,
            dir.path(),
        );
        assert_eq!(code, 2, "{envs:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!stderr.contains("mysecret"), "secret echoed: {stderr}");
    }
}

#[test]
fn config_file_env_and_flags_layer_and_print_redacted() {
    let dir = TempDir::new().unwrap();
    let secret = tokengate::generate_secret(32).unwrap();
    std::fs::write(
        dir.path().join("tokengate.toml"),
        format!("addr = \"127.0.0.1:9100\"\naccess_ttl = \"5m\"\naudience = \"from-file\"\nsigning_alg = \"HS256\"\nhs_secret = \"{secret}\"\n"),
    )
    .unwrap();
    let (code, out, err) = run(
        &["serve", "--print-config", "--addr", "127.0.0.1:9200"],
        &[("TOKENGATE_ACCESS_TTL", "7m")],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("addr = \"127.0.0.1:9200\"  # flag --addr"),
        "{out}"
    );
    assert!(
        out.contains("access_ttl = \"7m\"  # environment TOKENGATE_ACCESS_TTL"),
        "{out}"
    );
    assert!(out.contains("audience = \"from-file\""), "{out}");
    assert!(out.contains("hs_secret = \"[redacted]\""), "{out}");
    assert!(!out.contains(&secret));
    std::fs::write(dir.path().join("tokengate.toml"), "acces_ttl = \"5m\"\n").unwrap();
    let (code, _, err) = run(&["serve", "--print-config"], &[], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("unknown setting \"acces_ttl\""), "{err}");
}

#[test]
fn a_wrong_master_key_refuses_to_start() {
    let dir = TempDir::new().unwrap();
    // A data directory the service creates itself: private from birth.
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = run(&["migrate", "--data-dir", d], &[], dir.path());
    assert_eq!((code, out.trim()), (0, "migrations applied"), "{err}");
    // First start creates the master key and an encrypted signing key.
    drop(start(&data, None));
    assert!(data.join("master.key").exists());
    #[cfg(unix)]
    {
        assert_eq!(crate::helpers::mode(&data.join("master.key")), 0o600);
        assert_eq!(
            crate::helpers::mode(&data) & 0o077,
            0,
            "data dir is private"
        );
    }
    let other = tokengate::generate_secret(32).unwrap();
    let (code, _, err) = run(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", d],
        &[("TOKENGATE_MASTER_KEY", &other)],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot decrypt"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[tokio::test]
async fn cli_rotation_reaches_a_running_server_without_restart() {
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    let server = start(dir.path(), None);
    let client = reqwest::Client::new();
    let jwks = || async {
        let v: Value = client
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["keys"].as_array().unwrap().len()
    };
    assert_eq!(jwks().await, 1);
    let (code, out, err) = run(&["keys", "rotate", "--data-dir", d], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("published now, signs from"), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while jwks().await != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never published the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, _) = run(&["keys", "list", "--data-dir", d], &[], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("signing") && out.contains("pending"), "{out}");
    let (code, _, err) = run(&["keys", "rotate", "--data-dir", d], &[], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("already pending"), "{err}");
    let (code, out, _) = run(&["keys", "export-public", "--data-dir", d], &[], dir.path());
    assert_eq!(code, 0);
    let exported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exported["keys"].as_array().unwrap().len(), 2);
    assert!(!out.contains("\"d\""), "no private member: {out}");
}
