//! tokengate vs jsonwebtoken 11 (same aws-lc backend) vs the raw aws-lc-rs
//! primitive, side by side in one run: sign and verify+validate a typical
//! access token, per algorithm. The raw column signs and verifies the same
//! signing input with the same key, already parsed: it is the physical
//! limit, everything above it is the JOSE layer's cost.
//! `cargo bench -p tokengate --bench jws`; results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
};
use aws_lc_rs::{hmac, rand::SystemRandom};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokengate::{
    Algorithm, KeyRing, SignOptions, SigningKey, UnixTime, VerifyPolicy, VerifyingKey,
};

struct Pair {
    alg: Algorithm,
    ring: KeyRing,
    verifier: KeyRing,
    encoding: EncodingKey,
    decoding: DecodingKey,
    header: Header,
    raw: Raw,
}

/// The same key, held as aws-lc-rs holds it: what a signature costs when
/// nothing but the signature is computed.
enum Raw {
    Hmac(Box<hmac::Key>),
    Ec(EcdsaKeyPair, ParsedPublicKey),
    Ed(Ed25519KeyPair, ParsedPublicKey),
    Rsa(
        RsaKeyPair,
        &'static signature::RsaSignatureEncoding,
        ParsedPublicKey,
    ),
}

impl Raw {
    fn new(key: &SigningKey) -> Raw {
        let alg = key.alg();
        if alg == Algorithm::HS256 {
            let jwk = key.to_secret_jwk().unwrap();
            let secret = tokengate::b64::decode(jwk.k.unwrap().expose()).unwrap();
            return Raw::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &secret)));
        }
        let der = pem::parse(key.to_pkcs8_pem().unwrap().as_bytes())
            .unwrap()
            .into_contents();
        match alg {
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .unwrap();
                let public = ParsedPublicKey::new(
                    &signature::ECDSA_P256_SHA256_FIXED,
                    pair.public_key().as_ref(),
                )
                .unwrap();
                Raw::Ec(pair, public)
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
                let public =
                    ParsedPublicKey::new(&signature::ED25519, pair.public_key().as_ref()).unwrap();
                Raw::Ed(pair, public)
            }
            Algorithm::RS256 => Raw::rsa(
                &der,
                &signature::RSA_PKCS1_SHA256,
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            Algorithm::PS256 => Raw::rsa(
                &der,
                &signature::RSA_PSS_SHA256,
                &signature::RSA_PSS_2048_8192_SHA256,
            ),
            other => panic!("no raw column for {other}"),
        }
    }

    fn rsa(
        der: &[u8],
        encoding: &'static signature::RsaSignatureEncoding,
        params: &'static signature::RsaParameters,
    ) -> Raw {
        let pair = RsaKeyPair::from_pkcs8(der).unwrap();
        let public = ParsedPublicKey::new(params, pair.public_key().as_ref()).unwrap();
        Raw::Rsa(pair, encoding, public)
    }

    fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Vec<u8> {
        match self {
            Raw::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
            Raw::Ec(pair, _) => pair.sign(rng, message).unwrap().as_ref().to_vec(),
            Raw::Ed(pair, _) => pair.sign(message).as_ref().to_vec(),
            Raw::Rsa(pair, encoding, _) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(*encoding, rng, message, &mut signature).unwrap();
                signature
            }
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Raw::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
            Raw::Ec(_, public) | Raw::Ed(_, public) | Raw::Rsa(_, _, public) => {
                public.verify_sig(message, sig).is_ok()
            }
        }
    }
}

fn pair(alg: Algorithm) -> Pair {
    let key = SigningKey::generate(alg, None).unwrap();
    let raw = Raw::new(&key);
    let (encoding, decoding) = match alg {
        Algorithm::HS256 => {
            let jwk = key.to_secret_jwk().unwrap();
            let secret = tokengate::b64::decode(jwk.k.unwrap().expose()).unwrap();
            (
                EncodingKey::from_secret(&secret),
                DecodingKey::from_secret(&secret),
            )
        }
        _ => {
            let private = key.to_pkcs8_pem().unwrap();
            let public = key.verifying_key().to_public_pem().unwrap();
            match alg {
                Algorithm::ES256 => (
                    EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
                    DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
                ),
                Algorithm::EdDSA => (
                    EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
                    DecodingKey::from_ed_pem(public.as_bytes()).unwrap(),
                ),
                // RS256 and PS256: the same RSA key types.
                _ => (
                    EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
                    DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
                ),
            }
        }
    };
    let mut header = Header::new(alg.name().parse().unwrap());
    header.kid = Some(key.kid().as_str().to_owned());
    header.typ = Some("at+jwt".into());
    let verifier = match alg {
        Algorithm::HS256 => {
            let mut r = KeyRing::new();
            r.add_verifying_key(key.verifying_key().clone()).unwrap();
            r
        }
        _ => {
            let jwk = key.public_jwk().unwrap().clone();
            KeyRing::with_verifying_key(VerifyingKey::from_jwk(&jwk).unwrap())
        }
    };
    Pair {
        alg,
        ring: KeyRing::with_signing_key(key),
        verifier,
        encoding,
        decoding,
        header,
        raw,
    }
}

fn claims(now: i64) -> Value {
    json!({
        "iss": "https://auth.example", "sub": "user-1234", "aud": "api",
        "iat": now, "exp": now + 900, "jti": "bench-jti-0001", "sid": "session-42",
        "scope": "read write", "roles": ["user", "admin"]
    })
}

fn bench(c: &mut Criterion) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = claims(now);
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.example")
        .audience("api")
        .typ("at+jwt")
        .build()
        .unwrap();
    let options = SignOptions::access_token(std::time::Duration::from_secs(900));
    let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["https://auth.example"]);
    validation.set_audience(&["api"]);

    for alg in [
        Algorithm::HS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ] {
        let p = pair(alg);
        let mut validation = validation.clone();
        validation.algorithms = vec![alg.name().parse().unwrap()];
        let token = p
            .ring
            .sign(&claims, &options, UnixTime::from_secs(now))
            .unwrap();
        let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
        let signature = tokengate::b64::decode(signature_b64).unwrap();
        assert!(p.raw.verify(signing_input.as_bytes(), &signature));
        let rng = SystemRandom::new();

        let mut group = c.benchmark_group(format!("sign/{}", p.alg));
        group.bench_function("tokengate", |b| {
            b.iter(|| {
                p.ring
                    .sign(black_box(&claims), &options, UnixTime::from_secs(now))
                    .unwrap()
            })
        });
        group.bench_function("jsonwebtoken", |b| {
            b.iter(|| jsonwebtoken::encode(&p.header, black_box(&claims), &p.encoding).unwrap())
        });
        group.bench_function("aws-lc-rs", |b| {
            b.iter(|| p.raw.sign(&rng, black_box(signing_input.as_bytes())))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("verify/{}", p.alg));
        group.bench_function("tokengate", |b| {
            b.iter(|| {
                p.verifier
                    .verify::<Value>(black_box(&token), &policy, UnixTime::from_secs(now))
                    .unwrap()
            })
        });
        group.bench_function("jsonwebtoken", |b| {
            b.iter(|| {
                jsonwebtoken::decode::<Value>(black_box(&token), &p.decoding, &validation).unwrap()
            })
        });
        group.bench_function("aws-lc-rs", |b| {
            b.iter(|| {
                assert!(
                    p.raw
                        .verify(black_box(signing_input.as_bytes()), &signature)
                )
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
