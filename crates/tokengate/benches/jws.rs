//! tokengate vs jsonwebtoken 11 (same aws-lc backend), side by side in one
//! run: sign and verify+validate a typical access token, per algorithm.
//! `cargo bench -p tokengate --bench jws`; results go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

fn pair(alg: Algorithm) -> Pair {
    let key = SigningKey::generate(alg, None).unwrap();
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
    ] {
        let p = pair(alg);
        let mut validation = validation.clone();
        validation.algorithms = vec![alg.name().parse().unwrap()];
        let token = p
            .ring
            .sign(&claims, &options, UnixTime::from_secs(now))
            .unwrap();

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
