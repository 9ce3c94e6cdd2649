//! How a setting's text becomes its typed value, and how the value is shown
//! by `--print-config`: the "kind" column of the table in `table.rs`.
//!
//! Three shapes cover every setting: [`Parsed`] values (numbers, durations,
//! addresses…) are trimmed and must parse; [`Verbatim`] values (names, paths,
//! secrets) are taken as written; [`Optional`] wraps either so that a blank
//! value means "unset". Each kind shows its value as a [`Shown`], which
//! `render.rs` writes as a line of a valid `tokengate.toml`.

use secrecy::ExposeSecret as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokengate::Algorithm;

use super::{ClientIpHeader, ConfigError, CookieMode, LogFormat, SameSite, Secret, Source};

/// A value as `--print-config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shown {
    /// A TOML string: the loader reads it back as the same value.
    Text(String),
    /// A bare TOML number or boolean.
    Bare(String),
    /// A secret, or text with a secret inside (a URL's password): the
    /// redacted form would load as a different value, so it is commented out.
    Redacted(String),
    /// An optional setting with no value.
    Unset,
}

/// How one setting is read from its winning text and shown again.
pub(super) trait Kind {
    /// The field's type in [`super::Settings`].
    type Value;

    /// The value from the text that won the layering, or from nothing when
    /// no layer sets the key (settings without a default).
    fn read(
        &self,
        key: &'static str,
        found: Option<(&str, &Source)>,
    ) -> Result<Self::Value, ConfigError>;

    /// Whether `text` means "not set" for an [`Optional`] setting.
    fn is_blank(&self, text: &str) -> bool;

    /// The value as `--print-config` prints it.
    fn show(&self, value: &Self::Value) -> Shown;
}

/// A value parsed from the trimmed text; a failure names the key, the text,
/// where it came from and what was expected.
pub(super) struct Parsed<T> {
    /// What the setting takes, completing "… is not ".
    pub expected: &'static str,
    /// The parser: `None` for text that is not a `T`.
    pub parse: fn(&str) -> Option<T>,
    /// The inverse of `parse`, for `--print-config`.
    pub show: fn(&T) -> Shown,
}

impl<T> Kind for Parsed<T> {
    type Value = T;

    fn read(&self, key: &'static str, found: Option<(&str, &Source)>) -> Result<T, ConfigError> {
        match found {
            // Absent is read as blank: a list setting is then empty, and
            // anything that needs a value says it is not set.
            None => (self.parse)("").ok_or(ConfigError::NotSet { key }),
            Some((text, source)) => (self.parse)(text.trim()).ok_or_else(|| ConfigError::Invalid {
                key,
                value: text.to_owned(),
                origin: source.clone(),
                expected: self.expected,
            }),
        }
    }

    fn is_blank(&self, text: &str) -> bool {
        text.trim().is_empty()
    }

    fn show(&self, value: &T) -> Shown {
        (self.show)(value)
    }
}

/// A value taken as written (not trimmed): it cannot be malformed, so no
/// message ever echoes it — which is why secrets are of this kind.
pub(super) struct Verbatim<T> {
    /// The value for the text (empty when no layer sets the key).
    pub from_text: fn(&str) -> T,
    /// How `--print-config` shows it.
    pub show: fn(&T) -> Shown,
}

impl<T> Kind for Verbatim<T> {
    type Value = T;

    fn read(&self, _key: &'static str, found: Option<(&str, &Source)>) -> Result<T, ConfigError> {
        Ok((self.from_text)(found.map_or("", |(text, _)| text)))
    }

    fn is_blank(&self, text: &str) -> bool {
        text.is_empty()
    }

    fn show(&self, value: &T) -> Shown {
        (self.show)(value)
    }
}

/// A setting that may be left unset: absent or blank is `None`, shown as
/// [`Shown::Unset`].
pub(super) struct Optional<K>(K);

impl<K: Kind> Kind for Optional<K> {
    type Value = Option<K::Value>;

    fn read(
        &self,
        key: &'static str,
        found: Option<(&str, &Source)>,
    ) -> Result<Self::Value, ConfigError> {
        match found {
            Some((text, _)) if !self.0.is_blank(text) => self.0.read(key, found).map(Some),
            _ => Ok(None),
        }
    }

    fn is_blank(&self, text: &str) -> bool {
        self.0.is_blank(text)
    }

