//! `GET /openapi.json`: the document is served, is OpenAPI 3.1, lists
//! exactly the routes the router serves (checked by requests, not by
//! reading the document alone), documents every error as problem+json with
//! its headers, and applies the bearer scheme to exactly the routes that
//! answer 401 without a token.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::accounts::admin;
use crate::app::{Backend, TestApp, spawn_app, spawn_app_with};

/// Every (method, route template) `tokengate serve` answers on the API port
/// with its defaults (README's endpoint table), and a concrete path for it.
/// `/auth/verify` answers any method; OpenAPI can name these eight.
const SERVED: &[(&str, &str, &str)] = &[
    ("POST", "/auth/register", "/auth/register"),
    ("POST", "/auth/login", "/auth/login"),
    ("POST", "/auth/refresh", "/auth/refresh"),
    ("GET", "/auth/me", "/auth/me"),
    ("GET", "/auth/sessions", "/auth/sessions"),
    (
        "DELETE",
        "/auth/sessions/{id}",
        "/auth/sessions/no-such-session",
    ),
    ("POST", "/auth/password", "/auth/password"),
    ("GET", "/admin/users", "/admin/users"),
    ("POST", "/admin/users", "/admin/users"),
    ("PATCH", "/admin/users/{id}", "/admin/users/no-such-user"),
    (
        "POST",
        "/admin/users/{id}/revoke-sessions",
        "/admin/users/no-such-user/revoke-sessions",
    ),
    ("GET", "/admin/audit", "/admin/audit"),
    ("GET", "/admin/stats", "/admin/stats"),
    ("GET", "/auth/verify", "/auth/verify"),
    ("HEAD", "/auth/verify", "/auth/verify"),
    ("POST", "/auth/verify", "/auth/verify"),
    ("PUT", "/auth/verify", "/auth/verify"),
    ("PATCH", "/auth/verify", "/auth/verify"),
    ("DELETE", "/auth/verify", "/auth/verify"),
    ("OPTIONS", "/auth/verify", "/auth/verify"),
    ("TRACE", "/auth/verify", "/auth/verify"),
    ("GET", "/.well-known/jwks.json", "/.well-known/jwks.json"),
    (
        "GET",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server",
    ),
    ("GET", "/healthz", "/healthz"),
    ("GET", "/readyz", "/readyz"),
    ("GET", "/openapi.json", "/openapi.json"),
    // Last: it ends the session of the token the routing check uses.
    ("POST", "/auth/logout", "/auth/logout"),
];

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("the document is JSON")
}

