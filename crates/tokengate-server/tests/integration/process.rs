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
use crate::logs::Logs;

pub struct Server {
    child: Child,
    base: String,
    /// The child's log (its stdout), for the same checks as an in-process
    /// app's.
    logs: Logs,
    /// Copies the child's stdout into `logs` until the pipe closes.
    stdout_reader: Option<std::thread::JoinHandle<()>>,
}

fn command(data_dir: &Path, database_url: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    serve_arguments(&mut cmd, data_dir, database_url);
    cmd.current_dir(data_dir);
    cmd
}

/// `tokengate serve` run by `sh` after `umask {umask}`, in `cwd`: the data
/// directory need not exist yet.
fn command_under_umask(umask: &str, cwd: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_tokengate"));
    serve_arguments(&mut cmd, data_dir, None);
    cmd.current_dir(cwd);
    cmd
}

fn serve_arguments(cmd: &mut Command, data_dir: &Path, database_url: Option<&str>) {
    cmd.arg("serve")
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("TOKENGATE_ARGON2_MEMORY_KIB", "7168")
        .env("TOKENGATE_ARGON2_ITERATIONS", "5")
        .env("TOKENGATE_AUTH_REQUESTS_PER_MINUTE", "100000")
        .env("TOKENGATE_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("TOKENGATE_CONFIG");
    if let Some(url) = database_url {
        cmd.env("TOKENGATE_DATABASE_URL", url);
    }
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
    let mut cmd = command(data_dir, database_url);
    cmd.args(args).envs(envs.iter().copied());
    launch(cmd)
}

/// Spawns `cmd` (a `tokengate serve`) and waits for its "listening" line.
fn launch(cmd: Command) -> Server {
    launch_into(cmd, Logs::default())
}

/// [`launch`], the child's stdout going into `logs`.
fn launch_into(mut cmd: Command, logs: Logs) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokengate serve");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let sink = logs.clone();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.append(format!("{line}\n").as_bytes());
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
        logs,
        stdout_reader: Some(stdout_reader),
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The child's captured log, and the secrets that must stay out of it.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Waits for the process to exit and returns its status and all it
    /// logged (the reader thread may still be copying after the exit).
    fn wait_for_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().unwrap();
        }
        (status, self.logs.text())
    }

    /// The log so far, once it satisfies `done` (at most 5 s from now).
    fn log_once(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let out = self.logs.text();
            if done(&out) || std::time::Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
        Backend::Postgres => Some(create_pg_database().await),
    };
    let url = pg.as_ref().map(|(_, url)| url.as_str());
    let server = start(dir.path(), url);
    let first_run = server.logs().clone();
    let client = reqwest::Client::new();
    let password = "quentin walks the long winding river road";
    first_run.remember(password);
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
        first_run.remember(token);
        server.logs().remember(token);
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
        server
            .logs()
            .remember(body["refresh_token"].as_str().unwrap());
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
    let second_run = server.logs().clone();
    drop(server);
    if let Some((name, _)) = pg {
        drop_pg_database(name);
    }
    let out = second_run.text();
    assert!(out.contains("refresh_rotated") || out.contains("refresh_replayed"));
    first_run.assert_clean();
    second_run.assert_clean();
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
    let server = start_with_env(
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
    let (status, out) = tokio::task::spawn_blocking(move || server.wait_for_exit())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
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
        (vec![("TOKENGATE_ARGON2_MEMORY_KIB", "4096")], "OWASP"),
        (
            vec![("TOKENGATE_REFRESH_REUSE_INTERVAL", "5m")],
            "60s maximum",
        ),
        (
            vec![("TOKENGATE_SESSION_LIFETIME", "1d")],
            "shorter than refresh_ttl",
        ),
        (
            vec![("TOKENGATE_METRICS_ADDR", "0.0.0.0:9464")],
            "reachable from the network",
        ),
        (
            vec![("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/40")],
            "trusted_proxies",
        ),
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
fn an_unknown_environment_variable_refuses_to_start_naming_the_closest_key() {
    let dir = TempDir::new().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, stderr) = run(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", d],
        &[("TOKENGATE_ACESS_TTL", "5m")],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "configuration: unknown environment variable TOKENGATE_ACESS_TTL (did you mean TOKENGATE_ACCESS_TTL?)"
        ),
        "{stderr}"
    );
}

