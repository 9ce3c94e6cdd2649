//! The request guard with and without its verified-token cache, per
//! algorithm, beside the bare `KeyRing::verify` it wraps: what the cache
//! saves on a token presented again, in one run.
//! `cargo bench -p tokengate --features guard --bench guard`; results go to
//! docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokengate::guard::{Guard, KeySource};
use tokengate::{
    AccessClaims, Algorithm, KeyRing, SignOptions, SigningKey, UnixTime, VerifyPolicy,
};

/// Runs a future that never waits (static keys, no revocation store): one
/// poll, no runtime, so the figure is the guard's own cost.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the guard waited on nothing"),
    }
}

fn bench(c: &mut Criterion) {
    let now = UnixTime::from_system_time(SystemTime::now());
    let claims = json!({
        "iss": "https://auth.example", "sub": "8d0f6c1e-6a4b-4f64-9b59-0c2f3f1d2a77",
        "aud": "api", "sid": "0b6c9a52-52d1-4f1e-8f43-6b7d0c1e2f3a",
        "scope": "api", "roles": ["user"], "email": "ada@example.com"
    });
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.example")
        .audience("api")
        .typ("at+jwt")
        .build()
        .unwrap();
    let mut group = c.benchmark_group("guard");
    for alg in [
        Algorithm::HS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        let ring = Arc::new(KeyRing::with_signing_key(
            SigningKey::generate(alg, None).unwrap(),
        ));
        let token = ring
            .sign(
                &claims,
                &SignOptions::access_token(Duration::from_secs(900)),
                now,
            )
            .unwrap();
        let cached = Guard::builder(SharedRing(ring.clone()), policy.clone()).build();
        let uncached = Guard::builder(SharedRing(ring.clone()), policy.clone())
            .cache(0)
            .build();
        ready(cached.verify(&token)).unwrap();
        group.bench_function(format!("{alg}/keyring_verify"), |b| {
            b.iter(|| {
                ring.verify::<AccessClaims>(black_box(&token), &policy, now)
                    .unwrap()
            })
        });
        group.bench_function(format!("{alg}/guard_uncached"), |b| {
            b.iter(|| {
                let v = ready(uncached.verify(black_box(&token))).unwrap();
                v.claims::<AccessClaims>().unwrap()
            })
        });
        group.bench_function(format!("{alg}/guard_cached"), |b| {
            b.iter(|| {
                let v = ready(cached.verify(black_box(&token))).unwrap();
                v.claims::<AccessClaims>().unwrap()
            })
        });
    }
    group.finish();
}

/// One ring for the bare check and both guards.
struct SharedRing(Arc<KeyRing>);

impl KeySource for SharedRing {
    fn keys(&self) -> Arc<KeyRing> {
        self.0.clone()
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
