//! CSRF defence for requests authenticated by a cookie.
//!
//! A browser attaches cookies to every request it sends to a site, whoever
//! asked for it: a page on another origin can make the browser POST a form
//! (or a `fetch`) that carries the access cookie. A request authenticated by
//! cookie that could change something (any method but GET, HEAD and
//! OPTIONS) must therefore prove it comes from the application itself:
//!
//! 1. **Origin**: when the request names where it comes from (`Origin`,
//!    else the origin of `Referer`), that origin must be one of the allowed
//!    ones. `Origin: null` (sandboxed frames, some redirects) is refused.
//!    A request with neither header passes this step (old browsers and
//!    `Referrer-Policy: no-referrer` send none) and relies on step 2.
//! 2. **Double submit, bound to the session**: the CSRF token, which the
//!    issuer sets in a cookie JavaScript can read (`__Host-tg_csrf`), must
//!    come back in a header (`X-CSRF-Token`). Another origin can neither
//!    read the cookie nor set a custom header without a CORS preflight that
//!    the API does not grant. The header must equal the cookie, and its
//!    SHA-256 must equal the `csrf_hash` claim of the verified access
//!    token: a CSRF token planted by a sibling subdomain (cookies are not
//!    isolated by port or subdomain) belongs to another session and fails.
//!
//! Comparisons are of SHA-256 digests in constant time. Requests that
//! authenticate with the `Authorization` header are not checked at all: a
//! cross-site page cannot make a browser send that header.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use http::header::{ORIGIN, REFERER};
use http::{HeaderMap, HeaderName, Method};

use super::{AmbiguousCookie, VerifiedToken, cookie_value};
use crate::b64;

/// The access-token cookie an issuer sets in cookie mode (`HttpOnly`,
/// `Secure`, `Path=/`: the `__Host-` prefix makes the browser insist on
/// all three and on no `Domain`, so no sibling subdomain can set it).
pub const DEFAULT_ACCESS_COOKIE: &str = "__Host-tg_access";
/// The CSRF-token cookie (readable by JavaScript, which echoes it).
pub const DEFAULT_CSRF_COOKIE: &str = "__Host-tg_csrf";
/// The header the CSRF token is echoed in.
pub const DEFAULT_CSRF_HEADER: &str = "x-csrf-token";
/// The access-token claim that binds a CSRF token to its session: the
/// base64url SHA-256 of the token ([`csrf_claim_value`]).
pub const CSRF_CLAIM: &str = "csrf_hash";
/// The longest CSRF token looked at; longer is refused unread.
const MAX_CSRF_TOKEN_LEN: usize = 256;

/// Why a cookie-authenticated unsafe request was refused. Logged as the
/// detail; the client only hears that the CSRF check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrfFailure {
    /// `Origin` names an origin that is not allowed (or is `null`).
    #[error("the Origin is not an allowed origin")]
    ForeignOrigin,
    /// No `Origin`, and `Referer` is from an origin that is not allowed
    /// (or is not a URL).
    #[error("the Referer is not from an allowed origin")]
    ForeignReferer,
    /// The CSRF header is absent, empty, not text or too long.
    #[error("the CSRF header is missing")]
    MissingHeader,
    /// The CSRF cookie is absent, empty, or its value is not visible ASCII.
    #[error("the CSRF cookie is missing")]
    MissingCookie,
    /// The header, the cookie or `Origin` is sent more than once.
    #[error("the CSRF header, the CSRF cookie or Origin is sent more than once")]
    Ambiguous,
    /// The header differs from the cookie.
    #[error("the CSRF header differs from the CSRF cookie")]
    CookieMismatch,
    /// The session carries no CSRF binding (a token without `csrf_hash`).
    #[error("the access token carries no CSRF binding")]
    Unbound,
    /// The CSRF token is not the one bound to this session.
    #[error("the CSRF token belongs to another session")]
    WrongSession,
}

impl CsrfFailure {
    /// A short reason code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CsrfFailure::ForeignOrigin => "csrf_foreign_origin",
            CsrfFailure::ForeignReferer => "csrf_foreign_referer",
            CsrfFailure::MissingHeader => "csrf_missing_header",
            CsrfFailure::MissingCookie => "csrf_missing_cookie",
            CsrfFailure::Ambiguous => "csrf_ambiguous",
            CsrfFailure::CookieMismatch => "csrf_cookie_mismatch",
            CsrfFailure::Unbound => "csrf_unbound",
            CsrfFailure::WrongSession => "csrf_wrong_session",
        }
    }
}

impl From<AmbiguousCookie> for CsrfFailure {
    fn from(_: AmbiguousCookie) -> Self {
        CsrfFailure::Ambiguous
    }
}