/// A rendered configuration without the trailing source comments.
fn setting_values(rendered: &str) -> Vec<&str> {
    rendered
        .lines()
        .skip(1)
        .map(|line| line.split("  # ").next().unwrap())
        .collect()
}

#[test]
fn print_config_output_is_a_config_file_that_loads_back_the_same() {
    let dir = TempDir::new().unwrap();
    let (code, first, err) = run(
        &["serve", "--print-config", "--addr", "127.0.0.1:9300"],
        &[
            ("TOKENGATE_AUDIT_RETENTION", "2160h"),
            ("TOKENGATE_ACCESS_TTL", "90m"),
            ("TOKENGATE_KEY_ROTATION_INTERVAL", "30d"),
            ("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/8,::1"),
            ("TOKENGATE_LOG_FORMAT", "text"),
            (
                "TOKENGATE_METRICS_TOKEN",
                "0123456789abcdef0123456789abcdef",
            ),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(first.contains("audit_retention = \"90d\""), "{first}");
    assert!(first.contains("refresh_ttl = \"14d\""), "{first}");
    assert!(first.contains("access_ttl = \"1h30m\""), "{first}");
    assert!(first.contains("# redis_url = \"\"  # unset"), "{first}");
    assert!(
        first.contains("# metrics_token = \"[redacted]\""),
        "{first}"
    );
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &first).unwrap();
    let (code, second, err) = run(
        &[
            "serve",
            "--print-config",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert_eq!(code, 0, "the printed file does not load: {err}\n{first}");
    // The one secret cannot come back; every other key does, with its value.
    let not_secret = |line: &&str| !line.starts_with("# metrics_token = ");
    let first_values: Vec<&str> = setting_values(&first)
        .into_iter()
        .filter(not_secret)
        .collect();
    let second_values: Vec<&str> = setting_values(&second)
        .into_iter()
        .filter(not_secret)
        .collect();
    assert_eq!(first_values, second_values, "\n{first}\n{second}");
    assert_eq!(setting_values(&second).len(), setting_values(&first).len());
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let dir = TempDir::new().unwrap();
    let server = start_with_env(dir.path(), None, &[], &[("TOKENGATE_LOG_FORMAT", "text")]);
    let out = server.log_once(|out| out.contains("tokengate listening"));
    assert!(out.contains("tokengate listening"), "{out}");
    assert!(!out.contains("\x1b["), "ANSI escape in {out:?}");
    assert!(!out.trim_start().starts_with('{'), "not JSON: {out}");
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

/// What `/proc` says the process's umask is (Linux), to prove a test's
/// umask reached the server.
#[cfg(target_os = "linux")]
fn umask_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|m| m.trim().to_owned())
}

#[cfg(unix)]
async fn register_someone(server: &Server) {
    let password = "sybil walks the long winding river road";
    server.logs().remember(password);
    let r = post(
        &reqwest::Client::new(),
        server.url("/auth/register"),
        json!({"email": "sybil@example.com", "password": password}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[cfg(unix)]
#[tokio::test]
async fn under_umask_000_the_data_directory_database_and_master_key_are_private() {
    use crate::helpers::mode;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let server = launch(command_under_umask("000", dir.path(), &data));
    #[cfg(target_os = "linux")]
    assert_eq!(umask_of(server.pid()).as_deref(), Some("0000"));
    // A write: the WAL and its index now exist beside the database.
    register_someone(&server).await;
    assert_eq!(mode(&data), 0o700, "data directory");
    for file in [
        "tokengate.db",
        "tokengate.db-wal",
        "tokengate.db-shm",
        "master.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    server.logs().assert_clean();
}

#[cfg(unix)]
#[tokio::test]
async fn a_readable_database_or_master_key_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;

    use crate::helpers::mode;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let server = launch(command_under_umask("000", dir.path(), &data));
    register_someone(&server).await;
    drop(server); // SIGKILL: the WAL stays behind too
    let loose = ["tokengate.db", "tokengate.db-wal", "master.key"];
    for file in loose {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = launch(command_under_umask("000", dir.path(), &data));
    for file in loose {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let warned = |out: &str, file: &str| {
        out.lines()
            .any(|l| l.contains("made private") && l.contains(file))
    };
    let out = server.log_once(|out| loose.iter().all(|file| warned(out, file)));
    for file in loose {
        assert!(warned(&out, file), "no warning for {file}: {out}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_master_key_file_elsewhere_is_created_private_and_needed_to_start() {
    use crate::helpers::mode;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let secrets = dir.path().join("secrets");
    let key = secrets.join("m.key");
    let key_setting = ("TOKENGATE_MASTER_KEY_FILE", key.to_str().unwrap());
    let jwks = |server: &Server| {
        let url = server.url("/.well-known/jwks.json");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let mut cmd = command_under_umask("000", dir.path(), &data);
    cmd.env(key_setting.0, key_setting.1);
    let server = launch(cmd);
    let published = jwks(&server).await;
    drop(server);
    assert_eq!(mode(&key), 0o600, "master key file");
    assert_eq!(mode(&secrets), 0o700, "its directory");
    assert!(
        !data.join("master.key").exists(),
        "not in the data directory"
    );

    // A restart with it decrypts the signing key it sealed.
    let mut cmd = command_under_umask("000", dir.path(), &data);
    cmd.env(key_setting.0, key_setting.1);
    let server = launch(cmd);
    assert_eq!(jwks(&server).await, published);
    drop(server);

    // Without it, the sealed keys cannot be opened: refuse, and do not
    // make a second master key in the data directory.
    let (code, _, err) = run(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("TOKENGATE_METRICS_ADDR", "127.0.0.1:0")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("master key"), "{err}");
    assert!(!data.join("master.key").exists(), "a second master key");
}

/// Every command that works on the service's data, with the arguments it
/// needs besides where the data is.
const DATA_COMMANDS: [&[&str]; 9] = [
    &["user", "list"],
    &[
        "user",
        "add",
        "--email",
        "ops@example.com",
        "--password-stdin",
    ],
    &["user", "disable", "--email", "ops@example.com"],
    &["user", "enable", "--email", "ops@example.com"],
    &[
        "user",
        "set-roles",
        "--email",
        "ops@example.com",
        "--roles",
        "user,admin",
    ],
    &["user", "import", "users.csv"],
    &["keys", "rotate"],
    &["keys", "list"],
    &["keys", "export-public"],
];

/// The names in `dir`, to show that a refused command created nothing.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs a data command expected to refuse; returns its one stderr line.
fn refused(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> String {
    let (code, stdout, stderr) = run(args, envs, dir);
    crate::helpers::Run {
        code,
        stdout,
        stderr,
    }
    .fails(2)
}

#[test]
fn data_commands_refuse_a_missing_data_directory_and_create_nothing() {
    let dir = TempDir::new().unwrap();
    let elsewhere = dir.path().join("not-made-yet");
    let elsewhere = elsewhere.to_str().unwrap();
    for command in DATA_COMMANDS {
        // The default ./tokengate-data, then the flag, then the variable.
        let line = refused(command, &[], dir.path());
        assert_eq!(
            line,
            "error: data directory ./tokengate-data does not exist; run `tokengate serve` or \
             `tokengate migrate` to create it, or point to yours with --data-dir, \
             TOKENGATE_DATA_DIR or database_url",
            "{command:?}"
        );
        let flagged = [command, &["--data-dir", elsewhere]].concat();
        let line = refused(&flagged, &[], dir.path());
        assert!(
            line.starts_with(&format!(
                "error: data directory {elsewhere} does not exist;"
            )),
            "{command:?}: {line}"
        );
        let line = refused(command, &[("TOKENGATE_DATA_DIR", elsewhere)], dir.path());
        assert!(line.contains(elsewhere), "{command:?}: {line}");
        assert_eq!(entries(dir.path()), Vec::<String>::new(), "{command:?}");
    }
}

#[test]
fn with_postgres_the_key_commands_need_the_master_key_directory() {
    let dir = TempDir::new().unwrap();
    // Refused before any connection, so no server needs to answer here.
    let postgres = [(
        "TOKENGATE_DATABASE_URL",
        "postgres://nobody@127.0.0.1:1/tokengate",
    )];
    for command in [&["keys", "rotate"][..], &["keys", "export-public"]] {
        let line = refused(command, &postgres, dir.path());
        assert_eq!(
            line,
            "error: data directory ./tokengate-data (for master.key) does not exist; run \
             `tokengate serve` to create it, or point to yours with --data-dir, \
             TOKENGATE_DATA_DIR, master_key_file or master_key",
            "{command:?}"
        );
        let key_file = dir.path().join("keys").join("master.key");
        let line = refused(
            command,
            &[
                postgres[0],
                ("TOKENGATE_MASTER_KEY_FILE", key_file.to_str().unwrap()),
            ],
            dir.path(),
        );
        assert!(
            line.contains(&format!(
                "directory {} (of master_key_file) does not exist",
                dir.path().join("keys").display()
            )),
            "{line}"
        );
        assert_eq!(entries(dir.path()), Vec::<String>::new(), "{command:?}");
    }
}

#[test]
fn migrate_creates_the_data_directory_the_data_commands_then_use() {
    let dir = TempDir::new().unwrap();
    let (code, out, err) = run(&["migrate"], &[], dir.path());
    assert_eq!((code, out.trim()), (0, "migrations applied"), "{err}");
    assert!(dir.path().join("tokengate-data/tokengate.db").exists());
    let (code, out, err) = run(&["user", "list"], &[], dir.path());
    assert_eq!((code, out.lines().count()), (0, 1), "{err}");
    // The first rotation after migrate makes the master key and first key.
    let (code, out, err) = run(&["keys", "rotate"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("created the first signing key"), "{out}");
    assert!(dir.path().join("tokengate-data/master.key").exists());
}

#[test]
fn serve_creates_the_data_directory_and_says_how_to_make_an_admin() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("fresh");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokengate"));
    serve_arguments(&mut cmd, &data, None);
    let mut child = cmd
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // The first-start message, up to its last line (the server runs on, so
    // reading past it would wait forever).
    let mut message = Vec::new();
    while let Some(Ok(line)) = stderr.next() {
        let last = line.contains("set-roles");
        message.push(line);
        if last {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let message = message.join("\n");
    assert!(message.contains("/auth/register"), "{message}");
    let data_dir = data.display();
    assert!(
        message.contains(&format!(
            "tokengate user add --email admin@example.com --role admin --data-dir {data_dir}"
        )),
        "{message}"
    );
    assert!(data.join("tokengate.db").exists());
    assert!(data.join("master.key").exists());
}

/// The README's quick-start shell block, as a reader would paste it.
fn readme_quick_start_block() -> String {
    let readme = include_str!("../../../../README.md");
    let after = readme
        .split_once("From another terminal")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let block = after.split_once("```sh\n").map(|(_, rest)| rest).unwrap();
    block.split_once("```").map(|(b, _)| b).unwrap().to_owned()
}

#[test]
fn the_readme_quick_start_works_and_writes_no_files() {
    let data = TempDir::new().unwrap();
    let server = start(data.path(), None);
    let base = server.url("");
    let script = readme_quick_start_block().replace("localhost:8080", &base);
    let cwd = TempDir::new().unwrap();
    let out = Command::new("sh")
        .arg("-eu")
        .arg("-c")
        .arg(&script)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"email\":\"you@example.com\""),
        "me: {stdout}"
    );
    assert!(stdout.contains("refresh_token"), "refresh: {stdout}");
    assert!(stdout.contains("\"keys\""), "jwks: {stdout}");
    assert_eq!(
        entries(cwd.path()),
        Vec::<String>::new(),
        "the quick start wrote files"
    );
    let ignored = include_str!("../../../../.gitignore");
    for pattern in ["tokengate-data/", "login.json", "master.key"] {
        assert!(
            ignored.lines().any(|l| l == pattern),
            "{pattern} not in .gitignore"
        );
    }
}

/// Three `tokengate serve` processes on one PostgreSQL database and one
/// Redis prefix; one is killed with SIGKILL while sessions refresh across
/// all three: the others go on, and nothing acknowledged is lost or
/// duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_one_of_three_instances_during_refreshes_loses_and_duplicates_nothing() {
    let redis_up = std::net::TcpStream::connect("127.0.0.1:6379").is_ok();
    if !redis_up {
        assert!(
            !crate::pg_probe::in_ci(),
            "Redis not reachable on 127.0.0.1:6379 and CI=true"
        );
        eprintln!("SKIPPED: Redis not reachable on 127.0.0.1:6379");
        return;
    }
    let (database, url) = create_pg_database().await;
    let prefix = format!("tokengate-test:kill:{}:", std::process::id());
    let master = tokengate::b64::encode([13u8; 32]);
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let env = [
        ("TOKENGATE_REDIS_URL", "redis://127.0.0.1:6379"),
        ("TOKENGATE_REDIS_PREFIX", prefix.as_str()),
        ("TOKENGATE_MASTER_KEY", master.as_str()),
    ];
    // The first creates the signing key; the others find it.
    let mut servers: Vec<Option<Server>> = Vec::new();
    for dir in &dirs {
        servers.push(Some(start_with_env(dir.path(), Some(&url), &[], &env)));
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().unwrap().url("/auth/refresh"))
        .collect();
    let client = reqwest::Client::new();
    let password = "vera walks the long winding river road";
    let base = servers[0].as_ref().unwrap();
    base.logs().remember(password);
    let r = post(
        &client,
        base.url("/auth/register"),
        json!({"email": "vera@example.com", "password": password}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    const SESSIONS: usize = 6;
    let mut held = Vec::new();
    for i in 0..SESSIONS {
        let login = servers[i % 3].as_ref().unwrap().url("/auth/login");
        let r = post(
            &client,
            login,
            json!({"email": "vera@example.com", "password": password}),
        )
        .await
        .unwrap();
        let body: Value = r.json().await.unwrap();
        held.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    // Each session refreshes in a loop, round robin over the instances,
    // holding the last token it was acknowledged; a request to the killed
    // instance fails and is made again on the next one with the same token.
    let held = Arc::new(Mutex::new(held));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged_after_kill = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let (held, client, urls, stop) = (held.clone(), client.clone(), urls.clone(), stop.clone());
        let (after, killed) = (acknowledged_after_kill.clone(), killed.clone());
        tasks.spawn(async move {
            let mut next = i;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let token = held.lock().unwrap()[i].clone();
                let url = urls[next % 3].clone();
                next += 1;
                match post(&client, url, json!({"refresh_token": token})).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let body: Value = r.json().await.unwrap();
                        held.lock().unwrap()[i] =
                            body["refresh_token"].as_str().unwrap().to_owned();
                        if killed.load(std::sync::atomic::Ordering::SeqCst) {
                            after.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    Ok(r) => panic!("session {i}: refresh refused: {}", r.status()),
                    Err(_) => continue, // the killed instance: the next one
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(servers[1].take()); // SIGKILL, no graceful shutdown
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    while let Some(task) = tasks.join_next().await {
        task.unwrap();
    }
    assert!(
        acknowledged_after_kill.load(std::sync::atomic::Ordering::SeqCst) >= SESSIONS,
        "the other instances went on refreshing"
    );
    // Every acknowledged token still refreshes, on either survivor.
    let held: Vec<String> = held.lock().unwrap().clone();
    for (i, token) in held.iter().enumerate() {
        let r = post(
            &client,
            urls[if i % 2 == 0 { 0 } else { 2 }].clone(),
            json!({"refresh_token": token}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "session {i} was lost");
    }
    let counts = chain_counts_pg(&url).await;
    assert_eq!(counts.sessions, SESSIONS as i64);
    assert_eq!(counts.live_per_session, vec![1; SESSIONS]);
    assert_eq!(counts.max_children_per_parent, 1);
    drop(servers);
    drop_pg_database(database);
}
