//! HMAC secret strength, enforced when a secret is loaded.
//!
//! A secret must be at least as long as the hash output (RFC 7518 §3.2) and
//! must look random. The seeds' "❌ Bad" examples (`mysecret`, `password123`,
//! a word repeated to length) are what this catches; a secret made by
//! `tokengate secret generate`, `openssl rand -base64 32` or
//! `openssl rand -hex 32` passes.

use crate::alg::Algorithm;
use crate::error::KeyError;

/// Words that mark a human-chosen secret. Kept to five letters or more (plus a
/// few unmistakable digit runs) so random base64 text practically never
/// contains one by chance.
const PASSWORD_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "changeme",
    "change_me",
    "qwerty",
    "letmein",
    "admin",
    "default",
    "example",
    "sample",
    "12345",
    "abcdef",
    "token",
    "hunter",
];

/// Smallest secret [`generate_secret`] makes: 32 bytes, 256 bits.
pub const MIN_GENERATED_SECRET_BYTES: usize = 32;

/// A new random secret of `bytes` bytes (at least 32), base64url-encoded,
/// ready for an environment variable. It passes [`check_hmac_secret`] for
/// every HMAC algorithm whose hash is no longer than the secret.
pub fn generate_secret(bytes: usize) -> Result<String, KeyError> {
    if bytes < MIN_GENERATED_SECRET_BYTES {
        return Err(KeyError::SecretTooShort {
            alg: Algorithm::HS256,
            min: MIN_GENERATED_SECRET_BYTES,
            actual: bytes,
        });
    }
    // Random text contains a password word by chance about once in 50,000
    // secrets; draw again rather than hand out a secret our own check (or an
    // operator reading it) would refuse. Sixteen misses in a row would take
    // a broken random generator.
    for _ in 0..16 {
        let mut raw = zeroize::Zeroizing::new(vec![0u8; bytes]);
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| KeyError::Generation)?;
        let text = crate::b64::encode(raw.as_slice());
        if check_hmac_secret(Algorithm::HS256, text.as_bytes()).is_ok() {
            return Ok(text);
        }
    }
    Err(KeyError::Generation)
}

/// Checks that `secret` is acceptable as an HMAC key for `alg`.
///
/// Rules, each with its own error message:
/// 1. length ≥ the hash output (32 bytes for HS256, 48 for HS384, 64 for HS512);
/// 2. printable text (what an environment variable usually holds) is judged as
///    text: it must not contain a common password word, must not be mostly a
///    run or a sequence, must spread over enough distinct characters, and its
///    length times the bits per character of the alphabet it uses (hex 4,
///    base64 6, other printable ≈6.6) must reach the hash size in bits;
/// 3. binary secrets must not be dominated by a few byte values.
pub fn check_hmac_secret(alg: Algorithm, secret: &[u8]) -> Result<(), KeyError> {
    let Some(min) = alg.hmac_min_secret_len() else {
        return Err(KeyError::WrongKeyType {
            alg,
            detail: "a shared secret is only for HS256, HS384 or HS512".into(),
        });
    };
    if secret.len() < min {
        return Err(KeyError::SecretTooShort {
            alg,
            min,
            actual: secret.len(),
        });
    }
    if secret.iter().all(|b| (0x20..=0x7e).contains(b)) {
        check_text_secret(secret, min * 8)
    } else {
        check_spread(secret, 256)
    }
}

fn check_text_secret(secret: &[u8], needed_bits: usize) -> Result<(), KeyError> {
    if secret.contains(&b' ') {
        return Err(KeyError::WeakSecret(
            "it contains spaces, so it is a passphrase rather than random data",
        ));
    }
    let lower = secret.to_ascii_lowercase();
    if PASSWORD_WORDS
        .iter()
        .any(|w| lower.windows(w.len()).any(|win| win == w.as_bytes()))
    {
        return Err(KeyError::WeakSecret(
            "it contains a common password word, so it was chosen by a person",
        ));
    }
    // Runs ("aaa") and sequences ("abc", "123", "987"): three characters
    // in a row with the same step of -1, 0 or +1. Random text has almost none.
    let patterned = secret
        .windows(3)
        .filter(|w| match w {
            [a, b, c] => {
                let d1 = i16::from(*b) - i16::from(*a);
                let d2 = i16::from(*c) - i16::from(*b);
                d1 == d2 && (-1..=1).contains(&d1)
            }
            _ => false,
        })
        .count();
    if patterned * 4 > secret.len() {
        return Err(KeyError::WeakSecret(
            "it is made of repeated or consecutive characters",
        ));
    }
    let (bits_per_char, alphabet_size) = alphabet(secret);
    check_spread(secret, alphabet_size)?;
    let estimate = (secret.len() as f64 * bits_per_char) as usize;
    if estimate < needed_bits {
        return Err(KeyError::WeakSecret(
            "as text it carries too little randomness for the algorithm (use at least 43 random base64 or 64 hex characters for HS256)",
        ));
    }
    Ok(())
}

