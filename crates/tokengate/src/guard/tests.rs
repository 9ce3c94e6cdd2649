//! The guard's rules with a manual clock: cache, revocation, token sources,
//! requirements and challenges.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::{Algorithm, KeyRing, SignOptions, SigningKey};

const T0: i64 = 1_700_000_000;

fn policy() -> VerifyPolicy {
    VerifyPolicy::builder()
        .issuer("https://auth.test")
        .audience("api")
        .typ("at+jwt")
        .leeway(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A key source whose ring the test swaps (a rotation).
struct Swappable(RwLock<Arc<KeyRing>>);

impl KeySource for Swappable {
    fn keys(&self) -> Arc<KeyRing> {
        self.0.read().unwrap().clone()
    }
}

struct Fixture {
    guard: Guard,
    signer: Arc<KeyRing>,
    keys: Arc<Swappable>,
    clock: Arc<AtomicI64>,
    revocations: Arc<InProcessRevocations>,
    rejections: Arc<Mutex<Vec<&'static str>>>,
}

fn fixture_with(configure: impl FnOnce(GuardBuilder) -> GuardBuilder) -> Fixture {
    let key = SigningKey::generate(Algorithm::ES256, Some(crate::Kid::new("k1").unwrap())).unwrap();
    let signer = Arc::new(KeyRing::with_signing_key(key));
    let keys = Arc::new(Swappable(RwLock::new(signer.clone())));
    let clock = Arc::new(AtomicI64::new(T0));
    let revocations = Arc::new(InProcessRevocations::default());
    let rejections = Arc::new(Mutex::new(Vec::new()));
    let now = clock.clone();
    let seen = rejections.clone();
    let builder = Guard::builder(keys.clone(), policy())
        .revocations(revocations.clone())
        .clock(Arc::new(move || {
            UnixTime::from_secs(now.load(Ordering::SeqCst))
        }))
        .on_rejection(Arc::new(move |reason| seen.lock().unwrap().push(reason)));
    Fixture {
        guard: configure(builder).build(),
        signer,
        keys,
        clock,
        revocations,
        rejections,
    }
}

fn fixture() -> Fixture {
    fixture_with(|b| b)
}

impl Fixture {
    fn token(&self, claims: serde_json::Value) -> String {
        let mut base = json!({"iss": "https://auth.test", "aud": "api", "sub": "u1", "sid": "s1", "jti": "j1"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), claims.as_object()) {
            base.extend(extra.clone());
        }
        self.signer
            .sign(
                &base,
                &SignOptions::access_token(Duration::from_secs(900)),
                UnixTime::from_secs(self.clock.load(Ordering::SeqCst)),
            )
            .unwrap()
    }

    fn at(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }

    fn last_rejection(&self) -> Option<&'static str> {
        self.rejections.lock().unwrap().last().copied()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_cached_token_expires_at_exp_plus_leeway_and_not_before() {
    let f = fixture();
    let token = f.token(json!({}));
    block_on(async {
        assert!(f.guard.verify(&token).await.is_ok());
        // exp = T0 + 900; verifies while now < exp + leeway.
        f.at(T0 + 929);
        assert!(f.guard.verify(&token).await.is_ok(), "cached, last second");
        f.at(T0 + 930);
        assert_eq!(
            f.guard.verify(&token).await.unwrap_err(),
            Rejection::InvalidToken
        );
        assert_eq!(f.last_rejection(), Some("expired"));
        // And again (the entry was dropped; the full check says the same).
        assert!(f.guard.verify(&token).await.is_err());
    });
}

#[test]
fn revocation_is_checked_on_every_hit_until_the_last_moment() {
    let f = fixture();
    let token = f.token(json!({}));
    block_on(async {
        assert!(f.guard.verify(&token).await.is_ok());
        assert!(f.guard.verify(&token).await.is_ok(), "now from the cache");
        f.revocations
            .revoke_session("s1", T0 + 900 + 30 + 1)
            .await
            .unwrap();
        f.at(T0 + 929);
        assert_eq!(
            f.guard.verify(&token).await.unwrap_err(),
            Rejection::InvalidToken
        );
        assert_eq!(f.last_rejection(), Some("revoked"));
    });
}

#[test]
fn each_way_of_revoking_is_honoured() {
    block_on(async {
        let f = fixture();
        let token = f.token(json!({"jti": "only-this-one"}));
        let other = f.token(json!({"jti": "another", "sid": "s2"}));
        f.revocations
            .revoke_token("only-this-one", T0 + 1000)
            .await
            .unwrap();
        assert!(f.guard.verify(&token).await.is_err());
        assert!(f.guard.verify(&other).await.is_ok());

        // Everything of u1 issued before T0 + 10.
        f.revocations
            .revoke_user_before("u1", T0 + 10, T0 + 1000)
            .await
            .unwrap();
        assert!(f.guard.verify(&other).await.is_err());
        f.at(T0 + 10);
        let later = f.token(json!({"jti": "later", "sid": "s3"}));
        assert!(f.guard.verify(&later).await.is_ok(), "issued at the mark");
        let other_user = f.token(json!({"sub": "u2", "jti": "x", "sid": "s4"}));
        assert!(f.guard.verify(&other_user).await.is_ok());
    });
}

#[test]
fn a_token_without_iat_counts_as_issued_before_a_user_wide_revocation() {
    let r = InProcessRevocations::default();
    block_on(async {
        r.revoke_user_before("u", 100, 1000).await.unwrap();
        let query = |iat| RevocationQuery {
            sub: "u",
            sid: None,
            jti: None,
            iat,
        };
        let at = UnixTime::from_secs(500);
        assert!(r.is_revoked(query(None), at).await.unwrap());
        assert!(r.is_revoked(query(Some(99)), at).await.unwrap());
        assert!(!r.is_revoked(query(Some(100)), at).await.unwrap());
        assert!(
            !r.is_revoked(query(Some(99)), UnixTime::from_secs(1000))
                .await
                .unwrap(),
            "forgotten at until"
        );
        // A later, earlier-reaching write never shortens what is kept.
        r.revoke_user_before("u", 50, 900).await.unwrap();
        assert!(r.is_revoked(query(Some(99)), at).await.unwrap());
    });
}

#[test]
fn a_key_set_change_drops_cached_verifications() {
    let f = fixture();
    let token = f.token(json!({}));
    block_on(async {
        assert!(f.guard.verify(&token).await.is_ok());
        // The key is retired: a ring without it.
        let other =
            SigningKey::generate(Algorithm::ES256, Some(crate::Kid::new("k2").unwrap())).unwrap();
        *f.keys.0.write().unwrap() = Arc::new(KeyRing::with_signing_key(other));
        assert_eq!(
            f.guard.verify(&token).await.unwrap_err(),
            Rejection::InvalidToken
        );
        assert_eq!(f.last_rejection(), Some("unknown_kid"));
    });
}

struct Broken;

impl Revocations for Broken {
    fn is_revoked<'a>(
        &'a self,
        _token: RevocationQuery<'a>,
        _now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async { Err(RevocationError("down".into())) })
    }
}

#[test]
fn a_revocation_store_that_cannot_answer_fails_closed_unless_told_otherwise() {
    block_on(async {
        let f = fixture_with(|b| b.revocations(Arc::new(Broken)));
        let token = f.token(json!({}));
        assert_eq!(
            f.guard.verify(&token).await.unwrap_err(),
            Rejection::Unavailable
        );
        assert_eq!(f.last_rejection(), Some("revocation_unavailable"));
        let f = fixture_with(|b| {
            b.revocations(Arc::new(Broken))
                .on_revocation_failure(RevocationFailure::FailOpen)
        });
        let token = f.token(json!({}));
        assert!(f.guard.verify(&token).await.is_ok());
    });
}

#[test]
fn with_the_cache_off_every_request_is_checked_in_full() {
    block_on(async {
        let f = fixture_with(|b| b.cache(0));
        let token = f.token(json!({}));
        assert!(f.guard.verify(&token).await.is_ok());
        assert!(f.guard.verify(&token).await.is_ok());
        f.at(T0 + 930);
        assert!(f.guard.verify(&token).await.is_err());
    });
}

/// A token that shares a cached one's header and payload but not its
/// signature is not a hit.
#[test]
fn the_cache_is_keyed_by_the_whole_token() {
    block_on(async {
        let f = fixture();
        let token = f.token(json!({}));
        assert!(f.guard.verify(&token).await.is_ok());
        // Same header and payload, another signature: not a hit.
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", crate::b64::encode([0u8; 64]));
        assert_eq!(
            f.guard.verify(&forged).await.unwrap_err(),
            Rejection::InvalidToken
        );
        assert_eq!(f.last_rejection(), Some("bad_signature"));
    });
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

/// The token found, without its source (the tests that need it ask).
fn token_in<'h>(guard: &Guard, headers: &'h HeaderMap) -> Result<Option<&'h str>, Rejection> {
    guard.presented_token(headers).map(|p| p.map(|p| p.value()))
}

