//! Storage: one set of queries over SQLite (the embedded default) or
//! PostgreSQL. Queries use `$N` placeholders, which both drivers accept, and
//! portable SQL; the `with_pool!` macro instantiates each method body once
//! per backend, so every query is written once and type-checked twice.
//!
//! This file holds the pool, connecting and migrating, the error type and
//! the macros the queries share; each concern's rows and queries live in
//! their own file (`users`, `sessions`, `keys`, `audit`), each with its own
//! `impl Store` block.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::infra::files::{self, FileError};

/// A storage failure. Constraint violations the caller must handle have
/// their own variants; everything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is already taken; which one says what the caller
    /// answers (only [`Unique::Email`] is a user's mistake).
    #[error("{0} already exists")]
    Conflict(Unique),
    /// The database cannot be reached now (no connection within the pool's
    /// acquire timeout, a connection lost): the caller may retry later.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// Work this process does for storage ended without an answer (the
    /// task that commits SQLite's refresh rotations stopped, or a batch of
    /// them failed): the database itself may be fine, and a retry may
    /// succeed. Says which.
    #[error("{0}")]
    Interrupted(&'static str),
    /// The database failed.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The SQLite database file or its directory could not be created or
    /// made private.
    #[error(transparent)]
    DatabaseFile(#[from] FileError),
}

/// The unique constraints of the schema (see `migrations/`), as a
/// [`StoreError::Conflict`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// `users.email`: an account with this email exists.
    Email,
    /// `users.id`.
    UserId,
    /// `sessions.id`.
    SessionId,
    /// `refresh_tokens.hash`.
    RefreshToken,
    /// `signing_keys.kid`.
    Kid,
}

impl Unique {
    /// The constraint a `table.column` pair stands for, as SQLite names it.
    fn from_column(table_column: &str) -> Option<Unique> {
        Some(match table_column {
            "users.email" => Unique::Email,
            "users.id" => Unique::UserId,
            "sessions.id" => Unique::SessionId,
            "refresh_tokens.hash" => Unique::RefreshToken,
            "signing_keys.kid" => Unique::Kid,
            _ => return None,
        })
    }

    /// The constraint PostgreSQL's default constraint name stands for.
    fn from_constraint(name: &str) -> Option<Unique> {
        Some(match name {
            "users_email_key" => Unique::Email,
            "users_pkey" => Unique::UserId,
            "sessions_pkey" => Unique::SessionId,
            "refresh_tokens_pkey" => Unique::RefreshToken,
            "signing_keys_pkey" => Unique::Kid,
            _ => return None,
        })
    }

    /// Which constraint a unique violation broke: PostgreSQL names the
    /// constraint; SQLite only says it in the message
    /// (`UNIQUE constraint failed: users.email`). `None` for any other error.
    fn violated_by(e: &sqlx::Error) -> Option<Unique> {
        let sqlx::Error::Database(db) = e else {
            return None;
        };
        if !db.is_unique_violation() {
            return None;
        }
        match db.constraint() {
            Some(name) => Unique::from_constraint(name),
            None => db
                .message()
                .strip_prefix("UNIQUE constraint failed: ")
                .and_then(Unique::from_column),
        }
    }
}

impl std::fmt::Display for Unique {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unique::Email => "email",
            Unique::UserId => "user id",
            Unique::SessionId => "session id",
            Unique::RefreshToken => "refresh token",
            Unique::Kid => "key id",
        })
    }
}

impl From<sqlx::Error> for StoreError {
    /// A violation of a known unique constraint becomes `Conflict`, anything
    /// else (an unknown constraint included) stays `Database`.
    fn from(e: sqlx::Error) -> Self {
        if let Some(unique) = Unique::violated_by(&e) {
            return StoreError::Conflict(unique);
        }
        // A lock waited on past `lock_timeout` (PostgreSQL: 55P03), a
        // statement cancelled by `statement_timeout` (57014), or one that
        // SQLite's progress handler interrupted at its deadline
        // (SQLITE_INTERRUPT, result code 9; PostgreSQL's codes are five
        // characters): the database is busy, come back.
        let busy = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| matches!(code.as_ref(), "55P03" | "57014" | "9"));
        if busy {
            return StoreError::Unavailable(e);
        }
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            e => StoreError::Database(e),
        }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How many connections a PostgreSQL pool holds, and how long a request
/// waits for one before the database counts as unavailable (a 503 that
/// comes quickly, rather than requests piling up behind a dead server).
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Connections at most.
    pub max_connections: u32,
    /// The wait for a connection.
    pub acquire_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The storage handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// SQLite's one writer, queued in-process: see [`Store::write_turn`].
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// SQLite's refresh rotations, committed in groups (`None` on PostgreSQL).
    rotation_batches: Option<sessions::RotationBatches>,
}

// The macros come before the `mod` lines below: a `macro_rules!` is in scope
// from its definition on, in this file and in the submodules declared after.

/// Runs `$body` with `$pool` bound to the concrete pool, once per backend.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Writes an audit row inside the caller's transaction.
macro_rules! insert_audit {
    ($tx:expr, $event:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, user_id, session_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($now)
        .bind($event.kind)
        .bind(&$event.user_id)
        .bind(&$event.session_id)
        .bind(&$event.ip)
        .bind($event.detail_json())
        .execute(&mut *$tx)
        .await?
    };
}

