//! The Redis denylist (`tokengate::guard::RedisRevocations`) against a real
//! Redis on 127.0.0.1:6379. Each test works under its own random key prefix,
//! so they run in parallel and leave nothing that outlives a few minutes
//! (every entry expires at its `until`).
//!
//! Without Redis: under `CI=true` the tests fail; otherwise each prints
//! `SKIPPED: Redis not reachable on 127.0.0.1:6379` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use redis::AsyncCommands;
use tokengate::guard::{
    DenylistKeys, Guard, RecordRevocations, RedisRevocations, Rejection, RevocationFailure,
    RevocationQuery, Revocations, StaticKeys,
};
use tokengate::{Algorithm, KeyRing, SignOptions, SigningKey, UnixTime, VerifyPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const REDIS_ADDR: &str = "127.0.0.1:6379";
const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Whether Redis answers. Not reachable: a failure under `CI=true` (CI
/// starts it, so its absence is a broken setup), a loud skip elsewhere.
async fn redis_up() -> bool {
    let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(REDIS_ADDR));
    if matches!(connect.await, Ok(Ok(_))) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("Redis not reachable on {REDIS_ADDR} and CI=true: start it (scripts/services)");
    }
    // Straight to the process's stderr: the test harness captures
    // `eprintln!` of a passing test, and a skip must not go unseen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: Redis not reachable on {REDIS_ADDR}"
    );
    false
}

macro_rules! require_redis {
    () => {
        if !redis_up().await {
            return;
        }
    };
}

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("tokengate-test:{:016x}:", h.finish())
}

fn real_now() -> i64 {
    UnixTime::from_system_time(SystemTime::now()).as_secs()
}

async fn connect(prefix: &str) -> RedisRevocations {
    RedisRevocations::connect(REDIS_URL, prefix).await.unwrap()
}

/// A plain connection, to look at what the module wrote.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn expiretime(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("EXPIRETIME")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

fn query<'a>(
    sub: &'a str,
    sid: Option<&'a str>,
    jti: Option<&'a str>,
    iat: Option<i64>,
) -> RevocationQuery<'a> {
    RevocationQuery { sub, sid, jti, iat }
}

