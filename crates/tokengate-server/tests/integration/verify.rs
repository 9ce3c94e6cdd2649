//! `/auth/verify`, the forward-auth endpoint, over HTTP: the identity
//! headers, the challenges, requirements, revocation and expiry at their
//! edges (with the verified-token cache warm), and the cookie rule. The
//! same endpoint behind real nginx and Caddy is in `forward_auth.rs`.

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

use crate::app::{Backend, TestApp, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    a_valid_token_answers_200_with_the_identity_headers,
    no_token_is_a_401_challenge_and_a_bad_one_an_invalid_token,
    a_missing_role_or_scope_is_403_insufficient_scope,
    a_logged_out_token_is_refused_even_from_the_cache_until_it_could_no_longer_verify,
    a_cached_token_expires_at_exp_plus_leeway_and_not_a_second_before,
);

async fn verify(app: &TestApp, query: &str, token: Option<&str>) -> reqwest::Response {
    let request = app.client.get(app.url(&format!("/auth/verify{query}")));
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    request.send().await.expect("request")
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("text header"))
        .unwrap_or_else(|| panic!("no {name} header"))
}

async fn a_valid_token_answers_200_with_the_identity_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.user("ada@example.com").await;
    let me: serde_json::Value = app.me(&tokens.access).await.json().await.unwrap();
    // Any method: proxies ask with the client's own method or with GET.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let response = app
            .client
            .request(method.clone(), app.url("/auth/verify"))
            .bearer_auth(&tokens.access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(header(&response, "x-auth-user"), me["id"].as_str().unwrap());
        assert_eq!(header(&response, "x-auth-email"), "ada@example.com");
        assert_eq!(header(&response, "x-auth-roles"), "user");
        assert_eq!(
            header(&response, "x-auth-session"),
            me["session_id"].as_str().unwrap()
        );
        assert_eq!(header(&response, "cache-control"), "no-store");
    }
    app.logs().assert_clean();
}

