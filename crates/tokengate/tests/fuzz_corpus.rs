//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) on stable:
//! every file through the same body its cargo-fuzz target runs
//! (`fuzz/bodies/<target>.rs`), so an input that once found a bug, or any
//! seed, is checked by every `cargo test` without nightly. The fuzzing
//! itself is `scripts/fuzz`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "../../../fuzz/bodies/compact_verify.rs"]
mod compact_verify;
#[path = "../../../fuzz/bodies/guard_headers.rs"]
mod guard_headers;
#[path = "../../../fuzz/bodies/jwk_parse.rs"]
mod jwk_parse;
#[cfg(feature = "fuzzing")]
#[path = "../../../fuzz/bodies/jwks_document.rs"]
mod jwks_document;
#[path = "../../../fuzz/bodies/pem_der.rs"]
mod pem_der;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `body` over every file of `fuzz/corpus/<target>/` (and of
/// `fuzz/artifacts/<target>/`, if any); returns how many corpus files it read.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let mut corpus = 0;
    for (kind, required) in [("corpus", true), ("artifacts", false)] {
        let dir = fuzz_dir().join(kind).join(target);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if !required => {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::NotFound,
                    "{}: {e}",
                    dir.display()
                );
                continue;
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = fs::read(&path).unwrap();
            body(&data);
            if kind == "corpus" {
                corpus += 1;
            }
        }
    }
    assert!(
        corpus > 0,
        "fuzz/corpus/{target}/ is empty or missing: the replay would check nothing"
    );
    corpus
}

#[test]
fn compact_verify_corpus() {
    replay("compact_verify", compact_verify::run);
}

#[test]
fn jwk_parse_corpus() {
    replay("jwk_parse", jwk_parse::run);
}

#[test]
fn pem_der_corpus() {
    replay("pem_der", pem_der::run);
}

#[test]
fn guard_headers_corpus() {
    replay("guard_headers", guard_headers::run);
}

/// The CSRF seeds reach both outcomes: the property checked on a pass is
/// not vacuous.
#[test]
fn guard_headers_csrf_seeds_pass_and_fail() {
    use http::{HeaderMap, HeaderValue, Method};
    use tokengate::guard::{CsrfPolicy, csrf_digest};
    let headers = |name: &str| {
        let data = fs::read(fuzz_dir().join("corpus/guard_headers").join(name)).unwrap();
        let mut map = HeaderMap::new();
        for line in data.split(|&b| b == b'\n') {
            let (first, rest) = line.split_first().unwrap();
            let header = match first {
                b'O' => "origin",
                b'R' => "referer",
                b'X' => "x-csrf-token",
                _ => "cookie",
            };
            map.append(header, HeaderValue::from_bytes(rest).unwrap());
        }
        map
    };
    let policy = CsrfPolicy::new([guard_headers::ALLOWED_ORIGIN]);
    let bound = csrf_digest(guard_headers::CSRF_TOKEN);
    for (seed, passes) in [
        ("csrf-pass", true),
        ("csrf-referer", true),
        ("csrf-foreign", false),
        ("csrf-doubled", false),
    ] {
        let outcome = policy.check(&Method::POST, &headers(seed), Some(&bound));
        assert_eq!(outcome.is_ok(), passes, "{seed}: {outcome:?}");
    }
}

#[cfg(feature = "fuzzing")]
#[test]
fn jwks_document_corpus() {
    replay("jwks_document", jwks_document::run);
}

