//! The compact JWS serialization (RFC 7515 §7.1), parsed strictly.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::b64;
use crate::error::Error;

/// The protected header of a verified token: what tokengate read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm, equal to the verifying key's.
    pub alg: Algorithm,
    /// The key id, if the token carried one.
    pub kid: Option<String>,
    /// The media type (`JWT`, `at+jwt`, …), if any.
    pub typ: Option<String>,
    /// The content type, if any.
    pub cty: Option<String>,
}

/// The header members tokengate reads. Everything else is ignored: notably
/// `jku`, `x5u`, `jwk` and `x5c` are never used to find or trust a key.
/// Serde's derive refuses a member that appears twice, so a header cannot say
/// `alg` two ways.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    b64: Option<Value>,
}

/// Records that a member is present even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A split and decoded token whose signature is not yet checked.
pub(crate) struct Unverified<'a> {
    pub signing_input: &'a str,
    pub alg_name: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub cty: Option<String>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS, checking the length first and the
/// header's `crit` and `b64` members. No key is consulted here.
pub(crate) fn parse(token: &str, max_len: usize) -> Result<Unverified<'_>, Error> {
    if token.len() > max_len {
        return Err(Error::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    // The signing input is everything before the last dot: taken by
    // splitting, not by index arithmetic on the sender's text.
    let three_parts = token
        .rsplit_once('.')
        .and_then(|(signing_input, signature_b64)| {
            let (header_b64, payload_b64) = signing_input.split_once('.')?;
            (!payload_b64.contains('.')).then_some((
                signing_input,
                header_b64,
                payload_b64,
                signature_b64,
            ))
        });
    let Some((signing_input, header_b64, payload_b64, signature_b64)) = three_parts else {
        return Err(Error::Malformed(
            "a compact JWS has exactly three dot-separated parts",
        ));
    };
    let header_bytes =
        b64::decode(header_b64).map_err(|_| Error::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| Error::Malformed("header is not a JSON object with a string alg"))?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: a recipient that does not understand a listed
        // extension must reject the token; tokengate implements none.
        return Err(Error::UnsupportedCritical);
    }
    match header.b64 {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(Error::UnencodedPayload),
        Some(_) => return Err(Error::Malformed("header b64 is not a boolean")),
    }
    let payload =
        b64::decode(payload_b64).map_err(|_| Error::Malformed("payload is not base64url"))?;
    let signature =
        b64::decode(signature_b64).map_err(|_| Error::Malformed("signature is not base64url"))?;
    Ok(Unverified {
        signing_input,
        alg_name: header.alg,
        kid: header.kid,
        typ: header.typ,
        cty: header.cty,
        payload,
        signature,
    })
}

/// The payload of a verified JWS as a JSON object, refusing one that names a
/// member twice at any depth. Parsers disagree on `{"exp":1,"exp":2}`
/// (serde_json keeps the last, others the first or refuse), so a payload that
/// says a claim two ways could mean one thing here and another to the next
/// verifier: it is no token at all (RFC 7519 §4 lets a JWT parser refuse it).
pub(crate) fn payload_object(payload: &[u8]) -> Result<Map<String, Value>, Error> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
        return Err(Error::Malformed("payload is not a JSON object"));
    };
    // A second pass over the few hundred bytes of a claims set: serde_json
    // builds its `Value` without telling us a name came back.
    serde_json::from_slice::<MembersOnce>(payload)
        .map_err(|_| Error::Malformed("payload names a member twice"))?;
    Ok(map)
}

/// Any JSON value in which no object names a member twice (names compared
/// after unescaping, so `"exp"` and `"\u0065xp"` are one). Reads nothing else.
struct MembersOnce;

impl<'de> Deserialize<'de> for MembersOnce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MembersOnceVisitor)
    }
}

struct MembersOnceVisitor;

impl<'de> Visitor<'de> for MembersOnceVisitor {
    type Value = MembersOnce;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_unit<E: de::Error>(self) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_none<E: de::Error>(self) -> Result<MembersOnce, E> {
        Ok(MembersOnce)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<MembersOnce, A::Error> {
        while items.next_element::<MembersOnce>()?.is_some() {}
        Ok(MembersOnce)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<MembersOnce, A::Error> {
        let mut names = BTreeSet::new();
        while let Some(name) = members.next_key::<String>()? {
            if !names.insert(name) {
                return Err(de::Error::custom("a member named twice"));
            }
            members.next_value::<MembersOnce>()?;
        }
        Ok(MembersOnce)
    }
}
