//! Limits in front of the expensive and the guessable: the failed-login
//! throttle (one trait: [`InProcessThrottle`] for one instance,
//! [`RedisLoginThrottle`] when instances share it) and the per-client
//! request budget on `/auth/*` ([`RequestBudget`]: governor in-process, a
//! counter in Redis when shared).
//!
//! Start-up picks the backends with [`login_throttle`] and
//! [`request_budget`]: Redis when a connection is given, in-process
//! otherwise. The Redis backends fall back to the in-process ones while
//! Redis fails (see [`RedisLoginThrottle`]).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock as GovernorClock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use redis::aio::ConnectionManager;
use tokengate::guard::BoxFuture;

use crate::infra::config::{Settings, secs};

mod health;
mod shared;

use self::shared::RedisBudget;
pub use self::shared::{LimitKeys, RedisLimits, RedisLoginThrottle};

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

impl LoginLimits {
    /// The limits the settings ask for.
    pub fn from_settings(settings: &Settings) -> Self {
        LoginLimits {
            per_account_and_client: settings.login_max_failures,
            per_client: settings.login_ip_max_failures,
            per_account_before_backoff: settings.login_account_max_failures,
            window: secs(settings.login_failure_window),
        }
    }
}

/// The failed-login throttle the settings ask for: shared through Redis
/// when `redis` is given (keys under `redis_prefix`), else this process's
/// own. Start-up calls it once and hands the result to every service.
pub fn login_throttle(
    settings: &Settings,
    redis: Option<ConnectionManager>,
) -> Arc<dyn LoginThrottle> {
    let limits = LoginLimits::from_settings(settings);
    match redis {
        Some(conn) => Arc::new(RedisLoginThrottle::new(
            limits,
            RedisLimits::new(conn, settings.redis_prefix.clone()),
        )),
        None => Arc::new(InProcessThrottle::new(limits)),
    }
}

/// The request budget the settings ask for (`auth_requests_per_minute` per
/// client key): counted in Redis when `redis` is given, with governor in
/// this process otherwise (and as the fallback).
pub fn request_budget(settings: &Settings, redis: Option<ConnectionManager>) -> RequestBudget {
    let budget = RequestBudget::new(settings.auth_requests_per_minute);
    match redis {
        Some(conn) => budget.with_redis(RedisLimits::new(conn, settings.redis_prefix.clone())),
        None => budget,
    }
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
    held: Held,
}

/// Which backend holds a reservation: it is settled there, whichever
/// backend is in use by then.
#[derive(Debug)]
enum Held {
    /// This process's counts ([`InProcessThrottle`]).
    InProcess,
    /// Redis, as this member of the throttle's sorted sets.
    Redis { member: String },
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
                held: Held::InProcess,
            })
        })
    }

    fn settle(&self, reservation: Reservation, attempt: Attempt) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // A reservation Redis holds is not ours to settle (the Redis
            // throttle settles it there); an `at` alone could match another.
            if attempt == Attempt::Failed || !matches!(reservation.held, Held::InProcess) {
                return;
            }
            let Ok(mut f) = self.failures.lock() else {
                return;
            };
            let Reservation {
                account,
                client,
                at,
                held: _,
            } = reservation;
            forget_one(f.by_client.get_mut(&client), at);
            forget_one(f.by_account.get_mut(&account), at);
            let pair = (account, client);
            // Only this attempt is forgotten: earlier failures of the pair
            // stay, or a guesser sharing the owner's address would get a
            // fresh set each time the owner logs in.
            forget_one(f.by_account_and_client.get_mut(&pair), at);
            if attempt == Attempt::Succeeded {
                // The latest success counts, whichever order they settle in.
                let known = f.known_clients.entry(pair).or_insert(at);
                *known = (*known).max(at);
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
///
/// With Redis ([`with_redis`](Self::with_redis)) the budget is counted
/// there, shared by every instance: a fixed window per client key and
/// minute (`<prefix>budget:<client>:<minute>`, one script call), so up to
/// twice the budget can pass across a minute's boundary where governor
/// spreads it. While Redis fails, governor counts in this process (a
/// warning says so, at most once a minute), and Redis is used again as
/// soon as it answers. Only [`take`](Self::take) consults Redis.
pub struct RequestBudget<C: GovernorClock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    refusals: RefusalLog,
    /// Requests per minute per client key (at least 1).
    per_minute: NonZeroU32,
    shared: Option<RedisBudget>,
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
            per_minute,
            shared: None,
        }
    }

    /// The same budget counted in Redis, shared by every instance with the
    /// same prefix; governor stays as the fallback.
    pub fn with_redis(mut self, redis: RedisLimits) -> Self {
        self.shared = Some(RedisBudget::new(redis, self.per_minute));
        self
    }

    /// Takes one request from `key`'s budget at `now` (Unix seconds), or
    /// says how many seconds to wait: in Redis when configured and
    /// answering, else as [`check`](Self::check) does. Never an error: a
    /// failing Redis means this process's own budget.
    pub async fn take(&self, key: IpAddr, now: i64) -> Result<(), u64> {
        if let Some(shared) = &self.shared
            && let Some(verdict) = shared.take(key, now).await
        {
            return verdict;
        }
        self.check(key)
    }

    /// Takes one request from `key`'s budget in this process (governor),
    /// or says how many seconds to wait. Redis is not consulted: see
    /// [`take`](Self::take).
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
mod redis_tests;
#[cfg(test)]
mod tests;
