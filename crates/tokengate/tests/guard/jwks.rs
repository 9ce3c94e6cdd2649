//! The remote JWKS client against a real HTTP server on 127.0.0.1 that the
//! test controls and that counts the requests it gets. Tokens are verified
//! through a `Guard`, so the key source is tested as the guard uses it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokengate::guard::{Guard, JwksError, KeySource, Rejection, RemoteJwks};
use tokengate::{
    Algorithm, Jwk, JwkSecret, JwkSet, KeyRing, Kid, SignOptions, SigningKey, UnixTime,
    VerifyPolicy,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const ISS: &str = "https://issuer.test";
const AUD: &str = "api";

/// What the server answers at `/jwks`.
#[derive(Clone)]
enum Answer {
    Keys(JwkSet),
    Json(Value),
    Status(StatusCode),
    Garbage,
    /// Over 1 MiB, with a `Content-Length`.
    Oversized,
    /// Over 1 MiB, chunked: no length to refuse it by up front.
    OversizedChunked,
    Redirect(String),
    /// Keys, after three seconds.
    Slow(JwkSet),
}

struct Served {
    jwks: Answer,
    cache_control: Option<&'static str>,
    /// `None`: 404.
    openid: Option<Value>,
    oauth: Option<Value>,
}

struct Shared {
    jwks_hits: AtomicUsize,
    /// The `User-Agent` of the last JWKS request.
    user_agent: Mutex<Option<String>>,
    openid_hits: AtomicUsize,
    oauth_hits: AtomicUsize,
    served: Mutex<Served>,
}

struct Server {
    base: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(jwks: Answer, cache_control: Option<&'static str>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            jwks_hits: AtomicUsize::new(0),
            user_agent: Mutex::new(None),
            openid_hits: AtomicUsize::new(0),
            oauth_hits: AtomicUsize::new(0),
            served: Mutex::new(Served {
                jwks,
                cache_control,
                openid: None,
                oauth: None,
            }),
        });
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_openid))
            .route("/.well-known/oauth-authorization-server", get(serve_oauth))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            base,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn fetches(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    fn serve(&self, answer: Answer) {
        self.shared.served.lock().unwrap().jwks = answer;
    }

    fn cache_control(&self, value: Option<&'static str>) {
        self.shared.served.lock().unwrap().cache_control = value;
    }

    fn discovery(&self, openid: Option<Value>, oauth: Option<Value>) {
        let mut served = self.shared.served.lock().unwrap();
        served.openid = openid;
        served.oauth = oauth;
    }

    /// Stops listening and closes the idle connections: the issuer is down.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

async fn serve_jwks(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.jwks_hits.fetch_add(1, Ordering::SeqCst);
    *shared.user_agent.lock().unwrap() = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (answer, cache_control) = {
        let served = shared.served.lock().unwrap();
        (served.jwks.clone(), served.cache_control)
    };
    let mut response = match answer {
        Answer::Keys(set) => axum::Json(set).into_response(),
        Answer::Json(value) => axum::Json(value).into_response(),
        Answer::Status(status) => status.into_response(),
        Answer::Garbage => "<html>Bad Gateway</html>".into_response(),
        Answer::Oversized => {
            let body = format!(r#"{{"keys":[]{}}}"#, " ".repeat(1024 * 1024));
            body.into_response()
        }
        Answer::OversizedChunked => {
            let chunks = (0..256).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8192]));
            Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        Answer::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Answer::Slow(set) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            axum::Json(set).into_response()
        }
    };
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}

async fn serve_openid(State(shared): State<Arc<Shared>>) -> Response {
    shared.openid_hits.fetch_add(1, Ordering::SeqCst);
    let doc = shared.served.lock().unwrap().openid.clone();
    doc.map_or_else(
        || StatusCode::NOT_FOUND.into_response(),
        |doc| axum::Json(doc).into_response(),
    )
}

async fn serve_oauth(State(shared): State<Arc<Shared>>) -> Response {
    shared.oauth_hits.fetch_add(1, Ordering::SeqCst);
    let doc = shared.served.lock().unwrap().oauth.clone();
    doc.map_or_else(
        || StatusCode::NOT_FOUND.into_response(),
        |doc| axum::Json(doc).into_response(),
    )
}

