//! The holes the adversarial review found, each proven closed over real
//! HTTP on both backends: limits under concurrency, revocations at their
//! last moment, logins racing a global logout, client addresses behind
//! proxies, and floods past the request budget.

use secrecy::ExposeSecret as _;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::{Backend, TestApp, problem, spawn_app, spawn_app_with};
use crate::both_backends;
use tokengate_server::infra::clock::Clock as _;

both_backends!(
    concurrent_wrong_logins_reach_the_hasher_at_most_the_limit,
    an_attacker_elsewhere_cannot_lock_the_owner_out,
    the_account_wide_back_off_doubles_and_refusals_are_not_failures,
    a_client_is_limited_across_accounts,
    a_revoked_token_stays_revoked_until_it_can_no_longer_verify,
    revocations_hold_to_the_last_moment_after_a_restart,
    revocations_synced_from_the_database_hold_to_the_last_moment,
    a_login_in_flight_cannot_outlive_a_global_logout,
    a_login_in_flight_cannot_outlive_a_password_change_or_disabling,
    a_session_of_a_void_epoch_cannot_refresh,
    a_flood_past_the_budget_writes_one_audit_row_per_client_per_minute,
    ipv6_clients_share_a_budget_per_64,
    forwarded_addresses_count_only_from_trusted_proxies,
    a_rehash_in_flight_cannot_undo_a_password_change,
    a_revocation_committed_late_still_reaches_the_denylist,
);

const PASSWORD_SUFFIX: &str = " walks the long winding river road";

fn password(email: &str) -> String {
    format!("{email}{PASSWORD_SUFFIX}")
}

/// A login as seen from `client`, through the trusted proxy the test runs
/// as (the harness peer is 127.0.0.1).
async fn login_from(app: &TestApp, client: &str, email: &str, pw: &str) -> reqwest::Response {
    app.logs().remember(pw);
    app.client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": pw}))
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn concurrent_wrong_logins_reach_the_hasher_at_most_the_limit(backend: Backend) {
    // Real OWASP costs: the attack lives in the time a hash takes.
    let app = spawn_app_with(backend, |s| {
        s.argon2_memory_kib = 19 * 1024;
        s.argon2_iterations = 2;
    })
    .await;
    app.user("ivan@example.com").await;
    let before = app.state.hasher.verifications();
    let app = &app;
    let attempts = (0..60).map(|i| async move {
        app.login("ivan@example.com", &format!("wrong guess {i}"))
            .await
    });
    let responses = join_all(attempts).await;
    let checked = app.state.hasher.verifications() - before;
    assert_eq!(
        checked, 5,
        "login_max_failures = 5 password checks, whatever the concurrency"
    );
    let mut unauthorized = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&response);
                assert!((1..=900).contains(&wait), "{wait}");
                problem(response, StatusCode::TOO_MANY_REQUESTS).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(unauthorized, 5);
    // 55 refusals, one audit row: refusals are cheap to send, rows are not.
    assert_eq!(app.audit_events("login_rate_limited").await.len(), 1);
    // The right password from the same address waits too: the pair is full.
    let limited = app
        .login("ivan@example.com", &password("ivan@example.com"))
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.state.hasher.verifications() - before, 5);
    app.logs().assert_clean();
}

async fn an_attacker_elsewhere_cannot_lock_the_owner_out(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    app.user("judy@example.com").await;
    let app_ref = &app;
    let guesses = (0..60).map(|i| async move {
        login_from(
            app_ref,
            "198.51.100.7",
            "judy@example.com",
            &format!("guess number {i}"),
        )
        .await
    });
    let statuses: Vec<StatusCode> = join_all(guesses).await.iter().map(|r| r.status()).collect();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 55, "{statuses:?}");
    // The owner, from home, with the right password: in at once.
    let owner = login_from(
        &app,
        "203.0.113.5",
        "judy@example.com",
        &password("judy@example.com"),
    )
    .await;
    assert_eq!(owner.status(), StatusCode::OK);
    app.tokens(owner).await;
    app.logs().assert_clean();
}

