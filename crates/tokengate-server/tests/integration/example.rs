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
