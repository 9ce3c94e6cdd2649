//! Fuzz body: bytes as request headers for the guard's token lookup and
//! its CSRF check. Each line (split on `\n`) is one header, named by its
//! first byte: `C`/`c` a `Cookie`, `O`/`o` an `Origin`, `R`/`r` a
//! `Referer`, `X`/`x` an `X-CSRF-Token`, anything else an `Authorization`
//! (the value is the rest of the line). Values that are not valid header
//! values are dropped, as `http` would refuse them. Shared by
//! `fuzz_targets/guard_headers.rs` and the stable replay test
//! `crates/tokengate/tests/fuzz_corpus.rs`.
#![allow(dead_code)]

use std::sync::OnceLock;

use http::header::{AUTHORIZATION, COOKIE, ORIGIN, REFERER};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokengate::KeyRing;
use tokengate::VerifyPolicy;
use tokengate::guard::{
    CsrfPolicy, DEFAULT_CSRF_HEADER, Guard, StaticKeys, TokenSource, cookie_value, csrf_digest,
};

/// The CSRF token bound to the (imaginary) session, and the one origin
/// allowed to send unsafe requests.
pub const CSRF_TOKEN: &str = "fuzz-csrf-token";
pub const ALLOWED_ORIGIN: &str = "https://app.example";

fn csrf() -> &'static CsrfPolicy {
    static POLICY: OnceLock<CsrfPolicy> = OnceLock::new();
    POLICY.get_or_init(|| CsrfPolicy::new([ALLOWED_ORIGIN]))
}

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

/// The properties: the lookups and the CSRF check return, `Ok` or `Err`,
/// and never panic; and an unsafe request passes the CSRF check only with
/// the session's token in both the header and the cookie.
pub fn run(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&first, rest)) = line.split_first() else {
            continue;
        };
        let name = match first.to_ascii_lowercase() {
            b'c' => COOKIE,
            b'o' => ORIGIN,
            b'r' => REFERER,
            b'x' => HeaderName::from_static(DEFAULT_CSRF_HEADER),
            _ => AUTHORIZATION,
        };
        if let Ok(value) = HeaderValue::from_bytes(rest) {
            headers.append(name, value);
        }
    }
    let _ = guard().presented_token(&headers);
    let bound = csrf_digest(CSRF_TOKEN);
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let outcome = csrf().check(&method, &headers, Some(&bound));
        if outcome.is_ok() && !CsrfPolicy::is_safe_method(&method) {
            // The check reads the value as HTTP does: surrounding
            // whitespace is not part of it.
            let header = headers
                .get(DEFAULT_CSRF_HEADER)
                .map(|v| v.as_bytes().trim_ascii());
            assert_eq!(
                header,
                Some(CSRF_TOKEN.as_bytes()),
                "passed without the header"
            );
            assert_eq!(
                cookie_value(&headers, csrf().cookie()),
                Ok(Some(CSRF_TOKEN)),
                "passed without the cookie"
            );
        }
        let _ = csrf().check(&method, &headers, None);
    }
    let _ = cookie_value(&headers, COOKIE_NAME);
    let _ = cookie_value(&headers, "");
    // A name taken from the input: the first cookie pair's name.
    if let Some(Ok(text)) = headers.get(COOKIE).map(HeaderValue::to_str)
        && let Some((name, _)) = text.split_once('=')
    {
        let _ = cookie_value(&headers, name);
    }
}
