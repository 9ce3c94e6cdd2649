//! The remote JWKS client: a [`KeySource`] fed by an issuer's published
//! keys. The rules it follows are on [`RemoteJwks`].

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use reqwest::header::{ACCEPT, AGE, CACHE_CONTROL, HeaderMap, HeaderName};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::keys::KeySource;
use super::revocation::BoxFuture;
use crate::jwk::{Jwk, JwkSet};
use crate::ring::KeyRing;

/// A document with more keys than this is refused: real key sets hold a
/// handful, and building a ring checks every pair of `kid`s.
const MAX_KEYS: usize = 256;

/// The shortest TTL and refetch interval that may be configured: below a
/// second, every request could become a fetch.
const MIN_SETTING: Duration = Duration::from_secs(1);

/// Why a remote key source could not be built or could not fetch. Fetch
/// errors are also logged; the key source keeps its last good keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The JWKS or issuer URL does not parse, has no host, uses a scheme
    /// other than `https`/`http`, carries credentials (they would end up in
    /// logs), or (for an issuer) has a query or fragment.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A plain `http://` URL to a host that is not loopback, without
    /// [`RemoteJwksBuilder::dangerous_allow_http`]: keys fetched in the clear
    /// could be replaced by anyone on the path.
    #[error(
        "refusing {0}: keys fetched over plain HTTP can be replaced in transit; use https://, a loopback host, or dangerous_allow_http()"
    )]
    InsecureUrl(String),
    /// A builder setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(&'static str),
    /// The HTTP client could not be built (TLS set-up, a `User-Agent` that
    /// is not a valid header value).
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    /// The request failed before an answer arrived: DNS, connection, TLS,
    /// or the connection broke while the body was read.
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL asked.
        url: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The request did not complete within the configured timeout.
    #[error("request to {url} timed out")]
    Timeout {
        /// The URL asked.
        url: String,
    },
    /// The server answered with a status other than `200 OK`, including a
    /// redirect (redirects are never followed).
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The response body was larger than the configured limit.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL asked.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not a JWK Set (or, in discovery, not a metadata document
    /// with `issuer` and `jwks_uri`).
    #[error("{url} did not send a valid document: {reason}")]
    InvalidDocument {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWK Set holds keys, none of which this library can verify with;
    /// the previous keys are kept. (An empty set is a withdrawal, honoured.)
    #[error("{url} holds no usable signature key")]
    NoUsableKeys {
        /// The URL asked.
        url: String,
    },
    /// The discovery document names another issuer than the configured one
    /// (OpenID Connect Discovery §4.3, RFC 8414 §3.3): its keys are not
    /// this issuer's.
    #[error("discovery document names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The `issuer` the document names (at most 200 characters of it).
        found: String,
    },
}

/// What a response's `Cache-Control` says about how long it stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    /// `max-age`, in seconds (the smallest, if it appears more than once).
    MaxAge(u64),
    /// `no-store` or `no-cache`.
    DoNotCache,
    /// No usable directive.
    Unspecified,
}

/// Reads `Cache-Control` values (RFC 9111 §5.2): comma-separated
/// directives, names case-insensitive. Unknown directives and malformed
/// `max-age` values are ignored; nothing here can panic on any input.
fn parse_cache_control<'a>(values: impl IntoIterator<Item = &'a str>) -> Freshness {
    let mut max_age: Option<u64> = None;
    for directive in values.into_iter().flat_map(|v| v.split(',')) {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Freshness::DoNotCache;
        }
        if name.eq_ignore_ascii_case("max-age")
            && let Some(secs) = value.and_then(delta_seconds)
        {
            // Conflicting values: the shorter one is the safe reading.
            max_age = Some(max_age.map_or(secs, |m| m.min(secs)));
        }
    }
    max_age.map_or(Freshness::Unspecified, Freshness::MaxAge)
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; a value too large to
/// hold saturates, as the RFC asks. The quoted form is tolerated (§5.2).
fn delta_seconds(value: &str) -> Option<u64> {
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only all-digit text reaches here, so the one way to fail is overflow.
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// The cache settings, checked and ordered: `min_ttl <= default_ttl <= max_ttl`.
#[derive(Debug, Clone, Copy)]
struct Ttl {
    min: Duration,
    max: Duration,
    default: Duration,
}

impl Ttl {
    /// How long a response stays fresh: `max-age` minus the `Age` it already
    /// has (a CDN may have held it), within the bounds.
    fn of(&self, freshness: Freshness, age: u64) -> Duration {
        let ttl = match freshness {
            Freshness::MaxAge(secs) => Duration::from_secs(secs.saturating_sub(age)),
            Freshness::DoNotCache => self.min,
            Freshness::Unspecified => self.default,
        };
        // Not `clamp`: it panics when min > max; here that cannot happen,
        // and this form cannot panic even if it did.
        ttl.max(self.min).min(self.max)
    }

    /// When to retry after `failures` failed fetches in a row: from the
    /// minimum TTL, doubling, up to the default TTL (an issuer that is down
    /// for hours is not asked every 30 s).
    fn retry_after(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.min
            .saturating_mul(factor)
            .min(self.default.max(self.min))
    }
}

/// Refresh a little before the keys go stale, so that the fetch (up to the
/// timeout) finishes while they are still fresh: 10 % early, at most a minute.
fn refresh_delay(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 10).min(Duration::from_secs(60)))
}