/// The (METHOD, path) pairs the document lists.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| METHODS.iter().any(|m| m.eq_ignore_ascii_case(k)))
                .map(|method| (method.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The operations of the document: (METHOD, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                all.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => value,
    }
}

/// A 404 or 405 that says the router has no such route (or method), as
/// opposed to a handler's own 404 for an unknown id.
async fn is_unrouted(response: reqwest::Response) -> Option<String> {
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Some("405".into());
    }
    if status == StatusCode::NOT_FOUND {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if body["type"] == "about:blank" {
            return Some(format!("404 {body}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_is_served_as_openapi_3_1_public_and_cacheable() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "public, max-age=3600");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let doc: Value = response.json().await.expect("JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "tokengate");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // Operation ids are unique (OpenAPI requires it; clients name methods by them).
    let ids: Vec<String> = operations(&doc)
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
                .to_owned()
        })
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    // Every `$ref` in the document resolves.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        resolve(&doc, &json!({ "$ref": r }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let expected: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let listed = documented(&doc);
    assert_eq!(
        listed.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not in the served list"
    );
    assert_eq!(
        expected.difference(&listed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    // Each is really routed: an admin's request reaches a handler (a
    // handler's own 404 for an unknown id is fine; the router's is not).
    let admin = admin(&app).await;
    for (method, _, path) in SERVED {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .bearer_auth(&admin.access)
            .send()
            .await
            .unwrap();
        if let Some(unrouted) = is_unrouted(response).await {
            panic!("{method} {path} is documented but not routed: {unrouted}");
        }
    }
    // And nothing more on those paths: every other method is a 405 (HEAD
    // comes with GET in axum; `/auth/verify` has all eight).
    let paths: BTreeSet<&str> = SERVED.iter().map(|(_, template, _)| *template).collect();
    for template in paths {
        let (_, _, concrete) = SERVED.iter().find(|(_, t, _)| *t == template).unwrap();
        for method in METHODS {
            let listed_here = expected.contains(&(method.to_owned(), template.to_owned()));
            let head_of_get =
                method == "HEAD" && expected.contains(&("GET".into(), template.into()));
            if listed_here || head_of_get {
                continue;
            }
            let response = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(concrete),
                )
                .bearer_auth(&admin.access)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {concrete} is served but not documented"
            );
        }
    }
    // A path nobody serves is the router's 404 (the check above can tell).
    let response = app
        .client
        .get(app.url("/auth/nothing"))
        .send()
        .await
        .unwrap();
    assert!(is_unrouted(response).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_on_the_api_port_are_documented_only_where_served() {
    let app = spawn_app(Backend::Sqlite).await;
    assert!(!documented(&document(&app).await).contains(&("GET".into(), "/metrics".into())));
    drop(app);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.metrics_addr = None;
        s.metrics_token = Some(tokengate_server::infra::config::Settings::secret(
            "a metrics token of thirty-two characters".into(),
        ));
    })
    .await;
    let doc = document(&app).await;
    assert!(documented(&doc).contains(&("GET".into(), "/metrics".into())));
    let operation = &doc["paths"]["/metrics"]["get"];
    assert_eq!(operation["security"], json!([{ "metrics_token": [] }]));
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_response_is_a_problem_document_with_its_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let problem = &doc["components"]["schemas"]["Problem"];
    for member in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&json!(member)),
            "{member}"
        );
    }
    let mut statuses = BTreeSet::new();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        assert!(
            !responses.contains_key("default"),
            "{method} {path}: a default response would let any status pass"
        );
        for (status, response) in responses {
            let response = resolve(&doc, response);
            if status.starts_with('2') {
                continue;
            }
            statuses.insert(status.clone());
            let content = response["content"].as_object().unwrap_or_else(|| {
                panic!("{method} {path} {status} has no content");
            });
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/problem+json"],
                "{method} {path} {status}"
            );
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
            let header = |name: &str| {
                response["headers"]
                    .as_object()
                    .and_then(|h| h.get(name))
                    .map(|h| h["required"] == true)
                    .unwrap_or(false)
            };
            match status.as_str() {
                "429" | "503" => assert!(header("Retry-After"), "{method} {path} {status}"),
                // Only the login's "wrong email or password" is a 401
                // without a bearer challenge: no token is involved.
                "401" if path != "/auth/login" => {
                    assert!(header("WWW-Authenticate"), "{method} {path} {status}")
                }
                _ => {}
            }
        }
    }
    // The statuses the service answers with, each documented somewhere.
    for status in [
        "400", "401", "403", "404", "408", "409", "413", "415", "422", "429", "431", "500", "503",
    ] {
        assert!(statuses.contains(status), "{status} documented nowhere");
    }
    // The real answers carry what the document says: a 401 without a token.
    let response = app.client.get(app.url("/auth/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bearer_scheme_is_on_exactly_the_routes_that_demand_a_token() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    let mut protected = 0;
    for (method, path, operation) in operations(&doc) {
        // Cookie mode (on by default) is the second way in.
        let bearer = operation["security"] == json!([{ "bearer": [] }, { "cookie": [] }]);
        protected += usize::from(bearer);
        if bearer && !["GET", "HEAD", "OPTIONS"].contains(&method.to_ascii_uppercase().as_str()) {
            assert!(operation["responses"]["403"].is_object(), "{method} {path}");
        }
        let (_, _, concrete) = SERVED
            .iter()
            .find(|(m, t, _)| *m == method && *t == path)
            .unwrap();
        // No token at all: a protected route answers 401 with a challenge
        // before it reads anything else; an open one never asks for one.
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(concrete),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        if bearer {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{method} {path}");
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        } else {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(operation.get("security").is_none(), "{method} {path}");
        }
    }
    // auth: logout, me, sessions, end_session, password; admin: 6; verify: 8.
    assert_eq!(protected, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_auth_is_documented_as_configured_prefix_and_cookie() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert!(
        doc["paths"]["/auth/verify"]["get"]["responses"]["200"]["headers"]["X-Auth-User"]
            .is_object()
    );
    assert!(
        doc["components"]["securitySchemes"]
            .get("forward_auth_cookie")
            .is_none()
    );
    drop(app);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.forward_auth_header_prefix = "X-Gate-".into();
        s.forward_auth_cookie = Some("tg_access".into());
    })
    .await;
    let doc = document(&app).await;
    let cookie = &doc["components"]["securitySchemes"]["forward_auth_cookie"];
    assert_eq!(cookie["type"], "apiKey");
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], "tg_access");
    // The cookie alone lets a GET through, as the document says.
    let tokens = app.user("bea@example.com").await;
    let by_cookie = app
        .client
        .get(app.url("/auth/verify"))
        .header("cookie", format!("tg_access={}", tokens.access))
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);
    let tokens = app.user("ada@example.com").await;
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for method in ["get", "post", "trace"] {
        let headers = doc["paths"]["/auth/verify"][method]["responses"]["200"]["headers"]
            .as_object()
            .unwrap();
        let mut names: Vec<&String> = headers.keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "X-Gate-Email",
                "X-Gate-Roles",
                "X-Gate-Session",
                "X-Gate-User"
            ]
        );
        for name in names {
            assert!(response.headers().contains_key(name.as_str()), "{name}");
            assert_eq!(headers[name]["required"], true);
        }
        assert_eq!(
            doc["paths"]["/auth/verify"][method]["security"],
            json!([{ "bearer": [] }, { "cookie": [] }, { "forward_auth_cookie": [] }])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookie_mode_is_documented_as_configured() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app).await;
    let cookie = &doc["components"]["securitySchemes"]["cookie"];
    assert_eq!(cookie["type"], "apiKey");
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], "__Host-tg_access");
    assert!(
        cookie["description"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );
    for path in ["/auth/login", "/auth/refresh"] {
        let operation = &doc["paths"][path]["post"];
        let params = operation["parameters"].as_array().unwrap();
        let mode = params.iter().find(|p| p["name"] == "mode").unwrap();
        assert_eq!(mode["in"], "query");
        assert_eq!(
            mode["schema"]["enum"].as_array().map(Vec::len),
            Some(2),
            "{path}: {mode}"
        );
        let ok = &operation["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(ok["$ref"], "#/components/schemas/TokenAnswer", "{path}");
    }
    let answer = &doc["components"]["schemas"]["TokenAnswer"]["oneOf"];
    assert_eq!(answer.as_array().map(Vec::len), Some(2), "{answer}");
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["LoginBody"]["properties"]["mode"].is_object());
    assert!(schemas["RefreshRequest"]["properties"]["mode"].is_object());
    let cookie_answer = &schemas["CookieTokenResponse"]["properties"];
    assert!(cookie_answer["csrf_token"].is_object());
    assert!(cookie_answer.get("access_token").is_none());
    assert_eq!(
        doc["paths"]["/auth/logout"]["post"]["responses"]["403"]["description"]
            .as_str()
            .map(|d| d.contains("CSRF")),
        Some(true)
    );
    drop(app);
    // Switched off: no cookie scheme, the bearer token only.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.cookie_mode = tokengate_server::infra::config::CookieMode::Off;
    })
    .await;
    let doc = document(&app).await;
    assert!(doc["components"]["securitySchemes"].get("cookie").is_none());
    assert_eq!(
        doc["paths"]["/auth/me"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
}