/// Where the CSRF token is read from and which origins may send unsafe
/// requests authenticated by cookie. The default allows no origin: a
/// browser's unsafe request (which always names its origin) then fails
/// until [`CsrfPolicy::new`] names the application's.
#[derive(Debug, Clone)]
pub struct CsrfPolicy {
    cookie: String,
    header: HeaderName,
    allowed_origins: Vec<String>,
}

impl Default for CsrfPolicy {
    fn default() -> Self {
        CsrfPolicy::new(Vec::<String>::new())
    }
}

impl CsrfPolicy {
    /// A policy that allows these origins (`https://app.example.com`,
    /// scheme, host and port; a trailing `/` and a default port are
    /// ignored, case is not significant), with the default cookie and
    /// header names.
    pub fn new<I, S>(allowed_origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        CsrfPolicy {
            cookie: DEFAULT_CSRF_COOKIE.to_owned(),
            header: HeaderName::from_static(DEFAULT_CSRF_HEADER),
            allowed_origins: allowed_origins
                .into_iter()
                .map(|o| normalize_origin(o.as_ref()))
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// The CSRF cookie's name. Default: [`DEFAULT_CSRF_COOKIE`].
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    /// The CSRF header's name. Default: [`DEFAULT_CSRF_HEADER`].
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// The CSRF cookie's name.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The CSRF header's name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The allowed origins, normalised.
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    /// Whether `method` is one a cross-site page could not use to change
    /// anything: GET, HEAD and OPTIONS need no CSRF check.
    pub fn is_safe_method(method: &Method) -> bool {
        matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// Checks a cookie-authenticated request made with `method`: safe
    /// methods pass; otherwise the origin, then the double submit against
    /// `bound_digest`, the SHA-256 of the CSRF token bound to the request's
    /// session (`None`: the session has none, and the request fails).
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        bound_digest: Option<&[u8]>,
    ) -> Result<(), CsrfFailure> {
        if Self::is_safe_method(method) {
            return Ok(());
        }
        self.check_origin(headers)?;
        let presented = single_header(headers, &self.header)?
            .filter(|v| !v.is_empty() && v.len() <= MAX_CSRF_TOKEN_LEN)
            .ok_or(CsrfFailure::MissingHeader)?;
        let cookie = cookie_value(headers, &self.cookie)?.ok_or(CsrfFailure::MissingCookie)?;
        let presented_digest = csrf_digest(presented);
        if verify_slices_are_equal(&presented_digest, &csrf_digest(cookie)).is_err() {
            return Err(CsrfFailure::CookieMismatch);
        }
        let bound = bound_digest.ok_or(CsrfFailure::Unbound)?;
        verify_slices_are_equal(&presented_digest, bound).map_err(|_| CsrfFailure::WrongSession)
    }

    /// [`CsrfPolicy::check`] for a request authenticated by `token`, whose
    /// `csrf_hash` claim is the binding.
    pub fn check_token(
        &self,
        method: &Method,
        headers: &HeaderMap,
        token: &VerifiedToken,
    ) -> Result<(), CsrfFailure> {
        let bound = token
            .str_claim(CSRF_CLAIM)
            .and_then(|claim| b64::decode(claim).ok());
        self.check(method, headers, bound.as_deref())
    }

    /// Origin, else Referer, must name an allowed origin when present.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), CsrfFailure> {
        let allowed = |origin: &str| self.allowed_origins.iter().any(|a| *a == origin);
        if let Some(origin) = single_header(headers, &ORIGIN)? {
            return if allowed(&normalize_origin(origin)) {
                Ok(())
            } else {
                Err(CsrfFailure::ForeignOrigin)
            };
        }
        match single_header(headers, &REFERER) {
            Ok(Some(referer)) => match origin_of_url(referer) {
                Some(origin) if allowed(&origin) => Ok(()),
                _ => Err(CsrfFailure::ForeignReferer),
            },
            Ok(None) => Ok(()),
            Err(_) => Err(CsrfFailure::ForeignReferer),
        }
    }
}

/// The SHA-256 of a CSRF token: what [`CsrfPolicy::check`] compares.
pub fn csrf_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// The `csrf_hash` claim an issuer puts in the access tokens of a session
/// whose CSRF token is `token`: base64url (no padding) of its SHA-256.
pub fn csrf_claim_value(token: &str) -> String {
    b64::encode(csrf_digest(token))
}

/// The value of a header sent at most once; not text counts as absent
/// (only an exact, visible-ASCII value can match), twice is ambiguous.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, CsrfFailure> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(CsrfFailure::Ambiguous);
    }
    Ok(first.and_then(|v| v.to_str().ok()).map(str::trim))
}

