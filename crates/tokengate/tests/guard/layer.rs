//! The axum layer and extractors against a real axum app on a random port.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Json, Router};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokengate::guard::{
    Auth, CsrfPolicy, DEFAULT_ACCESS_COOKIE, DEFAULT_CSRF_COOKIE, Guard, InProcessRevocations,
    OptionalAuth, RecordRevocations, SameSite, StaticKeys, csrf_claim_value,
};
use tokengate::{Algorithm, KeyRing, Kid, SignOptions, SigningKey, UnixTime, VerifyPolicy};

const T0: i64 = 1_800_000_000;

struct Api {
    base: String,
    client: reqwest::Client,
    signer: KeyRing,
    clock: Arc<AtomicI64>,
    revocations: Arc<InProcessRevocations>,
}

/// Custom claims: an API's own shape.
#[derive(Deserialize)]
struct TenantClaims {
    sub: String,
    tenant: String,
}

async fn protected(Auth { claims, .. }: Auth) -> Json<Value> {
    Json(json!({"sub": claims.sub, "roles": claims.roles}))
}

async fn greeting(OptionalAuth(auth): OptionalAuth) -> String {
    match auth {
        Some(Auth { claims, .. }) => format!("hello {}", claims.sub),
        None => "hello stranger".to_owned(),
    }
}

async fn tenant(auth: Auth<TenantClaims>) -> String {
    format!("{} of {}", auth.claims.sub, auth.claims.tenant)
}

async fn maybe(auth: Option<Auth>) -> String {
    auth.map_or_else(|| "nobody".to_owned(), |a| a.claims.sub)
}

async fn spawn_api(
    configure: impl FnOnce(tokengate::guard::GuardBuilder) -> tokengate::guard::GuardBuilder,
) -> Api {
    let signer = KeyRing::with_signing_key(
        SigningKey::generate(Algorithm::ES256, Some(Kid::new("k1").unwrap())).unwrap(),
    );
    // The API holds only the public keys, as it would from a JWKS.
    let (public, skipped) = KeyRing::from_jwks(&signer.jwks());
    assert!(skipped.is_empty());
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.test")
        .audience("orders-api")
        .typ("at+jwt")
        .build()
        .unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let revocations = Arc::new(InProcessRevocations::default());
    let now = clock.clone();
    let guard: Guard = configure(
        Guard::builder(StaticKeys::new(public), policy)
            .revocations(revocations.clone())
            .clock(Arc::new(move || {
                UnixTime::from_secs(now.load(Ordering::SeqCst))
            })),
    )
    .build();

    // Three lines protect a router: the guard, `require()`, and `role()`.
    let api = Router::new()
        .route("/api/protected", get(protected).post(protected))
        .route("/api/tenant", get(tenant))
        .route(
            "/api/admin",
            get(protected).route_layer(guard.require().role("admin")),
        )
        .route(
            "/api/orders",
            get(protected).route_layer(guard.require().scope("orders:write")),
        )
        .route(
            "/api/eu",
            get(protected).route_layer(
                guard
                    .require()
                    .claims(|c| c.get("region") == Some(&json!("eu"))),
            ),
        )
        .route_layer(guard.require());
    let app = Router::new()
        .route("/", get(|| async { "public" }))
        .route("/greeting", get(greeting).route_layer(guard.optional()))
        .route("/bare", get(maybe).layer(Extension(guard.clone())))
        .route("/unguarded", get(protected))
        .merge(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        base,
        client: reqwest::Client::new(),
        signer,
        clock,
        revocations,
    }
}

