//! JSON Web Keys (RFC 7517) and key sets, as plain serde types.
//!
//! Private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) are held in
//! [`JwkSecret`], which is zeroized on drop and never shown by `Debug`.

use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::b64;

/// A private JWK member: base64url text that is wiped from memory on drop and
/// printed as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct JwkSecret(Zeroizing<String>);

impl JwkSecret {
    /// Wraps base64url text.
    pub fn new(text: String) -> Self {
        JwkSecret(Zeroizing::new(text))
    }

    /// The base64url text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JwkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for JwkSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JwkSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(JwkSecret::new)
    }
}

/// One JSON Web Key. Members tokengate does not use (`x5c`, `x5t`, …) are
/// ignored on input and never used to find or trust a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `RSA`, `EC`, `OKP` or `oct`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use: `sig` or `enc`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Permitted operations (`sign`, `verify`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Curve name, for `EC` and `OKP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public x coordinate (EC) or public key (OKP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Public y coordinate (EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Private key (EC, OKP) or private exponent (RSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<JwkSecret>,
    /// RSA first prime factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<JwkSecret>,
    /// RSA second prime factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<JwkSecret>,
    /// RSA first CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<JwkSecret>,
    /// RSA second CRT exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dq: Option<JwkSecret>,
    /// RSA CRT coefficient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qi: Option<JwkSecret>,
    /// RSA other primes; present only to refuse multi-prime keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oth: Option<serde_json::Value>,
    /// Symmetric key value (`oct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<JwkSecret>,
}

impl Jwk {
    /// Whether the JWK carries private material.
    pub fn is_private(&self) -> bool {
        self.d.is_some() || self.k.is_some()
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url) of the key's required
    /// public members, or `None` if they are missing. tokengate uses it as the
    /// default `kid` of asymmetric keys.
    pub fn thumbprint(&self) -> Option<String> {
        // Members in lexicographic order, no whitespace (RFC 7638 §3).
        let canonical = match self.kty.as_str() {
            "EC" => serde_json::json!({
                "crv": self.crv.as_ref()?, "kty": "EC", "x": self.x.as_ref()?, "y": self.y.as_ref()?
            }),
            "OKP" => serde_json::json!({
                "crv": self.crv.as_ref()?, "kty": "OKP", "x": self.x.as_ref()?
            }),
            "RSA" => serde_json::json!({
                "e": self.e.as_ref()?, "kty": "RSA", "n": self.n.as_ref()?
            }),
            "oct" => serde_json::json!({ "k": self.k.as_ref()?.expose(), "kty": "oct" }),
            _ => return None,
        };
        // serde_json's default map is ordered by key, which is what RFC 7638 needs.
        let text = serde_json::to_string(&canonical).ok()?;
        Some(b64::encode(digest::digest(
            &digest::SHA256,
            text.as_bytes(),
        )))
    }

    /// A copy with every private member removed.
    pub fn to_public(&self) -> Jwk {
        Jwk {
            d: None,
            p: None,
            q: None,
            dp: None,
            dq: None,
            qi: None,
            oth: None,
            k: None,
            ..self.clone()
        }
    }
}

/// A JWK Set (RFC 7517 §5), the document served at `jwks_uri`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap_or_default();
        assert_eq!(
            jwk.thumbprint().as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn debug_never_shows_private_members() {
        let jwk = Jwk {
            kty: "oct".into(),
            k: Some(JwkSecret::new(
                "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw".into(),
            )),
            ..Jwk::default()
        };
        let shown = format!("{jwk:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert!(jwk.to_public().k.is_none());
    }
}