    fn show(&self, value: &Self::Value) -> Shown {
        value
            .as_ref()
            .map_or(Shown::Unset, |value| self.0.show(value))
    }
}

/// `kind`, or nothing when blank.
pub(super) fn optional<K: Kind>(kind: K) -> Optional<K> {
    Optional(kind)
}

/// A duration like `30s`, `15m` or `14d`.
pub(super) fn duration() -> Parsed<Duration> {
    Parsed {
        expected: "a duration like 30s, 15m, 14d",
        parse: |text| humantime::parse_duration(text).ok(),
        show: |duration| Shown::Text(format_duration(*duration)),
    }
}

/// A whole number of the field's type (its range is the type's).
pub(super) fn number<T: FromStr + ToString>() -> Parsed<T> {
    Parsed {
        expected: "a whole number",
        parse: |text| text.parse().ok(),
        show: |number| Shown::Bare(number.to_string()),
    }
}

/// `true` or `false`.
pub(super) fn boolean() -> Parsed<bool> {
    Parsed {
        expected: "true or false",
        parse: |text| text.parse().ok(),
        show: |flag| Shown::Bare(flag.to_string()),
    }
}

/// A socket address; `expected` gives an example fitting the setting.
pub(super) fn address(expected: &'static str) -> Parsed<SocketAddr> {
    Parsed {
        expected,
        parse: |text| text.parse().ok(),
        show: |addr| Shown::Text(addr.to_string()),
    }
}

/// The signing algorithms a service key may use (no `none`, no HS384/512:
/// one HMAC strength keeps the secret rules simple).
pub(super) fn signing_algorithm() -> Parsed<Algorithm> {
    Parsed {
        expected: "one of ES256, EdDSA, RS256, PS256, HS256",
        parse: |text| {
            Algorithm::from_name(text).ok().filter(|alg| {
                matches!(
                    alg,
                    Algorithm::ES256
                        | Algorithm::EdDSA
                        | Algorithm::RS256
                        | Algorithm::PS256
                        | Algorithm::HS256
                )
            })
        },
        show: |alg| Shown::Text(alg.to_string()),
    }
}

/// `x-forwarded-for` or `forwarded`, in any case.
pub(super) fn client_ip_header() -> Parsed<ClientIpHeader> {
    Parsed {
        expected: "x-forwarded-for or forwarded",
        parse: |text| match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ClientIpHeader::XForwardedFor),
            "forwarded" => Some(ClientIpHeader::Forwarded),
            _ => None,
        },
        show: |header| Shown::Text(header.name().to_owned()),
    }
}

/// `allowed`, `always` or `off`, in any case.
pub(super) fn cookie_mode() -> Parsed<CookieMode> {
    Parsed {
        expected: "allowed, always or off",
        parse: |text| match text.to_ascii_lowercase().as_str() {
            "allowed" => Some(CookieMode::Allowed),
            "always" => Some(CookieMode::Always),
            "off" => Some(CookieMode::Off),
            _ => None,
        },
        show: |mode| Shown::Text(mode.name().to_owned()),
    }
}

/// `strict` or `lax`, in any case (`none` would send the cookies on
/// cross-site requests: not offered).
pub(super) fn same_site() -> Parsed<SameSite> {
    Parsed {
        expected: "strict or lax",
        parse: |text| match text.to_ascii_lowercase().as_str() {
            "strict" => Some(SameSite::Strict),
            "lax" => Some(SameSite::Lax),
            _ => None,
        },
        show: |same_site| Shown::Text(same_site.name().to_owned()),
    }
}

/// A comma-separated list of web origins (`https://app.example.com`,
/// `http://localhost:5173`); blank is none.
pub(super) fn origin_list() -> Parsed<Vec<String>> {
    Parsed {
        expected: "a comma-separated list of origins like https://app.example.com (scheme, host and optional port; no path)",
        parse: |text| {
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(parse_origin)
                .collect()
        },
        show: |origins| Shown::Text(origins.join(",")),
    }
}

/// `http(s)://host[:port]` (a trailing `/` allowed), lower-cased, without
/// the scheme's default port: the form browsers send in `Origin`.
pub fn parse_origin(text: &str) -> Option<String> {
    let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = text.split_once("://")?;
    let default_port = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            inside.parse::<std::net::Ipv6Addr>().ok()?;
            (inside, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return None;
    }
    let origin = format!("{scheme}://{authority}");
    Some(
        origin
            .strip_suffix(default_port)
            .map_or_else(|| origin.clone(), str::to_owned),
    )
}

