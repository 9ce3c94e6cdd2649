//! Fuzz body: arbitrary bytes as a compact JWS through `KeyRing::verify`
//! with a policy that requires `typ`, over a ring with one key of each
//! family. The keys are fixed so that seed tokens signed by them reach the
//! claim checks. Shared by `fuzz_targets/compact_verify.rs` and the stable
//! replay test `crates/tokengate/tests/fuzz_corpus.rs`.
#![allow(dead_code, clippy::expect_used)]

use std::sync::OnceLock;

use tokengate::{AccessClaims, Algorithm, KeyRing, Kid, SigningKey, UnixTime, VerifyPolicy};

/// The issuer and audience the policy requires.
pub const ISS: &str = "https://auth.example";
/// The audience the policy requires.
pub const AUD: &str = "api";
/// The verification time: seed tokens are signed at `NOW` for 15 minutes.
pub const NOW: i64 = 1_700_000_000;
/// The key ids in the ring, one per family.
pub const KIDS: [&str; 4] = ["hs256", "es256", "eddsa", "rs256"];

// A throw-away HMAC secret (48 random bytes, base64): protects nothing.
const HS256_SECRET: &[u8] = b"8O4Km5btHG3H4u8m2FHysGGKDR2d2xHcT1mCETISp8CjKUjgWrrSeG5eGbGvZbu3";
// A throw-away Ed25519 key (`openssl genpkey -algorithm ed25519`).
const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGCkf9eB25mja7vXVnRVUXUmxHGwPWaYZ4hYI/zLtQxX
-----END PRIVATE KEY-----
";
// Throw-away P-256 and RSA-2048 keys from the library's test fixtures.
const EC_PEM: &str = include_str!("../../crates/tokengate/tests/fixtures/ec-p256-sec1.pem");
const RSA_PEM: &str = include_str!("../../crates/tokengate/tests/fixtures/rsa2048-pkcs1.pem");

fn kid(name: &str) -> Option<Kid> {
    Some(Kid::new(name).expect("fixed kid"))
}

/// The ring, built once.
pub fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(build_ring)
}

/// A new ring: HS256, ES256, EdDSA and RS256, all fixed keys; `hs256` active.
pub fn build_ring() -> KeyRing {
    {
        let keys = [
            SigningKey::from_hmac_secret(
                Algorithm::HS256,
                HS256_SECRET,
                Kid::new(KIDS[0]).expect("kid"),
            ),
            SigningKey::from_pem(EC_PEM.as_bytes(), Some(Algorithm::ES256), kid(KIDS[1])),
            SigningKey::from_pem(ED25519_PEM.as_bytes(), Some(Algorithm::EdDSA), kid(KIDS[2])),
            SigningKey::from_pem(RSA_PEM.as_bytes(), Some(Algorithm::RS256), kid(KIDS[3])),
        ];
        let mut ring = KeyRing::new();
        for key in keys {
            ring.add_signing_key(key.expect("fixed key loads"))
                .expect("distinct kids");
        }
        ring.set_active(KIDS[0]).expect("kid in ring");
        ring
    }
}

/// Issuer, audience and `typ: at+jwt` required.
pub fn policy() -> &'static tokengate::VerifyPolicy {
    static POLICY: OnceLock<VerifyPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        VerifyPolicy::builder()
            .issuer(ISS)
            .audience(AUD)
            .typ("at+jwt")
            .build()
            .expect("valid policy")
    })
}

/// The property: verification returns, `Ok` or `Err`, and never panics.
pub fn run(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let now = UnixTime::from_secs(NOW + 10);
    let _ = ring().verify::<serde_json::Value>(&token, policy(), now);
    let _ = ring().verify::<AccessClaims>(&token, policy(), now);
}
