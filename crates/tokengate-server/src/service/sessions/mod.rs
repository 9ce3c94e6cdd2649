//! Sessions: login, refresh rotation with reuse detection, logout in its
//! three scopes, and ending one session. Each writes its change and audit
//! row in one store transaction, then pushes what it revoked to the
//! denylist.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::hmac;
use tokengate::{AccessClaims, Audience, SignOptions, UnixTime};

mod logout;

pub use logout::LogoutScope;

use super::accounts::record;
use super::{Denylist, ServiceError, random_id, verify_reserved};
use crate::domain::{Email, MAX_PASSWORD_CHARS, RefreshToken, SessionId};
use crate::infra::audit::AuditEvent;
use crate::infra::client_ip::limit_key;
use crate::infra::clock::Clock;
use crate::infra::config::{Settings, secs};
use crate::infra::metrics::LoginOutcome;
use crate::infra::password::Hasher;
use crate::infra::ratelimit::{LoginThrottle, RefusalLog};
use crate::service::keys::KeyManager;
use crate::store::{ClientInfo, Rotation, RotationRules, SessionRef, Store, User};

/// A login's inputs, as the front end received them.
pub struct LoginRequest<'a> {
    /// The email as typed.
    pub email: &'a str,
    /// The password as typed.
    pub password: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// The client's `User-Agent`, for the session list.
    pub user_agent: Option<String>,
}

/// An access token and the refresh token that continues its session.
pub struct IssuedTokens {
    /// The signed access token.
    pub access: String,
    /// Its lifetime in seconds.
    pub access_expires_in: i64,
    /// The refresh token (only its hash is stored).
    pub refresh: RefreshToken,
    /// The refresh token's lifetime in seconds.
    pub refresh_expires_in: i64,
    /// The session's CSRF token, for cookie mode (its hash is the access
    /// token's `csrf_hash`).
    pub csrf_token: String,
}

/// A request authenticated by cookie that the CSRF check refused, as the
/// front end saw it: where it came from and, when the token verified,
/// whose session it was. Never the token itself.
pub struct CsrfRefusal<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// The user of the verified access token (none for a refresh cookie,
    /// whose session is not looked up for the refusal).
    pub user_id: Option<&'a str>,
    /// The session of the verified access token.
    pub session_id: Option<&'a str>,
    /// The route asked for, as its template (`/auth/logout`,
    /// `/auth/sessions/{id}`, …): never the raw path, which is the client's
    /// text.
    pub path: &'a str,
    /// Which check failed (`CsrfFailure::code`, e.g. `csrf_foreign_origin`).
    pub reason: &'static str,
}

/// The lifetimes a session's tokens get, in the whole seconds Unix times
/// are kept in: read from the settings once.
#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    access: i64,
    refresh: i64,
    session: i64,
    idle: i64,
    reuse_interval: i64,
}

impl Lifetimes {
    fn of(settings: &Settings) -> Lifetimes {
        Lifetimes {
            access: secs(settings.access_ttl),
            refresh: secs(settings.refresh_ttl),
            session: secs(settings.session_lifetime),
            idle: secs(settings.session_idle_timeout),
            reuse_interval: secs(settings.refresh_reuse_interval),
        }
    }
}

/// The session operations.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    throttle: Arc<dyn LoginThrottle>,
    denylist: Denylist,
    keys: Arc<KeyManager>,
    refresh_key: hmac::Key,
    /// Derives a session's CSRF token from its id.
    csrf_key: hmac::Key,
    settings: Arc<Settings>,
    lifetimes: Lifetimes,
    refusals: Arc<RefusalLog>,
    /// Clients whose CSRF refusal was stored this minute: a log of its
    /// own, so that a cross-site flood never hides a rate-limit row (nor
    /// the other way round).
    csrf_refusals: Arc<RefusalLog>,
}

