//! Fuzz body: bytes as a remote JWKS response, through the parsers
//! `tokengate::guard::RemoteJwks` runs on one (the network aside). The
//! first line is the `Cache-Control` header (values separated by `|`, as
//! several header lines), the second the `Age` header, the rest the body.
//! Shared by `fuzz_targets/jwks_document.rs` and the stable replay test
//! `crates/tokengate/tests/fuzz_corpus.rs`.
#![allow(dead_code, clippy::expect_used)]

use std::time::Duration;

use tokengate::KeyFamily;
use tokengate::guard::__fuzz_jwks::read_document;

/// The bounds `RemoteJwksBuilder` applies by default.
pub const MIN_TTL: Duration = Duration::from_secs(30);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The properties: no panic; the freshness stays within the bounds
/// whatever the headers say; a published document never yields a secret
/// or a private key (whoever fetched it could sign with it).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let cache_control = parts.next().unwrap_or_default();
    let age = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let values: Vec<&str> = cache_control.split('|').collect();
    let (ttl, ring) = read_document(&values, age, body.as_bytes());
    assert!(
        (MIN_TTL..=MAX_TTL).contains(&ttl),
        "freshness {ttl:?} outside the bounds"
    );
    if let Ok(ring) = ring {
        assert!(ring.active().is_none(), "a signing key loaded");
        let kids: Vec<String> = ring.kids().map(str::to_owned).collect();
        for kid in &kids {
            let key = ring.get(kid).expect("a listed kid has a key");
            assert_ne!(
                key.alg().family(),
                KeyFamily::Hmac,
                "a symmetric key loaded"
            );
        }
        let _ = serde_json::to_vec(&ring.jwks());
    }
}
