//! The auth service over real HTTP, each test on SQLite and on PostgreSQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate::{AccessClaims, JwkSet, KeyRing, VerifyPolicy};

use crate::app::{Backend, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    a_json_array_is_not_a_request_object,
    full_life_cycle,
    logout_local_ends_only_this_session,
    logout_others_keeps_this_session,
    logout_global_ends_everything,
    parallel_refreshes_within_the_reuse_interval_share_one_child,
    parallel_refreshes_with_no_reuse_interval_mint_at_most_one_child,
    concurrent_refresh_chains_all_rotate_and_reuse_is_still_caught,
    failed_logins_are_rate_limited_and_the_limit_resets,
    request_budget_answers_429_with_retry_after,
    bcrypt_hashes_verify_and_are_upgraded,
    bcrypt_refuses_passwords_over_72_bytes_and_rehashes_the_exact_one,
    stored_hashes_over_the_cost_ceilings_never_match,
    bad_requests_get_problem_json_never_5xx,
    each_error_class_has_a_stable_type_and_names_the_field,
    registration_rules,
    protected_routes_need_a_bearer_header,
    jwks_and_discovery_let_a_resource_server_verify,
    restart_keeps_keys_sessions_and_revocations,
    sessions_end_after_idle_timeout_and_lifetime,
    unknown_user_and_wrong_password_look_the_same,
    slow_requests_time_out,
);

async fn full_life_cycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("alice@example.com").await;

    let me: Value = app.me(&t.access).await.json().await.unwrap();
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["roles"], json!(["user"]));
    let sid = me["session_id"].as_str().unwrap().to_owned();

    // Rotation: a new pair; the new access token belongs to the same session.
    app.clock.advance(60);
    let response = app.refresh(&t.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let t2 = app.tokens(response).await;
    assert_ne!(t2.refresh, t.refresh);
    let me2: Value = app.me(&t2.access).await.json().await.unwrap();
    assert_eq!(me2["session_id"], sid.as_str());

    // The old refresh token, presented after the reuse interval: the whole
    // session is revoked, and its access tokens stop working at once.
    app.clock.advance(11);
    let body = problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_grant");
    problem(app.refresh(&t2.refresh).await, StatusCode::BAD_REQUEST).await;
    let rejected = app.me(&t2.access).await;
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        rejected.headers()["www-authenticate"],
        r#"Bearer realm="tokengate", error="invalid_token""#
    );
    assert_eq!(app.me(&t.access).await.status(), StatusCode::UNAUTHORIZED);

    // The user can log in again: a new session.
    let again = app
        .login_ok(
            "alice@example.com",
            "alice@example.com walks the long winding river road",
        )
        .await;
    assert_eq!(app.me(&again.access).await.status(), StatusCode::OK);
    let audit = app.logs().text();
    assert!(audit.contains("refresh_reuse_detected"));
    app.logs().assert_clean();
}

async fn logout_local_ends_only_this_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.user("bob@example.com").await;
    let b = app
        .login_ok(
            "bob@example.com",
            "bob@example.com walks the long winding river road",
        )
        .await;
    assert_eq!(
        app.logout(&a.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.me(&a.access).await.status(), StatusCode::UNAUTHORIZED);
    problem(app.refresh(&a.refresh).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.me(&b.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&b.refresh).await.status(), StatusCode::OK);
    app.logs().assert_clean();
}

async fn logout_others_keeps_this_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.user("carol@example.com").await;
    let pw = "carol@example.com walks the long winding river road";
    let b = app.login_ok("carol@example.com", pw).await;
    let c = app.login_ok("carol@example.com", pw).await;
    assert_eq!(
        app.logout(&a.access, Some("others")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&a.refresh).await.status(), StatusCode::OK);
    for other in [&b, &c] {
        assert_eq!(
            app.me(&other.access).await.status(),
            StatusCode::UNAUTHORIZED
        );
        problem(app.refresh(&other.refresh).await, StatusCode::BAD_REQUEST).await;
    }
    app.logs().assert_clean();
}

