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

/// The count behind [`Store::audit_counts`], written once for the query and
/// for [`Store::explain_audit_counts`]: a range on `at` grouped by hour and
/// kind, which the `(at, kind)` index answers alone (migration 0006).
const AUDIT_COUNTS: &str = "SELECT (at - $1) / $3 AS bucket, kind, COUNT(*) AS n FROM audit_events \
     WHERE at >= $1 AND at < $2 GROUP BY bucket, kind ORDER BY bucket, kind";

/// How many SQLite virtual-machine steps pass between two looks at the
/// clock while a bounded read runs: often enough to stop within a
/// millisecond or so of the deadline, rarely enough to cost nothing.
const SQLITE_STEPS_PER_CLOCK_CHECK: i32 = 1_000;

impl Store {
    /// Audit events with `from <= at < to`, counted by kind and by bucket
    /// of `bucket_seconds` from `from` (one range scan of the `(at, kind)`
    /// index), given up after `timeout`: the database then answers
    /// [`StoreError::Unavailable`] rather than holding a connection (and a
    /// CPU) for as long as a large window takes.
    pub async fn audit_counts(
        &self,
        from: i64,
        to: i64,
        bucket_seconds: i64,
        timeout: std::time::Duration,
    ) -> Result<Vec<AuditCount>, StoreError> {
        let bucket_seconds = bucket_seconds.max(1);
        // Instantiated per backend, like `with_pool!` (rows differ in type).
        macro_rules! query {
            () => {
                sqlx::query(AUDIT_COUNTS)
                    .bind(from)
                    .bind(to)
                    .bind(bucket_seconds)
            };
        }
        macro_rules! counts_of {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        Ok(AuditCount {
                            bucket: r.try_get("bucket")?,
                            kind: r.try_get("kind")?,
                            count: r.try_get("n")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            };
        }
        let counts = match &self.pool {
            // PostgreSQL's own statement timeout, for this transaction only
            // (`set_config(…, true)` is `SET LOCAL`, which takes no bind
            // parameter): a statement past it is cancelled, SQLSTATE 57014.
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                    .bind(timeout.as_millis().max(1).to_string())
                    .execute(&mut *tx)
                    .await?;
                let rows = query!().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                counts_of!(rows)
            }
            // SQLite has no statement timeout. Its progress handler, called
            // every few thousand VM steps of a running statement, can stop
            // it (SQLITE_INTERRUPT): the honest bound on this read, since a
            // row cap would answer wrong counts without saying so.
            super::Pool::Sqlite(pool) => {
                let mut bounded = SqliteDeadline::arm(pool.acquire().await?, timeout).await?;
                let rows = query!().fetch_all(&mut *bounded.conn).await;
                bounded.disarm().await?;
                counts_of!(rows?)
            }
        };
        Ok(counts)
    }

    /// The database's plan for [`Store::audit_counts`] (SQLite's `EXPLAIN
    /// QUERY PLAN` details, PostgreSQL's `EXPLAIN` lines), for tests and
    /// diagnostics: which index serves the count.
    pub async fn explain_audit_counts(
        &self,
        from: i64,
        to: i64,
        bucket_seconds: i64,
    ) -> Result<Vec<String>, StoreError> {
        let (explain, column) = match self.pool {
            super::Pool::Sqlite(_) => ("EXPLAIN QUERY PLAN ", "detail"),
            super::Pool::Postgres(_) => ("EXPLAIN ", "QUERY PLAN"),
        };
        let sql = sqlx::AssertSqlSafe(format!("{explain}{AUDIT_COUNTS}"));
        let lines = with_pool!(self, pool => sqlx::query(sql)
            .bind(from)
            .bind(to)
            .bind(bucket_seconds.max(1))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(column))
            .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(lines)
    }
}

/// A pooled SQLite connection whose statements are interrupted once a
/// deadline passes. [`SqliteDeadline::disarm`] removes the handler before
/// the connection goes back to the pool. If the read is abandoned before
/// that (the request dropped), the statement still running is interrupted
/// at once and the connection is closed, not pooled: a handler left on it
/// would interrupt whatever ran on it next.
struct SqliteDeadline {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl SqliteDeadline {
    async fn arm(
        mut conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
        timeout: std::time::Duration,
    ) -> Result<SqliteDeadline, StoreError> {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + timeout;
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = abandoned.clone();
        conn.lock_handle()
            .await?
            .set_progress_handler(SQLITE_STEPS_PER_CLOCK_CHECK, move || {
                // `true` lets the statement go on.
                !flag.load(Ordering::Relaxed) && std::time::Instant::now() < deadline
            });
        Ok(SqliteDeadline {
            conn,
            abandoned,
            armed: true,
        })
    }

    async fn disarm(mut self) -> Result<(), StoreError> {
        self.conn.lock_handle().await?.remove_progress_handler();
        self.armed = false;
        Ok(())
    }
}

impl Drop for SqliteDeadline {
    fn drop(&mut self) {
        if self.armed {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.conn.close_on_drop();
        }
    }
}
