//! Limits in front of the expensive and the guessable: the failed-login
//! throttle (one trait; in-process now, Redis when instances share it) and
//! the per-client request budget on `/auth/*`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::clock::{Clock as GovernorClock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use tokengate::guard::BoxFuture;

/// The limits of the failed-login throttle.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Wrong passwords checked per (account, client) in the window.
    pub per_account_and_client: u32,
    /// Wrong passwords checked per client, whatever the account.
    pub per_client: u32,
    /// Wrong passwords per account, from anywhere, before back-off.
    pub per_account_before_backoff: u32,
    /// The sliding window, in seconds.
    pub window: i64,
}

/// A password check the throttle has made room for. Until it is settled it
/// counts as a failure, so concurrent attempts cannot all pass the check
/// before any of them is recorded; one dropped unsettled (a client that hung
/// up mid-login) stays counted.
#[derive(Debug)]
#[must_use = "settle the reservation with the outcome of the password check"]
pub struct Reservation {
    account: String,
    client: IpAddr,
    at: i64,
}

/// What a reserved password check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The password was wrong (or the account unknown): it stays counted.
    Failed,
    /// The password was right: not a failure, and the account's failures
    /// from that client are forgiven.
    Succeeded,
    /// The check never ran (the hashing pool was saturated): forgotten.
    Unchecked,
}

/// Counts failed logins and says when an attempt must wait.
pub trait LoginThrottle: Send + Sync + 'static {
    /// Reserves one password check for `account` from `client` at `now`:
    /// `Err(seconds to wait)` when a limit is reached (and nothing is
    /// counted: a refused attempt never reaches the hasher).
    fn reserve<'a>(
        &'a self,
        account: &'a str,
        client: IpAddr,
        now: i64,
    ) -> BoxFuture<'a, Result<Reservation, u64>>;
    /// Settles a reservation with what the password check came to.
    fn settle(&self, reservation: Reservation, attempt: Attempt) -> BoxFuture<'_, ()>;
    /// Forgets failures that left the window.
    fn prune(&self, now: i64);
}

#[derive(Default)]
struct Failures {
    by_account_and_client: HashMap<(String, IpAddr), VecDeque<i64>>,
    by_client: HashMap<IpAddr, VecDeque<i64>>,
    by_account: HashMap<String, VecDeque<i64>>,
    /// (account, client) pairs with a successful login, and when: the
    /// account-wide back-off does not apply to them, so an attacker timing
    /// every opening from elsewhere cannot lock the owner out of a place
    /// they have logged in from before.
    known_clients: HashMap<(String, IpAddr), i64>,
}

/// How long a client stays known to an account after a successful login.
const KNOWN_CLIENT_SECS: i64 = 30 * 86_400;

/// The single-process throttle: all three counts under one lock, so a
/// check and its reservation are one step.
pub struct InProcessThrottle {
    limits: LoginLimits,
    failures: Mutex<Failures>,
}

/// Past this many keys in one map, expired entries are swept at once.
const SWEEP_AT: usize = 100_000;

fn drop_expired(times: &mut VecDeque<i64>, now: i64, window: i64) {
    while times.front().is_some_and(|t| *t <= now - window) {
        times.pop_front();
    }
}

fn forget_one(times: Option<&mut VecDeque<i64>>, at: i64) {
    if let Some(times) = times
        && let Some(i) = times.iter().rposition(|t| *t == at)
    {
        times.remove(i);
    }
}

fn sweep<K: Eq + Hash>(map: &mut HashMap<K, VecDeque<i64>>, now: i64, window: i64) {
    map.retain(|_, times| {
        drop_expired(times, now, window);
        !times.is_empty()
    });
}

/// Seconds until the oldest of `times` leaves the window, if `times` is full.
fn full_for(times: Option<&VecDeque<i64>>, limit: u32, now: i64, window: i64) -> Option<i64> {
    let times = times?;
    let live = times.iter().filter(|t| **t > now - window).count();
    if live < limit as usize {
        return None;
    }
    let oldest_live = times.iter().find(|t| **t > now - window)?;
    Some(oldest_live + window - now)
}

impl InProcessThrottle {
    /// A throttle with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        InProcessThrottle {
            limits: LoginLimits {
                window: limits.window.max(1),
                ..limits
            },
            failures: Mutex::new(Failures::default()),
        }
    }

    /// The account-wide back-off: once `per_account_before_backoff`
    /// failures are in the window, each further attempt waits 1 s, 2 s,
    /// 4 s, … (capped at the window) after the latest one.
    fn account_wait(&self, times: Option<&VecDeque<i64>>, now: i64) -> Option<i64> {
        let times = times?;
        let window = self.limits.window;
        let live = times.iter().filter(|t| **t > now - window).count() as u32;
        let over = live.checked_sub(self.limits.per_account_before_backoff)?;
        let backoff = 1i64
            .checked_shl(over)
            .filter(|b| *b > 0)
            .unwrap_or(window)
            .min(window);
        let latest = times.iter().max()?;
        let wait = latest + backoff - now;
        (wait > 0).then_some(wait)
    }
}

