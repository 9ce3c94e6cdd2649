//! The throttle's rules, each written once and run on both backends: the
//! in-process throttle, and two Redis throttles (two connections, one key
//! prefix: two service instances) used in turn, so every rule is also
//! checked across instances. `<rule>::in_process` and `<rule>::redis`.
//!
//! The Redis runs need a Redis on 127.0.0.1:6379 (each test under its own
//! random key prefix, deleted at the end). Without one: under `CI=true` they
//! fail; elsewhere each prints `SKIPPED: Redis not reachable` and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::net::TcpStream;

pub(super) const REDIS_ADDR: &str = "127.0.0.1:6379";
pub(super) const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Whether Redis answers. Not reachable: a failure under `CI=true` (CI
/// starts it, so its absence is a broken setup), a loud skip elsewhere.
pub(super) async fn redis_up() -> bool {
    let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(REDIS_ADDR));
    if matches!(connect.await, Ok(Ok(_))) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("Redis not reachable on {REDIS_ADDR} and CI=true: start it (scripts/services)");
    }
    // Straight to the process's stderr: the harness captures `eprintln!`
    // of a passing test, and a skip must not go unseen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: Redis not reachable on {REDIS_ADDR}"
    );
    false
}

/// A key prefix no other test (or run) uses.
pub(super) fn unique_prefix() -> String {
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
    format!("tokengate-test:limits:{:016x}:", h.finish())
}

/// A connection as the service makes them.
pub(super) async fn connection(url: &str) -> ConnectionManager {
    tokengate::guard::redis_connect(url).await.unwrap()
}

/// Deletes every key under `prefix` (some live for 30 days otherwise).
pub(super) async fn delete_prefix(prefix: &str) {
    let mut conn = connection(REDIS_URL).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Where a throttle under test counts.
#[derive(Clone)]
pub(super) enum Backend {
    InProcess,
    /// Redis, every throttle a test makes under its own prefix below this
    /// one; the instances kept to check none of them fell back.
    Redis {
        prefix: String,
        made: Arc<std::sync::Mutex<Vec<Arc<RedisLoginThrottle>>>>,
    },
}

impl Backend {
    fn redis() -> Self {
        Backend::Redis {
            prefix: unique_prefix(),
            made: Arc::default(),
        }
    }

    /// A throttle with these limits: one instance in-process, two
    /// instances (two connections, one prefix) on Redis.
    pub(super) async fn throttle(&self, limits: LoginLimits) -> Subject {
        let instances: Vec<Arc<dyn LoginThrottle>> = match self {
            Backend::InProcess => vec![Arc::new(InProcessThrottle::new(limits))],
            Backend::Redis { prefix, made } => {
                let n = made.lock().unwrap().len();
                let prefix = format!("{prefix}{n}:");
                let mut instances: Vec<Arc<dyn LoginThrottle>> = Vec::new();
                for _ in 0..2 {
                    let redis = RedisLimits::new(connection(REDIS_URL).await, prefix.as_str());
                    let instance = Arc::new(RedisLoginThrottle::new(limits, redis));
                    made.lock().unwrap().push(instance.clone());
                    instances.push(instance);
                }
                instances
            }
        };
        Subject {
            instances,
            turn: AtomicUsize::new(0),
        }
    }

    /// Checks every Redis instance answered from Redis throughout (a rule
    /// passing on the fallback would prove nothing about Redis), then
    /// deletes the test's keys.
    async fn clean_up(&self) {
        if let Backend::Redis { prefix, made } = self {
            let warned: Vec<u64> = made
                .lock()
                .unwrap()
                .iter()
                .map(|t| t.health().warnings())
                .collect();
            delete_prefix(prefix).await;
            assert!(warned.iter().all(|w| *w == 0), "fell back: {warned:?}");
        }
    }
}

/// The throttle under test: its instances are used in turn, for reserving
/// and for settling alike (a Redis reservation is settled by the other
/// instance than the one that made it: the same Redis).
pub(super) struct Subject {
    instances: Vec<Arc<dyn LoginThrottle>>,
    turn: AtomicUsize,
}

impl Subject {
    fn next(&self) -> &dyn LoginThrottle {
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % self.instances.len();
        self.instances[i].as_ref()
    }
}

impl LoginThrottle for Subject {
    fn reserve<'a>(
        &'a self,
        account: &'a str,
        client: IpAddr,
        now: i64,
    ) -> BoxFuture<'a, Result<Reservation, u64>> {
        self.next().reserve(account, client, now)
    }

    fn settle(&self, reservation: Reservation, attempt: Attempt) -> BoxFuture<'_, ()> {
        self.next().settle(reservation, attempt)
    }

    fn prune(&self, now: i64) {
        for instance in &self.instances {
            instance.prune(now);
        }
    }
}