impl Sessions {
    /// The session operations over these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        throttle: Arc<dyn LoginThrottle>,
        denylist: Denylist,
        keys: Arc<KeyManager>,
        refresh_key: hmac::Key,
        settings: Arc<Settings>,
    ) -> Self {
        // Its own key, derived from the refresh derivation key (itself from
        // the master key): stable across restarts and instances, unrelated
        // to any refresh token.
        let csrf_key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&refresh_key, b"tokengate csrf-token derivation v1").as_ref(),
        );
        Sessions {
            store,
            hasher,
            clock,
            throttle,
            denylist,
            keys,
            refresh_key,
            csrf_key,
            lifetimes: Lifetimes::of(&settings),
            settings,
            refusals: Arc::new(RefusalLog::default()),
            csrf_refusals: Arc::new(RefusalLog::default()),
        }
    }

    /// Forgets refusal minutes that are over (run every minute).
    pub fn prune_refusals(&self, now: i64) {
        self.refusals.prune(now);
        self.csrf_refusals.prune(now);
    }

    /// Records a CSRF refusal in the audit log (`csrf_refused`): the first
    /// of each client per minute, like the rate-limit refusals, so a
    /// cross-site page that makes its visitors' browsers post in a loop
    /// cannot fill the table (the metrics count every refusal).
    pub async fn csrf_refused(&self, refusal: CsrfRefusal<'_>) {
        let key = limit_key(refusal.client, self.settings.ipv6_prefix_len);
        if !self
            .csrf_refusals
            .first_this_minute(key, self.clock.now().as_secs())
        {
            return;
        }
        let mut event = AuditEvent::new("csrf_refused")
            .ip(refusal.client)
            .with("path", refusal.path)
            .with("reason", refusal.reason)
            .with("note", "first refusal this minute; the rest are counted in tokengate_token_rejections_total");
        if let Some(user) = refusal.user_id {
            event = event.user(user);
        }
        if let Some(session) = refusal.session_id {
            event = event.session(session);
        }
        self.record(event).await;
    }

    async fn record(&self, event: AuditEvent) {
        record(&self.store, self.clock.as_ref(), event).await;
    }

    /// Checks the password and starts a session. A wrong password and an
    /// unknown email are one answer in one time; at most the throttle's
    /// limit of checks reach the hasher however many arrive at once.
    pub async fn login(&self, request: LoginRequest<'_>) -> Result<IssuedTokens, ServiceError> {
        let ip = request.client;
        let email = Email::parse(request.email).map_err(ServiceError::invalid("email"))?;
        if request.password.is_empty() || request.password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(ServiceError::Invalid {
                field: "password",
                detail: "password must be 1 to 128 characters".into(),
            });
        }
        let now = self.clock.now();
        // Room for one password check is reserved before hashing, so however
        // many attempts arrive at once, no more than the limit reach the hasher.
        let reservation = match self
            .throttle
            .reserve(
                email.as_str(),
                limit_key(ip, self.settings.ipv6_prefix_len),
                now.as_secs(),
            )
            .await
        {
            Ok(reservation) => reservation,
            Err(retry_after) => {
                crate::infra::metrics::login(LoginOutcome::RateLimited);
                crate::infra::metrics::rate_limited("login");
                // Refusals are cheap to send: one row per client per minute.
                let key = limit_key(ip, self.settings.ipv6_prefix_len);
                if self.refusals.first_this_minute(key, now.as_secs()) {
                    self.record(
                        AuditEvent::new("login_rate_limited")
                            .ip(ip)
                            .with("email", email.as_str())
                            .with("retry_after", retry_after)
                            .with("note", "first refusal this minute; the rest are counted in tokengate_rate_limited_total"),
                    )
                    .await;
                }
                return Err(ServiceError::RateLimited { retry_after });
            }
        };
        let user = self.store.user_by_email(email.as_str()).await?;
        let known = user.is_some();
        // The hasher never computes a stored hash over the cost ceilings (it
        // takes the dummy's time instead); the operator must hear of it.
        let refused_hash = user.as_ref().and_then(|u| {
            let rule = crate::infra::password::check_stored_hash_costs(&u.password_hash).err()?;
            tracing::error!(user_id = %u.id, %rule, "stored password hash refused: it never matches");
            Some(rule)
        });
        // An unknown user is checked against the dummy hash: never a match.
        let verdict = verify_reserved(
            self.throttle.as_ref(),
            &self.hasher,
            reservation,
            request.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;
        let Some(user) = user.filter(|_| verdict.matches) else {
            // The client gets one answer for both; the log keeps the difference.
            let reason = match (known, refused_hash) {
                (true, Some(_)) => "unusable_password_hash",
                (true, None) => "wrong_password",
                (false, _) => "unknown_user",
            };
            crate::infra::metrics::login(LoginOutcome::Failure);
            self.record(
                AuditEvent::new("login_failed")
                    .ip(ip)
                    .with("reason", reason)
                    .with("email", email.as_str()),
            )
            .await;
            return Err(ServiceError::InvalidCredentials);
        };
        if user.disabled {
            // Only after the right password: a disabled account is no secret to its owner.
            return Err(self
                .refuse_known_user(&user, ip, LoginOutcome::Disabled, "user_disabled")
                .await);
        }
        if verdict.needs_rehash {
            self.rehash(&user, request.password, ip, now.as_secs())
                .await;
        }
        let session = SessionRef {
            id: SessionId::random().ok_or_else(ServiceError::random_failed)?,
            user_id: user.id.clone(),
        };
        let refresh = RefreshToken::generate().ok_or_else(ServiceError::random_failed)?;
        let session_expires_at = now.as_secs() + self.lifetimes.session;
        let refresh_expires_at = (now.as_secs() + self.lifetimes.refresh).min(session_expires_at);
        let client = ClientInfo {
            user_agent: request.user_agent,
            ip: Some(ip.to_string()),
        };
        let event = AuditEvent::new("login_succeeded")
            .user(&user.id)
            .session(&session.id)
            .ip(ip);
        let created = self
            .store
            .create_session(
                &session,
                user.session_epoch,
                &refresh.stored_hash(),
                now.as_secs(),
                session_expires_at,
                refresh_expires_at,
                &client,
                &event,
            )
            .await?;
        if !created {
            // "Log out everywhere", a password change or disabling happened
            // while this login waited for the hasher: it must not outlive them.
            return Err(self
                .refuse_known_user(
                    &user,
                    ip,
                    LoginOutcome::Failure,
                    "sessions_ended_during_login",
                )
                .await);
        }
        event.log();
        let access = self.access_token(&user, &session.id, now)?;
        crate::infra::metrics::login(LoginOutcome::Success);
        Ok(IssuedTokens {
            access,
            access_expires_in: self.lifetimes.access,
            refresh,
            refresh_expires_in: refresh_expires_at - now.as_secs(),
            csrf_token: self.csrf_token(&session.id),
        })
    }

    /// Refuses a login of a known user after its password matched: the
    /// metric, the audit row, and the error the client gets.
    async fn refuse_known_user(
        &self,
        user: &User,
        ip: IpAddr,
        outcome: LoginOutcome,
        reason: &'static str,
    ) -> ServiceError {
        crate::infra::metrics::login(outcome);
        self.record(
            AuditEvent::new("login_failed")
                .user(&user.id)
                .ip(ip)
                .with("reason", reason),
        )
        .await;
        match outcome {
            LoginOutcome::Disabled => ServiceError::AccountDisabled,
            _ => ServiceError::InvalidCredentials,
        }
    }

    /// Replaces a weaker stored hash with one of today's costs; a failure
    /// is logged and the login goes on.
    async fn rehash(&self, user: &User, password: &str, ip: IpAddr, now: i64) {
        match self.hasher.hash(password).await {
            Ok(hash) => {
                let event = AuditEvent::new("password_rehashed").user(&user.id).ip(ip);
                match self
                    .store
                    .upgrade_password_hash(&user.id, &user.password_hash, &hash, now, &event)
                    .await
                {
                    Ok(true) => event.log(),
                    // A password change committed while this login hashed:
                    // the stored hash is the new password's and stays.
                    Ok(false) => {
                        tracing::info!(user_id = %user.id, "password rehash skipped: the password changed meanwhile")
                    }
                    Err(e) => {
                        tracing::error!(cause = %e, user_id = %user.id, "password rehash not saved")
                    }
                }
            }
            Err(e) => tracing::error!(cause = %e, user_id = %user.id, "password rehash failed"),
        }
    }

    /// Signs an access token for `user` in session `sid`.
    ///
    /// A change of roles voids the tokens issued before the user's
    /// `not_before`, which is the second after the change (a token issued in
    /// that second, before the change, must not keep the old roles). A
    /// token issued after the change, with the new roles, read `not_before`
    /// with them: it is dated then, at most one second ahead, within any
    /// verifier's leeway (with a leeway of 0 it waits out that second).
    fn access_token(&self, user: &User, sid: &str, now: UnixTime) -> Result<String, ServiceError> {
        let now = match user.not_before {
            Some(nb) if nb > now.as_secs() => UnixTime::from_secs(nb.min(now.as_secs() + 1)),
            _ => now,
        };
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: user.id.to_string(),
            aud: Audience::One(self.settings.audience.clone()),
            exp: now.as_secs() + self.lifetimes.access,
            iat: now.as_secs(),
            nbf: None,
            jti: random_id()?,
            sid: Some(sid.to_owned()),
            scope: Some(self.settings.access_scope.clone()),
            roles: user.roles.as_slice().to_vec(),
            email: Some(user.email.clone()),
            csrf_hash: Some(tokengate::guard::csrf_claim_value(&self.csrf_token(sid))),
        };
        self.keys
            .current()
            .ring
            .sign(
                &claims,
                &SignOptions::access_token(self.settings.access_ttl),
                now,
            )
            .map_err(|e| ServiceError::Internal(format!("signing: {e}")))
    }

    /// Rotates a refresh token: a new pair, or — for a token used after the
    /// reuse interval — the whole session revoked.
    pub async fn refresh(
        &self,
        presented: &str,
        client: IpAddr,
    ) -> Result<IssuedTokens, ServiceError> {
        let ip = client.to_string();
        let Some(presented) = RefreshToken::parse(presented) else {
            self.record(
                AuditEvent::new("refresh_failed")
                    .ip(&ip)
                    .with("reason", "malformed"),
            )
            .await;
            return Err(ServiceError::InvalidGrant);
        };
        // The child is derived from the parent, so a concurrent refresh of the
        // same token (a second tab) gets the same child, never a second one.
        let child = presented.child(&self.refresh_key);
        let now = self.clock.now();
        let rules = self.rotation_rules(now.as_secs());
        let outcome = self
            .store
            .rotate_refresh(&presented.stored_hash(), &child.stored_hash(), rules, &ip)
            .await?;
        // The row is already stored with the change; the log line follows.
        if let Some(event) = outcome.audit_event(&ip) {
            event.log();
        }
        crate::infra::metrics::refresh(match &outcome {
            Rotation::Rotated { .. } => "rotated",
            Rotation::Replayed { .. } => "replayed",
            Rotation::ReuseDetected(_) => "reuse_detected",
            Rotation::SessionEnded => "session_ended",
            Rotation::Invalid => "invalid",
        });
        let (session, user, child_expires_at) = match outcome {
            Rotation::Rotated {
                session,
                user,
                child_expires_at,
            }
            | Rotation::Replayed {
                session,
                user,
                child_expires_at,
            } => (session, user, child_expires_at),
            Rotation::ReuseDetected(session) => {
                self.denylist.deny_session(&session.id, now.as_secs()).await;
                return Err(ServiceError::InvalidGrant);
            }
            Rotation::SessionEnded | Rotation::Invalid => {
                let reason = if matches!(outcome, Rotation::SessionEnded) {
                    "session_ended"
                } else {
                    "unknown_or_expired"
                };
                self.record(
                    AuditEvent::new("refresh_failed")
                        .ip(&ip)
                        .with("reason", reason),
                )
                .await;
                return Err(ServiceError::InvalidGrant);
            }
        };
        // (A disabled owner or a moved epoch ended the session inside the
        // rotation's transaction: `user` is one that may refresh, as read
        // in that transaction.)
        let access = self.access_token(&user, &session.id, now)?;
        Ok(IssuedTokens {
            access,
            access_expires_in: self.lifetimes.access,
            refresh: child,
            // The child never outlives its session (as at login): nor do
            // the cookies that carry it.
            refresh_expires_in: child_expires_at - now.as_secs(),
            csrf_token: self.csrf_token(&session.id),
        })
    }

    /// The rotation rules at `now`, from the settings.
    fn rotation_rules(&self, now: i64) -> RotationRules {
        RotationRules {
            now,
            refresh_ttl: self.lifetimes.refresh,
            reuse_interval: self.lifetimes.reuse_interval,
            idle_timeout: self.lifetimes.idle,
        }
    }

    /// The CSRF token of session `sid`: base64url HMAC-SHA256 of its id
    /// under a key derived from the master key. Derived, not stored, so a
    /// refresh (whose access token may be long gone) can check it; bound to
    /// the session, so one session's token is worthless in another.
    pub fn csrf_token(&self, sid: &str) -> String {
        tokengate::b64::encode(hmac::sign(&self.csrf_key, sid.as_bytes()).as_ref())
    }

    /// The SHA-256 of the CSRF token of the session the refresh token
    /// `presented` belongs to (`None` for a token we never issued): what a
    /// refresh by cookie must echo, checked before the token is used up.
    pub async fn csrf_digest_of_refresh_token(
        &self,
        presented: &str,
    ) -> Result<Option<[u8; 32]>, ServiceError> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Ok(None);
        };
        let session = self
            .store
            .session_of_refresh_token(&token.stored_hash())
            .await?;
        Ok(session.map(|sid| tokengate::guard::csrf_digest(&self.csrf_token(&sid))))
    }
}