async fn logout_global_ends_everything(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.user("dave@example.com").await;
    let pw = "dave@example.com walks the long winding river road";
    let b = app.login_ok("dave@example.com", pw).await;
    let other_user = app.user("erin@example.com").await;
    assert_eq!(
        app.logout(&a.access, Some("global")).await.status(),
        StatusCode::NO_CONTENT
    );
    for t in [&a, &b] {
        assert_eq!(app.me(&t.access).await.status(), StatusCode::UNAUTHORIZED);
        problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.me(&other_user.access).await.status(), StatusCode::OK);
    // A login after the logout works (a later second).
    app.clock.advance(1);
    let fresh = app.login_ok("dave@example.com", pw).await;
    assert_eq!(app.me(&fresh.access).await.status(), StatusCode::OK);
    // An unknown scope is a client error.
    let body = problem(
        app.logout(&fresh.access, Some("everyone")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["field"], "scope");
    app.logs().assert_clean();
}

/// Presents the same refresh token `n` times at once.
async fn refresh_in_parallel(
    app: &std::sync::Arc<crate::app::TestApp>,
    token: &str,
    n: usize,
) -> Vec<(StatusCode, Option<String>)> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            let token = token.to_owned();
            async move {
                let r = app.refresh(&token).await;
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, body["refresh_token"].as_str().map(str::to_owned))
            }
        })
        .collect();
    futures_join_all(requests).await
}

/// A tiny join_all, to avoid a dependency for one test.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
    }
    let mut out: Vec<(usize, F::Output)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

