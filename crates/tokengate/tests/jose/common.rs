use serde_json::{Value, json};
use tokengate::{Algorithm, KeyRing, SigningKey, UnixTime, VerifyPolicy, b64};

pub const NOW: i64 = 1_700_000_000;
pub const ISS: &str = "https://auth.example";
pub const AUD: &str = "api";

pub fn now() -> UnixTime {
    UnixTime::from_secs(NOW)
}

pub fn policy() -> VerifyPolicy {
    VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

pub fn any_policy() -> VerifyPolicy {
    VerifyPolicy::builder()
        .any_issuer()
        .any_audience()
        .build()
        .unwrap()
}

pub fn key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg, None).unwrap()
}

pub fn ring(alg: Algorithm) -> KeyRing {
    KeyRing::with_signing_key(key(alg))
}

/// Claims that pass `policy()` at `now()`.
pub fn good_claims() -> Value {
    json!({"iss": ISS, "sub": "user-1", "aud": AUD, "iat": NOW, "exp": NOW + 900})
}

pub fn b64_json(v: &Value) -> String {
    b64::encode(serde_json::to_vec(v).unwrap())
}

/// A token with exactly this header and payload text, correctly signed by
/// `key`: the signature is valid, so a rejection is the policy's doing.
pub fn forge_raw(header: &Value, payload: &[u8], key: &SigningKey) -> String {
    let input = format!("{}.{}", b64_json(header), b64::encode(payload));
    let sig = key.sign_bytes(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

pub fn forge(header: &Value, claims: &Value, key: &SigningKey) -> String {
    forge_raw(header, &serde_json::to_vec(claims).unwrap(), key)
}

/// The usual header for `key`.
pub fn header(key: &SigningKey) -> Value {
    json!({"alg": key.alg().name(), "kid": key.kid().as_str(), "typ": "JWT"})
}
