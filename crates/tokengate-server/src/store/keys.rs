//! Signing keys: the encrypted key rows and their rotation schedule.

use sqlx::Row;

use super::{Store, StoreError};
use crate::infra::audit::AuditEvent;

/// A signing key row.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// Algorithm name.
    pub alg: String,
    /// Encrypted PKCS#8.
    pub encrypted_key: String,
    /// Created (and published in the JWKS).
    pub created_at: i64,
    /// Signs new tokens from this time.
    pub activates_at: i64,
    /// Leaves the JWKS and stops verifying at this time.
    pub retired_at: Option<i64>,
}

impl Store {
    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let keys = with_pool!(self, pool => sqlx::query(
            "SELECT kid, alg, encrypted_key, created_at, activates_at, retired_at FROM signing_keys ORDER BY activates_at, created_at",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok(StoredKey {
            kid: r.try_get("kid")?,
            alg: r.try_get("alg")?,
            encrypted_key: r.try_get("encrypted_key")?,
            created_at: r.try_get("created_at")?,
            activates_at: r.try_get::<Option<i64>, _>("activates_at")?.unwrap_or(0),
            retired_at: r.try_get("retired_at")?,
        }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(keys)
    }

    /// Stores a new signing key. Unless `retire_others_at` is `None`, every
    /// key not yet scheduled to retire is scheduled for that time, in the
    /// same transaction with the audit row. Refused (returns `false`, nothing
    /// written) while another key is still waiting to activate, so two
    /// rotations cannot race.
    pub async fn add_signing_key(
        &self,
        key: &StoredKey,
        retire_others_at: Option<i64>,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let on_postgres = matches!(self.pool, super::Pool::Postgres(_));
        let added = with_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            // One rotation at a time across instances: under PostgreSQL's
            // READ COMMITTED two transactions would both see no pending
            // key and both insert one. SQLite has one writer anyway.
            if on_postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(7301001)")
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO signing_keys (kid, alg, encrypted_key, created_at, active, activates_at) \
                 SELECT $1, $2, $3, $4, 0, $5 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE activates_at > $4)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.encrypted_key)
            .bind(now)
            .bind(key.activates_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            if let Some(at) = retire_others_at {
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND kid <> $2")
                    .bind(at)
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_audit!(tx, audit, now);
            tx.commit().await?;
            true
        });
        Ok(added)
    }
}
