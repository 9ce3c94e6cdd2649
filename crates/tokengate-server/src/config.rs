//! Settings: defaults < `tokengate.toml` < `TOKENGATE_*` environment < flags.
//!
//! Every layer is read into one map of key → (text, where it came from);
//! each typed field is then parsed from the winning text, so an error names
//! the key, the value's source and what is expected. Validation that crosses
//! fields (lifetimes, secrets) happens in [`Settings::load`], and a setting
//! that would weaken security refuses to start rather than warn.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokengate::{Algorithm, MAX_LEEWAY};
use zeroize::Zeroizing;

/// Every setting, as it appears in `tokengate.toml`; the environment variable
/// is `TOKENGATE_` + the key in upper case.
pub const KEYS: &[&str] = &[
    "addr",
    "data_dir",
    "database_url",
    "redis_url",
    "public_url",
    "issuer",
    "audience",
    "signing_alg",
    "hs_secret",
    "master_key",
    "master_key_file",
    "access_ttl",
    "access_scope",
    "refresh_ttl",
    "refresh_reuse_interval",
    "session_lifetime",
    "session_idle_timeout",
    "leeway",
    "registration",
    "login_max_failures",
    "login_failure_window",
    "login_ip_max_failures",
    "login_account_max_failures",
    "auth_requests_per_minute",
    "trusted_proxies",
    "client_ip_header",
    "ipv6_prefix_len",
    "header_read_timeout",
    "max_connections",
    "argon2_memory_kib",
    "argon2_iterations",
    "argon2_parallelism",
    "password_hash_concurrency",
    "request_timeout",
    "audit_retention",
    "key_publish_delay",
    "metrics",
    "metrics_addr",
    "metrics_token",
    "tls_cert",
    "tls_key",
    "key_rotation_interval",
    "log_format",
    "log_level",
];

/// Keys whose values are secrets: never printed, never logged.
const SECRET_KEYS: &[&str] = &["hs_secret", "master_key", "metrics_token"];

/// A duration in whole seconds as the `i64` Unix times are kept in,
/// saturating (settings never come near the limit).
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The longest access-token lifetime accepted.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

fn default(key: &str) -> Option<&'static str> {
    Some(match key {
        "addr" => "127.0.0.1:8080",
        "data_dir" => "./tokengate-data",
        "audience" => "tokengate",
        "signing_alg" => "ES256",
        "access_ttl" => "15m",
        "access_scope" => "api",
        "refresh_ttl" => "14d",
        "refresh_reuse_interval" => "10s",
        "session_lifetime" => "30d",
        "session_idle_timeout" => "14d",
        "leeway" => "30s",
        "registration" => "true",
        "login_max_failures" => "5",
        "login_failure_window" => "15m",
        "login_ip_max_failures" => "20",
        "login_account_max_failures" => "10",
        "auth_requests_per_minute" => "120",
        "client_ip_header" => "x-forwarded-for",
        "ipv6_prefix_len" => "64",
        "header_read_timeout" => "10s",
        "max_connections" => "4096",
        "argon2_memory_kib" => "19456",
        "argon2_iterations" => "2",
        "argon2_parallelism" => "1",
        "password_hash_concurrency" => "4",
        "request_timeout" => "30s",
        "audit_retention" => "90d",
        "key_publish_delay" => "5m",
        "metrics" => "true",
        "metrics_addr" => "127.0.0.1:9464",
        "log_format" => "json",
        "log_level" => "info",
        _ => return None,
    })
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A configuration problem, as the one line printed before refusing to start.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A secret setting: redacted in `Debug`, wiped on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which forwarding header names the client behind a trusted proxy. Only
/// one is read: a proxy that appends to one passes the other through as the
/// client sent it, so reading both would let a client forge its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

impl ClientIpHeader {
    /// The header's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
        }
    }
}

/// OWASP's argon2id minimums: (memory KiB, iterations) pairs of equal
/// strength, with one lane. A configuration must reach one of them.
pub const ARGON2_MINIMUMS: &[(u32, u32)] = &[
    (47_104, 1),
    (19_456, 2),
    (12_288, 3),
    (9_216, 4),
    (7_168, 5),
];

/// The longest refresh reuse interval accepted: a used token answering for
/// longer is a stolen token's window, not a second tab's.
pub const MAX_REFRESH_REUSE_INTERVAL: Duration = Duration::from_secs(60);