#[test]
fn the_bearer_header_is_read_strictly_and_never_panics() {
    let f = fixture();
    let g = &f.guard;
    assert_eq!(token_in(g, &HeaderMap::new()), Ok(None));
    assert_eq!(
        token_in(g, &headers(&[("authorization", b"Bearer abc")])),
        Ok(Some("abc"))
    );
    assert_eq!(
        token_in(g, &headers(&[("authorization", b"bearer   abc ")])),
        Ok(Some("abc"))
    );
    for bad in [
        &b"Basic abc"[..],
        b"Bearer",
        b"Bearer ",
        b"",
        b"abc",
        "Bearer é".as_bytes(),
        b"Bearer \xff\xfe",
        b"B\xc3\xa9arer abc",
    ] {
        assert_eq!(
            token_in(g, &headers(&[("authorization", bad)])),
            Err(Rejection::InvalidToken),
            "{bad:?}"
        );
    }
    assert_eq!(
        token_in(
            g,
            &headers(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer b")
            ])
        ),
        Err(Rejection::InvalidToken)
    );
    assert_eq!(f.last_rejection(), Some("several_authorization_headers"));
    // A cookie is not a source unless configured; the query is never one.
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"access=abc")])),
        Ok(None)
    );
}

#[test]
fn a_configured_cookie_is_read_after_the_header() {
    let f = fixture_with(|b| b.cookie("access"));
    let g = &f.guard;
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"a=1; access=tok; b=2")])),
        Ok(Some("tok"))
    );
    assert_eq!(
        token_in(
            g,
            &headers(&[("cookie", b"access=tok"), ("authorization", b"Bearer hdr")])
        ),
        Ok(Some("hdr"))
    );
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"xaccess=tok; access_=t")])),
        Ok(None)
    );
    assert_eq!(token_in(g, &headers(&[("cookie", b"access=")])), Ok(None));
    // Bytes that are not ASCII elsewhere in the header hide nothing; a
    // value that is not visible ASCII is no value.
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"a=\xff; access=\"q\"")])),
        Ok(Some("q"))
    );
    assert_eq!(
        token_in(
            g,
            &headers(&[("cookie", "city=Zürich; access=tok".as_bytes())])
        ),
        Ok(Some("tok"))
    );
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"access=t\xffk")])),
        Ok(None)
    );
    assert_eq!(
        token_in(g, &headers(&[("cookie", b"access=a b")])),
        Ok(None)
    );
    // A header of another scheme is not a bearer token: the cookie is read.
    assert_eq!(
        token_in(
            g,
            &headers(&[
                ("authorization", b"Basic c3RhZ2luZw=="),
                ("cookie", b"access=tok")
            ])
        ),
        Ok(Some("tok"))
    );
    assert_eq!(
        token_in(g, &headers(&[("authorization", b"Basic c3RhZ2luZw==")])),
        Ok(None)
    );
    // A malformed bearer header stays a refusal.
    for bad in [&b"Bearer"[..], b"Bearer ", b"B\xc3\xa9arer abc", b""] {
        assert_eq!(
            token_in(
                g,
                &headers(&[("authorization", bad), ("cookie", b"access=tok")])
            ),
            Err(Rejection::InvalidToken),
            "{bad:?}"
        );
    }
    assert!(
        token_in(g, &headers(&[("cookie", b"access=tok")]))
            .ok()
            .flatten()
            .is_some()
    );
    assert!(
        g.presented_token(&headers(&[("cookie", b"access=tok")]))
            .ok()
            .flatten()
            .is_some_and(|p| p.from_cookie())
    );
    assert!(
        g.presented_token(&headers(&[("authorization", b"Bearer x")]))
            .ok()
            .flatten()
            .is_some_and(|p| !p.from_cookie() && !format!("{p:?}").contains('x'))
    );
    assert_eq!(
        cookie_value(&headers(&[("cookie", b"access=\"q\"")]), "access"),
        Ok(Some("q"))
    );
}

