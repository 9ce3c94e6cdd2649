//! Verifies one access token with the library alone, as a resource server
//! written against `tokengate` would: keys from a JWK or JWKS file, and an
//! explicit policy (this issuer, this audience, header `typ: at+jwt`, `sub`
//! required, `exp` always).
//!
//! ```text
//! cargo run -p tokengate --example verify_token -- KEYS.json ISSUER AUDIENCE TOKEN|-
//! ```
//!
//! `KEYS.json` is a JWKS (`{"keys": [...]}`) or a single JWK (an `oct` JWK
//! for HS256). Exit 0 prints the claims; exit 1 prints why the token was
//! rejected (`rejected: signature verification failed`); exit 2 is bad
//! input. `scripts/interop` feeds it tokens that PyJWT and Node's `jose`
//! signed.

use std::io::Read;
use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::Value;
use tokengate::{Jwk, JwkSet, KeyRing, UnixTime, VerifyPolicy, VerifyingKey};

/// The ring of the keys in `path`; a JWKS entry that cannot be used is
/// reported, as a verifier's operator would want to know.
fn load_keys(path: &str) -> Result<KeyRing, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if value.get("keys").is_some() {
        let set: JwkSet = serde_json::from_value(value).map_err(|e| format!("{path}: {e}"))?;
        let (ring, skipped) = KeyRing::from_jwks(&set);
        for s in skipped {
            eprintln!(
                "note: skipped key {}: {}",
                s.kid.as_deref().unwrap_or("(no kid)"),
                s.error
            );
        }
        if ring.is_empty() {
            return Err(format!("{path}: no usable signature key"));
        }
        return Ok(ring);
    }
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("{path}: {e}"))?;
    let key = VerifyingKey::from_jwk(&jwk).map_err(|e| format!("{path}: {e}"))?;
    Ok(KeyRing::with_verifying_key(key))
}

fn read_token(arg: &str) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.trim().to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("standard input: {e}"))?;
    Ok(text.trim().to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [keys, issuer, audience, token] = args.as_slice() else {
        eprintln!("usage: verify_token KEYS.json ISSUER AUDIENCE TOKEN|-");
        return ExitCode::from(2);
    };
    let setup = load_keys(keys).and_then(|ring| {
        let policy = VerifyPolicy::builder()
            .issuer(issuer.as_str())
            .audience(audience.as_str())
            .typ("at+jwt")
            .require_claims(["sub"])
            .build()
            .map_err(|e| e.to_string())?;
        Ok((ring, policy, read_token(token)?))
    });
    let (ring, policy, token) = match setup {
        Ok(setup) => setup,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let now = UnixTime::from_system_time(SystemTime::now());
    match ring.verify::<Value>(&token, &policy, now) {
        Ok(verified) => {
            println!("{}", verified.claims);
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("rejected: {error}");
            ExitCode::from(1)
        }
    }
}