impl Api {
    fn token(&self, extra: Value) -> String {
        let mut claims = json!({
            "iss": "https://auth.test", "aud": "orders-api", "sub": "alice",
            "sid": "session-1", "jti": "t1", "roles": ["user"], "scope": "orders:read"
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.signer
            .sign(
                &claims,
                &SignOptions::access_token(Duration::from_secs(900)),
                UnixTime::from_secs(self.clock.load(Ordering::SeqCst)),
            )
            .unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let request = self.client.get(format!("{}{path}", self.base));
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A 401 or 403 with the RFC 6750 challenge and a generic problem body.
async fn refused(response: reqwest::Response, status: StatusCode, challenge_is: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(challenge(&response), challenge_is);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}

const INVALID: &str = r#"Bearer realm="api", error="invalid_token""#;

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_claims() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({}));
    let response = api.get("/api/protected", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"sub": "alice", "roles": ["user"]})
    );
    assert_eq!(api.get("/", None).await.text().await.unwrap(), "public");
}

#[tokio::test]
async fn no_token_is_a_bare_bearer_challenge() {
    let api = spawn_api(|b| b).await;
    let body = refused(
        api.get("/api/protected", None).await,
        StatusCode::UNAUTHORIZED,
        r#"Bearer realm="api""#,
    )
    .await;
    assert_eq!(body["detail"], "An access token is required.");
}

#[tokio::test]
async fn expired_tokens_are_refused_past_the_leeway_and_not_before() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({}));
    assert_eq!(
        api.get("/api/protected", Some(&token)).await.status(),
        StatusCode::OK
    );
    // exp = T0 + 900, default leeway 30 s.
    api.clock.store(T0 + 929, Ordering::SeqCst);
    assert_eq!(
        api.get("/api/protected", Some(&token)).await.status(),
        StatusCode::OK
    );
    api.clock.store(T0 + 930, Ordering::SeqCst);
    let body = refused(
        api.get("/api/protected", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
        INVALID,
    )
    .await;
    // The client is not told which check failed.
    assert_eq!(
        body["detail"],
        "The access token is invalid or has expired."
    );
}