/// `now + d`, without the panic of `Instant + Duration` on overflow.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Whether a URL's host is loopback: `127.0.0.0/8`, `::1` (also as
/// `::ffff:127.x.y.z`) or `localhost`. Plain HTTP there never leaves the host.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

/// Parses a configured or discovered URL and applies the transport rules.
fn check_url(text: &str, allow_http: bool) -> Result<Url, JwksError> {
    // The parse error is shown, not the text: it may hold credentials.
    let url = Url::parse(text.trim()).map_err(|e| JwksError::InvalidUrl(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(JwksError::InvalidUrl(
            "credentials in the URL are refused (they would end up in logs)".into(),
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback(&url) => {}
        "http" => return Err(JwksError::InsecureUrl(url.to_string())),
        other => {
            return Err(JwksError::InvalidUrl(format!(
                "scheme {other:?}: only https (or http to a loopback host) is used"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(JwksError::InvalidUrl("no host".into()));
    }
    Ok(url)
}

/// The two metadata URLs of an issuer: OpenID Connect Discovery §4.1
/// appends `/.well-known/openid-configuration` to the issuer's path; RFC
/// 8414 §3.1 inserts `/.well-known/oauth-authorization-server` before it.
fn discovery_urls(issuer: &Url) -> (Url, Url) {
    let path = issuer.path().trim_end_matches('/');
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut oauth = issuer.clone();
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    (openid, oauth)
}

/// Where the keys come from.
#[derive(Debug)]
enum Source {
    /// A configured JWKS URL.
    Jwks(Url),
    /// An issuer, whose discovery document names the JWKS URL.
    Issuer {
        /// As configured: the discovery document must name exactly this.
        issuer: String,
        openid: Url,
        oauth: Url,
    },
}

/// Settings shared by the builder and the client.
#[derive(Debug, Clone)]
struct Settings {
    min_refetch_interval: Duration,
    timeout: Duration,
    max_response_bytes: usize,
    min_ttl: Duration,
    max_ttl: Duration,
    default_ttl: Duration,
    user_agent: String,
    allow_http: bool,
}

/// Builds a [`RemoteJwks`]; every setting has a safe default.
#[derive(Debug, Clone)]
pub struct RemoteJwksBuilder {
    source: SourceText,
    settings: Settings,
}

#[derive(Debug, Clone)]
enum SourceText {
    Jwks(String),
    Issuer(String),
}

impl RemoteJwksBuilder {
    fn new(source: SourceText) -> Self {
        RemoteJwksBuilder {
            source,
            settings: Settings {
                min_refetch_interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                max_response_bytes: 1024 * 1024,
                min_ttl: Duration::from_secs(30),
                max_ttl: Duration::from_secs(24 * 3600),
                default_ttl: Duration::from_secs(5 * 60),
                user_agent: concat!("tokengate/", env!("CARGO_PKG_VERSION"), " (jwks)").to_owned(),
                allow_http: false,
            },
        }
    }

    /// The shortest time between two fetches triggered by tokens naming an
    /// unknown `kid`; at least 1 s. Default: 10 s. Scheduled refreshes and
    /// [`RemoteJwks::fetch_now`] do not count against it.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.settings.min_refetch_interval = interval;
        self
    }

    /// The limit on one request, from connecting to the last byte of the
    /// body. Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The largest response body accepted. Default: 1 MiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_response_bytes = bytes;
        self
    }

    /// The shortest time keys are cached, whatever `Cache-Control` says
    /// (`no-store`/`no-cache` get this); at least 1 s. Default: 30 s.
    pub fn min_ttl(mut self, ttl: Duration) -> Self {
        self.settings.min_ttl = ttl;
        self
    }

    /// The longest time keys are cached before a refresh, whatever
    /// `max-age` says. Default: 24 h.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.settings.max_ttl = ttl;
        self
    }

    /// How long keys are cached when the response has no `max-age`; kept
    /// within `[min_ttl, max_ttl]`. Default: 5 min.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// The `User-Agent` sent. Default: `tokengate/<version> (jwks)`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.settings.user_agent = user_agent.into();
        self
    }

    /// Allows plain `http://` URLs to any host, for the JWKS, the issuer and
    /// a discovered `jwks_uri`. Dangerous: whoever can see or alter the
    /// traffic can substitute their own keys and sign any token. Loopback
    /// hosts are allowed without it.
    pub fn dangerous_allow_http(mut self) -> Self {
        self.settings.allow_http = true;
        self
    }

    /// The key source. Checks the URL and the settings; fetches nothing:
    /// the first fetch is [`RemoteJwks::fetch_now`] or the first token
    /// verified. For an issuer, discovery happens at that first fetch.
    pub fn build(self) -> Result<RemoteJwks, JwksError> {
        let settings = self.settings;
        if settings.min_refetch_interval < MIN_SETTING {
            return Err(JwksError::InvalidSetting(
                "min_refetch_interval must be at least 1 s",
            ));
        }
        if settings.min_ttl < MIN_SETTING {
            return Err(JwksError::InvalidSetting("min_ttl must be at least 1 s"));
        }
        if settings.max_ttl < settings.min_ttl {
            return Err(JwksError::InvalidSetting("max_ttl is shorter than min_ttl"));
        }
        if settings.timeout.is_zero() {
            return Err(JwksError::InvalidSetting("timeout must be positive"));
        }
        if settings.max_response_bytes == 0 {
            return Err(JwksError::InvalidSetting(
                "max_response_bytes must be positive",
            ));
        }
        let source = match &self.source {
            SourceText::Jwks(url) => Source::Jwks(check_url(url, settings.allow_http)?),
            SourceText::Issuer(issuer) => {
                let url = check_url(issuer, settings.allow_http)?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(JwksError::InvalidUrl(
                        "an issuer has no query or fragment (RFC 8414 §2)".into(),
                    ));
                }
                let (openid, oauth) = discovery_urls(&url);
                Source::Issuer {
                    issuer: issuer.trim().to_owned(),
                    openid,
                    oauth,
                }
            }
        };
        let client = reqwest::Client::builder()
            // A redirect could lead to another host or to plain HTTP; the
            // configured URL is the only one trusted.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(settings.user_agent.as_str())
            .build()
            .map_err(|e| JwksError::Client(error_chain(&e)))?;
        let ttl = Ttl {
            min: settings.min_ttl,
            max: settings.max_ttl,
            default: settings
                .default_ttl
                .max(settings.min_ttl)
                .min(settings.max_ttl),
        };
        let jwks_url = match &source {
            Source::Jwks(url) => Some(url.clone()),
            Source::Issuer { .. } => None,
        };
        Ok(RemoteJwks {
            inner: Arc::new(Inner {
                source,
                client,
                ttl,
                settings,
                ring: RwLock::new(Arc::new(KeyRing::new())),
                fetch: tokio::sync::Mutex::new(FetchState {
                    jwks_url,
                    last_document: None,
                    last_kid_fetch: None,
                    refresh_at: None,
                    failures: 0,
                }),
                wake: Arc::new(Notify::new()),
                refresher: Mutex::new(None),
            }),
        })
    }
}

/// A [`KeySource`] that fetches a remote JWK Set: from a configured `jwks_uri`,
/// or found through the issuer's discovery document.
///
/// Cheap to clone: clones share the keys, the cache and the background
/// refresh.
///
/// What it guarantees, and why:
///
/// * **The URL is configuration only.** A token never chooses where keys
///   come from (`jku`, `x5u` and `x5c` are never read): a token that could
///   name its own key set would verify itself.
/// * **HTTPS only**, unless the host is loopback (`127.0.0.0/8`, `::1`,
///   `localhost`) or the caller says [`RemoteJwksBuilder::dangerous_allow_http`]:
///   keys fetched in the clear can be replaced in transit. Redirects are not
///   followed, so the answer always comes from the configured host.
/// * **Bounded**: a response is read chunk by chunk and refused past
///   [`RemoteJwksBuilder::max_response_bytes`] (1 MiB), every request has a
///   timeout (5 s), and a document of more than 256 keys is refused.
/// * **Cached** for the document's `Cache-Control: max-age` (minus `Age`),
///   clamped to `[min_ttl, max_ttl]` (30 s to 24 h; 5 min without the header;
///   the minimum for `no-store`/`no-cache`), and refreshed in the background
///   shortly before that runs out, by a tokio task that holds only a `Weak`
///   reference and stops when the last clone of the [`RemoteJwks`] is dropped.
/// * **Rate-limited on unknown `kid`s**: a token naming a key the set lacks
///   triggers at most one fetch per [`RemoteJwksBuilder::min_refetch_interval`]
///   (10 s), however many requests carry such tokens. Fetches are
///   single-flight: concurrent callers wait for the fetch in progress instead
///   of starting their own. Scheduled refreshes and [`RemoteJwks::fetch_now`]
///   do not use up the interval; a first verification with no keys loaded
///   does (it is an unknown `kid`), so warm the cache with `fetch_now` at
///   start-up.
/// * **Fail-static**: when the issuer is down or answers garbage, the last
///   good key set keeps being served (with a `tracing` warning naming the
///   cause). A fetch that yields no usable key keeps the previous set too.
/// * **Per-key tolerance**: an entry the library cannot use (unknown `kty` or
///   `alg`, `use: enc`, a weak or malformed key, a duplicated `kid`) is
///   skipped with a warning naming its `kid`; so are symmetric keys and keys
///   with private members, which have no place in a published document.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tokengate::guard::{Guard, RemoteJwks};
/// use tokengate::VerifyPolicy;
///
/// let keys = RemoteJwks::from_issuer("https://auth.example").await?;
/// let policy = VerifyPolicy::builder()
///     .issuer("https://auth.example")
///     .audience("api")
///     .build()?;
/// let guard = Guard::builder(keys, policy).build();
/// # let _ = guard;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    client: reqwest::Client,
    settings: Settings,
    ttl: Ttl,
    /// The keys served; replaced (never mutated) on a successful fetch.
    ring: RwLock<Arc<KeyRing>>,
    /// Held for the whole of a fetch: this is what makes fetches single-flight.
    fetch: tokio::sync::Mutex<FetchState>,
    /// Wakes the refresher when a fetch moved the schedule. Shared with the
    /// task on its own, so that the task keeps nothing of `Inner` alive.
    wake: Arc<Notify>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

struct FetchState {
    /// The JWKS URL: configured, or found by discovery (then kept).
    jwks_url: Option<Url>,
    /// The entries of the last document that became the ring: an unchanged
    /// document keeps the same ring (and the guard's cache).
    last_document: Option<Vec<Value>>,
    /// When a token last caused a fetch, for the refetch limit.
    last_kid_fetch: Option<Instant>,
    /// When the background task should fetch next.
    refresh_at: Option<Instant>,
    /// Failed fetches in a row, for the retry back-off.
    failures: u32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The task holds only a `Weak` and would end at its next wake-up;
        // aborting it ends it now.
        let slot = self
            .refresher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = slot.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("source", &self.inner.source)
            .field("keys", &self.inner.current())
            .finish_non_exhaustive()
    }
}

/// Why a fetch happened, for the logs.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Requested,
    UnknownKid,
    Scheduled,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::UnknownKid => "unknown_kid",
            Reason::Scheduled => "scheduled",
        }
    }
}

