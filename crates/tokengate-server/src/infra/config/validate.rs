//! What the table cannot say about one value alone: values derived from
//! other settings, and checks across settings. A setting that would weaken
//! security refuses to start rather than warn. The checks run in a fixed
//! order, so a configuration with several faults always reports the same one.

use secrecy::ExposeSecret as _;
use std::path::PathBuf;

use tokengate::{Algorithm, MAX_LEEWAY};

use super::{
    ARGON2_MINIMUMS, ConfigError, MAX_ACCESS_TTL, MAX_REFRESH_REUSE_INTERVAL, Secret, Settings,
};

impl Settings {
    /// Fills in the derived values, then refuses what is unsafe or
    /// inconsistent.
    pub(super) fn derive_and_check(mut self) -> Result<Settings, ConfigError> {
        self.derive();
        self.check_public_url()?;
        self.check_storage()?;
        self.check_signing()?;
        self.check_lifetimes()?;
        self.check_login_limits()?;
        self.check_sessions()?;
        self.check_connections()?;
        self.check_metrics()?;
        self.check_cookies()?;
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(ConfigError::TwoMasterKeys);
        }
        Ok(self)
    }

    /// Blank settings whose default depends on other settings.
    fn derive(&mut self) {
        if self.data_dir.as_os_str().is_empty() {
            self.data_dir = PathBuf::from(".");
        }
        if self.database_url.expose_secret().is_empty() {
            let path = self.data_dir.join("tokengate.db");
            self.database_url = Secret::from(format!("sqlite://{}", path.display()));
        }
        if self.public_url.is_empty() {
            let scheme = if self.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            self.public_url = format!("{scheme}://{}", self.addr);
        }
        self.public_url = self.public_url.trim_end_matches('/').to_owned();
        if self.issuer.is_empty() {
            self.issuer.clone_from(&self.public_url);
        }
        // One hash per core the process may run on (affinity and cgroup
        // quota included): a login flood keeps every core busy hashing and
        // no more, so hashes do not evict each other's 19 MiB from the
        // cache (docs/BENCHMARKS.md, login).
        if self.password_hash_concurrency == 0 {
            self.password_hash_concurrency =
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        }
        if self.log_level.is_empty() {
            self.log_level = "info".to_owned();
        }
    }

    /// `public_url` is the origin of the pages, the cookies' allowed
    /// origin, the default `iss` and where the JWKS is announced: an
    /// `http(s)://host[:port]` and at most a path, nothing a client could
    /// not have typed (no query, fragment, credentials or blanks).
    fn check_public_url(&self) -> Result<(), ConfigError> {
        let url = &self.public_url;
        // The origin's own check refuses credentials (`user@`) and anything
        // but a host and port; the whole URL then has no query, fragment,
        // backslash, blank or non-ASCII byte, wherever it would start.
        let valid = super::parse_origin(&origin_part(url)).is_some()
            && url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'));
        if valid {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "public_url",
            value: url.clone(),
            origin: self
                .sources
                .get("public_url")
                .cloned()
                .unwrap_or(super::Source::Default),
            expected: "a URL like https://auth.example.com or https://example.com/tg (http or https, a host, an optional port and path)",
        })
    }

    fn check_storage(&self) -> Result<(), ConfigError> {
        let url = self.database_url.expose_secret();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(ConfigError::UnsupportedDatabase);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::HalfTls);
        }
        Ok(())
    }

    fn check_signing(&self) -> Result<(), ConfigError> {
        match (&self.hs_secret, self.signing_alg) {
            (None, Algorithm::HS256) => Err(ConfigError::MissingHsSecret),
            (Some(secret), Algorithm::HS256) => {
                tokengate::check_hmac_secret(Algorithm::HS256, secret.expose_secret().as_bytes())
                    .map_err(ConfigError::WeakHsSecret)
            }
            // A secret set for another algorithm is unused, not wrong.
            _ => Ok(()),
        }
    }

    fn check_lifetimes(&self) -> Result<(), ConfigError> {
        if self.access_ttl > MAX_ACCESS_TTL {
            return Err(ConfigError::AccessTtlOverMaximum(self.access_ttl));
        }
        if self.access_ttl.is_zero() {
            return Err(ConfigError::NotPositive { key: "access_ttl" });
        }
        if self.refresh_ttl < self.access_ttl {
            return Err(ConfigError::RefreshShorterThanAccess {
                refresh_ttl: self.refresh_ttl,
                access_ttl: self.access_ttl,
            });
        }
        if self.leeway < std::time::Duration::from_secs(1) {
            return Err(ConfigError::LeewayUnderOneSecond);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayOverMaximum(self.leeway));
        }
        Ok(())
    }

    /// The login limits, the request budget and the password hash cost: what
    /// a password guesser runs into.
    fn check_login_limits(&self) -> Result<(), ConfigError> {
        if self.login_max_failures == 0 {
            return Err(ConfigError::Zero {
                key: "login_max_failures",
            });
        }
        if self.auth_requests_per_minute == 0 {
            return Err(ConfigError::Zero {
                key: "auth_requests_per_minute",
            });
        }
        if self.login_ip_max_failures < self.login_max_failures
            || self.login_account_max_failures < self.login_max_failures
        {
            return Err(ConfigError::FailureLimitsBelowLoginMax {
                login_ip_max_failures: self.login_ip_max_failures,
                login_account_max_failures: self.login_account_max_failures,
                login_max_failures: self.login_max_failures,
            });
        }
        if !ARGON2_MINIMUMS.iter().any(|&(memory_kib, iterations)| {
            self.argon2_memory_kib >= memory_kib && self.argon2_iterations >= iterations
        }) {
            return Err(ConfigError::WeakArgon2 {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
            });
        }
        Ok(())
    }

    /// A used refresh token stops working soon; a session outlives its tokens.
    fn check_sessions(&self) -> Result<(), ConfigError> {
        if self.refresh_reuse_interval > MAX_REFRESH_REUSE_INTERVAL {
            return Err(ConfigError::RefreshReuseOverMaximum(
                self.refresh_reuse_interval,
            ));
        }
        if self.session_lifetime < self.refresh_ttl {
            return Err(ConfigError::SessionShorterThanRefresh {
                session_lifetime: self.session_lifetime,
                refresh_ttl: self.refresh_ttl,
            });
        }
        Ok(())
    }

    fn check_connections(&self) -> Result<(), ConfigError> {
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::NotPositive {
                key: "header_read_timeout",
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero {
                key: "max_connections",
            });
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Zero {
                key: "database_max_connections",
            });
        }
        if self.database_acquire_timeout.is_zero() {
            return Err(ConfigError::NotPositive {
                key: "database_acquire_timeout",
            });
        }
        Ok(())
    }

    /// Cookies without `Secure` only where nobody but this machine can
    /// reach the service: a bind address and a public URL on loopback, and
    /// nothing that lets the network in another way — an allowed origin
    /// off this machine (its pages could make cookie writes) or a trusted
    /// proxy off it (it would be serving the dev instance to others).
    fn check_cookies(&self) -> Result<(), ConfigError> {
        if !self.cookie_insecure_dev {
            return Ok(());
        }
        if !(self.addr.ip().is_loopback() && url_host_is_loopback(&self.public_url)) {
            return Err(ConfigError::InsecureCookiesOffLoopback {
                addr: self.addr,
                public_url: self.public_url.clone(),
            });
        }
        if let Some(origin) = self
            .cookie_allowed_origins
            .iter()
            .find(|origin| !url_host_is_loopback(origin))
        {
            return Err(ConfigError::InsecureCookiesReachable {
                key: "cookie_allowed_origins",
                value: origin.clone(),
            });
        }
        if let Some(proxy) = self
            .trusted_proxies
            .iter()
            .find(|net| !(net.network().is_loopback() && net.broadcast().is_loopback()))
        {
            return Err(ConfigError::InsecureCookiesReachable {
                key: "trusted_proxies",
                value: proxy.to_string(),
            });
        }
        Ok(())
    }

    /// The origins allowed to send unsafe requests authenticated by
    /// cookie: the service's own (from `public_url`) and
    /// `cookie_allowed_origins`.
    pub fn cookie_origins(&self) -> Vec<String> {
        super::parse_origin(&origin_part(&self.public_url))
            .into_iter()
            .chain(self.cookie_allowed_origins.iter().cloned())
            .collect()
    }

    /// `/metrics` is served on a loopback address or behind a token.
    fn check_metrics(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.metrics_token
            && token.expose_secret().len() < 32
        {
            return Err(ConfigError::ShortMetricsToken);
        }
        if self.metrics && self.metrics_token.is_none() {
            match self.metrics_addr {
                None => return Err(ConfigError::UnguardedMetrics),
                Some(addr) if !addr.ip().is_loopback() => {
                    return Err(ConfigError::ExposedMetrics(addr));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// `scheme://authority` of a URL (its path dropped).
fn origin_part(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        None => url.to_owned(),
    }
}

/// Whether a URL's host is `localhost` or a loopback address.
fn url_host_is_loopback(url: &str) -> bool {
    let Some(origin) = super::parse_origin(&origin_part(url)) else {
        return false;
    };
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
