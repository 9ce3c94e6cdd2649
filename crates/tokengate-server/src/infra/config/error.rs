//! Why a configuration is refused: one variant per cause, each printed as
//! the one line the CLI shows before exiting with status 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use humantime::{FormattedDuration, format_duration};

use super::{KEYS, Source};

/// A configuration problem, as the one line printed before refusing to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file exists (or was named) but cannot be read.
    #[error("configuration: cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The configuration file is not TOML. Only where and what: the
    /// parser's own rendering quotes the line, which may hold a secret.
    #[error("configuration: {}: line {line}, column {column}: {message}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column (in characters) of the fault.
        column: usize,
        /// The parser's complaint, without the quoted source.
        message: String,
    },
    /// The configuration file names a setting that does not exist (a typo
    /// would otherwise be silently ignored).
    #[error(
        "configuration: {}: unknown setting {key:?} (known: {})",
        .path.display(),
        KEYS.join(", ")
    )]
    UnknownSetting {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
    },
    /// The configuration file gives a setting a TOML type no setting takes.
    #[error(
        "configuration: {}: {key} must be a string, number, boolean or list of strings, not {found}",
        .path.display()
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The setting.
        key: String,
        /// The TOML type found, e.g. `float` or `table`.
        found: &'static str,
    },
    /// A setting with neither a default nor a value anywhere: only reachable
    /// if the table declares a required setting without a default.
    #[error("configuration: {key} is not set")]
    NotSet {
        /// The setting.
        key: &'static str,
    },
    /// A value that does not parse as its setting's type.
    #[error("configuration: {key} = {value:?} (from {origin}) is not {expected}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// The text as given (never a secret: secrets are taken verbatim).
        value: String,
        /// The layer the text came from.
        origin: Source,
        /// What the setting takes, e.g. "a duration like 30s, 15m, 14d".
        expected: &'static str,
    },
    /// `database_url` names a database we do not speak.
    #[error("configuration: database_url must start with sqlite:, postgres:// or postgresql://")]
    UnsupportedDatabase,
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("configuration: TLS needs both tls_cert and tls_key")]
    HalfTls,
    /// HS256 without a shared secret.
    #[error(
        "configuration: signing_alg = HS256 needs hs_secret (make one with `tokengate secret generate`)"
    )]
    MissingHsSecret,
    /// An HS256 secret that is too short or was chosen by a person.
    #[error("configuration: hs_secret: {0}")]
    WeakHsSecret(tokengate::KeyError),
    /// An access-token lifetime over [`super::MAX_ACCESS_TTL`].
    #[error(
        "configuration: access_ttl of {} is over the 24h maximum: access tokens cannot be revoked early everywhere, keep them short",
        human(.0)
    )]
    AccessTtlOverMaximum(Duration),
    /// A lifetime or timeout of zero.
    #[error("configuration: {key} must be positive")]
    NotPositive {
        /// The setting.
        key: &'static str,
    },
    /// A limit of zero, which would refuse everything.
    #[error("configuration: {key} must be at least 1")]
    Zero {
        /// The setting.
        key: &'static str,
    },
    /// Refresh tokens that expire before the access tokens they renew.
    #[error(
        "configuration: refresh_ttl ({}) is shorter than access_ttl ({})",
        human(.refresh_ttl),
        human(.access_ttl)
    )]
    RefreshShorterThanAccess {
        /// `refresh_ttl`.
        refresh_ttl: Duration,
        /// `access_ttl`.
        access_ttl: Duration,
    },
    /// A clock-skew allowance under a second: times are whole seconds, so
    /// a token issued this second by a host a fraction ahead, or dated at
    /// the next second after a change of roles, would be refused.
    #[error("configuration: leeway must be at least 1s (times in tokens are whole seconds)")]
    LeewayUnderOneSecond,
    /// A clock-skew allowance over [`tokengate::MAX_LEEWAY`].
    #[error("configuration: leeway of {} is over the 300s maximum", human(.0))]
    LeewayOverMaximum(Duration),
    /// Address- or account-wide failure limits below the per-account one,
    /// which would make the finer limit unreachable.
    #[error(
        "configuration: login_ip_max_failures ({login_ip_max_failures}) and login_account_max_failures ({login_account_max_failures}) must be at least login_max_failures ({login_max_failures})"
    )]
    FailureLimitsBelowLoginMax {
        /// `login_ip_max_failures`.
        login_ip_max_failures: u32,
        /// `login_account_max_failures`.
        login_account_max_failures: u32,
        /// `login_max_failures`.
        login_max_failures: u32,
    },
    /// Argon2id costs below every pair in [`super::ARGON2_MINIMUMS`].
    #[error(
        "configuration: argon2_memory_kib = {memory_kib} with argon2_iterations = {iterations} is below OWASP's minimum (19456 KiB with 2 iterations, or 47104/1, 12288/3, 9216/4, 7168/5)"
    )]
    WeakArgon2 {
        /// `argon2_memory_kib`.
        memory_kib: u32,
        /// `argon2_iterations`.
        iterations: u32,
    },
    /// A refresh reuse interval over [`super::MAX_REFRESH_REUSE_INTERVAL`].
    #[error(
        "configuration: refresh_reuse_interval of {} is over the 60s maximum: a used refresh token must not keep working",
        human(.0)
    )]
    RefreshReuseOverMaximum(Duration),
    /// Sessions that end before the refresh tokens they hold.
    #[error(
        "configuration: session_lifetime ({}) is shorter than refresh_ttl ({})",
        human(.session_lifetime),
        human(.refresh_ttl)
    )]
    SessionShorterThanRefresh {
        /// `session_lifetime`.
        session_lifetime: Duration,
        /// `refresh_ttl`.
        refresh_ttl: Duration,
    },
    /// A metrics bearer token short enough to guess.
    #[error(
        "configuration: metrics_token must be at least 32 characters (make one with `tokengate secret generate`)"
    )]
    ShortMetricsToken,
    /// Metrics on, with neither a separate address nor a token to guard them.
    #[error(
        "configuration: metrics = true needs metrics_addr (a loopback address) or metrics_token (to serve /metrics on the API port behind a bearer token)"
    )]
    UnguardedMetrics,
    /// Metrics on a non-loopback address without a token.
    #[error(
        "configuration: metrics_addr {0} is reachable from the network: set metrics_token, or bind it to a loopback address"
    )]
    ExposedMetrics(SocketAddr),
    /// Cookies without `Secure` on a service others can reach.
    #[error(
        "configuration: cookie_insecure_dev = true is for local development only: addr ({addr}) and public_url ({public_url}) must be loopback (127.0.0.1, ::1 or localhost)"
    )]
    InsecureCookiesOffLoopback {
        /// `addr`.
        addr: SocketAddr,
        /// `public_url`.
        public_url: String,
    },
    /// `cookie_insecure_dev` with an allowed origin or a trusted proxy off
    /// this machine: the dev cookies would be usable from the network.
    #[error(
        "configuration: cookie_insecure_dev = true is for local development only: {key} names {value}, which is not loopback (127.0.0.1, ::1 or localhost)"
    )]
    InsecureCookiesReachable {
        /// `cookie_allowed_origins` or `trusted_proxies`.
        key: &'static str,
        /// The entry that is not loopback.
        value: String,
    },
    /// Both `master_key` and `master_key_file`.
    #[error(
        "configuration: set master_key or master_key_file, not both: which one encrypts the signing keys must be unambiguous"
    )]
    TwoMasterKeys,
    /// A `TOKENGATE_*` environment variable that names no setting (a typo
    /// would otherwise be silently ignored, as in the file).
    #[error("configuration: unknown environment variable {name} (did you mean {closest}?)")]
    UnknownVariable {
        /// The variable as set.
        name: String,
        /// The known variable closest to it.
        closest: String,
    },
}

/// A duration as the messages show it, e.g. `1h 30m`.
fn human(duration: &Duration) -> FormattedDuration {
    format_duration(*duration)
}