impl RemoteJwks {
    /// A key source for the JWK Set at `jwks_url` (an `https://` URL, or
    /// `http://` to a loopback host).
    pub fn builder(jwks_url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(SourceText::Jwks(jwks_url.into()))
    }

    /// A key source for the issuer `issuer`, whose JWKS URL is read from its
    /// discovery document: `/.well-known/openid-configuration`, or, when
    /// that answers 404, RFC 8414's `/.well-known/oauth-authorization-server`
    /// (all the tokengate service serves). The document must name exactly
    /// `issuer` (compare with your policy's issuer), or it is refused.
    pub fn issuer_builder(issuer: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder::new(SourceText::Issuer(issuer.into()))
    }

    /// A key source for `issuer` with the default settings, after
    /// discovery and a first fetch: fails fast when either does.
    pub async fn from_issuer(issuer: impl Into<String>) -> Result<Self, JwksError> {
        let jwks = Self::issuer_builder(issuer).build()?;
        jwks.fetch_now().await?;
        Ok(jwks)
    }

    /// Fetches the key set now (after a fetch in progress, if any), and
    /// returns the keys served afterwards. Await it at start-up to fail fast
    /// or to warm the cache; without it, the first token verified triggers
    /// the fetch. Not subject to the refetch limit. On error the previous
    /// keys stay in use.
    pub async fn fetch_now(&self) -> Result<Arc<KeyRing>, JwksError> {
        let result = {
            let mut state = self.inner.fetch.lock().await;
            self.inner.fetch_locked(&mut state, Reason::Requested).await
        };
        self.start_refresher();
        result
    }

