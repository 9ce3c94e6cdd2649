//! The login throttle and the request budget shared by every instance
//! through Redis: one key schema ([`LimitKeys`]), one Lua script per step,
//! so a check and what it records are one atomic step across instances.
//!
//! The connection, the per-call timeout and the key encoding are the
//! library's (`tokengate::guard::redis_*`, the denylist's own), so the
//! service has one way to talk to Redis.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokengate::guard::{
    BoxFuture, DEFAULT_DENYLIST_PREFIX, DEFAULT_REDIS_TIMEOUT, RevocationError, redis_call,
    redis_key_part,
};

use super::health::Health;
use super::{
    Attempt, Held, InProcessThrottle, KNOWN_CLIENT_SECS, LoginLimits, LoginThrottle, Reservation,
};

/// How much longer than the window a throttle key lives after its last
/// write: entries are scored by the instances' clocks and keys expire by
/// Redis's, and a minute covers any skew NTP leaves.
const SKEW_MARGIN_SECS: i64 = 60;

/// How long a budget counter lives: its minute, and the skew margin.
const BUDGET_TTL_SECS: i64 = 60 + SKEW_MARGIN_SECS;

/// Reserves one password check. KEYS: the pair's, the client's and the
/// account's sorted sets, the pair's known-client key. ARGV: now, window,
/// pair limit, client limit, account back-off threshold, known-client
/// seconds, the reservation's member, the sets' TTL. Returns 0 when
/// reserved (the member added to the three sets at score `now`), else the
/// seconds to wait (nothing recorded). The same rules as
/// `InProcessThrottle::reserve`, line for line.
const RESERVE: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cutoff = now - window
-- What left the window is forgotten: scores at or before now - window.
for i = 1, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
end
local wait = 0
-- Per pair and per client: full until the oldest leaves the window.
local limits = { tonumber(ARGV[3]), tonumber(ARGV[4]) }
for i = 1, 2 do
  local live = redis.call('ZCARD', KEYS[i])
  if live > 0 and live >= limits[i] then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
-- Per account: back-off after the threshold, 1 s, 2 s, 4 s ... capped at
-- the window, after the latest attempt; not for a client known to it.
local known = false
local known_at = redis.call('GET', KEYS[4])
if known_at then
  local at = tonumber(known_at)
  known = at ~= nil and at > now - tonumber(ARGV[6])
end
if not known then
  local live = redis.call('ZCARD', KEYS[3])
  local over = live - tonumber(ARGV[5])
  if live > 0 and over >= 0 then
    local backoff = math.min(2 ^ over, window)
    local latest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
    local w = tonumber(latest[2]) + backoff - now
    if w > wait then wait = w end
  end
end
if wait > 0 then
  return math.ceil(wait)
end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now, ARGV[7])
  redis.call('EXPIRE', KEYS[i], ARGV[8])
end
return 0
";

/// Settles a reservation that was not a failure. KEYS: as for `RESERVE`.
/// ARGV: the member, `1` if the password matched, the reservation's time,
/// the known-client seconds. Forgets the member (only it); a match makes
/// the client known to the account from that time (the latest kept).
const SETTLE: &str = r"
for i = 1, 3 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if ARGV[2] == '1' then
  local current = redis.call('GET', KEYS[4])
  local old = current and tonumber(current)
  if not old or old < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[4])
  end
end
return 1
";

/// Takes one request from a client's budget. KEYS[1]: the client's
/// counter for this minute. ARGV: the budget, the counter's TTL. Returns 1
/// when within the budget.
const TAKE: &str = r"
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if n > tonumber(ARGV[1]) then
  return 0
end
return 1
";

/// The key schema of the shared limits: the one place their Redis keys
/// are named.
///
/// # The schema
///
/// Under the service's `redis_prefix` (default `tokengate:`, the
/// denylist's), with `<account>` (the normalised email) and `<client>` (the
/// limit key: an IPv4 address, or an IPv6 /64 network, as text)
/// percent-encoded as the denylist encodes ids, so they hold no `:`:
///
/// | key | type | holds | expires |
/// |---|---|---|---|
/// | `<prefix>throttle:pair:<account>:<client>` | sorted set | the pair's counted password checks: score the Unix second, member a unique id | window + 60 s after its last reservation |
/// | `<prefix>throttle:client:<client>` | sorted set | the client's, whatever the account | the same |
/// | `<prefix>throttle:account:<account>` | sorted set | the account's, from anywhere | the same |
/// | `<prefix>throttle:known:<account>:<client>` | string | the Unix second of the pair's latest successful login | 30 days after it is written |
/// | `<prefix>budget:<client>:<minute>` | string | requests of the client in that minute (Unix seconds / 60) | 120 s after its first request |
///
/// Scores and times come from the instances' clocks (keep them in sync);
/// expiries only bound memory, the rules compare the stored times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKeys {
    prefix: String,
}

impl LimitKeys {
    /// Keys under `prefix`, taken as is (configuration, not attacker text).
    pub fn new(prefix: impl Into<String>) -> Self {
        LimitKeys {
            prefix: prefix.into(),
        }
    }

