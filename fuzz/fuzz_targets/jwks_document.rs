#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/jwks_document.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
