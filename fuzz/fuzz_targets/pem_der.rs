#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/pem_der.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