async fn the_account_wide_back_off_doubles_and_refusals_are_not_failures(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    app.user("kim@example.com").await;
    let email = "kim@example.com";
    // Ten failures from ten addresses (login_account_max_failures = 10).
    for n in 0..10 {
        let r = login_from(&app, &format!("198.51.100.{n}"), email, "not it at all").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // From here each attempt waits 1 s, 2 s, 4 s … after the latest failure,
    // wherever it comes from: slower, never locked.
    let r = login_from(&app, "198.51.100.50", email, "not it at all").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&r), 1);
    app.clock.advance(1);
    let r = login_from(&app, "198.51.100.51", email, "not it at all").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = login_from(&app, "198.51.100.52", email, "not it at all").await;
    assert_eq!(retry_after(&r), 2);
    // Refused attempts were not failures: the wait has not grown.
    for _ in 0..20 {
        let r = login_from(&app, "198.51.100.53", email, "not it at all").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let r = login_from(&app, "203.0.113.5", email, &password(email)).await;
    assert_eq!(retry_after(&r), 2, "the owner waits like everyone else");
    app.clock.advance(2);
    let r = login_from(&app, "203.0.113.5", email, &password(email)).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.tokens(r).await;
    app.logs().assert_clean();
}

async fn a_client_is_limited_across_accounts(backend: Backend) {
    let app = spawn_app(backend).await;
    // login_ip_max_failures = 20 wrong passwords from one address.
    let app = &app;
    let attempts = (0..30).map(|i| async move {
        app.login(&format!("user{i}@example.com"), "a wrong password")
            .await
    });
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 20, "{statuses:?}");
    app.clock.advance(15 * 60);
    assert_eq!(
        app.login("user0@example.com", "a wrong password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the window passed"
    );
}

/// A short-lived token with a long leeway: the gap the review found.
fn short_tokens_long_leeway(s: &mut tokengate_server::infra::config::Settings) {
    s.access_ttl = Duration::from_secs(3);
    s.leeway = Duration::from_secs(20);
}

async fn spawn_short_lived(backend: Backend) -> TestApp {
    // The policy is built from the settings: leeway 20 s.
    spawn_app_with(backend, short_tokens_long_leeway).await
}

