//! Accounts: creating users (self-registration, the admin API and the CLI
//! alike), changing roles, disabling, ending all of a user's sessions, and
//! changing a password.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Denylist, ServiceError, verify_reserved};
use crate::domain::{Email, NewPassword, Roles, UserId, email_words};
use crate::infra::audit::AuditEvent;
use crate::infra::client_ip::limit_key;
use crate::infra::clock::Clock;
use crate::infra::password::Hasher;
use crate::infra::ratelimit::LoginThrottle;
use crate::store::{RevokeScope, Store, StoreError, Unique, User};

/// Who asks for an account change; it decides the audit event's kind and
/// what it records.
#[derive(Debug, Clone)]
pub enum Actor {
    /// Someone registering themselves.
    Registration {
        /// Their address.
        ip: IpAddr,
    },
    /// An admin through the API.
    Admin {
        /// The admin's user id.
        id: UserId,
        /// Their address.
        ip: IpAddr,
    },
    /// An operator at the command line.
    Cli,
}

impl Actor {
    /// An audit event of `kind` about `user_id`, marked with this actor.
    fn event(&self, kind: &'static str, user_id: &str) -> AuditEvent {
        let event = AuditEvent::new(kind).user(user_id);
        match self {
            Actor::Registration { ip } => event.ip(ip),
            Actor::Admin { id, ip } => event.ip(ip).with("actor", id.as_str()),
            Actor::Cli => event.with("actor", "cli"),
        }
    }

    fn ip(&self) -> Option<IpAddr> {
        match self {
            Actor::Registration { ip } | Actor::Admin { ip, .. } => Some(*ip),
            Actor::Cli => None,
        }
    }
}

/// A new account's inputs, parsed once: a normalised email, a password
/// strong enough for it, and a valid role list.
pub struct NewAccount {
    email: Email,
    password: NewPassword,
    roles: Roles,
}

impl NewAccount {
    /// Parses the raw inputs; each refusal names its field.
    pub fn parse<S: AsRef<str>>(
        email: &str,
        password: &str,
        roles: &[S],
    ) -> Result<NewAccount, ServiceError> {
        let email = Email::parse(email).map_err(ServiceError::invalid("email"))?;
        let roles = Roles::parse(roles).map_err(ServiceError::invalid("roles"))?;
        let password = NewPassword::parse(password, &email_words(email.as_str()))
            .map_err(ServiceError::invalid("password"))?;
        Ok(NewAccount {
            email,
            password,
            roles,
        })
    }
}

/// The account operations, over storage, the hasher and the denylist.
#[derive(Clone)]
pub struct Accounts {
    store: Store,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    denylist: Denylist,
    throttle: Arc<dyn LoginThrottle>,
    ipv6_prefix_len: u8,
}

impl Accounts {
    /// The account operations over these parts.
    pub fn new(
        store: Store,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        denylist: Denylist,
        throttle: Arc<dyn LoginThrottle>,
        ipv6_prefix_len: u8,
    ) -> Self {
        Accounts {
            store,
            hasher,
            clock,
            denylist,
            throttle,
            ipv6_prefix_len,
        }
    }

