//! How a setting's text becomes its typed value, and how the value is shown
//! by `--print-config`: the "kind" column of the table in `table.rs`.
//!
//! Three shapes cover every setting: [`Parsed`] values (numbers, durations,
//! addresses…) are trimmed and must parse; [`Verbatim`] values (names, paths,
//! secrets) are taken as written; [`Optional`] wraps either so that a blank
//! value means "unset".

use secrecy::ExposeSecret as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokengate::Algorithm;

use super::{ClientIpHeader, ConfigError, Secret, Source};

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

    /// The value as `--print-config` prints it (before TOML quoting).
    fn show(&self, value: &Self::Value) -> String;
}

/// A value parsed from the trimmed text; a failure names the key, the text,
/// where it came from and what was expected.
pub(super) struct Parsed<T> {
    /// What the setting takes, completing "… is not ".
    pub expected: &'static str,
    /// The parser: `None` for text that is not a `T`.
    pub parse: fn(&str) -> Option<T>,
    /// The inverse of `parse`, for `--print-config`.
    pub show: fn(&T) -> String,
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

    fn show(&self, value: &T) -> String {
        (self.show)(value)
    }
}

/// A value taken as written (not trimmed): it cannot be malformed, so no
/// message ever echoes it — which is why secrets are of this kind.
pub(super) struct Verbatim<T> {
    /// The value for the text (empty when no layer sets the key).
    pub from_text: fn(&str) -> T,
    /// How `--print-config` shows it.
    pub show: fn(&T) -> String,
}

impl<T> Kind for Verbatim<T> {
    type Value = T;

    fn read(&self, _key: &'static str, found: Option<(&str, &Source)>) -> Result<T, ConfigError> {
        Ok((self.from_text)(found.map_or("", |(text, _)| text)))
    }

    fn is_blank(&self, text: &str) -> bool {
        text.is_empty()
    }

    fn show(&self, value: &T) -> String {
        (self.show)(value)
    }
}

/// A setting that may be left unset: absent or blank is `None`, printed as
/// an empty string.
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

    fn show(&self, value: &Self::Value) -> String {
        value
            .as_ref()
            .map(|value| self.0.show(value))
            .unwrap_or_default()
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
        show: |duration| humantime::format_duration(*duration).to_string(),
    }
}

/// A whole number of the field's type (its range is the type's).
pub(super) fn number<T: FromStr + ToString>() -> Parsed<T> {
    Parsed {
        expected: "a whole number",
        parse: |text| text.parse().ok(),
        show: T::to_string,
    }
}

/// `true` or `false`.
pub(super) fn boolean() -> Parsed<bool> {
    Parsed {
        expected: "true or false",
        parse: |text| text.parse().ok(),
        show: bool::to_string,
    }
}

/// A socket address; `expected` gives an example fitting the setting.
pub(super) fn address(expected: &'static str) -> Parsed<SocketAddr> {
    Parsed {
        expected,
        parse: |text| text.parse().ok(),
        show: SocketAddr::to_string,
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
        show: Algorithm::to_string,
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
        show: |header| header.name().to_owned(),
    }
}

/// An IPv6 prefix length; /0 would put every client in one bucket.
pub(super) fn ipv6_prefix_len() -> Parsed<u8> {
    Parsed {
        expected: "a prefix length from 1 to 128",
        parse: |text| text.parse().ok().filter(|len| (1..=128).contains(len)),
        show: u8::to_string,
    }
}

/// A comma-separated list of CIDR ranges or bare addresses; blank is none.
pub(super) fn cidr_list() -> Parsed<Vec<ipnet::IpNet>> {
    Parsed {
        expected: "a comma-separated list of addresses or CIDR ranges like 10.0.0.0/8, ::1",
        parse: parse_cidrs,
        show: |nets| {
            nets.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
    }
}

/// Text as written.
pub(super) fn text() -> Verbatim<String> {
    Verbatim {
        from_text: str::to_owned,
        show: String::clone,
    }
}

/// A file or directory path as written.
pub(super) fn path() -> Verbatim<PathBuf> {
    Verbatim {
        // Not `PathBuf::from`: its `From<&str>` impl is for one lifetime,
        // and the field needs a parser for any.
        from_text: |text| PathBuf::from(text),
        show: |path| path.display().to_string(),
    }
}

/// A secret: wiped on drop, printed as `[redacted]`.
pub(super) fn secret() -> Verbatim<Secret> {
    Verbatim {
        from_text: |text| Secret::from(text.to_owned()),
        show: |_| "[redacted]".to_owned(),
    }
}

/// A URL that may carry a password: printed with the password redacted.
pub(super) fn secret_url() -> Verbatim<Secret> {
    Verbatim {
        from_text: |text| Secret::from(text.to_owned()),
        show: |url| redact_url(url.expose_secret()),
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
pub(super) fn redact_url(url: &str) -> String {
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
