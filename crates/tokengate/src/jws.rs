//! The compact JWS serialization (RFC 7515 §7.1), parsed strictly.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

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
///
/// One pass: the value is built by our own visitor, which sees every member
/// name as it goes into its object (serde_json's `Value` would keep the last
/// silently). Parsing the payload twice, once to a `Value` and once to look
/// for repeated names, was the largest share of the JOSE layer's own cost.
pub(crate) fn payload_object(payload: &[u8]) -> Result<Map<String, Value>, Error> {
    let named_twice = Cell::new(false);
    let mut json = serde_json::Deserializer::from_slice(payload);
    let parsed = UniqueMembers(&named_twice)
        .deserialize(&mut json)
        .and_then(|value| json.end().map(|()| value));
    match parsed {
        _ if named_twice.get() => Err(Error::Malformed("payload names a member twice")),
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::Malformed("payload is not a JSON object")),
    }
}

/// Builds any JSON value in which no object names a member twice (names
/// compared after unescaping, so `"exp"` and `"\u0065xp"` are one), and
/// records a repeated name in the cell so the caller can say which error it
/// was. The depth limit is serde_json's own (128 levels).
#[derive(Clone, Copy)]
struct UniqueMembers<'c>(&'c Cell<bool>);

impl<'de> DeserializeSeed<'de> for UniqueMembers<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueMembers<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity: serde_json refuses an
        // out-of-range number before it gets here, so `None` is unreachable
        // and refused rather than mapped to `null`.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| de::Error::custom("a number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut list = Vec::with_capacity(items.size_hint().unwrap_or(0).min(64));
        while let Some(item) = items.next_element_seed(self)? {
            list.push(item);
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(name) = members.next_key::<String>()? {
            if map.contains_key(&name) {
                self.0.set(true);
                return Err(de::Error::custom("a member named twice"));
            }
            let value = members.next_value_seed(self)?;
            map.insert(name, value);
        }
        Ok(Value::Object(map))
    }
}