/// The body's properties can fail: a published secret or private key is
/// caught (were `RemoteJwks` to load one, the target would crash on it).
#[cfg(feature = "fuzzing")]
#[test]
fn jwks_document_loads_public_keys_only() {
    use tokengate::guard::__fuzz_jwks::read_document;
    let seed = fs::read(fuzz_dir().join("corpus/jwks_document/seed-mixed")).unwrap();
    let text = String::from_utf8(seed).unwrap();
    let body = text.splitn(3, '\n').nth(2).unwrap();
    let document: serde_json::Value = serde_json::from_str(body).unwrap();
    // The seed holds public keys, a secret and a private key.
    assert!(document["keys"].as_array().unwrap().len() >= 3);
    let (ttl, ring) = read_document(&["max-age=60"], "10", body.as_bytes());
    assert_eq!(ttl, Duration::from_secs(50));
    let ring = ring.unwrap();
    let public = document["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] != "oct" && k.get("d").is_none())
        .count();
    assert!(public > 0);
    assert_eq!(ring.len(), public, "only the public keys are loaded");
    jwks_document::run(text.as_bytes());
}

/// The seed tokens verify: the body's ring and policy are the ones the
/// seeds were made for, so the fuzzer starts past the signature check.
#[test]
fn compact_verify_seeds_verify() {
    let now = tokengate::UnixTime::from_secs(compact_verify::NOW + 10);
    for kid in compact_verify::KIDS {
        let path = fuzz_dir().join(format!("corpus/compact_verify/seed-{kid}"));
        let token = fs::read_to_string(&path).unwrap();
        compact_verify::ring()
            .verify::<serde_json::Value>(&token, compact_verify::policy(), now)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Writes the seed corpora (run once, by hand, then commit):
/// `cargo test -p tokengate --features guard --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seeds() {
    use tokengate::{Algorithm, KeyRing, SignOptions, SigningKey, UnixTime};

    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };

    // compact_verify: one valid token per key of the ring, and near misses.
    let mut ring: KeyRing = compact_verify::build_ring();
    let now = UnixTime::from_secs(compact_verify::NOW);
    let claims = serde_json::json!({
        "iss": compact_verify::ISS, "sub": "42", "aud": compact_verify::AUD,
        "roles": ["user"], "scope": "read write", "sid": "s1", "jti": "j1",
    });
    let access = SignOptions::access_token(Duration::from_secs(900));
    for kid in compact_verify::KIDS {
        ring.set_active(kid).unwrap();
        let token = ring.sign(&claims, &access, now).unwrap();
        write("compact_verify", &format!("seed-{kid}"), token.as_bytes());
    }
    ring.set_active("hs256").unwrap();
    let plain_jwt = ring.sign(&claims, &SignOptions::default(), now).unwrap();
    write("compact_verify", "typ-jwt", plain_jwt.as_bytes());
    let aud_list = serde_json::json!({"iss": compact_verify::ISS, "sub": "1", "aud": ["x", "api"], "nbf": 1_699_999_000});
    let token = ring.sign(&aud_list, &access, now).unwrap();
    write("compact_verify", "aud-list-nbf", token.as_bytes());
    write(
        "compact_verify",
        "alg-none",
        b"eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiIxIn0.",
    );
    write("compact_verify", "empty", b"");

    // jwk_parse: the ring's public JWKS, each public JWK, private JWKs,
    // and the RFC 7520 keys (private EC and RSA among them).
    let jwks = compact_verify::ring().jwks();
    write(
        "jwk_parse",
        "ring-jwks",
        &serde_json::to_vec(&jwks).unwrap(),
    );
    for kid in &compact_verify::KIDS[1..] {
        let key = compact_verify::ring().get(kid).unwrap();
        write(
            "jwk_parse",
            &format!("public-{kid}"),
            &serde_json::to_vec(key.to_jwk().unwrap()).unwrap(),
        );
    }
    for alg in [Algorithm::HS256, Algorithm::HS512] {
        let key = SigningKey::generate(alg, None).unwrap();
        let jwk = key.to_secret_jwk().unwrap();
        write(
            "jwk_parse",
            &format!("private-{}", alg.name()),
            &serde_json::to_vec(&jwk).unwrap(),
        );
    }
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc7520/jwk");
    for entry in fs::read_dir(vectors).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        write(
            "jwk_parse",
            &format!("rfc7520-{name}"),
            &fs::read(&path).unwrap(),
        );
    }

    // pem_der: the fixtures (first byte 12: no algorithm), and DER of each kind.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for entry in fs::read_dir(fixtures).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pem") {
            let mut data = vec![12];
            data.extend(fs::read(&path).unwrap());
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            write("pem_der", &name, &data);
        }
    }
    for kid in compact_verify::KIDS[1..].iter() {
        let verifying = compact_verify::ring().get(kid).unwrap();
        let mut data = vec![12];
        data.extend(verifying.to_public_pem().unwrap().as_bytes());
        write("pem_der", &format!("public-{kid}.pem"), &data);
    }
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::ES384] {
        let key = SigningKey::generate(alg, None).unwrap();
        let mut data = vec![12];
        data.extend(key.to_pkcs8_der().unwrap().iter());
        write("pem_der", &format!("pkcs8-{}.der", alg.name()), &data);
    }

    // guard_headers: `A…` lines are Authorization values, `C…` lines Cookie values.
    let token = fs::read_to_string(fuzz_dir().join("corpus/compact_verify/seed-es256")).unwrap();
    let seeds: [(&str, String); 7] = [
        ("bearer", format!("ABearer {token}")),
        ("bearer-lowercase-spaces", format!("A  bearer   {token}  ")),
        ("basic", "ABasic dXNlcjpwYXNz".to_owned()),
        ("two-authorization", format!("ABearer {token}\nABearer x")),
        (
            "cookie",
            format!("Ctheme=dark; session=\"{token}\"; other=1"),
        ),
        ("cookie-twice", "Csession=a\nCsession=b; x=y".to_owned()),
        ("cookie-empty", "Csession=; =; ;;".to_owned()),
    ];
    for (name, data) in seeds {
        write("guard_headers", name, data.as_bytes());
    }
}