    /// Restarts a background refresh that ran and ended (the runtime it ran
    /// on, say a start-up one, was shut down): without it, a key the issuer
    /// withdrew would keep verifying while tokens name only known kids.
    /// Called on every request, so it never waits: a busy lock means
    /// someone else is looking after the task.
    fn revive_refresher(&self) {
        let dead = match self.inner.refresher.try_lock() {
            Ok(slot) => slot.as_ref().is_some_and(JoinHandle::is_finished),
            Err(_) => false,
        };
        if dead {
            self.start_refresher();
        }
    }

    /// Starts the background refresh, on the current tokio runtime, unless it
    /// runs. Started at the first fetch rather than at `build` so that `build`
    /// needs no runtime; started again if it ended (the runtime it ran on, say
    /// a start-up one, was shut down).
    fn start_refresher(&self) {
        let mut slot = self
            .inner
            .refresher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = refresh_loop(Arc::downgrade(&self.inner), self.inner.wake.clone());
                *slot = Some(runtime.spawn(task));
            }
            Err(_) => tracing::warn!(
                event = "jwks_no_runtime",
                "no tokio runtime: the JWKS will not be refreshed in the background"
            ),
        }
    }
}

impl Inner {
    fn current(&self) -> Arc<KeyRing> {
        // A poisoned lock still holds a whole `Arc`: it is only ever assigned.
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, ring: Arc<KeyRing>) {
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
    }