impl LoginThrottle for InProcessThrottle {
    fn reserve<'a>(
        &'a self,
        account: &'a str,
        client: IpAddr,
        now: i64,
    ) -> BoxFuture<'a, Result<Reservation, u64>> {
        Box::pin(async move {
            // A poisoned lock means a panic elsewhere: fail closed.
            let Ok(mut guard) = self.failures.lock() else {
                return Err(1);
            };
            let f = &mut *guard;
            let l = self.limits;
            let pair = (account.to_owned(), client);
            let wait = [
                full_for(
                    f.by_account_and_client.get(&pair),
                    l.per_account_and_client,
                    now,
                    l.window,
                ),
                full_for(f.by_client.get(&client), l.per_client, now, l.window),
                if f.known_clients
                    .get(&pair)
                    .is_some_and(|at| *at > now - KNOWN_CLIENT_SECS)
                {
                    None
                } else {
                    self.account_wait(f.by_account.get(account), now)
                },
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(wait) = wait {
                return Err(u64::try_from(wait).unwrap_or(1).max(1));
            }
            if f.by_account_and_client.len() > SWEEP_AT
                || f.by_client.len() > SWEEP_AT
                || f.by_account.len() > SWEEP_AT
            {
                sweep(&mut f.by_account_and_client, now, l.window);
                sweep(&mut f.by_client, now, l.window);
                sweep(&mut f.by_account, now, l.window);
            }
            if f.known_clients.len() > SWEEP_AT * 10 {
                f.known_clients
                    .retain(|_, at| *at > now - KNOWN_CLIENT_SECS);
            }
            for times in [
                f.by_account_and_client.entry(pair).or_default(),
                f.by_client.entry(client).or_default(),
                f.by_account.entry(account.to_owned()).or_default(),
            ] {
                drop_expired(times, now, l.window);
                times.push_back(now);
            }
            Ok(Reservation {
                account: account.to_owned(),
                client,
                at: now,
            })
        })
    }

    fn settle(&self, reservation: Reservation, attempt: Attempt) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if attempt == Attempt::Failed {
                return;
            }
            let Ok(mut f) = self.failures.lock() else {
                return;
            };
            let Reservation {
                account,
                client,
                at,
            } = reservation;
            forget_one(f.by_client.get_mut(&client), at);
            forget_one(f.by_account.get_mut(&account), at);
            let pair = (account, client);
            // Only this attempt is forgotten: earlier failures of the pair
            // stay, or a guesser sharing the owner's address would get a
            // fresh set each time the owner logs in.
            forget_one(f.by_account_and_client.get_mut(&pair), at);
            if attempt == Attempt::Succeeded {
                f.known_clients.insert(pair, at);
            }
        })
    }

    fn prune(&self, now: i64) {
        if let Ok(mut f) = self.failures.lock() {
            let window = self.limits.window;
            sweep(&mut f.by_account_and_client, now, window);
            sweep(&mut f.by_client, now, window);
            sweep(&mut f.by_account, now, window);
            f.known_clients
                .retain(|_, at| *at > now - KNOWN_CLIENT_SECS);
        }
    }
}

/// Which clients have had a refusal audited in the current minute: a flood
/// of refusals (past the request budget, past the login throttle) writes one
/// audit row per client per minute, not one fsync per request; the metrics
/// keep the exact count.
#[derive(Default)]
pub struct RefusalLog {
    audited: Mutex<HashMap<IpAddr, i64>>,
}

impl RefusalLog {
    /// Whether this refusal is the first of `key` in the minute of `now`
    /// (Unix seconds), and so gets an audit row.
    pub fn first_this_minute(&self, key: IpAddr, now: i64) -> bool {
        let minute = now.div_euclid(60);
        let Ok(mut audited) = self.audited.lock() else {
            return false;
        };
        if audited.len() > SWEEP_AT {
            audited.retain(|_, m| *m >= minute);
        }
        audited.insert(key, minute) != Some(minute)
    }

    /// Forgets clients whose minute is over.
    pub fn prune(&self, now: i64) {
        let minute = now.div_euclid(60);
        if let Ok(mut audited) = self.audited.lock() {
            audited.retain(|_, m| *m >= minute);
            audited.shrink_to_fit();
        }
    }

    /// Clients remembered.
    pub fn len(&self) -> usize {
        self.audited.lock().map(|a| a.len()).unwrap_or_default()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-client request budget on `/auth/*` (GCRA, from governor), and
/// the clients whose refusal was audited this minute.
pub struct RequestBudget<C: GovernorClock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    refusals: RefusalLog,
}

impl RequestBudget {
    /// `per_minute` requests per client key.
    pub fn new(per_minute: u32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: GovernorClock + Clone> RequestBudget<C> {
    /// The same on another clock (tests).
    pub fn with_clock(per_minute: u32, clock: C) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        RequestBudget {
            limiter: RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone()),
            clock,
            refusals: RefusalLog::default(),
        }
    }

