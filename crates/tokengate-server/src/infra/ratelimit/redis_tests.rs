//! What only the Redis backends have: the key schema and its expiries, the
//! request budget shared by two instances, and what happens when Redis is
//! down, hung, or goes away and comes back. (The throttle's rules on Redis
//! are in `tests.rs`, shared with the in-process throttle.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::tests::{
    REDIS_ADDR, REDIS_URL, connection, default_limits, delete_prefix, fail, ip, redis_up,
    unique_prefix,
};
use super::*;

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use tokengate::guard::redis_connect_lazy;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

macro_rules! require_redis {
    () => {
        if !redis_up().await {
            return;
        }
    };
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap())
        .unwrap()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn raw() -> ConnectionManager {
    connection(REDIS_URL).await
}

async fn ttl(conn: &mut ConnectionManager, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

async fn key_type(conn: &mut ConnectionManager, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap()
}

#[test]
fn keys_are_named_in_one_place_with_account_and_client_encoded() {
    let keys = LimitKeys::new("p:");
    let v6: IpAddr = "2001:db8::".parse().unwrap();
    assert_eq!(
        keys.pair("a:b@x.com", v6),
        "p:throttle:pair:a%3Ab%40x.com:2001%3Adb8%3A%3A"
    );
    assert_eq!(keys.client(ip(1)), "p:throttle:client:192.0.2.1");
    assert_eq!(keys.account("é *"), "p:throttle:account:%C3%A9%20%2A");
    assert_eq!(keys.known("a", ip(1)), "p:throttle:known:a:192.0.2.1");
    assert_eq!(keys.budget(ip(1), 125), "p:budget:192.0.2.1:2");
    assert_eq!(keys.budget(ip(1), -1), "p:budget:192.0.2.1:-1");
    // One-to-one: an account cannot reach another's key, or the client part.
    assert_ne!(keys.pair("a:b", ip(1)), keys.pair("a%3Ab", ip(1)));
    assert_ne!(keys.pair("a:192.0.2.1", ip(2)), keys.pair("a", ip(1)));
    assert_eq!(
        LimitKeys::default().account("a"),
        "tokengate:throttle:account:a"
    );
}

#[tokio::test]
async fn keys_hold_what_the_schema_says_and_expire() {
    require_redis!();
    let prefix = unique_prefix();
    let redis = RedisLimits::new(connection(REDIS_URL).await, prefix.as_str());
    let keys = redis.keys().clone();
    let t = RedisLoginThrottle::new(default_limits(), redis.clone());
    let budget = RequestBudget::new(10).with_redis(redis);
    let (account, client) = ("a:b@x.com", "2001:db8::".parse::<IpAddr>().unwrap());
    let now = real_now();

    assert_eq!(fail(&t, account, client, now).await, Ok(()));
    let r = t.reserve(account, client, now).await.unwrap();
    t.settle(r, Attempt::Succeeded).await;
    assert_eq!(budget.take(client, now).await, Ok(()));

    let mut conn = raw().await;
    for key in [
        keys.pair(account, client),
        keys.client(client),
        keys.account(account),
    ] {
        assert_eq!(key_type(&mut conn, &key).await, "zset", "{key}");
        // The failure stays, the success is forgotten.
        let members: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(members.len(), 1, "{key}: {members:?}");
        assert_eq!(members[0].1, now);
        let left = ttl(&mut conn, &key).await;
        assert!((900..=960).contains(&left), "{key}: {left}");
    }
    let known = keys.known(account, client);
    let at: i64 = redis::cmd("GET")
        .arg(&known)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at, now);
    let left = ttl(&mut conn, &known).await;
    assert!(
        (KNOWN_CLIENT_SECS - 60..=KNOWN_CLIENT_SECS).contains(&left),
        "{left}"
    );
    let counter = keys.budget(client, now);
    let count: i64 = redis::cmd("GET")
        .arg(&counter)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let left = ttl(&mut conn, &counter).await;
    assert!((60..=120).contains(&left), "{left}");
    // Nothing else was written.
    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(all.len(), 5, "{all:?}");
    delete_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_request_budget_exactly() {
    require_redis!();
    let prefix = unique_prefix();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let redis = RedisLimits::new(connection(REDIS_URL).await, prefix.as_str());
        instances.push(RequestBudget::new(50).with_redis(redis));
    }
    // 15 s into a minute: refusals wait the 45 s left of it.
    let now = 60 * 28_000_000 + 15;
    let verdicts = join_all((0..200).map(|i| instances[i % 2].take(ip(1), now))).await;
    let passed = verdicts.iter().filter(|v| v.is_ok()).count();
    assert_eq!(passed, 50, "{verdicts:?}");
    assert!(
        verdicts.iter().all(|v| matches!(v, Ok(()) | Err(45))),
        "{verdicts:?}"
    );
    // Another client has its own budget; the next minute is a new one.
    assert_eq!(instances[0].take(ip(2), now).await, Ok(()));
    assert_eq!(instances[1].take(ip(1), now + 44).await, Err(1));
    assert_eq!(instances[1].take(ip(1), now + 45).await, Ok(()));
    // Nothing was kept in-process.
    assert!(instances.iter().all(|b| b.limiter.is_empty()));
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn with_redis_down_the_limits_hold_in_process_without_an_error() {
    // Not even listening: every call fails at once.
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let redis = RedisLimits::new(redis_connect_lazy(&url).unwrap(), unique_prefix())
        .with_timeout(Duration::from_millis(300));
    let t = RedisLoginThrottle::new(default_limits(), redis.clone());
    let budget = RequestBudget::new(3).with_redis(redis);

    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
    }
    assert_eq!(fail(&t, "a", ip(1), 100).await, Err(900), "still limited");
    for _ in 0..3 {
        assert_eq!(budget.take(ip(1), 100).await, Ok(()));
    }
    assert!(budget.take(ip(1), 100).await.is_err(), "still limited");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");

    assert!(t.health().is_down());
    assert_eq!(t.health().warnings(), 1, "one warning, not one per call");
    assert_eq!(
        budget.shared.as_ref().map(|s| s.health().warnings()),
        Some(1)
    );
    // What was counted, was counted here.
    let counted = t
        .fallback()
        .failures
        .lock()
        .map(|f| f.by_client.get(&ip(1)).map(VecDeque::len))
        .ok()
        .flatten();
    assert_eq!(counted, Some(5));
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
async fn a_hung_redis_costs_one_timeout_then_limits_are_in_process() {
    let (port, task) = black_hole().await;
    let url = format!("redis://127.0.0.1:{port}");
    let redis = RedisLimits::new(redis_connect_lazy(&url).unwrap(), unique_prefix())
        .with_timeout(Duration::from_millis(300));
    let t = RedisLoginThrottle::new(default_limits(), redis);

    let started = Instant::now();
    assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
    let first = started.elapsed();
    assert!(first < Duration::from_secs(1), "{first:?}");
    // Within the next second no call waits on Redis again.
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
    }
    assert_eq!(fail(&t, "a", ip(1), 100).await, Err(900));
    let rest = started.elapsed();
    assert!(rest < Duration::from_millis(250), "{rest:?}");
    assert_eq!(t.health().warnings(), 1);
    task.abort();
}

