//! Registered claims (RFC 7519 §4.1), checked with strict JSON types, and the
//! standard access-token claims type (RFC 9068).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::policy::VerifyPolicy;
use crate::time::UnixTime;

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names this audience.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(list) => list.iter().any(|a| a == aud),
        }
    }
}

/// The claims of a tokengate access token (RFC 9068 plus `sid` and `roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user id.
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: String,
    /// Session id: the refresh-token family this token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Space-separated OAuth scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Roles granted to the subject.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The subject's email, so that an API (or a proxy's forward-auth)
    /// knows who without a lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The base64url SHA-256 of the session's CSRF token: what binds the
    /// `X-CSRF-Token` of a request authenticated by cookie to this session
    /// (see `guard::CsrfPolicy`, feature `guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_hash: Option<String>,
}

/// Reads a NumericDate claim: absent is `None`; anything but a JSON number
/// (a string, `null`, a boolean) is an error rather than "absent".
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Error> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::InvalidClaimType(name.to_owned())),
        Some(_) => Err(Error::InvalidClaimType(name.to_owned())),
    }
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Error> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::InvalidClaimType(name.to_owned())),
    }
}

fn audience_claim(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, Error> {
    match claims.get("aud") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Error::InvalidClaimType("aud".into()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Error::InvalidClaimType("aud".into())),
    }
}

/// Checks the registered claims against the policy at time `now`, in this
/// order: types of all registered claims, `exp`, `nbf`, `iat`, maximum age,
/// `iss`, `aud`, then the policy's required claims.
pub(crate) fn check(
    claims: &Map<String, Value>,
    policy: &VerifyPolicy,
    now: UnixTime,
) -> Result<(), Error> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let iss = string_claim(claims, "iss")?;
    string_claim(claims, "sub")?;
    string_claim(claims, "jti")?;
    let aud = audience_claim(claims)?;

    let now = now.as_secs() as f64;
    let leeway = policy.leeway as f64;
    let exp = exp.ok_or_else(|| Error::MissingClaim("exp".into()))?;
    // RFC 7519 §4.1.4: the current time must be before `exp`.
    if now >= exp + leeway {
        return Err(Error::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(Error::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(Error::IssuedInFuture);
    }
    if let (Some(max_age), Some(iat)) = (policy.max_age, iat)
        && now - iat > max_age as f64 + leeway
    {
        return Err(Error::TooOld);
    }
    if let Some(issuers) = &policy.issuers {
        let iss = iss.ok_or_else(|| Error::MissingClaim("iss".into()))?;
        if !issuers.iter().any(|i| i == iss) {
            return Err(Error::InvalidIssuer);
        }
    }
    if let Some(audiences) = &policy.audiences {
        let aud = aud.ok_or_else(|| Error::MissingClaim("aud".into()))?;
        if !aud
            .iter()
            .any(|a| audiences.iter().any(|expected| expected == a))
        {
            return Err(Error::InvalidAudience);
        }
    }
    if let Some(missing) = policy
        .required_claims
        .iter()
        .find(|name| !claims.contains_key(name.as_str()))
    {
        return Err(Error::MissingClaim(missing.clone()));
    }
    Ok(())
}

/// Compares media types as RFC 7515 §4.1.9 says: case-insensitively, with
/// `application/` optional.
pub(crate) fn typ_matches(expected: &str, found: &str) -> bool {
    fn strip(t: &str) -> &str {
        const PREFIX: &str = "application/";
        // `typ` is the sender's text: the prefix length may fall inside a
        // multi-byte character, where `split_at_checked` gives `None`
        // (and such a string cannot start with the ASCII prefix anyway).
        match t.split_at_checked(PREFIX.len()) {
            Some((head, rest)) if !rest.is_empty() && head.eq_ignore_ascii_case(PREFIX) => rest,
            _ => t,
        }
    }
    strip(expected).eq_ignore_ascii_case(strip(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_comparison_follows_rfc7515() {
        assert!(typ_matches("at+jwt", "AT+JWT"));
        assert!(typ_matches("at+jwt", "application/at+jwt"));
        assert!(!typ_matches("at+jwt", "JWT"));
        assert!(!typ_matches("at+jwt", "application/"));
    }

    #[test]
    fn typ_with_multibyte_characters_after_eleven_bytes_is_compared_not_sliced() {
        // "application" is 11 bytes: byte 12 falls inside the first 'é'.
        assert!(!typ_matches("at+jwt", "applicationéééé"));
        assert!(!typ_matches("applicationéééé", "at+jwt"));
        assert!(typ_matches("applicationéééé", "APPLICATIONéééé"));
        assert!(typ_matches("é+jwt", "Application/é+jwt"));
        assert!(!typ_matches("at+jwt", "applicatioé/at+jwt"));
    }

    #[test]
    fn audience_accepts_string_or_array() {
        let one: Audience = serde_json::from_str("\"api\"").unwrap_or(Audience::Many(vec![]));
        let many: Audience =
            serde_json::from_str("[\"x\",\"api\"]").unwrap_or(Audience::Many(vec![]));
        assert!(one.contains("api"));
        assert!(many.contains("api"));
        assert!(!many.contains("y"));
    }
}