/// `scheme://host[:port]`, lower-cased, without a trailing `/` or the
/// scheme's default port: the form browsers send in `Origin`.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if origin.starts_with(scheme)
            && let Some(bare) = origin.strip_suffix(port)
        {
            return bare.to_owned();
        }
    }
    origin
}

/// The origin of an absolute `http(s)` URL (a `Referer`), or `None`.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL are not part of its origin; a Referer never
    // carries them, so one that does is not trusted.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(normalize_origin(&format!("{scheme}://{authority}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    const TOKEN: &str = "csrf-token-of-session-1";

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn policy() -> CsrfPolicy {
        CsrfPolicy::new(["https://app.example", "HTTPS://Admin.Example:443/"])
    }

    fn good(extra: &[(&str, &str)]) -> HeaderMap {
        let cookie = format!("theme=dark; __Host-tg_csrf={TOKEN}");
        let mut pairs: Vec<(&str, &str)> = vec![("x-csrf-token", TOKEN), ("cookie", &cookie)];
        pairs.extend_from_slice(extra);
        request(&pairs)
    }

    fn check(headers: &HeaderMap) -> Result<(), CsrfFailure> {
        policy().check(&Method::POST, headers, Some(&csrf_digest(TOKEN)))
    }

    #[test]
    fn safe_methods_need_nothing() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(policy().check(&method, &HeaderMap::new(), None), Ok(()));
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(policy().check(&method, &HeaderMap::new(), None).is_err());
        }
    }

    #[test]
    fn the_bound_token_in_header_and_cookie_passes() {
        assert_eq!(check(&good(&[])), Ok(()));
        assert_eq!(check(&good(&[("origin", "https://app.example")])), Ok(()));
        assert_eq!(check(&good(&[("origin", "https://admin.example")])), Ok(()));
        assert_eq!(
            check(&good(&[("referer", "https://APP.example:443/page?q=1")])),
            Ok(())
        );
    }

    #[test]
    fn a_missing_wrong_or_foreign_token_fails() {
        let cookie = format!("__Host-tg_csrf={TOKEN}");
        assert_eq!(
            check(&request(&[("cookie", &cookie)])),
            Err(CsrfFailure::MissingHeader)
        );
        assert_eq!(
            check(&request(&[("cookie", &cookie), ("x-csrf-token", "")])),
            Err(CsrfFailure::MissingHeader)
        );
        assert_eq!(
            check(&request(&[("x-csrf-token", TOKEN)])),
            Err(CsrfFailure::MissingCookie)
        );
        assert_eq!(
            check(&request(&[("cookie", &cookie), ("x-csrf-token", "guess")])),
            Err(CsrfFailure::CookieMismatch)
        );
        // Another session's token, in header and cookie alike (planted).
        let other = request(&[
            ("cookie", "__Host-tg_csrf=other"),
            ("x-csrf-token", "other"),
        ]);
        assert_eq!(check(&other), Err(CsrfFailure::WrongSession));
        assert_eq!(
            policy().check(&Method::POST, &good(&[]), None),
            Err(CsrfFailure::Unbound)
        );
        let long = "a".repeat(MAX_CSRF_TOKEN_LEN + 1);
        let cookie = format!("__Host-tg_csrf={long}");
        assert_eq!(
            check(&request(&[("cookie", &cookie), ("x-csrf-token", &long)])),
            Err(CsrfFailure::MissingHeader)
        );
    }

    #[test]
    fn foreign_origins_and_referers_fail() {
        for origin in [
            "https://evil.example",
            "null",
            "http://app.example",
            "https://app.example:8443",
            "https://app.example.evil.example",
            "",
        ] {
            assert_eq!(
                check(&good(&[("origin", origin)])),
                Err(CsrfFailure::ForeignOrigin),
                "{origin}"
            );
        }
        for referer in [
            "https://evil.example/app.example",
            "https://app.example@evil.example/",
            "ftp://app.example/",
            "/relative",
            "",
        ] {
            assert_eq!(
                check(&good(&[("referer", referer)])),
                Err(CsrfFailure::ForeignReferer),
                "{referer}"
            );
        }
        // Origin decides when both are sent.
        assert_eq!(
            check(&good(&[
                ("origin", "https://evil.example"),
                ("referer", "https://app.example/")
            ])),
            Err(CsrfFailure::ForeignOrigin)
        );
    }

    #[test]
    fn duplicates_are_ambiguous() {
        assert_eq!(
            check(&good(&[("x-csrf-token", TOKEN)])),
            Err(CsrfFailure::Ambiguous)
        );
        let twice = format!("__Host-tg_csrf=planted; __Host-tg_csrf={TOKEN}");
        assert_eq!(
            check(&request(&[("cookie", &twice), ("x-csrf-token", TOKEN)])),
            Err(CsrfFailure::Ambiguous)
        );
        assert_eq!(
            check(&good(&[
                ("origin", "https://app.example"),
                ("origin", "https://app.example")
            ])),
            Err(CsrfFailure::Ambiguous)
        );
    }

    #[test]
    fn the_claim_is_the_base64url_sha256() {
        assert_eq!(
            csrf_claim_value("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(
            b64::decode(csrf_claim_value(TOKEN)).unwrap(),
            csrf_digest(TOKEN)
        );
    }

    proptest! {
        /// Any header and cookie bytes: never a panic, and nothing but the
        /// bound token passes.
        #[test]
        fn arbitrary_input_never_panics_and_never_passes(
            header in proptest::collection::vec(any::<u8>(), 0..600),
            cookie in proptest::collection::vec(any::<u8>(), 0..600),
            origin in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut headers = HeaderMap::new();
            for (name, bytes) in [("x-csrf-token", &header), ("cookie", &cookie), ("origin", &origin)] {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    headers.append(HeaderName::from_static(name), value);
                }
            }
            let outcome = check(&headers);
            if outcome.is_ok() {
                prop_assert_eq!(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::trim), Some(TOKEN));
            }
        }

        /// Non-ASCII, huge, empty and repeated cookie names and values
        /// around the CSRF cookie: it is found once, whatever else the
        /// header holds, or the request is refused as ambiguous.
        #[test]
        fn cookie_headers_of_any_shape_are_parsed_safely(
            noise in proptest::collection::vec("[^;=]{0,40}=[^;]{0,40}|[^;]{0,40}|\\PC{0,2000}", 0..20),
            repeat in 0usize..3,
            quoted in any::<bool>(),
        ) {
            let mut pairs = noise.clone();
            for at in 0..repeat {
                let value = if quoted { format!("\"{TOKEN}\"") } else { TOKEN.to_owned() };
                pairs.insert((at * 7) % (pairs.len() + 1), format!("__Host-tg_csrf={value}"));
            }
            let cookie = pairs.join("; ");
            let mut headers = HeaderMap::new();
            headers.insert("x-csrf-token", HeaderValue::from_static(TOKEN));
            if let Ok(value) = HeaderValue::from_bytes(cookie.as_bytes()) {
                headers.insert("cookie", value);
                // A noise pair that names the CSRF cookie itself.
                let planted = noise.iter().any(|p| {
                    p.split(';').any(|pair| {
                        pair.split_once('=')
                            .is_some_and(|(n, _)| n.trim_matches([' ', '\t']) == "__Host-tg_csrf")
                    })
                });
                let outcome = check(&headers);
                if !planted {
                    prop_assert_eq!(outcome, match repeat {
                        0 => Err(CsrfFailure::MissingCookie),
                        1 => Ok(()),
                        _ => Err(CsrfFailure::Ambiguous),
                    });
                } else {
                    prop_assert!(outcome != Ok(()) || repeat == 1);
                }
            }
        }
    }

    #[test]
    fn a_huge_cookie_header_is_handled() {
        let huge = format!("{}; __Host-tg_csrf={TOKEN}", "x=y; ".repeat(20_000));
        let headers = request(&[("cookie", &huge), ("x-csrf-token", TOKEN)]);
        assert_eq!(check(&headers), Ok(()));
        let empty = request(&[("cookie", ""), ("x-csrf-token", TOKEN)]);
        assert_eq!(check(&empty), Err(CsrfFailure::MissingCookie));
        // Bytes that are not ASCII elsewhere in the header (a UTF-8 cookie
        // the rest of the site set) hide nothing.
        let unicode = format!("é=ü; 名前=値; city=Zürich; __Host-tg_csrf={TOKEN}; ñ");
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            HeaderValue::from_bytes(unicode.as_bytes()).unwrap(),
        );
        headers.insert("x-csrf-token", HeaderValue::from_static(TOKEN));
        assert_eq!(check(&headers), Ok(()));
        // The CSRF cookie's own value must be visible ASCII.
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            HeaderValue::from_bytes("__Host-tg_csrf=tökén".as_bytes()).unwrap(),
        );
        headers.insert("x-csrf-token", HeaderValue::from_static(TOKEN));
        assert_eq!(check(&headers), Err(CsrfFailure::MissingCookie));
    }
}