#[test]
fn roles_and_scopes_come_from_their_claims_in_either_shape() {
    block_on(async {
        let f = fixture_with(|b| b.roles_claim("groups"));
        let token = f.token(json!({"groups": ["admin", 5, "ops"], "scope": "read  write"}));
        let v = f.guard.verify(&token).await.unwrap();
        assert_eq!(v.roles().collect::<Vec<_>>(), ["admin", "ops"]);
        assert_eq!(v.scopes().collect::<Vec<_>>(), ["read", "write"]);
        assert!(Requirement::role("ops").check(&v).is_ok());
        assert_eq!(
            Requirement::role("root").check(&v),
            Err(Rejection::InsufficientScope { scope: None })
        );
        assert_eq!(
            Requirement::scope("delete").check(&v),
            Err(Rejection::InsufficientScope {
                scope: Some("delete".into())
            })
        );
        assert!(
            Requirement::claims(|c| c.get("sub") == Some(&json!("u1")))
                .check(&v)
                .is_ok()
        );
        let typed: crate::AccessClaims = v.claims().unwrap();
        assert_eq!(typed.scope.as_deref(), Some("read  write"));

        let token = f.token(json!({"groups": "solo", "scope": ["a", "b c"], "jti": "2"}));
        let v = f.guard.verify(&token).await.unwrap();
        assert_eq!(v.roles().collect::<Vec<_>>(), ["solo"]);
        assert_eq!(v.scopes().collect::<Vec<_>>(), ["a", "b c"]);
        // Claims that do not fit the caller's type are an error, not a panic.
        assert!(v.claims::<crate::AccessClaims>().is_err());
    });
}

