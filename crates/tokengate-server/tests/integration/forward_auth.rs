//! `/auth/verify` behind the real reverse proxies: nginx (`auth_request`)
//! and Caddy (`forward_auth`), each a child process on a free port with a
//! configuration generated into a temporary directory, between a client
//! and an upstream API that records every request it receives. The
//! endpoint itself, without a proxy, is tested in `verify.rs`.
//!
//! The site configurations below are the ones `docs/INTEGRATION.md` shows:
//! [`the_integration_guide_shows_the_tested_configurations`] renders them
//! with the guide's addresses and fails when the guide differs. Only the
//! process-level wrapper (pid file, logs, temporary paths, the loopback
//! bind) is the tests' own.
//!
//! A proxy that is not installed fails its tests under `CI=true`
//! (`scripts/proxies` installs both); elsewhere they print
//! `SKIPPED: nginx not installed` on stderr and pass.
//!
//! The guide's other way in, verifying tokens in Node (`jose`) and Python
//! (PyJWT) with nothing but the JWKS URL, is tested at the end: the example
//! files under `docs/examples/` run against a real tokengate, their library
//! installed from its registry into a temporary directory (no runtime or no
//! registry: SKIPPED outside CI, a failure under `CI=true`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::Value;
use tempfile::TempDir;
use tokengate_server::infra::config::Settings;

use crate::app::{Backend, TestApp, spawn_app_with};
use crate::pg_probe::in_ci;

// ---------------------------------------------------------------------------
// The configurations (docs/INTEGRATION.md shows them rendered with
// `GUIDE_*`; keep the two identical: a test compares them).
// ---------------------------------------------------------------------------

/// nginx: `snippets/tokengate-identity.conf`, included in every location
/// that proxies to the API, after its `auth_request` line.
const NGINX_IDENTITY: &str = r#"# tokengate: the identity headers the API receives. Include this in every
# location that proxies to the API, after its auth_request line. Each header
# is always set from tokengate's answer, and left out when the answer has
# none, so whatever a client sent under these names never reaches the API.
auth_request_set $tokengate_user      $upstream_http_x_auth_user;
auth_request_set $tokengate_email     $upstream_http_x_auth_email;
auth_request_set $tokengate_roles     $upstream_http_x_auth_roles;
auth_request_set $tokengate_session   $upstream_http_x_auth_session;
auth_request_set $tokengate_challenge $upstream_http_www_authenticate;
proxy_set_header X-Auth-User    $tokengate_user;
proxy_set_header X-Auth-Email   $tokengate_email;
proxy_set_header X-Auth-Roles   $tokengate_roles;
proxy_set_header X-Auth-Session $tokengate_session;
# A 401's challenge nginx passes on by itself; a 403's needs this.
add_header WWW-Authenticate $tokengate_forbidden_challenge always;
"#;

/// nginx: the part of the `http` block that protects the API.
const NGINX_SITE: &str = r#"# tokengate forward-auth: in the http block.
# The challenge of a 403 from tokengate (see tokengate-identity.conf).
map $status $tokengate_forbidden_challenge {
    403     $tokengate_challenge;
    default "";
}