/// One rule, two backends: makes `mod $name { in_process, redis }`.
macro_rules! on_both_backends {
    ($(#[doc = $doc:literal])* async fn $name:ident($backend:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            use super::*;

            async fn run($backend: Backend) $body

            #[tokio::test]
            async fn in_process() {
                run(Backend::InProcess).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if !redis_up().await {
                    return;
                }
                let backend = Backend::redis();
                run(backend.clone()).await;
                backend.clean_up().await;
            }
        }
    };
}

pub(super) fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

fn limits_with(per_account_before_backoff: u32) -> LoginLimits {
    LoginLimits {
        per_account_and_client: 3,
        per_client: 5,
        per_account_before_backoff,
        window: 60,
    }
}

fn limits() -> LoginLimits {
    limits_with(10)
}

/// The service's defaults: 5 per pair, 20 per client, back-off after 10,
/// a 15-minute window.
pub(super) fn default_limits() -> LoginLimits {
    LoginLimits {
        per_account_and_client: 5,
        per_client: 20,
        per_account_before_backoff: 10,
        window: 900,
    }
}

/// One wrong password: reserved, checked, settled as a failure.
pub(super) async fn fail(
    t: &dyn LoginThrottle,
    account: &str,
    client: IpAddr,
    now: i64,
) -> Result<(), u64> {
    let r = t.reserve(account, client, now).await?;
    t.settle(r, Attempt::Failed).await;
    Ok(())
}

on_both_backends! {
    async fn an_account_and_client_pair_is_blocked_until_the_window_passes(b) {
        let t = b.throttle(limits()).await;
        for i in 0..3 {
            assert_eq!(fail(&t, "a", ip(1), 100 + i).await, Ok(()));
        }
        assert_eq!(fail(&t, "a", ip(1), 110).await, Err(50));
        assert_eq!(fail(&t, "a", ip(1), 159).await, Err(1), "last second");
        assert_eq!(fail(&t, "a", ip(1), 160).await, Ok(()), "oldest left");
    }
}

on_both_backends! {
    async fn reservations_count_before_they_are_settled(b) {
        let t = b.throttle(limits()).await;
        let held: Vec<_> = [
            t.reserve("a", ip(1), 100).await,
            t.reserve("a", ip(1), 100).await,
            t.reserve("a", ip(1), 100).await,
        ]
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_default();
        assert_eq!(held.len(), 3);
        assert!(t.reserve("a", ip(1), 100).await.is_err(), "three in flight");
        for r in held {
            t.settle(r, Attempt::Failed).await;
        }
        assert!(t.reserve("a", ip(1), 100).await.is_err());
    }
}

on_both_backends! {
    async fn a_success_frees_only_its_own_slot(b) {
        let t = b.throttle(limits()).await;
        assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
        assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
        let r = t.reserve("a", ip(1), 100).await;
        assert!(r.is_ok());
        if let Ok(r) = r {
            t.settle(r, Attempt::Succeeded).await;
        }
        // Two failures stay: one more fills the pair.
        assert_eq!(fail(&t, "a", ip(1), 101).await, Ok(()));
        assert!(fail(&t, "a", ip(1), 101).await.is_err());
    }
}