#[test]
fn challenges_follow_rfc_6750_and_cannot_be_broken_by_their_inputs() {
    assert_eq!(
        Rejection::Missing.challenge("api").as_deref(),
        Some(r#"Bearer realm="api""#)
    );
    assert_eq!(
        Rejection::InvalidToken.challenge("a\"p\\i").as_deref(),
        Some(r#"Bearer realm="api", error="invalid_token""#)
    );
    assert_eq!(
        Rejection::InsufficientScope {
            scope: Some("x\" error=\"y".into())
        }
        .challenge("api")
        .as_deref(),
        Some(r#"Bearer realm="api", error="insufficient_scope""#),
        "a scope that is not a scope token is left out"
    );
    assert_eq!(Rejection::Unavailable.challenge("api"), None);
    assert_eq!(Rejection::InvalidToken.status(), 401);
    assert_eq!(Rejection::InsufficientScope { scope: None }.status(), 403);
    assert_eq!(Rejection::Unavailable.status(), 503);
}

/// A source that learns keys on an unknown kid (a remote JWKS, in miniature).
struct Learning {
    ring: RwLock<Arc<KeyRing>>,
    next: Mutex<Option<KeyRing>>,
    asked: AtomicUsize,
}

impl KeySource for Learning {
    fn keys(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap().clone()
    }

    fn unknown_kid<'a>(&'a self, _kid: &'a str) -> BoxFuture<'a, Option<Arc<KeyRing>>> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let next = self.next.lock().unwrap().take()?;
            let next = Arc::new(next);
            *self.ring.write().unwrap() = next.clone();
            Some(next)
        })
    }
}

#[test]
fn an_unknown_kid_asks_the_source_once_and_uses_what_it_learned() {
    block_on(async {
        let key =
            SigningKey::generate(Algorithm::EdDSA, Some(crate::Kid::new("new").unwrap())).unwrap();
        let signer = KeyRing::with_signing_key(key);
        let token = signer
            .sign(
                &json!({"iss": "https://auth.test", "aud": "api", "sub": "u"}),
                &SignOptions::access_token(Duration::from_secs(60)),
                UnixTime::from_secs(T0),
            )
            .unwrap();
        let source = Arc::new(Learning {
            ring: RwLock::new(Arc::new(KeyRing::new())),
            next: Mutex::new(Some(KeyRing::from_jwks(&signer.jwks()).0)),
            asked: AtomicUsize::new(0),
        });
        let guard = Guard::builder(source.clone(), policy())
            .clock(Arc::new(|| UnixTime::from_secs(T0)))
            .build();
        assert!(guard.verify(&token).await.is_ok());
        assert!(guard.verify(&token).await.is_ok());
        assert_eq!(source.asked.load(Ordering::SeqCst), 1);

        // A source with no keys at all that learns nothing: unavailable,
        // not "invalid" (the issuer is down, the token may be fine).
        let empty = Arc::new(Learning {
            ring: RwLock::new(Arc::new(KeyRing::new())),
            next: Mutex::new(None),
            asked: AtomicUsize::new(0),
        });
        let guard = Guard::builder(empty, policy())
            .clock(Arc::new(|| UnixTime::from_secs(T0)))
            .build();
        assert_eq!(
            guard.verify(&token).await.unwrap_err(),
            Rejection::Unavailable
        );
    });
}

