//! Users managing their sessions and password, admins managing users, and
//! the stored audit log — over HTTP, on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokengate_server::infra::audit::AuditEvent;
use tokengate_server::store::{
    AuditQuery, ClientInfo, SessionRef, StoreError, StoredKey, Unique, User,
};

use crate::app::{Backend, TestApp, Tokens, problem, spawn_app, spawn_app_with};
use crate::both_backends;

both_backends!(
    control_characters_in_ids_and_filters_are_the_clients_mistake,
    users_list_and_end_their_sessions,
    password_change_ends_the_other_sessions,
    admin_endpoints_refuse_non_admins,
    admin_queries_that_do_not_parse_are_400_naming_the_parameter,
    admins_manage_users,
    disabling_a_user_stops_their_live_tokens,
    every_event_type_is_stored_and_rolled_back_changes_leave_no_row,
    audit_log_pages_by_cursor_and_filters,
    audit_retention_prunes_old_events,
    a_duplicate_is_a_conflict_naming_the_unique_value,
    the_activity_count_is_one_index_range_and_gives_up_at_its_deadline,
);

const PW_SUFFIX: &str = "walks the long winding river road";

fn password(email: &str) -> String {
    format!("{email} {PW_SUFFIX}")
}

/// Creates an admin directly in storage (as `tokengate user add --role admin` will) and logs in.
pub async fn admin(app: &TestApp) -> Tokens {
    let pw = password("root@example.com");
    let hash = app.state.hasher.hash(&pw).await.unwrap();
    let user = User {
        id: "admin-1".into(),
        email: "root@example.com".into(),
        password_hash: hash,
        roles: "user admin".into(),
        not_before: None,
        disabled: false,
        created_at: 0,
        session_epoch: 0,
    };
    app.state
        .store
        .create_user(&user, 1, &AuditEvent::new("user_added").user("admin-1"))
        .await
        .unwrap();
    app.logs().remember(&pw);
    app.login_ok("root@example.com", &pw).await
}

async fn get(app: &TestApp, path: &str, access: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    access: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(access);
    let request = match body {
        Some(b) => request.json(&b),
        None => request,
    };
    request.send().await.unwrap()
}

async fn events(app: &TestApp, kind: &str) -> Vec<tokengate_server::store::AuditRow> {
    app.audit_events(kind).await
}