    /// Creates a user. A taken email is refused (and, through the API,
    /// recorded on its own: the rolled-back insert leaves no row).
    pub async fn create(&self, new: NewAccount, actor: &Actor) -> Result<User, ServiceError> {
        let hash = self.hasher.hash(new.password.expose()).await?;
        let mut user = User::new(new.email.as_str(), hash, &new.roles)
            .ok_or_else(ServiceError::random_failed)?;
        let event = match actor {
            Actor::Registration { .. } => actor
                .event("user_registered", &user.id)
                .with("email", new.email.as_str()),
            Actor::Admin { .. } => actor
                .event("admin_user_created", &user.id)
                .with("roles", new.roles.stored()),
            Actor::Cli => actor
                .event("user_added", &user.id)
                .with("roles", new.roles.stored()),
        };
        let now = self.clock.now().as_secs();
        match self.store.create_user(&user, now, &event).await {
            Ok(()) => {
                event.log();
                user.created_at = now;
                Ok(user)
            }
            Err(StoreError::Conflict(Unique::Email)) => {
                if let Some(ip) = actor.ip() {
                    self.record(
                        AuditEvent::new("register_rejected")
                            .ip(ip)
                            .with("reason", "email_taken")
                            .with("email", new.email.as_str()),
                    )
                    .await;
                }
                Err(ServiceError::EmailTaken(new.email.as_str().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Changes a user's roles and/or disabled flag. Disabling ends every
    /// session and voids every access token issued so far; a change of
    /// roles voids the access tokens too (they carry the old roles, which
    /// forward-auth and the library's guard trust), and the next refresh
    /// brings the new ones. Returns the user as stored and how many
    /// sessions ended.
    pub async fn update(
        &self,
        user_id: &str,
        roles: Option<&[String]>,
        disabled: Option<bool>,
        actor: &Actor,
    ) -> Result<(User, usize), ServiceError> {
        let roles = roles
            .map(Roles::parse)
            .transpose()
            .map_err(ServiceError::invalid("roles"))?;
        if roles.is_none() && disabled.is_none() {
            return Err(ServiceError::Invalid {
                field: "body",
                detail: "give roles and/or disabled".into(),
            });
        }
        let mut event = actor.event("admin_user_updated", user_id);
        if let Some(roles) = &roles {
            event = event.with("roles", roles.stored());
        }
        if let Some(disabled) = disabled {
            event = event.with("disabled", disabled);
        }
        let now = self.clock.now().as_secs();
        let (user, ended) = self
            .store
            .update_user(user_id, roles.as_ref(), disabled, now, &event)
            .await?
            .ok_or(ServiceError::NotFound)?;
        event.with("sessions_ended", ended.len()).log();
        if disabled == Some(true) {
            self.denylist.deny_sessions(&ended, now).await;
        }
        let mut before = now + 1;
        if roles.is_some() {
            // A refresh anywhere that read the old roles before this commit
            // dated its token by its own clock, up to now: the mark is
            // taken again after the commit (the clock read above may be
            // from before a wait on the user's row), and only raised.
            before = before.max(self.clock.now().as_secs() + 1);
            self.store.raise_not_before(user_id, before).await?;
        }
        if disabled == Some(true) || roles.is_some() {
            // Every access token issued so far, even of sessions already gone.
            self.denylist.deny_user_before(user_id, before).await;
        }
        Ok((user, ended.len()))
    }

    /// The user with this email, for the front ends that name users by it.
    pub async fn by_email(&self, email: &str) -> Result<User, ServiceError> {
        let email = Email::parse(email).map_err(ServiceError::invalid("email"))?;
        self.store
            .user_by_email(email.as_str())
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Ends every session of `user_id` and voids its access tokens ("log
    /// out everywhere" by an admin). Returns how many sessions ended.
    pub async fn end_all_sessions(
        &self,
        user_id: &str,
        actor: &Actor,
    ) -> Result<usize, ServiceError> {
        if self.store.user_by_id(user_id).await?.is_none() {
            return Err(ServiceError::NotFound);
        }
        let now = self.clock.now().as_secs();
        let event = actor.event("admin_sessions_revoked", user_id);
        let ended = self
            .store
            .revoke_sessions(user_id, RevokeScope::All, now, &event)
            .await?;
        event.with("sessions_ended", ended.len()).log();
        self.denylist.deny_sessions(&ended, now).await;
        self.denylist.deny_user_before(user_id, now).await;
        Ok(ended.len())
    }

    /// Changes the password of `user_id` after checking the current one
    /// (throttled like a login), and ends every session but `keep_session`.
    /// Returns how many sessions ended.
    pub async fn change_password(
        &self,
        user_id: &str,
        keep_session: &str,
        current: &str,
        new: &str,
        client: IpAddr,
    ) -> Result<usize, ServiceError> {
        let now = self.clock.now().as_secs();
        let user = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(ServiceError::CallerGone)?;
        let reservation = self
            .throttle
            .reserve(&user.email, limit_key(client, self.ipv6_prefix_len), now)
            .await
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        let verdict = verify_reserved(
            self.throttle.as_ref(),
            &self.hasher,
            reservation,
            current,
            Some(&user.password_hash),
        )
        .await?;
        if !verdict.matches {
            self.record(
                AuditEvent::new("password_change_failed")
                    .user(&user.id)
                    .ip(client)
                    .with("reason", "wrong_current_password"),
            )
            .await;
            return Err(ServiceError::WrongCurrentPassword);
        }
        let new = NewPassword::parse(new, &email_words(&user.email))
            .map_err(ServiceError::invalid("new_password"))?;
        let hash = self.hasher.hash(new.expose()).await?;
        let event = AuditEvent::new("password_changed")
            .user(&user.id)
            .session(keep_session)
            .ip(client);
        let ended = self
            .store
            .change_password(&user.id, &hash, keep_session, now, &event)
            .await?;
        event.with("sessions_ended", ended.len()).log();
        self.denylist.deny_sessions(&ended, now).await;
        Ok(ended.len())
    }

    /// Logs an event that changed nothing and stores its row; a storage
    /// failure here is logged, not returned: the answer stands.
    async fn record(&self, event: AuditEvent) {
        record(&self.store, self.clock.as_ref(), event).await;
    }
}

/// Logs an event that changed nothing (a refusal) and stores its row.
pub(crate) async fn record(store: &Store, clock: &dyn Clock, event: AuditEvent) {
    event.log();
    if let Err(e) = store.record_audit(&event, clock.now().as_secs()).await {
        tracing::error!(cause = %e, kind = event.kind, "audit row not stored");
    }
}
