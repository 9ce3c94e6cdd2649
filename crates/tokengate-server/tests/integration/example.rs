//! The library's `examples/protected_api.rs`, run against this service:
//! the "three lines" protect a router with nothing but the JWKS URL.

#[allow(dead_code)]
#[path = "../../../tokengate/examples/protected_api.rs"]
mod protected_api;

use reqwest::StatusCode;
use serde_json::Value;

use crate::app::{Backend, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_api_accepts_the_services_tokens_and_their_revocation_is_its_trade_off() {
    let app = spawn_app(Backend::Sqlite).await;
    let user = app.user("kim@example.com").await;
    let admin = crate::accounts::admin(&app).await;
    let router = protected_api::app(
        &app.url("/.well-known/jwks.json"),
        &app.settings.issuer,
        &app.settings.audience,
    )
    .await
    .expect("the example starts against the running service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let get = |path: &str, token: Option<&str>| {
        let request = app.client.get(format!("{base}{path}"));
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
        .send()
    };

    assert_eq!(get("/", None).await.unwrap().status(), StatusCode::OK);
    let response = get("/api/protected", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="api""#
    );

    let response = get("/api/protected", Some(&user.access)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "kim@example.com");

    let response = get("/api/admin", Some(&user.access)).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    assert_eq!(
        get("/api/admin", Some(&admin.access))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // A token of another issuer's keys (forged locally) gets nowhere.
    let forged = {
        let ring = tokengate::KeyRing::with_signing_key(
            tokengate::SigningKey::generate(tokengate::Algorithm::ES256, None).unwrap(),
        );
        let claims: Value = serde_json::json!({
            "iss": app.settings.issuer, "aud": app.settings.audience, "sub": "x", "roles": ["admin"]
        });
        ring.sign(
            &claims,
            &tokengate::SignOptions::access_token(std::time::Duration::from_secs(60)),
            tokengate::UnixTime::from_system_time(std::time::SystemTime::now()),
        )
        .unwrap()
    };
    assert_eq!(
        get("/api/admin", Some(&forged)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The example is purely stateless (no revocation hook): a logged-out
    // token still works here until its `exp`, while the service and
    // `/auth/verify`, which read the denylist, refuse it at once. This is
    // the trade-off docs/INTEGRATION.md states.
    assert_eq!(
        app.logout(&user.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.me(&user.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/protected", Some(&user.access))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.logs().assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_in_the_running_service_reaches_the_example_without_restart() {
    // A one-second publish delay: the example's guard reads the system
    // clock, the service's manual clock moves one second, within the leeway.
    let app = crate::app::spawn_app_with(Backend::Sqlite, |s| {
        s.key_publish_delay = std::time::Duration::from_secs(1)
    })
    .await;
    let before = app.user("lee@example.com").await;
    let router = protected_api::app(
        &app.url("/.well-known/jwks.json"),
        &app.settings.issuer,
        &app.settings.audience,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let status = |token: String| {
        let request = app
            .client
            .get(format!("{base}/api/protected"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(before.access.clone()).await, StatusCode::OK);

    let now = || {
        use tokengate_server::infra::clock::Clock;
        app.clock.now().as_secs()
    };
    let new_kid = app
        .state
        .keys
        .rotate(&app.state.store, now(), "test")
        .await
        .unwrap();
    app.clock.advance(1);
    app.state
        .keys
        .refresh(&app.state.store, now())
        .await
        .unwrap();
    let after = app
        .login_ok(
            "lee@example.com",
            "lee@example.com walks the long winding river road",
        )
        .await;
    let kid = tokengate::dangerous::decode_unverified(&after.access, 8192)
        .unwrap()
        .header["kid"]
        .clone();
    assert_eq!(kid, new_kid.as_str(), "signed by the new key");
    // Unknown to the example's cached key set: one refetch, then accepted.
    assert_eq!(status(after.access.clone()).await, StatusCode::OK);
    assert_eq!(status(before.access.clone()).await, StatusCode::OK);
    app.logs().assert_clean();
}