proptest! {
    #[test]
    fn reading_a_token_never_panics(auth in proptest::collection::vec(any::<u8>(), 0..300),
                                    cookie in proptest::collection::vec(any::<u8>(), 0..300)) {
        let f = fixture_with(|b| b.cookie("c"));
        let mut map = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&auth) {
            map.insert(http::header::AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&cookie) {
            map.insert(http::header::COOKIE, v);
        }
        let _ = token_in(&f.guard, &map);
        let _ = cookie_value(&map, "c");
    }

    /// The round trip of the header readers: a token written the ways
    /// RFC 6750 allows (scheme in any case, spaces around) is read back
    /// exactly, from the header and from a cookie among others (quoted or
    /// not, RFC 6265 cookie-octets).
    #[test]
    fn a_written_token_is_read_back_exactly(
        token in "[A-Za-z0-9_.~+/=-]{1,200}",
        scheme in "[bB][eE][aA][rR][eE][rR]",
        (before, between, after) in (" {0,3}", " {1,3}", " {0,3}"),
        value in "[\\x21\\x23-\\x2B\\x2D-\\x3A\\x3C-\\x5B\\x5D-\\x7E]{1,100}",
        quoted in any::<bool>(),
        others in proptest::collection::vec(("[a-b][a-z]{0,5}", "[a-z0-9]{0,8}"), 0..4),
    ) {
        let f = fixture_with(|b| b.cookie("c"));
        let mut map = HeaderMap::new();
        let header = format!("{before}{scheme}{between}{token}{after}");
        map.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&header).unwrap());
        prop_assert_eq!(token_in(&f.guard, &map).unwrap(), Some(token.as_str()));

        let mut pairs: Vec<String> = others.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let written = if quoted { format!("\"{value}\"") } else { value.clone() };
        pairs.insert(pairs.len() / 2, format!("c={written}"));
        let mut map = HeaderMap::new();
        map.insert(http::header::COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        prop_assert_eq!(cookie_value(&map, "c").unwrap(), Some(value.trim_matches('"')));
        prop_assert_eq!(token_in(&f.guard, &map).unwrap(), Some(value.trim_matches('"')));
    }

    #[test]
    fn verifying_any_text_never_panics(token in "\\PC{0,200}") {
        let f = fixture();
        let outcome = block_on(f.guard.verify(&token));
        prop_assert!(outcome.is_err());
    }
}

// ---- Adversarial review (wt-review) --------------------------------------

/// Review finding: `InProcessRevocations` sweeps with the *new* entry's
/// `until - 2 days` as "now". One revocation kept long (a long-lived token,
/// a week-long ban: the trait accepts any `until`) sweeps every live entry
/// of the same map that ends 2 days before it, although they still cover
/// tokens that verify. The docs promise "Entries are forgotten once past
/// their `until`".
#[test]
fn a_long_revocation_never_sweeps_live_ones() {
    let r = InProcessRevocations::default();
    block_on(async {
        // 255 logged-out sessions, each kept for the next 15 minutes.
        for i in 0..255 {
            r.revoke_session(&format!("s{i}"), T0 + 900).await.unwrap();
        }
        let query = |sid| RevocationQuery {
            sub: "u",
            sid: Some(sid),
            jti: None,
            iat: Some(T0),
        };
        let now = UnixTime::from_secs(T0);
        assert!(r.is_revoked(query("s0"), now).await.unwrap());
        // The 256th: a session whose tokens live 30 days.
        r.revoke_session("long", T0 + 30 * 86_400).await.unwrap();
        assert!(
            r.is_revoked(query("s0"), now).await.unwrap(),
            "a live revocation (until T0+900, now T0) was swept by a longer one"
        );
    });
}

