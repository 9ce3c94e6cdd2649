//! `tokengate user …` run as the real binary against a data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::process::{Server, start};

/// A data directory with its database, as `tokengate migrate` makes it:
/// the user commands refuse to create one.
fn migrated_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("TOKENGATE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn user(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TOKENGATE_ARGON2_MEMORY_KIB", "7168")
        .env("TOKENGATE_ARGON2_ITERATIONS", "5")
        .env_remove("TOKENGATE_CONFIG")
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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn login(
    client: &reqwest::Client,
    server: &Server,
    email: &str,
    password: &str,
) -> reqwest::Response {
    server.logs().remember(password);
    client
        .post(server.url("/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn add_list_set_roles_disable_and_enable() {
    let dir = migrated_dir();
    let d = dir.path();
    let pw = "operators pick long sentences too";
    let (code, id, err) = user(
        d,
        &[
            "add",
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &format!("{pw}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(id.trim().len(), 22, "prints the id");
    let (code, _, err) = user(
        d,
        &["add", "--email", "ops@example.com", "--password-stdin"],
        &format!("{pw}\n"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("already has an account"), "{err}");
    let (code, _, err) = user(
        d,
        &["add", "--email", "weak@example.com", "--password-stdin"],
        "password1234\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("unrelated words"), "{err}");
    let (code, _, err) = user(d, &["add", "--email", "tty@example.com"], "");
    assert_eq!(code, 2);
    assert!(err.contains("--password-stdin"), "{err}");
    let (_, list, _) = user(d, &["list"], "");
    assert!(
        list.contains("ops@example.com") && list.contains("user admin"),
        "{list}"
    );
    let (code, out, _) = user(
        d,
        &[
            "set-roles",
            "--email",
            "ops@example.com",
            "--roles",
            "user,support",
        ],
        "",
    );
    assert_eq!(code, 0);
    assert!(out.contains("roles user support"), "{out}");

    // A running server rejects the user's live token within seconds of a CLI disable.
    let server = start(d, None);
    let client = reqwest::Client::new();
    let r = login(&client, &server, "ops@example.com", pw).await;
    let body: Value = r.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    server.logs().remember(&access);
    let me = |token: String| {
        let client = client.clone();
        let url = server.url("/auth/me");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(access.clone()).await, StatusCode::OK);
    let (code, out, err) = user(d, &["disable", "--email", "ops@example.com"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled, 1 session ended"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while me(access.clone()).await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the running server never learned of the CLI disable"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        login(&client, &server, "ops@example.com", pw)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    user(d, &["enable", "--email", "ops@example.com"], "");
    assert_eq!(
        login(&client, &server, "ops@example.com", pw)
            .await
            .status(),
        StatusCode::OK
    );
    let (code, _, err) = user(d, &["disable", "--email", "nobody@example.com"], "");
    assert_eq!(code, 2);
    assert!(err.contains("no user"), "{err}");
    server.logs().assert_clean();
}

#[tokio::test]
async fn import_of_ten_thousand_rows_is_all_or_nothing() {
    let dir = migrated_dir();
    let d = dir.path();
    // Three bcrypt hashes (as the seeds' Express/Flask apps stored them),
    // shared by the rows; one argon2 PHC hash.
    let passwords = [
        "legacy password alpha",
        "legacy password bravo",
        "legacy password charlie",
    ];
    let hashes: Vec<String> = passwords
        .iter()
        .map(|p| bcrypt::hash(p, 4).unwrap())
        .collect();
    let mut csv = String::from("email,password_hash,roles\n");
    for i in 0..10_000 {
        let roles = if i % 1000 == 0 { "user admin" } else { "user" };
        csv.push_str(&format!("user{i}@example.com,{},{roles}\n", hashes[i % 3]));
    }
    let good = csv.clone();
    // A few bad rows, at known lines (line = row index + 2).
    let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
    lines[10] =
        "not-an-email,$2b$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234,user".into();
    lines[500] = format!("broken@example.com,{},user", "plaintext-password");
    lines[7000] = lines[6999].clone();
    let bad = lines.join("\n") + "\n";
    let file = d.join("users.csv");
    std::fs::write(&file, &bad).unwrap();
    let (code, _, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 11:"), "{err}");
    assert!(err.contains("line 501: password_hash must be"), "{err}");
    assert!(
        err.contains("line 7001: user6998@example.com repeats line 7000"),
        "{err}"
    );
    assert!(
        err.contains("3 rows are wrong (above); nothing was imported"),
        "{err}"
    );
    let (_, list, _) = user(d, &["list"], "");
    assert_eq!(list.lines().count(), 1, "nothing imported: {list}");

    // Fixed: everything goes in.
    std::fs::write(&file, &good).unwrap();
    let (code, out, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "imported 10000 users");
    // Re-running is refused, or a no-op with --skip-existing.
    let (code, _, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 2);
    assert!(err.contains("already has an account (use --skip-existing)"));
    let (code, out, _) = user(
        d,
        &["import", "--skip-existing", file.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "nothing to import: every user in the file already has an account"
    );

    // A bcrypt user logs in; their hash becomes argon2id.
    let server = start(d, None);
    for p in passwords {
        server.logs().remember(p);
    }
    let client = reqwest::Client::new();
    let r = login(&client, &server, "user4@example.com", passwords[1]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = login(&client, &server, "user4@example.com", passwords[0]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let hash = stored_hash(&d.join("tokengate.db"), "user4@example.com").await;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let untouched = stored_hash(&d.join("tokengate.db"), "user5@example.com").await;
    assert!(untouched.starts_with("$2b$"), "{untouched}");
    let r = login(&client, &server, "user1000@example.com", passwords[1]).await;
    let body: Value = r.json().await.unwrap();
    let me: Value = client
        .get(server.url("/auth/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["user", "admin"]));
    server.logs().assert_clean();
}

/// An argon2id PHC string with these costs (salt and output are
/// placeholders: import checks the form and the costs, never the password).
fn argon2id_phc(m: u32, t: u32, p: u32) -> String {
    format!(
        "$argon2id$v=19$m={m},t={t},p={p}${}${}",
        tokengate::b64::encode(b"sixteen byte salt"),
        tokengate::b64::encode([7u8; 32])
    )
}

#[test]
fn import_refuses_hashes_with_absurd_costs_by_line() {
    let dir = migrated_dir();
    let d = dir.path();
    let bcrypt4 = bcrypt::hash("legacy password delta", 4).unwrap();
    let bcrypt_cost = |cost: &str| bcrypt4.replacen("$04$", &format!("${cost}$"), 1);
    let at_ceilings = [argon2id_phc(1_048_576, 32, 16), bcrypt_cost("16")];
    let over = [
        argon2id_phc(4_194_304, 1, 1),
        bcrypt_cost("31"),
        argon2id_phc(19_456, 33, 1),
        argon2id_phc(19_456, 2, 17),
        bcrypt_cost("03"),
    ];
    let mut csv = String::from("email,password_hash\n");
    for (i, hash) in at_ceilings.iter().chain(&over).enumerate() {
        // PHC parameters hold commas: the field is quoted, as CSV requires.
        csv.push_str(&format!("costly{i}@example.com,\"{hash}\"\n"));
    }
    let file = d.join("users.csv");
    std::fs::write(&file, &csv).unwrap();
    let (code, _, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 2, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "line 4: argon2 memory cost m=4194304 KiB is over the ceiling of 1048576 KiB (1 GiB)",
            "line 5: bcrypt cost 31 is outside 4 to 16",
            "line 6: argon2 time cost t=33 is over the ceiling of 32",
            "line 7: argon2 parallelism p=17 is over the ceiling of 16",
            "line 8: bcrypt cost 3 is outside 4 to 16",
            "error: 5 rows are wrong (above); nothing was imported",
        ],
        "{err}"
    );
    let (_, list, _) = user(d, &["list"], "");
    assert_eq!(list.lines().count(), 1, "nothing imported: {list}");

    // Costs at the ceilings are accepted.
    let at_ceilings_only: String = csv.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, at_ceilings_only).unwrap();
    let (code, out, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "imported 2 users");
}

async fn stored_hash(db: &Path, email: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Runs `tokengate user add` under a pseudo-terminal (util-linux `script`),
/// typing `first` and `second` at its two prompts.
fn add_on_a_terminal(dir: &Path, email: &str, first: &str, second: &str) -> Option<String> {
    let bin = env!("CARGO_BIN_EXE_tokengate");
    let command = format!(
        "{bin} user add --email {email} --data-dir {}",
        dir.display()
    );
    let mut child = match Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TOKENGATE_ARGON2_MEMORY_KIB", "7168")
        .env("TOKENGATE_ARGON2_ITERATIONS", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            // Under CI a missing tool is a failure, never a silent pass.
            assert!(
                !crate::pg_probe::in_ci(),
                "util-linux `script` is required under CI=true: {e}"
            );
            eprintln!(
                "\n*** SKIPPING the terminal prompt test: util-linux `script` is not available ({e}) ***\n"
            );
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let screen = screen.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                screen
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // Type like a person: only once each prompt is on the screen (echo is
    // off by then), however slowly the command starts.
    let wait_for = |prompt: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !screen.lock().unwrap().contains(prompt) {
            assert!(
                Instant::now() < deadline,
                "no {prompt:?} prompt: {:?}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("Password:");
    writeln!(stdin, "{first}").unwrap();
    wait_for("Again:");
    writeln!(stdin, "{second}").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    let text = screen.lock().unwrap().clone();
    Some(text + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn add_prompts_for_the_password_without_echo() {
    let dir = migrated_dir();
    let pw = "typed at the terminal and never shown";
    let Some(screen) = add_on_a_terminal(dir.path(), "tty@example.com", pw, pw) else {
        return;
    };
    assert!(
        screen.contains("Password:") && screen.contains("Again:"),
        "{screen:?}"
    );
    assert!(!screen.contains(pw), "the password was echoed: {screen:?}");
    let (_, list, _) = user(dir.path(), &["list"], "");
    assert!(list.contains("tty@example.com"), "{list}");

    let Some(screen) = add_on_a_terminal(
        dir.path(),
        "typo@example.com",
        pw,
        "something else entirely",
    ) else {
        return;
    };
    assert!(screen.contains("the passwords differ"), "{screen:?}");
    let (_, list, _) = user(dir.path(), &["list"], "");
    assert!(!list.contains("typo@example.com"));
}

#[test]
fn list_into_a_reader_that_stops_after_one_line_ends_quietly() {
    let dir = migrated_dir();
    let d = dir.path();
    // More rows than a pipe buffers (64 KiB), so the list must still be
    // writing when the reader goes away.
    let hash = bcrypt::hash("legacy password alpha", 4).unwrap();
    let mut csv = String::from("email,password_hash\n");
    for i in 0..3000 {
        csv.push_str(&format!("someone{i}@example.com,{hash}\n"));
    }
    let file = d.join("users.csv");
    std::fs::write(&file, csv).unwrap();
    let (code, _, err) = user(d, &["import", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");

    // `tokengate user list | head -1`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["user", "list", "--data-dir"])
        .arg(d)
        .env_remove("TOKENGATE_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("id "), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "", "nothing on stderr: no panic, no Broken pipe");
}

/// Found by the second adversarial review: an existing but empty directory
/// (an unmounted volume's mount point) became a second, empty installation.
#[test]
fn an_empty_data_directory_is_not_a_database() {
    let dir = TempDir::new().unwrap();
    for args in [&["list"][..], &["disable", "--email", "a@example.com"][..]] {
        let (code, _, stderr) = user(dir.path(), args, "");
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("database"), "{stderr}");
        assert!(stderr.contains("tokengate migrate"), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .env_remove("TOKENGATE_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");
}