    /// The counted checks of `account` from `client`.
    pub fn pair(&self, account: &str, client: IpAddr) -> String {
        self.key(&[
            "throttle:pair:",
            &redis_key_part(account),
            ":",
            &client_part(client),
        ])
    }

    /// The counted checks from `client`, whatever the account.
    pub fn client(&self, client: IpAddr) -> String {
        self.key(&["throttle:client:", &client_part(client)])
    }

    /// The counted checks of `account`, from anywhere.
    pub fn account(&self, account: &str) -> String {
        self.key(&["throttle:account:", &redis_key_part(account)])
    }

    /// When `client` last logged in to `account`.
    pub fn known(&self, account: &str, client: IpAddr) -> String {
        self.key(&[
            "throttle:known:",
            &redis_key_part(account),
            ":",
            &client_part(client),
        ])
    }

    /// `client`'s request count in the minute of `now` (Unix seconds).
    pub fn budget(&self, client: IpAddr, now: i64) -> String {
        self.key(&[
            "budget:",
            &client_part(client),
            ":",
            &now.div_euclid(60).to_string(),
        ])
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push_str(part);
        }
        key
    }

    /// The four keys of a reservation, in the scripts' order.
    fn of_attempt(&self, account: &str, client: IpAddr) -> [String; 4] {
        [
            self.pair(account, client),
            self.client(client),
            self.account(account),
            self.known(account, client),
        ]
    }
}

impl Default for LimitKeys {
    fn default() -> Self {
        LimitKeys::new(DEFAULT_DENYLIST_PREFIX)
    }
}

fn client_part(client: IpAddr) -> String {
    redis_key_part(&client.to_string())
}

/// Where the shared limits live: a Redis connection (the library's
/// [`redis_connect`](tokengate::guard::redis_connect), shareable with the
/// denylist), the key prefix, and the bound on each call.
#[derive(Clone)]
pub struct RedisLimits {
    conn: ConnectionManager,
    keys: LimitKeys,
    timeout: Duration,
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection: its address may carry a password.
        f.debug_struct("RedisLimits")
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Over `conn`, keys under `prefix`, each call bounded by the
    /// library's default Redis timeout (500 ms).
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        RedisLimits {
            conn,
            keys: LimitKeys::new(prefix),
            timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }

    /// Bounds each call to `timeout`: past it, the call counts as failed
    /// and the limit is served in-process.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key schema in use.
    pub fn keys(&self) -> &LimitKeys {
        &self.keys
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RevocationError> {
        let mut conn = self.conn.clone();
        redis_call(op, self.timeout, invocation.invoke_async(&mut conn)).await
    }
}

/// The failed-login throttle shared by every instance through Redis, with
/// the rules of [`InProcessThrottle`] (the same limits, window, back-off,
/// known clients; a success forgets only its own attempt; an unchecked
/// attempt releases its reservation).
///
/// A reservation is one script call: it drops what left the window, checks
/// the three limits and, if none is reached, records the attempt in the
/// pair's, the client's and the account's sorted sets — one step inside
/// Redis, so instances racing cannot overshoot a limit between them. A
/// settlement that is not a failure is a second call ([`LimitKeys`] has
/// the schema).
///
/// # When Redis fails
///
/// An error or a call past the timeout (500 ms by default) is never the
/// client's problem: the attempt is counted by this instance's own
/// [`InProcessThrottle`] instead (a limit still holds, per instance, so an
/// attacker spreading over N instances gets up to N times the limit while
/// Redis is away), with a warning at the first failure, at most one a
/// minute while it lasts, and one at the recovery. Meanwhile one call a
/// second probes Redis; the first answered probe makes the limits shared
/// again. What was counted in-process during the outage stays in-process
/// (it is not copied to Redis). A reservation is settled in the backend
/// that made it; a settlement Redis does not take leaves that attempt
/// counted there until it leaves the window (the safe side).
///
/// Needs what the denylist needs: one Redis server ≥ 6.2 or a primary (a
/// script touches keys of several hash slots: not Redis Cluster), and the
/// instances' clocks in sync (they score the attempts).
pub struct RedisLoginThrottle {
    redis: RedisLimits,
    limits: LoginLimits,
    reserve: Script,
    settle: Script,
    fallback: InProcessThrottle,
    health: Health,
    members: Members,
}

impl RedisLoginThrottle {
    /// A throttle with these limits over `redis`.
    pub fn new(limits: LoginLimits, redis: RedisLimits) -> Self {
        let fallback = InProcessThrottle::new(limits);
        RedisLoginThrottle {
            redis,
            // The in-process throttle's reading of the limits (window ≥ 1).
            limits: fallback.limits,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            fallback,
            health: Health::new("login throttle"),
            members: Members::new(),
        }
    }