async fn users_list_and_end_their_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.user("uma@example.com").await;
    let b = {
        let r = app
            .client
            .post(app.url("/auth/login"))
            .header("user-agent", "PhoneApp/2.1")
            .json(&json!({"email": "uma@example.com", "password": password("uma@example.com")}))
            .send()
            .await
            .unwrap();
        app.tokens(r).await
    };
    let list: Value = get(&app, "/auth/sessions", &a.access)
        .await
        .json()
        .await
        .unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let phone = sessions
        .iter()
        .find(|s| s["user_agent"] == "PhoneApp/2.1")
        .unwrap();
    assert_eq!(phone["current"], false);
    assert_eq!(phone["ip"], "127.0.0.1");
    let phone_id = phone["id"].as_str().unwrap();

    // Ending the phone's session kills its access and refresh tokens at once.
    let r = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/auth/sessions/{phone_id}"),
        &a.access,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
    problem(app.refresh(&b.refresh).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
    let list: Value = get(&app, "/auth/sessions", &a.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);

    // Someone else's session, or an unknown id: 404, and nothing ends.
    let other = app.user("victor2@example.com").await;
    let theirs: Value = get(&app, "/auth/sessions", &other.access)
        .await
        .json()
        .await
        .unwrap();
    let their_id = theirs["sessions"][0]["id"].as_str().unwrap();
    problem(
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{their_id}"),
            &a.access,
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        send(
            &app,
            reqwest::Method::DELETE,
            "/auth/sessions/nope",
            &a.access,
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(app.me(&other.access).await.status(), StatusCode::OK);
    assert_eq!(events(&app, "session_revoked").await.len(), 1);
    app.logs().assert_clean();
}

async fn password_change_ends_the_other_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = "wendy@example.com";
    let a = app.user(email).await;
    let b = app.login_ok(email, &password(email)).await;
    let new_pw = "an entirely different sentence about lighthouses";
    app.logs().remember(new_pw);
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let r = send(
        &app,
        reqwest::Method::POST,
        "/auth/password",
        &a.access,
        Some(change("not my password", new_pw)),
    )
    .await;
    // The caller is known: say which input is wrong. 403, since the token
    // is good and a 401 would send the client to log in again.
    assert!(r.headers().get("www-authenticate").is_none());
    let body = problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(body["type"], "urn:tokengate:problem:wrong-current-password");
    assert_eq!(body["detail"], "The current password is incorrect.");
    let r = send(
        &app,
        reqwest::Method::POST,
        "/auth/password",
        &a.access,
        Some(json!({"new_password": new_pw})),
    )
    .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "current_password");
    assert_eq!(body["detail"], "The current password is missing.");
    let r = send(
        &app,
        reqwest::Method::POST,
        "/auth/password",
        &a.access,
        Some(change(&password(email), "password1234")),
    )
    .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "new_password");
    let r = send(
        &app,
        reqwest::Method::POST,
        "/auth/password",
        &a.access,
        Some(change(&password(email), new_pw)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // This session stays; the other one is over, access and refresh alike.
    assert_eq!(app.me(&a.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&a.refresh).await.status(), StatusCode::OK);
    assert_eq!(app.me(&b.access).await.status(), StatusCode::UNAUTHORIZED);
    problem(app.refresh(&b.refresh).await, StatusCode::BAD_REQUEST).await;
    problem(
        app.login(email, &password(email)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.login_ok(email, new_pw).await;
    let changed = events(&app, "password_changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].detail["sessions_ended"], 1);
    assert_eq!(events(&app, "password_change_failed").await.len(), 1);
    app.logs().assert_clean();
}

async fn admin_queries_that_do_not_parse_are_400_naming_the_parameter(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    for (path, parameter) in [
        ("/admin/users?limit=abc", "limit"),
        ("/admin/audit?before=x", "before"),
        ("/admin/audit?limit=", "limit"),
    ] {
        let body = problem(
            get(&app, path, &admin.access).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(
            body["type"], "urn:tokengate:problem:invalid-query",
            "{path}"
        );
        assert_eq!(body["field"], parameter, "{path}");
        assert_eq!(
            body["detail"],
            format!("The query parameter '{parameter}' must be a whole number."),
            "{path}"
        );
    }
    // Well-formed, it still answers.
    let r = get(&app, "/admin/audit?before=10&limit=5", &admin.access).await;
    assert_eq!(r.status(), StatusCode::OK);
    app.logs().assert_clean();
}

async fn admin_endpoints_refuse_non_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.user("xavier@example.com").await;
    let admin = admin(&app).await;
    use reqwest::Method as M;
    let calls = [
        (M::GET, "/admin/users".to_owned(), None),
        (
            M::POST,
            "/admin/users".to_owned(),
            Some(json!({"email": "y@example.com", "password": "a long passphrase here ok"})),
        ),
        (
            M::PATCH,
            "/admin/users/admin-1".to_owned(),
            Some(json!({"disabled": true})),
        ),
        (
            M::POST,
            "/admin/users/admin-1/revoke-sessions".to_owned(),
            None,
        ),
        (M::GET, "/admin/audit".to_owned(), None),
    ];
    for (method, path, body) in calls {
        problem(
            send(&app, method.clone(), &path, &user.access, body.clone()).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        let r = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without a token"
        );
    }
    // Roles are read from the database, not trusted from the token, and a
    // change of roles voids the tokens that carry the old ones: an admin
    // demoted a moment ago is refused with the token still in hand, and
    // the refreshed token carries the new roles.
    let r = send(
        &app,
        M::PATCH,
        "/admin/users/admin-1",
        &admin.access,
        Some(json!({"roles": ["user"]})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        get(&app, "/admin/users", &admin.access).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let demoted = app.tokens(app.refresh(&admin.refresh).await).await;
    problem(
        get(&app, "/admin/users", &demoted.access).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    app.logs().assert_clean();
}

async fn admins_manage_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    for name in ["alpha", "bravo", "charlie", "delta_x"] {
        app.user(&format!("{name}@example.com")).await;
    }
    // Search (with LIKE wildcards matched literally) and paging.
    let r: Value = get(&app, "/admin/users?email=a_x", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["delta_x@example.com"]);
    let page1: Value = get(&app, "/admin/users?limit=2", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page1["users"].as_array().unwrap().len(), 2);
    let after = page1["next_after"].as_str().unwrap().to_owned();
    let page2: Value = get(
        &app,
        &format!("/admin/users?limit=2&after={after}"),
        &admin.access,
    )
    .await
    .json()
    .await
    .unwrap();
    let first_of_2 = page2["users"][0]["email"].as_str().unwrap();
    assert!(first_of_2 > after.as_str());
    assert!(
        page1["users"][0].get("password_hash").is_none(),
        "hashes never leave the server"
    );

    // Create, with roles and the registration password policy.
    let body = json!({"email": "Echo@Example.com", "password": "echo sings over the quiet harbour", "roles": ["user", "support"]});
    app.logs().remember("echo sings over the quiet harbour");
    let r = send(
        &app,
        reqwest::Method::POST,
        "/admin/users",
        &admin.access,
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["email"], "echo@example.com");
    assert_eq!(created["roles"], json!(["user", "support"]));
    problem(
        send(
            &app,
            reqwest::Method::POST,
            "/admin/users",
            &admin.access,
            Some(body),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let weak = json!({"email": "f@example.com", "password": "password1234"});
    problem(
        send(
            &app,
            reqwest::Method::POST,
            "/admin/users",
            &admin.access,
            Some(weak),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Patch roles; the next login's token carries them.
    let id = created["id"].as_str().unwrap();
    let r = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"roles": ["user", "admin"]})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let echo = app
        .login_ok("echo@example.com", "echo sings over the quiet harbour")
        .await;
    let me: Value = app.me(&echo.access).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["user", "admin"]));
    for bad in [
        json!({"roles": []}),
        json!({"roles": ["has space"]}),
        json!({}),
        json!({"nope": 1}),
    ] {
        let r = send(
            &app,
            reqwest::Method::PATCH,
            &format!("/admin/users/{id}"),
            &admin.access,
            Some(bad),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    problem(
        send(
            &app,
            reqwest::Method::PATCH,
            "/admin/users/nobody",
            &admin.access,
            Some(json!({"disabled": true})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Revoke every session of a user.
    let r = send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/users/{id}/revoke-sessions"),
        &admin.access,
        None,
    )
    .await;
    let ended: Value = r.json().await.unwrap();
    assert_eq!(ended["sessions_ended"], 1);
    assert_eq!(
        app.me(&echo.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.logs().assert_clean();
}

async fn disabling_a_user_stops_their_live_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    let email = "yara@example.com";
    let t = app.user(email).await;
    let me: Value = app.me(&t.access).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();
    let r = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"disabled": true})),
    )
    .await;
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["disabled"], true);
    // The live access token is refused on the very next request.
    assert_eq!(app.me(&t.access).await.status(), StatusCode::UNAUTHORIZED);
    problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await;
    // The right password learns the account is disabled; a wrong one learns nothing.
    problem(
        app.login(email, &password(email)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        app.login(email, "wrong wrong wrong").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Enabled again (a second later): logins work, the old token stays dead.
    app.clock.advance(2);
    send(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"disabled": false})),
    )
    .await;
    let fresh = app.login_ok(email, &password(email)).await;
    assert_eq!(app.me(&fresh.access).await.status(), StatusCode::OK);
    assert_eq!(app.me(&t.access).await.status(), StatusCode::UNAUTHORIZED);
    app.logs().assert_clean();
}

async fn every_event_type_is_stored_and_rolled_back_changes_leave_no_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    let email = "zoe@example.com";
    let t = app.user(email).await;
    // A duplicate registration rolls back: no second user_registered row.
    problem(
        app.register(email, &password(email)).await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(
        app.login(email, "not it at all").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.clock.advance(1);
    let t2 = app.tokens(app.refresh(&t.refresh).await).await;
    app.clock.advance(30);
    problem(app.refresh(&t.refresh).await, StatusCode::BAD_REQUEST).await; // reuse detected
    problem(
        app.refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let t3 = app.login_ok(email, &password(email)).await;
    let me: Value = app.me(&t3.access).await.json().await.unwrap();
    let id = me["id"].as_str().unwrap().to_owned();
    let new_pw = "zoe keeps bees beside the old mill";
    app.logs().remember(new_pw);
    send(
        &app,
        reqwest::Method::POST,
        "/auth/password",
        &t3.access,
        Some(json!({"current_password": password(email), "new_password": new_pw})),
    )
    .await;
    let t4 = app.login_ok(email, new_pw).await;
    let sessions: Value = get(&app, "/auth/sessions", &t4.access)
        .await
        .json()
        .await
        .unwrap();
    let other = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .map(|s| s["id"].as_str().unwrap().to_owned());
    if let Some(other) = other {
        send(
            &app,
            reqwest::Method::DELETE,
            &format!("/auth/sessions/{other}"),
            &t4.access,
            None,
        )
        .await;
    }
    send(
        &app,
        reqwest::Method::PATCH,
        &format!("/admin/users/{id}"),
        &admin.access,
        Some(json!({"roles": ["user", "ops"]})),
    )
    .await;
    send(
        &app,
        reqwest::Method::POST,
        &format!("/admin/users/{id}/revoke-sessions"),
        &admin.access,
        None,
    )
    .await;
    let t5 = app.login_ok(email, new_pw).await;
    app.logout(&t5.access, Some("global")).await;
    for _ in 0..6 {
        app.login(email, "still not it").await;
    }
    let _ = t2;
    for kind in [
        "user_registered",
        "register_rejected",
        "login_succeeded",
        "login_failed",
        "refresh_rotated",
        "refresh_reuse_detected",
        "refresh_failed",
        "password_changed",
        "admin_user_updated",
        "admin_sessions_revoked",
        "logout",
        "login_rate_limited",
    ] {
        assert!(!events(&app, kind).await.is_empty(), "no {kind} row");
    }
    let registered = events(&app, "user_registered").await;
    assert_eq!(
        registered
            .iter()
            .filter(|e| e.user_id.as_deref() == Some(id.as_str()))
            .count(),
        1
    );
    let reuse = &events(&app, "refresh_reuse_detected").await[0];
    assert_eq!(reuse.detail["action"], "session_revoked");
    assert_eq!(reuse.user_id.as_deref(), Some(id.as_str()));
    let failed = &events(&app, "login_failed").await;
    assert!(failed.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")));
    // No row ever holds a secret.
    let all = app
        .state
        .store
        .audit_page(&AuditQuery {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    // Every field a row holds, as text.
    let text = format!("{all:?}");
    for secret in [
        password(email).as_str(),
        new_pw,
        t.refresh.as_str(),
        t.access.as_str(),
    ] {
        assert!(!text.contains(secret));
    }
    app.logs().assert_clean();
}

async fn audit_log_pages_by_cursor_and_filters(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.login_max_failures = 5;
        s.login_ip_max_failures = 5;
    })
    .await;
    let admin = admin(&app).await;
    for i in 0..7 {
        app.login(&format!("ghost{i}@example.com"), "whatever it is")
            .await;
    }
    let page: Value = get(
        &app,
        "/admin/audit?type=login_failed&limit=3",
        &admin.access,
    )
    .await
    .json()
    .await
    .unwrap();
    let ids: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(page["events"][0]["type"], "login_failed");
    let mut seen = ids.clone();
    let mut before = page["next_before"].as_i64().unwrap();
    loop {
        let p: Value = get(
            &app,
            &format!("/admin/audit?type=login_failed&limit=3&before={before}"),
            &admin.access,
        )
        .await
        .json()
        .await
        .unwrap();
        seen.extend(
            p["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match p["next_before"].as_i64() {
            Some(next) => before = next,
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        5,
        "the IP limit stops failures after 5: {seen:?}"
    );
    let rate: Value = get(&app, "/admin/audit?type=login_rate_limited", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    // Two refusals from one client in one minute: one row (a flood of
    // refusals must not become a flood of writes).
    assert_eq!(rate["events"].as_array().unwrap().len(), 1);
    let by_user: Value = get(&app, "/admin/audit?user=admin-1", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        by_user["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == "admin-1")
    );
    assert!(!by_user["events"].as_array().unwrap().is_empty());
    app.logs().assert_clean();
}

async fn audit_retention_prunes_old_events(backend: Backend) {
    let app = spawn_app(backend).await;
    app.login("old@example.com", "whatever it is").await;
    app.clock.advance(60 * 86_400);
    app.login("new@example.com", "whatever it is").await;
    assert_eq!(
        app.state.prune_audit().await.unwrap(),
        0,
        "nothing is 90 days old yet"
    );
    app.clock.advance(31 * 86_400);
    // The old failure and the start-up key creation are past 90 days.
    assert_eq!(app.state.prune_audit().await.unwrap(), 2);
    assert!(events(&app, "key_rotated").await.is_empty());
    let left = events(&app, "login_failed").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].detail["email"], "new@example.com");
}

async fn a_duplicate_is_a_conflict_naming_the_unique_value(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = &app.state.store;
    let event = AuditEvent::new("user_added");
    let user = |id: &str, email: &str| User {
        id: id.into(),
        email: email.into(),
        password_hash: "$argon2id$unused".into(),
        roles: "user".into(),
        not_before: None,
        disabled: false,
        created_at: 0,
        session_epoch: 0,
    };
    fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Unique {
        match result {
            Err(StoreError::Conflict(unique)) => unique,
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    store
        .create_user(&user("u-1", "ann@example.com"), 1, &event)
        .await
        .unwrap();
    let taken = store
        .create_user(&user("u-2", "ann@example.com"), 1, &event)
        .await;
    assert_eq!(conflict(taken), Unique::Email);
    let same_id = store
        .create_user(&user("u-1", "bob@example.com"), 1, &event)
        .await;
    assert_eq!(conflict(same_id), Unique::UserId);
    let import = [
        user("u-3", "cy@example.com"),
        user("u-4", "ann@example.com"),
    ];
    let imported = store.import_users(&import, false, 1, &event, &|_| {}).await;
    assert_eq!(conflict(imported), Unique::Email);
    assert!(
        store
            .user_by_email("cy@example.com")
            .await
            .unwrap()
            .is_none()
    );

    let session = |id: &str| SessionRef {
        id: id.into(),
        user_id: "u-1".into(),
    };
    let start = |id: &'static str, refresh: &'static str| {
        let session = session(id);
        let event = AuditEvent::new("login_succeeded");
        async move {
            store
                .create_session(
                    &session,
                    0,
                    refresh,
                    1,
                    100,
                    100,
                    &ClientInfo::default(),
                    &event,
                )
                .await
        }
    };
    assert!(start("s-1", "h-1").await.unwrap());
    assert_eq!(conflict(start("s-1", "h-2").await), Unique::SessionId);
    assert_eq!(conflict(start("s-2", "h-1").await), Unique::RefreshToken);

    let key = StoredKey {
        kid: "k-dup".into(),
        alg: "ES256".into(),
        encrypted_key: "unused".into(),
        created_at: 0,
        activates_at: 0,
        retired_at: None,
    };
    // Far in the future, so no key of the app's own waits to activate.
    let now = 4_000_000_000;
    let rotated = AuditEvent::new("key_rotated");
    assert!(
        store
            .add_signing_key(&key, None, now, &rotated)
            .await
            .unwrap()
    );
    let again = store.add_signing_key(&key, None, now, &rotated).await;
    assert_eq!(conflict(again), Unique::Kid);
}

/// Found by the second adversarial review: a NUL in an id or a filter was
/// an error inside PostgreSQL (500, an ERROR log line) while SQLite answered.
async fn control_characters_in_ids_and_filters_are_the_clients_mistake(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin(&app).await;
    let user = app.user("nul@example.com").await;
    let requests = [
        (
            reqwest::Method::DELETE,
            "/auth/sessions/a%00b",
            &user.access,
            "id",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/users/a%00b",
            &admin.access,
            "id",
        ),
        (
            reqwest::Method::POST,
            "/admin/users/a%00b/revoke-sessions",
            &admin.access,
            "id",
        ),
        (
            reqwest::Method::GET,
            "/admin/users?email=%00",
            &admin.access,
            "email",
        ),
        (
            reqwest::Method::GET,
            "/admin/users?after=x%1fy",
            &admin.access,
            "after",
        ),
        (
            reqwest::Method::GET,
            "/admin/audit?type=%00",
            &admin.access,
            "type",
        ),
        (
            reqwest::Method::GET,
            "/admin/audit?user=%7F",
            &admin.access,
            "user",
        ),
    ];
    for (method, path, access, field) in requests {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(access)
            .json(&json!({"disabled": true}))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["field"], field, "{method} {path}");
    }
    app.logs().assert_clean();
}

/// Adds `n` audit rows spread evenly over `[from, to)`, a third each
/// `login_succeeded`, `login_failed` and `logout`, in one statement on a
/// connection of the test's own (one row at a time would take minutes).
async fn bulk_audit_rows(app: &TestApp, from: i64, to: i64, n: i64) {
    use secrecy::ExposeSecret as _;
    const INSERT: &str = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < $3) \
         INSERT INTO audit_events (at, kind, detail) \
         SELECT $1 + (i * ($2 - $1)) / $3, \
                CASE i % 3 WHEN 0 THEN 'login_succeeded' WHEN 1 THEN 'login_failed' ELSE 'logout' END, '{}' \
         FROM seq";
    let url = app.settings.database_url.expose_secret().to_owned();
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let insert = sqlx::query(INSERT).bind(from).bind(to).bind(n);
        insert.execute(&pool).await.unwrap();
        // Statistics and the visibility map, as autovacuum would leave
        // them on a table that has been in use for a while.
        sqlx::raw_sql("VACUUM ANALYZE audit_events")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let insert = sqlx::query(INSERT).bind(from).bind(to).bind(n);
        insert.execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// `GET /admin/stats` is bounded: its count is one range of the
/// `(at, kind)` index (the plan says so on both databases), and a count
/// past its deadline is given up, answered as a 503 problem, and leaves
/// the database usable — also when the caller abandons it half-way.
async fn the_activity_count_is_one_index_range_and_gives_up_at_its_deadline(backend: Backend) {
    use std::time::Duration;
    use tokengate_server::http::error::ApiError;
    use tokengate_server::infra::clock::Clock as _;
    use tokengate_server::service::activity::{self, BUCKET_SECONDS};

    let app = spawn_app(backend).await;
    let now = app.clock.now().as_secs();
    let day = 86_400;
    // A month of a busy service's sign-ins.
    let rows = 300_000;
    bulk_audit_rows(&app, now - 30 * day, now, rows).await;

    let store = &app.state.store;
    let plan = store
        .explain_audit_counts(now - day, now, BUCKET_SECONDS)
        .await
        .unwrap()
        .join("\n");
    match backend {
        Backend::Sqlite => assert!(
            plan.contains("USING COVERING INDEX audit_events_at_kind"),
            "{plan}"
        ),
        Backend::Postgres => assert!(
            plan.contains("Index Only Scan using audit_events_at_kind"),
            "{plan}"
        ),
    }

    // Past the deadline: the database's own error, a 503 problem.
    let err = activity::activity_within(store, now, activity::MAX_HOURS, Duration::ZERO)
        .await
        .unwrap_err();
    let response = axum::response::IntoResponse::into_response(ApiError::from(err));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["retry-after"], "5");

    // Abandoned half-way (the request dropped): nothing is left behind.
    let _ = tokio::time::timeout(
        Duration::from_millis(2),
        activity::activity(store, now, activity::MAX_HOURS),
    )
    .await;

    let window_start = now.div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS
        - (activity::MAX_HOURS - 1) * BUCKET_SECONDS;
    let expected = rows * (now - window_start) / (30 * day) * 2 / 3;
    // Every connection of the pool still serves, reads and writes: no
    // deadline stays behind on one.
    for _ in 0..20 {
        let week = activity::activity(store, now, activity::MAX_HOURS)
            .await
            .unwrap();
        let counted: i64 = week
            .buckets
            .iter()
            .map(|b| b.logins_succeeded + b.logins_failed)
            .sum();
        // Two thirds of the rows from the window's first hour to now,
        // give or take a row at each edge.
        assert!((counted - expected).abs() <= 3, "{counted} vs {expected}");
    }
    assert_eq!(
        app.register("after@example.com", &password("after@example.com"))
            .await
            .status(),
        StatusCode::CREATED
    );
    // Over HTTP, within the real deadline.
    let root = admin(&app).await;
    let response = get(&app, "/admin/stats?hours=168", &root.access).await;
    assert_eq!(response.status(), StatusCode::OK);
}
