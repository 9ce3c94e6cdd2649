//! The service's rules without HTTP: a real SQLite store in a temporary
//! directory, cheap hashing, the manual clock.

use secrecy::ExposeSecret as _;
use std::net::IpAddr;
use std::sync::Arc;

use tempfile::TempDir;

use super::*;
use crate::infra::clock::{Clock, ManualClock};
use crate::infra::config::{Overrides, Settings};
use crate::infra::password::Hasher;
use crate::infra::ratelimit::{InProcessThrottle, LoginLimits};
use crate::service::keys::KeyManager;
use crate::store::Store;
use tokengate::guard::InProcessRevocations;

struct World {
    store: Store,
    accounts: Accounts,
    sessions: Sessions,
    denylist: Denylist,
    clock: ManualClock,
    _dir: TempDir,
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const PASSWORD: &str = "correct horse battery staple";

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = dir.path().display().to_string();
    let settings = Settings::load_from(&Overrides::default(), &|name| match name {
        "TOKENGATE_DATA_DIR" => Some(data_dir.clone()),
        "TOKENGATE_ACCESS_TTL" => Some("60s".into()),
        "TOKENGATE_LEEWAY" => Some("10s".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::connect(settings.database_url.expose_secret())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::default();
    let now = clock.now().as_secs();
    let (keys, refresh_key, _) = KeyManager::start(&settings, &store, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let hasher = Hasher::new(1024, 1, 1, 2).unwrap_or_else(|e| panic!("{e}"));
    let throttle: Arc<dyn crate::infra::ratelimit::LoginThrottle> =
        Arc::new(InProcessThrottle::new(LoginLimits {
            per_account_and_client: 3,
            per_client: 10,
            per_account_before_backoff: 10,
            window: 900,
        }));
    let denylist = Denylist::new(
        Arc::new(InProcessRevocations::default()),
        settings.access_ttl,
        settings.leeway,
    );
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let accounts = Accounts::new(
        store.clone(),
        hasher.clone(),
        shared_clock.clone(),
        denylist.clone(),
        throttle.clone(),
        64,
    );
    let sessions = Sessions::new(
        store.clone(),
        hasher,
        shared_clock,
        throttle,
        denylist.clone(),
        Arc::new(keys),
        refresh_key,
        Arc::new(settings),
    );
    World {
        store,
        accounts,
        sessions,
        denylist,
        clock,
        _dir: dir,
    }
}

impl World {
    async fn user(&self, email: &str) -> crate::store::User {
        let account = NewAccount::parse(email, PASSWORD, &["user"]);
        let account = account.unwrap_or_else(|e| panic!("{e}"));
        self.accounts
            .create(account, &Actor::Cli)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn login(&self, email: &str, password: &str) -> Result<IssuedTokens, ServiceError> {
        self.sessions
            .login(LoginRequest {
                email,
                password,
                client: CLIENT,
                user_agent: None,
            })
            .await
    }

    fn now(&self) -> i64 {
        self.clock.now().as_secs()
    }
}

#[tokio::test]
async fn one_rule_creates_users_for_every_front_end() {
    let w = world().await;
    w.user("ann@example.com").await;
    let again = NewAccount::parse("ANN@example.com ", PASSWORD, &["user"]);
    let again = again.unwrap_or_else(|e| panic!("{e}"));
    let admin = Actor::Admin {
        id: "admin".into(),
        ip: CLIENT,
    };
    assert!(matches!(
        w.accounts.create(again, &admin).await,
        Err(ServiceError::EmailTaken(email)) if email == "ann@example.com"
    ));
    for (email, password, roles, field) in [
        ("not an email", PASSWORD, "user", "email"),
        ("bob@example.com", "short", "user", "password"),
        ("bob@example.com", PASSWORD, "bad role!", "roles"),
    ] {
        assert!(matches!(
            NewAccount::parse(email, password, &[roles]),
            Err(ServiceError::Invalid { field: f, .. }) if f == field
        ));
    }
}

#[tokio::test]
async fn a_logout_is_denied_until_the_last_second_a_token_verifies() {
    let w = world().await;
    let user = w.user("cat@example.com").await;
    let t0 = w.now();
    let tokens = w.login("cat@example.com", PASSWORD).await;
    assert!(tokens.is_ok());
    let sid = "the-session";
    let logout = w
        .sessions
        .logout(&user.id, sid, LogoutScope::Local, CLIENT)
        .await;
    assert!(logout.is_ok());
    // exp = t0 + 60, verified until exp + leeway = t0 + 70.
    assert!(
        w.denylist
            .is_revoked(Some(sid), &user.id, t0, t0 + 69)
            .await
    );
    assert!(
        !w.denylist
            .is_revoked(Some(sid), &user.id, t0, t0 + 71)
            .await
    );
}

#[tokio::test]
async fn wrong_passwords_are_one_answer_and_the_limit_holds() {
    let w = world().await;
    w.user("dan@example.com").await;
    for email in ["dan@example.com", "nobody@example.com"] {
        assert!(matches!(
            w.login(email, "not the password").await,
            Err(ServiceError::InvalidCredentials)
        ));
    }
    for _ in 0..2 {
        let _ = w.login("dan@example.com", "not the password").await;
    }
    assert!(matches!(
        w.login("dan@example.com", PASSWORD).await,
        Err(ServiceError::RateLimited { retry_after }) if retry_after > 0
    ));
    w.clock.advance(900);
    assert!(w.login("dan@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_global_logout_voids_a_login_that_read_the_user_before_it() {
    let w = world().await;
    let user = w.user("eve@example.com").await;
    let first = w.login("eve@example.com", PASSWORD).await;
    assert!(first.is_ok());
    // The epoch the next login will read, then the logout moves it on.
    let stale_epoch = user.session_epoch;
    let logout = w
        .sessions
        .logout(&user.id, "any", LogoutScope::Global, CLIENT)
        .await;
    assert!(logout.is_ok());
    let store = &w.store;
    let event = crate::infra::audit::AuditEvent::new("login_succeeded");
    let session = crate::store::SessionRef {
        id: "late".into(),
        user_id: user.id.clone(),
    };
    let now = w.now();
    let created = store
        .create_session(
            &session,
            stale_epoch,
            "hash",
            now,
            now + 100,
            now + 100,
            &crate::store::ClientInfo::default(),
            &event,
        )
        .await;
    assert_eq!(created.ok(), Some(false), "the stale login starts nothing");
    // A login after the logout reads the new epoch and works.
    assert!(w.login("eve@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_ends_the_session() {
    let w = world().await;
    w.user("fay@example.com").await;
    let first = w
        .login("fay@example.com", PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = w
        .sessions
        .refresh(first.refresh.expose(), CLIENT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(second.refresh.expose(), first.refresh.expose());
    w.clock.advance(11);
    assert!(matches!(
        w.sessions.refresh(first.refresh.expose(), CLIENT).await,
        Err(ServiceError::InvalidGrant)
    ));
    assert!(matches!(
        w.sessions.refresh(second.refresh.expose(), CLIENT).await,
        Err(ServiceError::InvalidGrant)
    ));
    assert!(matches!(
        w.sessions.refresh("not-a-token", CLIENT).await,
        Err(ServiceError::InvalidGrant)
    ));
}