    async fn reserve_shared(
        &self,
        account: &str,
        client: IpAddr,
        now: i64,
    ) -> Result<Result<Reservation, u64>, RevocationError> {
        let l = self.limits;
        let member = self.members.next();
        let mut invocation = self.reserve.prepare_invoke();
        for key in self.redis.keys.of_attempt(account, client) {
            invocation.key(key);
        }
        invocation
            .arg(now)
            .arg(l.window)
            .arg(l.per_account_and_client)
            .arg(l.per_client)
            .arg(l.per_account_before_backoff)
            .arg(KNOWN_CLIENT_SECS)
            .arg(&member)
            .arg(l.window.saturating_add(SKEW_MARGIN_SECS));
        let wait: i64 = self.redis.run("login throttle", &invocation).await?;
        if wait > 0 {
            return Ok(Err(u64::try_from(wait).unwrap_or(1).max(1)));
        }
        Ok(Ok(Reservation {
            account: account.to_owned(),
            client,
            at: now,
            held: Held::Redis { member },
        }))
    }

    async fn settle_shared(
        &self,
        reservation: &Reservation,
        member: &str,
        attempt: Attempt,
    ) -> Result<(), RevocationError> {
        let mut invocation = self.settle.prepare_invoke();
        for key in self
            .redis
            .keys
            .of_attempt(&reservation.account, reservation.client)
        {
            invocation.key(key);
        }
        invocation
            .arg(member)
            .arg(i64::from(attempt == Attempt::Succeeded))
            .arg(reservation.at)
            .arg(KNOWN_CLIENT_SECS);
        self.redis
            .run::<i64>("login throttle settle", &invocation)
            .await
            .map(drop)
    }
}

impl LoginThrottle for RedisLoginThrottle {
    fn reserve<'a>(
        &'a self,
        account: &'a str,
        client: IpAddr,
        now: i64,
    ) -> BoxFuture<'a, Result<Reservation, u64>> {
        Box::pin(async move {
            if self.health.may_ask() {
                match self.reserve_shared(account, client, now).await {
                    Ok(verdict) => {
                        self.health.answered();
                        return verdict;
                    }
                    // A reservation that timed out may still land in Redis:
                    // it then counts there too, on the safe side.
                    Err(error) => self.health.failed(&error),
                }
            }
            self.fallback.reserve(account, client, now).await
        })
    }

    fn settle(&self, reservation: Reservation, attempt: Attempt) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            match &reservation.held {
                Held::InProcess => self.fallback.settle(reservation, attempt).await,
                // A failure stays counted as reserved: nothing to write.
                Held::Redis { .. } if attempt == Attempt::Failed => {}
                // Settled in Redis even if the breaker has opened since:
                // the reservation is there, and a known client not written
                // would lose its exemption. Bounded by the timeout.
                Held::Redis { member } => {
                    match self.settle_shared(&reservation, member, attempt).await {
                        Ok(()) => self.health.answered(),
                        Err(error) => self.health.failed(&error),
                    }
                }
            }
        })
    }

    fn prune(&self, now: i64) {
        // Redis forgets by itself (ZREMRANGEBYSCORE and TTLs); only what
        // was counted here while it failed needs pruning.
        self.fallback.prune(now);
    }
}

/// The request budget's Redis half: a fixed window per client and minute.
pub(super) struct RedisBudget {
    redis: RedisLimits,
    per_minute: NonZeroU32,
    take: Script,
    health: Health,
}

impl RedisBudget {
    pub(super) fn new(redis: RedisLimits, per_minute: NonZeroU32) -> Self {
        RedisBudget {
            redis,
            per_minute,
            take: Script::new(TAKE),
            health: Health::new("request budget"),
        }
    }

    /// The verdict from Redis, or `None` when Redis is not asked or fails
    /// (the caller then uses the in-process budget).
    pub(super) async fn take(&self, key: IpAddr, now: i64) -> Option<Result<(), u64>> {
        if !self.health.may_ask() {
            return None;
        }
        let mut invocation = self.take.key(self.redis.keys.budget(key, now));
        invocation.arg(self.per_minute.get()).arg(BUDGET_TTL_SECS);
        match self.redis.run::<i64>("request budget", &invocation).await {
            Ok(within) => {
                self.health.answered();
                if within == 1 {
                    Some(Ok(()))
                } else {
                    // Until the counter's minute is over: 1 to 60 s.
                    Some(Err(u64::try_from(60 - now.rem_euclid(60)).unwrap_or(60)))
                }
            }
            Err(error) => {
                self.health.failed(&error);
                None
            }
        }
    }

    #[cfg(test)]
    pub(super) fn health(&self) -> &Health {
        &self.health
    }
}

impl RedisLoginThrottle {
    #[cfg(test)]
    pub(super) fn health(&self) -> &Health {
        &self.health
    }

    #[cfg(test)]
    pub(super) fn fallback(&self) -> &InProcessThrottle {
        &self.fallback
    }
}

/// Unique members for the sorted sets: this instance's random id and a
/// counter. Two reservations of one second must be two members, or the
/// second would only move the first.
struct Members {
    instance: String,
    next: AtomicU64,
}

impl Members {
    fn new() -> Self {
        Members {
            instance: instance_id(),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}:{}",
            self.instance,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// 128 random bits as hex. Should the system generator fail, a randomly
/// keyed hash of the time and the process id is unique enough: members
/// only need to differ between instances, not to be secret.
fn instance_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, half) in bytes.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            h.write_u32(std::process::id());
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
