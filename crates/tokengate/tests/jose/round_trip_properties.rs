//! A property-test round trip for every parser: what our own writer makes,
//! the parser reads back to the same thing, for generated inputs (claims,
//! key ids, bytes, header spellings). The never-panics side of the same
//! parsers is in `never_panics.rs` and the fuzz targets.

use std::rc::Rc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokengate::{Algorithm, Jwk, JwkSet, KeyRing, Kid, SignOptions, SigningKey, VerifyingKey, b64};

use crate::common::*;

/// The algorithms of each key family (RSA key generation is slow: one key
/// of each kind per thread, re-labelled with the generated kid on export).
const ALGS: [Algorithm; 5] = [
    Algorithm::HS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS256,
];

thread_local! {
    static KEYS: Vec<Rc<SigningKey>> = ALGS.iter().map(|alg| Rc::new(key(*alg))).collect();
}

fn signing_key(index: usize) -> Rc<SigningKey> {
    KEYS.with(|keys| keys[index % keys.len()].clone())
}

/// The same key under another kid (keys are not `Clone`: a copy is made
/// through an export, on purpose).
fn relabelled(key: &SigningKey, kid: &Kid) -> SigningKey {
    match key.to_secret_jwk() {
        Some(mut jwk) => {
            jwk.kid = Some(kid.as_str().to_owned());
            SigningKey::from_jwk(&jwk).unwrap()
        }
        None => SigningKey::from_pkcs8_der(
            &key.to_pkcs8_der().unwrap(),
            Some(key.alg()),
            Some(kid.clone()),
        )
        .unwrap(),
    }
}

/// Any key id the library accepts: 1 to 255 characters, no control ones.
fn kid() -> impl Strategy<Value = Kid> {
    "[^\\p{Cc}]{1,40}".prop_map(|text| Kid::new(text).unwrap())
}

/// JSON values as claims carry them, nested a little.
fn claim_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Private claims: any names but the registered ones (whose types the
/// verifier checks), any values.
fn private_claims() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map("x_\\PC{0,12}", claim_value(), 0..6)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Compact serialization: the claims signed are the claims verified,
    /// member for member, with the registered ones as the policy needs.
    #[test]
    fn signed_claims_verify_to_the_same_claims(
        index in 0..ALGS.len(),
        sub in "\\PC{1,40}",
        private in private_claims(),
    ) {
        let key = signing_key(index);
        let ring = KeyRing::with_signing_key(relabelled(&key, key.kid()));
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(ISS));
        claims.insert("aud".into(), json!(AUD));
        claims.insert("sub".into(), json!(sub));
        claims.extend(private.clone());
        let token = ring
            .sign(&Value::Object(claims.clone()), &SignOptions::default(), now())
            .unwrap();
        let verified: Value = ring.verify(&token, &policy(), now()).unwrap().claims;
        for (name, value) in &claims {
            prop_assert_eq!(&verified[name], value, "claim {}", name);
        }
        prop_assert_eq!(verified["iat"].as_i64(), Some(NOW));
    }

    /// JWK: a key exported as a JWK (public, and secret for HMAC) and read
    /// back is the same key: same kid, algorithm and RFC 7638 thumbprint,
    /// and it verifies what the original signed.
    #[test]
    fn jwk_export_reads_back_to_the_same_key(index in 0..ALGS.len(), kid in kid()) {
        let key = relabelled(&signing_key(index), &kid);
        prop_assert_eq!(key.kid(), &kid);
        let exported = match key.alg() {
            Algorithm::HS256 => key.to_secret_jwk().unwrap(),
            _ => key.public_jwk().unwrap().clone(),
        };
        let text = serde_json::to_string(&exported).unwrap();
        let parsed: Jwk = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(parsed.thumbprint(), exported.thumbprint());
        let verifying = VerifyingKey::from_jwk(&parsed).unwrap();
        prop_assert_eq!(verifying.kid(), &kid);
        prop_assert_eq!(verifying.alg(), key.alg());
        let token = KeyRing::with_signing_key(key)
            .sign(&good_claims(), &SignOptions::default(), now())
            .unwrap();
        prop_assert!(KeyRing::with_verifying_key(verifying).verify::<Value>(&token, &policy(), now()).is_ok());
    }

    /// PEM and DER: a private key written as PKCS#8 (PEM and DER) and its
    /// public key as SPKI PEM read back to keys that sign and verify with
    /// the original.
    #[test]
    fn pem_and_der_read_back_to_the_same_key(index in 1..ALGS.len(), kid in kid()) {
        let original = signing_key(index);
        let alg = original.alg();
        let from_pem = SigningKey::from_pem(original.to_pkcs8_pem().unwrap().as_bytes(), Some(alg), Some(kid.clone())).unwrap();
        let from_der = SigningKey::from_pkcs8_der(&original.to_pkcs8_der().unwrap(), Some(alg), Some(kid.clone())).unwrap();
        let public_pem = original.verifying_key().to_public_pem().unwrap();
        let public = VerifyingKey::from_public_pem(public_pem.as_bytes(), Some(alg), Some(kid.clone())).unwrap();
        prop_assert_eq!(from_pem.public_jwk().unwrap().thumbprint(), original.public_jwk().unwrap().thumbprint());
        prop_assert_eq!(from_der.public_jwk().unwrap().thumbprint(), original.public_jwk().unwrap().thumbprint());
        for signer in [from_pem, from_der] {
            let token = KeyRing::with_signing_key(signer)
                .sign(&good_claims(), &SignOptions::default(), now())
                .unwrap();
            prop_assert!(KeyRing::with_verifying_key(public.clone()).verify::<Value>(&token, &policy(), now()).is_ok());
        }
    }

    /// JWK Set: a ring's published document read back holds the same kids
    /// with the same keys.
    #[test]
    fn jwks_reads_back_to_the_same_ring(kids in proptest::collection::btree_set(kid(), 1..4)) {
        let mut ring = KeyRing::new();
        for (i, kid) in kids.iter().enumerate() {
            ring.add_signing_key(relabelled(&signing_key(1 + i % (ALGS.len() - 1)), kid)).unwrap();
        }
        let text = serde_json::to_string(&ring.jwks()).unwrap();
        let set: JwkSet = serde_json::from_str(&text).unwrap();
        let (read, skipped) = KeyRing::from_jwks(&set);
        prop_assert!(skipped.is_empty());
        let mut expected: Vec<&str> = kids.iter().map(Kid::as_str).collect();
        let mut got: Vec<&str> = read.kids().collect();
        expected.sort_unstable();
        got.sort_unstable();
        prop_assert_eq!(got, expected);
        for kid in &kids {
            prop_assert_eq!(read.get(kid.as_str()).unwrap().to_jwk(), ring.get(kid.as_str()).unwrap().to_jwk());
        }
    }

    /// base64url: any bytes encode to text that decodes to them, and the
    /// text is canonical (no padding, URL alphabet).
    #[test]
    fn base64url_reads_back_to_the_same_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = b64::encode(&bytes);
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(b64::decode(&text).unwrap(), bytes);
    }
}
