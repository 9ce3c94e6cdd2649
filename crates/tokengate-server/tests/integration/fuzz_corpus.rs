//! Replays the committed corpus of the `endpoint_bodies` fuzz target
//! (`fuzz/corpus/endpoint_bodies/`) on stable, through the same body the
//! target runs (`fuzz/bodies/endpoint_bodies.rs`): every input that ever
//! found a bug, and every seed, is checked by each `cargo test`. The
//! fuzzing itself is `scripts/fuzz`.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../../../../fuzz/bodies/endpoint_bodies.rs"]
mod endpoint_bodies;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join("endpoint_bodies");
    match fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if kind == "artifacts" && e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

/// One test, in order: the harness is one per process (a static, as in
/// the fuzzer), and a replayed input may already have registered what a
/// seed registers.
#[test]
fn endpoint_bodies_seeds_reach_their_handlers_then_the_corpus_replays() {
    // The harness really logs in, makes users and substitutes their ids
    // and tokens (the successes), and the bad inputs meet the checks meant
    // for them (the refusals).
    for (name, status) in [
        ("seed-register", 201),
        ("seed-login", 200),
        ("seed-refresh", 200),
        ("seed-logout", 204),
        ("seed-admin-create", 201),
        ("seed-admin-patch", 200),
        ("seed-admin-revoke", 200),
        ("seed-admin-audit", 200),
        ("seed-admin-stats", 200),
        ("seed-admin-stats-bad", 400),
        ("seed-verify", 200),
        ("seed-login-wrong", 401),
        ("seed-password", 403),
        ("seed-end-session", 404),
        ("seed-deep-json", 400),
        ("seed-huge-body", 413),
        ("seed-login-text-plain", 415),
    ] {
        let data = fs::read(fuzz_dir().join("corpus/endpoint_bodies").join(name)).unwrap();
        assert_eq!(endpoint_bodies::status_of(&data), status, "{name}");
    }
    let corpus = inputs("corpus");
    // Every endpoint has its seeds: an emptied corpus would check nothing.
    assert!(
        corpus.len() >= endpoint_bodies::ENDPOINTS.len(),
        "fuzz/corpus/endpoint_bodies/ holds {} inputs",
        corpus.len()
    );
    for path in corpus.iter().chain(&inputs("artifacts")) {
        endpoint_bodies::run(&fs::read(path).unwrap());
    }
}
