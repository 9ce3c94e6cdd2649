//! Fuzz body: bytes through the PEM and DER key loaders. The first byte
//! picks the algorithm passed (modulo 13: one of `Algorithm::ALL`, or none); the rest is
//! the key. Shared by `fuzz_targets/pem_der.rs` and the stable replay test
//! `crates/tokengate/tests/fuzz_corpus.rs`.

use tokengate::{Algorithm, SigningKey, VerifyingKey};

/// The property: every loader returns, `Ok` or `Err`, and never panics.
pub fn run(data: &[u8]) {
    let (alg, key) = match data.split_first() {
        Some((&pick, rest)) => (
            Algorithm::ALL
                .get(usize::from(pick) % (Algorithm::ALL.len() + 1))
                .copied(),
            rest,
        ),
        None => (None, data),
    };
    // Both with the picked algorithm and without one (the key decides).
    for alg in [alg, None] {
        let _ = SigningKey::from_pem(key, alg, None);
        let _ = SigningKey::from_pkcs8_der(key, alg, None);
        let _ = VerifyingKey::from_public_pem(key, alg, None);
        let _ = VerifyingKey::from_spki_der(key, alg, None);
    }
}