on_both_backends! {
    async fn unchecked_attempts_release_their_reservation(b) {
        let t = b.throttle(limits()).await;
        let held: Vec<_> = [
            t.reserve("a", ip(1), 100).await,
            t.reserve("a", ip(1), 100).await,
            t.reserve("a", ip(1), 100).await,
        ]
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_default();
        assert_eq!(held.len(), 3);
        assert!(t.reserve("a", ip(1), 100).await.is_err(), "the pair is full");
        // The hasher was saturated: nothing was checked, nothing counts.
        for r in held {
            t.settle(r, Attempt::Unchecked).await;
        }
        assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()), "room again");
        // Nor does an unchecked attempt make its client known: with the
        // account in back-off, it waits like anyone.
        let t = b.throttle(limits_with(1)).await;
        if let Ok(r) = t.reserve("b", ip(7), 100).await {
            t.settle(r, Attempt::Unchecked).await;
        }
        assert_eq!(fail(&t, "b", ip(8), 100).await, Ok(()));
        assert_eq!(t.reserve("b", ip(7), 100).await.err(), Some(1));
    }
}

on_both_backends! {
    async fn a_known_address_is_known_for_thirty_days_to_the_second(b) {
        let t = b.throttle(limits_with(1)).await;
        let home = ip(7);
        if let Ok(r) = t.reserve("a", home, 1_000).await {
            t.settle(r, Attempt::Succeeded).await;
        }
        // One failure from elsewhere at the last second home is known: the
        // account is in back-off for everyone else, not for home.
        let last = 1_000 + KNOWN_CLIENT_SECS - 1;
        assert_eq!(fail(&t, "a", ip(8), last).await, Ok(()));
        assert!(fail(&t, "a", ip(9), last).await.is_err(), "back-off");
        assert!(
            t.reserve("a", home, last).await.is_ok(),
            "known at the last second"
        );
        // A second later home is forgotten and waits like anyone.
        let t = b.throttle(limits_with(1)).await;
        if let Ok(r) = t.reserve("a", home, 1_000).await {
            t.settle(r, Attempt::Succeeded).await;
        }
        let expired = 1_000 + KNOWN_CLIENT_SECS;
        assert_eq!(fail(&t, "a", ip(8), expired).await, Ok(()));
        assert!(t.reserve("a", home, expired).await.is_err(), "forgotten");
    }
}

on_both_backends! {
    async fn a_timed_attacker_cannot_lock_the_owner_out_of_a_known_address(b) {
        // An attacker polls every second from many addresses and takes each
        // back-off opening; the owner, who logged in from home before, tries
        // once a minute for an hour with the right password.
        let t = b.throttle(default_limits()).await;
        let home = IpAddr::from([198, 51, 100, 7]);
        if let Ok(r) = t.reserve("victim", home, 900).await {
            t.settle(r, Attempt::Succeeded).await;
        }
        let (mut owner_checks, mut attacker_failures) = (0u32, 0u32);
        for now in 1_000..1_000 + 3_600i64 {
            // Each guess from an address not used before: none is ever held
            // by its pair or client limit, so a guess passes exactly when
            // the account's back-off lets anyone through, as it would for
            // an attacker trying all of a /24 each second (one address
            // per second keeps the Redis run short).
            let n = u8::try_from(attacker_failures).unwrap();
            if let Ok(r) = t
                .reserve("victim", IpAddr::from([203, 0, 113, n]), now)
                .await
            {
                t.settle(r, Attempt::Failed).await;
                attacker_failures += 1;
            }
            if now % 60 == 30
                && let Ok(r) = t.reserve("victim", home, now).await
            {
                owner_checks += 1;
                t.settle(r, Attempt::Succeeded).await;
            }
        }
        assert_eq!(owner_checks, 60, "every minute");
        assert!(attacker_failures < 100, "{attacker_failures}");
        // A new address of the owner's waits like the attacker's.
        assert!(
            t.reserve("victim", IpAddr::from([192, 0, 2, 99]), 4_600)
                .await
                .is_err()
        );
    }
}

on_both_backends! {
    async fn a_client_is_limited_across_accounts(b) {
        let t = b.throttle(limits()).await;
        for i in 0..5 {
            assert_eq!(fail(&t, &format!("acct{i}"), ip(1), 100).await, Ok(()));
        }
        assert_eq!(fail(&t, "another", ip(1), 100).await, Err(60));
        assert_eq!(fail(&t, "another", ip(2), 100).await, Ok(()));
    }
}