/// A TCP proxy to the real Redis that can be cut, to take Redis "down"
/// under a live connection and bring it back on the same port.
struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    pipes: Arc<StdMutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pipes = Arc::new(StdMutex::new(Vec::new()));
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

/// Waits (20 s at most) until `shared` says true, e.g. until a refusal
/// only Redis can give comes.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut shared: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !shared().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_falls_back_in_process_and_its_return_shares_the_limits_again() {
    require_redis!();
    let proxy = Proxy::start(0).await;
    let port = proxy.port;
    let prefix = unique_prefix();
    // Instance A reaches Redis through the proxy, instance B directly.
    let through_proxy = RedisLimits::new(
        connection(&format!("redis://127.0.0.1:{port}")).await,
        prefix.as_str(),
    )
    .with_timeout(Duration::from_millis(300));
    let direct = RedisLimits::new(connection(REDIS_URL).await, prefix.as_str());
    let a = RedisLoginThrottle::new(default_limits(), through_proxy.clone());
    let b = RedisLoginThrottle::new(default_limits(), direct.clone());
    let a_budget = RequestBudget::new(5).with_redis(through_proxy);
    let b_budget = RequestBudget::new(5).with_redis(direct);
    let now = real_now();

    // Shared: B's five failures hold the pair at A too; B's requests
    // spend the client's budget at A too.
    for _ in 0..5 {
        assert_eq!(fail(&b, "shared", ip(1), now).await, Ok(()));
        assert_eq!(b_budget.take(ip(1), now).await, Ok(()));
    }
    assert_eq!(fail(&a, "shared", ip(1), now).await, Err(900));
    assert!(a_budget.take(ip(1), now).await.is_err());

    proxy.cut().await;
    // A falls back to its own counts, fast, and never fails the caller:
    // the pair B filled is free here (limits are per instance meanwhile),
    // and A's own limits hold.
    let started = Instant::now();
    let r = a.reserve("shared", ip(1), now).await.unwrap();
    assert!(matches!(r.held, Held::InProcess));
    a.settle(r, Attempt::Unchecked).await;
    for _ in 0..5 {
        assert_eq!(fail(&a, "local", ip(2), now).await, Ok(()));
    }
    assert_eq!(fail(&a, "local", ip(2), now).await, Err(900));
    for _ in 0..5 {
        assert_eq!(a_budget.take(ip(3), now).await, Ok(()));
    }
    assert!(a_budget.take(ip(3), now).await.is_err());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(a.health().is_down());
    // A reservation made in-process during the outage, settled later.
    let pending = a.reserve("pending", ip(4), now).await.unwrap();
    assert!(matches!(pending.held, Held::InProcess));

    // Redis back on the same port: A shares B's counts again by itself.
    let proxy = Proxy::start(port).await;
    let (a, a_budget) = (&a, &a_budget);
    eventually("the throttle back on Redis", || async move {
        match a.reserve("shared", ip(1), now).await {
            Err(wait) => {
                assert_eq!(wait, 900);
                true
            }
            // Still in-process: released, so it counts nowhere.
            Ok(r) => {
                a.settle(r, Attempt::Unchecked).await;
                false
            }
        }
    })
    .await;
    assert!(!a.health().is_down());
    eventually("the budget back on Redis", || async move {
        // The client's budget B spent is spent at A again. Refused by
        // Redis, not by A's own governor: a call after which Redis is
        // taken to be up went to Redis.
        let refused = a_budget.take(ip(1), now).await.is_err();
        let shared = a_budget
            .shared
            .as_ref()
            .is_some_and(|s| !s.health().is_down());
        refused && shared
    })
    .await;
    // The outage's reservation is settled where it was made: in-process.
    a.settle(pending, Attempt::Unchecked).await;
    let left = a
        .fallback()
        .failures
        .lock()
        .map(|f| f.by_account.get("pending").map(VecDeque::len))
        .ok()
        .flatten();
    assert_eq!(left, Some(0));
    // Told once when it went, once when it came back.
    assert_eq!(a.health().warnings(), 2);

    proxy.cut().await;
    delete_prefix(&prefix).await;
}
