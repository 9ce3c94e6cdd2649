//! Fuzz body: bytes as one request to the service's real router (the one
//! `tokengate serve` runs, every middleware included), in process, on a
//! SQLite database in a temporary directory. Shared by
//! `fuzz_targets/endpoint_bodies.rs` and the stable replay test
//! `crates/tokengate-server/tests/integration/fuzz_corpus.rs`.
//!
//! Input: the first byte picks the endpoint (low 4 bits, modulo the 13 endpoints) and whether the
//! body is declared JSON (high bit clear) or `text/plain` (set). For the
//! endpoints with a path segment or a query string, the first line of the
//! rest is that segment or query (percent-encoded here where it would not
//! make a valid URI; a `%` passes as is, so bad escapes reach the server);
//! the rest is the body. For `/auth/verify`, each line of the rest is a
//! header `name: value`. Requests act as an admin (`/admin/*`) or as a
//! user made for that input; the text `@user_id` becomes that user's id
//! and `@refresh_token` their live refresh token, so updates and rotations
//! are reached too.
//!
//! The properties: no panic, never a 5xx, and every 4xx is problem+json.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use tower::ServiceExt as _;

use tokengate_server::http::state::AppState;
use tokengate_server::infra::clock::SystemClock;
use tokengate_server::infra::config::{Overrides, Settings};
use tokengate_server::service::accounts::{Actor, NewAccount};
use tokengate_server::startup::Application;

/// A strong password (the service refuses weak ones) every fuzz user has.
pub const PASSWORD: &str = "fuzzing the endpoints is a long walk";
pub const ADMIN_EMAIL: &str = "fuzz-admin@example.com";

/// What each selector value means (the low 4 bits of the first byte).
pub const ENDPOINTS: [(&str, &str, Part); 13] = [
    ("POST", "/auth/register", Part::Body),
    ("POST", "/auth/login", Part::Body),
    ("POST", "/auth/refresh", Part::Body),
    ("POST", "/auth/logout", Part::Body),
    ("POST", "/auth/password", Part::Body),
    ("DELETE", "/auth/sessions/", Part::Segment),
    ("GET", "/admin/users", Part::Query),
    ("POST", "/admin/users", Part::Body),
    ("PATCH", "/admin/users/", Part::Segment),
    ("POST", "/admin/users/{}/revoke-sessions", Part::Segment),
    ("GET", "/admin/audit", Part::Query),
    ("GET", "/auth/verify", Part::Headers),
    ("GET", "/admin/stats", Part::Query),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The rest is the body.
    Body,
    /// The first line is a path segment, the rest the body.
    Segment,
    /// The first line is the query string, the rest the body.
    Query,
    /// Each line is a header.
    Headers,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    state: Arc<AppState>,
    /// The admin's bearer token and when it was issued: the admin is never
    /// a target (the input cannot name its id), so one token serves until
    /// it nears its expiry.
    admin: Mutex<Option<(String, Instant)>>,
    /// Numbers the users made for inputs that may change or end one.
    users: AtomicU64,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // In memory where the system has one: a commit's fsync would
        // otherwise bound the executions per second.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::TempDir::new_in(shm)
        } else {
            tempfile::TempDir::new()
        }
        .expect("tempdir");
        let data_dir = dir.path().display().to_string();
        let vars = [
            ("TOKENGATE_ADDR", "127.0.0.1:0".to_owned()),
            // The listeners are bound, never served: any free ports.
            ("TOKENGATE_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("TOKENGATE_DATA_DIR", data_dir),
            ("TOKENGATE_ISSUER", "https://auth.fuzz".to_owned()),
            // One client sends everything: the budget must not end the run.
            (
                "TOKENGATE_AUTH_REQUESTS_PER_MINUTE",
                "4000000000".to_owned(),
            ),
        ];
        let mut settings = Settings::load_from(&Overrides::default(), &|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("fuzz settings");
        // Cheap hashing: this checks input handling, not strength.
        settings.argon2_memory_kib = 1024;
        settings.argon2_iterations = 1;
        // Inputs try wrong passwords for any account, the harness's own
        // among them: the failed-login throttle (tested on its own
        // elsewhere) would end the run with 429s to the harness's logins.
        settings.login_max_failures = u32::MAX;
        settings.login_ip_max_failures = u32::MAX;
        settings.login_account_max_failures = u32::MAX;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let state = runtime.block_on(async {
            let app = Application::build(settings, Arc::new(SystemClock))
                .await
                .expect("the application builds");
            let state = app.state();
            let account = NewAccount::parse(ADMIN_EMAIL, PASSWORD, &["user", "admin"])
                .expect("valid account");
            state
                .accounts
                .create(account, &Actor::Cli)
                .await
                .expect("admin created");
            state
        });
        Harness {
            runtime,
            router: tokengate_server::http::router(state.clone()),
            state,
            admin: Mutex::new(None),
            users: AtomicU64::new(0),
            _dir: dir,
        }
    })
}