server {
    listen @LISTEN@;

    # Every location that proxies to the API asks tokengate first.
    location / {
        auth_request /_tokengate;
        include snippets/tokengate-identity.conf;
        proxy_pass http://@API@;
    }
    # The role admin too: without it tokengate answers 403. A regex, and
    # case-insensitive, so that /admin, /Admin/ and /ADMIN/x are in it too
    # (many frameworks route them all to the admin area).
    location ~* ^/admin(/|$) {
        auth_request /_tokengate_admin;
        include snippets/tokengate-identity.conf;
        proxy_pass http://@API@;
    }

    # The questions to tokengate, internal: no client can send them.
    # tokengate gets the client's headers (Authorization, Cookie) and
    # method (set here, so a client cannot choose it), never the body.
    location = /_tokengate {
        internal;
        proxy_pass http://@TOKENGATE@/auth/verify;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_set_header X-Forwarded-Uri $request_uri;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
    location = /_tokengate_admin {
        internal;
        proxy_pass http://@TOKENGATE@/auth/verify?role=admin;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_set_header X-Forwarded-Uri $request_uri;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
}
"#;

/// Caddy: the site block that protects the API.
const CADDY_SITE: &str = r#"@SITE@ {
	# /admin itself too; Caddy matches paths case-insensitively.
	@admin path /admin /admin/*
	# In this order, as written: route keeps it.
	route {
		# The identity headers the API receives are tokengate's alone:
		# first drop whatever a client sent under those names.
		request_header -X-Auth-*
		# Every request needs a valid token; /admin/ also the role admin.
		# A uri with a query replaces the client's; the bare "?" drops it
		# (Caddy would otherwise pass the client's query on to tokengate).
		forward_auth @admin @TOKENGATE@ {
			uri /auth/verify?role=admin
			copy_headers X-Auth-User X-Auth-Email X-Auth-Roles X-Auth-Session
		}
		forward_auth @TOKENGATE@ {
			uri /auth/verify?
			copy_headers X-Auth-User X-Auth-Email X-Auth-Roles X-Auth-Session
		}
		# Caddy 2.6 sets a header the answer lacks to the text of its
		# placeholder: drop those (where Caddy leaves it unset, a no-op).
		@noUser header X-Auth-User {http.reverse_proxy.header.*
		request_header @noUser -X-Auth-User
		@noEmail header X-Auth-Email {http.reverse_proxy.header.*
		request_header @noEmail -X-Auth-Email
		@noRoles header X-Auth-Roles {http.reverse_proxy.header.*
		request_header @noRoles -X-Auth-Roles
		@noSession header X-Auth-Session {http.reverse_proxy.header.*
		request_header @noSession -X-Auth-Session
		reverse_proxy @API@
	}
}
"#;

/// The addresses the guide shows: tokengate and the API on the same host.
const GUIDE_TOKENGATE: &str = "127.0.0.1:8080";
const GUIDE_API: &str = "127.0.0.1:3000";
const GUIDE_NGINX_LISTEN: &str = "80";
const GUIDE_CADDY_SITE: &str = "api.example.com";

fn nginx_site(listen: &str, tokengate: &str, api: &str) -> String {
    NGINX_SITE
        .replace("@LISTEN@", listen)
        .replace("@TOKENGATE@", tokengate)
        .replace("@API@", api)
}

fn caddy_site(site: &str, tokengate: &str, api: &str) -> String {
    CADDY_SITE
        .replace("@SITE@", site)
        .replace("@TOKENGATE@", tokengate)
        .replace("@API@", api)
}

/// The whole `nginx.conf` of a test around `site` (the http block's
/// content): everything in `dir`, in the foreground, as the current user.
pub fn nginx_conf(dir: &Path, site: &str) -> String {
    let d = dir.display();
    // As root, nginx would run its worker as `nobody`, who cannot enter the
    // private temporary directory.
    let user = if owner_is_root(dir) {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

{site}}}
"
    )
}

fn caddyfile(port: u16, tokengate: SocketAddr, api: SocketAddr) -> String {
    let site = caddy_site(
        &format!("http://127.0.0.1:{port}"),
        &tokengate.to_string(),
        &api.to_string(),
    );
    format!(
        "{{
	admin off
	auto_https off
	default_bind 127.0.0.1
}}

{site}"
    )
}

fn owner_is_root(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("metadata").uid() == 0
}

// ---------------------------------------------------------------------------
// The proxies as child processes.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }
}

/// The proxy's executable: on `PATH`, or in the sbin directories a
/// non-root `PATH` may lack (Debian's nginx is `/usr/sbin/nginx`). `None`
/// when it is not installed: a loud skip, or a failure under `CI=true`.
pub fn installed(kind: Kind) -> Option<PathBuf> {
    let name = kind.name();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{name} is required under CI=true and is not installed: run scripts/proxies (Debian packages nginx-light and caddy)"
        );
        eprintln!(
            "SKIPPED: {name} not installed (scripts/proxies installs it); this test checked nothing"
        );
    }
    found
}

/// A port nothing listens on right now (the proxy binds it next; a rare
/// collision is retried).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Proxy {
    kind: Kind,
    child: Child,
    base: String,
    dir: TempDir,
}

impl Proxy {
    /// Starts `kind` on a free port in front of the API at `api`, asking
    /// tokengate at `tokengate`, and waits until it accepts connections.
    fn start(kind: Kind, binary: &Path, tokengate: SocketAddr, api: SocketAddr) -> Proxy {
        Proxy::launch(kind, binary, |dir, port| match kind {
            Kind::Nginx => {
                std::fs::create_dir(dir.join("snippets")).expect("snippets dir");
                std::fs::write(dir.join("snippets/tokengate-identity.conf"), NGINX_IDENTITY)
                    .expect("write snippet");
                let site = nginx_site(
                    &format!("127.0.0.1:{port}"),
                    &tokengate.to_string(),
                    &api.to_string(),
                );
                nginx_conf(dir, &site)
            }
            Kind::Caddy => caddyfile(port, tokengate, api),
        })
    }

    /// Starts `kind` on a free port with the configuration `configure`
    /// returns for its directory and port (nginx: the whole nginx.conf;
    /// Caddy: the Caddyfile), and waits until it accepts connections.
    pub fn launch(kind: Kind, binary: &Path, configure: impl Fn(&Path, u16) -> String) -> Proxy {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = TempDir::new().expect("tempdir");
            let port = free_port();
            let mut command = Command::new(binary);
            let config = configure(dir.path(), port);
            match kind {
                Kind::Nginx => {
                    let conf = dir.path().join("nginx.conf");
                    std::fs::write(&conf, config).expect("write nginx.conf");
                    command.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
                }
                Kind::Caddy => {
                    let conf = dir.path().join("Caddyfile");
                    std::fs::write(&conf, config).expect("write Caddyfile");
                    command
                        .args(["run", "--adapter", "caddyfile", "--config"])
                        .arg(&conf)
                        // Caddy's storage and autosaved configuration.
                        .env("HOME", dir.path())
                        .env("XDG_DATA_HOME", dir.path().join("data"))
                        .env("XDG_CONFIG_HOME", dir.path().join("config"));
                }
            }
            let output =
                |name: &str| std::fs::File::create(dir.path().join(name)).expect("output file");
            let mut child = command
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(output("stdout.log"))
                .stderr(output("stderr.log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let proxy_log = || {
                ["stdout.log", "stderr.log", "error.log"]
                    .iter()
                    .filter_map(|f| std::fs::read_to_string(dir.path().join(f)).ok())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            match wait_until_accepting(&mut child, port) {
                Ok(()) => {
                    return Proxy {
                        kind,
                        child,
                        base: format!("http://127.0.0.1:{port}"),
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = proxy_log();
                    if attempt < 3 && log.to_lowercase().contains("address already in use") {
                        continue;
                    }
                    panic!("{} did not start ({why}):\n{log}", kind.name());
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Until something accepts on `port` (10 s at most), or the child exits.
fn wait_until_accepting(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing accepted on {addr} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for the child to exit.
fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // nginx's master stops its worker on TERM; a KILL would leave the
        // worker running, still holding the port.
        if self.kind == Kind::Nginx {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            if exited_within(&mut self.child, Duration::from_secs(5)).is_some() {
                return;
            }
            eprintln!(
                "nginx in {} did not stop on TERM: killing it",
                self.dir.path().display()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The upstream API: records every request and echoes it back.
// ---------------------------------------------------------------------------

/// One request as the API received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of the header `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every header whose name starts with `prefix` (case-insensitive).
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                n.to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase())
            })
            .cloned()
            .collect()
    }
}

type Record = Arc<Mutex<Vec<Seen>>>;

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Record,
    task: tokio::task::JoinHandle<()>,
}

async fn echo(
    State(seen): State<Record>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let request = Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let answer = serde_json::json!({
        "method": request.method,
        "uri": request.uri,
        "headers": request.headers,
        "body": String::from_utf8_lossy(&request.body),
    });
    seen.lock().unwrap().push(request);
    axum::Json(answer)
}

impl Upstream {
    pub async fn start() -> Upstream {
        let seen = Record::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new().fallback(echo).with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Upstream { addr, seen, task }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request received so far.
    pub fn only_request(&self) -> Seen {
        let all = self.requests();
        assert_eq!(all.len(), 1, "the API received {all:#?}");
        all.into_iter().next().expect("one")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// tokengate + the API + the proxy in front of both.
// ---------------------------------------------------------------------------

struct Rig {
    app: TestApp,
    upstream: Upstream,
    proxy: Proxy,
    client: reqwest::Client,
}

impl Rig {
    /// `None` when the proxy is not installed (skipped outside CI).
    async fn start(kind: Kind) -> Option<Rig> {
        Rig::start_with(kind, |_| {}).await
    }

    async fn start_with(kind: Kind, tweak: impl FnOnce(&mut Settings)) -> Option<Rig> {
        let binary = installed(kind)?;
        let app = spawn_app_with(Backend::Sqlite, tweak).await;
        let upstream = Upstream::start().await;
        let tokengate: SocketAddr = app
            .base
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("the app's address");
        let api = upstream.addr;
        let proxy =
            tokio::task::spawn_blocking(move || Proxy::start(kind, &binary, tokengate, api))
                .await
                .expect("proxy start");
        Some(Rig {
            app,
            upstream,
            proxy,
            client: reqwest::Client::new(),
        })
    }

    /// `GET path` through the proxy, with the bearer token if any.
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let request = self.client.get(self.proxy.url(path));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        request.send().await.expect("request through the proxy")
    }

    /// What tokengate itself answers at `/auth/verify{query}`: the
    /// challenges the proxy must pass on unchanged.
    async fn direct_challenges(&self, query: &str, token: Option<&str>) -> Vec<String> {
        let request = self
            .app
            .client
            .get(self.app.url(&format!("/auth/verify{query}")));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        challenges(&request.send().await.expect("request to tokengate"))
    }
}

fn challenges(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("text header").to_owned())
        .collect()
}

/// The signature's last character changed: a token that cannot verify.
/// The token with one signature character changed. Not the last one: its
/// low bits are padding that a lenient decoder (Node's `jose`) ignores, so
/// changing them alone can leave the signature bytes as they were.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'Q' } else { 'A' };
    chars.into_iter().collect()
}

/// Runs each listed test once behind nginx and once behind Caddy.
macro_rules! both_proxies {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn nginx() {
                    super::$name(super::Kind::Nginx).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn caddy() {
                    super::$name(super::Kind::Caddy).await
                }
            }
        )*
    };
}

both_proxies!(
    no_token_is_a_401_with_the_challenge_and_never_reaches_the_api,
    a_valid_token_reaches_the_api_with_the_identity_headers_and_forged_ones_never_do,
    a_logged_out_token_is_refused_at_once,
    a_route_requiring_a_role_is_403_for_a_plain_user,
    identity_headers_the_answer_lacks_never_reach_the_api,
    a_cookie_lets_reads_through_and_never_writes_whatever_method_the_client_claims,
);

async fn no_token_is_a_401_with_the_challenge_and_never_reaches_the_api(kind: Kind) {
    let Some(rig) = Rig::start(kind).await else {
        return;
    };
    let tokens = rig.app.user("nobody@example.com").await;

    let expected = rig.direct_challenges("", None).await;
    assert_eq!(expected.len(), 1, "tokengate's own challenge: {expected:?}");
    assert!(!expected[0].contains("error="), "{expected:?}");
    let response = rig.get("/orders", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenges(&response), expected, "the challenge, passed on");

    // A bad token: the invalid_token challenge, passed on as well.
    let bad = tampered(&tokens.access);
    let expected = rig.direct_challenges("", Some(&bad)).await;
    assert!(
        expected.len() == 1 && expected[0].contains(r#"error="invalid_token""#),
        "{expected:?}"
    );
    let response = rig.get("/orders", Some(&bad)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenges(&response), expected);

    // Nor a POST with a body, nor the admin area.
    let response = rig
        .client
        .post(rig.proxy.url("/admin/users"))
        .header("content-type", "application/json")
        .body(r#"{"email":"x@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    assert!(
        rig.upstream.requests().is_empty(),
        "the API received {:#?}",
        rig.upstream.requests()
    );
    rig.app.logs().assert_clean();
}

async fn a_valid_token_reaches_the_api_with_the_identity_headers_and_forged_ones_never_do(
    kind: Kind,
) {
    let Some(rig) = Rig::start(kind).await else {
        return;
    };
    let tokens = rig.app.user("ada@example.com").await;
    let me: Value = rig.app.me(&tokens.access).await.json().await.unwrap();
    let body = r#"{"item":"book","quantity":2}"#;

    let response = rig
        .client
        .post(rig.proxy.url("/orders?page=2"))
        .bearer_auth(&tokens.access)
        // A client claiming to be someone else, twice over and in any case.
        .header("X-Auth-User", "admin")
        .header("x-auth-user", "root")
        .header("X-Auth-Roles", "admin")
        .header("X-Auth-Email", "mallory@example.com")
        .header("X-Auth-Session", "forged-session")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let seen = rig.upstream.only_request();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/orders?page=2");
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        body,
        "the body, intact"
    );
    assert_eq!(seen.values("x-auth-user"), [me["id"].as_str().unwrap()]);
    assert_eq!(seen.values("x-auth-email"), ["ada@example.com"]);
    assert_eq!(seen.values("x-auth-roles"), ["user"]);
    assert_eq!(
        seen.values("x-auth-session"),
        [me["session_id"].as_str().unwrap()]
    );
    assert_eq!(
        seen.with_prefix("x-auth-").len(),
        4,
        "only the four identity headers: {:?}",
        seen.with_prefix("x-auth-")
    );
    rig.app.logs().assert_clean();
}

async fn a_logged_out_token_is_refused_at_once(kind: Kind) {
    let Some(rig) = Rig::start(kind).await else {
        return;
    };
    let tokens = rig.app.user("grace@example.com").await;
    assert_eq!(
        rig.get("/orders", Some(&tokens.access)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        rig.app.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );

    // At once: no wait for a sync, no cache that still says yes.
    let response = rig.get("/orders", Some(&tokens.access)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let got = challenges(&response);
    assert!(
        got.len() == 1 && got[0].contains(r#"error="invalid_token""#),
        "{got:?}"
    );
    assert_eq!(got, rig.direct_challenges("", Some(&tokens.access)).await);
    assert_eq!(
        rig.upstream.requests().len(),
        1,
        "only the request before the logout reached the API"
    );
    rig.app.logs().assert_clean();
}

async fn a_route_requiring_a_role_is_403_for_a_plain_user(kind: Kind) {
    let Some(rig) = Rig::start(kind).await else {
        return;
    };
    let tokens = rig.app.user("plain@example.com").await;

    let response = rig.get("/admin/users", Some(&tokens.access)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let got = challenges(&response);
    assert!(
        got.len() == 1 && got[0].contains(r#"error="insufficient_scope""#),
        "{got:?}"
    );
    assert_eq!(
        got,
        rig.direct_challenges("?role=admin", Some(&tokens.access))
            .await
    );
    assert!(rig.upstream.requests().is_empty());

    // The same token is good outside the admin area, whatever query the
    // client adds (the question to tokengate is the proxy's alone)...
    assert_eq!(
        rig.get("/orders?role=admin&page=2", Some(&tokens.access))
            .await
            .status(),
        StatusCode::OK
    );
    // ...and an admin's is good inside it.
    let admin = crate::accounts::admin(&rig.app).await;
    let response = rig.get("/admin/users", Some(&admin.access)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(challenges(&response).is_empty());
    let seen = rig.upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].uri, "/orders?role=admin&page=2");
    assert_eq!(seen[1].uri, "/admin/users");
    let mut roles: Vec<&str> = seen[1].values("x-auth-roles")[0].split(',').collect();
    roles.sort_unstable();
    assert_eq!(roles, ["admin", "user"]);
    rig.app.logs().assert_clean();
}

async fn identity_headers_the_answer_lacks_never_reach_the_api(kind: Kind) {
    // tokengate answers with other names than the proxy copies: each of the
    // four is missing from its answer.
    let Some(rig) = Rig::start_with(kind, |s| {
        s.forward_auth_header_prefix = "X-Tokengate-".into();
    })
    .await
    else {
        return;
    };
    let tokens = rig.app.user("eve@example.com").await;
    let response = rig
        .client
        .get(rig.proxy.url("/orders"))
        .bearer_auth(&tokens.access)
        .header("X-Auth-User", "admin")
        .header("X-Auth-Email", "mallory@example.com")
        .header("X-Auth-Roles", "admin")
        .header("X-Auth-Session", "forged-session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = rig.upstream.only_request();
    // Neither the client's values nor an unexpanded placeholder: nothing.
    assert_eq!(seen.with_prefix("x-auth-"), []);
    rig.app.logs().assert_clean();
}

async fn a_cookie_lets_reads_through_and_never_writes_whatever_method_the_client_claims(
    kind: Kind,
) {
    let Some(rig) = Rig::start_with(kind, |s| {
        s.forward_auth_cookie = Some("tg_access".into());
    })
    .await
    else {
        return;
    };
    let tokens = rig.app.user("carol@example.com").await;
    let cookie = format!("theme=dark; tg_access={}", tokens.access);

    // A read: the proxy tells tokengate the method, and it is safe.
    let response = rig
        .client
        .get(rig.proxy.url("/orders"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = rig.upstream.only_request();
    assert_eq!(seen.values("x-auth-email"), ["carol@example.com"]);

    // A write with the cookie alone (what a cross-site form sends) is
    // refused, also when the client claims another method.
    for (name, value) in [
        ("x-forwarded-method", "GET"),
        ("x-original-method", "GET"),
        ("x-http-method-override", "GET"),
    ] {
        let response = rig
            .client
            .post(rig.proxy.url("/orders"))
            .header("cookie", &cookie)
            .header(name, value)
            .body("{}")
            .send()
            .await
            .unwrap();
        // 403: the CSRF check, which a cross-site request cannot pass.
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    assert_eq!(rig.upstream.requests().len(), 1, "no write reached the API");
    rig.app.logs().assert_clean();
}

/// nginx's `auth_request` passes every client header to the subrequest:
/// behind a configuration that sets only `X-Original-Method`, a client's
/// own `X-Forwarded-Method: GET` must not make its POST look safe (found
/// by this test; every method header present must now be safe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_x_forwarded_method_does_not_overrule_the_proxys_x_original_method() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.forward_auth_cookie = Some("tg_access".into());
    })
    .await;
    let tokens = app.user("oscar@example.com").await;
    // What nginx sends for a client's POST that carries the cookie and a
    // forged header, with `proxy_set_header X-Original-Method $request_method;`.
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header("cookie", format!("tg_access={}", tokens.access))
        .header("x-original-method", "POST")
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a cookie authenticated a POST without the CSRF token"
    );
    app.logs().assert_clean();
}

/// docs/INTEGRATION.md shows exactly the configurations and the example
/// files tested here.
#[test]
fn the_integration_guide_shows_the_tested_configurations() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/INTEGRATION.md");
    let guide = std::fs::read_to_string(&guide).expect("docs/INTEGRATION.md");
    for (what, block) in [
        (
            "nginx snippets/tokengate-identity.conf",
            NGINX_IDENTITY.to_owned(),
        ),
        (
            "nginx site",
            nginx_site(GUIDE_NGINX_LISTEN, GUIDE_TOKENGATE, GUIDE_API),
        ),
        (
            "Caddyfile site",
            caddy_site(GUIDE_CADDY_SITE, GUIDE_TOKENGATE, GUIDE_API),
        ),
    ] {
        assert!(
            guide.contains(&block),
            "docs/INTEGRATION.md must show the tested {what} configuration verbatim:\n{block}"
        );
    }
    for example in ["verify.mjs", "verify.py"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/examples")
            .join(example);
        let text = std::fs::read_to_string(&path).expect("the example");
        assert!(
            guide.contains(&text),
            "docs/INTEGRATION.md must show docs/examples/{example} verbatim"
        );
    }
    // The Rust section shows the example's `app` (run by example.rs).
    let example = include_str!("../../../tokengate/examples/protected_api.rs");
    let app = example
        .split_once("/// The API's router")
        .and_then(|(_, rest)| rest.split_once("async fn public()"))
        .map(|(body, _)| format!("/// The API's router{}", body.trim_end()))
        .expect("the example's app function");
    assert!(
        guide.contains(&app),
        "docs/INTEGRATION.md must show the example's app function verbatim"
    );
}

// ---------------------------------------------------------------------------
// docs/examples: verifying tokengate tokens elsewhere, with the JWKS alone.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Example {
    /// docs/examples/verify.mjs, with `jose` from npm.
    Node,
    /// docs/examples/verify.py, with `pyjwt[crypto]` from PyPI.
    Python,
}

/// A skip outside CI, a failure under `CI=true`; `None` either way.
fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "required under CI=true: {why}");
    eprintln!("SKIPPED: {why}; this test checked nothing");
    None
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// The example and its library, installed in a temporary directory.
struct Installed {
    example: Example,
    dir: TempDir,
}

impl Installed {
    fn new(example: Example) -> Option<Installed> {
        let (runtime, installer, file) = match example {
            Example::Node => ("node", "npm", "verify.mjs"),
            Example::Python => ("python3", "python3", "verify.py"),
        };
        for program in [runtime, installer] {
            if !on_path(program) {
                return skip(&format!("{program} not installed"));
            }
        }
        let dir = TempDir::new().expect("tempdir");
        let mut install = Command::new(installer);
        match example {
            // The example sits beside node_modules, where its import looks.
            Example::Node => install
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(dir.path())
                .arg("jose"),
            Example::Python => install
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(dir.path())
                .arg("pyjwt[crypto]")
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
                .env("PIP_ROOT_USER_ACTION", "ignore"),
        };
        let out = install
            .stdin(Stdio::null())
            .output()
            .expect("run the installer");
        if !out.status.success() {
            let why = format!(
                "cannot install the {example:?} example's library (offline?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return skip(&why);
        }
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/examples")
            .join(file);
        std::fs::copy(&source, dir.path().join(file)).expect("copy the example");
        Some(Installed { example, dir })
    }

    /// Runs the example on `token` against the app: exit status, stdout,
    /// stderr.
    fn verify(&self, app: &TestApp, token: &str, audience: &str) -> (bool, String, String) {
        let mut command = match self.example {
            Example::Node => {
                let mut c = Command::new("node");
                c.arg(self.dir.path().join("verify.mjs"));
                c
            }
            Example::Python => {
                let mut c = Command::new("python3");
                c.arg(self.dir.path().join("verify.py"))
                    .env("PYTHONPATH", self.dir.path())
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                c
            }
        };
        let out = command
            .arg(token)
            .env("TOKENGATE_URL", &app.base)
            .env("TOKENGATE_ISSUER", &app.settings.issuer)
            .env("TOKENGATE_AUDIENCE", audience)
            .stdin(Stdio::null())
            .output()
            .expect("run the example");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

macro_rules! both_examples {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn node() {
                    super::$name(super::Example::Node).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn python() {
                    super::$name(super::Example::Python).await
                }
            }
        )*
    };
}

both_examples!(the_example_accepts_a_real_token_and_refuses_a_tampered_one);

async fn the_example_accepts_a_real_token_and_refuses_a_tampered_one(example: Example) {
    let Some(installed) = tokio::task::spawn_blocking(move || Installed::new(example))
        .await
        .expect("install")
    else {
        return;
    };
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let tokens = app.user("ivy@example.com").await;
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    let audience = app.settings.audience.clone();

    // A few hundred milliseconds each: off the runtime's workers.
    let check = |token: &str, audience: &str| {
        tokio::task::block_in_place(|| installed.verify(&app, token, audience))
    };
    let (ok, stdout, stderr) = check(&tokens.access, &audience);
    assert!(ok, "refused a real token: {stderr}");
    let claims: Value = serde_json::from_str(stdout.trim()).expect("the claims as JSON");
    assert_eq!(claims["sub"], me["id"]);
    assert_eq!(claims["sid"], me["session_id"]);
    assert_eq!(claims["email"], "ivy@example.com");

    let (ok, _, stderr) = check(&tampered(&tokens.access), &audience);
    assert!(
        !ok && stderr.starts_with("rejected: "),
        "a tampered token: {stderr}"
    );
    let (ok, _, stderr) = check(&tokens.access, "another-api");
    assert!(
        !ok && stderr.starts_with("rejected: "),
        "another audience: {stderr}"
    );

    // What the guide warns of: the example cannot see the denylist, so a
    // logged-out token still passes it (forward-auth refuses it at once).
    assert_eq!(
        app.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let (ok, _, stderr) = check(&tokens.access, &audience);
    assert!(ok, "a logged-out token, until its exp: {stderr}");
    app.logs().assert_clean();
}

// ---- Adversarial review (wt-review) --------------------------------------

/// Found by review: the configurations enforced `?role=admin` by path
/// prefix (`location /admin/`, `path /admin/*`), which matched neither
/// `/admin` itself nor (nginx) another case, while many API frameworks
/// route case-insensitively (ASP.NET Core, Express by default) and serve
/// the `/admin` mount point.
async fn a_plain_user_never_reaches_the_admin_area_by_a_variant_of_its_path(kind: Kind) {
    let Some(rig) = Rig::start(kind).await else {
        return;
    };
    let tokens = rig.app.user("plain@example.com").await;
    let mut reached = Vec::new();
    for path in ["/admin", "/Admin/users", "/ADMIN/users", "/admin?x=1"] {
        let response = rig.get(path, Some(&tokens.access)).await;
        if response.status() == StatusCode::OK {
            reached.push(path);
        }
    }
    let seen: Vec<String> = rig.upstream.requests().into_iter().map(|s| s.uri).collect();
    assert!(
        reached.is_empty(),
        "{kind:?}: a plain user reached {reached:?}; the API saw {seen:?} with X-Auth-Roles: user"
    );
}

mod a_plain_user_never_reaches_the_admin_area_by_a_variant_of_its_path {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nginx() {
        super::a_plain_user_never_reaches_the_admin_area_by_a_variant_of_its_path(
            super::Kind::Nginx,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn caddy() {
        super::a_plain_user_never_reaches_the_admin_area_by_a_variant_of_its_path(
            super::Kind::Caddy,
        )
        .await
    }
}