fn at(secs: i64) -> UnixTime {
    UnixTime::from_secs(secs)
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn session_token_and_user_revocations_written_by_one_connection_are_seen_by_another() {
    require_redis!();
    let prefix = unique_prefix();
    let writer = connect(&prefix).await;
    let reader = connect(&prefix).await;
    let now = real_now();
    let until = now + 300;

    let fresh = query("alice", Some("s1"), Some("j1"), Some(now));
    assert!(!reader.is_revoked(fresh, at(now)).await.unwrap());

    writer.revoke_session("s1", until).await.unwrap();
    assert!(
        reader
            .is_revoked(query("alice", Some("s1"), None, Some(now)), at(now))
            .await
            .unwrap()
    );
    assert!(
        !reader
            .is_revoked(query("alice", Some("s2"), Some("j1"), Some(now)), at(now))
            .await
            .unwrap()
    );

    writer.revoke_token("j1", until).await.unwrap();
    assert!(
        reader
            .is_revoked(query("alice", Some("s2"), Some("j1"), Some(now)), at(now))
            .await
            .unwrap()
    );
    assert!(
        !reader
            .is_revoked(query("alice", None, Some("j2"), Some(now)), at(now))
            .await
            .unwrap()
    );

    writer.revoke_user_before("bob", now, until).await.unwrap();
    // Issued before the moment: revoked; at or after it: not; no `iat`: revoked.
    assert!(
        reader
            .is_revoked(query("bob", Some("s9"), Some("j9"), Some(now - 1)), at(now))
            .await
            .unwrap()
    );
    assert!(
        !reader
            .is_revoked(query("bob", Some("s9"), Some("j9"), Some(now)), at(now))
            .await
            .unwrap()
    );
    assert!(
        reader
            .is_revoked(query("bob", None, None, None), at(now))
            .await
            .unwrap()
    );
    assert!(
        !reader
            .is_revoked(query("carol", None, None, None), at(now))
            .await
            .unwrap()
    );

    // Another prefix (tenant) sees none of it.
    let other = connect(&unique_prefix()).await;
    assert!(
        !other
            .is_revoked(query("bob", Some("s1"), Some("j1"), None), at(now))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_revocation_holds_at_the_last_second_and_is_gone_at_until() {
    require_redis!();
    let prefix = unique_prefix();
    let denylist = connect(&prefix).await;
    let keys = DenylistKeys::new(prefix.as_str());
    let mut raw = raw().await;
    let now = real_now();
    let until = now + 120;
    let before = now - 10;

    denylist.revoke_session("sid-edge", until).await.unwrap();
    denylist.revoke_token("jti-edge", until).await.unwrap();
    denylist
        .revoke_user_before("sub-edge", before, until)
        .await
        .unwrap();

    let cases = [
        query("x", Some("sid-edge"), None, Some(now)),
        query("x", None, Some("jti-edge"), Some(now)),
        query("sub-edge", None, None, Some(before - 1)),
        query("sub-edge", None, None, None),
    ];
    for case in cases {
        assert!(
            denylist.is_revoked(case, at(until - 1)).await.unwrap(),
            "{case:?} at until - 1"
        );
        assert!(
            !denylist.is_revoked(case, at(until)).await.unwrap(),
            "{case:?} at until"
        );
    }
    // The user entry covers only tokens issued before `before`.
    assert!(
        !denylist
            .is_revoked(query("sub-edge", None, None, Some(before)), at(until - 1))
            .await
            .unwrap()
    );

    // Redis itself forgets each entry at `until`.
    for key in [
        keys.session("sid-edge"),
        keys.token("jti-edge"),
        keys.user("sub-edge"),
    ] {
        assert_eq!(expiretime(&mut raw, &key).await, until, "{key}");
        let ttl = pttl(&mut raw, &key).await;
        assert!(ttl > 0 && ttl <= 120_000, "{key}: PTTL {ttl}");
    }
    let value: String = raw.get(keys.user("sub-edge")).await.unwrap();
    assert_eq!(value, format!("{before} {until}"));
    let value: String = raw.get(keys.session("sid-edge")).await.unwrap();
    assert_eq!(value, until.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_keep_the_maxima() {
    require_redis!();
    let prefix = unique_prefix();
    let keys = DenylistKeys::new(prefix.as_str());
    let mut writers = Vec::new();
    for _ in 0..4 {
        writers.push(connect(&prefix).await);
    }
    let now = real_now();
    let base_before = now - 1_000;
    let base_until = now + 600;

    // 37 and 53 are prime to 64: each value 0..64 comes once, in a
    // scrambled order, so the maxima are `base + 63` whoever wins a race.
    let mut tasks = Vec::new();
    for i in 0..64_i64 {
        let writer = writers[(i % 4) as usize].clone();
        let before = base_before + (i * 37) % 64;
        let until = base_until + (i * 53) % 64;
        tasks.push(tokio::spawn(async move {
            writer
                .revoke_user_before("racer", before, until)
                .await
                .unwrap();
            writer.revoke_session("racing-sid", until).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let mut raw = raw().await;
    let value: String = raw.get(keys.user("racer")).await.unwrap();
    assert_eq!(value, format!("{} {}", base_before + 63, base_until + 63));
    assert_eq!(
        expiretime(&mut raw, &keys.user("racer")).await,
        base_until + 63
    );
    let value: String = raw.get(keys.session("racing-sid")).await.unwrap();
    assert_eq!(value, (base_until + 63).to_string());
    assert_eq!(
        expiretime(&mut raw, &keys.session("racing-sid")).await,
        base_until + 63
    );

    // A later, smaller write neither shortens nor narrows.
    writers[0]
        .revoke_user_before("racer", base_before, base_until)
        .await
        .unwrap();
    writers[1]
        .revoke_session("racing-sid", base_until)
        .await
        .unwrap();
    let value: String = raw.get(keys.user("racer")).await.unwrap();
    assert_eq!(value, format!("{} {}", base_before + 63, base_until + 63));
    assert_eq!(
        expiretime(&mut raw, &keys.session("racing-sid")).await,
        base_until + 63
    );
    // A larger `before` with a smaller `until` raises only `before`.
    writers[2]
        .revoke_user_before("racer", base_before + 100, base_until)
        .await
        .unwrap();
    let value: String = raw.get(keys.user("racer")).await.unwrap();
    assert_eq!(value, format!("{} {}", base_before + 100, base_until + 63));
    assert_eq!(
        expiretime(&mut raw, &keys.user("racer")).await,
        base_until + 63
    );
}

/// Ids an attacker might choose: separators, glob characters, spaces,
/// control bytes, non-ASCII, empty, an encoded form of another id, huge.
fn odd_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "a",
        "b",
        "a:b",
        "a%3Ab",
        "a%3ab",
        "%",
        "%25",
        ":",
        "::",
        "sid:a",
        "a:sid:b",
        "jti:a",
        "*",
        "?",
        "[a]",
        "\\",
        "",
        " ",
        "  ",
        "a b",
        "é",
        "日本語",
        "\u{0}",
        "\r\n",
        "🦀",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    ids.push("x".repeat(10 * 1024));
    ids.push(format!("{}:", "x".repeat(10 * 1024)));
    ids.push("é:".repeat(5 * 1024 / 3));
    ids
}

#[tokio::test]
async fn odd_ids_do_not_collide_and_break_nothing() {
    require_redis!();
    let prefix = unique_prefix();
    let writer = connect(&prefix).await;
    let reader = connect(&prefix).await;
    let now = real_now();
    let until = now + 300;
    let ids = odd_ids();

    // Revoke sessions one by one: each revokes its own id and no other.
    for (i, id) in ids.iter().enumerate() {
        for later in &ids[i..] {
            assert!(
                !reader
                    .is_revoked(query("u", Some(later), None, Some(now)), at(now))
                    .await
                    .unwrap(),
                "session {later:?} revoked before its turn (at {id:?})"
            );
        }
        writer.revoke_session(id, until).await.unwrap();
        assert!(
            reader
                .is_revoked(query("u", Some(id), None, Some(now)), at(now))
                .await
                .unwrap(),
            "session {id:?}"
        );
    }
    // The other kinds of the same ids are untouched…
    for id in &ids {
        assert!(
            !reader
                .is_revoked(query(id, None, Some(id), Some(now)), at(now))
                .await
                .unwrap(),
            "token or user {id:?}"
        );
    }
    // …and work the same way.
    for (i, id) in ids.iter().enumerate() {
        for later in &ids[i..] {
            assert!(
                !reader
                    .is_revoked(query(later, None, Some(later), Some(now)), at(now))
                    .await
                    .unwrap(),
                "{later:?} revoked before its turn (at {id:?})"
            );
        }
        writer.revoke_token(id, until).await.unwrap();
        assert!(
            reader
                .is_revoked(query("u", None, Some(id), Some(now)), at(now))
                .await
                .unwrap()
        );
        writer.revoke_user_before(id, now, until).await.unwrap();
        assert!(
            reader
                .is_revoked(query(id, None, None, Some(now - 1)), at(now))
                .await
                .unwrap()
        );
    }
}

/// Ids from a small alphabet rich in near-collisions (`a:b` against
/// `a%3Ab`), or any text at all.
fn id_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ab:%3Aa* é\\x00]{0,6}",
        any::<String>(),
        (0usize..3, "[a:]{0,2}").prop_map(|(n, tail)| format!("{}{tail}", "x".repeat(n * 5120))),
    ]
}

proptest! {
    #[test]
    fn distinct_ids_give_distinct_keys(a in id_strategy(), b in id_strategy(), prefix in "[a-z:]{0,6}") {
        let keys = DenylistKeys::new(prefix.as_str());
        prop_assert_eq!(a == b, keys.session(&a) == keys.session(&b));
        prop_assert_eq!(a == b, keys.token(&a) == keys.token(&b));
        prop_assert_eq!(a == b, keys.user(&a) == keys.user(&b));
        // Kinds never meet, whatever the ids.
        prop_assert_ne!(keys.session(&a), keys.token(&b));
        prop_assert_ne!(keys.session(&a), keys.user(&b));
        prop_assert_ne!(keys.token(&a), keys.user(&b));
        // The id part holds only unreserved characters and `%XX`.
        let key = keys.session(&a);
        let encoded = key.strip_prefix(&format!("{prefix}sid:")).unwrap();
        prop_assert!(encoded
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~%".contains(&c)));
    }
}

#[tokio::test]
async fn redis_down_fails_fast_without_naming_the_password() {
    let port = closed_port();
    let url = format!("redis://:s3cret@127.0.0.1:{port}");

    let started = Instant::now();
    let error = RedisRevocations::connect(&url, "t:").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!error.to_string().contains("s3cret"), "{error}");

    // Lazily connected: every call fails, fast, and names no secret.
    let denylist = RedisRevocations::connect_lazy(&url, "t:").unwrap();
    assert!(!format!("{denylist:?}").contains("s3cret"));
    for _ in 0..3 {
        let started = Instant::now();
        let error = denylist
            .is_revoked(query("u", Some("s"), Some("j"), None), at(real_now()))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
    let started = Instant::now();
    let until = real_now() + 60;
    let errors = [
        denylist.revoke_session("s", until).await.unwrap_err(),
        denylist.revoke_token("j", until).await.unwrap_err(),
        denylist
            .revoke_user_before("u", 1, until)
            .await
            .unwrap_err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for error in errors {
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    // A malformed URL is an error too, naming no part of it.
    let error = RedisRevocations::connect_lazy("http://:s3cret@host", "t:").unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn a_refused_password_fails_connect_without_naming_it() {
    require_redis!();
    // The test Redis has no password: AUTH with one is refused.
    let error = RedisRevocations::connect("redis://:s3cret@127.0.0.1:6379", "t:")
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

/// Accepts connections and never answers: a hung Redis.
async fn black_hole() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_hung_redis_fails_within_the_timeout() {
    let (port, task) = black_hole().await;
    let url = format!("redis://127.0.0.1:{port}");
    let denylist = RedisRevocations::connect_lazy(&url, "t:")
        .unwrap()
        .with_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let error = denylist
        .is_revoked(query("u", None, None, None), at(real_now()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(error.to_string().contains("300 ms"), "{error}");
    let started = Instant::now();
    denylist
        .revoke_session("s", real_now() + 60)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));

    // An eager connect gives up too, after its own bound.
    let started = Instant::now();
    RedisRevocations::connect(&url, "t:").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    task.abort();
}

/// A TCP proxy to the real Redis that can be cut, to take Redis "down"
/// under a live connection and bring it back on the same port.
struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let registry = pipes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(REDIS_ADDR).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(pipe);
            }
        });
        Proxy {
            port,
            accept,
            pipes,
        }
    }

    /// Closes the listener and every proxied connection.
    async fn cut(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let pipes: Vec<_> = self.pipes.lock().unwrap().drain(..).collect();
        for pipe in pipes {
            pipe.abort();
            let _ = pipe.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_closed_fast_and_the_connection_recovers() {
    require_redis!();
    let proxy = Proxy::start(0).await;
    let port = proxy.port;
    let prefix = unique_prefix();
    let url = format!("redis://127.0.0.1:{port}");
    let denylist = RedisRevocations::connect(&url, prefix.as_str())
        .await
        .unwrap();
    let writer = connect(&prefix).await;
    let now = real_now();
    writer.revoke_session("away", now + 300).await.unwrap();
    let revoked = query("u", Some("away"), None, Some(now));
    assert!(denylist.is_revoked(revoked, at(now)).await.unwrap());

    proxy.cut().await;
    for _ in 0..3 {
        let started = Instant::now();
        denylist.is_revoked(revoked, at(now)).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    // Back on the same port: the manager reconnects by itself.
    let proxy = Proxy::start(port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match denylist.is_revoked(revoked, at(now)).await {
            Ok(answer) => {
                assert!(answer);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no reconnection within 20 s: {e}"),
        }
    }
    proxy.cut().await;
}

#[tokio::test]
async fn entries_of_another_type_or_shape_are_errors_not_answers() {
    require_redis!();
    let prefix = unique_prefix();
    let keys = DenylistKeys::new(prefix.as_str());
    let denylist = connect(&prefix).await;
    let mut raw = raw().await;
    let now = real_now();

    // A hash where a string belongs: MGET would read it as absent.
    let _: () = raw.hset(keys.session("typed"), "f", "v").await.unwrap();
    let _: () = raw.expire(keys.session("typed"), 300).await.unwrap();
    let error = denylist
        .is_revoked(query("u", Some("typed"), None, None), at(now))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("WRONGTYPE"), "{error}");
    denylist
        .revoke_session("typed", now + 60)
        .await
        .unwrap_err();

    // An unreadable value: cannot tell.
    let _: () = raw.set_ex(keys.user("shaped"), "soon", 300).await.unwrap();
    let error = denylist
        .is_revoked(query("shaped", None, None, Some(now)), at(now))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("sub"), "{error}");
    // …unless another entry revokes the token for sure.
    denylist.revoke_token("sure", now + 60).await.unwrap();
    assert!(
        denylist
            .is_revoked(query("shaped", None, Some("sure"), Some(now)), at(now))
            .await
            .unwrap()
    );
    // A write heals an unreadable value.
    denylist
        .revoke_user_before("shaped", now, now + 60)
        .await
        .unwrap();
    assert!(
        denylist
            .is_revoked(query("shaped", None, None, Some(now - 1)), at(now))
            .await
            .unwrap()
    );
}

fn policy() -> VerifyPolicy {
    VerifyPolicy::builder()
        .issuer("https://auth.example")
        .audience("api")
        .typ("at+jwt")
        .build()
        .unwrap()
}

fn token(ring: &KeyRing, sub: &str, sid: &str) -> String {
    let claims = serde_json::json!({
        "iss": "https://auth.example",
        "sub": sub,
        "aud": "api",
        "sid": sid,
    });
    ring.sign(
        &claims,
        &SignOptions::access_token(Duration::from_secs(900)),
        at(real_now()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_guard_rejects_a_cached_token_once_its_session_or_user_is_revoked() {
    require_redis!();
    let prefix = unique_prefix();
    let ring = KeyRing::with_signing_key(SigningKey::generate(Algorithm::ES256, None).unwrap());
    let first = token(&ring, "user-1", "session-1");
    let second = token(&ring, "user-2", "session-2");
    let guard = Guard::builder(StaticKeys::new(ring), policy())
        .revocations(Arc::new(connect(&prefix).await))
        .build();
    // The issuer's side: another connection, another object.
    let issuer = connect(&prefix).await;
    let until = real_now() + 900 + 60 + 1;

    // Twice: the second time from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(
            guard.verify(&first).await.unwrap().session(),
            Some("session-1")
        );
        assert_eq!(guard.verify(&second).await.unwrap().subject(), "user-2");
    }

    issuer.revoke_session("session-1", until).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            guard.verify(&first).await.unwrap_err(),
            Rejection::InvalidToken
        );
    }
    assert!(guard.verify(&second).await.is_ok());

    // Every token of user-2 issued before a moment after it was signed.
    issuer
        .revoke_user_before("user-2", real_now() + 1, until)
        .await
        .unwrap();
    assert_eq!(
        guard.verify(&second).await.unwrap_err(),
        Rejection::InvalidToken
    );
}

#[tokio::test]
async fn the_guard_fails_closed_when_redis_is_down_and_open_when_told() {
    let ring = KeyRing::with_signing_key(SigningKey::generate(Algorithm::ES256, None).unwrap());
    let token = token(&ring, "user-1", "session-1");
    let url = format!("redis://:s3cret@127.0.0.1:{}", closed_port());
    let denylist = Arc::new(RedisRevocations::connect_lazy(&url, unique_prefix()).unwrap());
    let ring = Arc::new(StaticKeys::new(ring));

    let closed = Guard::builder(ring.clone(), policy())
        .revocations(denylist.clone())
        .build();
    let started = Instant::now();
    assert_eq!(
        closed.verify(&token).await.unwrap_err(),
        Rejection::Unavailable
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let open = Guard::builder(ring, policy())
        .revocations(denylist)
        .on_revocation_failure(RevocationFailure::FailOpen)
        .build();
    assert_eq!(open.verify(&token).await.unwrap().subject(), "user-1");
}

#[tokio::test]
async fn a_reader_that_requires_the_complete_mark_cannot_tell_without_it() {
    require_redis!();
    let prefix = unique_prefix();
    let writer = connect(&prefix).await;
    let reader = connect(&prefix).await.require_complete_marker();
    let now = real_now();
    let clean = query("u", Some("s"), None, Some(now));
    // No mark yet (a Redis restarted empty looks the same): cannot tell.
    let error = reader.is_revoked(clean, at(now)).await.unwrap_err();
    assert!(error.to_string().contains("not complete"), "{error}");
    // An entry that revokes is a sure answer all the same.
    writer.revoke_session("gone", now + 60).await.unwrap();
    assert!(
        reader
            .is_revoked(query("u", Some("gone"), None, Some(now)), at(now))
            .await
            .unwrap()
    );
    // A pass overtaken by another (or cut by a restart) does not mark.
    let first = writer.begin_complete().await.unwrap();
    let second = writer.begin_complete().await.unwrap();
    writer.mark_complete(first, 60).await.unwrap_err();
    assert!(reader.is_revoked(clean, at(now)).await.is_err());
    writer.mark_complete(second, 60).await.unwrap();
    assert!(!reader.is_revoked(clean, at(now)).await.unwrap());
    // A reader that does not require it answers from the entries alone.
    let mut raw = raw().await;
    let _: () = raw
        .del(DenylistKeys::new(prefix.as_str()).complete())
        .await
        .unwrap();
    assert!(!writer.is_revoked(clean, at(now)).await.unwrap());
    assert!(reader.is_revoked(clean, at(now)).await.is_err());
}
