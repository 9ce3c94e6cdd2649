//! Storage: one set of queries over SQLite (the embedded default) or
//! PostgreSQL. Queries use `$N` placeholders, which both drivers accept, and
//! portable SQL; the `with_pool!` macro instantiates each method body once
//! per backend, so every query is written once and type-checked twice.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use crate::audit::AuditEvent;

/// A storage failure. Constraint violations the caller must handle have
/// their own variants; everything else is `Database`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (an email) is already taken.
    #[error("already exists")]
    Conflict,
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The storage handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
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

/// A user row.
#[derive(Debug, Clone)]
pub struct User {
    /// Opaque id (the `sub` claim).
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// PHC-format hash (argon2id, or bcrypt for imported users).
    pub password_hash: String,
    /// Space-separated roles.
    pub roles: String,
    /// Access tokens issued before this are rejected (global logout).
    pub not_before: Option<i64>,
    /// A disabled user cannot log in or refresh.
    pub disabled: bool,
    /// Creation time.
    pub created_at: i64,
    /// Moves on at every "log out everywhere", password change and
    /// disabling; sessions of an earlier epoch are void.
    pub session_epoch: i64,
}

impl User {
    /// A new, enabled user with a random id; `None` if the system random
    /// generator fails.
    pub fn new(email: &str, password_hash: String, roles: &str) -> Option<User> {
        Some(User {
            id: crate::domain::random_id()?,
            email: email.to_owned(),
            password_hash,
            roles: roles.to_owned(),
            not_before: None,
            disabled: false,
            created_at: 0,
            session_epoch: 0,
        })
    }

    /// Roles as a list.
    pub fn role_list(&self) -> Vec<String> {
        self.roles.split_whitespace().map(str::to_owned).collect()
    }
}

/// A session (a refresh-token family) as rotation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// Session id (the `sid` claim).
    pub id: String,
    /// Owner.
    pub user_id: String,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now used and its child is stored.
    Rotated(SessionRef),
    /// The token was already used, within the reuse interval: answer again
    /// with the same child (a concurrent refresh from a second tab).
    Replayed(SessionRef),
    /// The token was already used, after the reuse interval: the whole
    /// session has just been revoked.
    ReuseDetected(SessionRef),
    /// The session has ended (revoked, past its lifetime or idle timeout).
    SessionEnded,
    /// No such token, or it has expired.
    Invalid,
}

impl Rotation {
    /// The audit event this outcome records (none for failures, which the
    /// caller records on their own since nothing changed).
    pub fn audit_event(&self, ip: &str) -> Option<AuditEvent> {
        let (kind, session) = match self {
            Rotation::Rotated(s) => ("refresh_rotated", s),
            Rotation::Replayed(s) => ("refresh_replayed_within_interval", s),
            Rotation::ReuseDetected(s) => ("refresh_reuse_detected", s),
            Rotation::SessionEnded | Rotation::Invalid => return None,
        };
        let event = AuditEvent::new(kind)
            .user(&session.user_id)
            .session(&session.id)
            .ip(ip);
        Some(match self {
            Rotation::ReuseDetected(_) => event.with("action", "session_revoked"),
            _ => event,
        })
    }
}

/// Where a session was started from, shown in the session list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent` header, truncated.
    pub user_agent: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

/// A live session, as the session list shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Started.
    pub created_at: i64,
    /// Last refreshed.
    pub last_used_at: i64,
    /// Client software.
    pub user_agent: Option<String>,
    /// Client address.
    pub ip: Option<String>,
}

/// A stored audit event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    /// Cursor id, increasing.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Event kind.
    #[serde(rename = "type")]
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

fn user_from_row<R: Row>(r: &R) -> Result<User, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    i32: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    i64: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
{
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        roles: r.try_get("roles")?,
        not_before: r.try_get("not_before")?,
        disabled: r.try_get::<i32, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
        session_epoch: r.try_get("session_epoch")?,
    })
}

