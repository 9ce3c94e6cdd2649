//! The revocation denylist in Redis, shared by the issuer and every guard.
//!
//! The issuer (the tokengate service, several instances of it) writes
//! revocations with [`RecordRevocations`]; every API's [`Guard`](super::Guard)
//! reads them with [`Revocations`]. Both sides are [`RedisRevocations`], so
//! they cannot disagree on the key schema, which is defined here and only
//! here: [`DenylistKeys`]. Its docs are the contract for operators and for
//! readers written in other languages — key names, value encoding, the TTL
//! rule — and are kept there rather than on this (private) module so that
//! they show in the crate's rendered documentation; the operating notes
//! (timeouts, reconnection, clocks, what Redis deployments work) are on
//! [`RedisRevocations`].
//!
//! In short: `<prefix>sid:<id>` and `<prefix>jti:<id>` hold `<until>`,
//! `<prefix>sub:<id>` holds `<before> <until>`; ids are percent-encoded;
//! every key expires at `<until>` (`SET … EXAT`); writes keep the maxima,
//! atomically, in a Lua script.

use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::io::tcp::TcpSettings;
use ::redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, RedisResult, Script};

use super::revocation::{
    BoxFuture, RecordRevocations, RevocationError, RevocationQuery, Revocations,
};
use crate::time::UnixTime;

/// The key prefix unless told otherwise.
pub const DEFAULT_DENYLIST_PREFIX: &str = "tokengate:";

/// How long one check or one write may take before it fails: short, since
/// every request waits on it, and a hung Redis must fail closed fast.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one connection attempt (TCP and the `AUTH`/`SELECT` handshake)
/// may take, and [`RedisRevocations::connect`] as a whole. Longer than a
/// check: it happens at start-up and in the background on reconnects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long data sent to Redis may stay unacknowledged by its host before
/// the connection is dropped and made anew (Linux `TCP_USER_TIMEOUT`).
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const UNACKNOWLEDGED_LIMIT: Duration = Duration::from_secs(10);

/// The latest `until` accepted: the end of year 9999. Redis refuses
/// expiries past about year 292 million, and Lua compares numbers as
/// doubles (exact below 2^53); a larger `until` is a caller's bug, not a
/// revocation to keep forever.
const MAX_UNTIL: i64 = 253_402_300_799;

/// Session and token entries. KEYS[1]: the entry; ARGV[1]: `until`.
/// Keeps the later `until`: a revocation is never shortened. An unreadable
/// old value is overwritten (it revokes nothing a reader can parse).
const RECORD_ENTRY: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local old = tonumber(current)
  if old and old >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[1])
return 1
";

/// User entries. KEYS[1]: the entry; ARGV[1]: `before`; ARGV[2]: `until`
/// (`until` is a Lua keyword, hence `expiry`). Keeps each at its maximum.
const RECORD_USER: &str = r"
local before, expiry = ARGV[1], ARGV[2]
local current = redis.call('GET', KEYS[1])
if current then
  local old_before, old_until = string.match(current, '^(%-?%d+) (%-?%d+)$')
  if old_before then
    if tonumber(old_before) >= tonumber(before) and tonumber(old_until) >= tonumber(expiry) then
      return 0
    end
    if tonumber(old_before) > tonumber(before) then before = old_before end
    if tonumber(old_until) > tonumber(expiry) then expiry = old_until end
  end
end
redis.call('SET', KEYS[1], before .. ' ' .. expiry, 'EXAT', expiry)
return 1
";