/// Command-line overrides (the flags of `serve` and the data commands).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--addr`.
    pub addr: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
}

/// The effective, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Directory for the SQLite file and the master key.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: Secret,
    /// Redis, for multi-instance deployments (not used yet).
    pub redis_url: Option<Secret>,
    /// The base URL clients reach the service at.
    pub public_url: String,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Algorithm of the signing key.
    pub signing_alg: Algorithm,
    /// Shared secret when `signing_alg` is HS256.
    pub hs_secret: Option<Secret>,
    /// Master key (base64url, 32 bytes) instead of `data_dir/master.key`.
    pub master_key: Option<Secret>,
    /// Where the master key file lives, when not `data_dir/master.key`
    /// (keep it apart from the database and its backups).
    pub master_key_file: Option<PathBuf>,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// `scope` claim of access tokens.
    pub access_scope: String,
    /// Refresh-token lifetime.
    pub refresh_ttl: Duration,
    /// Grace period in which a used refresh token still answers (two tabs).
    pub refresh_reuse_interval: Duration,
    /// Absolute session lifetime.
    pub session_lifetime: Duration,
    /// A session unused this long ends.
    pub session_idle_timeout: Duration,
    /// Clock-skew allowance when verifying.
    pub leeway: Duration,
    /// Whether `POST /auth/register` is open.
    pub registration: bool,
    /// Wrong passwords checked per account from one client address in the
    /// window; further attempts get 429 without reaching the hasher.
    pub login_max_failures: u32,
    /// The failed-login window.
    pub login_failure_window: Duration,
    /// Wrong passwords checked per client address, whatever the account.
    pub login_ip_max_failures: u32,
    /// Wrong passwords per account from all addresses before exponential
    /// back-off starts (1 s, 2 s, 4 s, … up to the window): an attacker
    /// elsewhere can slow the owner down but not lock them out.
    pub login_account_max_failures: u32,
    /// Overall per-client request budget on `/auth/*`.
    pub auth_requests_per_minute: u32,
    /// Peers whose forwarding header is believed (CIDR list; empty: none).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The forwarding header read from a trusted proxy.
    pub client_ip_header: ClientIpHeader,
    /// IPv6 clients are limited per prefix of this length (a /64 is one
    /// subscriber's network; per address would let it rotate freely).
    pub ipv6_prefix_len: u8,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the backlog.
    pub max_connections: usize,
    /// Argon2id memory cost (KiB).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Password hashes computed at once (the bounded blocking pool).
    pub password_hash_concurrency: usize,
    /// Request timeout.
    pub request_timeout: Duration,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// How long a new key is published before it signs (the JWKS max-age).
    pub key_publish_delay: Duration,
    /// Rotate the signing key this often (off when unset).
    pub key_rotation_interval: Option<Duration>,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// Serve `/metrics` on this separate address (loopback by default).
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token `/metrics` requires; with `metrics_addr` unset, it is
    /// then served on the API port.
    pub metrics_token: Option<Secret>,
    /// TLS certificate chain (PEM); with `tls_key`, serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `json` or `pretty`.
    pub log_format: String,
    /// Tracing filter, e.g. `info` or `tokengate_server=debug`.
    pub log_level: String,
    /// Where each key's value came from, for `--print-config`.
    pub sources: BTreeMap<String, Source>,
}

type Layer = BTreeMap<String, (String, Source)>;

fn file_layer(path: &Path, required: bool) -> Result<Layer, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Layer::new()),
        Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let mut layer = Layer::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            return Err(ConfigError(format!(
                "{}: unknown setting {key:?} (known: {})",
                path.display(),
                KEYS.join(", ")
            )));
        }
        let text = match value {
            toml::Value::String(s) => s,
            // Lists (trusted_proxies) are kept as comma-separated text, as
            // the environment gives them.
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError(format!(
                    "{}: {key} must be a string, number, boolean or list of strings, not {}",
                    path.display(),
                    other.type_str()
                )));
            }
        };
        layer.insert(key, (text, Source::File(path.to_owned())));
    }
    Ok(layer)
}

fn env_layer(env: &dyn Fn(&str) -> Option<String>) -> Layer {
    KEYS.iter()
        .filter_map(|key| {
            let var = format!("TOKENGATE_{}", key.to_uppercase());
            env(&var).map(|value| (key.to_string(), (value, Source::Env(var))))
        })
        .collect()
}

