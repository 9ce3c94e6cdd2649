//! What every request handler shares.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::hmac;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokengate::VerifyPolicy;

use crate::clock::Clock;
use crate::config::Settings;
use crate::password::Hasher;
use crate::ratelimit::LoginThrottle;
use crate::revocation::Revocations;
use crate::storage::Store;

/// Shared state, behind an `Arc`.
pub struct AppState {
    /// Effective settings.
    pub settings: Settings,
    /// Storage.
    pub store: Store,
    /// Signing and verification keys, rebuilt on rotation.
    pub keys: crate::keystore::KeyManager,
    /// How access tokens are verified.
    pub policy: VerifyPolicy,
    /// Derives child refresh tokens.
    pub refresh_key: hmac::Key,
    /// Password hashing on the bounded pool.
    pub hasher: Hasher,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Denylist of revoked sessions and users.
    pub revocations: Arc<dyn Revocations>,
    /// Failed-login throttle.
    pub throttle: Arc<dyn LoginThrottle>,
    /// Per-IP request budget on `/auth/*`.
    pub budget: DefaultKeyedRateLimiter<IpAddr>,
}

impl AppState {
    /// Logs an event that changed nothing and stores its row. A storage
    /// failure here is logged, not returned: the request's answer stands.
    pub async fn record(&self, event: crate::audit::AuditEvent) {
        event.log();
        if let Err(e) = self
            .store
            .record_audit(&event, self.clock.now().as_secs())
            .await
        {
            tracing::error!(cause = %e, kind = event.kind, "audit row not stored");
        }
    }

    /// Loads revocations recorded in the database since `since` (by this
    /// process, another instance, or the `user` CLI) into the denylist, for
    /// as long as an access token issued before them could live. Start-up
    /// calls it for one access-token lifetime back; a background task then
    /// calls it every few seconds.
    pub async fn sync_revocations(&self, since: i64) -> Result<(), crate::storage::StoreError> {
        let access_ttl = crate::config::secs(self.settings.access_ttl);
        let (sessions, users) = self.store.revocations_since(since).await?;
        for (sid, revoked_at) in &sessions {
            self.revocations
                .revoke_session(sid, revoked_at + access_ttl)
                .await;
        }
        for (user, before) in &users {
            self.revocations
                .revoke_user_before(user, *before, before + access_ttl)
                .await;
        }
        Ok(())
    }

    /// Deletes audit events older than the retention; returns how many.
    pub async fn prune_audit(&self) -> Result<u64, crate::storage::StoreError> {
        let retention = crate::config::secs(self.settings.audit_retention);
        let cutoff = self.clock.now().as_secs().saturating_sub(retention);
        let pruned = self.store.prune_audit(cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, "audit events past retention deleted");
        }
        Ok(pruned)
    }
}

/// A per-IP budget of `per_minute` requests.
pub fn budget(per_minute: u32) -> DefaultKeyedRateLimiter<IpAddr> {
    let per_minute = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(per_minute))
}