/// Rules for one rotation.
#[derive(Debug, Clone, Copy)]
pub struct RotationRules {
    /// Now, in Unix seconds.
    pub now: i64,
    /// Lifetime of the new refresh token.
    pub refresh_ttl: i64,
    /// Grace period for an already-used token.
    pub reuse_interval: i64,
    /// A session unused for longer ends.
    pub idle_timeout: i64,
}

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

/// The file a `sqlite:` URL names; `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<&Path> {
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
fn prepare_private_database_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::keyfile::create_private_dir(dir)?;
    }
    crate::keyfile::create_private_file(path)?;
    crate::keyfile::make_private(path)?;
    // Left by an earlier run (a crash, or a version that did not do this).
    for suffix in ["-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        crate::keyfile::make_private(Path::new(&companion))?;
    }
    Ok(())
}

impl Store {
    /// Connects (creating the SQLite file and its directory if needed, both
    /// private) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let store = if url.starts_with("postgres") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Store {
                pool: Pool::Postgres(pool),
            }
        } else {
            if let Some(path) = sqlite_file(url) {
                prepare_private_database_file(path)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
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
            Store {
                pool: Pool::Sqlite(pool),
            }
        };
        store.migrate().await?;
        Ok(store)
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

    /// Inserts a user and its audit row; `Conflict` if the email is taken
    /// (and then no row is written).
    pub async fn create_user(
        &self,
        user: &User,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let result: Result<(), sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(&user.roles)
            .bind(i32::from(user.disabled))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_audit!(tx, audit, now);
            tx.commit().await
        }.await);
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.user_where("email", email).await
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.user_where("id", id).await
    }

    async fn user_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<User>, StoreError> {
        let sql = match column {
            "email" => {
                "SELECT id, email, password_hash, roles, not_before, disabled, created_at, session_epoch FROM users WHERE email = $1"
            }
            _ => {
                "SELECT id, email, password_hash, roles, not_before, disabled, created_at, session_epoch FROM users WHERE id = $1"
            }
        };
        let row = with_pool!(self, pool => sqlx::query(sql).bind(value).fetch_optional(pool).await?
            .map(|r| user_from_row(&r))
            .transpose()?);
        Ok(row)
    }

    /// Replaces a user's password hash (rehash on login), with its audit row.
    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            insert_audit!(tx, audit, now);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Changes a password and ends every other session of the user, in one
    /// transaction with its audit row. Returns the sessions ended.
    pub async fn change_password(
        &self,
        user_id: &str,
        hash: &str,
        keep_session: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        let ids = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            bump_session_epoch!(tx, user_id, now);
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = 'password_changed' WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3 RETURNING id",
            )
            .bind(now)
            .bind(user_id)
            .bind(keep_session)
            .fetch_all(&mut *tx)
            .await?;
            carry_session_into_epoch!(tx, user_id, keep_session);
            let ids = rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<Vec<_>, _>>()?;
            let event = audit.clone().with("sessions_ended", ids.len());
            insert_audit!(tx, event, now);
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    /// Starts a session with its first refresh token, in one transaction,
    /// if the user is still enabled and still in `session_epoch` (the epoch
    /// the login read before checking the password). Returns `false`, and
    /// writes nothing, when a "log out everywhere", a password change or a
    /// disabling happened meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        session: &SessionRef,
        session_epoch: i64,
        refresh_hash: &str,
        now: i64,
        session_expires_at: i64,
        refresh_expires_at: i64,
        client: &ClientInfo,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let created = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // A write to the user row first: it waits for (PostgreSQL row
            // lock) or excludes (SQLite write lock) a concurrent epoch bump,
            // then re-reads the epoch, so the check and the insert are one.
            let current = sqlx::query(
                "UPDATE users SET session_epoch = session_epoch WHERE id = $1 AND session_epoch = $2 AND disabled = 0",
            )
            .bind(&session.user_id)
            .bind(session_epoch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if current == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip, user_epoch) VALUES ($1, $2, $3, $3, $4, $5, $6, $7)",
            )
            .bind(&session.id)
            .bind(&session.user_id)
            .bind(now)
            .bind(session_expires_at)
            .bind(&client.user_agent)
            .bind(&client.ip)
            .bind(session_epoch)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(refresh_hash)
            .bind(&session.id)
            .bind(now)
            .bind(refresh_expires_at.min(session_expires_at))
            .execute(&mut *tx)
            .await?;
            insert_audit!(tx, audit, now);
            tx.commit().await?;
            true
        });
        Ok(created)
    }

    /// Presents a refresh token. The single-use check is one conditional
    /// `UPDATE … WHERE used_at IS NULL RETURNING`, and the child insert is in
    /// the same transaction: of two concurrent presentations exactly one
    /// rotates; the other sees the token used (and, within the reuse
    /// interval, gets the same child back rather than a second one).
    pub async fn rotate_refresh(
        &self,
        hash: &str,
        child_hash: &str,
        rules: RotationRules,
        ip: &str,
    ) -> Result<Rotation, StoreError> {
        let now = rules.now;
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Writing first takes the write lock at once (SQLite) or the row
            // lock (PostgreSQL), so the loser of a race waits, then re-reads.
            let won = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING session_id",
            )
            .bind(now)
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get::<String, _>("session_id"))
            .transpose()?;
            let (session_id, used_at) = match won {
                Some(session_id) => (session_id, None),
                None => {
                    let row = sqlx::query(
                        "SELECT session_id, used_at, expires_at FROM refresh_tokens WHERE hash = $1",
                    )
                    .bind(hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Rotation::Invalid);
                    };
                    let expires_at: i64 = row.try_get("expires_at")?;
                    let used_at: Option<i64> = row.try_get("used_at")?;
                    match used_at {
                        Some(t) => (row.try_get::<String, _>("session_id")?, Some(t)),
                        // Unused but not updated: it has expired.
                        None if expires_at <= now => return Ok(Rotation::Invalid),
                        None => return Ok(Rotation::Invalid),
                    }
                }
            };
            let session = sqlx::query(
                "SELECT s.user_id, s.last_used_at, s.expires_at, s.revoked_at, s.user_epoch, u.session_epoch, u.disabled \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
            )
            .bind(&session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = session else {
                return Ok(Rotation::Invalid);
            };
            let user_id: String = session.try_get("user_id")?;
            let last_used_at: i64 = session.try_get("last_used_at")?;
            let session_expires_at: i64 = session.try_get("expires_at")?;
            let revoked_at: Option<i64> = session.try_get("revoked_at")?;
            let void = session.try_get::<i64, _>("user_epoch")? != session.try_get::<i64, _>("session_epoch")?
                || session.try_get::<i32, _>("disabled")? != 0;
            let reference = SessionRef { id: session_id.clone(), user_id };
            let ended = revoked_at.is_some()
                || void
                || session_expires_at <= now
                || now - last_used_at > rules.idle_timeout;
            match used_at {
                _ if ended => {
                    tx.rollback().await?;
                    Rotation::SessionEnded
                }
                None => {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (hash, session_id, parent_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(child_hash)
                    .bind(&session_id)
                    .bind(hash)
                    .bind(now)
                    .bind((now + rules.refresh_ttl).min(session_expires_at))
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await?;
                    let outcome = Rotation::Rotated(reference);
                    if let Some(event) = outcome.audit_event(ip) {
                        insert_audit!(tx, event, now);
                    }
                    tx.commit().await?;
                    outcome
                }
                Some(used) if rules.reuse_interval > 0 && now - used <= rules.reuse_interval => {
                    let outcome = Rotation::Replayed(reference);
                    if let Some(event) = outcome.audit_event(ip) {
                        insert_audit!(tx, event, now);
                    }
                    tx.commit().await?;
                    outcome
                }
                Some(_) => {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'refresh_token_reuse' WHERE id = $2 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await?;
                    let outcome = Rotation::ReuseDetected(reference);
                    if let Some(event) = outcome.audit_event(ip) {
                        insert_audit!(tx, event, now);
                    }
                    tx.commit().await?;
                    outcome
                }
            }
        });
        Ok(outcome)
    }

    /// Whether a session is live (not revoked, not expired).
    pub async fn session_is_live(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let live = with_pool!(self, pool => sqlx::query(
            "SELECT 1 AS live FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(session_id)
        .bind(now)
        .fetch_optional(pool)
        .await?
        .is_some());
        Ok(live)
    }

    /// Revokes sessions of `user_id`: the one `only`, or all but `except`,
    /// or all. Returns the ids revoked now. Global logout also sets the
    /// user's `not_before`.
    pub async fn revoke_sessions(
        &self,
        user_id: &str,
        scope: RevokeScope<'_>,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Vec<String>, StoreError> {
        let reason = audit.kind;
        let (sql, arg) = match scope {
            RevokeScope::Only(sid) => (
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL AND id = $4 RETURNING id",
                sid,
            ),
            RevokeScope::AllExcept(sid) => (
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4 RETURNING id",
                sid,
            ),
            RevokeScope::All => (
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL AND $4 = $4 RETURNING id",
                "",
            ),
        };
        let ids = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Ending all (or all other) sessions also voids logins still in
            // flight: the epoch moves first, under the user row's lock.
            if !matches!(scope, RevokeScope::Only(_)) {
                bump_session_epoch!(tx, user_id, now);
            }
            if matches!(scope, RevokeScope::All) {
                sqlx::query("UPDATE users SET not_before = $1, updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let rows = sqlx::query(sql)
                .bind(now)
                .bind(reason)
                .bind(user_id)
                .bind(arg)
                .fetch_all(&mut *tx)
                .await?;
            if let RevokeScope::AllExcept(keep) = scope {
                carry_session_into_epoch!(tx, user_id, keep);
            }
            let ids = rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<Vec<_>, _>>()?;
            // A row records a change: none when nothing was revoked.
            if RevokeScope::changed(scope, &ids) {
                let event = audit.clone().with("sessions_ended", ids.len());
                insert_audit!(tx, event, now);
            }
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    /// Sessions revoked and users logged out globally since `since`: what an
    /// in-process denylist must know again after a restart.
    pub async fn revocations_since(
        &self,
        since: i64,
    ) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), StoreError> {
        let result = with_pool!(self, pool => {
            let sessions = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
                .bind(since)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>("id")?, r.try_get::<i64, _>("revoked_at")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            let users = sqlx::query("SELECT id, not_before FROM users WHERE not_before >= $1")
                .bind(since)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>("id")?, r.try_get::<i64, _>("not_before")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            (sessions, users)
        });
        Ok(result)
    }

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
        let added = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
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

    /// Records an event that changed nothing (a failure, a refusal).
    pub async fn record_audit(&self, event: &AuditEvent, now: i64) -> Result<(), StoreError> {
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
        let n = with_pool!(self, pool => sqlx::query("DELETE FROM audit_events WHERE at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n)
    }

    /// A user's live sessions, most recently used first.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let sessions = with_pool!(self, pool => sqlx::query(
            "SELECT id, created_at, last_used_at, user_agent, ip FROM sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY last_used_at DESC, created_at DESC",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok(SessionInfo {
            id: r.try_get("id")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            user_agent: r.try_get("user_agent")?,
            ip: r.try_get("ip")?,
        }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(sessions)
    }

    /// Users ordered by email, optionally those whose email contains
    /// `search`, starting after the email `after`.
    pub async fn list_users(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        // LIKE with the user's text escaped, so % and _ match themselves.
        let pattern = search.map(|s| {
            format!(
                "%{}%",
                s.to_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
        let users = with_pool!(self, pool => sqlx::query(
            "SELECT id, email, password_hash, roles, not_before, disabled, created_at, session_epoch FROM users \
             WHERE (CAST($1 AS TEXT) IS NULL OR email LIKE $1 ESCAPE '\\') AND (CAST($2 AS TEXT) IS NULL OR email > $2) \
             ORDER BY email LIMIT $3",
        )
        .bind(&pattern)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(user_from_row)
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(users)
    }

    /// Changes a user's roles and/or disabled flag, with its audit row.
    /// Disabling also ends every session and sets the user's not-before, in
    /// the same transaction. Returns the user and the sessions ended, or
    /// `None` if there is no such user.
    pub async fn update_user(
        &self,
        user_id: &str,
        roles: Option<&str>,
        disabled: Option<bool>,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Option<(User, Vec<String>)>, StoreError> {
        let result = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if disabled == Some(true) {
                bump_session_epoch!(tx, user_id, now);
            }
            let updated = sqlx::query(
                "UPDATE users SET roles = COALESCE(CAST($1 AS TEXT), roles), disabled = COALESCE(CAST($2 AS INTEGER), disabled), updated_at = $3 WHERE id = $4",
            )
            .bind(roles)
            .bind(disabled.map(i32::from))
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(None);
            }
            let mut ended = Vec::new();
            if disabled == Some(true) {
                let rows = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1, revoked_reason = 'user_disabled' WHERE user_id = $2 AND revoked_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
                ended = rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<Vec<_>, _>>()?;
                sqlx::query("UPDATE users SET not_before = $1 WHERE id = $2")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let event = audit.clone().with("sessions_ended", ended.len());
            insert_audit!(tx, event, now);
            let user = sqlx::query(
                "SELECT id, email, password_hash, roles, not_before, disabled, created_at, session_epoch FROM users WHERE id = $1",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            let user = user_from_row(&user)?;
            tx.commit().await?;
            Some((user, ended))
        });
        Ok(result)
    }

    /// Which of these emails already have accounts.
    pub async fn existing_emails(
        &self,
        emails: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut found = std::collections::BTreeSet::new();
        for email in emails {
            let row = with_pool!(self, pool => sqlx::query("SELECT 1 AS x FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(pool)
                .await?
                .is_some());
            if row {
                found.insert(email.clone());
            }
        }
        Ok(found)
    }

    /// Inserts users all-or-nothing in one transaction with one audit row.
    /// With `skip_existing`, emails that already exist are left alone
    /// (`ON CONFLICT DO NOTHING`); otherwise any of them aborts the whole
    /// import. `progress` is called after each row. Returns how many were
    /// inserted.
    pub async fn import_users(
        &self,
        users: &[User],
        skip_existing: bool,
        now: i64,
        audit: &AuditEvent,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, StoreError> {
        let sql = if skip_existing {
            "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, $5, $5) ON CONFLICT (email) DO NOTHING"
        } else {
            "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, $5, $5)"
        };
        let result: Result<u64, sqlx::Error> = with_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut inserted = 0u64;
            for user in users {
                inserted += sqlx::query(sql)
                    .bind(&user.id)
                    .bind(&user.email)
                    .bind(&user.password_hash)
                    .bind(&user.roles)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                progress(1);
            }
            let event = audit.clone().with("imported", inserted).with("skipped", users.len() as u64 - inserted);
            insert_audit!(tx, event, now);
            tx.commit().await?;
            Ok(inserted)
        }.await);
        match result {
            Ok(n) => Ok(n),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Live sessions (not revoked, not expired).
    pub async fn count_active_sessions(&self, now: i64) -> Result<i64, StoreError> {
        let n = with_pool!(self, pool => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(pool)
        .await?);
        Ok(n)
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

impl RevokeScope<'_> {
    /// Whether revoking `ended` under this scope changed anything: a global
    /// revocation always does (it moves the user's not-before).
    pub fn changed(scope: RevokeScope<'_>, ended: &[String]) -> bool {
        !ended.is_empty() || matches!(scope, RevokeScope::All)
    }
}

/// Which of a user's sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope<'a> {
    /// Just this one.
    Only(&'a str),
    /// All but this one.
    AllExcept(&'a str),
    /// Every session, and every access token issued so far.
    All,
}