/// A header-name prefix or a cookie name: an RFC 9110 token (letters,
/// digits and `!#$%&'*+-.^_`|~`), at most 64 characters, so that it can
/// never split a header line or a cookie pair.
pub(super) fn http_token(expected: &'static str) -> Parsed<String> {
    Parsed {
        expected,
        parse: |text| {
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            (!text.is_empty() && text.len() <= 64 && text.bytes().all(tchar))
                .then(|| text.to_owned())
        },
        show: |text| Shown::Text(text.clone()),
    }
}

/// An IPv6 prefix length; /0 would put every client in one bucket.
pub(super) fn ipv6_prefix_len() -> Parsed<u8> {
    Parsed {
        expected: "a prefix length from 1 to 128",
        parse: |text| text.parse().ok().filter(|len| (1..=128).contains(len)),
        show: |len| Shown::Bare(len.to_string()),
    }
}

/// A niceness from 0 (the server's own priority) to 19 (the lowest).
pub(super) fn niceness() -> Parsed<u8> {
    Parsed {
        expected: "a niceness from 0 to 19",
        parse: |text| text.parse().ok().filter(|n| *n <= 19),
        show: |n| Shown::Bare(n.to_string()),
    }
}

/// A comma-separated list of CIDR ranges or bare addresses; blank is none.
pub(super) fn cidr_list() -> Parsed<Vec<ipnet::IpNet>> {
    Parsed {
        expected: "a comma-separated list of addresses or CIDR ranges like 10.0.0.0/8, ::1",
        parse: parse_cidrs,
        show: |nets| {
            Shown::Text(
                nets.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
        },
    }
}

/// Text as written.
pub(super) fn text() -> Verbatim<String> {
    Verbatim {
        from_text: str::to_owned,
        show: |text| Shown::Text(text.clone()),
    }
}

/// A file or directory path as written.
pub(super) fn path() -> Verbatim<PathBuf> {
    Verbatim {
        // Not `PathBuf::from`: its `From<&str>` impl is for one lifetime,
        // and the field needs a parser for any.
        from_text: |text| PathBuf::from(text),
        show: |path| Shown::Text(path.display().to_string()),
    }
}

/// A secret: wiped on drop, printed as `[redacted]`.
pub(super) fn secret() -> Verbatim<Secret> {
    Verbatim {
        from_text: |text| Secret::from(text.to_owned()),
        show: |_| Shown::Redacted("[redacted]".to_owned()),
    }
}

/// A URL that may carry a password: printed with the password redacted.
pub(super) fn secret_url() -> Verbatim<Secret> {
    Verbatim {
        from_text: |text| Secret::from(text.to_owned()),
        show: |url| {
            let redacted = redact_url(url.expose_secret());
            if redacted == url.expose_secret() {
                Shown::Text(redacted)
            } else {
                Shown::Redacted(redacted)
            }
        },
    }
}

/// `json`, or `text` for one plain line per event (`pretty`, its earlier
/// name, is read as `text`).
pub(super) fn log_format() -> Parsed<LogFormat> {
    Parsed {
        expected: "json, text or pretty",
        parse: |text| match text.to_ascii_lowercase().as_str() {
            "json" => Some(LogFormat::Json),
            "text" | "pretty" => Some(LogFormat::Text),
            _ => None,
        },
        show: |format| Shown::Text(format.name().to_owned()),
    }
}

/// A duration as an operator writes it, and as humantime reads it back:
/// the largest units that are exact, so `90d`, `14d`, `15m`, `1h30m`
/// (never months or years, whose length humantime fixes at 30.44 and
/// 365.25 days, and never weeks, which the README does not use).
pub(super) fn format_duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut rest = duration.as_nanos();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, nanos) in UNITS {
        let count = rest / nanos;
        if count > 0 {
            text.push_str(&format!("{count}{unit}"));
            rest %= nanos;
        }
    }
    text
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
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    // The authority ends at the first '/'; its userinfo at the *last* '@'
    // (a password may hold '@', the host never does).
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, Some(path)),
        None => (rest, None),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:[redacted]@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}");
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    if let Some(query) = query {
        // Drivers also take a password as a parameter (`password=`,
        // `sslpassword=`, Redis `password=`).
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=[redacted]")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}