#[tokio::test]
async fn another_audience_or_issuer_is_an_invalid_token() {
    let api = spawn_api(|b| b).await;
    for claims in [
        json!({"aud": "billing-api"}),
        json!({"aud": ["billing-api", "reports"]}),
        json!({"iss": "https://evil.test"}),
    ] {
        let token = api.token(claims.clone());
        refused(
            api.get("/api/protected", Some(&token)).await,
            StatusCode::UNAUTHORIZED,
            INVALID,
        )
        .await;
    }
    // Several audiences, ours among them: fine.
    let token = api.token(json!({"aud": ["billing-api", "orders-api"]}));
    assert_eq!(
        api.get("/api/protected", Some(&token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_revoked_session_is_refused_at_once_and_to_its_last_moment() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({}));
    let other = api.token(json!({"sid": "session-2", "jti": "t2"}));
    assert_eq!(
        api.get("/api/protected", Some(&token)).await.status(),
        StatusCode::OK
    );
    api.revocations
        .revoke_session("session-1", T0 + 900 + 30 + 1)
        .await
        .unwrap();
    refused(
        api.get("/api/protected", Some(&token)).await,
        StatusCode::UNAUTHORIZED,
        INVALID,
    )
    .await;
    api.clock.store(T0 + 929, Ordering::SeqCst);
    assert_eq!(
        api.get("/api/protected", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get("/api/protected", Some(&other)).await.status(),
        StatusCode::OK,
        "another session is untouched"
    );
}

#[tokio::test]
async fn an_optional_route_serves_strangers_but_refuses_a_bad_token() {
    let api = spawn_api(|b| b).await;
    let stranger = api.get("/greeting", None).await;
    assert_eq!(stranger.status(), StatusCode::OK);
    assert_eq!(stranger.text().await.unwrap(), "hello stranger");
    let token = api.token(json!({}));
    assert_eq!(
        api.get("/greeting", Some(&token))
            .await
            .text()
            .await
            .unwrap(),
        "hello alice"
    );
    let mut bad = token.clone();
    bad.insert(10, 'x');
    refused(
        api.get("/greeting", Some(&bad)).await,
        StatusCode::UNAUTHORIZED,
        INVALID,
    )
    .await;
}

#[tokio::test]
async fn a_missing_role_scope_or_claim_is_403_insufficient_scope() {
    let api = spawn_api(|b| b).await;
    let user = api.token(json!({}));
    let admin = api.token(
        json!({"roles": ["user", "admin"], "scope": "orders:read orders:write", "region": "eu"}),
    );
    refused(
        api.get("/api/admin", Some(&user)).await,
        StatusCode::FORBIDDEN,
        r#"Bearer realm="api", error="insufficient_scope""#,
    )
    .await;
    refused(
        api.get("/api/orders", Some(&user)).await,
        StatusCode::FORBIDDEN,
        r#"Bearer realm="api", error="insufficient_scope", scope="orders:write""#,
    )
    .await;
    refused(
        api.get("/api/eu", Some(&user)).await,
        StatusCode::FORBIDDEN,
        r#"Bearer realm="api", error="insufficient_scope""#,
    )
    .await;
    for path in ["/api/admin", "/api/orders", "/api/eu"] {
        assert_eq!(
            api.get(path, Some(&admin)).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // Without a token the answer is still 401, not 403.
    assert_eq!(
        api.get("/api/admin", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_is_never_read() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({}));
    for query in ["access_token", "token", "jwt"] {
        let response = api
            .get(&format!("/api/protected?{query}={token}"), None)
            .await;
        refused(response, StatusCode::UNAUTHORIZED, r#"Bearer realm="api""#).await;
    }
}

#[tokio::test]
async fn claims_of_the_apis_own_type_are_extracted_and_a_mismatch_is_401() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({"tenant": "acme"}));
    assert_eq!(
        api.get("/api/tenant", Some(&token))
            .await
            .text()
            .await
            .unwrap(),
        "alice of acme"
    );
    let without = api.token(json!({}));
    refused(
        api.get("/api/tenant", Some(&without)).await,
        StatusCode::UNAUTHORIZED,
        INVALID,
    )
    .await;
}

#[tokio::test]
async fn the_extractors_verify_on_their_own_with_the_guard_as_an_extension() {
    let api = spawn_api(|b| b).await;
    let token = api.token(json!({}));
    assert_eq!(
        api.get("/bare", Some(&token)).await.text().await.unwrap(),
        "alice"
    );
    assert_eq!(api.get("/bare", None).await.text().await.unwrap(), "nobody");
    assert_eq!(
        api.get("/bare", Some("garbage")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A route with neither layer nor guard is a server mistake: refused
    // (503), never let through.
    assert_eq!(
        api.get("/unguarded", Some(&token)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_cookie_is_read_only_when_configured() {
    let api = spawn_api(|b| b.cookie("tg_access")).await;
    let token = api.token(json!({}));
    let with_cookie = |path: &str| {
        api.client
            .get(format!("{}{path}", api.base))
            .header("cookie", format!("tg_access={token}"))
            .send()
    };
    assert_eq!(
        with_cookie("/api/protected").await.unwrap().status(),
        StatusCode::OK
    );
    let plain = spawn_api(|b| b).await;
    let token = plain.token(json!({}));
    let response = plain
        .client
        .get(format!("{}/api/protected", plain.base))
        .header("cookie", format!("tg_access={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// Cookie mode: reads need only the cookie; writes need the CSRF token
/// bound to the session (the token's `csrf_hash`), in header and cookie,
/// from an allowed origin. The Authorization header never needs it.
#[tokio::test]
async fn a_cookie_authenticated_write_needs_the_session_csrf_token() {
    let api = spawn_api(|b| {
        b.cookie(DEFAULT_ACCESS_COOKIE)
            .csrf(CsrfPolicy::new(["https://app.test"]))
    })
    .await;
    let token = api.token(json!({"csrf_hash": csrf_claim_value("csrf-A")}));
    let send = |method: reqwest::Method, csrf: Option<&str>, extra: &[(&str, &str)]| {
        let mut request = api
            .client
            .request(method, format!("{}/api/protected", api.base))
            .header(
                "cookie",
                format!(
                    "{DEFAULT_ACCESS_COOKIE}={token}; {DEFAULT_CSRF_COOKIE}={}",
                    csrf.unwrap_or("csrf-A")
                ),
            );
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(send(reqwest::Method::GET, None, &[]).await.unwrap()),
        StatusCode::OK
    );
    let refused = send(reqwest::Method::POST, None, &[]).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.headers().get("www-authenticate").is_none());
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "urn:tokengate:problem:csrf-failed");
    // Another session's token, in header and cookie (as a planted cookie
    // and a script echoing it would send).
    assert_eq!(
        status(
            send(reqwest::Method::POST, Some("csrf-B"), &[])
                .await
                .unwrap()
        ),
        StatusCode::FORBIDDEN
    );
    // The right token from a foreign origin.
    assert_eq!(
        status(
            send(
                reqwest::Method::POST,
                Some("csrf-A"),
                &[("origin", "https://evil.test")]
            )
            .await
            .unwrap()
        ),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(
            send(
                reqwest::Method::POST,
                Some("csrf-A"),
                &[("origin", "https://app.test")]
            )
            .await
            .unwrap()
        ),
        StatusCode::OK
    );
    // The header says csrf-A, the cookie another value: refused.
    let mismatched = api
        .client
        .post(format!("{}/api/protected", api.base))
        .header(
            "cookie",
            format!("{DEFAULT_ACCESS_COOKIE}={token}; {DEFAULT_CSRF_COOKIE}=csrf-B"),
        )
        .header("x-csrf-token", "csrf-A")
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status(), StatusCode::FORBIDDEN);
    // A token without a binding cannot write by cookie at all.
    let unbound = api.token(json!({}));
    let response = api
        .client
        .post(format!("{}/api/protected", api.base))
        .header(
            "cookie",
            format!("{DEFAULT_ACCESS_COOKIE}={unbound}; {DEFAULT_CSRF_COOKIE}=csrf-A"),
        )
        .header("x-csrf-token", "csrf-A")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The Authorization header needs no CSRF token, whatever the method.
    let response = api
        .client
        .post(format!("{}/api/protected", api.base))
        .bearer_auth(&unbound)
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A token from the access cookie that the layer refuses with a 401
/// (expired, revoked, bad) is cleared as the issuer clears it; nothing
/// else is: a valid cookie, a bad bearer token beside a cookie, a cookie
/// sent twice (it may be a planted one), a 403 (a missing role, CSRF).
#[tokio::test]
async fn a_refused_cookie_token_is_cleared_and_only_then() {
    let cleared = "__Host-tg_access=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax";
    let api = spawn_api(|b| {
        b.cookie(DEFAULT_ACCESS_COOKIE)
            .cookie_same_site(SameSite::Lax)
            .csrf(CsrfPolicy::new(["https://app.test"]))
    })
    .await;
    let send = |method: reqwest::Method, path: &str, cookie: String| {
        api.client
            .request(method, format!("{}{path}", api.base))
            .header("cookie", cookie)
            .send()
    };
    let cookie = |token: &str| format!("{DEFAULT_ACCESS_COOKIE}={token}");
    let live = api.token(json!({}));

    let response = send(reqwest::Method::GET, "/api/protected", cookie(&live))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(set_cookies(&response), Vec::<String>::new());

    // Not a token at all; then one past its expiry (and the leeway).
    for dead in ["garbage".to_owned(), {
        let expiring = api.token(json!({"jti": "t-expiring"}));
        api.clock.fetch_add(900 + 61, Ordering::SeqCst);
        expiring
    }] {
        let response = send(reqwest::Method::GET, "/api/protected", cookie(&dead))
            .await
            .unwrap();
        assert_eq!(set_cookies(&response), [cleared]);
        refused(response, StatusCode::UNAUTHORIZED, INVALID).await;
    }
    let live = api.token(json!({"roles": ["user"]}));

    // Revoked: refused from its session's revocation on, and cleared.
    api.revocations
        .revoke_session("session-1", api.clock.load(Ordering::SeqCst) + 3600)
        .await
        .unwrap();
    let response = send(reqwest::Method::GET, "/api/protected", cookie(&live))
        .await
        .unwrap();
    assert_eq!(set_cookies(&response), [cleared]);
    refused(response, StatusCode::UNAUTHORIZED, INVALID).await;

    // On the extractor's own path (a route without the layer) too.
    let response = send(reqwest::Method::GET, "/bare", cookie("garbage"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(set_cookies(&response), [cleared]);

    let other = api.token(json!({"sid": "session-2", "jti": "t2"}));
    // A bad bearer token says nothing about the cookie beside it.
    let response = api
        .client
        .get(format!("{}/api/protected", api.base))
        .bearer_auth("garbage")
        .header("cookie", cookie(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(set_cookies(&response), Vec::<String>::new());
    // The cookie twice: ours may be the good one; the other is not ours to clear.
    let twice = format!("{}; {}", cookie("garbage"), cookie(&other));
    let response = send(reqwest::Method::GET, "/api/protected", twice)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(set_cookies(&response), Vec::<String>::new());
    // A valid token without the role: 403, the cookie stays.
    let response = send(reqwest::Method::GET, "/api/admin", cookie(&other))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(set_cookies(&response), Vec::<String>::new());
    // A write without the CSRF token: 403, the cookie stays.
    let response = send(reqwest::Method::POST, "/api/protected", cookie(&other))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(set_cookies(&response), Vec::<String>::new());
    // A token from the header is never the cookie's: no Set-Cookie.
    let response = api.get("/api/protected", Some("garbage")).await;
    assert_eq!(set_cookies(&response), Vec::<String>::new());
}

/// The clearing cookie of an unprefixed name (a plain-http development
/// setup) has no `Secure`, which a browser on `http://` would refuse;
/// `SameSite` is `Strict` unless told.
#[tokio::test]
async fn an_unprefixed_cookie_is_cleared_without_secure() {
    let api = spawn_api(|b| b.cookie("tg_access")).await;
    let response = api
        .client
        .get(format!("{}/api/protected", api.base))
        .header("cookie", "tg_access=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        set_cookies(&response),
        ["tg_access=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"]
    );
}

/// Browsers match the cookie prefixes case-insensitively (RFC 6265bis:
/// `__host-x` is a `__Host-` cookie), and refuse a prefixed cookie set
/// without `Secure`: a clearing cookie for such a name without it would be
/// ignored, and the dead token kept.
#[tokio::test]
async fn a_prefixed_cookie_in_any_case_is_cleared_with_secure() {
    for name in ["__host-tg_access", "__SECURE-tg_access"] {
        let api = spawn_api(|b| b.cookie(name)).await;
        let response = api
            .client
            .get(format!("{}/api/protected", api.base))
            .header("cookie", format!("{name}=garbage"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            set_cookies(&response),
            [format!(
                "{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
            )]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_at_once_around_a_revocation_never_pass_after_it() {
    let api = Arc::new(spawn_api(|b| b).await);
    let token = api.token(json!({}));
    let burst = |api: &Arc<Api>| {
        (0..50)
            .map(|_| {
                let (api, token) = (api.clone(), token.clone());
                tokio::spawn(async move { api.get("/api/protected", Some(&token)).await.status() })
            })
            .collect::<Vec<_>>()
    };
    for task in burst(&api) {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    api.revocations
        .revoke_session("session-1", T0 + 1000)
        .await
        .unwrap();
    for task in burst(&api) {
        assert_eq!(task.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
}