/// A signing key with its published JWK.
struct Signer {
    ring: KeyRing,
    jwk: Jwk,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        Self::from_key(
            SigningKey::generate(Algorithm::ES256, Some(Kid::new(kid).unwrap())).unwrap(),
        )
    }

    fn random() -> Signer {
        Self::from_key(
            SigningKey::generate(Algorithm::ES256, Some(Kid::random().unwrap())).unwrap(),
        )
    }

    fn from_key(key: SigningKey) -> Signer {
        let jwk = key.public_jwk().unwrap().clone();
        Signer {
            ring: KeyRing::with_signing_key(key),
            jwk,
        }
    }

    fn token_for(&self, iss: &str, sub: &str) -> String {
        let now = UnixTime::from_system_time(SystemTime::now());
        let claims = json!({"iss": iss, "sub": sub, "aud": AUD});
        self.ring
            .sign(
                &claims,
                &SignOptions::access_token(Duration::from_secs(300)),
                now,
            )
            .unwrap()
    }

    fn token(&self) -> String {
        self.token_for(ISS, "user-1")
    }
}

fn set(signers: &[&Signer]) -> JwkSet {
    JwkSet {
        keys: signers.iter().map(|s| s.jwk.clone()).collect(),
    }
}

fn keys(signers: &[&Signer]) -> Answer {
    Answer::Keys(set(signers))
}

/// A guard without its verified-token cache, so that every verification
/// goes to the key source.
fn guard_for(jwks: &RemoteJwks, issuer: &str) -> Guard {
    let policy = VerifyPolicy::builder()
        .issuer(issuer)
        .audience(AUD)
        .build()
        .unwrap();
    Guard::builder(jwks.clone(), policy).cache(0).build()
}

fn guard(jwks: &RemoteJwks) -> Guard {
    guard_for(jwks, ISS)
}

fn kids(jwks: &RemoteJwks) -> Vec<String> {
    jwks.keys().kids().map(str::to_owned).collect()
}

#[tokio::test]
async fn caching_many_verifications_fetch_once() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    assert_eq!(server.fetches(), 0, "build fetches nothing");

    // The first verification triggers the fetch; the next ones use the cache.
    for i in 0..50 {
        let token = a.token_for(ISS, &format!("user-{i}"));
        let verified = guard.verify(&token).await.unwrap();
        assert_eq!(verified.subject(), format!("user-{i}"));
    }
    assert_eq!(server.fetches(), 1);
    let user_agent = server.shared.user_agent.lock().unwrap().clone();
    assert!(
        user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("tokengate/")),
        "{user_agent:?}"
    );
    let ring = jwks.keys();
    assert!(
        Arc::ptr_eq(&ring, &jwks.keys()),
        "same Arc until the keys change"
    );
}

#[tokio::test]
async fn short_max_age_refreshes_in_the_background_long_does_not() {
    let a = Signer::new("a");
    let short = Server::start(keys(&[&a]), Some("public, max-age=1")).await;
    let long = Server::start(keys(&[&a]), Some("max-age=3600")).await;
    let short_jwks = RemoteJwks::builder(short.jwks_url())
        .min_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let long_jwks = RemoteJwks::builder(long.jwks_url())
        .min_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    short_jwks.fetch_now().await.unwrap();
    long_jwks.fetch_now().await.unwrap();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Refreshed 10 % before each second runs out: twice or so by now.
    let refreshed = short.fetches();
    assert!((2..=4).contains(&refreshed), "{refreshed} fetches");
    assert_eq!(long.fetches(), 1);
    guard(&short_jwks).verify(&a.token()).await.unwrap();
}

#[tokio::test]
async fn no_store_is_cached_for_the_minimum() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), Some("no-store")).await;
    let jwks = RemoteJwks::builder(server.jwks_url())
        .min_ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    jwks.fetch_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.fetches(), 1, "not before the minimum");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.fetches(), 2, "refreshed at the minimum");
}

