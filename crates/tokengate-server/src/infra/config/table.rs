//! Every setting, declared once: its doc, key, type, default and kind.
//!
//! The [`settings!`] macro turns the table into the [`Settings`] struct, the
//! key list ([`KEYS`]), the defaults layer, the per-value parsing and the
//! rows `--print-config` prints. A new setting is one entry here (plus any
//! check that relates it to other settings, in `validate.rs`).
//!
//! Why a macro of our own rather than a layered-config crate such as figment:
//! figment would still need a serde impl per value type (durations, secrets,
//! CIDR lists given as text or as a TOML array, the forwarding header), its
//! errors would have to be mapped back to our one-line messages, and
//! `--print-config` would still be written per field. It would add code, not
//! remove it, and bring a second `toml` (figment 0.10 is on 0.8, we are on
//! 0.9) and, for environment variables, a parser-combinator stack (pear, its
//! proc-macro, yansi). The table keeps each value's source as figment would,
//! with the layering itself in `layers.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokengate::Algorithm;

use super::kinds::{
    Kind, Shown, address, boolean, cidr_list, client_ip_header, cookie_mode, duration, http_token,
    ipv6_prefix_len, log_format, niceness, number, optional, origin_list, path, same_site, secret,
    secret_url, signing_algorithm, text,
};
use super::layers::Merged;
use super::{ClientIpHeader, ConfigError, CookieMode, LogFormat, SameSite, Secret, Source};

/// Declares the settings: `/// doc`, then `key: Type = "default" => kind;`
/// (no `= "default"` when the value is derived from others or unset).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident: $type:ty $(= $default:literal)? => $kind:expr;
    )*) => {
        /// The effective, validated settings. Each field is a key of
        /// `tokengate.toml` and a `TOKENGATE_*` variable.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $($(#[doc = $doc])* pub $key: $type,)*
            /// Where each key's value came from, for `--print-config`.
            pub sources: BTreeMap<String, Source>,
        }

        /// Every setting, as it appears in `tokengate.toml`; the environment
        /// variable is `TOKENGATE_` + the key in upper case.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        /// The built-in defaults as text: the lowest layer.
        pub(super) const DEFAULTS: &[(&str, &str)] = &[$($((stringify!($key), $default),)?)*];

        impl Settings {
            /// Each setting read from its winning text, checked on its own;
            /// derived values and checks across settings come after.
            pub(super) fn read_each(merged: &Merged) -> Result<Settings, ConfigError> {
                Ok(Settings {
                    $($key: Kind::read(&$kind, stringify!($key), merged.get(stringify!($key)))?,)*
                    sources: merged.sources(),
                })
            }

            /// Each key with its value as `--print-config` shows it, in
            /// table order.
            pub(super) fn shown(&self) -> Vec<(&'static str, Shown)> {
                vec![$((stringify!($key), Kind::show(&$kind, &self.$key))),*]
            }
        }
    };
}