on_both_backends! {
    async fn an_account_backs_off_exponentially_but_is_never_locked(b) {
        let t = b.throttle(limits_with(4)).await;
        // Four failures from four clients: the threshold.
        for n in 1..=4 {
            assert_eq!(fail(&t, "a", ip(n), 100).await, Ok(()));
        }
        // From here each attempt waits 1, 2, 4, 8 … seconds after the last.
        assert_eq!(fail(&t, "a", ip(9), 100).await, Err(1));
        assert_eq!(fail(&t, "a", ip(9), 101).await, Ok(()));
        assert_eq!(fail(&t, "a", ip(10), 102).await, Err(1));
        assert_eq!(fail(&t, "a", ip(10), 103).await, Ok(()));
        assert_eq!(fail(&t, "a", ip(11), 106).await, Err(1));
        assert_eq!(fail(&t, "a", ip(11), 107).await, Ok(()));
        assert_eq!(fail(&t, "a", ip(12), 107).await, Err(8));
        // Capped at the window, and it decays as failures leave it.
        let t = b.throttle(limits_with(4)).await;
        for n in 0..40u8 {
            let _ = fail(&t, "b", ip(n), 1_000 + i64::from(n) * 60).await;
        }
        assert!(fail(&t, "b", ip(200), 100_000).await.is_ok());
    }
}

on_both_backends! {
    /// The service's limits, across the two instances: 5 per pair, 20 per
    /// client, the account's back-off after 10.
    async fn the_default_limits_hold_across_instances(b) {
        let t = b.throttle(default_limits()).await;
        for _ in 0..5 {
            assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
        }
        assert_eq!(fail(&t, "a", ip(1), 100).await, Err(900), "the pair");

        for i in 0..20 {
            assert_eq!(fail(&t, &format!("c{i}"), ip(2), 200).await, Ok(()));
        }
        assert_eq!(fail(&t, "c20", ip(2), 250).await, Err(850), "the client");
        assert_eq!(fail(&t, "c20", ip(3), 250).await, Ok(()));

        for n in 10..20 {
            assert_eq!(fail(&t, "z", ip(n), 300).await, Ok(()));
        }
        assert_eq!(fail(&t, "z", ip(30), 300).await, Err(1), "back-off 1 s");
        assert_eq!(fail(&t, "z", ip(30), 301).await, Ok(()));
        assert_eq!(fail(&t, "z", ip(31), 302).await, Err(1), "back-off 2 s");
        assert_eq!(fail(&t, "z", ip(31), 303).await, Ok(()));
        assert_eq!(fail(&t, "z", ip(32), 303).await, Err(4), "back-off 4 s");
    }
}

on_both_backends! {
    /// Each limit counts an attempt until `first + window - 1` and no
    /// longer at `first + window`.
    async fn every_limit_counts_to_the_last_second_of_the_window(b) {
        let t = b.throttle(limits_with(4)).await;
        // The pair (3).
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
        }
        assert_eq!(fail(&t, "a", ip(1), 159).await, Err(1));
        assert_eq!(fail(&t, "a", ip(1), 160).await, Ok(()));
        // The client (5), over accounts of their own.
        for i in 0..5 {
            assert_eq!(fail(&t, &format!("c{i}"), ip(2), 100).await, Ok(()));
        }
        assert_eq!(fail(&t, "c5", ip(2), 159).await, Err(1));
        assert_eq!(fail(&t, "c5", ip(2), 160).await, Ok(()));
        // The account's back-off: four failures at 100 and three in the
        // openings after it leave it eight seconds to wait at 156 + 8; at
        // 160 the four leave the window and the back-off with them.
        for n in 10..14 {
            assert_eq!(fail(&t, "z", ip(n), 100).await, Ok(()));
        }
        for (n, now) in [(20, 150), (21, 152), (22, 156)] {
            assert_eq!(fail(&t, "z", ip(n), now).await, Ok(()), "at {now}");
        }
        assert_eq!(fail(&t, "z", ip(23), 159).await, Err(5));
        assert_eq!(fail(&t, "z", ip(23), 160).await, Ok(()));
    }
}

