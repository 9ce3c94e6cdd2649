//! What every request handler shares: the services, and the HTTP front
//! end's own parts (the request budget, the client-address resolver).

use std::net::IpAddr;
use std::sync::Arc;

use tokengate::guard::Guard;

use crate::infra::client_ip::ClientIpResolver;
use crate::infra::clock::Clock;
use crate::infra::config::{Settings, secs};
use crate::infra::password::Hasher;
use crate::infra::ratelimit::{LoginThrottle, RequestBudget};
use crate::service::keys::KeyManager;
use crate::service::{Accounts, Denylist, Sessions};
use crate::store::Store;

/// Shared state, behind an `Arc`.
pub struct AppState {
    /// Effective settings.
    pub settings: Settings,
    /// Storage, for the reads the front end serves directly.
    pub store: Store,
    /// Signing and verification keys, rebuilt on rotation.
    pub keys: Arc<KeyManager>,
    /// Verifies access tokens: the keys in force, the policy, the denylist
    /// and the verified-token cache; the same guard the library offers
    /// other APIs.
    pub guard: Guard,
    /// Password hashing on the bounded pool (shared with the services).
    pub hasher: Hasher,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Revoked sessions and users.
    pub denylist: Denylist,
    /// Failed-login throttle (shared with the services; pruned here).
    pub throttle: Arc<dyn LoginThrottle>,
    /// Account operations.
    pub accounts: Accounts,
    /// Session operations.
    pub sessions: Sessions,
    /// Per-client request budget on `/auth/*`.
    pub budget: RequestBudget,
    /// Who a request comes from (trusted proxies).
    pub client_ip: ClientIpResolver,
    /// The header names `/auth/verify` answers with.
    pub identity_headers: crate::http::routes::verify::IdentityHeaderNames,
}

impl AppState {
    /// Logs an event that changed nothing and stores its row. A storage
    /// failure here is logged, not returned: the request's answer stands.
    pub async fn record(&self, event: crate::infra::audit::AuditEvent) {
        crate::service::accounts::record(&self.store, self.clock.as_ref(), event).await;
    }

    /// Loads revocations recorded in the database since `since` (by this
    /// process, another instance, or the `user` CLI) into the denylist.
    /// Start-up calls it from [`Denylist::lookback`]; a background task then
    /// calls it every few seconds.
    pub async fn sync_revocations(&self, since: i64) -> Result<(), crate::store::StoreError> {
        self.denylist.sync_from(&self.store, since).await
    }

    /// Deletes audit events older than the retention; returns how many.
    pub async fn prune_audit(&self) -> Result<u64, crate::store::StoreError> {
        let retention = secs(self.settings.audit_retention);
        let cutoff = self.clock.now().as_secs().saturating_sub(retention);
        let pruned = self.store.prune_audit(cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, "audit events past retention deleted");
        }
        Ok(pruned)
    }

    /// Forgets limiter state no longer needed (run every minute).
    pub fn prune_limits(&self, now: i64) {
        self.budget.prune(now);
        self.throttle.prune(now);
        self.sessions.prune_refusals(now);
    }

    /// The key a client is limited under (IPv6 by prefix).
    pub fn limit_key(&self, client: IpAddr) -> IpAddr {
        crate::infra::client_ip::limit_key(client, self.settings.ipv6_prefix_len)
    }
}