struct Merged(Layer);

impl Merged {
    fn text(&self, key: &str) -> Option<(&str, &Source)> {
        self.0.get(key).map(|(v, s)| (v.as_str(), s))
    }

    fn parse<T>(
        &self,
        key: &str,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let (text, source) = self
            .text(key)
            .ok_or_else(|| ConfigError(format!("{key} is not set")))?;
        f(text.trim()).ok_or_else(|| {
            let shown = if SECRET_KEYS.contains(&key) {
                "[redacted]"
            } else {
                text
            };
            ConfigError(format!("{key} = {shown:?} (from {source}) is not {what}"))
        })
    }

    fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        self.parse(key, "a duration like 30s, 15m, 14d", |t| {
            humantime::parse_duration(t).ok()
        })
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T, ConfigError> {
        self.parse(key, "a whole number", |t| t.parse().ok())
    }

    fn string(&self, key: &str) -> Option<String> {
        self.text(key)
            .map(|(t, _)| t.to_owned())
            .filter(|t| !t.is_empty())
    }

    fn secret(&self, key: &str) -> Option<Secret> {
        self.string(key).map(|s| Secret(Zeroizing::new(s)))
    }
}

impl Settings {
    /// Wraps a secret value (for settings built in code, e.g. tests).
    pub fn secret(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// Loads the settings: defaults, then the config file (`--config`, else
    /// `TOKENGATE_CONFIG`, else `./tokengate.toml` if present), then the
    /// environment, then `overrides`; then validates them.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        Self::load_from(overrides, &|name| std::env::var(name).ok())
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut merged: Layer = KEYS
            .iter()
            .filter_map(|k| default(k).map(|v| (k.to_string(), (v.to_owned(), Source::Default))))
            .collect();
        let file = match (&overrides.config_file, env("TOKENGATE_CONFIG")) {
            (Some(path), _) => file_layer(path, true)?,
            (None, Some(path)) => file_layer(Path::new(&path), true)?,
            (None, None) => file_layer(Path::new("tokengate.toml"), false)?,
        };
        merged.extend(file);
        merged.extend(env_layer(env));
        if let Some(addr) = &overrides.addr {
            merged.insert("addr".into(), (addr.clone(), Source::Flag("--addr".into())));
        }
        if let Some(dir) = &overrides.data_dir {
            merged.insert(
                "data_dir".into(),
                (dir.display().to_string(), Source::Flag("--data-dir".into())),
            );
        }
        for (key, flag, value) in [
            ("tls_cert", "--tls-cert", &overrides.tls_cert),
            ("tls_key", "--tls-key", &overrides.tls_key),
        ] {
            if let Some(path) = value {
                merged.insert(
                    key.into(),
                    (path.display().to_string(), Source::Flag(flag.into())),
                );
            }
        }
        let m = Merged(merged);

        let addr: SocketAddr =
            m.parse("addr", "an address like 127.0.0.1:8080", |t| t.parse().ok())?;
        let data_dir = PathBuf::from(m.string("data_dir").unwrap_or_else(|| ".".into()));
        let database_url = m.secret("database_url").unwrap_or_else(|| {
            Secret(Zeroizing::new(format!(
                "sqlite://{}",
                data_dir.join("tokengate.db").display()
            )))
        });
        if !(database_url.expose().starts_with("sqlite:")
            || database_url.expose().starts_with("postgres://")
            || database_url.expose().starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "database_url must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        let tls_cert = m.string("tls_cert").map(PathBuf::from);
        let tls_key = m.string("tls_key").map(PathBuf::from);
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(ConfigError("TLS needs both tls_cert and tls_key".into()));
        }
        let scheme = if tls_cert.is_some() { "https" } else { "http" };
        let public_url = m
            .string("public_url")
            .unwrap_or_else(|| format!("{scheme}://{addr}"))
            .trim_end_matches('/')
            .to_owned();
        let issuer = m.string("issuer").unwrap_or_else(|| public_url.clone());
        let signing_alg: Algorithm = m.parse(
            "signing_alg",
            "one of ES256, EdDSA, RS256, PS256, HS256",
            |t| {
                Algorithm::from_name(t).ok().filter(|a| {
                    matches!(
                        a,
                        Algorithm::ES256
                            | Algorithm::EdDSA
                            | Algorithm::RS256
                            | Algorithm::PS256
                            | Algorithm::HS256
                    )
                })
            },
        )?;
        let hs_secret = m.secret("hs_secret");
        match (&hs_secret, signing_alg) {
            (None, Algorithm::HS256) => {
                return Err(ConfigError(
                    "signing_alg = HS256 needs hs_secret (make one with `tokengate secret generate`)".into(),
                ));
            }
            (Some(secret), Algorithm::HS256) => {
                tokengate::check_hmac_secret(Algorithm::HS256, secret.expose().as_bytes())
                    .map_err(|e| ConfigError(format!("hs_secret: {e}")))?;
            }
            _ => {}
        }
        let access_ttl = m.duration("access_ttl")?;
        let refresh_ttl = m.duration("refresh_ttl")?;
        let leeway = m.duration("leeway")?;
        if access_ttl > MAX_ACCESS_TTL {
            return Err(ConfigError(format!(
                "access_ttl of {} is over the 24h maximum: access tokens cannot be revoked early everywhere, keep them short",
                humantime::format_duration(access_ttl)
            )));
        }
        if access_ttl.is_zero() {
            return Err(ConfigError("access_ttl must be positive".into()));
        }
        if refresh_ttl < access_ttl {
            return Err(ConfigError(format!(
                "refresh_ttl ({}) is shorter than access_ttl ({})",
                humantime::format_duration(refresh_ttl),
                humantime::format_duration(access_ttl)
            )));
        }
        if leeway > MAX_LEEWAY {
            return Err(ConfigError(format!(
                "leeway of {} is over the 300s maximum",
                humantime::format_duration(leeway)
            )));
        }
        let login_max_failures: u32 = m.number("login_max_failures")?;
        if login_max_failures == 0 {
            return Err(ConfigError("login_max_failures must be at least 1".into()));
        }
        let auth_requests_per_minute: u32 = m.number("auth_requests_per_minute")?;
        if auth_requests_per_minute == 0 {
            return Err(ConfigError(
                "auth_requests_per_minute must be at least 1".into(),
            ));
        }
        let login_ip_max_failures: u32 = m.number("login_ip_max_failures")?;
        let login_account_max_failures: u32 = m.number("login_account_max_failures")?;
        if login_ip_max_failures < login_max_failures
            || login_account_max_failures < login_max_failures
        {
            return Err(ConfigError(format!(
                "login_ip_max_failures ({login_ip_max_failures}) and login_account_max_failures ({login_account_max_failures}) must be at least login_max_failures ({login_max_failures})"
            )));
        }
        let argon2_memory_kib: u32 = m.number("argon2_memory_kib")?;
        let argon2_iterations: u32 = m.number("argon2_iterations")?;
        if !ARGON2_MINIMUMS
            .iter()
            .any(|(mem, t)| argon2_memory_kib >= *mem && argon2_iterations >= *t)
        {
            return Err(ConfigError(format!(
                "argon2_memory_kib = {argon2_memory_kib} with argon2_iterations = {argon2_iterations} is below OWASP's minimum (19456 KiB with 2 iterations, or 47104/1, 12288/3, 9216/4, 7168/5)"
            )));
        }
        let refresh_reuse_interval = m.duration("refresh_reuse_interval")?;
        if refresh_reuse_interval > MAX_REFRESH_REUSE_INTERVAL {
            return Err(ConfigError(format!(
                "refresh_reuse_interval of {} is over the 60s maximum: a used refresh token must not keep working",
                humantime::format_duration(refresh_reuse_interval)
            )));
        }
        let session_lifetime = m.duration("session_lifetime")?;
        if session_lifetime < refresh_ttl {
            return Err(ConfigError(format!(
                "session_lifetime ({}) is shorter than refresh_ttl ({})",
                humantime::format_duration(session_lifetime),
                humantime::format_duration(refresh_ttl)
            )));
        }
        let trusted_proxies = match m.string("trusted_proxies") {
            None => Vec::new(),
            Some(_) => m.parse(
                "trusted_proxies",
                "a comma-separated list of addresses or CIDR ranges like 10.0.0.0/8, ::1",
                parse_cidrs,
            )?,
        };
        let client_ip_header = m.parse(
            "client_ip_header",
            "x-forwarded-for or forwarded",
            |t| match t.to_ascii_lowercase().as_str() {
                "x-forwarded-for" => Some(ClientIpHeader::XForwardedFor),
                "forwarded" => Some(ClientIpHeader::Forwarded),
                _ => None,
            },
        )?;
        let ipv6_prefix_len: u8 =
            m.parse("ipv6_prefix_len", "a prefix length from 1 to 128", |t| {
                t.parse().ok().filter(|n| (1..=128).contains(n))
            })?;
        let header_read_timeout = m.duration("header_read_timeout")?;
        if header_read_timeout.is_zero() {
            return Err(ConfigError("header_read_timeout must be positive".into()));
        }
        let max_connections: usize = m.number("max_connections")?;
        if max_connections == 0 {
            return Err(ConfigError("max_connections must be at least 1".into()));
        }
        let metrics: bool = m.parse("metrics", "true or false", |t| t.parse().ok())?;
        let metrics_addr: Option<SocketAddr> = match m.string("metrics_addr") {
            Some(_) => Some(
                m.parse("metrics_addr", "an address like 127.0.0.1:9464", |t| {
                    t.parse().ok()
                })?,
            ),
            None => None,
        };
        let metrics_token = m.secret("metrics_token");
        if let Some(token) = &metrics_token
            && token.expose().len() < 32
        {
            return Err(ConfigError(
                "metrics_token must be at least 32 characters (make one with `tokengate secret generate`)".into(),
            ));
        }
        if metrics && metrics_token.is_none() {
            match metrics_addr {
                None => {
                    return Err(ConfigError(
                        "metrics = true needs metrics_addr (a loopback address) or metrics_token (to serve /metrics on the API port behind a bearer token)".into(),
                    ));
                }
                Some(addr) if !addr.ip().is_loopback() => {
                    return Err(ConfigError(format!(
                        "metrics_addr {addr} is reachable from the network: set metrics_token, or bind it to a loopback address"
                    )));
                }
                Some(_) => {}
            }
        }
        let master_key = m.secret("master_key");
        let master_key_file = m.string("master_key_file").map(PathBuf::from);
        if master_key.is_some() && master_key_file.is_some() {
            return Err(ConfigError(
                "set master_key or master_key_file, not both: which one encrypts the signing keys must be unambiguous".into(),
            ));
        }
        let password_hash_concurrency: usize = m.number("password_hash_concurrency")?;
        let log_format = m.string("log_format").unwrap_or_default();
        if !matches!(log_format.as_str(), "json" | "pretty") {
            return Err(ConfigError(format!(
                "log_format {log_format:?} is not json or pretty"
            )));
        }
        let sources =
            m.0.iter()
                .map(|(k, (_, s))| (k.clone(), s.clone()))
                .collect();
        Ok(Settings {
            addr,
            data_dir,
            database_url,
            redis_url: m.secret("redis_url"),
            public_url,
            issuer,
            audience: m.string("audience").unwrap_or_default(),
            signing_alg,
            hs_secret,
            master_key,
            master_key_file,
            access_ttl,
            access_scope: m.string("access_scope").unwrap_or_default(),
            refresh_ttl,
            refresh_reuse_interval,
            session_lifetime,
            session_idle_timeout: m.duration("session_idle_timeout")?,
            leeway,
            registration: m.parse("registration", "true or false", |t| t.parse().ok())?,
            login_max_failures,
            login_failure_window: m.duration("login_failure_window")?,
            login_ip_max_failures,
            login_account_max_failures,
            auth_requests_per_minute,
            trusted_proxies,
            client_ip_header,
            ipv6_prefix_len,
            header_read_timeout,
            max_connections,
            argon2_memory_kib,
            argon2_iterations,
            argon2_parallelism: m.number("argon2_parallelism")?,
            password_hash_concurrency: password_hash_concurrency.max(1),
            request_timeout: m.duration("request_timeout")?,
            audit_retention: m.duration("audit_retention")?,
            key_publish_delay: m.duration("key_publish_delay")?,
            metrics,
            tls_cert,
            tls_key,
            metrics_addr,
            metrics_token,
            key_rotation_interval: match m.text("key_rotation_interval") {
                Some((t, _)) if !t.trim().is_empty() => Some(m.duration("key_rotation_interval")?),
                _ => None,
            },
            log_format,
            log_level: m.string("log_level").unwrap_or_else(|| "info".into()),
            sources,
        })
    }