/// The same through the guard: a logged-out token verifies again.
#[test]
fn a_revoked_token_stays_revoked_whatever_is_revoked_after_it() {
    let f = fixture();
    let token = f.token(json!({"sid": "victim"}));
    block_on(async {
        f.revocations
            .revoke_session("victim", T0 + 931)
            .await
            .unwrap();
        assert!(f.guard.verify(&token).await.is_err());
        for i in 0..254 {
            f.revocations
                .revoke_session(&format!("other{i}"), T0 + 931)
                .await
                .unwrap();
        }
        f.revocations
            .revoke_session("week-long", T0 + 7 * 86_400)
            .await
            .unwrap();
        assert_eq!(
            f.guard.verify(&token).await.map(|_| ()),
            Err(Rejection::InvalidToken),
            "the logged-out token verifies again"
        );
    });
}

/// Review finding: with a cookie named twice (`access=A; access=B`), the
/// first wins. A sibling subdomain (or any cookie-tossing page) can plant
/// its own valid token under the same name with a longer `Path`, which
/// browsers send first: the victim's requests then run as the attacker
/// (login CSRF). The guard refuses two `Authorization` headers for the
/// same reason (two parsers could pick differently); the ambiguous cookie
/// should be refused too (or a `__Host-` name required).
#[test]
fn a_cookie_named_twice_is_ambiguous_and_refused() {
    let f = fixture_with(|b| b.cookie("access"));
    assert_ne!(
        token_in(
            &f.guard,
            &headers(&[("cookie", b"access=attacker; access=victim")])
        ),
        Ok(Some("attacker")),
    );
    assert_ne!(
        token_in(
            &f.guard,
            &headers(&[("cookie", b"access=attacker"), ("cookie", b"access=victim")])
        ),
        Ok(Some("attacker")),
    );
}

/// The CSRF rule applies to a token from a cookie on an unsafe method, and
/// to nothing else; its refusal is a 403 without a challenge, its reason
/// told to the observer.
#[test]
fn a_cookie_token_on_an_unsafe_method_must_pass_the_csrf_check() {
    let f = fixture_with(|b| {
        b.cookie("access")
            .csrf(CsrfPolicy::new(["https://app.test"]).cookie_name("csrf"))
    });
    let token = f.token(json!({ "csrf_hash": csrf_claim_value("c1") }));
    let by_cookie = format!("access={token}");
    let with_csrf = format!("access={token}; csrf=c1");
    block_on(async {
        let check = |method: Method, pairs: Vec<(&'static str, String)>| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(name, HeaderValue::from_str(&value).unwrap());
            }
            let guard = f.guard.clone();
            async move {
                guard
                    .check_request(&method, &map)
                    .await
                    .map(|t| t.is_some())
            }
        };
        assert_eq!(
            check(Method::GET, vec![("cookie", by_cookie.clone())]).await,
            Ok(true)
        );
        assert_eq!(
            check(Method::POST, vec![("cookie", by_cookie.clone())]).await,
            Err(Rejection::Csrf)
        );
        assert_eq!(f.last_rejection(), Some("csrf_missing_header"));
        assert_eq!(
            check(
                Method::PUT,
                vec![("cookie", with_csrf.clone()), ("x-csrf-token", "c1".into())]
            )
            .await,
            Ok(true)
        );
        assert_eq!(
            check(
                Method::PUT,
                vec![
                    ("cookie", with_csrf.clone()),
                    ("x-csrf-token", "c1".into()),
                    ("origin", "https://evil.test".into())
                ]
            )
            .await,
            Err(Rejection::Csrf)
        );
        assert_eq!(f.last_rejection(), Some("csrf_foreign_origin"));
        // The header source needs none of it.
        assert_eq!(
            check(
                Method::DELETE,
                vec![("authorization", format!("Bearer {token}"))]
            )
            .await,
            Ok(true)
        );
        // No token at all is not a CSRF matter.
        assert_eq!(check(Method::POST, vec![]).await, Ok(false));
    });
    assert_eq!(Rejection::Csrf.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(Rejection::Csrf.challenge("api"), None);
}