async fn a_revoked_token_stays_revoked_until_it_can_no_longer_verify(backend: Backend) {
    let app = spawn_short_lived(backend).await;
    let revoked = app.user("leo@example.com").await;
    let control = app
        .login_ok("leo@example.com", &password("leo@example.com"))
        .await;
    assert_eq!(
        app.logout(&revoked.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    // exp = t0 + 3; the token verifies while now < exp + leeway = t0 + 23.
    app.clock.advance(6);
    assert_eq!(
        app.me(&revoked.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(16);
    // t0 + 22: the last second a token of t0 verifies (the control does).
    assert_eq!(app.me(&control.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.me(&revoked.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(1);
    assert_eq!(
        app.me(&control.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    app.logs().assert_clean();
}

async fn revocations_hold_to_the_last_moment_after_a_restart(backend: Backend) {
    let app = spawn_short_lived(backend).await;
    let revoked = app.user("mia@example.com").await;
    let global = app
        .login_ok("mia@example.com", &password("mia@example.com"))
        .await;
    let other = app.user("ned@example.com").await;
    assert_eq!(
        app.logout(&revoked.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.logout(&other.access, Some("global")).await.status(),
        StatusCode::NO_CONTENT
    );
    app.clock.advance(22);
    let app = app.restart().await;
    assert_eq!(
        app.me(&global.access).await.status(),
        StatusCode::OK,
        "still verifies"
    );
    assert_eq!(
        app.me(&revoked.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.me(&other.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.logs().assert_clean();
}

async fn revocations_synced_from_the_database_hold_to_the_last_moment(backend: Backend) {
    let app = spawn_short_lived(backend).await;
    let t = app.user("ola@example.com").await;
    let control = app
        .login_ok("ola@example.com", &password("ola@example.com"))
        .await;
    let me: Value = app.me(&t.access).await.json().await.unwrap();
    let user_id = me["id"].as_str().unwrap().to_owned();
    let sid = me["session_id"].as_str().unwrap().to_owned();
    // Revoked by another instance or the CLI: only the database knows.
    let now = app.clock.now().as_secs();
    let event = tokengate_server::infra::audit::AuditEvent::new("session_revoked");
    app.state
        .store
        .revoke_sessions(
            &user_id,
            tokengate_server::store::RevokeScope::Only(&sid),
            now,
            &event,
        )
        .await
        .unwrap();
    app.clock.advance(22);
    assert_eq!(app.me(&control.access).await.status(), StatusCode::OK);
    // The 2-second sync brings it in, with the full horizon.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.me(&t.access).await.status() != StatusCode::UNAUTHORIZED {
        assert!(std::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.logs().assert_clean();
}

/// Fills the single hashing slot with slow logins of unknown users, then
/// starts `email`'s login behind them. Returns the victim's pending
/// response once it is certainly queued (it read its user row already).
async fn queue_a_login_behind_the_hasher(
    app: &TestApp,
    email: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let blockers = 6;
    let before = app.state.hasher.verifications();
    for i in 0..blockers {
        let (client, url) = (app.client.clone(), app.url("/auth/login"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"email": format!("nobody{i}@example.com"), "password": "whatever it is"}))
                .send()
                .await
        });
    }
    while app.state.hasher.verifications() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (client, url, body) = (
        app.client.clone(),
        app.url("/auth/login"),
        json!({"email": email, "password": password(email)}),
    );
    let victim = tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() });
    // Long enough to read the user row; far shorter than the queue ahead.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.state.hasher.verifications() - before < blockers,
        "the queue drained before the test could race it: raise the argon2 cost"
    );
    victim
}

fn one_slow_hasher(s: &mut tokengate_server::infra::config::Settings) {
    s.password_hash_concurrency = 1;
    s.argon2_memory_kib = 64 * 1024;
    s.argon2_iterations = 3;
}

async fn a_login_in_flight_cannot_outlive_a_global_logout(backend: Backend) {
    let app = spawn_app_with(backend, one_slow_hasher).await;
    let email = "pat@example.com";
    let first = app.user(email).await;
    let victim = queue_a_login_behind_the_hasher(&app, email).await;
    assert_eq!(
        app.logout(&first.access, Some("global")).await.status(),
        StatusCode::NO_CONTENT
    );
    let late = victim.await.unwrap();
    assert_eq!(
        late.status(),
        StatusCode::UNAUTHORIZED,
        "a login begun before \"log out everywhere\" must not start a session after it"
    );
    let (_, sessions, _) = app.state.store.counts().await.unwrap();
    let live = app
        .state
        .store
        .count_active_sessions(app.clock.now().as_secs())
        .await
        .unwrap();
    assert_eq!((sessions, live), (1, 0));
    // A login after the logout is fine.
    app.login_ok(email, &password(email)).await;
    app.logs().assert_clean();
}

async fn a_login_in_flight_cannot_outlive_a_password_change_or_disabling(backend: Backend) {
    let app = spawn_app_with(backend, one_slow_hasher).await;
    for (email, disable) in [("quinn@example.com", false), ("rosa@example.com", true)] {
        let first = app.user(email).await;
        let me: Value = app.me(&first.access).await.json().await.unwrap();
        let (user_id, sid) = (
            me["id"].as_str().unwrap().to_owned(),
            me["session_id"].as_str().unwrap().to_owned(),
        );
        // Hashed now: the hashing slot is about to be taken.
        let new_hash = app
            .state
            .hasher
            .hash("a brand new password for quinn")
            .await
            .unwrap();
        let victim = queue_a_login_behind_the_hasher(&app, email).await;
        let now = app.clock.now().as_secs();
        let event = tokengate_server::infra::audit::AuditEvent::new("test");
        if disable {
            app.state
                .store
                .update_user(&user_id, None, Some(true), now, &event)
                .await
                .unwrap();
        } else {
            // The stored hash moves on (the victim typed the old password).
            app.state
                .store
                .change_password(&user_id, &new_hash, &sid, now, &event)
                .await
                .unwrap();
        }
        let late = victim.await.unwrap();
        assert_eq!(late.status(), StatusCode::UNAUTHORIZED, "{email}");
        if !disable {
            // The session that changed the password lives on and refreshes.
            assert_eq!(app.refresh(&first.refresh).await.status(), StatusCode::OK);
        }
    }
    app.logs().assert_clean();
}

async fn a_session_of_a_void_epoch_cannot_refresh(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("sam@example.com").await;
    // Defence in depth: were a session ever stored under an old epoch, it
    // could not refresh. Move the epoch behind the service's back.
    let url = app.settings.database_url.expose_secret().to_owned();
    let sql = "UPDATE users SET session_epoch = session_epoch + 1 WHERE email = 'sam@example.com'";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let body = problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_grant");
    app.logs().assert_clean();
}

async fn a_flood_past_the_budget_writes_one_audit_row_per_client_per_minute(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.auth_requests_per_minute = 5).await;
    let body = json!({"refresh_token": "x"});
    let flood = (0..100).map(|_| app.post_json("/auth/refresh", &body));
    let statuses: Vec<StatusCode> = join_all(flood).await.iter().map(|r| r.status()).collect();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 95, "{statuses:?}");
    let rows = app.audit_events("request_budget_exceeded").await;
    assert_eq!(rows.len(), 1, "one row for the whole minute's flood");
    app.clock.advance(60);
    let r = app
        .post_json("/auth/refresh", &json!({"refresh_token": "x"}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let rows = app.audit_events("request_budget_exceeded").await;
    assert_eq!(rows.len(), 2, "a new minute, a new row");
}

/// The budget's row names the route's template, not the path the client
/// sent: with an id in the path (`DELETE /auth/sessions/{id}`), a client
/// with no account at all would otherwise store up to the 64 KiB of a URI
/// in the row and its log line, once a minute from every address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_refusal_row_names_the_route_never_the_path_sent() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_requests_per_minute = 1).await;
    let sent = "b".repeat(60_000);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .delete(app.url(&format!("/auth/sessions/{sent}")))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(statuses[1], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    let rows = app.audit_events("request_budget_exceeded").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].detail["path"], "/auth/sessions/{id}");
    assert!(!rows[0].detail.to_string().contains(&sent[..100]));
}

async fn budget_status(app: &TestApp, client: &str) -> StatusCode {
    app.client
        .get(app.url("/auth/me"))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap()
        .status()
}

async fn ipv6_clients_share_a_budget_per_64(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.auth_requests_per_minute = 5;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // Five addresses of one /64 use up its budget; a sixth is refused.
    for n in 1..=5 {
        assert_eq!(
            budget_status(&app, &format!("2001:db8:1:2::{n:x}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        budget_status(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The neighbouring /64 is someone else.
    assert_eq!(
        budget_status(&app, "2001:db8:1:3::1").await,
        StatusCode::UNAUTHORIZED
    );
}

async fn forwarded_addresses_count_only_from_trusted_proxies(backend: Backend) {
    // Untrusted peer: the header is the client's own words, ignored.
    let app = spawn_app_with(backend, |s| s.auth_requests_per_minute = 5).await;
    for n in 1..=5 {
        assert_eq!(
            budget_status(&app, &format!("198.51.100.{n}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        budget_status(&app, "198.51.100.99").await,
        StatusCode::TOO_MANY_REQUESTS,
        "rotating X-Forwarded-For must not escape the limit"
    );
    drop(app);

    // Trusted proxy: the rightmost untrusted address is the client, in the
    // session list and the audit log.
    let app = spawn_app_with(backend, |s| {
        s.trusted_proxies = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    app.register("tia@example.com", &password("tia@example.com"))
        .await;
    let r = login_from(
        &app,
        "6.6.6.6, 203.0.113.9, 10.1.2.3",
        "tia@example.com",
        &password("tia@example.com"),
    )
    .await;
    let t = app.tokens(r).await;
    let sessions: Value = app
        .client
        .get(app.url("/auth/sessions"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["ip"], "203.0.113.9");
    let rows = app.audit_events("login_succeeded").await;
    assert_eq!(rows[0].ip.as_deref(), Some("203.0.113.9"));
    app.logs().assert_clean();
}

/// Found by the adversarial review: a login with the old password whose
/// stored hash wants an upgrade (any imported bcrypt user) was hashing when
/// the owner changed the password; its rehash wrote the old password's hash
/// over the new one. The rehash now replaces only the hash it verified.
async fn a_rehash_in_flight_cannot_undo_a_password_change(backend: Backend) {
    let app = spawn_app_with(backend, one_slow_hasher).await;
    let email = "uma@example.com";
    let old = password(email);
    let first = app.user(email).await;
    let me: Value = app.me(&first.access).await.json().await.unwrap();
    let user_id = me["id"].as_str().unwrap().to_owned();
    let sid = me["session_id"].as_str().unwrap().to_owned();
    // As after `user import` from a bcrypt system: the next login rehashes.
    let stored = app.state.store.user_by_id(&user_id).await.unwrap().unwrap();
    let bcrypt_old = bcrypt::hash(&old, 4).unwrap();
    let event = tokengate_server::infra::audit::AuditEvent::new("test");
    let now = app.clock.now().as_secs();
    let replaced = app
        .state
        .store
        .upgrade_password_hash(&user_id, &stored.password_hash, &bcrypt_old, now, &event)
        .await
        .unwrap();
    assert!(replaced);
    let new_password = "a brand new password for uma the careful";
    let new_hash = app.state.hasher.hash(new_password).await.unwrap();
    let late = queue_a_login_behind_the_hasher(&app, email).await;
    // The owner's change commits while the old password's login waits.
    app.state
        .store
        .change_password(&user_id, &new_hash, &sid, now, &event)
        .await
        .unwrap();
    assert_eq!(late.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let with_old = app.login(email, &old).await.status();
    let with_new = app.login(email, new_password).await.status();
    assert_eq!(
        (with_old, with_new),
        (StatusCode::UNAUTHORIZED, StatusCode::OK),
        "(old password, new password)"
    );
}

/// Found by the adversarial review: the sync read revocations since its
/// last run by the writer's clock, so one committed late (a transaction
/// that waited on a lock, a host whose clock lags) was never loaded.
async fn a_revocation_committed_late_still_reaches_the_denylist(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = app.user("vic@example.com").await;
    let me: Value = app.me(&t.access).await.json().await.unwrap();
    let user_id = me["id"].as_str().unwrap().to_owned();
    // The CLI reads its clock, then its transaction waits (or its clock lags).
    let read_at = app.clock.now().as_secs();
    app.clock.advance(10);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let event = tokengate_server::infra::audit::AuditEvent::new("admin_user_updated");
    app.state
        .store
        .update_user(&user_id, None, Some(true), read_at, &event)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.me(&t.access).await.status() != StatusCode::UNAUTHORIZED {
        assert!(
            std::time::Instant::now() < deadline,
            "a disabled user's access token still works after the sync"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every answer the edge passes carries the security headers: errors from
/// the router (404, both 405s), from the /auth layers (413, 429, 431), and
/// `/auth/verify` for any method; under /auth with no-store too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_answer_carries_the_security_headers() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.auth_requests_per_minute = 3).await;
    let c = &app.client;
    let check = |r: &reqwest::Response, what: &str, auth: bool| {
        let h = r.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-resource-policy", "same-origin"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ] {
            assert_eq!(
                h.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{what}: {name}"
            );
        }
        assert!(!h.contains_key("strict-transport-security"), "{what}");
        if auth {
            assert_eq!(h["cache-control"], "no-store", "{what}");
            assert_eq!(h["pragma"], "no-cache", "{what}");
        }
    };
    let r = c.get(app.url("/nope")).send().await.unwrap();
    check(&r, "404", false);
    problem(r, StatusCode::NOT_FOUND).await;
    let r = c.post(app.url("/healthz")).send().await.unwrap();
    check(&r, "405", false);
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "X-MADE-UP"] {
        let r = c
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/auth/verify"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method}");
        check(&r, method, true);
    }
    let r = c
        .get(app.url("/auth/verify"))
        .header("x-filler", "y".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    check(&r, "431", false);
    problem(r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    let r = c.get(app.url("/auth/login")).send().await.unwrap();
    check(&r, "auth 405", true);
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    let r = c
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "a".repeat(20 * 1024)))
        .send()
        .await
        .unwrap();
    check(&r, "413", true);
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(c.get(app.url("/auth/me")).send().await.unwrap());
    }
    let r = last.unwrap();
    check(&r, "429", true);
    problem(r, StatusCode::TOO_MANY_REQUESTS).await;
}
