//! # tokengate
//!
//! JWT signing and verification with a strict, secure-by-default policy.
//!
//! * Every key is bound to one [`Algorithm`] and one [`Kid`]; the verifier
//!   picks the key by `kid` and requires the header's `alg` to equal the key's,
//!   so `alg: none` and RS256/HS256 confusion cannot work.
//! * Weak keys cannot be constructed: short or password-like HMAC secrets and
//!   RSA keys under 2048 bits are refused with an error naming the rule.
//! * [`VerifyPolicy`] always requires `exp`, honours `nbf`/`iat` with a bounded
//!   leeway, and makes the issuer and audience checks an explicit choice.
//! * No I/O, no clock: `now` is a parameter.
//! * The bouncer, behind features: the `guard` module (feature `guard`) verifies requests'
//!   tokens with a key source, a revocation hook and a verified-token cache;
//!   `axum` adds the tower layer and the `Auth`/`OptionalAuth` extractors,
//!   `jwks` the remote JWKS client, `redis` the Redis denylist.
//!
//! ```
//! use std::time::Duration;
//! use tokengate::{AccessClaims, Algorithm, KeyRing, SignOptions, SigningKey, UnixTime, VerifyPolicy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = KeyRing::with_signing_key(SigningKey::generate(Algorithm::ES256, None)?);
//! let now = UnixTime::from_secs(1_700_000_000);
//! let claims = serde_json::json!({"iss": "https://auth.example", "sub": "42", "aud": "api", "roles": ["user"]});
//! let token = ring.sign(&claims, &SignOptions::access_token(Duration::from_secs(900)), now)?;
//!
//! let policy = VerifyPolicy::builder().issuer("https://auth.example").audience("api").typ("at+jwt").build()?;
//! let verified = ring.verify::<AccessClaims>(&token, &policy, now)?;
//! assert_eq!(verified.claims.sub, "42");
//! assert!(ring.verify::<AccessClaims>(&token, &policy, UnixTime::from_secs(1_700_000_000 + 931)).is_err());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Tokens, headers and JWKs are attacker text: an index or a slice that is
// out of range, or inside a UTF-8 character, would panic. Use `get`,
// `split_*` and patterns instead; tests may index.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::string_slice))]

mod alg;
pub mod b64;
mod claims;
pub mod dangerous;
mod error;
#[cfg(feature = "guard")]
pub mod guard;
mod jwk;
mod jws;
mod key;
mod policy;
mod ring;
mod secret;
mod time;

pub use alg::{Algorithm, KeyFamily};
pub use claims::{AccessClaims, Audience};
pub use error::{Error, KeyError, PolicyError, SignError};
pub use jwk::{Jwk, JwkSecret, JwkSet};
pub use jws::Header;
pub use key::{Kid, MIN_RSA_BITS, SigningKey, VerifyingKey};
pub use policy::{
    DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN, MAX_LEEWAY, VerifyPolicy, VerifyPolicyBuilder,
};
pub use ring::{DEFAULT_LIFETIME, KeyRing, SignOptions, SkippedKey, Verified, VerifiedJws};
pub use secret::{MIN_GENERATED_SECRET_BYTES, check_hmac_secret, generate_secret};
pub use time::UnixTime;