    /// Takes one request from `key`'s budget, or says how many seconds to wait.
    pub fn check(&self, key: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Whether this refusal is the first of `key` in the minute of `now`.
    pub fn first_refusal_this_minute(&self, key: IpAddr, now: i64) -> bool {
        self.refusals.first_this_minute(key, now)
    }

    /// Forgets clients whose budget is full again and whose audit minute is
    /// over: memory stays bounded by the clients of the last minute.
    pub fn prune(&self, now: i64) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.refusals.prune(now);
    }

    /// Clients with state kept (for tests and diagnostics).
    pub fn tracked(&self) -> usize {
        self.limiter.len() + self.refusals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn throttle_with(per_account_before_backoff: u32) -> InProcessThrottle {
        InProcessThrottle::new(LoginLimits {
            per_account_and_client: 3,
            per_client: 5,
            per_account_before_backoff,
            window: 60,
        })
    }

    fn throttle() -> InProcessThrottle {
        throttle_with(10)
    }

    async fn fail(
        t: &InProcessThrottle,
        account: &str,
        client: IpAddr,
        now: i64,
    ) -> Result<(), u64> {
        let r = t.reserve(account, client, now).await?;
        t.settle(r, Attempt::Failed).await;
        Ok(())
    }

    #[tokio::test]
    async fn an_account_and_client_pair_is_blocked_until_the_window_passes() {
        let t = throttle();
        for i in 0..3 {
            assert_eq!(fail(&t, "a", ip(1), 100 + i).await, Ok(()));
        }
        assert_eq!(fail(&t, "a", ip(1), 110).await, Err(50));
        assert_eq!(fail(&t, "a", ip(1), 159).await, Err(1), "last second");
        assert_eq!(fail(&t, "a", ip(1), 160).await, Ok(()), "oldest left");
    }

    #[tokio::test]
    async fn reservations_count_before_they_are_settled() {
        let t = throttle();
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

    #[tokio::test]
    async fn a_success_frees_only_its_own_slot() {
        let t = throttle();
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

    #[tokio::test]
    async fn a_known_address_is_known_for_thirty_days_to_the_second() {
        let t = throttle_with(1);
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
        let t = throttle_with(1);
        if let Ok(r) = t.reserve("a", home, 1_000).await {
            t.settle(r, Attempt::Succeeded).await;
        }
        let expired = 1_000 + KNOWN_CLIENT_SECS;
        assert_eq!(fail(&t, "a", ip(8), expired).await, Ok(()));
        assert!(t.reserve("a", home, expired).await.is_err(), "forgotten");
    }

    #[tokio::test]
    async fn a_timed_attacker_cannot_lock_the_owner_out_of_a_known_address() {
        // An attacker polls every second from many addresses and takes each
        // back-off opening; the owner, who logged in from home before, tries
        // once a minute for an hour with the right password.
        let t = InProcessThrottle::new(LoginLimits {
            per_account_and_client: 5,
            per_client: 20,
            per_account_before_backoff: 10,
            window: 900,
        });
        let home = IpAddr::from([198, 51, 100, 7]);
        if let Ok(r) = t.reserve("victim", home, 900).await {
            t.settle(r, Attempt::Succeeded).await;
        }
        let (mut owner_checks, mut attacker_failures) = (0, 0);
        for now in 1_000..1_000 + 3_600i64 {
            for n in 0..=255u8 {
                if let Ok(r) = t
                    .reserve("victim", IpAddr::from([203, 0, 113, n]), now)
                    .await
                {
                    t.settle(r, Attempt::Failed).await;
                    attacker_failures += 1;
                    break;
                }
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

    #[tokio::test]
    async fn a_client_is_limited_across_accounts() {
        let t = throttle();
        for i in 0..5 {
            assert_eq!(fail(&t, &format!("acct{i}"), ip(1), 100).await, Ok(()));
        }
        assert_eq!(fail(&t, "another", ip(1), 100).await, Err(60));
        assert_eq!(fail(&t, "another", ip(2), 100).await, Ok(()));
    }

    #[tokio::test]
    async fn an_account_backs_off_exponentially_but_is_never_locked() {
        let t = throttle_with(4);
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
        let t = throttle_with(4);
        for n in 0..40u8 {
            let _ = fail(&t, "b", ip(n), 1_000 + i64::from(n) * 60).await;
        }
        assert!(fail(&t, "b", ip(200), 100_000).await.is_ok());
    }

    #[tokio::test]
    async fn pruning_forgets_what_left_the_window() {
        let t = throttle();
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
}