async fn parallel_refreshes_within_the_reuse_interval_share_one_child(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("frank@example.com").await;
    let (_, _, before) = app.state.store.counts().await.unwrap();
    let app = std::sync::Arc::new(app);
    let results = refresh_in_parallel(&app, &t.refresh, 8).await;
    assert!(
        results.iter().all(|(s, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    let children: std::collections::BTreeSet<_> =
        results.iter().filter_map(|(_, r)| r.clone()).collect();
    assert_eq!(
        children.len(),
        1,
        "all tabs got the same child: {children:?}"
    );
    let (_, _, after) = app.state.store.counts().await.unwrap();
    assert_eq!(after, before + 1, "exactly one child was stored");
    let child = children.into_iter().next().unwrap();
    app.logs().remember(&child);
    // The session is intact: the child rotates normally.
    assert_eq!(app.refresh(&child).await.status(), StatusCode::OK);
    app.logs().assert_clean();
}

async fn parallel_refreshes_with_no_reuse_interval_mint_at_most_one_child(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.refresh_reuse_interval = Duration::ZERO).await;
    let t = app.user("grace@example.com").await;
    let app = std::sync::Arc::new(app);
    let results = refresh_in_parallel(&app, &t.refresh, 8).await;
    let winners: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{results:?}"
    );
    // The losers presented a used token: reuse detected, session revoked,
    // so even the winner's child is dead. Never two live children.
    let child = winners[0].1.clone().unwrap();
    app.logs().remember(&child);
    problem(app.refresh(&child).await, StatusCode::BAD_REQUEST).await;
    app.logs().assert_clean();
}

async fn failed_logins_are_rate_limited_and_the_limit_resets(backend: Backend) {
    let app = spawn_app(backend).await;
    app.user("heidi@example.com").await;
    let pw = "heidi@example.com walks the long winding river road";
    for _ in 0..5 {
        problem(
            app.login("heidi@example.com", "not the password at all")
                .await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let limited = app.login("heidi@example.com", pw).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900, "{retry}");
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // The same address trying another account is not held by this pair's
    // limit (login_ip_max_failures bounds it; see hardening.rs).
    assert_eq!(
        app.login("nobody@example.com", "whatever it is")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // After the window the correct password works again, and successes do not count.
    app.clock.advance(15 * 60 + 1);
    for _ in 0..7 {
        app.login_ok("heidi@example.com", pw).await;
    }
    assert!(app.logs().text().contains("login_rate_limited"));
    app.logs().assert_clean();
}

async fn request_budget_answers_429_with_retry_after(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.auth_requests_per_minute = 3).await;
    for _ in 0..3 {
        let r = app
            .post_json("/auth/refresh", &json!({"refresh_token": "x"}))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = app
        .post_json("/auth/refresh", &json!({"refresh_token": "x"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let rows = app.audit_events("request_budget_exceeded").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].detail["path"], "/auth/refresh");
    // Outside /auth the budget does not apply.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn bcrypt_hashes_verify_and_are_upgraded(backend: Backend) {
    let app = spawn_app(backend).await;
    // A user imported from the seeds' Express/Flask apps, with a bcrypt hash.
    let hash = bcrypt::hash("imported user password", 4).unwrap();
    let user = tokengate_server::store::User {
        id: "imported-1".into(),
        email: "ivan@example.com".into(),
        password_hash: hash,
        roles: "user admin".into(),
        not_before: None,
        disabled: false,
        created_at: 1,
        session_epoch: 0,
    };
    let event = tokengate_server::infra::audit::AuditEvent::new("user_imported").user("imported-1");
    app.state.store.create_user(&user, 1, &event).await.unwrap();
    problem(
        app.login("ivan@example.com", "wrong password here").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let t = app
        .login_ok("ivan@example.com", "imported user password")
        .await;
    let me: Value = app.me(&t.access).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["user", "admin"]));
    let stored = app
        .state
        .store
        .user_by_email("ivan@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "rehashed on login"
    );
    app.login_ok("ivan@example.com", "imported user password")
        .await;
    app.logs().assert_clean();
}

/// Stores a user directly, as `user import` would.
async fn import_user(app: &crate::app::TestApp, id: &str, email: &str, password_hash: &str) {
    let user = tokengate_server::store::User {
        id: id.into(),
        email: email.into(),
        password_hash: password_hash.into(),
        roles: "user".into(),
        not_before: None,
        disabled: false,
        created_at: 1,
        session_epoch: 0,
    };
    let event = tokengate_server::infra::audit::AuditEvent::new("user_imported").user(id);
    app.state.store.create_user(&user, 1, &event).await.unwrap();
}

async fn stored_hash(app: &crate::app::TestApp, email: &str) -> String {
    let user = app.state.store.user_by_email(email).await.unwrap().unwrap();
    user.password_hash
}

async fn bcrypt_refuses_passwords_over_72_bytes_and_rehashes_the_exact_one(backend: Backend) {
    let app = spawn_app(backend).await;
    // bcrypt reads 72 bytes and ignores the rest: any longer password
    // with the same first 72 bytes would match this hash.
    let exact = "a 72-byte password imported from the Express app: bcrypt reads this far!";
    assert_eq!(exact.len(), 72);
    let longer = format!("{exact} and then some");
    let one_more = format!("{exact}?");
    let email = "long@example.com";
    let hash = bcrypt::hash(exact, 4).unwrap();
    import_user(&app, "imported-72", email, &hash).await;

    for wrong in [&longer, &one_more] {
        problem(app.login(email, wrong).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(stored_hash(&app, email).await, hash, "not rehashed");
    }

    app.login_ok(email, exact).await;
    let upgraded = stored_hash(&app, email).await;
    assert!(upgraded.starts_with("$argon2id$"), "{upgraded}");
    // The new hash is of exactly the 72 bytes typed, and argon2 reads them all.
    let verdict = app
        .state
        .hasher
        .verify(exact, Some(&upgraded))
        .await
        .unwrap();
    assert!(verdict.matches);
    let verdict = app
        .state
        .hasher
        .verify(&one_more, Some(&upgraded))
        .await
        .unwrap();
    assert!(!verdict.matches);
    app.login_ok(email, exact).await;
    problem(app.login(email, &one_more).await, StatusCode::UNAUTHORIZED).await;
    app.logs().assert_clean();
}

async fn stored_hashes_over_the_cost_ceilings_never_match(backend: Backend) {
    use argon2::PasswordHasher as _;
    let app = spawn_app(backend).await;
    // A real hash of the password, cheap in memory but with 33 passes: over
    // the ceiling of 32, so it is not computed, whatever its cost.
    let password = "a password with a hash of absurd cost";
    let params = argon2::Params::new(64, 33, 1, None).unwrap();
    let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"salt of sixteen!")
        .unwrap()
        .to_string();
    let email = "costly@example.com";
    import_user(&app, "imported-costly", email, &hash).await;
    problem(app.login(email, password).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(stored_hash(&app, email).await, hash);
    let logs = app.logs().text();
    let refusal = logs
        .lines()
        .find(|l| l.contains("stored password hash refused") && l.contains("imported-costly"))
        .unwrap_or_else(|| panic!("no refusal logged: {logs}"));
    assert!(refusal.contains("\"level\":\"ERROR\""), "{refusal}");
    assert!(refusal.contains("t=33"), "{refusal}");
    assert!(!logs.contains(&hash), "the hash was logged");
    app.logs().assert_clean();
}

async fn bad_requests_get_problem_json_never_5xx(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url("/auth/login");
    let c = &app.client;
    // Not JSON.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;
    // Wrong content type.
    let r = c
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // Missing fields, wrong types.
    problem(
        app.post_json("/auth/login", &json!({"email": "a@b.co"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        app.post_json("/auth/login", &json!({"email": 1, "password": 2}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        app.post_json("/auth/refresh", &json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Oversized body.
    let big = json!({"email": "a@b.co", "password": "x".repeat(20 * 1024)});
    problem(
        app.post_json("/auth/login", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // Oversized headers.
    let r = c
        .get(app.url("/healthz"))
        .header("x-filler", "y".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    // Unknown route, wrong method.
    problem(
        c.get(app.url("/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let r = c.get(app.url("/auth/login")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    // Garbage refresh tokens.
    for token in ["", "short", &"A".repeat(43), &"é".repeat(43)] {
        problem(app.refresh(token).await, StatusCode::BAD_REQUEST).await;
    }
    // Garbage bearer tokens.
    for token in ["", "x", "a.b.c", &"A".repeat(10_000)] {
        let r = c
            .get(app.url("/auth/me"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::UNAUTHORIZED
                || r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{}",
            r.status()
        );
    }
    // Security headers on every response, errors included.
    let r = c.get(app.url("/nope")).send().await.unwrap();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.headers()[name], value);
    }
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    app.logs().assert_clean();
}

/// The problem document's `type`, after `problem` checked the rest.
async fn problem_type(response: reqwest::Response, status: StatusCode) -> (String, Value) {
    let body = problem(response, status).await;
    let kind = body["type"].as_str().unwrap_or_default().to_owned();
    (kind, body)
}

/// No parser internals in a problem document.
fn assert_plain_words(body: &Value) {
    let detail = body["detail"].as_str().unwrap_or_default();
    for internal in ["line ", "column", "`", "Failed to", "serde", "struct "] {
        assert!(!detail.contains(internal), "{internal:?} in {detail:?}");
    }
}

async fn each_error_class_has_a_stable_type_and_names_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let c = &app.client;
    let login = app.url("/auth/login");

    // 404: no route.
    let (kind, _) = problem_type(
        c.get(app.url("/no/such/path")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(kind, "about:blank");

    // 405: the route exists, the method does not; Allow lists the methods.
    let r = c.get(&login).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    let (kind, _) = problem_type(r, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(kind, "about:blank");
    let r = c
        .delete(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;

    // 415: not JSON by its content type.
    let r = c
        .post(&login)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (kind, _) = problem_type(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(kind, "urn:tokengate:problem:unsupported-media-type");

    // 400: not JSON at all.
    let r = c
        .post(&login)
        .header("content-type", "application/json")
        .body(r#"{"email": "a@b.co", "password": "#)
        .send()
        .await
        .unwrap();
    let (kind, body) = problem_type(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(kind, "urn:tokengate:problem:malformed-json");
    assert_plain_words(&body);

    // 422: JSON, but a field is missing: named, in plain words.
    let r = app
        .post_json("/auth/login", &json!({"email": "a@b.co"}))
        .await;
    let (kind, body) = problem_type(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(kind, "urn:tokengate:problem:invalid-field");
    assert_eq!(body["field"], "password");
    assert_eq!(body["detail"], "The password is missing.");
    assert_plain_words(&body);

    // 422: the wrong type, named, and the value never repeated.
    let r = app
        .post_json(
            "/auth/login",
            &json!({"email": "a@b.co", "password": ["hunter2"]}),
        )
        .await;
    let (_, body) = problem_type(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "password");
    assert_eq!(body["detail"], "The password must be a string.");
    assert!(!body.to_string().contains("hunter2"));

    // 422: a body that is not an object.
    for not_an_object in [json!("a string"), json!([1, 2])] {
        let r = app.post_json("/auth/refresh", &not_an_object).await;
        let (_, body) = problem_type(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "body", "{not_an_object}");
        assert_plain_words(&body);
    }
    let r = app.post_json("/auth/refresh", &json!("a string")).await;
    let (_, body) = problem_type(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"], "The body must be a JSON object.");

    // 413: over the body limit.
    let big = json!({"email": "a@b.co", "password": "x".repeat(20 * 1024)});
    let (kind, _) = problem_type(
        app.post_json("/auth/login", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(kind, "urn:tokengate:problem:payload-too-large");

    // Logout's optional body: an unknown field is named, plainly.
    let t = app.user("olivia@example.com").await;
    let r = c
        .post(app.url("/auth/logout"))
        .bearer_auth(&t.access)
        .json(&json!({"scop": "global"}))
        .send()
        .await
        .unwrap();
    let (_, body) = problem_type(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "scop");
    assert_plain_words(&body);

    // 400: a path segment that is not UTF-8.
    let r = c
        .delete(app.url("/auth/sessions/%FF"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    let (kind, body) = problem_type(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(kind, "urn:tokengate:problem:invalid-path");
    assert_eq!(body["field"], "id");
    app.logs().assert_clean();
}

async fn registration_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let good = "judy walks the long winding river road";
    let r = app.register("  Judy@Example.COM ", good).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["email"], "judy@example.com");
    assert!(body.get("password_hash").is_none());
    problem(
        app.register("judy@example.com", good).await,
        StatusCode::CONFLICT,
    )
    .await;
    let weak = problem(
        app.register("kim@example.com", "password1234").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(weak["field"], "password");
    assert!(
        weak["detail"].as_str().unwrap().contains("unrelated words"),
        "{weak}"
    );
    let short = problem(
        app.register("kim@example.com", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(short["detail"].as_str().unwrap().contains("at least 12"));
    let bad = problem(
        app.register("not-an-email", good).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(bad["field"], "email");
    // Login normalises the email the same way.
    app.login_ok("JUDY@example.com ", good).await;

    let closed = spawn_app_with(backend, |s| s.registration = false).await;
    problem(
        closed.register("lee@example.com", good).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    app.logs().assert_clean();
    closed.logs().assert_clean();
}

async fn protected_routes_need_a_bearer_header(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("mallory@example.com").await;
    let c = &app.client;
    let r = c.get(app.url("/auth/me")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="tokengate""#
    );
    // Never from the query string or a cookie.
    let r = c
        .get(app.url(&format!("/auth/me?access_token={}", t.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(app.url("/auth/me"))
        .header("cookie", format!("access_token={}", t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Not another scheme, and a tampered token fails.
    let r = c
        .get(app.url("/auth/me"))
        .header("authorization", format!("Basic {}", t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut tampered = t.access.clone();
    tampered.insert(tampered.find('.').unwrap() + 3, 'x');
    let body = problem(app.me(&tampered).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], tokengate::Error::Expired.public_message());
    // Case-insensitive scheme works.
    let r = c
        .get(app.url("/auth/me"))
        .header("authorization", format!("bearer {}", t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The access token expires with the clock.
    app.clock.advance(15 * 60 + 31);
    assert_eq!(app.me(&t.access).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&t.refresh).await.status(), StatusCode::OK);
    app.logs().assert_clean();
}

async fn jwks_and_discovery_let_a_resource_server_verify(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("niaj@example.com").await;
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let jwks: JwkSet = r.json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert!(!jwks.keys[0].is_private());
    let metadata: Value = app
        .client
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = |path: &str| format!("{}{path}", app.settings.public_url);
    assert_eq!(metadata["issuer"], "https://auth.test");
    assert_eq!(metadata["jwks_uri"], public("/.well-known/jwks.json"));
    for (name, path) in [
        ("token_endpoint", "/auth/login"),
        ("refresh_endpoint", "/auth/refresh"),
        ("revocation_endpoint", "/auth/logout"),
        ("registration_endpoint", "/auth/register"),
        ("userinfo_endpoint", "/auth/me"),
    ] {
        assert_eq!(metadata[name], public(path), "{name}");
    }
    assert_eq!(
        metadata["access_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    // Nothing claimed that does not hold: no ID tokens, no grants of
    // RFC 6749's form, no authorization endpoint's response types.
    assert_eq!(metadata["response_types_supported"], json!([]));
    assert_eq!(metadata["grant_types_supported"], json!([]));
    assert!(
        metadata
            .get("id_token_signing_alg_values_supported")
            .is_none()
    );
    assert!(!metadata.to_string().contains("password"));
    // No OpenID discovery: without ID tokens it could not be true.
    problem(
        app.client
            .get(app.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    // A resource server with only the JWKS verifies the access token.
    let (ring, skipped) = KeyRing::from_jwks(&jwks);
    assert!(skipped.is_empty());
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.test")
        .audience("tokengate")
        .typ("at+jwt")
        .build()
        .unwrap();
    let claims = ring
        .verify::<AccessClaims>(&t.access, &policy, app.clock_now())
        .unwrap()
        .claims;
    assert_eq!(claims.roles, vec!["user".to_string()]);
    assert!(claims.sid.is_some() && claims.scope.is_some());
    assert_eq!(claims.exp - claims.iat, 900);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    app.logs().assert_clean();
}

async fn restart_keeps_keys_sessions_and_revocations(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.user("olivia@example.com").await;
    let pw = "olivia@example.com walks the long winding river road";
    let b = app.login_ok("olivia@example.com", pw).await;
    assert_eq!(
        app.logout(&b.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let jwks_before: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app = app.restart().await;
    let jwks_after: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks_before, jwks_after,
        "the signing key survived, decrypted with the master key"
    );
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&a.refresh).await.status(), StatusCode::OK);
    // The revocation outlived the in-process denylist: rebuilt from the database.
    assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
    app.logs().assert_clean();
}

async fn sessions_end_after_idle_timeout_and_lifetime(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.session_idle_timeout = Duration::from_secs(3600);
        s.session_lifetime = Duration::from_secs(3 * 3600);
        s.refresh_ttl = Duration::from_secs(2 * 3600);
    })
    .await;
    let t = app.user("peggy@example.com").await;
    app.clock.advance(3601);
    problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await;
    let pw = "peggy@example.com walks the long winding river road";
    let mut t = app.login_ok("peggy@example.com", pw).await;
    for _ in 0..5 {
        app.clock.advance(50 * 60);
        let r = app.refresh(&t.refresh).await;
        if r.status() != StatusCode::OK {
            // Past the 3 h absolute lifetime.
            problem(r, StatusCode::BAD_REQUEST).await;
            app.logs().assert_clean();
            return;
        }
        t = app.tokens(r).await;
    }
    panic!("the session outlived its absolute lifetime");
}

impl crate::app::TestApp {
    fn clock_now(&self) -> tokengate::UnixTime {
        use tokengate_server::infra::clock::Clock;
        self.clock.now()
    }
}

/// An app for timing logins: real OWASP argon2id costs, so hashing
/// dominates as in production, and the login limits out of the way.
pub(crate) async fn spawn_app_for_login_timing(backend: Backend) -> crate::app::TestApp {
    spawn_app_with(backend, |s| {
        s.argon2_memory_kib = 19 * 1024;
        s.argon2_iterations = 2;
        s.login_max_failures = 10_000;
        s.login_ip_max_failures = 10_000;
        s.login_account_max_failures = 10_000;
    })
    .await
}

/// Failed logins timed: an unknown email against a wrong password for an
/// existing account.
pub(crate) struct FailedLoginTimes {
    /// The fastest login of the unknown email, in seconds.
    pub unknown: f64,
    /// The fastest wrong-password login of the existing account.
    pub wrong: f64,
    /// Every distinct response body seen.
    pub bodies: std::collections::BTreeSet<String>,
    /// How many logins of each kind were timed.
    pub rounds: usize,
}

/// Times `rounds` logins of each kind, each a 401. Interleaved, so
/// background load hits both alike. Load only ever adds time, so the
/// fastest of many tries is the truest estimate of each path's own cost,
/// even with the rest of the suite running beside it (a median still moved
/// with the load of a parallel build). When the two are still apart after
/// `rounds`, another `rounds` are timed, twice at most: under a load
/// average of 17 one run of 15 had not yet found either path's fastest,
/// while a real leak (an unknown email skipping the hash, a ratio near
/// 0.01) stays apart however many rounds are taken.
pub(crate) async fn time_failed_logins(
    app: &crate::app::TestApp,
    unknown_email: &str,
    existing_email: &str,
    rounds: usize,
) -> FailedLoginTimes {
    let mut times = FailedLoginTimes {
        unknown: f64::INFINITY,
        wrong: f64::INFINITY,
        bodies: std::collections::BTreeSet::new(),
        rounds: 0,
    };
    for _attempt in 0..3 {
        for _ in 0..rounds {
            let i = times.rounds;
            for (email, fastest) in [
                (unknown_email, &mut times.unknown),
                (existing_email, &mut times.wrong),
            ] {
                let started = std::time::Instant::now();
                let r = app
                    .login(email, &format!("wrong password number {i}"))
                    .await;
                *fastest = fastest.min(started.elapsed().as_secs_f64());
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                times.bodies.insert(r.text().await.unwrap());
            }
            times.rounds += 1;
        }
        if times.within_bound() {
            break;
        }
    }
    times
}

impl FailedLoginTimes {
    /// The bound the threat model states: neither path's fastest more than
    /// 1.67 times the other's.
    fn within_bound(&self) -> bool {
        (0.6..=1.67).contains(&(self.unknown / self.wrong))
    }

    /// One body for both, and times within the bound.
    pub(crate) fn assert_indistinguishable(&self) {
        assert_eq!(self.bodies.len(), 1, "one body for both: {:?}", self.bodies);
        let (u, w) = (self.unknown, self.wrong);
        assert!(
            self.within_bound(),
            "unknown {u:.4}s vs wrong password {w:.4}s (ratio {:.2}, fastest of {} each)",
            u / w,
            self.rounds
        );
    }
}

async fn unknown_user_and_wrong_password_look_the_same(backend: Backend) {
    let app = spawn_app_for_login_timing(backend).await;
    app.user("trent@example.com").await;
    let times = time_failed_logins(&app, "nobody-here@example.com", "trent@example.com", 15).await;
    times.assert_indistinguishable();
    // The audit log keeps the difference the client cannot see.
    let rows = app.audit_events("login_failed").await;
    let reasons: std::collections::BTreeMap<String, usize> =
        rows.iter().fold(Default::default(), |mut m, r| {
            *m.entry(r.detail["reason"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
            m
        });
    assert_eq!(
        reasons.get("unknown_user"),
        Some(&times.rounds),
        "{reasons:?}"
    );
    assert_eq!(
        reasons.get("wrong_password"),
        Some(&times.rounds),
        "{reasons:?}"
    );
    assert!(app.logs().text().contains("unknown_user"));
    app.logs().assert_clean();
}

async fn slow_requests_time_out(backend: Backend) {
    // A deliberately huge argon2 cost makes a login slower than the timeout.
    let app = spawn_app_with(backend, |s| {
        s.request_timeout = Duration::from_millis(300);
        s.argon2_memory_kib = 256 * 1024;
        s.argon2_iterations = 4;
    })
    .await;
    let started = std::time::Instant::now();
    let r = app.login("victor@example.com", "some password here").await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = problem(r, StatusCode::REQUEST_TIMEOUT).await;
    assert_eq!(body["type"], "about:blank");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server keeps answering.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// Found by the second adversarial review: serde takes an array for a
/// struct by position, so `["e@x.com", "pass…"]` registered a user and `[]`
/// logged a session out; a logout body's field went unnamed.
async fn a_json_array_is_not_a_request_object(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .post_json(
            "/auth/register",
            &json!(["arr@example.com", "a long passphrase of mine here"]),
        )
        .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "body");
    let t = app.user("obj@example.com").await;
    let logout = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/auth/logout"))
            .bearer_auth(&t.access)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let r = logout("[]", "application/json").await.unwrap();
    problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = logout(r#"{"scope":5}"#, "application/json").await.unwrap();
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "scope");
    let r = logout(r#"{"scope":"local"}"#, "application/jsonx")
        .await
        .unwrap();
    problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // Still logged in after all that; a JSON media type in any case works.
    assert_eq!(app.me(&t.access).await.status(), StatusCode::OK);
    let r = logout(r#"{"scope":"local"}"#, "Application/JSON; charset=utf-8")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.logs().assert_clean();
}

/// The load of bench/run.sh's refresh scenario, as a test: many sessions
/// rotating at once (on SQLite, their transactions queue for the one
/// writer). Every rotation succeeds, each stores exactly one child, and a
/// token used earlier in a chain is still caught as reuse afterwards.
async fn concurrent_refresh_chains_all_rotate_and_reuse_is_still_caught(backend: Backend) {
    const CHAINS: usize = 8;
    const ROTATIONS: usize = 10;
    let app = spawn_app_with(backend, |s| s.refresh_reuse_interval = Duration::ZERO).await;
    let mut firsts = Vec::new();
    for i in 0..CHAINS {
        firsts.push(app.user(&format!("chain{i}@example.com")).await.refresh);
    }
    let (_, _, before) = app.state.store.counts().await.unwrap();
    let app = std::sync::Arc::new(app);
    let chains = firsts.iter().cloned().map(|first| {
        let app = app.clone();
        async move {
            let mut token = first;
            for _ in 0..ROTATIONS {
                let r = app.refresh(&token).await;
                assert_eq!(r.status(), StatusCode::OK);
                let body: Value = r.json().await.unwrap();
                token = body["refresh_token"].as_str().unwrap().to_owned();
            }
            token
        }
    });
    let lasts = futures_join_all(chains).await;
    let (_, _, after) = app.state.store.counts().await.unwrap();
    assert_eq!(
        after,
        before + (CHAINS * ROTATIONS) as i64,
        "one child per rotation"
    );
    for last in &lasts {
        app.logs().remember(last);
    }
    // Chain 0's first token, long used: reuse, and the whole chain ends.
    problem(app.refresh(&firsts[0]).await, StatusCode::BAD_REQUEST).await;
    problem(app.refresh(&lasts[0]).await, StatusCode::BAD_REQUEST).await;
    // The other chains are untouched.
    assert_eq!(app.refresh(&lasts[1]).await.status(), StatusCode::OK);
    app.logs().assert_clean();
}

/// Behind a path prefix (`public_url` = `https://auth.test/tg`), the bare
/// prefix a person types, `/tg`, is a permanent redirect to `./tg/` (the
/// method and the query kept; relative, so it resolves to `/tg/` on
/// whatever host and scheme the client used), not a 404. Nothing else
/// moves: another path is still a 404, and a service at the root
/// redirects nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bare_path_prefix_redirects_to_the_prefix_with_its_slash() {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (public_url, bare, location) in [
        ("https://auth.test/tg", "/tg", "./tg/"),
        ("https://auth.test/tg/", "/tg", "./tg/"),
        ("https://auth.test/apps/tg", "/apps/tg", "./tg/"),
    ] {
        let app = spawn_app_with(Backend::Sqlite, |s| s.public_url = public_url.to_owned()).await;
        for (method, query) in [
            (reqwest::Method::GET, ""),
            (reqwest::Method::POST, "?next=account"),
        ] {
            let response = no_redirects
                .request(method.clone(), app.url(&format!("{bare}{query}")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::PERMANENT_REDIRECT,
                "{public_url} {method}"
            );
            let sent = response.headers()["location"].to_str().unwrap().to_owned();
            assert_eq!(sent, format!("{location}{query}"));
            // As the client resolves it, against the URL it asked for.
            let asked = reqwest::Url::parse(&format!("https://auth.test{bare}{query}")).unwrap();
            assert_eq!(
                asked.join(&sent).unwrap().as_str(),
                format!("https://auth.test{bare}/{query}")
            );
        }
        for other in [
            format!("{bare}x"),
            format!("{bare}/nothing"),
            bare.to_uppercase(),
            "/tgg".to_owned(),
        ] {
            let response = no_redirects.get(app.url(&other)).send().await.unwrap();
            problem(response, StatusCode::NOT_FOUND).await;
        }
    }
    let app = spawn_app(Backend::Sqlite).await;
    let response = no_redirects.get(app.url("/tg")).send().await.unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
}