on_both_backends! {
    /// 60 wrong passwords at once for one account from one client (spread
    /// over both instances on Redis): exactly the pair's limit of 5 is
    /// reserved, the rest told to wait for the window.
    async fn concurrent_wrong_passwords_reserve_exactly_the_limit(b) {
        let t = b.throttle(default_limits()).await;
        let first = 10_000;
        let attempts = join_all((0..60).map(|_| fail(&t, "victim", ip(1), first))).await;
        let passed = attempts.iter().filter(|a| a.is_ok()).count();
        assert_eq!(passed, 5, "{attempts:?}");
        assert!(attempts.iter().all(|a| matches!(a, Ok(()) | Err(900))), "{attempts:?}");
        // Still counted at the window's last second, gone after it.
        assert_eq!(fail(&t, "victim", ip(1), first + 899).await, Err(1));
        assert_eq!(fail(&t, "victim", ip(1), first + 900).await, Ok(()));
    }
}

#[tokio::test]
async fn pruning_forgets_what_left_the_window() {
    let t = InProcessThrottle::new(limits());
    for i in 0..50u8 {
        let _ = fail(&t, &format!("acct{i}"), ip(i), 100).await;
    }
    t.prune(159);
    assert!(t.failures.lock().map(|f| f.by_client.len()).unwrap_or(0) == 50);
    t.prune(160);
    let sizes = t.failures.lock().map(|f| {
        (
            f.by_account_and_client.len(),
            f.by_client.len(),
            f.by_account.len(),
        )
    });
    assert_eq!(sizes.ok(), Some((0, 0, 0)));
}

#[tokio::test]
async fn the_in_process_throttle_leaves_reservations_redis_holds_alone() {
    let t = InProcessThrottle::new(limits());
    assert_eq!(fail(&t, "a", ip(1), 100).await, Ok(()));
    // A Redis reservation of the same pair and second, settled here by
    // mistake, must not forget the in-process failure.
    let stray = Reservation {
        account: "a".to_owned(),
        client: ip(1),
        at: 100,
        held: Held::Redis {
            member: "m".to_owned(),
        },
    };
    t.settle(stray, Attempt::Succeeded).await;
    let counted = t
        .failures
        .lock()
        .map(|f| f.by_client.get(&ip(1)).map(VecDeque::len))
        .ok()
        .flatten();
    assert_eq!(counted, Some(1));
}

#[tokio::test]
async fn the_settings_choose_the_backends_and_limits() {
    let settings = Settings::load_from(&crate::infra::config::Overrides::default(), &|_| None)
        .expect("defaults load");
    let limits = LoginLimits::from_settings(&settings);
    assert_eq!(
        (
            limits.per_account_and_client,
            limits.per_client,
            limits.per_account_before_backoff,
            limits.window
        ),
        (5, 20, 10, 900)
    );
    assert_eq!(settings.redis_prefix, "tokengate:");
    let budget = request_budget(&settings, None);
    assert!(budget.shared.is_none());
    // The `/auth/*` middleware awaits it: its future must be `Send`.
    fn send<T: Send>(_: &T) {}
    send(&budget.take(ip(1), 0));
    assert_eq!(budget.per_minute.get(), 120);
    // Without Redis, the in-process throttle: its limits hold.
    let throttle = login_throttle(&settings, None);
    for _ in 0..5 {
        assert_eq!(fail(throttle.as_ref(), "a", ip(1), 100).await, Ok(()));
    }
    assert_eq!(fail(throttle.as_ref(), "a", ip(1), 100).await, Err(900));
}

#[test]
fn the_budget_refuses_past_its_quota_and_forgets_idle_clients() {
    let clock = governor::clock::FakeRelativeClock::default();
    let budget = RequestBudget::with_clock(2, clock.clone());
    assert_eq!(budget.check(ip(1)), Ok(()));
    assert_eq!(budget.check(ip(1)), Ok(()));
    assert_eq!(budget.check(ip(1)), Err(30));
    for n in 2..100 {
        let _ = budget.check(ip(n));
    }
    assert!(budget.first_refusal_this_minute(ip(1), 120));
    assert!(!budget.first_refusal_this_minute(ip(1), 179));
    assert!(budget.first_refusal_this_minute(ip(1), 180), "next minute");
    assert_eq!(budget.tracked(), 99 + 1);
    // Full again once the last allowed request's cost has drained.
    clock.advance(Duration::from_secs(91));
    budget.prune(240);
    assert_eq!(budget.tracked(), 0);
    assert_eq!(budget.check(ip(1)), Ok(()));
}
