//! Only for the integration tests: outside CI, when no PostgreSQL listens
//! where they look (`TOKENGATE_TEST_PG_URL`), sets `tokengate_pg_unreachable`
//! so their PostgreSQL variants are compiled `#[ignore]`d — counted as
//! ignored in the test summary instead of passing without a database. The
//! service itself never reads the cfg. The whole scheme, and how a stale
//! verdict is caught, is in `tests/integration/app.rs`.

use std::path::Path;

#[path = "tests/integration/pg_probe.rs"]
mod pg_probe;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tokengate_pg_unreachable)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=tests/integration/pg_probe.rs");
    println!("cargo::rerun-if-env-changed={}", pg_probe::URL_VAR);
    println!("cargo::rerun-if-env-changed=CI");
    // The tests touch this file when the database came or went since the
    // probe: the next build probes again. Created dated in the past, so
    // creating it is not itself a change.
    if let Some(out) = std::env::var_os("OUT_DIR") {
        let marker = Path::new(&out).join("recheck-postgres");
        if !marker.exists()
            && let Ok(file) = std::fs::File::create(&marker)
        {
            let _ = file.set_modified(std::time::UNIX_EPOCH);
        }
        if marker.exists() {
            println!("cargo::rerun-if-changed={}", marker.display());
        }
    }
    // Under CI nothing is ignored: a missing database fails. Release builds
    // (the operator's) do not probe the network.
    if pg_probe::in_ci() || std::env::var("PROFILE").is_ok_and(|p| p == "release") {
        return;
    }
    let url = pg_probe::admin_url();
    if pg_probe::listening(&url) == Some(false) {
        println!("cargo::rustc-cfg=tokengate_pg_unreachable");
        println!(
            "cargo::warning=no PostgreSQL listens at {url}: the PostgreSQL integration tests are compiled as ignored (under CI=true they run, and fail)"
        );
    }
}