async fn no_token_is_a_401_challenge_and_a_bad_one_an_invalid_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.user("bob@example.com").await;

    let response = verify(&app, "", None).await;
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="tokengate""#
    );
    assert!(response.headers().get("x-auth-user").is_none());
    problem(response, StatusCode::UNAUTHORIZED).await;

    // A signature character changed in its data bits (not the last one,
    // whose low bits are padding).
    let mut chars: Vec<char> = tokens.access.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'Q' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    for bad in [
        tampered.as_str(),
        "not-a-token",
        "a.b.c",
        "ééé.ééé.ééé",
        &"x".repeat(7_000),
    ] {
        let response = verify(&app, "", Some(bad)).await;
        assert_eq!(
            header(&response, "www-authenticate"),
            r#"Bearer realm="tokengate", error="invalid_token""#,
            "{bad:.20}"
        );
        let body = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            body["detail"],
            "The access token is invalid or has expired."
        );
    }
    // Headers over the limit are refused before any verification.
    let huge = verify(&app, "", Some(&"x".repeat(20_000))).await;
    problem(huge, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    // Another scheme is no bearer token, two Authorization headers a bad
    // one: 401 both.
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header("authorization", format!("Basic {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header("authorization", format!("Bearer {}", tokens.access))
        .header("authorization", format!("Bearer {}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A token in the query string is never read.
    let response = verify(&app, &format!("?access_token={}", tokens.access), None).await;
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "unknown parameter"
    );
    app.logs().assert_clean();
}

async fn a_missing_role_or_scope_is_403_insufficient_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("carol@example.com").await;
    let admin = crate::accounts::admin(&app).await;

    assert_eq!(
        verify(&app, "?scope=api", Some(&user.access))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        verify(&app, "?role=user", Some(&user.access))
            .await
            .status(),
        StatusCode::OK
    );
    let response = verify(&app, "?role=admin", Some(&user.access)).await;
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="tokengate", error="insufficient_scope""#
    );
    problem(response, StatusCode::FORBIDDEN).await;
    let response = verify(&app, "?scope=orders:write", Some(&user.access)).await;
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="tokengate", error="insufficient_scope", scope="orders:write""#
    );
    problem(response, StatusCode::FORBIDDEN).await;
    // Every listed role is required.
    assert_eq!(
        verify(&app, "?role=admin,user", Some(&admin.access))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        verify(&app, "?role=admin,auditor", Some(&admin.access))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let response = verify(&app, "?role=admin", Some(&admin.access)).await;
    assert_eq!(header(&response, "x-auth-roles"), "user,admin");
    // Authentication comes first: no token is a 401, whatever is required.
    assert_eq!(
        verify(&app, "?role=admin", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.logs().assert_clean();
}

async fn a_logged_out_token_is_refused_even_from_the_cache_until_it_could_no_longer_verify(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let tokens = app.user("dan@example.com").await;
    // Verified twice: the second is served from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(
            verify(&app, "", Some(&tokens.access)).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        app.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let response = verify(&app, "", Some(&tokens.access)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&response, "www-authenticate").contains("invalid_token"),
        "revoked is an invalid token"
    );
    // The last second the token could verify (exp + leeway - 1): still revoked.
    let ttl = app.settings.access_ttl.as_secs() as i64;
    let leeway = app.settings.leeway.as_secs() as i64;
    app.clock.advance(ttl + leeway - 1);
    assert_eq!(
        verify(&app, "", Some(&tokens.access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        app.logs().text().contains("\"reason\":\"revoked\""),
        "refused as revoked, not as expired"
    );
    app.logs().assert_clean();
}

async fn a_cached_token_expires_at_exp_plus_leeway_and_not_a_second_before(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.user("eve@example.com").await;
    assert_eq!(
        verify(&app, "", Some(&tokens.access)).await.status(),
        StatusCode::OK
    );
    let ttl = app.settings.access_ttl.as_secs() as i64;
    let leeway = app.settings.leeway.as_secs() as i64;
    app.clock.advance(ttl + leeway - 1);
    assert_eq!(
        verify(&app, "", Some(&tokens.access)).await.status(),
        StatusCode::OK,
        "the last second inside the leeway"
    );
    app.clock.advance(1);
    assert_eq!(
        verify(&app, "", Some(&tokens.access)).await.status(),
        StatusCode::UNAUTHORIZED,
        "exp + leeway: expired, cache or not"
    );
    assert!(app.logs().text().contains("\"reason\":\"expired\""));
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_auth_is_outside_the_per_client_request_budget() {
    // A proxy asks for every user from one address: a budget of 5 per
    // minute on /auth/* must not apply to /auth/verify.
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_requests_per_minute = 5).await;
    let tokens = app.user("fay@example.com").await;
    for _ in 0..50 {
        assert_eq!(
            verify(&app, "", Some(&tokens.access)).await.status(),
            StatusCode::OK
        );
    }
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_header_prefix_is_a_setting_and_without_the_cache_it_verifies_alike() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.forward_auth_header_prefix = "X-Auth-Request-".into();
        s.verify_cache = false;
    })
    .await;
    let tokens = app.user("gil@example.com").await;
    for _ in 0..2 {
        let response = verify(&app, "", Some(&tokens.access)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-auth-request-email"), "gil@example.com");
        assert!(response.headers().get("x-auth-email").is_none());
    }
    app.logout(&tokens.access, None).await;
    assert_eq!(
        verify(&app, "", Some(&tokens.access)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cookie_authenticates_unsafe_methods_only_with_the_csrf_token_and_only_when_configured() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.forward_auth_cookie = Some("tg_access".into())
    })
    .await;
    let tokens = app.user("hal@example.com").await;
    let ask = |method: Option<&'static str>| {
        let request = app
            .client
            .get(app.url("/auth/verify"))
            .header("cookie", format!("theme=dark; tg_access={}", tokens.access));
        let request = match method {
            Some(m) => request.header("x-forwarded-method", m),
            None => request,
        };
        request.send()
    };
    assert_eq!(ask(Some("GET")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(ask(Some("HEAD")).await.unwrap().status(), StatusCode::OK);
    // A cross-site form can POST with the cookie: without the session's
    // CSRF token it is refused (403, no challenge: a new token would not
    // help); an unknown method counts as unsafe.
    for method in [Some("POST"), Some("DELETE"), None] {
        let response = ask(method).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method:?}");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
    // With it (this session's, in header and cookie), the write passes.
    let session = crate::cookies::login_in_cookie_mode(&app, "hal.browser@example.com").await;
    let response = app
        .client
        .get(app.url("/auth/verify"))
        .header(
            "cookie",
            format!(
                "tg_access={}; __Host-tg_csrf={}",
                session.access, session.csrf
            ),
        )
        .header("x-csrf-token", &session.csrf)
        .header("x-forwarded-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The Authorization header wins over the cookie, for any method.
    let response = app
        .client
        .post(app.url("/auth/verify"))
        .bearer_auth(&tokens.access)
        .header("cookie", "tg_access=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.logs().assert_clean();

    // Not configured: the cookie is not read at all.
    let plain = spawn_app(Backend::Sqlite).await;
    let tokens = plain.user("ivy@example.com").await;
    let response = plain
        .client
        .get(plain.url("/auth/verify"))
        .header("cookie", format!("tg_access={}", tokens.access))
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&response, "www-authenticate"),
        r#"Bearer realm="tokengate""#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_never_outlive_the_logout_that_returned() {
    let app = spawn_app(Backend::Sqlite).await;
    let tokens = app.user("jon@example.com").await;
    let verifying = (0..100).map(|_| verify(&app, "", Some(&tokens.access)));
    let logout = app.logout(&tokens.access, None);
    let (statuses, logout) = tokio::join!(futures_util::future::join_all(verifying), logout);
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(
        statuses
            .iter()
            .all(|r| [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(&r.status()))
    );
    let after = (0..100).map(|_| verify(&app, "", Some(&tokens.access)));
    for response in futures_util::future::join_all(after).await {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    app.logs().assert_clean();
}

// ---- Adversarial review (wt-review) --------------------------------------

/// Review finding: `X-Auth-Email` is what the user typed at registration,
/// unverified, and `Email::parse` accepts a comma in the domain and
/// invisible characters (U+200B is not whitespace, not a control). The
/// proxy forwards it as an identity header; an API that splits the header
/// as a list (`a, b` is how HTTP joins repeated fields) or shows it
/// normalised reads `ceo@corp.example`. Either registration refuses such
/// addresses, or `/auth/verify` does not forward them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_email_identity_header_cannot_pass_for_another_address() {
    let app = spawn_app(Backend::Sqlite).await;
    for email in [
        "ceo@corp.example,mallory.example",
        "ceo@corp.example\u{200b}",
    ] {
        let password = format!("{email} walks the long winding river road");
        let registered = app.register(email, &password).await;
        if registered.status() != StatusCode::CREATED {
            continue; // refused at the door: fine
        }
        let tokens = app.login_ok(email, &password).await;
        let response = verify(&app, "", Some(&tokens.access)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let value = response.headers()["x-auth-email"].as_bytes().to_vec();
        assert!(
            !value.contains(&b',') && value.is_ascii(),
            "X-Auth-Email: {:?} reaches the API",
            String::from_utf8_lossy(&value)
        );
    }
}

/// Found by review: `/auth/verify?role=` trusts the roles claim (no
/// database read), so a change of roles must void the tokens carrying the
/// old ones, at once; a refresh then brings the new roles. Also in the
/// very second of the change: a token issued just before it keeps nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_demoted_admin_is_refused_the_role_at_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = crate::accounts::admin(&app).await;
    assert_eq!(
        verify(&app, "?role=admin", Some(&admin.access))
            .await
            .status(),
        StatusCode::OK
    );
    let demoted = app
        .client
        .patch(app.url("/admin/users/admin-1"))
        .bearer_auth(&admin.access)
        .json(&serde_json::json!({"roles": ["user"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(demoted.status(), StatusCode::OK);
    // The service itself refuses the old token at once...
    let own = app
        .client
        .get(app.url("/admin/users"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::UNAUTHORIZED);
    // ...and so does the proxy's, the token being void.
    assert_eq!(
        verify(&app, "?role=admin", Some(&admin.access))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the demoted admin still passes ?role=admin"
    );
    // The refreshed token carries the new roles: 403, and it works otherwise.
    let refreshed = app.tokens(app.refresh(&admin.refresh).await).await;
    assert_eq!(
        verify(&app, "?role=admin", Some(&refreshed.access))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        verify(&app, "?role=user", Some(&refreshed.access))
            .await
            .status(),
        StatusCode::OK
    );
    app.logs().assert_clean();
}