/// The key schema of the Redis denylist: which key holds the revocation of
/// a session, a token or a user. Writer and reader ([`RedisRevocations`])
/// build their keys here and nowhere else.
///
/// # The schema
///
/// One Redis string per revocation, all under one prefix (default
/// [`DEFAULT_DENYLIST_PREFIX`], `tokengate:`; a tenant or a test picks its
/// own with [`DenylistKeys::new`]):
///
/// | revokes                                              | key                | value              |
/// |------------------------------------------------------|--------------------|--------------------|
/// | every token of a session (`sid`)                     | `<prefix>sid:<id>` | `<until>`          |
/// | one token (`jti`)                                    | `<prefix>jti:<id>` | `<until>`          |
/// | the tokens of a user (`sub`) issued before `<before>` | `<prefix>sub:<id>` | `<before> <until>` |
///
/// * `<id>` is the claim's UTF-8 bytes **percent-encoded**: every byte
///   outside `A–Z a–z 0–9 - . _ ~` becomes `%XX` (two upper-case hex
///   digits), `%` itself included. Ids are attacker-influenced text; the
///   encoding is one-to-one and leaves no `:`, space, glob character
///   (`* ? [ ] \`) or control byte in the key, so no id can reach another
///   id's key or another kind's key, or widen an operator's
///   `SCAN 0 MATCH tokengate:sid:*`. `sid` `a:b` is `tokengate:sid:a%3Ab`;
///   an empty id is `tokengate:sid:`.
/// * Values are ASCII decimal integers, Unix times in seconds; the user
///   entry's two are separated by one space (`1700000000 1700000931`).
/// * `<until>` is past the last moment a covered token could verify (its
///   latest `exp` plus the verifiers' leeway). **TTL rule:** every key is
///   written with an absolute expiry at `<until>` (`SET … EXAT <until>`,
///   Redis ≥ 6.2), so an entry vanishes by itself once no token it covers
///   can verify, and the set stays bounded by one token lifetime of
///   revocations. An `<until>` at or before the epoch is not written (it
///   revokes nothing); one past year 9999 is refused.
/// * Writes keep the **maximum** of `<until>`, and of `<before>`: a
///   revocation is never shortened or narrowed. The read-compare-write runs
///   as a Lua script inside Redis (`EVALSHA`), so writers racing cannot lose
///   the larger value. Another writer must do the same.
///
/// A token is revoked at `now` when its `sid` entry, or its `jti` entry, has
/// `until > now`, or its `sub` entry has `until > now` and the token's `iat`
/// is earlier than `before` (a token without `iat` counts as earlier): the
/// semantics of [`InProcessRevocations`](super::InProcessRevocations). A
/// value that does not parse, or a key of another type, makes the check an
/// error ("cannot tell"), unless another entry revokes the token.
///
/// ```
/// use tokengate::guard::DenylistKeys;
///
/// let keys = DenylistKeys::default();
/// assert_eq!(keys.session("s-1"), "tokengate:sid:s-1");
/// assert_eq!(keys.token("a:b"), "tokengate:jti:a%3Ab");
/// assert_eq!(DenylistKeys::new("acme:").user("42"), "acme:sub:42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DenylistKeys {
    prefix: String,
}

impl Default for DenylistKeys {
    fn default() -> Self {
        DenylistKeys::new(DEFAULT_DENYLIST_PREFIX)
    }
}

