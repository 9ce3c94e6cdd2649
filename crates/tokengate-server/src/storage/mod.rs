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
}

impl User {
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
    /// Whether new tokens are signed with it.
    pub active: bool,
}

impl Store {
    /// Connects (creating the SQLite file and its directory if needed) and
    /// applies the migrations.
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
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                crate::keyfile::create_private_dir(dir)
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

    /// Inserts a user; `Conflict` if the email is taken.
    pub async fn create_user(&self, user: &User, now: i64) -> Result<(), StoreError> {
        let result = with_pool!(self, pool => sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.roles)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()));
        match result {
            Ok(_) => Ok(()),
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
                "SELECT id, email, password_hash, roles, not_before FROM users WHERE email = $1"
            }
            _ => "SELECT id, email, password_hash, roles, not_before FROM users WHERE id = $1",
        };
        let row = with_pool!(self, pool => sqlx::query(sql).bind(value).fetch_optional(pool).await?
            .map(|r| -> Result<User, sqlx::Error> {
                Ok(User {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    password_hash: r.try_get("password_hash")?,
                    roles: r.try_get("roles")?,
                    not_before: r.try_get("not_before")?,
                })
            })
            .transpose()?);
        Ok(row)
    }

    /// Replaces a user's password hash (rehash on login).
    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// Starts a session with its first refresh token, in one transaction.
    pub async fn create_session(
        &self,
        session: &SessionRef,
        refresh_hash: &str,
        now: i64,
        session_expires_at: i64,
        refresh_expires_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at) VALUES ($1, $2, $3, $3, $4)",
            )
            .bind(&session.id)
            .bind(&session.user_id)
            .bind(now)
            .bind(session_expires_at)
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
            tx.commit().await?;
        });
        Ok(())
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
                "SELECT user_id, last_used_at, expires_at, revoked_at FROM sessions WHERE id = $1",
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
            let reference = SessionRef { id: session_id.clone(), user_id };
            let ended = revoked_at.is_some()
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
                    tx.commit().await?;
                    Rotation::Rotated(reference)
                }
                Some(used) if rules.reuse_interval > 0 && now - used <= rules.reuse_interval => {
                    tx.commit().await?;
                    Rotation::Replayed(reference)
                }
                Some(_) => {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'refresh_token_reuse' WHERE id = $2 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Rotation::ReuseDetected(reference)
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
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
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
            let rows = sqlx::query(sql)
                .bind(now)
                .bind(reason)
                .bind(user_id)
                .bind(arg)
                .fetch_all(&mut *tx)
                .await?;
            if matches!(scope, RevokeScope::All) {
                sqlx::query("UPDATE users SET not_before = $1, updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<Vec<_>, _>>()?
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

    /// All signing keys, active first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let keys = with_pool!(self, pool => sqlx::query(
            "SELECT kid, alg, encrypted_key, active FROM signing_keys WHERE retired_at IS NULL ORDER BY active DESC, created_at DESC",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok(StoredKey {
            kid: r.try_get("kid")?,
            alg: r.try_get("alg")?,
            encrypted_key: r.try_get("encrypted_key")?,
            active: r.try_get::<i32, _>("active")? != 0,
        }))
        .collect::<Result<Vec<_>, sqlx::Error>>()?);
        Ok(keys)
    }

    /// Stores a new signing key and makes it the only active one.
    pub async fn add_active_signing_key(
        &self,
        key: &StoredKey,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE signing_keys SET active = 0 WHERE active <> 0")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, encrypted_key, created_at, active) VALUES ($1, $2, $3, $4, 1)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.encrypted_key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
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