    /// One fetch, with the fetch lock held: updates the keys on success,
    /// logs a failure, and sets the next scheduled refresh either way.
    async fn fetch_locked(
        &self,
        state: &mut FetchState,
        reason: Reason,
    ) -> Result<Arc<KeyRing>, JwksError> {
        let result = self.try_fetch(state).await;
        let now = Instant::now();
        match &result {
            Ok((_, ttl)) => {
                state.failures = 0;
                state.refresh_at = Some(later(now, refresh_delay(*ttl)));
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let retry = self.ttl.retry_after(state.failures);
                state.refresh_at = Some(later(now, retry));
                tracing::warn!(
                    event = "jwks_fetch_failed",
                    reason = reason.as_str(),
                    error = %error,
                    kept_keys = self.current().len(),
                    retry_in_secs = retry.as_secs(),
                    "JWKS fetch failed; keeping the last good keys"
                );
            }
        }
        // The refresher may be sleeping towards an older deadline.
        self.wake.notify_one();
        result.map(|(ring, _)| ring)
    }

    async fn try_fetch(
        &self,
        state: &mut FetchState,
    ) -> Result<(Arc<KeyRing>, Duration), JwksError> {
        let url = match &state.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = self.discover().await?;
                state.jwks_url = Some(url.clone());
                url
            }
        };
        let (body, headers) = self
            .get(&url, "application/jwk-set+json, application/json")
            .await?;
        let ttl = self.ttl.of(
            parse_cache_control(
                header_texts(&headers, CACHE_CONTROL)
                    .iter()
                    .map(String::as_str),
            ),
            header_texts(&headers, AGE)
                .first()
                .and_then(|age| delta_seconds(age.trim()))
                .unwrap_or(0),
        );
        let entries = parse_jwks(&body).map_err(|reason| JwksError::InvalidDocument {
            url: url.to_string(),
            reason,
        })?;
        if state.last_document.as_ref() == Some(&entries) {
            tracing::debug!(event = "jwks_unchanged", url = %url, ttl_secs = ttl.as_secs(), "JWKS unchanged");
            return Ok((self.current(), ttl));
        }
        let ring = ring_from_entries(&entries);
        // An issuer that publishes `{"keys": []}` withdraws every key (a
        // compromise): honoured. Keys that are there but none usable by us
        // (an algorithm we lack) are more likely our gap than a withdrawal:
        // the previous keys stay.
        if ring.is_empty() && !entries.is_empty() {
            return Err(JwksError::NoUsableKeys {
                url: url.to_string(),
            });
        }
        if ring.is_empty() {
            tracing::warn!(event = "jwks_keys_withdrawn", url = %url, "the issuer publishes no keys: every token is refused until it does");
        }
        let ring = Arc::new(ring);
        self.replace(ring.clone());
        state.last_document = Some(entries);
        tracing::info!(
            event = "jwks_keys_updated",
            url = %url,
            kids = ?ring.kids().collect::<Vec<_>>(),
            ttl_secs = ttl.as_secs(),
            "JWKS keys loaded"
        );
        Ok((ring, ttl))
    }

    /// Finds the JWKS URL in the issuer's metadata.
    async fn discover(&self) -> Result<Url, JwksError> {
        let Source::Issuer {
            issuer,
            openid,
            oauth,
        } = &self.source
        else {
            return Err(JwksError::InvalidUrl("no JWKS URL configured".into()));
        };
        let (url, body) = match self.get(openid, "application/json").await {
            Ok((body, _)) => (openid, body),
            // Only "there is no such document" moves on to RFC 8414; any
            // other failure is reported as it is.
            Err(JwksError::Status { status: 404, .. }) => {
                tracing::debug!(event = "jwks_discovery_fallback", url = %oauth, "no openid-configuration; trying RFC 8414 metadata");
                (oauth, self.get(oauth, "application/json").await?.0)
            }
            Err(e) => return Err(e),
        };
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|e| JwksError::InvalidDocument {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        // Exact string comparison, no normalisation: a document that names
        // another issuer (even one differing only by a trailing slash) is
        // refused, so one issuer cannot pass off its keys as another's.
        if metadata.issuer != *issuer {
            return Err(JwksError::IssuerMismatch {
                expected: issuer.clone(),
                found: metadata.issuer.chars().take(200).collect(),
            });
        }
        let jwks_url = check_url(&metadata.jwks_uri, self.settings.allow_http)?;
        tracing::info!(event = "jwks_discovered", issuer = %issuer, jwks_uri = %jwks_url, "JWKS URL discovered");
        Ok(jwks_url)
    }

    /// A GET whose body is read up to the size limit.
    async fn get(
        &self,
        url: &Url,
        accept: &'static str,
    ) -> Result<(Vec<u8>, HeaderMap), JwksError> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                JwksError::Timeout {
                    url: url.to_string(),
                }
            } else {
                JwksError::Request {
                    url: url.to_string(),
                    reason: error_chain(&e),
                }
            }
        };
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, accept)
            .send()
            .await
            .map_err(failed)?;
        if response.status() != StatusCode::OK {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let limit = self.settings.max_response_bytes;
        let too_large = || JwksError::TooLarge {
            url: url.to_string(),
            limit,
        };
        // A declared length over the limit is refused before reading; a
        // missing or false one is caught while reading.
        if response
            .content_length()
            .is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, headers))
    }
}