impl DenylistKeys {
    /// Keys under `prefix`, taken as is (it is configuration, not attacker
    /// text; end it with `:` by convention). Issuer and verifiers must use
    /// the same prefix.
    pub fn new(prefix: impl Into<String>) -> Self {
        DenylistKeys {
            prefix: prefix.into(),
        }
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of the revocation of session `sid`: `<prefix>sid:<id>`.
    pub fn session(&self, sid: &str) -> String {
        self.key("sid:", sid)
    }

    /// The key of the revocation of token `jti`: `<prefix>jti:<id>`.
    pub fn token(&self, jti: &str) -> String {
        self.key("jti:", jti)
    }

    /// The key of the revocation of user `sub`'s earlier tokens:
    /// `<prefix>sub:<id>`.
    pub fn user(&self, sub: &str) -> String {
        self.key("sub:", sub)
    }

    /// The marker that the denylist is complete: `<prefix>meta:complete`,
    /// set by the issuer after it wrote every revocation that still
    /// matters. Redis restarted empty has no marker, so a reader that
    /// requires it fails closed until the issuer wrote them all again.
    pub fn complete(&self) -> String {
        self.key("meta:", "complete")
    }

    /// The pass that is writing the denylist anew: `<prefix>meta:pass`.
    pub fn pass(&self) -> String {
        self.key("meta:", "pass")
    }

    fn key(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(
            self.prefix
                .len()
                .saturating_add(kind.len())
                .saturating_add(id.len()),
        );
        key.push_str(&self.prefix);
        key.push_str(kind);
        encode_id(id, &mut key);
        key
    }
}

/// Percent-encodes every byte but the RFC 3986 unreserved ones. One-to-one
/// because `%` is encoded too; the output has no `:`, so the kind segment
/// and the prefix before it are never ambiguous.
fn encode_id(id: &str, out: &mut String) {
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The denylist in Redis: the reader ([`Revocations`]) for the guard and the
/// writer ([`RecordRevocations`]) for the issuer, over one key schema
/// ([`DenylistKeys`], whose docs describe it). Cheap to clone: clones share
/// the connection.
///
/// A check is one round trip: the two or three `GET`s it needs, pipelined.
/// A write is one script call.
///
/// # Operating it
///
/// * Every call is bounded by a timeout ([`DEFAULT_REDIS_TIMEOUT`],
///   [`with_timeout`](Self::with_timeout)). An unreachable, hung or
///   misbehaving Redis, or an entry of the wrong type or shape, is a
///   [`RevocationError`], which the guard turns into a 503 by default (fail
///   closed). Error texts never carry the URL or its password.
/// * The connection is a [`ConnectionManager`]: it reconnects by itself in
///   the background, so checks recover when Redis comes back. On Linux, a
///   connection whose peer vanished silently (a lost host, a partition) is
///   dropped after 10 s of unacknowledged data and made anew, rather than
///   after the minutes TCP would take.
/// * Keep the clocks of the issuer, the verifiers and Redis in sync (NTP):
///   Redis drops an entry at `<until>` by its own clock.
/// * A single Redis server ≥ 6.2, or a primary with replicas (writes go to
///   the primary; a verifier may read from a replica, and a revocation then
///   takes effect after the replication lag). Not Redis Cluster:
///   a check reads keys of different hash slots. Plain TCP (`redis://`,
///   `unix://`): this build carries no TLS stack and refuses `rediss://`.
/// * Needs a Tokio runtime with the time driver enabled.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tokengate::guard::{Guard, RedisRevocations, StaticKeys};
/// # let (ring, policy): (tokengate::KeyRing, tokengate::VerifyPolicy) = todo!();
///
/// let denylist = RedisRevocations::connect("redis://127.0.0.1:6379", "tokengate:").await?;
/// let guard = Guard::builder(StaticKeys::new(ring), policy)
///     .revocations(Arc::new(denylist))
///     .build();
/// # let _ = guard;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRevocations {
    conn: ConnectionManager,
    keys: DenylistKeys,
    timeout: Duration,
    scripts: Arc<Scripts>,
    /// Whether a check needs the issuer's "complete" marker.
    require_complete: bool,
}

/// The write scripts, hashed once (`EVALSHA`, loaded on `NOSCRIPT`).
struct Scripts {
    entry: Script,
    user: Script,
    complete: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            entry: Script::new(RECORD_ENTRY),
            user: Script::new(RECORD_USER),
            complete: Script::new(MARK_COMPLETE),
        }
    }
}