/// Bits per character and size of the smallest usual alphabet the text fits.
fn alphabet(secret: &[u8]) -> (f64, usize) {
    let is_hex = secret.iter().all(u8::is_ascii_hexdigit)
        && !(secret.iter().any(u8::is_ascii_lowercase)
            && secret.iter().any(u8::is_ascii_uppercase));
    let is_base64 = secret
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/-_=".contains(b));
    if is_hex {
        (4.0, 16)
    } else if is_base64 {
        (6.0, 64)
    } else {
        (95f64.log2(), 95)
    }
}

/// Refuses secrets whose byte distribution is far from what random data of
/// that length over that alphabet shows: the observed Shannon entropy must
/// reach 3/4 of the maximum possible, log2(min(length, alphabet size));
/// random data sits near 0.95 of it.
fn check_spread(secret: &[u8], alphabet_size: usize) -> Result<(), KeyError> {
    let mut counts = [0usize; 256];
    for b in secret {
        if let Some(count) = counts.get_mut(usize::from(*b)) {
            *count += 1;
        }
    }
    let n = secret.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    let distinct_possible = secret.len().min(alphabet_size) as f64;
    if entropy < 0.75 * distinct_possible.log2() {
        return Err(KeyError::WeakSecret(
            "too few distinct characters: it is repetitive, not random",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(alg: Algorithm, s: &[u8]) -> bool {
        check_hmac_secret(alg, s).is_err()
    }

    #[test]
    fn short_secrets_are_refused_with_the_rule() {
        let err = check_hmac_secret(Algorithm::HS256, b"mysecret").err();
        assert_eq!(
            err,
            Some(KeyError::SecretTooShort {
                alg: Algorithm::HS256,
                min: 32,
                actual: 8
            })
        );
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("32 bytes"), "{msg}");
    }

    #[test]
    fn password_like_secrets_are_refused() {
        for s in [
            "password123password123password123",
            "mysecretmysecretmysecretmysecretmysecret",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
            "01234567890123456789012345678901234567890123456789",
            "your-256-bit-secret-your-256-bit-secret-your-256",
            "correct horse battery staple is a fine passphrase",
            "0123456789abcdef0123456789abcdef", // 128-bit hex: too little for HS256
            "d41d8cd98f00b204e9800998ecf8427e", // an md5 hex digest: 128 bits
        ] {
            assert!(rejected(Algorithm::HS256, s.as_bytes()), "{s} was accepted");
        }
        assert!(rejected(Algorithm::HS256, &[0u8; 32]));
        assert!(rejected(Algorithm::HS256, &[0xA5u8; 64]));
    }

    #[test]
    fn random_secrets_pass() {
        // `openssl rand -base64 32`, `openssl rand -hex 32` and 32 raw bytes.
        for s in [
            "DWo/j40JcQ0VvjOK1HubmVEs5gUDYJlvSPby+8UdYZw=",
            "0a7783034588165141e24caf9a1f176828fdabb49b0ae15502691d1881e4e529",
            "Zt3KpXq8Rw1mYc7VnJb2Lh9Gf4Dd6Sa0Qe5Tu-Wo_Iy",
        ] {
            assert!(
                check_hmac_secret(Algorithm::HS256, s.as_bytes()).is_ok(),
                "{s} was refused"
            );
        }
        let raw: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(151).wrapping_add(7))
            .collect();
        assert!(check_hmac_secret(Algorithm::HS256, &raw).is_ok());
    }

    #[test]
    fn longer_hashes_need_longer_secrets() {
        let s = "0a7783034588165141e24caf9a1f176828fdabb49b0ae15502691d1881e4e529";
        assert!(check_hmac_secret(Algorithm::HS256, s.as_bytes()).is_ok());
        assert!(rejected(Algorithm::HS512, s.as_bytes()));
    }

    #[test]
    fn generated_secrets_always_pass_as_text() {
        // As an operator uses them: the base64url text itself is the key.
        for _ in 0..2000 {
            let s = generate_secret(32).unwrap_or_default();
            assert_eq!(s.len(), 43);
            assert!(
                check_hmac_secret(Algorithm::HS256, s.as_bytes()).is_ok(),
                "{s}"
            );
        }
        let long = generate_secret(64).unwrap_or_default();
        assert!(check_hmac_secret(Algorithm::HS512, long.as_bytes()).is_ok());
        assert!(generate_secret(16).is_err());
    }

    #[test]
    fn secrets_are_only_for_hmac() {
        assert!(matches!(
            check_hmac_secret(Algorithm::RS256, &[7u8; 64]),
            Err(KeyError::WrongKeyType { .. })
        ));
    }
}