/// A header's values as text; bytes outside ASCII become U+FFFD (they mean
/// nothing to the parsers, which must still see the rest).
fn header_texts(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The entries of a JWK Set, each still raw JSON: one malformed entry must
/// not cost the others.
fn parse_jwks(body: &[u8]) -> Result<Vec<Value>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if set.keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys; at most {MAX_KEYS} are accepted",
            set.keys.len()
        ));
    }
    Ok(set.keys)
}

/// The usable keys of a document; every skipped entry is logged with its
/// `kid`.
fn ring_from_entries(entries: &[Value]) -> KeyRing {
    let mut usable = Vec::with_capacity(entries.len());
    for entry in entries {
        let kid = entry.get("kid").and_then(Value::as_str);
        let skip = |why: &dyn fmt::Display| {
            tracing::warn!(event = "jwks_key_skipped", kid = ?kid, reason = %why, "JWKS key skipped");
        };
        match Jwk::deserialize(entry) {
            Err(e) => skip(&e),
            // A secret in a published document is known to everyone who
            // fetched it: tokens "signed" with it prove nothing.
            Ok(jwk) if jwk.kty == "oct" => skip(&"symmetric key in a published JWKS"),
            // Same for a private key: whoever read it can sign.
            Ok(jwk) if jwk.is_private() => skip(&"private key material in a published JWKS"),
            Ok(jwk) => usable.push(jwk),
        }
    }
    let (ring, skipped) = KeyRing::from_jwks(&JwkSet { keys: usable });
    for key in skipped {
        tracing::warn!(event = "jwks_key_skipped", kid = ?key.kid, reason = %key.error, "JWKS key skipped");
    }
    ring
}

/// The parsers of a fetched document, for the `jwks_document` fuzz target
/// only (feature `fuzzing`; not API): the steps [`RemoteJwks`] runs on a
/// response, minus the network.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The freshness the `Cache-Control` and `Age` values give under the
    /// default bounds, and the key ring the body yields (or why none).
    pub fn read_document(
        cache_control: &[&str],
        age: &str,
        body: &[u8],
    ) -> (Duration, Result<KeyRing, String>) {
        let defaults = RemoteJwksBuilder::new(SourceText::Jwks(String::new())).settings;
        let ttl = Ttl {
            min: defaults.min_ttl,
            max: defaults.max_ttl,
            default: defaults.default_ttl,
        };
        let ttl = ttl.of(
            parse_cache_control(cache_control.iter().copied()),
            delta_seconds(age.trim()).unwrap_or(0),
        );
        (
            ttl,
            parse_jwks(body).map(|entries| ring_from_entries(&entries)),
        )
    }
}

/// An error and its causes on one line: reqwest's own message alone is
/// often just "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The background refresh: sleeps until the scheduled time (or until a
/// fetch moves it), then fetches. Holds the client only while fetching.
async fn refresh_loop(client: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let deadline = {
            let Some(inner) = client.upgrade() else {
                return;
            };
            let state = inner.fetch.lock().await;
            state
                .refresh_at
                .unwrap_or_else(|| later(Instant::now(), inner.ttl.default))
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            // The schedule moved: read it again.
            () = wake.notified() => continue,
        }
        let Some(inner) = client.upgrade() else {
            return;
        };
        let mut state = inner.fetch.lock().await;
        // Another fetch may have happened while this one waited for the lock.
        if state.refresh_at.is_some_and(|at| at > Instant::now()) {
            continue;
        }
        // A failure is logged and rescheduled inside.
        let _ = inner.fetch_locked(&mut state, Reason::Scheduled).await;
    }
}

impl KeySource for RemoteJwks {
    fn keys(&self) -> Arc<KeyRing> {
        self.revive_refresher();
        self.inner.current()
    }

