//! Key rotation end to end, on a clock the test moves: old tokens keep
//! verifying, new tokens carry the new kid after the publish delay, the
//! JWKS shows both, and the old key leaves once its last token expired.

use reqwest::StatusCode;
use serde_json::Value;
use tokengate::{AccessClaims, JwkSet, KeyRing, VerifyPolicy};
use tokengate_server::infra::clock::Clock;

use crate::app::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    rotation_without_logging_anyone_out,
    scheduled_rotation,
    hs256_service_signs_with_the_shared_secret,
    jwks_cache_lifetime_follows_the_publish_delay
);

async fn jwks(app: &TestApp) -> JwkSet {
    app.client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn kid_of(token: &str) -> String {
    let header = tokengate::dangerous::decode_unverified(token, 8192)
        .unwrap()
        .header;
    header["kid"].as_str().unwrap().to_owned()
}

async fn sync(app: &TestApp) {
    // What the background task does every 2 s, done now: no sleeping.
    app.state
        .keys
        .refresh(&app.state.store, app.clock.now().as_secs())
        .await
        .unwrap();
}

async fn rotation_without_logging_anyone_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.user("rot@example.com").await;
    let old_kid = kid_of(&before.access);
    assert_eq!(jwks(&app).await.keys.len(), 1);

    let new_kid = app
        .state
        .keys
        .rotate(&app.state.store, app.clock.now().as_secs(), "test")
        .await
        .unwrap();
    assert_ne!(new_kid, old_kid);
    // Published at once, not yet signing.
    let set = jwks(&app).await;
    let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&new_kid) && kids.contains(&old_kid));
    let pw = "rot@example.com walks the long winding river road";
    let t = app.login_ok("rot@example.com", pw).await;
    assert_eq!(kid_of(&t.access), old_kid, "the new key waits for caches");
    // A second rotation while one is pending is refused.
    assert!(
        app.state
            .keys
            .rotate(&app.state.store, app.clock.now().as_secs(), "test")
            .await
            .is_err()
    );

    // After the publish delay (5 min) new tokens carry the new kid, and the
    // token signed before the rotation still works.
    app.clock.advance(301);
    sync(&app).await;
    let t2 = app.login_ok("rot@example.com", pw).await;
    assert_eq!(kid_of(&t2.access), new_kid);
    let refreshed: Value = app.refresh(&before.refresh).await.json().await.unwrap();
    let access = refreshed["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("refresh failed: {refreshed}"));
    assert_eq!(kid_of(access), new_kid);
    assert_eq!(app.me(&t.access).await.status(), StatusCode::OK);
    // A resource server holding the JWKS verifies tokens of both keys.
    let (ring, _) = KeyRing::from_jwks(&jwks(&app).await);
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.test")
        .audience("tokengate")
        .typ("at+jwt")
        .build()
        .unwrap();
    ring.verify::<AccessClaims>(&t.access, &policy, app.clock.now())
        .unwrap();
    ring.verify::<AccessClaims>(&t2.access, &policy, app.clock.now())
        .unwrap();

    // The old key retires when the last token it could have signed has
    // expired: activation (t0 + 300) + access lifetime + leeway. We are at
    // t0 + 301; go to one second before t0 + 1230.
    app.clock.advance(15 * 60 + 30 - 2);
    sync(&app).await;
    assert_eq!(jwks(&app).await.keys.len(), 2);
    app.clock.advance(1);
    sync(&app).await;
    let left = jwks(&app).await;
    assert_eq!(left.keys.len(), 1);
    assert_eq!(left.keys[0].kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(app.me(&t2.access).await.status(), StatusCode::OK);
    // The rotation is in the audit log.
    let rows = app.audit_events("key_rotated").await;
    assert!(rows.iter().any(|r| r.detail["kid"] == new_kid.as_str()));
    app.logs().assert_clean();
}

async fn scheduled_rotation(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.key_rotation_interval = Some(std::time::Duration::from_secs(30 * 86_400));
    })
    .await;
    sync(&app).await;
    assert_eq!(jwks(&app).await.keys.len(), 1);
    app.clock.advance(30 * 86_400);
    sync(&app).await;
    assert_eq!(
        jwks(&app).await.keys.len(),
        2,
        "a new key was published on schedule"
    );
    sync(&app).await;
    assert_eq!(jwks(&app).await.keys.len(), 2, "and only one");
}

async fn hs256_service_signs_with_the_shared_secret(backend: Backend) {
    let secret = tokengate::generate_secret(32).unwrap();
    let app = spawn_app_with(backend, |s| {
        s.signing_alg = tokengate::Algorithm::HS256;
        s.hs_secret = Some(tokengate_server::infra::config::Settings::secret(
            secret.clone(),
        ));
    })
    .await;
    let t = app.user("hmac@example.com").await;
    assert_eq!(app.me(&t.access).await.status(), StatusCode::OK);
    // The secret is never published; verifiers that share it check the token.
    assert!(jwks(&app).await.keys.is_empty());
    let key = tokengate::VerifyingKey::from_hmac_secret(
        tokengate::Algorithm::HS256,
        secret.as_bytes(),
        tokengate::Kid::new(kid_of(&t.access)).unwrap(),
    )
    .unwrap();
    let policy = VerifyPolicy::builder()
        .issuer("https://auth.test")
        .audience("tokengate")
        .typ("at+jwt")
        .build()
        .unwrap();
    let claims = KeyRing::with_verifying_key(key)
        .verify::<AccessClaims>(&t.access, &policy, app.clock.now())
        .unwrap()
        .claims;
    assert!(claims.sid.is_some());
    // Rotation is refused with the reason: the key is hs_secret.
    let err = app
        .state
        .keys
        .rotate(&app.state.store, app.clock.now().as_secs(), "test")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("hs_secret"), "{err}");
    app.logs().remember(&secret);
    app.logs().assert_clean();
}

async fn jwks_cache_lifetime_follows_the_publish_delay(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.key_publish_delay = std::time::Duration::from_secs(60)
    })
    .await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["cache-control"], "public, max-age=60", "{path}");
    }
}
