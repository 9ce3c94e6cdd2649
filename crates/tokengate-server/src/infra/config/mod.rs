//! Settings: defaults < `tokengate.toml` < `TOKENGATE_*` environment < flags.
//!
//! Each setting is declared once, in `table.rs`: its doc, key, type, default
//! and kind (how its text parses and prints). From that table come the
//! [`Settings`] struct, [`KEYS`], the defaults layer, the parsing and
//! `--print-config`. `layers.rs` merges the layers as text, keeping where
//! each value came from, so an error names the key, the value's source and
//! what is expected. `validate.rs` derives the values that depend on other
//! settings and checks settings against each other: a setting that would
//! weaken security refuses to start rather than warn.

mod error;
mod kinds;
mod layers;
mod render;
mod table;
mod validate;

use secrecy::ExposeSecret as _;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ConfigError;
pub use kinds::{parse_origin, redact_url};
pub use table::{KEYS, Settings};

/// A duration in whole seconds as the `i64` Unix times are kept in,
/// saturating (settings never come near the limit).
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The longest access-token lifetime accepted.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

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

/// A secret setting: redacted in `Debug`, wiped on drop, read only
/// through `expose_secret()` (secrecy's `ExposeSecret`), so every use is
/// visible in the code.
pub type Secret = secrecy::SecretString;

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

/// When logins and refreshes answer in cookie mode (`cookie_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieMode {
    /// When the request asks (`?mode=cookie` or `"mode": "cookie"`).
    Allowed,
    /// Always: tokens never appear in a response body.
    Always,
    /// Never: no cookie is set or read.
    Off,
}

impl CookieMode {
    /// The mode's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            CookieMode::Allowed => "allowed",
            CookieMode::Always => "always",
            CookieMode::Off => "off",
        }
    }
}

/// The `SameSite` attribute of the cookie-mode cookies (`cookie_same_site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on same-site requests only, navigations from elsewhere included.
    Strict,
    /// Also sent on top-level navigations (GET) from other sites.
    Lax,
}

impl SameSite {
    /// The attribute's value as configured (lower case).
    pub fn name(self) -> &'static str {
        match self {
            SameSite::Strict => "strict",
            SameSite::Lax => "lax",
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// One plain human-readable line per event (also read from `pretty`).
    Text,
}

impl LogFormat {
    /// The format's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

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

impl Settings {
    /// Wraps a secret value (for settings built in code, e.g. tests).
    pub fn secret(value: String) -> Secret {
        Secret::from(value)
    }

    /// Loads the settings: defaults, then the config file (`--config`, else
    /// `TOKENGATE_CONFIG`, else `./tokengate.toml` if present), then the
    /// environment, then `overrides`; then validates them. An unknown
    /// `TOKENGATE_*` variable is refused, as an unknown key in the file is.
    pub fn load(overrides: &Overrides) -> Result<Settings, ConfigError> {
        // Lossy: a name that is not UTF-8 still has to be refused if it
        // starts with `TOKENGATE_`.
        let names: Vec<String> = std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        Self::load_from_environment(overrides, &names, &|name| std::env::var(name).ok())
    }

    /// [`Settings::load`] with an explicit environment: `names` are the
    /// variables set in it (checked for unknown `TOKENGATE_*` ones), `env`
    /// reads one.
    pub fn load_from_environment(
        overrides: &Overrides,
        names: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        layers::refuse_unknown_variables(names, env)?;
        Self::load_from(overrides, env)
    }

    /// [`Settings::load`] with an environment that can only be read, not
    /// listed (tests that build settings in code): no variable is refused
    /// as unknown.
    pub fn load_from(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let merged = layers::Merged::collect(overrides, env)?;
        Settings::read_each(&merged)?.derive_and_check()
    }

    /// The path of `public_url`, without a trailing slash: `""` when the
    /// service is at the root of its host, `"/tg"` behind a reverse proxy
    /// that serves it under that prefix (and strips it).
    pub fn public_path(&self) -> &str {
        self.public_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
            .unwrap_or("")
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
    }

    /// Whether storage is PostgreSQL (else SQLite).
    pub fn is_postgres(&self) -> bool {
        self.database_url.expose_secret().starts_with("postgres")
    }
}

#[cfg(test)]
mod tests;