    fn unknown_kid<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, Option<Arc<KeyRing>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let before = inner.current();
            if before.get(kid).is_some() {
                return Some(before);
            }
            // Waiting for the lock is waiting for the fetch in progress, if
            // any: it may bring this kid, and it counts as this caller's fetch.
            let mut state = inner.fetch.lock().await;
            let now = Instant::now();
            let limited = state.last_kid_fetch.is_some_and(|at| {
                now.saturating_duration_since(at) < inner.settings.min_refetch_interval
            });
            if inner.current().get(kid).is_none() {
                if limited {
                    tracing::debug!(event = "jwks_refetch_limited", kid = ?kid, "unknown kid; refetch limit reached");
                } else {
                    state.last_kid_fetch = Some(now);
                    tracing::info!(event = "jwks_refetch", kid = ?kid, "token names an unknown kid; fetching the JWKS");
                    // A failure is logged inside; the old keys stay.
                    let _ = inner.fetch_locked(&mut state, Reason::UnknownKid).await;
                }
            }
            drop(state);
            self.start_refresher();
            let after = inner.current();
            // The guard checks the token against what is returned. A ring
            // without the kid is returned only when there was none before
            // (the first fetch of a cold start): the guard then answers
            // "invalid token" rather than "no keys loaded yet".
            (after.get(kid).is_some() || (before.is_empty() && !after.is_empty())).then_some(after)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ttl() -> Ttl {
        Ttl {
            min: Duration::from_secs(30),
            max: Duration::from_secs(86_400),
            default: Duration::from_secs(300),
        }
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(parse_cache_control(["max-age=600"]), Freshness::MaxAge(600));
        assert_eq!(
            parse_cache_control(["public, Max-Age = 60 , must-revalidate"]),
            Freshness::MaxAge(60)
        );
        assert_eq!(
            parse_cache_control(["max-age=\"120\""]),
            Freshness::MaxAge(120)
        );
        // Two values, or two headers: the shorter wins.
        assert_eq!(
            parse_cache_control(["max-age=600", "max-age=60"]),
            Freshness::MaxAge(60)
        );
        assert_eq!(parse_cache_control(["max-age=0"]), Freshness::MaxAge(0));
    }

    #[test]
    fn cache_control_no_store_and_no_cache() {
        assert_eq!(parse_cache_control(["no-store"]), Freshness::DoNotCache);
        assert_eq!(
            parse_cache_control(["max-age=3600, No-Cache"]),
            Freshness::DoNotCache
        );
        assert_eq!(
            parse_cache_control(["no-cache=\"Set-Cookie\""]),
            Freshness::DoNotCache
        );
    }

    #[test]
    fn cache_control_empty_and_malformed() {
        assert_eq!(parse_cache_control([""]), Freshness::Unspecified);
        assert_eq!(
            parse_cache_control(std::iter::empty()),
            Freshness::Unspecified
        );
        assert_eq!(parse_cache_control([",,, ,"]), Freshness::Unspecified);
        for bad in [
            "max-age",
            "max-age=",
            "max-age=\"",
            "max-age=\"\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=+5",
            "max-age=5s",
            "max-age=0x10",
            "=",
            "max-age==5",
        ] {
            assert_eq!(parse_cache_control([bad]), Freshness::Unspecified, "{bad}");
        }
        // A malformed value does not hide a good one.
        assert_eq!(
            parse_cache_control(["max-age=abc, max-age=90"]),
            Freshness::MaxAge(90)
        );
    }

    #[test]
    fn cache_control_non_ascii() {
        assert_eq!(
            parse_cache_control(["max-age=６０"]),
            Freshness::Unspecified
        );
        assert_eq!(parse_cache_control(["mäx-age=60"]), Freshness::Unspecified);
        assert_eq!(
            parse_cache_control(["ünïcødé, max-age=45, ☃"]),
            Freshness::MaxAge(45)
        );
        // Bytes that are not UTF-8, as a header may carry, read lossily.
        let lossy = String::from_utf8_lossy(b"max-age=7\xff, \xfe\xfd");
        assert_eq!(
            parse_cache_control([lossy.as_ref()]),
            Freshness::Unspecified
        );
        let lossy = String::from_utf8_lossy(b"\xffjunk, max-age=7");
        assert_eq!(parse_cache_control([lossy.as_ref()]), Freshness::MaxAge(7));
    }

    #[test]
    fn cache_control_huge_values() {
        // Past u64: saturates (RFC 9111 §1.2.2), then the TTL clamps it.
        let huge = format!("max-age={}", "9".repeat(10_000));
        assert_eq!(
            parse_cache_control([huge.as_str()]),
            Freshness::MaxAge(u64::MAX)
        );
        assert_eq!(
            ttl().of(Freshness::MaxAge(u64::MAX), 0),
            Duration::from_secs(86_400)
        );
        let many = "max-age=5,".repeat(100_000);
        assert_eq!(parse_cache_control([many.as_str()]), Freshness::MaxAge(5));
    }