/// Moves a user's session epoch on, first thing in a transaction that ends
/// sessions: the row lock it takes (PostgreSQL) or the write lock (SQLite)
/// orders it against a concurrent session creation, which checks the epoch
/// under the same lock, so no session can slip in between.
macro_rules! bump_session_epoch {
    ($tx:expr, $user_id:expr, $now:expr) => {
        sqlx::query(
            "UPDATE users SET session_epoch = session_epoch + 1, updated_at = $1 WHERE id = $2",
        )
        .bind($now)
        .bind($user_id)
        .execute(&mut *$tx)
        .await?
    };
}

/// Keeps one session alive across an epoch bump (the password change's own
/// session, "log out the others").
macro_rules! carry_session_into_epoch {
    ($tx:expr, $user_id:expr, $session_id:expr) => {
        sqlx::query(
            "UPDATE sessions SET user_epoch = (SELECT session_epoch FROM users WHERE id = $1) WHERE id = $2 AND user_id = $1",
        )
        .bind($user_id)
        .bind($session_id)
        .execute(&mut *$tx)
        .await?
    };
}

mod audit;
mod keys;
pub mod migrate_data;
mod sessions;
mod users;

pub use audit::{AuditCount, AuditQuery, AuditRow};
pub use keys::StoredKey;
pub use migrate_data::{Copied, MigrateDataError, Progress, migrate_data};
pub use sessions::{ClientInfo, RevokeScope, Rotation, RotationRules, SessionInfo, SessionRef};
pub use users::User;

/// The file a `sqlite:` URL names; `None` for an in-memory database.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(Path::new(path))
}

/// Makes the database file, and its directory, private before SQLite opens
/// it. SQLite would create the file with mode 0644 less the umask, and it
/// gives the `-wal` and `-shm` files it makes later the database file's
/// mode: creating the file 0600 first keeps all three private whatever the
/// umask. Existing files readable by others are made private, with a warning.
fn prepare_private_database_file(path: &Path) -> Result<(), FileError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir(dir)?;
    }
    files::create_private_file(path)?;
    files::make_private(path)?;
    // Left by an earlier run (a crash, or a version that did not do this).
    for suffix in ["-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        files::make_private(Path::new(&companion))?;
    }
    Ok(())
}
impl Store {
    /// Connects (creating the SQLite file and its directory if needed, both
    /// private) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, PoolLimits::default()).await
    }

    /// [`Store::connect`] with the pool's size and acquire timeout (for
    /// PostgreSQL; SQLite keeps its own small pool).
    pub async fn connect_with(url: &str, limits: PoolLimits) -> Result<Store, StoreError> {
        let store = if url.starts_with("postgres") {
            // A statement that waits on a lock longer than a request may
            // wait for a connection gives up: 503, not a request hanging
            // until its timeout.
            let lock_timeout = format!("{}ms", limits.acquire_timeout.as_millis().max(1));
            let options =
                PgConnectOptions::from_str(url)?.options([("lock_timeout", lock_timeout.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(limits.max_connections.max(1))
                .acquire_timeout(limits.acquire_timeout)
                .connect_with(options)
                .await?;
            Store {
                pool: Pool::Postgres(pool),
                sqlite_writer: Arc::default(),
                rotation_batches: None,
            }
        } else {
            if let Some(path) = sqlite_file(url) {
                prepare_private_database_file(path)?;
            }
            // WAL lets readers run beside the writer; synchronous=FULL makes
            // every commit durable before it is acknowledged; busy_timeout
            // queues writers instead of failing them.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            let sqlite_writer = Arc::default();
            Store {
                rotation_batches: Some(sessions::RotationBatches::start(
                    pool.clone(),
                    Arc::clone(&sqlite_writer),
                )),
                pool: Pool::Sqlite(pool),
                sqlite_writer,
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The turn of a write transaction. SQLite lets one transaction write at
    /// a time; two pool connections that both try wait in SQLite's busy
    /// handler, which sleeps (1, 2, 5 … up to 100 ms) between retries rather
    /// than waking when the lock is free, so under concurrent refreshes a
    /// few waited a second or more (p99 about 100 ms, maximum 1.2 s, with
    /// 16 refresh chains; docs/BENCHMARKS.md). Queued here instead, FIFO,
    /// each writer starts when the previous one commits. Only the order of
    /// the transactions changes: each still checks and marks its rows inside
    /// itself, so single use and reuse detection hold as before (and across
    /// processes sharing the file, the busy handler still queues them).
    /// PostgreSQL locks rows, not the database: no turn there.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.sqlite_writer.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    /// Closes every connection, waiting for in-flight queries.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Counts rows, for tests and diagnostics: (users, sessions, refresh tokens).
    pub async fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let c = with_pool!(self, pool => {
            let one = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool);
            (
                one("SELECT COUNT(*) FROM users").await?,
                one("SELECT COUNT(*) FROM sessions").await?,
                one("SELECT COUNT(*) FROM refresh_tokens").await?,
            )
        });
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::Unique;

    #[test]
    fn other_unique_constraints_are_left_unnamed() {
        // The audit log's own id, a composite index, a foreign table: these
        // stay `Database` errors rather than a misnamed `Conflict`.
        assert_eq!(Unique::from_column("audit_events.id"), None);
        assert_eq!(Unique::from_column("users.email, users.id"), None);
        assert_eq!(Unique::from_constraint("audit_events_pkey"), None);
        assert_eq!(Unique::from_constraint("users_email_idx"), None);
    }
}