/// Sets the "complete" marker (`KEYS[2]`, for `ARGV[2]` seconds) only if
/// the pass that wrote the entries (`ARGV[1]`, recorded in `KEYS[1]` when
/// it began) is still the one Redis knows: a Redis restarted during the
/// pass has lost its entries and the pass's record with them.
const MARK_COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
";

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the connection: its address is configuration an operator may
        // consider private, and a URL can carry a password.
        f.debug_struct("RedisRevocations")
            .field("prefix", &self.keys.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRevocations {
    /// Connects to the Redis at `url` (`redis://[user][:password@]host[:port][/db]`
    /// or `unix:///path`) and checks it answers (and accepts the password),
    /// within about two seconds; keys under `prefix`
    /// ([`DEFAULT_DENYLIST_PREFIX`] unless a tenant needs its own). Fails
    /// when Redis is unreachable, so a misconfiguration shows at start-up;
    /// [`connect_lazy`](Self::connect_lazy) starts regardless.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, RevocationError> {
        let conn = redis_connect(url).await?;
        Ok(Self::from_manager(conn, DenylistKeys::new(prefix)))
    }

    /// Like [`connect`](Self::connect), without waiting for Redis: fails only
    /// on a malformed URL or outside a Tokio runtime. Until Redis answers,
    /// checks and writes fail (the guard answers 503 unless it fails open),
    /// and the connection keeps being retried in the background.
    pub fn connect_lazy(url: &str, prefix: impl Into<String>) -> Result<Self, RevocationError> {
        let conn = redis_connect_lazy(url)?;
        Ok(Self::from_manager(conn, DenylistKeys::new(prefix)))
    }

    /// Over a connection made by the caller (another configuration, a
    /// shared manager), with the keys `keys` and the default timeout. The
    /// manager must come from the same major version of the `redis` crate
    /// as this library's (1.x); its TCP and reconnection settings are the
    /// caller's.
    pub fn from_manager(manager: ConnectionManager, keys: DenylistKeys) -> Self {
        RedisRevocations {
            conn: manager,
            keys,
            timeout: DEFAULT_REDIS_TIMEOUT,
            scripts: Arc::new(Scripts::new()),
            require_complete: false,
        }
    }

    /// Makes a check fail ("cannot tell") while the issuer's "complete"
    /// marker ([`DenylistKeys::complete`]) is absent, unless an entry
    /// revokes the token anyway. Redis that keeps nothing on disk and
    /// restarted comes back empty: without this, every revoked token
    /// would pass until the issuer wrote its revocations again; with it,
    /// the guard fails closed meanwhile. For readers of an issuer that
    /// writes the marker (the tokengate service does).
    pub fn require_complete_marker(mut self) -> Self {
        self.require_complete = true;
        self
    }

    /// Bounds each check and each write to `timeout` (default
    /// [`DEFAULT_REDIS_TIMEOUT`]). A write that timed out may still land
    /// later; repeating it is harmless (writes keep the maximum).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key schema in use.
    pub fn keys(&self) -> &DenylistKeys {
        &self.keys
    }

    /// The bound on each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one Redis call within the timeout, its failure named by `op`.
    async fn bounded<T>(
        &self,
        op: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RevocationError> {
        redis_call(op, self.timeout, call).await
    }

    async fn record_entry(&self, op: &str, key: String, until: i64) -> Result<(), RevocationError> {
        if !needs_writing(op, until)? {
            return Ok(());
        }
        let mut invocation = self.scripts.entry.key(key);
        invocation.arg(until);
        let mut conn = self.conn.clone();
        self.bounded(op, invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(drop)
    }
}

/// Connects to the Redis at `url` the way [`RedisRevocations::connect`]
/// does, for other users of the same deployment's Redis (the tokengate
/// service's shared login limits): TCP settings, background reconnection
/// and a bounded handshake are made here once. Checks that Redis answers
/// (and accepts the password) within about two seconds; errors never carry
/// the URL or its password. The manager is cheap to clone and share, e.g.
/// with [`RedisRevocations::from_manager`].
pub async fn redis_connect(url: &str) -> Result<ConnectionManager, RevocationError> {
    let client = open(url)?;
    let connecting = async {
        // A direct attempt first, for the precise cause (refused,
        // authentication): the manager would retry for seconds and
        // only the timeout would show.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        drop(
            client
                .get_multiplexed_async_connection_with_config(&probe)
                .await?,
        );
        ConnectionManager::new_with_config(client, manager_config()).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(redis_error("connect", &e)),
        Err(_) => Err(timed_out("connect", CONNECT_TIMEOUT)),
    }
}

/// Like [`redis_connect`], without waiting for Redis: fails only on a
/// malformed URL or outside a Tokio runtime; the connection is made on first
/// use and retried in the background.
pub fn redis_connect_lazy(url: &str) -> Result<ConnectionManager, RevocationError> {
    let client = open(url)?;
    ConnectionManager::new_lazy_with_config(client, manager_config())
        .map_err(|e| redis_error("connect", &e))
}

/// Runs one Redis call within `timeout`, as every call of
/// [`RedisRevocations`] does. The error names `op` and the cause (the
/// server's reply, the OS error, or "no answer within … ms"), never the URL
/// or a password.
pub async fn redis_call<T>(
    op: &str,
    timeout: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, RevocationError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(redis_error(op, &e)),
        Err(_) => Err(timed_out(op, timeout)),
    }
}

/// `text` percent-encoded as [`DenylistKeys`] encodes ids: every byte
/// outside `A–Z a–z 0–9 - . _ ~` as `%XX`. One-to-one, and free of `:`,
/// spaces, glob characters and control bytes, so attacker-chosen text can
/// be one segment of a key without reaching another key.
pub fn redis_key_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    encode_id(text, &mut out);
    out
}

/// The connection settings of the managers made here. No response timeout
/// of the manager's own: [`RedisRevocations::with_timeout`] bounds each call,
/// so one setting governs. Connection attempts are bounded so that a
/// black-holed address does not stall the background reconnection.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None)
        // Reconnection backs off from 100 ms up to 2 s between attempts.
        .set_max_delay(CONNECT_TIMEOUT)
}

