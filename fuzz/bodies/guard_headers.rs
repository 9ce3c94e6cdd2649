//! Fuzz body: bytes as request headers for the guard's token lookup. Each
//! line (split on `\n`) is one header: a line starting with `C` or `c` is a
//! `Cookie` value (the rest of the line), any other line an `Authorization`
//! value (the line after its first byte). Values that are not valid header
//! values are dropped, as `http` would refuse them. Shared by
//! `fuzz_targets/guard_headers.rs` and the stable replay test
//! `crates/tokengate/tests/fuzz_corpus.rs`.
#![allow(dead_code)]

use std::sync::OnceLock;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use tokengate::KeyRing;
use tokengate::VerifyPolicy;
use tokengate::guard::{Guard, StaticKeys, TokenSource, cookie_value};

/// The cookie the guard reads after the `Authorization` header.
pub const COOKIE_NAME: &str = "session";

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let policy = VerifyPolicy::builder()
            .any_issuer()
            .any_audience()
            .build()
            .expect("valid policy");
        Guard::builder(StaticKeys::new(KeyRing::new()), policy)
            .token_sources(vec![
                TokenSource::AuthorizationHeader,
                TokenSource::Cookie(COOKIE_NAME.to_owned()),
            ])
            .build()
    })
}

/// The property: the lookups return, `Ok` or `Err`, and never panic.
pub fn run(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&first, rest)) = line.split_first() else {
            continue;
        };
        let name = if first.eq_ignore_ascii_case(&b'c') {
            COOKIE
        } else {
            AUTHORIZATION
        };
        if let Ok(value) = HeaderValue::from_bytes(rest) {
            headers.append(name, value);
        }
    }
    let _ = guard().token_in(&headers);
    let _ = cookie_value(&headers, COOKIE_NAME);
    let _ = cookie_value(&headers, "");
    // A name taken from the input: the first cookie pair's name.
    if let Some(Ok(text)) = headers.get(COOKIE).map(HeaderValue::to_str)
        && let Some((name, _)) = text.split_once('=')
    {
        let _ = cookie_value(&headers, name);
    }
}
