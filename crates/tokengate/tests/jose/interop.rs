//! Interoperability with the `jsonwebtoken` crate, the most used Rust JWT
//! library: tokens cross in both directions, and its acceptances are ours.

use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde_json::Value;
use tokengate::{Algorithm, KeyRing, SignOptions, SigningKey, VerifyingKey};

use crate::common::*;

fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    alg.name().parse().unwrap()
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(jwt_alg(alg));
    v.set_issuer(&[ISS]);
    v.set_audience(&[AUD]);
    // jsonwebtoken reads the real clock: the claims below are made for it.
    v
}

fn live_claims() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    serde_json::json!({"iss": ISS, "aud": AUD, "sub": "u", "iat": now, "exp": now + 600})
}

fn wall_clock() -> tokengate::UnixTime {
    tokengate::UnixTime::from_system_time(std::time::SystemTime::now())
}

#[test]
fn our_tokens_verify_in_jsonwebtoken() {
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let k = key(alg);
        let decoding = match k.verifying_key().to_public_pem() {
            Some(pem) => match alg {
                Algorithm::ES256 | Algorithm::ES384 => {
                    DecodingKey::from_ec_pem(pem.as_bytes()).unwrap()
                }
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            },
            None => {
                let secret =
                    tokengate::b64::decode(k.to_secret_jwk().unwrap().k.unwrap().expose()).unwrap();
                DecodingKey::from_secret(&secret)
            }
        };
        let token = KeyRing::with_signing_key(k)
            .sign(&live_claims(), &SignOptions::default(), wall_clock())
            .unwrap();
        let data = decode::<Value>(&token, &decoding, &validation(alg)).unwrap();
        assert_eq!(data.claims["sub"], "u", "{alg}");
    }
}

#[test]
fn jsonwebtoken_tokens_verify_in_tokengate() {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let k = key(alg);
        let pem = k.to_pkcs8_pem().unwrap();
        let encoding = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(jwt_alg(alg));
        header.kid = Some(k.kid().as_str().to_owned());
        let token = encode(&header, &live_claims(), &encoding).unwrap();
        let ring = KeyRing::with_verifying_key(
            VerifyingKey::from_public_pem(
                k.verifying_key().to_public_pem().unwrap().as_bytes(),
                Some(alg),
                Some(k.kid().clone()),
            )
            .unwrap(),
        );
        ring.verify::<Value>(&token, &policy(), wall_clock())
            .unwrap();
    }
    // And an HS256 token made with a strong shared secret.
    let k = SigningKey::generate(Algorithm::HS256, None).unwrap();
    let secret = tokengate::b64::decode(k.to_secret_jwk().unwrap().k.unwrap().expose()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(k.kid().as_str().to_owned());
    let token = encode(&header, &live_claims(), &EncodingKey::from_secret(&secret)).unwrap();
    KeyRing::with_signing_key(k)
        .verify::<Value>(&token, &policy(), wall_clock())
        .unwrap();
}