#[tokio::test]
async fn dropping_the_client_stops_the_background_refresh() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), Some("max-age=1")).await;
    let jwks = RemoteJwks::builder(server.jwks_url())
        .min_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let guard = guard(&jwks);
    jwks.fetch_now().await.unwrap();
    drop(guard);
    drop(jwks);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn unknown_kid_refetches_once_and_the_new_key_verifies() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    jwks.fetch_now().await.unwrap();
    assert_eq!(server.fetches(), 1);

    server.serve(keys(&[&a, &b]));
    guard.verify(&b.token()).await.unwrap();
    assert_eq!(server.fetches(), 2, "exactly one refetch");
    for _ in 0..10 {
        guard.verify(&b.token()).await.unwrap();
        guard.verify(&a.token()).await.unwrap();
    }
    assert_eq!(server.fetches(), 2, "known kids need no fetch");

    // Within the interval, another unknown kid fetches nothing.
    let c = Signer::new("c");
    server.serve(keys(&[&a, &b, &c]));
    assert_eq!(
        guard.verify(&c.token()).await.unwrap_err(),
        Rejection::InvalidToken
    );
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refetch_is_allowed_again_after_the_interval() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url())
        .min_refetch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let guard = guard(&jwks);
    jwks.fetch_now().await.unwrap();
    let stranger = Signer::new("stranger");
    assert!(guard.verify(&stranger.token()).await.is_err());
    assert_eq!(server.fetches(), 2);

    server.serve(keys(&[&a, &b]));
    assert!(guard.verify(&b.token()).await.is_err(), "limited");
    assert_eq!(server.fetches(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    guard.verify(&b.token()).await.unwrap();
    assert_eq!(server.fetches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    jwks.fetch_now().await.unwrap();
    assert_eq!(server.fetches(), 1);

    let tokens: Vec<String> = (0..200).map(|_| Signer::random().token()).collect();
    let mut flood = JoinSet::new();
    for token in tokens {
        let guard = guard.clone();
        flood.spawn(async move { guard.verify(&token).await });
    }
    while let Some(outcome) = flood.join_next().await {
        assert_eq!(outcome.unwrap().unwrap_err(), Rejection::InvalidToken);
    }
    assert_eq!(server.fetches(), 2, "200 unknown kids, one fetch");

    // A second wave within the interval: none; good tokens still pass.
    let mut flood = JoinSet::new();
    for _ in 0..50 {
        let guard = guard.clone();
        let token = Signer::random().token();
        flood.spawn(async move { guard.verify(&token).await });
    }
    while let Some(outcome) = flood.join_next().await {
        assert!(outcome.unwrap().is_err());
    }
    assert_eq!(server.fetches(), 2);
    guard.verify(&a.token()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_start_shares_one_fetch() {
    // No warm-up: the first wave of requests all miss; one fetch serves all.
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    let mut wave = JoinSet::new();
    for i in 0..100 {
        let guard = guard.clone();
        let token = a.token_for(ISS, &format!("user-{i}"));
        wave.spawn(async move { guard.verify(&token).await });
    }
    while let Some(outcome) = wave.join_next().await {
        outcome.unwrap().unwrap();
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn issuer_down_or_broken_keeps_the_last_good_keys() {
    let a = Signer::new("a");
    let mut server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url())
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let guard = guard(&jwks);
    let good = jwks.fetch_now().await.unwrap();
    let token = a.token();
    guard.verify(&token).await.unwrap();

    let enc_only = {
        let mut jwk = Signer::new("enc").jwk;
        jwk.key_use = Some("enc".into());
        JwkSet { keys: vec![jwk] }
    };
    // The slow answer first: the server's handler sleeps on after the
    // client gave up, and stopping the server waits for it.
    type Expected = fn(&JwksError) -> bool;
    let cases: Vec<(Answer, Expected)> = vec![
        (Answer::Slow(set(&[&a])), |e| {
            matches!(e, JwksError::Timeout { .. })
        }),
        (Answer::Status(StatusCode::INTERNAL_SERVER_ERROR), |e| {
            matches!(e, JwksError::Status { status: 500, .. })
        }),
        (Answer::Garbage, |e| {
            matches!(e, JwksError::InvalidDocument { .. })
        }),
        (Answer::Json(json!({"keys": "none"})), |e| {
            matches!(e, JwksError::InvalidDocument { .. })
        }),
        (Answer::Keys(enc_only), |e| {
            matches!(e, JwksError::NoUsableKeys { .. })
        }),
        (Answer::Oversized, |e| {
            matches!(
                e,
                JwksError::TooLarge {
                    limit: 1_048_576,
                    ..
                }
            )
        }),
        (Answer::OversizedChunked, |e| {
            matches!(e, JwksError::TooLarge { .. })
        }),
        (
            Answer::Redirect("https://elsewhere.example/jwks".into()),
            |e| matches!(e, JwksError::Status { status: 302, .. }),
        ),
    ];
    for (answer, expected) in cases {
        server.serve(answer);
        let error = jwks.fetch_now().await.unwrap_err();
        assert!(expected(&error), "unexpected error: {error}");
        assert!(Arc::ptr_eq(&good, &jwks.keys()), "after {error}");
        guard.verify(&token).await.unwrap();
    }

    server.stop().await;
    let error = jwks.fetch_now().await.unwrap_err();
    assert!(matches!(error, JwksError::Request { .. }), "{error}");
    guard.verify(&token).await.unwrap();
    // An unknown kid while the issuer is down: refused, not unavailable.
    assert_eq!(
        guard.verify(&Signer::new("z").token()).await.unwrap_err(),
        Rejection::InvalidToken
    );
    guard.verify(&token).await.unwrap();
}

#[tokio::test]
async fn cold_start_with_the_issuer_down_is_unavailable_until_a_fetch_succeeds() {
    let a = Signer::new("a");
    let server = Server::start(Answer::Status(StatusCode::SERVICE_UNAVAILABLE), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    assert_eq!(
        guard.verify(&a.token()).await.unwrap_err(),
        Rejection::Unavailable
    );
    server.serve(keys(&[&a]));
    // Within the refetch interval: still nothing loaded, still no fetch.
    assert_eq!(
        guard.verify(&a.token()).await.unwrap_err(),
        Rejection::Unavailable
    );
    assert_eq!(server.fetches(), 1);
    jwks.fetch_now().await.unwrap();
    guard.verify(&a.token()).await.unwrap();
}

#[tokio::test]
async fn cold_start_with_an_unknown_kid_is_an_invalid_token() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let guard = guard(&jwks);
    assert_eq!(
        guard
            .verify(&Signer::new("other").token())
            .await
            .unwrap_err(),
        Rejection::InvalidToken
    );
    assert_eq!(server.fetches(), 1);
    guard.verify(&a.token()).await.unwrap();
    assert_eq!(server.fetches(), 1);
}

#[test]
fn plain_http_is_refused_unless_loopback_or_explicitly_allowed() {
    for url in [
        "http://auth.example/jwks",
        "http://10.1.2.3/jwks",
        "http://[2001:db8::1]/jwks",
    ] {
        let error = RemoteJwks::builder(url).build().unwrap_err();
        assert!(matches!(error, JwksError::InsecureUrl(_)), "{url}: {error}");
        RemoteJwks::builder(url)
            .dangerous_allow_http()
            .build()
            .unwrap();
    }
    assert!(matches!(
        RemoteJwks::issuer_builder("http://auth.example").build(),
        Err(JwksError::InsecureUrl(_))
    ));
    RemoteJwks::issuer_builder("http://auth.example")
        .dangerous_allow_http()
        .build()
        .unwrap();
    for url in [
        "http://127.0.0.1:8080/jwks",
        "http://127.0.0.53/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost:8080/jwks",
        "https://auth.example/jwks",
    ] {
        RemoteJwks::builder(url).build().unwrap();
    }
    for url in [
        "ftp://auth.example/jwks",
        "https://u:p@auth.example/jwks",
        "jwks",
    ] {
        assert!(matches!(
            RemoteJwks::builder(url).build(),
            Err(JwksError::InvalidUrl(_))
        ));
    }
}

#[tokio::test]
async fn discovery_via_openid_configuration() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let issuer = server.base.clone();
    server.discovery(
        Some(json!({"issuer": issuer, "jwks_uri": server.jwks_url(), "response_types_supported": ["code"]})),
        None,
    );
    let jwks = RemoteJwks::from_issuer(issuer.clone()).await.unwrap();
    assert_eq!(server.shared.openid_hits.load(Ordering::SeqCst), 1);
    assert_eq!(server.shared.oauth_hits.load(Ordering::SeqCst), 0);
    assert_eq!(server.fetches(), 1);
    let guard = guard_for(&jwks, &issuer);
    guard.verify(&a.token_for(&issuer, "u")).await.unwrap();

    // Discovered once: a refetch goes straight to the JWKS.
    jwks.fetch_now().await.unwrap();
    assert_eq!(server.shared.openid_hits.load(Ordering::SeqCst), 1);
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn discovery_falls_back_to_rfc8414_metadata_on_404() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let issuer = server.base.clone();
    server.discovery(
        None,
        Some(json!({"issuer": issuer, "jwks_uri": server.jwks_url()})),
    );
    let jwks = RemoteJwks::from_issuer(issuer.clone()).await.unwrap();
    assert_eq!(server.shared.openid_hits.load(Ordering::SeqCst), 1);
    assert_eq!(server.shared.oauth_hits.load(Ordering::SeqCst), 1);
    guard_for(&jwks, &issuer)
        .verify(&a.token_for(&issuer, "u"))
        .await
        .unwrap();
}

#[tokio::test]
async fn discovery_refuses_an_issuer_mismatch() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let issuer = server.base.clone();
    for named in ["https://evil.example".to_owned(), format!("{issuer}/")] {
        server.discovery(
            Some(json!({"issuer": named, "jwks_uri": server.jwks_url()})),
            None,
        );
        let error = RemoteJwks::from_issuer(issuer.clone()).await.unwrap_err();
        assert!(
            matches!(&error, JwksError::IssuerMismatch { expected, found } if *expected == issuer && *found == named),
            "{error}"
        );
    }
    assert_eq!(
        server.fetches(),
        0,
        "no keys fetched from a mismatched issuer"
    );

    // Lazily, through the guard: nothing loads, the request is unavailable.
    let jwks = RemoteJwks::issuer_builder(issuer.clone()).build().unwrap();
    assert_eq!(
        guard_for(&jwks, &issuer)
            .verify(&a.token_for(&issuer, "u"))
            .await
            .unwrap_err(),
        Rejection::Unavailable
    );
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn discovery_refuses_an_insecure_jwks_uri_and_does_not_fall_back_on_errors() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let issuer = server.base.clone();
    server.discovery(
        Some(json!({"issuer": issuer, "jwks_uri": "http://keys.example/jwks"})),
        Some(json!({"issuer": issuer, "jwks_uri": server.jwks_url()})),
    );
    let error = RemoteJwks::from_issuer(issuer.clone()).await.unwrap_err();
    assert!(matches!(error, JwksError::InsecureUrl(_)), "{error}");
    assert_eq!(server.shared.oauth_hits.load(Ordering::SeqCst), 0);

    server.discovery(Some(json!({"issuer": issuer})), None);
    let error = RemoteJwks::from_issuer(issuer.clone()).await.unwrap_err();
    assert!(
        matches!(error, JwksError::InvalidDocument { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_explicitly_empty_key_set_withdraws_every_key() {
    let a = Signer::new("a");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    jwks.fetch_now().await.unwrap();
    let guard = guard(&jwks);
    guard.verify(&a.token()).await.unwrap();
    // The issuer learns key a leaked and publishes no keys at all.
    server.serve(Answer::Json(json!({"keys": []})));
    assert!(jwks.fetch_now().await.unwrap().is_empty());
    assert!(guard.verify(&a.token()).await.is_err());
}

#[tokio::test]
async fn unusable_keys_are_skipped_and_the_good_one_works() {
    let good = Signer::new("good");
    let enc = Signer::new("enc");
    let leaked = Signer::new("leaked");
    let mut enc_jwk = enc.jwk.clone();
    enc_jwk.key_use = Some("enc".into());
    // A private member in a published set: the key is compromised.
    let mut leaked_jwk = leaked.jwk.clone();
    leaked_jwk.d = Some(JwkSecret::new("c2VjcmV0LWQtdmFsdWU".into()));
    let document = json!({"keys": [
        serde_json::to_value(&enc_jwk).unwrap(),
        {"kty": "XYZ", "kid": "weird", "x": "AAAA"},
        {"kty": "EC", "kid": "bad-alg", "alg": "ES999", "crv": "P-256", "x": good.jwk.x, "y": good.jwk.y},
        {"kty": "EC", "kid": "broken", "crv": "P-256", "x": 5},
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0NTY3ODkw"},
        serde_json::to_value(&leaked_jwk).unwrap(),
        serde_json::to_value(&good.jwk).unwrap(),
    ]});
    let server = Server::start(Answer::Json(document), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    jwks.fetch_now().await.unwrap();
    assert_eq!(kids(&jwks), ["good"]);
    let guard = guard(&jwks);
    guard.verify(&good.token()).await.unwrap();
    for signer in [&enc, &leaked] {
        assert_eq!(
            guard.verify(&signer.token()).await.unwrap_err(),
            Rejection::InvalidToken
        );
    }
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    let old = Signer::new("2024-old");
    let new = Signer::new("2025-new");
    let server = Server::start(keys(&[&old]), Some("max-age=3600")).await;
    let jwks = RemoteJwks::builder(server.jwks_url())
        .min_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let guard = guard(&jwks);
    // Warmed at start-up: a first verification would itself be an
    // unknown-kid fetch, and use up the interval.
    let first = jwks.fetch_now().await.unwrap();
    let old_token = old.token();
    guard.verify(&old_token).await.unwrap();

    // The issuer publishes the new key and starts signing with it: the
    // token's unknown kid brings it in.
    server.serve(keys(&[&old, &new]));
    server.cache_control(Some("max-age=1"));
    let new_token = new.token();
    guard.verify(&new_token).await.unwrap();
    assert_eq!(server.fetches(), 2);
    assert!(!Arc::ptr_eq(&first, &jwks.keys()), "new keys, new Arc");
    guard.verify(&old_token).await.unwrap();

    // The old key is withdrawn: after the next refresh it stops verifying.
    server.serve(keys(&[&new]));
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if guard.verify(&old_token).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the withdrawn key still verifies");
    assert_eq!(kids(&jwks), ["2025-new"]);
    guard.verify(&new_token).await.unwrap();
}

#[tokio::test]
async fn an_unchanged_document_keeps_the_same_ring() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let server = Server::start(keys(&[&a]), None).await;
    let jwks = RemoteJwks::builder(server.jwks_url()).build().unwrap();
    let first = jwks.fetch_now().await.unwrap();
    let again = jwks.fetch_now().await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(server.fetches(), 2);
    server.serve(keys(&[&a, &b]));
    let changed = jwks.fetch_now().await.unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
    assert!(Arc::ptr_eq(&changed, &jwks.keys()));
    assert_eq!(kids(&jwks), ["a", "b"]);
}

// ---- Adversarial review (wt-review) --------------------------------------

/// Review finding: the background refresh runs on the runtime of the first
/// fetch. When that runtime ends (a start-up runtime, a `block_on` in a
/// builder), the task ends with it, and it is started again only by
/// `fetch_now` or by a token naming an unknown `kid`; never by `keys()`.
/// Tokens that name known kids never restart it: a key the issuer withdrew
/// (compromised, rotated out) keeps verifying for the life of the process,
/// whatever its `max-age` said.
#[test]
fn a_withdrawn_key_stops_verifying_even_when_the_first_fetch_ran_on_another_runtime() {
    let serving = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = Signer::new("a");
    let b = Signer::new("b");
    let server = serving.block_on(Server::start(keys(&[&a, &b]), Some("max-age=1")));
    let jwks = RemoteJwks::builder(server.jwks_url())
        .min_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    {
        // Start-up: fail fast if the issuer is unreachable, on a runtime
        // of its own, before the server's runtime exists.
        let startup = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        startup.block_on(jwks.fetch_now()).unwrap();
    }
    // The issuer withdraws key a.
    server.serve(keys(&[&b]));
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    app.block_on(async {
        let guard = guard(&jwks);
        let token = a.token();
        for _ in 0..40 {
            if guard.verify(&token).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "key a, withdrawn with max-age=1, still verifies 4 s later (JWKS fetched {} times: the refresher died with the start-up runtime)",
            server.fetches()
        );
    });
}
