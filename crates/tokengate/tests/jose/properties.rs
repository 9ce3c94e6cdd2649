//! Any single-byte change of a valid token must fail verification.

use std::rc::Rc;

use proptest::prelude::*;
use serde_json::Value;
use tokengate::{Algorithm, KeyRing, SignOptions};

use crate::common::*;

fn signed(alg: Algorithm) -> (KeyRing, String) {
    let ring = ring(alg);
    let token = ring
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    (ring, token)
}

/// Replaces byte `index` with `byte`; a result that is not UTF-8 cannot even
/// be handed to the verifier, which counts as rejected.
fn mutated(token: &str, index: usize, byte: u8) -> Option<String> {
    let mut bytes = token.as_bytes().to_vec();
    bytes[index] = byte;
    String::from_utf8(bytes).ok()
}

#[test]
fn every_single_byte_change_is_rejected_exhaustively() {
    // Every position, every printable ASCII replacement: about 25,000
    // variants per algorithm, covering the stray-bit characters too.
    for alg in [Algorithm::HS256, Algorithm::EdDSA] {
        let (ring, token) = signed(alg);
        assert!(ring.verify::<Value>(&token, &policy(), now()).is_ok());
        for index in 0..token.len() {
            for byte in 0x20u8..0x7f {
                if byte == token.as_bytes()[index] {
                    continue;
                }
                if let Some(variant) = mutated(&token, index, byte) {
                    assert!(
                        ring.verify::<Value>(&variant, &policy(), now()).is_err(),
                        "{alg}: byte {index} -> {:?} still verified",
                        byte as char
                    );
                }
            }
        }
    }
}

thread_local! {
    /// One key and token per algorithm per thread: RSA key generation would
    /// otherwise dominate the run.
    static SIGNED: Vec<(Rc<KeyRing>, String)> = Algorithm::ALL
        .iter()
        .map(|alg| {
            let (ring, token) = signed(*alg);
            (Rc::new(ring), token)
        })
        .collect();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_single_byte_change_fails(
        alg_index in 0usize..Algorithm::ALL.len(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let (ring, token) = SIGNED.with(|cache| cache[alg_index].clone());
        let index = position.index(token.len());
        prop_assume!(token.as_bytes()[index] != byte);
        if let Some(variant) = mutated(&token, index, byte) {
            prop_assert!(
                ring.verify::<Value>(&variant, &policy(), now()).is_err(),
                "{} byte {} changed and still verified", Algorithm::ALL[alg_index], index
            );
        }
    }
}
