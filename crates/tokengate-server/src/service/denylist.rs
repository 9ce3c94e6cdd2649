//! The denylist as the rest of the service sees it: one rule for how long a
//! revocation is kept, one place that pushes revocations made in the store
//! into the in-process (later Redis) store, and the sync that brings in
//! those made elsewhere. The store is the library's
//! [`RecordRevocations`]: the request guard reads the very same one.

use std::sync::Arc;
use std::time::Duration;

use crate::infra::config::secs;
use redis::aio::ConnectionManager;
use tokengate::UnixTime;
use tokengate::guard::{
    DenylistKeys, InProcessRevocations, RecordRevocations, RedisRevocations, RevocationQuery,
    Revocations,
};

use crate::infra::config::Settings;

use crate::store::{Store, StoreError};

/// Revocations of live access tokens, kept exactly as long as they matter.
#[derive(Clone)]
pub struct Denylist {
    revocations: Arc<dyn RecordRevocations>,
    access_ttl: i64,
    leeway: i64,
}

impl Denylist {
    /// A denylist over `revocations` for tokens living `access_ttl` and
    /// verified with `leeway`.
    pub fn new(
        revocations: Arc<dyn RecordRevocations>,
        access_ttl: Duration,
        leeway: Duration,
    ) -> Self {
        Denylist {
            revocations,
            access_ttl: secs(access_ttl),
            leeway: secs(leeway),
        }
    }

    /// The denylist the settings ask for: in Redis over `redis` when
    /// `redis_url` is set (shared by every instance and readable by other
    /// APIs' guards), else in this process. Redis need not answer yet:
    /// until it does, checks fail (closed, unless `revocation_fail_open`)
    /// and writes are logged and made again by the database sync.
    pub fn from_settings(settings: &Settings, redis: Option<ConnectionManager>) -> Denylist {
        let revocations: Arc<dyn RecordRevocations> = match redis {
            // The service writes the "complete" mark at every sync, so
            // its own checks can require it (fail closed after Redis lost
            // its data).
            Some(conn) => Arc::new(
                RedisRevocations::from_manager(
                    conn,
                    DenylistKeys::new(settings.redis_prefix.clone()),
                )
                .require_complete_marker(),
            ),
            None => Arc::new(InProcessRevocations::default()),
        };
        Denylist::new(revocations, settings.access_ttl, settings.leeway)
    }

    /// How far back a revocation can still matter at `now`: one revoked
    /// earlier only covers tokens that can no longer verify. Start-up loads
    /// the denylist from here.
    pub fn lookback(&self, now: i64) -> i64 {
        now - self.access_ttl - self.leeway - 1
    }

    /// Until when a revocation made at `revoked_at` must be kept: a token
    /// issued up to then expires at most `access_ttl` later and verifies
    /// until `exp + leeway`; the denylist holds past that last moment.
    pub fn horizon(&self, revoked_at: i64) -> i64 {
        revoked_at + self.access_ttl + self.leeway + 1
    }

    /// Rejects the access tokens of session `sid`, revoked at `revoked_at`.
    pub async fn deny_session(&self, sid: &str, revoked_at: i64) {
        if let Err(e) = self
            .revocations
            .revoke_session(sid, self.horizon(revoked_at))
            .await
        {
            // The store holds the revocation; the sync retries it.
            tracing::error!(cause = %e, session_id = sid, "denylist write failed");
        }
    }

    /// Rejects the access tokens of each of `sids`, revoked at `revoked_at`.
    pub async fn deny_sessions(&self, sids: &[String], revoked_at: i64) {
        for sid in sids {
            self.deny_session(sid, revoked_at).await;
        }
    }

    /// Rejects `user_id`'s access tokens issued before `before`.
    pub async fn deny_user_before(&self, user_id: &str, before: i64) {
        if let Err(e) = self
            .revocations
            .revoke_user_before(user_id, before, self.horizon(before))
            .await
        {
            tracing::error!(cause = %e, user_id, "denylist write failed");
        }
    }

    /// The store the request guard reads.
    pub fn reader(&self) -> Arc<dyn Revocations> {
        self.revocations.clone()
    }

    /// Whether a token of this session and user, issued at `iat`, is
    /// revoked at `now` ("cannot tell" counts as revoked).
    pub async fn is_revoked(&self, sid: Option<&str>, user_id: &str, iat: i64, now: i64) -> bool {
        let query = RevocationQuery {
            sub: user_id,
            sid,
            jti: None,
            iat: Some(iat),
        };
        self.revocations
            .is_revoked(query, UnixTime::from_secs(now))
            .await
            .unwrap_or(true)
    }

    /// Loads revocations recorded in the database since `since` (by this
    /// process, another instance, or the `user` CLI), then marks the
    /// denylist complete for as long as those could matter: a Redis that
    /// restarted empty has lost the mark, and the guard fails closed
    /// until a pass wrote everything again. A pass stops at the first
    /// write the store refuses (the next one, two seconds on, starts
    /// over): a Redis that is away must not cost one timeout per entry.
    pub async fn sync_from(&self, store: &Store, since: i64) -> Result<(), StoreError> {
        // The pass begins before the database is read: a revocation
        // committed after the read was pushed by its writer to the Redis
        // this pass began on, and a Redis that restarted since the pass
        // began has lost the pass's record, so the mark fails. (Read
        // first, a pass could begin on a Redis restarted after the read,
        // missing a revocation its writer had pushed to the old one.)
        let pass = match self.revocations.begin_complete().await {
            Ok(pass) => pass,
            Err(e) => {
                tracing::warn!(cause = %e, "denylist sync skipped; the next pass starts over");
                return Ok(());
            }
        };
        let (sessions, users) = store.revocations_since(since).await?;
        let writes = sessions
            .iter()
            .map(|(sid, at)| (sid.as_str(), None, *at))
            .chain(
                users
                    .iter()
                    .map(|(user, before)| (user.as_str(), Some(*before), *before)),
            );
        for (id, before, at) in writes {
            let written = match before {
                None => self.revocations.revoke_session(id, self.horizon(at)).await,
                Some(before) => {
                    self.revocations
                        .revoke_user_before(id, before, self.horizon(at))
                        .await
                }
            };
            if let Err(e) = written {
                tracing::warn!(cause = %e, "denylist sync stopped; the next pass starts over");
                return Ok(());
            }
        }
        let valid_for = self.access_ttl + self.leeway + 1;
        if let Err(e) = self.revocations.mark_complete(pass, valid_for).await {
            tracing::info!(cause = %e, "denylist not marked complete; the next pass tries again");
        }
        Ok(())
    }
}