    #[test]
    fn ttl_is_clamped_and_age_subtracted() {
        let t = ttl();
        assert_eq!(t.of(Freshness::Unspecified, 0), Duration::from_secs(300));
        assert_eq!(t.of(Freshness::DoNotCache, 0), Duration::from_secs(30));
        assert_eq!(t.of(Freshness::MaxAge(1), 0), Duration::from_secs(30));
        assert_eq!(t.of(Freshness::MaxAge(600), 0), Duration::from_secs(600));
        assert_eq!(t.of(Freshness::MaxAge(600), 500), Duration::from_secs(100));
        assert_eq!(
            t.of(Freshness::MaxAge(600), 10_000),
            Duration::from_secs(30)
        );
        assert_eq!(
            t.of(Freshness::MaxAge(10_000_000), 0),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn refresh_comes_before_expiry_and_retries_back_off() {
        assert_eq!(
            refresh_delay(Duration::from_secs(30)),
            Duration::from_secs(27)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(86_400)),
            Duration::from_secs(86_340)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(1)),
            Duration::from_millis(900)
        );
        let t = ttl();
        assert_eq!(t.retry_after(1), Duration::from_secs(30));
        assert_eq!(t.retry_after(2), Duration::from_secs(60));
        assert_eq!(t.retry_after(4), Duration::from_secs(240));
        assert_eq!(t.retry_after(5), Duration::from_secs(300));
        assert_eq!(t.retry_after(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1/jwks",
            "http://127.8.9.10:8080/jwks",
            "http://[::1]:3000/jwks",
            "http://[::ffff:127.0.0.1]/jwks",
            "http://localhost/jwks",
            "http://LOCALHOST:1/jwks",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for url in [
            "http://example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://[::2]/jwks",
            "http://localhost.example.com/jwks",
            "http://127.0.0.1.nip.io/jwks",
        ] {
            assert!(
                matches!(check_url(url, false), Err(JwksError::InsecureUrl(_))),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn urls_refused() {
        for url in [
            "",
            "not a url",
            "ftp://example.com/jwks",
            "file:///etc/passwd",
            "https://user:pass@example.com/jwks",
            "https://token@example.com/jwks",
        ] {
            assert!(
                matches!(check_url(url, true), Err(JwksError::InvalidUrl(_))),
                "{url}"
            );
        }
        // The parse error never echoes the URL, which may hold a secret.
        let err = check_url("https://user:s3cret@", false).map(|_| ());
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[test]
    fn discovery_urls_follow_both_specs() {
        let (openid, oauth) = discovery_urls(&Url::parse("https://auth.example").unwrap());
        assert_eq!(
            openid.as_str(),
            "https://auth.example/.well-known/openid-configuration"
        );
        assert_eq!(
            oauth.as_str(),
            "https://auth.example/.well-known/oauth-authorization-server"
        );
        let (openid, oauth) =
            discovery_urls(&Url::parse("https://auth.example/tenant/a/").unwrap());
        assert_eq!(
            openid.as_str(),
            "https://auth.example/tenant/a/.well-known/openid-configuration"
        );
        assert_eq!(
            oauth.as_str(),
            "https://auth.example/.well-known/oauth-authorization-server/tenant/a"
        );
    }

    #[test]
    fn issuer_with_query_refused() {
        for issuer in ["https://auth.example/?x=1", "https://auth.example/#f"] {
            assert!(matches!(
                RemoteJwks::issuer_builder(issuer).build(),
                Err(JwksError::InvalidUrl(_))
            ));
        }
    }

    #[test]
    fn settings_checked() {
        let b = || RemoteJwks::builder("https://auth.example/jwks");
        assert!(b().build().is_ok());
        assert!(b().min_refetch_interval(Duration::ZERO).build().is_err());
        assert!(b().min_ttl(Duration::from_millis(10)).build().is_err());
        assert!(
            b().min_ttl(Duration::from_secs(60))
                .max_ttl(Duration::from_secs(59))
                .build()
                .is_err()
        );
        assert!(b().timeout(Duration::ZERO).build().is_err());
        assert!(b().max_response_bytes(0).build().is_err());
        assert!(matches!(
            b().user_agent("bad\nagent").build(),
            Err(JwksError::Client(_))
        ));
    }

    #[test]
    fn documents() {
        assert!(parse_jwks(br#"{"keys":[]}"#).is_ok_and(|k| k.is_empty()));
        assert!(parse_jwks(b"").is_err());
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(br#"{"keys":{}}"#).is_err());
        let many = format!(r#"{{"keys":[{}]}}"#, vec!["{}"; MAX_KEYS + 1].join(","));
        assert!(parse_jwks(many.as_bytes()).is_err());
        // One malformed entry costs only itself.
        let entries =
            parse_jwks(br#"{"keys":[{"kty":5,"kid":"x"},{"kty":"oct","k":"AAAA"}]}"#).unwrap();
        assert!(ring_from_entries(&entries).is_empty());
    }

    proptest! {
        #[test]
        fn cache_control_never_panics(values in proptest::collection::vec(".*", 0..4)) {
            let freshness = parse_cache_control(values.iter().map(String::as_str));
            let _ = ttl().of(freshness, 0);
        }

        #[test]
        fn cache_control_never_panics_on_directive_soup(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("max-age".to_owned()), Just("=".to_owned()), Just(",".to_owned()),
                    Just("\"".to_owned()), Just(" ".to_owned()), Just("no-cache".to_owned()),
                    "[0-9]{1,30}", "\\PC{0,3}",
                ],
                0..20,
            )
        ) {
            let value = parts.concat();
            let _ = parse_cache_control([value.as_str()]);
            let _ = delta_seconds(&value);
        }

        #[test]
        fn max_age_digits_round_trip(secs in any::<u64>()) {
            let value = format!("max-age={secs}");
            prop_assert_eq!(parse_cache_control([value.as_str()]), Freshness::MaxAge(secs));
        }
    }
}