    /// The effective configuration as TOML, secrets redacted (and the
    /// password inside a database or Redis URL), each line with its source.
    pub fn render(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let values: Vec<(&str, String)> = vec![
            ("addr", self.addr.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("database_url", redact_url(self.database_url.expose())),
            (
                "redis_url",
                self.redis_url
                    .as_ref()
                    .map(|u| redact_url(u.expose()))
                    .unwrap_or_default(),
            ),
            ("public_url", self.public_url.clone()),
            ("issuer", self.issuer.clone()),
            ("audience", self.audience.clone()),
            ("signing_alg", self.signing_alg.to_string()),
            (
                "hs_secret",
                if self.hs_secret.is_some() {
                    "[redacted]".into()
                } else {
                    String::new()
                },
            ),
            (
                "master_key",
                if self.master_key.is_some() {
                    "[redacted]".into()
                } else {
                    String::new()
                },
            ),
            (
                "master_key_file",
                self.master_key_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("access_ttl", d(self.access_ttl)),
            ("access_scope", self.access_scope.clone()),
            ("refresh_ttl", d(self.refresh_ttl)),
            ("refresh_reuse_interval", d(self.refresh_reuse_interval)),
            ("session_lifetime", d(self.session_lifetime)),
            ("session_idle_timeout", d(self.session_idle_timeout)),
            ("leeway", d(self.leeway)),
            ("registration", self.registration.to_string()),
            ("login_max_failures", self.login_max_failures.to_string()),
            ("login_failure_window", d(self.login_failure_window)),
            (
                "login_ip_max_failures",
                self.login_ip_max_failures.to_string(),
            ),
            (
                "login_account_max_failures",
                self.login_account_max_failures.to_string(),
            ),
            (
                "auth_requests_per_minute",
                self.auth_requests_per_minute.to_string(),
            ),
            (
                "trusted_proxies",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("client_ip_header", self.client_ip_header.name().to_owned()),
            ("ipv6_prefix_len", self.ipv6_prefix_len.to_string()),
            ("header_read_timeout", d(self.header_read_timeout)),
            ("max_connections", self.max_connections.to_string()),
            ("argon2_memory_kib", self.argon2_memory_kib.to_string()),
            ("argon2_iterations", self.argon2_iterations.to_string()),
            ("argon2_parallelism", self.argon2_parallelism.to_string()),
            (
                "password_hash_concurrency",
                self.password_hash_concurrency.to_string(),
            ),
            ("request_timeout", d(self.request_timeout)),
            ("audit_retention", d(self.audit_retention)),
            ("key_publish_delay", d(self.key_publish_delay)),
            ("metrics", self.metrics.to_string()),
            (
                "metrics_addr",
                self.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
            ),
            (
                "metrics_token",
                if self.metrics_token.is_some() {
                    "[redacted]".into()
                } else {
                    String::new()
                },
            ),
            (
                "tls_cert",
                self.tls_cert
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "tls_key",
                self.tls_key
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "key_rotation_interval",
                self.key_rotation_interval.map(d).unwrap_or_default(),
            ),
            ("log_format", self.log_format.clone()),
            ("log_level", self.log_level.clone()),
        ];
        let mut out = String::from("# effective tokengate configuration (secrets redacted)\n");
        for (key, value) in values {
            let source = self
                .sources
                .get(key)
                .map_or_else(|| "derived".to_owned(), ToString::to_string);
            let value = if value.parse::<u64>().is_ok() || value == "true" || value == "false" {
                value
            } else {
                format!("{value:?}")
            };
            out.push_str(&format!("{key} = {value}  # {source}\n"));
        }
        out
    }

    /// Whether storage is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.database_url.expose().starts_with("postgres")
    }
}

/// Parses `10.0.0.0/8, 192.168.1.1, ::1`: a bare address is a one-address range.
fn parse_cidrs(text: &str) -> Option<Vec<ipnet::IpNet>> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| t.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
        })
        .collect()
}

