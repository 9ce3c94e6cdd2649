//! Fuzz body: bytes as a JWK and as a JWK Set, then every key loader that
//! takes them. Shared by `fuzz_targets/jwk_parse.rs` and the stable replay
//! test `crates/tokengate/tests/fuzz_corpus.rs`.

use tokengate::{Jwk, JwkSet, KeyRing, SigningKey, VerifyingKey};

/// The property: parsing and loading return, `Ok` or `Err`, and never panic.
pub fn run(data: &[u8]) {
    if let Ok(jwk) = serde_json::from_slice::<Jwk>(data) {
        let _ = jwk.is_private();
        let _ = jwk.thumbprint();
        let public = jwk.to_public();
        let _ = VerifyingKey::from_jwk(&jwk);
        let _ = VerifyingKey::from_jwk(&public);
        let _ = SigningKey::from_jwk(&jwk);
        let _ = serde_json::to_vec(&jwk);
    }
    if let Ok(set) = serde_json::from_slice::<JwkSet>(data) {
        let (ring, _skipped) = KeyRing::from_jwks(&set);
        let _ = ring.jwks();
        let _ = serde_json::to_vec(&set);
    }
}
