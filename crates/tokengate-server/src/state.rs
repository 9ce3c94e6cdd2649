//! What every request handler shares.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::hmac;
use tokengate::VerifyPolicy;

use crate::client_ip::ClientIpResolver;
use crate::clock::Clock;
use crate::config::{Settings, secs};
use crate::password::Hasher;
use crate::ratelimit::{LoginThrottle, RequestBudget};
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
    /// Per-client request budget on `/auth/*`.
    pub budget: RequestBudget,
    /// Who a request comes from (trusted proxies).
    pub client_ip: ClientIpResolver,
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
        let (sessions, users) = self.store.revocations_since(since).await?;
        for (sid, revoked_at) in &sessions {
            self.deny_session(sid, *revoked_at).await;
        }
        for (user, before) in &users {
            self.deny_user_before(user, *before).await;
        }
        Ok(())
    }

    /// How far back a revocation can still matter at `now`: one revoked
    /// earlier only covers tokens that can no longer verify. Start-up loads
    /// the denylist from here.
    pub fn revocation_lookback(&self, now: i64) -> i64 {
        now - secs(self.settings.access_ttl) - secs(self.settings.leeway) - 1
    }

    /// Until when a revocation made at `revoked_at` must be kept: a token
    /// issued up to then expires at most `access_ttl` later and verifies
    /// until `exp + leeway`; the denylist holds past that last moment.
    pub fn revocation_horizon(&self, revoked_at: i64) -> i64 {
        revoked_at + secs(self.settings.access_ttl) + secs(self.settings.leeway) + 1
    }

    /// Rejects the access tokens of session `sid`, revoked at `revoked_at`,
    /// for as long as any of them could verify.
    pub async fn deny_session(&self, sid: &str, revoked_at: i64) {
        self.revocations
            .revoke_session(sid, self.revocation_horizon(revoked_at))
            .await;
    }

    /// Rejects `user_id`'s access tokens issued before `before`, for as long
    /// as any of them could verify.
    pub async fn deny_user_before(&self, user_id: &str, before: i64) {
        self.revocations
            .revoke_user_before(user_id, before, self.revocation_horizon(before))
            .await;
    }

    /// Forgets limiter state no longer needed (run every minute).
    pub fn prune_limits(&self, now: i64) {
        self.budget.prune(now);
        self.throttle.prune(now);
    }

    /// The key a client is limited under (IPv6 by prefix).
    pub fn limit_key(&self, client: IpAddr) -> IpAddr {
        crate::client_ip::limit_key(client, self.settings.ipv6_prefix_len)
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