/// Hides the password in `scheme://user:password@host/…`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let overrides = Overrides {
            config_file: None,
            ..Overrides::default()
        };
        Settings::load_from(&overrides, &|name| {
            if name == "TOKENGATE_CONFIG" {
                return Some("/nonexistent-tokengate-test.toml".into()).filter(|_| false);
            }
            vars.get(name).cloned()
        })
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = load(&[]).map_err(|e| e.to_string());
        let s = s.as_ref().map_err(String::clone);
        assert_eq!(s.map(|s| s.addr.to_string()), Ok("127.0.0.1:8080".into()));
        let s = load(&[]).ok();
        let s = s.as_ref();
        assert_eq!(s.map(|s| s.access_ttl), Some(Duration::from_secs(900)));
        assert_eq!(
            s.map(|s| s.refresh_ttl),
            Some(Duration::from_secs(14 * 86400))
        );
        assert_eq!(s.map(|s| s.issuer.as_str()), Some("http://127.0.0.1:8080"));
        assert_eq!(s.map(|s| s.signing_alg), Some(Algorithm::ES256));
        assert!(s.is_some_and(|s| {
            s.database_url
                .expose()
                .ends_with("tokengate-data/tokengate.db")
        }));
    }

    #[test]
    fn environment_overrides_defaults_and_flags_override_environment() {
        let vars: BTreeMap<String, String> = [
            ("TOKENGATE_ADDR", "0.0.0.0:9000"),
            ("TOKENGATE_ACCESS_TTL", "5m"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let overrides = Overrides {
            addr: Some("127.0.0.1:7000".into()),
            ..Overrides::default()
        };
        let s = Settings::load_from(&overrides, &|n| vars.get(n).cloned()).ok();
        assert_eq!(
            s.as_ref().map(|s| s.addr.to_string()),
            Some("127.0.0.1:7000".into())
        );
        assert_eq!(
            s.as_ref().map(|s| s.access_ttl),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            s.as_ref()
                .and_then(|s| s.sources.get("access_ttl").cloned()),
            Some(Source::Env("TOKENGATE_ACCESS_TTL".into()))
        );
    }

    #[test]
    fn unsafe_settings_refuse_to_start_with_one_clear_line() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("TOKENGATE_LEEWAY", "301s")], "leeway"),
            (&[("TOKENGATE_ACCESS_TTL", "25h")], "24h maximum"),
            (
                &[
                    ("TOKENGATE_ACCESS_TTL", "1h"),
                    ("TOKENGATE_REFRESH_TTL", "30m"),
                ],
                "shorter than access_ttl",
            ),
            (&[("TOKENGATE_SIGNING_ALG", "HS256")], "needs hs_secret"),
            (
                &[
                    ("TOKENGATE_SIGNING_ALG", "HS256"),
                    ("TOKENGATE_HS_SECRET", "mysecret"),
                ],
                "hs_secret",
            ),
            (
                &[
                    ("TOKENGATE_SIGNING_ALG", "HS256"),
                    ("TOKENGATE_HS_SECRET", "password123password123password123"),
                ],
                "password",
            ),
            (&[("TOKENGATE_SIGNING_ALG", "none")], "signing_alg"),
            (&[("TOKENGATE_ACCESS_TTL", "soon")], "duration"),
            (&[("TOKENGATE_DATABASE_URL", "mysql://x")], "database_url"),
            (&[("TOKENGATE_ARGON2_MEMORY_KIB", "1024")], "OWASP"),
            (&[("TOKENGATE_ARGON2_MEMORY_KIB", "19455")], "OWASP"),
            (
                &[
                    ("TOKENGATE_ARGON2_MEMORY_KIB", "47103"),
                    ("TOKENGATE_ARGON2_ITERATIONS", "1"),
                ],
                "OWASP",
            ),
            (
                &[
                    ("TOKENGATE_ARGON2_MEMORY_KIB", "7167"),
                    ("TOKENGATE_ARGON2_ITERATIONS", "5"),
                ],
                "OWASP",
            ),
            (
                &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "61s")],
                "60s maximum",
            ),
            (
                &[("TOKENGATE_SESSION_LIFETIME", "13d")],
                "shorter than refresh_ttl",
            ),
            (
                &[("TOKENGATE_METRICS_ADDR", "0.0.0.0:9464")],
                "reachable from the network",
            ),
            (&[("TOKENGATE_METRICS_ADDR", "")], "needs metrics_addr"),
            (&[("TOKENGATE_METRICS_TOKEN", "short")], "at least 32"),
            (
                &[("TOKENGATE_TRUSTED_PROXIES", "10.0.0.0/33")],
                "trusted_proxies",
            ),
            (
                &[("TOKENGATE_TRUSTED_PROXIES", "proxy.local")],
                "trusted_proxies",
            ),
            (&[("TOKENGATE_IPV6_PREFIX_LEN", "0")], "ipv6_prefix_len"),
            (&[("TOKENGATE_IPV6_PREFIX_LEN", "129")], "ipv6_prefix_len"),
            (
                &[("TOKENGATE_CLIENT_IP_HEADER", "x-real-ip")],
                "client_ip_header",
            ),
            (
                &[("TOKENGATE_HEADER_READ_TIMEOUT", "0s")],
                "header_read_timeout",
            ),
            (&[("TOKENGATE_MAX_CONNECTIONS", "0")], "max_connections"),
            (
                &[
                    ("TOKENGATE_MASTER_KEY", "password123password123password123"),
                    ("TOKENGATE_MASTER_KEY_FILE", "/etc/tokengate/master.key"),
                ],
                "not both",
            ),
            (
                &[("TOKENGATE_LOGIN_IP_MAX_FAILURES", "4")],
                "at least login_max_failures",
            ),
        ];
        for (vars, needle) in cases {
            let err = load(vars).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{vars:?}: {err:?}");
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(
                !err.contains("password123password123"),
                "secret echoed: {err}"
            );
        }
    }

    #[test]
    fn settings_at_their_limits_are_accepted() {
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("TOKENGATE_ARGON2_MEMORY_KIB", "19456"),
                ("TOKENGATE_ARGON2_ITERATIONS", "2"),
            ],
            &[
                ("TOKENGATE_ARGON2_MEMORY_KIB", "47104"),
                ("TOKENGATE_ARGON2_ITERATIONS", "1"),
            ],
            &[
                ("TOKENGATE_ARGON2_MEMORY_KIB", "7168"),
                ("TOKENGATE_ARGON2_ITERATIONS", "5"),
            ],
            &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "60s")],
            &[("TOKENGATE_REFRESH_REUSE_INTERVAL", "0s")],
            &[("TOKENGATE_SESSION_LIFETIME", "14d")],
            &[
                ("TOKENGATE_METRICS_ADDR", "0.0.0.0:9464"),
                (
                    "TOKENGATE_METRICS_TOKEN",
                    "0123456789abcdef0123456789abcdef",
                ),
            ],
            &[
                ("TOKENGATE_METRICS_ADDR", ""),
                ("TOKENGATE_METRICS", "false"),
            ],
            &[("TOKENGATE_IPV6_PREFIX_LEN", "128")],
        ];
        for vars in cases {
            if let Err(e) = load(vars) {
                panic!("{vars:?} refused: {e}");
            }
        }
    }

    #[test]
    fn trusted_proxies_are_cidr_lists_from_the_environment_or_a_toml_array() {
        let s = load(&[(
            "TOKENGATE_TRUSTED_PROXIES",
            " 10.0.0.0/8, 192.168.1.7 ,::1,",
        )])
        .map(|s| s.trusted_proxies)
        .map_err(|e| e.to_string());
        let expected: Vec<ipnet::IpNet> = ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        assert_eq!(s, Ok(expected.clone()));
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("tempdir") };
        let path = dir.path().join("tokengate.toml");
        std::fs::write(
            &path,
            "trusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let overrides = Overrides {
            config_file: Some(path),
            ..Overrides::default()
        };
        let s = Settings::load_from(&overrides, &|_| None).map(|s| s.trusted_proxies);
        assert_eq!(s.map_err(|e| e.to_string()), Ok(expected));
    }

    #[test]
    fn strong_hs_secret_is_accepted_and_redacted() {
        let secret = tokengate::generate_secret(32).unwrap_or_default();
        let s = load(&[
            ("TOKENGATE_SIGNING_ALG", "HS256"),
            ("TOKENGATE_HS_SECRET", &secret),
        ])
        .ok();
        let rendered = s.as_ref().map(Settings::render).unwrap_or_default();
        assert!(
            rendered.contains("hs_secret = \"[redacted]\""),
            "{rendered}"
        );
        assert!(!rendered.contains(&secret));
        assert!(!format!("{s:?}").contains(&secret));
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/tg"),
            "postgres://app:[redacted]@db:5432/tg"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