/// A client for `url`, refused outside a Tokio runtime (the connection
/// manager spawns its tasks there and would panic).
fn open(url: &str) -> Result<Client, RevocationError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RevocationError(
            "Redis connect: not inside a Tokio runtime".to_owned(),
        ));
    }
    // The parser's messages name the faulty part, never the URL itself;
    // still, the URL is not echoed here: it may hold a password.
    let info = url
        .into_connection_info()
        .map_err(|e| redis_error("connect", &e))?;
    let tcp = TcpSettings::default().set_nodelay(true);
    // A peer that vanished without a word (a host lost, a partition) leaves
    // the connection looking alive, and the manager reconnects only on an
    // I/O error: our call timeouts alone would fail every check for the
    // minutes TCP takes to give up. Unacknowledged data past this bound
    // breaks the connection instead, and the manager reconnects.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let tcp = tcp.set_user_timeout(UNACKNOWLEDGED_LIMIT);
    Client::open(info.set_tcp_settings(tcp)).map_err(|e| redis_error("connect", &e))
}

/// Whether a write with this `until` has anything to record. An `until` at
/// or before the epoch revokes nothing (no token verifies then), and Redis
/// would refuse it as an expiry: a no-op. One past [`MAX_UNTIL`] is refused.
fn needs_writing(op: &str, until: i64) -> Result<bool, RevocationError> {
    if until > MAX_UNTIL {
        return Err(RevocationError(format!(
            "Redis {op}: until {until} is past year 9999"
        )));
    }
    Ok(until > 0)
}

/// A Redis error as a revocation error. The redis crate's texts name the
/// kind, the server's reply or the OS error: never the URL or a password.
fn redis_error(op: &str, e: &RedisError) -> RevocationError {
    RevocationError(format!("Redis {op}: {e}"))
}

fn timed_out(op: &str, after: Duration) -> RevocationError {
    RevocationError(format!(
        "Redis {op}: no answer within {} ms",
        after.as_millis()
    ))
}

/// A session or token entry's `until`.
fn parse_entry(value: &str) -> Option<i64> {
    value.parse().ok()
}

/// A user entry's `(before, until)`.
fn parse_user(value: &str) -> Option<(i64, i64)> {
    let (before, until) = value.split_once(' ')?;
    Some((before.parse().ok()?, until.parse().ok()?))
}

/// What one key of a check said.
enum Verdict {
    Revoked,
    NotRevoked,
    /// The value could not be read: which kind of entry.
    Unreadable(&'static str),
}

impl Revocations for RedisRevocations {
    fn is_revoked<'a>(
        &'a self,
        token: RevocationQuery<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            let now = now.as_secs();
            // `GET`s rather than one `MGET`: `MGET` answers nil for a key of
            // another type, which would read as "not revoked"; `GET` fails.
            // Pipelined: one round trip.
            let mut pipe = ::redis::pipe();
            if self.require_complete {
                pipe.get(self.keys.complete());
            }
            if let Some(sid) = token.sid {
                pipe.get(self.keys.session(sid));
            }
            if let Some(jti) = token.jti {
                pipe.get(self.keys.token(jti));
            }
            pipe.get(self.keys.user(token.sub));
            let mut conn = self.conn.clone();
            let replies: Vec<Option<String>> =
                self.bounded("check", pipe.query_async(&mut conn)).await?;

            // The replies come in the order of the commands.
            let mut replies = replies.into_iter();
            let mut verdicts = Vec::with_capacity(4);
            if self.require_complete {
                verdicts.push(match replies.next() {
                    Some(Some(_)) => Verdict::NotRevoked,
                    Some(None) => Verdict::Unreadable("complete"),
                    None => Verdict::Unreadable("reply"),
                });
            }
            for (present, kind) in [(token.sid.is_some(), "sid"), (token.jti.is_some(), "jti")] {
                if present {
                    verdicts.push(match replies.next() {
                        None => Verdict::Unreadable("reply"),
                        Some(None) => Verdict::NotRevoked,
                        Some(Some(value)) => match parse_entry(&value) {
                            Some(until) if until > now => Verdict::Revoked,
                            Some(_) => Verdict::NotRevoked,
                            None => Verdict::Unreadable(kind),
                        },
                    });
                }
            }
            verdicts.push(match replies.next() {
                None => Verdict::Unreadable("reply"),
                Some(None) => Verdict::NotRevoked,
                Some(Some(value)) => match parse_user(&value) {
                    // A token that does not say when it was issued could be
                    // from before: revoked.
                    Some((before, until))
                        if until > now && token.iat.is_none_or(|iat| iat < before) =>
                    {
                        Verdict::Revoked
                    }
                    Some(_) => Verdict::NotRevoked,
                    None => Verdict::Unreadable("sub"),
                },
            });