settings! {
    /// Listen address.
    addr: SocketAddr = "127.0.0.1:8080" => address("an address like 127.0.0.1:8080");
    /// Directory for the SQLite file and the master key (blank: `.`).
    data_dir: PathBuf = "./tokengate-data" => path();
    /// `sqlite://…` or `postgres://…` (default: `tokengate.db` in `data_dir`).
    database_url: Secret => secret_url();
    /// PostgreSQL connections each instance holds at most.
    database_max_connections: u32 = "16" => number();
    /// How long a request waits for a database connection before it is
    /// answered 503 (the database is down or saturated).
    database_acquire_timeout: Duration = "3s" => duration();
    /// Redis, shared by several instances: the denylist of revoked access
    /// tokens (which the library's guard in other APIs can read too).
    redis_url: Option<Secret> => optional(secret_url());
    /// Prefix of every key tokengate writes in Redis (denylist, login
    /// limits, request budget, announcements); one per deployment.
    redis_prefix: String = "tokengate:" => text();
    /// When the denylist in Redis cannot be read: refuse (503, the
    /// default) or let tokens that otherwise verify through.
    revocation_fail_open: bool = "false" => boolean();
    /// The base URL clients reach the service at: `http(s)://host[:port]`
    /// and an optional path (default: from `addr`).
    public_url: String => text();
    /// `iss` of issued tokens (default: `public_url`).
    issuer: String => text();
    /// `aud` of issued tokens.
    audience: String = "tokengate" => text();
    /// Algorithm of the signing key.
    signing_alg: Algorithm = "ES256" => signing_algorithm();
    /// Shared secret when `signing_alg` is HS256.
    hs_secret: Option<Secret> => optional(secret());
    /// Master key (base64url, 32 bytes) instead of `data_dir/master.key`.
    master_key: Option<Secret> => optional(secret());
    /// Where the master key file lives, when not `data_dir/master.key`
    /// (keep it apart from the database and its backups).
    master_key_file: Option<PathBuf> => optional(path());
    /// Access-token lifetime.
    access_ttl: Duration = "15m" => duration();
    /// `scope` claim of access tokens.
    access_scope: String = "api" => text();
    /// Refresh-token lifetime.
    refresh_ttl: Duration = "14d" => duration();
    /// Grace period in which a used refresh token still answers (two tabs).
    refresh_reuse_interval: Duration = "10s" => duration();
    /// Absolute session lifetime.
    session_lifetime: Duration = "30d" => duration();
    /// A session unused this long ends.
    session_idle_timeout: Duration = "14d" => duration();
    /// Clock-skew allowance when verifying.
    leeway: Duration = "30s" => duration();
    /// Remember verified access tokens, so that one presented again skips
    /// the signature check (its expiry and revocation are still checked on
    /// every request).
    verify_cache: bool = "true" => boolean();
    /// How many verified access tokens to remember.
    verify_cache_size: usize = "10000" => number();
    /// Prefix of the identity headers of `GET /auth/verify` (`X-Auth-User`,
    /// `-Email`, `-Roles`, `-Session`).
    forward_auth_header_prefix: String = "X-Auth-"
        => http_token("a header-name prefix like X-Auth- (letters, digits, - and _)");
    /// Another cookie `/auth/verify` reads the access token from, after the
    /// Authorization header and the cookie-mode access cookie (unset: none).
    /// Unsafe methods need the CSRF token, as in cookie mode.
    forward_auth_cookie: Option<String>
        => optional(http_token("a cookie name (letters, digits, - and _)"));
    /// Browsers: `allowed` (a login or refresh answers in cookie mode when
    /// it asks with `?mode=cookie` or `"mode": "cookie"`), `always` (every
    /// one does: tokens never appear in a body) or `off` (no cookie is set
    /// or read).
    cookie_mode: CookieMode = "allowed" => cookie_mode();
    /// `SameSite` of the cookie-mode cookies: `strict` or `lax`.
    cookie_same_site: SameSite = "strict" => same_site();
    /// Origins allowed to send unsafe requests authenticated by cookie,
    /// besides the service's own (`public_url`'s): the web applications
    /// that use cookie mode (`https://app.example.com`).
    cookie_allowed_origins: Vec<String> = "" => origin_list();
    /// Local development over plain http: cookies without `Secure` and
    /// without the `__Host-`/`__Secure-` prefixes (`tg_access`,
    /// `tg_refresh`, `tg_csrf`). Refused unless `addr` and `public_url`
    /// are loopback; a warning at every start while on.
    cookie_insecure_dev: bool = "false" => boolean();
    /// Whether `POST /auth/register` is open.
    registration: bool = "true" => boolean();
    /// Wrong passwords checked per account from one client address in the
    /// window; further attempts get 429 without reaching the hasher.
    login_max_failures: u32 = "5" => number();
    /// The failed-login window.
    login_failure_window: Duration = "15m" => duration();
    /// Wrong passwords checked per client address, whatever the account.
    login_ip_max_failures: u32 = "20" => number();
    /// Wrong passwords per account from all addresses before exponential
    /// back-off starts (1 s, 2 s, 4 s, … up to the window): an attacker
    /// elsewhere can slow the owner down but not lock them out.
    login_account_max_failures: u32 = "10" => number();
    /// Overall per-client request budget on `/auth/*`.
    auth_requests_per_minute: u32 = "120" => number();
    /// Peers whose forwarding header is believed (CIDR list; empty: none).
    trusted_proxies: Vec<ipnet::IpNet> = "" => cidr_list();
    /// The forwarding header read from a trusted proxy.
    client_ip_header: ClientIpHeader = "x-forwarded-for" => client_ip_header();
    /// IPv6 clients are limited per prefix of this length (a /64 is one
    /// subscriber's network; per address would let it rotate freely).
    ipv6_prefix_len: u8 = "64" => ipv6_prefix_len();
    /// A client must send its request headers within this time.
    header_read_timeout: Duration = "10s" => duration();
    /// Connections served at once; further ones wait in the backlog.
    max_connections: usize = "4096" => number();
    /// Argon2id memory cost (KiB).
    argon2_memory_kib: u32 = "19456" => number();
    /// Argon2id iterations.
    argon2_iterations: u32 = "2" => number();
    /// Argon2id lanes.
    argon2_parallelism: u32 = "1" => number();
    /// Password hashes computed at once, each on its own thread; 0 (the
    /// default) is one per core this process may run on. More than the
    /// cores only adds context switches and evicts each other's memory.
    password_hash_concurrency: usize = "0" => number();
    /// The hashing threads' niceness on Linux (0 to 19): above 0, token
    /// verification preempts a hash in progress on a busy core.
    password_hash_niceness: u8 = "10" => niceness();
    /// Request timeout.
    request_timeout: Duration = "30s" => duration();
    /// How long audit events are kept.
    audit_retention: Duration = "90d" => duration();
    /// How long a new key is published before it signs (the JWKS max-age).
    key_publish_delay: Duration = "5m" => duration();
    /// Serve Prometheus metrics at `/metrics`.
    metrics: bool = "true" => boolean();
    /// Serve `/metrics` on this separate address (loopback by default).
    metrics_addr: Option<SocketAddr> = "127.0.0.1:9464"
        => optional(address("an address like 127.0.0.1:9464"));
    /// Bearer token `/metrics` requires; with `metrics_addr` unset, it is
    /// then served on the API port.
    metrics_token: Option<Secret> => optional(secret());
    /// TLS certificate chain (PEM); with `tls_key`, serve HTTPS.
    tls_cert: Option<PathBuf> => optional(path());
    /// TLS private key (PEM).
    tls_key: Option<PathBuf> => optional(path());
    /// Rotate the signing key this often (off when unset).
    key_rotation_interval: Option<Duration> => optional(duration());
    /// `json` (one JSON object per line) or `text` (one plain line per
    /// event; `pretty` is read as `text`).
    log_format: LogFormat = "json" => log_format();
    /// Tracing filter, e.g. `info` or `tokengate_server=debug` (blank: `info`).
    log_level: String = "info" => text();
}
