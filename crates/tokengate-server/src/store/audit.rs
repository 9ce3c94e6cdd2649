//! The stored audit log: recording events, reading it by page, pruning it.

use sqlx::Row;

use super::{Store, StoreError};
use crate::infra::audit::AuditEvent;

/// A stored audit event.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Cursor id, increasing.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Event kind.
    pub kind: String,
    /// User concerned.
    pub user_id: Option<String>,
    /// Session concerned.
    pub session_id: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Details.
    pub detail: serde_json::Value,
}

/// Filters for [`Store::audit_page`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only ids below this cursor.
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

impl Store {
    /// Records an event that changed nothing (a failure, a refusal).
    pub async fn record_audit(&self, event: &AuditEvent, now: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        with_pool!(self, pool => {
            let mut conn = pool.acquire().await?;
            insert_audit!(conn, event, now);
        });
        Ok(())
    }

    /// The stored audit log, newest first, filtered and paged by cursor.
    pub async fn audit_page(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let rows = with_pool!(self, pool => sqlx::query(
            "SELECT id, at, kind, user_id, session_id, ip, detail FROM audit_events \
             WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1) AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(&q.kind)
        .bind(&q.user_id)
        .bind(q.before)
        .bind(q.limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            let detail: String = r.try_get("detail")?;
            Ok(AuditRow {
                id: r.try_get("id")?,
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                user_id: r.try_get("user_id")?,
                session_id: r.try_get("session_id")?,
                ip: r.try_get("ip")?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(rows)
    }

    /// Deletes audit events older than `before`; returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, pool => sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n)
    }
}

/// How many audit events of one kind fell in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCount {
    /// The bucket: `(at - from) / bucket_seconds`.
    pub bucket: i64,
    /// Event kind.
    pub kind: String,
    /// Events of that kind in that bucket.
    pub count: i64,
}

impl Store {
    /// Audit events with `from <= at < to`, counted by kind and by bucket
    /// of `bucket_seconds` from `from` (one pass over the `at` index).
    pub async fn audit_counts(
        &self,
        from: i64,
        to: i64,
        bucket_seconds: i64,
    ) -> Result<Vec<AuditCount>, StoreError> {
        let bucket_seconds = bucket_seconds.max(1);
        let rows = with_pool!(self, pool => sqlx::query(
            "SELECT (at - $1) / $3 AS bucket, kind, COUNT(*) AS n FROM audit_events \
             WHERE at >= $1 AND at < $2 GROUP BY bucket, kind ORDER BY bucket, kind",
        )
        .bind(from)
        .bind(to)
        .bind(bucket_seconds)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(AuditCount {
                bucket: r.try_get("bucket")?,
                kind: r.try_get("kind")?,
                count: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(rows)
    }
}