impl Harness {
    async fn admin_token(&self) -> String {
        let cached = self.admin.lock().unwrap().clone();
        if let Some((token, issued)) = cached
            && issued.elapsed() < Duration::from_secs(300)
        {
            return token;
        }
        let (token, _) = login(&self.router, ADMIN_EMAIL).await;
        *self.admin.lock().unwrap() = Some((token.clone(), Instant::now()));
        token
    }

    /// A new user, logged in: their id, access and refresh tokens. Made
    /// through the service (as `tokengate user add`); an input that
    /// registered the same address first only moves to the next number.
    async fn fresh_user(&self) -> (String, String, String) {
        loop {
            let n = self.users.fetch_add(1, Ordering::Relaxed);
            let email = format!("fuzz-user-{n}@fuzz.example");
            let account = NewAccount::parse(&email, PASSWORD, &["user"]).expect("valid account");
            if let Ok(user) = self.state.accounts.create(account, &Actor::Cli).await {
                let (access, refresh) = login(&self.router, &email).await;
                return (user.id.to_string(), access, refresh);
            }
        }
    }
}

/// Bytes a URI path segment or query may hold as they are; the others are
/// percent-encoded.
fn uri_safe(b: u8, query: bool) -> bool {
    b.is_ascii_alphanumeric()
        || b"-._~%!$&'()*+,;=:@".contains(&b)
        || (query && (b == b'/' || b == b'?'))
}

fn encode(text: &str, query: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if uri_safe(b, query) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request(method: &str, uri: &str, body: Vec<u8>) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri)
        .body(Body::from(body))
        .expect("request");
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

async fn send(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the response body is read");
    (status, content_type, body.to_vec())
}

/// Logs in through the router: the access and refresh tokens.
async fn login(router: &axum::Router, email: &str) -> (String, String) {
    let body = serde_json::json!({"email": email, "password": PASSWORD});
    let mut request = request("POST", "/auth/login", body.to_string().into_bytes());
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (status, _, body) = send(router, request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "fuzz login: {}",
        String::from_utf8_lossy(&body)
    );
    let tokens: serde_json::Value = serde_json::from_slice(&body).expect("login JSON");
    let field = |name: &str| tokens[name].as_str().expect("token field").to_owned();
    (field("access_token"), field("refresh_token"))
}

pub fn run(data: &[u8]) {
    let _ = status_of(data);
}

/// Sends the request the input describes and checks the properties; the
/// answer's status (0 for an empty input, which sends nothing).
pub fn status_of(data: &[u8]) -> u16 {
    let Some((&selector, rest)) = data.split_first() else {
        return 0;
    };
    let (method, path, part) = ENDPOINTS[usize::from(selector & 0x0f) % ENDPOINTS.len()];
    let declared_json = selector & 0x80 == 0;
    let harness = harness();
    harness.runtime.block_on(async {
        let router = &harness.router;

        let admin = harness.admin_token().await;
        let mut text = String::from_utf8_lossy(rest).into_owned();
        // Inputs that act as a user (or name one) get a user of their own:
        // whatever they change or end touches nothing the next input uses.
        let user = if path.starts_with("/admin") && !text.contains("@user_id") {
            None
        } else {
            Some(harness.fresh_user().await)
        };
        if let Some((id, _, refresh)) = &user {
            text = text
                .replace("@user_id", id)
                .replace("@refresh_token", refresh);
        }
        let (first_line, remainder) = match part {
            Part::Segment | Part::Query => text.split_once('\n').unwrap_or((text.as_str(), "")),
            Part::Body | Part::Headers => ("", text.as_str()),
        };
        let uri = match part {
            Part::Segment if path.contains("{}") => path.replace("{}", &encode(first_line, false)),
            Part::Segment => format!("{path}{}", encode(first_line, false)),
            Part::Query => format!("{path}?{}", encode(first_line, true)),
            Part::Body | Part::Headers => path.to_owned(),
        };
        let body = match part {
            Part::Headers => Vec::new(),
            _ => remainder.as_bytes().to_vec(),
        };
        let mut request = request(method, &uri, body);
        let headers = request.headers_mut();
        if part == Part::Headers {
            for line in remainder.lines() {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                ) {
                    headers.append(name, value);
                }
            }
        } else {
            let content_type = if declared_json {
                "application/json"
            } else {
                "text/plain"
            };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        let bearer = match &user {
            _ if path.starts_with("/admin") => admin.as_str(),
            Some((_, access, _)) => access.as_str(),
            None => "",
        };
        if !headers.contains_key(header::AUTHORIZATION)
            && !bearer.is_empty()
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {bearer}"))
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        let (status, content_type, body) = send(router, request).await;
        assert!(
            !status.is_server_error(),
            "{method} {uri} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() {
            assert_eq!(
                content_type.as_deref(),
                Some("application/problem+json"),
                "{method} {uri} answered {status} without problem+json"
            );
            let problem: serde_json::Value =
                serde_json::from_slice(&body).expect("a problem document is JSON");
            assert_eq!(problem["status"], status.as_u16(), "{method} {uri}");
        }
        status.as_u16()
    })
}