            // Any entry that revokes wins over one that cannot be read: the
            // answer is sure. Otherwise an unreadable one means "cannot tell".
            if verdicts.iter().any(|v| matches!(v, Verdict::Revoked)) {
                return Ok(true);
            }
            match verdicts.iter().find_map(|v| match v {
                Verdict::Unreadable(kind) => Some(*kind),
                _ => None,
            }) {
                Some("reply") => Err(RevocationError(
                    "Redis check: fewer replies than commands".to_owned(),
                )),
                Some("complete") => Err(RevocationError(
                    "the denylist in Redis is not complete (restarted empty?) until the issuer writes it again".to_owned(),
                )),
                Some(kind) => Err(RevocationError(format!(
                    "Redis check: a malformed `{kind}` denylist entry"
                ))),
                None => Ok(false),
            }
        })
    }
}

impl RecordRevocations for RedisRevocations {
    fn begin_complete(&self) -> BoxFuture<'_, Result<u64, RevocationError>> {
        Box::pin(async move {
            let mut bytes = [0u8; 8];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| RevocationError("random generator failed".to_owned()))?;
            let pass = u64::from_le_bytes(bytes);
            let mut conn = self.conn.clone();
            let mut set = ::redis::cmd("SET");
            set.arg(self.keys.pass()).arg(pass).arg("EX").arg(86_400);
            self.bounded("pass marker", set.query_async::<()>(&mut conn))
                .await?;
            Ok(pass)
        })
    }

    fn mark_complete(
        &self,
        pass: u64,
        valid_for: i64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        Box::pin(async move {
            let secs = u64::try_from(valid_for.max(1)).unwrap_or(1);
            let mut invocation = self.scripts.complete.key(self.keys.pass());
            invocation.key(self.keys.complete()).arg(pass).arg(secs);
            let mut conn = self.conn.clone();
            let marked: i64 = self
                .bounded("complete marker", invocation.invoke_async(&mut conn))
                .await?;
            if marked == 1 {
                Ok(())
            } else {
                Err(RevocationError(
                    "the denylist pass was overtaken (Redis restarted, or another writer began one); not marked complete".to_owned(),
                ))
            }
        })
    }

    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(self.record_entry("session revocation", self.keys.session(sid), until))
    }

    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(self.record_entry("token revocation", self.keys.token(jti), until))
    }

    fn revoke_user_before<'a>(
        &'a self,
        sub: &'a str,
        before: i64,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let op = "user revocation";
            if !needs_writing(op, until)? {
                return Ok(());
            }
            let mut invocation = self.scripts.user.key(self.keys.user(sub));
            invocation.arg(before).arg(until);
            let mut conn = self.conn.clone();
            self.bounded(op, invocation.invoke_async::<i64>(&mut conn))
                .await
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_percent_encoded_under_the_prefix() {
        let keys = DenylistKeys::new("t:");
        assert_eq!(keys.session("abc-_.~XYZ09"), "t:sid:abc-_.~XYZ09");
        assert_eq!(keys.session("a:b"), "t:sid:a%3Ab");
        assert_eq!(keys.session("a%3Ab"), "t:sid:a%253Ab");
        assert_eq!(keys.token("* ?"), "t:jti:%2A%20%3F");
        assert_eq!(keys.user("é"), "t:sub:%C3%A9");
        assert_eq!(keys.user(""), "t:sub:");
        assert_eq!(DenylistKeys::default().prefix(), "tokengate:");
        // The shared encoder is the same one.
        assert_eq!(redis_key_part("a:b"), "a%3Ab");
        assert_eq!(redis_key_part("2001:db8::"), "2001%3Adb8%3A%3A");
    }

    #[test]
    fn entry_values_parse_strictly() {
        assert_eq!(parse_entry("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_entry("1700000000 "), None);
        assert_eq!(parse_entry("x"), None);
        assert_eq!(parse_user("-5 1700000000"), Some((-5, 1_700_000_000)));
        assert_eq!(parse_user("1 2 3"), None);
        assert_eq!(parse_user("12"), None);
    }

    #[test]
    fn out_of_range_until_is_refused_and_past_epoch_is_a_no_op() {
        assert!(matches!(needs_writing("t", 0), Ok(false)));
        assert!(matches!(needs_writing("t", -1), Ok(false)));
        assert!(matches!(needs_writing("t", 1), Ok(true)));
        assert!(matches!(needs_writing("t", MAX_UNTIL), Ok(true)));
        assert!(needs_writing("t", MAX_UNTIL + 1).is_err());
    }
}
