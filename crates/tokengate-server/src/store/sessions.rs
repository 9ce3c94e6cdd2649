//! Sessions and their refresh tokens: starting a session, rotating its
//! refresh token, revoking, listing and counting sessions.

use std::sync::Arc;

use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::users::{User, user_from_row};
use super::{Pool, Store, StoreError};
use crate::domain::{SessionId, UserId};
use crate::infra::audit::AuditEvent;

/// One rotation inside the caller's transaction `$tx`: evaluates to
/// `Result<Rotation, StoreError>` and never commits or rolls back, so a
/// transaction may hold one rotation (PostgreSQL) or a batch (SQLite). An
/// outcome that changes nothing leaves the rows as they were.
macro_rules! rotate_in {
    ($tx:ident, $hash:expr, $child_hash:expr, $rules:expr, $ip:expr) => {
        async {
            let hash: &str = $hash;
            let child_hash: &str = $child_hash;
            let rules: RotationRules = $rules;
            let ip: &str = $ip;
            let now = rules.now;
                // Writing first takes the write lock at once (SQLite) or the row
                // lock (PostgreSQL), so the loser of a race waits, then re-reads.
                let won = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING session_id",
                )
                .bind(now)
                .bind(hash)
                .fetch_optional(&mut *$tx)
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
                        .fetch_optional(&mut *$tx)
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
                // The owner comes with the session: the new access token's
                // claims need it, and one statement less is two thread hand-offs
                // less on SQLite (docs/BENCHMARKS.md, refresh).
                let session = sqlx::query(
                    "SELECT s.user_id, s.last_used_at, s.expires_at AS session_expires_at, s.revoked_at, s.user_epoch, \
                     u.id, u.email, u.password_hash, u.roles, u.not_before, u.disabled, u.created_at, u.session_epoch \
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
                )
                .bind(&session_id)
                .fetch_optional(&mut *$tx)
                .await?;
                let Some(session) = session else {
                    return Ok(Rotation::Invalid);
                };
                let user = Box::new(user_from_row(&session)?);
                let last_used_at: i64 = session.try_get("last_used_at")?;
                let session_expires_at: i64 = session.try_get("session_expires_at")?;
                let revoked_at: Option<i64> = session.try_get("revoked_at")?;
                let void = session.try_get::<i64, _>("user_epoch")? != user.session_epoch || user.disabled;
                let reference = SessionRef { id: SessionId::from(session_id.clone()), user_id: user.id.clone() };
                let ended = revoked_at.is_some()
                    || void
                    || session_expires_at <= now
                    || now - last_used_at > rules.idle_timeout;
                let outcome = match used_at {
                    _ if ended => {
                        if used_at.is_none() {
                            // This presentation marked the token used: unmark
                            // it (what a rollback would do, kept inside the
                            // transaction so a batch of rotations can share it).
                            sqlx::query("UPDATE refresh_tokens SET used_at = NULL WHERE hash = $1")
                                .bind(hash)
                                .execute(&mut *$tx)
                                .await?;
                        }
                        Rotation::SessionEnded
                    }
                    None => {
                        let child_expires_at = (now + rules.refresh_ttl).min(session_expires_at);
                        sqlx::query(
                            "INSERT INTO refresh_tokens (hash, session_id, parent_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(child_hash)
                        .bind(&session_id)
                        .bind(hash)
                        .bind(now)
                        .bind(child_expires_at)
                        .execute(&mut *$tx)
                        .await?;
                        sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                            .bind(now)
                            .bind(&session_id)
                            .execute(&mut *$tx)
                            .await?;
                        let outcome = Rotation::Rotated { session: reference, user, child_expires_at };
                        if let Some(event) = outcome.audit_event(ip) {
                            insert_audit!($tx, event, now);
                        }
                        outcome
                    }
                    Some(used) if rules.reuse_interval > 0 && now - used <= rules.reuse_interval => {
                        // The child this token was rotated into, as stored then.
                        let child_expires_at = sqlx::query_scalar::<_, i64>(
                            "SELECT expires_at FROM refresh_tokens WHERE hash = $1",
                        )
                        .bind(child_hash)
                        .fetch_optional(&mut *$tx)
                        .await?
                        .unwrap_or((used + rules.refresh_ttl).min(session_expires_at));
                        let outcome = Rotation::Replayed { session: reference, user, child_expires_at };
                        if let Some(event) = outcome.audit_event(ip) {
                            insert_audit!($tx, event, now);
                        }
                        outcome
                    }
                    Some(_) => {
                        sqlx::query(
                            "UPDATE sessions SET revoked_at = $1, revoked_reason = 'refresh_token_reuse' WHERE id = $2 AND revoked_at IS NULL",
                        )
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *$tx)
                        .await?;
                        let outcome = Rotation::ReuseDetected(reference);
                        if let Some(event) = outcome.audit_event(ip) {
                            insert_audit!($tx, event, now);
                        }
                        outcome
                    }
                };
            Ok::<Rotation, StoreError>(outcome)
        }
        .await
    };
}

/// A session (a refresh-token family) as rotation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// Session id (the `sid` claim).
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// The token was live: it is now used and its child is stored, to
    /// expire at `child_expires_at` (never after the session).
    Rotated {
        /// The session.
        session: SessionRef,
        /// Its owner, read in the rotation's transaction (what the new
        /// access token says about them is what held when it rotated).
        user: Box<User>,
        /// When the child expires (Unix seconds).
        child_expires_at: i64,
    },
    /// The token was already used, within the reuse interval: answer again
    /// with the same child (a concurrent refresh from a second tab).
    Replayed {
        /// The session.
        session: SessionRef,
        /// Its owner, read in the same transaction.
        user: Box<User>,
        /// When the child expires (Unix seconds).
        child_expires_at: i64,
    },
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
            Rotation::Rotated { session, .. } => ("refresh_rotated", session),
            Rotation::Replayed { session, .. } => ("refresh_replayed_within_interval", session),
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
#[derive(Debug, Clone)]
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

/// One rotation waiting for its batch.
pub(super) struct RotationJob {
    hash: String,
    child_hash: String,
    rules: RotationRules,
    ip: String,
}

type RotationReply = oneshot::Sender<Result<Rotation, StoreError>>;

/// The most rotations one SQLite transaction holds.
const MAX_ROTATIONS_PER_COMMIT: usize = 64;

/// Group commit of refresh rotations on SQLite. With `synchronous=FULL`
/// every commit waits for the disk (an fsync of the WAL), and SQLite has one
/// writer: committed one by one, rotations queue behind each other's fsync
/// while the core idles (docs/BENCHMARKS.md, refresh). One task takes the
/// rotations waiting at that moment, runs each in turn inside one
/// transaction (each checks and writes its rows exactly as it would alone,
/// seeing those before it), commits once, and only then answers them all:
/// nothing is acknowledged before it is durable. PostgreSQL groups
/// concurrent commits itself and keeps one transaction per rotation.
#[derive(Clone)]
pub(super) struct RotationBatches {
    jobs: mpsc::Sender<(RotationJob, RotationReply)>,
}

impl RotationBatches {
    /// Starts the batching task; it ends when the last sender (the last
    /// `Store` clone) is dropped.
    pub(super) fn start(pool: SqlitePool, writer: Arc<tokio::sync::Mutex<()>>) -> RotationBatches {
        Self::start_with(move |batch| {
            let (pool, writer) = (pool.clone(), Arc::clone(&writer));
            async move { commit_rotations(&pool, &writer, batch).await }
        })
    }

    /// [`RotationBatches::start`] with `run` committing each batch (tests
    /// put a failing one in its place).
    fn start_with<F, Fut>(run: F) -> RotationBatches
    where
        F: Fn(Vec<(RotationJob, RotationReply)>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (jobs, mut queue) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_ROTATIONS_PER_COMMIT);
            while queue.recv_many(&mut batch, MAX_ROTATIONS_PER_COMMIT).await > 0 {
                // Each batch on a task of its own. Should one panic (a bug),
                // its callers get 503 (their answers are dropped), its
                // transaction rolls back and the turn is released as it
                // unwinds, and the next batch runs. Run in this loop, a panic
                // would end the loop: every later refresh a 503 until a
                // restart, while the health check, which reads, stays green.
                let done = tokio::spawn(run(std::mem::take(&mut batch))).await;
                if done.is_err_and(|failed| failed.is_panic()) {
                    tracing::error!(
                        "a batch of refresh rotations panicked: its callers were answered 503"
                    );
                }
            }
        });
        RotationBatches { jobs }
    }

    async fn rotate(&self, job: RotationJob) -> Result<Rotation, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs.send((job, reply)).await.map_err(|_| {
            StoreError::Interrupted("the task committing refresh rotations has stopped")
        })?;
        outcome.await.map_err(|_| {
            StoreError::Interrupted("a batch of refresh rotations ended without an answer")
        })?
    }
}

/// Runs a batch in one transaction and answers each rotation after the
/// commit. If any statement or the commit fails, nothing of the batch is
/// written; each rotation then runs again alone, so each gets its own
/// answer and one failure is not everyone's. Rotations whose callers have
/// gone by the time they would start are left out.
async fn commit_rotations(
    pool: &SqlitePool,
    writer: &tokio::sync::Mutex<()>,
    mut batch: Vec<(RotationJob, RotationReply)>,
) {
    let turn = writer.lock().await;
    // A rotation whose caller has gone (the request timed out or the client
    // hung up while it waited) is not run, as a request dropped before its
    // own transaction committed changed nothing. Run, it would spend the
    // token with the child unseen: the client's retry after the reuse
    // interval would then end the session as a stolen token's.
    batch.retain(|(_, reply)| !reply.is_closed());
    if batch.is_empty() {
        return;
    }
    let together = async {
        let mut tx = pool.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (job, _) in &batch {
            outcomes.push(rotate_in!(
                tx,
                &job.hash,
                &job.child_hash,
                job.rules,
                &job.ip
            )?);
        }
        tx.commit().await?;
        Ok::<_, StoreError>(outcomes)
    }
    .await;
    drop(turn);
    match together {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away while the batch ran finds its
                // rotation done, like one whose answer was lost: a retry
                // within the reuse interval gets the same child.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some((_, reply)) = batch.into_iter().next() {
                let _ = reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, rotations = batch.len(), "a batch of refresh rotations failed; each runs again alone");
            for (job, reply) in batch {
                let _turn = writer.lock().await;
                if reply.is_closed() {
                    continue;
                }
                let alone = async {
                    let mut tx = pool.begin().await?;
                    let outcome = rotate_in!(tx, &job.hash, &job.child_hash, job.rules, &job.ip)?;
                    tx.commit().await?;
                    Ok::<_, StoreError>(outcome)
                }
                .await;
                let _ = reply.send(alone);
            }
        }
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

impl RevokeScope<'_> {
    /// Whether revoking `ended` under this scope changed anything: a global
    /// revocation always does (it moves the user's not-before).
    pub fn changed(scope: RevokeScope<'_>, ended: &[String]) -> bool {
        !ended.is_empty() || matches!(scope, RevokeScope::All)
    }
}

impl Store {
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
            let _turn = self.write_turn().await;
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
    ///
    /// On SQLite the rotations waiting at one moment share one transaction
    /// (group commit, [`RotationBatches`]): each is checked and written in
    /// turn exactly as it would be alone, and all are acknowledged after
    /// the one commit that makes them durable.
    pub async fn rotate_refresh(
        &self,
        hash: &str,
        child_hash: &str,
        rules: RotationRules,
        ip: &str,
    ) -> Result<Rotation, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => {
                let Some(batches) = &self.rotation_batches else {
                    return Err(StoreError::Interrupted(
                        "this SQLite store has no queue of refresh rotations",
                    ));
                };
                batches
                    .rotate(RotationJob {
                        hash: hash.to_owned(),
                        child_hash: child_hash.to_owned(),
                        rules,
                        ip: ip.to_owned(),
                    })
                    .await
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let outcome = rotate_in!(tx, hash, child_hash, rules, ip)?;
                match outcome {
                    // Nothing to keep (an ended session's token is unmarked
                    // already): a rollback, as before group commit, rather
                    // than a commit that waits for a WAL flush each time a
                    // client replays a dead session's token.
                    Rotation::SessionEnded | Rotation::Invalid => tx.rollback().await?,
                    _ => tx.commit().await?,
                }
                Ok(outcome)
            }
        }
    }

    /// The session a refresh token (by its hash) belongs to, used or not:
    /// read without changing anything, so that a request can be checked
    /// against the session before the token is presented.
    pub async fn session_of_refresh_token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let session = with_pool!(self, pool => sqlx::query(
            "SELECT session_id FROM refresh_tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get::<String, _>("session_id"))
        .transpose()?);
        Ok(session)
    }

    /// The session (and its user) a refresh token continues, when that
    /// token is the session's current one (unexpired, and unused or used
    /// within `rules.reuse_interval`: a tab that refreshed a moment ago) and
    /// the session is live (not revoked, ended, idle past the idle timeout
    /// or voided by its user's epoch): read only, for a logout by refresh
    /// cookie. A stale token names nothing.
    pub async fn live_session_of_current_refresh_token(
        &self,
        hash: &str,
        rules: RotationRules,
    ) -> Result<Option<SessionRef>, StoreError> {
        let session = with_pool!(self, pool => sqlx::query(
            "SELECT s.id, s.user_id FROM refresh_tokens r \
             JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id \
             WHERE r.hash = $1 AND (r.used_at IS NULL OR ($4 > 0 AND $2 - r.used_at <= $4)) AND r.expires_at > $2 \
             AND s.revoked_at IS NULL AND s.expires_at > $2 AND $2 - s.last_used_at <= $3 \
             AND s.user_epoch = u.session_epoch",
        )
        .bind(hash)
        .bind(rules.now)
        .bind(rules.idle_timeout)
        .bind(rules.reuse_interval)
        .fetch_optional(pool)
        .await?
        .map(|row| -> Result<SessionRef, StoreError> {
            Ok(SessionRef {
                id: SessionId::from(row.try_get::<String, _>("id")?),
                user_id: UserId::from(row.try_get::<String, _>("user_id")?),
            })
        })
        .transpose()?);
        Ok(session)
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
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            // Ending all (or all other) sessions also voids logins still in
            // flight: the epoch moves first, under the user row's lock.
            if !matches!(scope, RevokeScope::Only(_)) {
                bump_session_epoch!(tx, user_id, now);
            }
            if matches!(scope, RevokeScope::All) {
                // Never lowered: a change of roles may have set the next second.
                sqlx::query("UPDATE users SET not_before = CASE WHEN not_before IS NULL OR not_before < $1 THEN $1 ELSE not_before END, updated_at = $1 WHERE id = $2")
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Roles;

    const NOW: i64 = 1_800_000_000;

    fn rules() -> RotationRules {
        RotationRules {
            now: NOW,
            refresh_ttl: 3600,
            reuse_interval: 0,
            idle_timeout: 3600,
        }
    }

    async fn store_with_sessions(dir: &std::path::Path) -> Store {
        let url = format!("sqlite://{}", dir.join("batch.db").display());
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let roles = Roles::parse(&["user"]).unwrap_or_else(|e| panic!("{e}"));
        let user = User::new("batch@example.com", "$argon2id$x".into(), &roles)
            .unwrap_or_else(|| panic!("rng"));
        let event = AuditEvent::new("user_created");
        assert!(store.create_user(&user, NOW - 10, &event).await.is_ok());
        // Three sessions, last used 10 s ago.
        for id in ["s1", "s2", "s3"] {
            let expires_at = NOW + 3600;
            let session = SessionRef {
                id: id.into(),
                user_id: user.id.clone(),
            };
            let created = store
                .create_session(
                    &session,
                    user.session_epoch,
                    &format!("parent-of-{id}"),
                    NOW - 10,
                    expires_at,
                    expires_at,
                    &ClientInfo::default(),
                    &AuditEvent::new("login_succeeded"),
                )
                .await;
            assert_eq!(created.ok(), Some(true), "session {id}");
        }
        store
    }

    /// Rules under which a session unused for 10 s has ended (idle).
    fn idle_rules() -> RotationRules {
        RotationRules {
            idle_timeout: 5,
            ..rules()
        }
    }

    async fn used_at(store: &Store, hash: &str) -> Option<i64> {
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("SQLite only")
        };
        sqlx::query_scalar::<_, Option<i64>>("SELECT used_at FROM refresh_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    // On the test's one-thread runtime `join!` queues all three before the
    // batching task runs: they share one transaction.
    #[tokio::test]
    async fn a_failing_rotation_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = store_with_sessions(dir.path()).await;
        let (first, clash, other, ended) = tokio::join!(
            store.rotate_refresh("parent-of-s1", "child", rules(), "ip"),
            // The same child hash: a unique violation inside the batch.
            store.rotate_refresh("parent-of-s2", "child", rules(), "ip"),
            store.rotate_refresh("parent-of-s2", "child-of-s2", rules(), "ip"),
            store.rotate_refresh("parent-of-s3", "child-of-s3", idle_rules(), "ip"),
        );
        assert!(matches!(first, Ok(Rotation::Rotated { .. })), "{first:?}");
        assert!(
            matches!(
                clash,
                Err(StoreError::Conflict(crate::store::Unique::RefreshToken))
            ),
            "{clash:?}"
        );
        // The failure undid nothing of the others': each ran again alone.
        assert!(matches!(other, Ok(Rotation::Rotated { .. })), "{other:?}");
        assert!(matches!(ended, Ok(Rotation::SessionEnded)), "{ended:?}");
        assert_eq!(used_at(&store, "parent-of-s1").await, Some(NOW));
        assert_eq!(used_at(&store, "parent-of-s2").await, Some(NOW));
        // An ended session's token is left as it was, not marked used.
        assert_eq!(used_at(&store, "parent-of-s3").await, None);
    }

    #[tokio::test]
    async fn a_batch_sees_its_own_writes_one_token_rotates_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = store_with_sessions(dir.path()).await;
        let (a, b, ended) = tokio::join!(
            store.rotate_refresh("parent-of-s1", "child-a", rules(), "ip"),
            store.rotate_refresh("parent-of-s1", "child-b", rules(), "ip"),
            store.rotate_refresh("parent-of-s3", "child-of-s3", idle_rules(), "ip"),
        );
        assert!(matches!(a, Ok(Rotation::Rotated { .. })), "{a:?}");
        // No reuse interval: the second presentation is a reuse, and ends
        // the session, exactly as two separate transactions would.
        assert!(matches!(b, Ok(Rotation::ReuseDetected(_))), "{b:?}");
        assert!(matches!(ended, Ok(Rotation::SessionEnded)), "{ended:?}");
        assert_eq!(used_at(&store, "parent-of-s3").await, None);
        // And the reuse's revocation was committed with the batch.
        let again = store
            .rotate_refresh("child-a", "grandchild", rules(), "ip")
            .await;
        assert!(matches!(again, Ok(Rotation::SessionEnded)), "{again:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_run_again_alone_rotates_once_and_records_each_outcome_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = store_with_sessions(dir.path()).await;
        let grace = RotationRules {
            reuse_interval: 10,
            ..rules()
        };
        let (first, clash, second) = tokio::join!(
            store.rotate_refresh("parent-of-s1", "child-of-s1", grace, "ip"),
            // s1's child hash again: the batch fails after s1 rotated in it.
            store.rotate_refresh("parent-of-s2", "child-of-s1", grace, "ip"),
            // A second tab presenting s1's token in the same batch.
            store.rotate_refresh("parent-of-s1", "child-of-s1", grace, "ip"),
        );
        let Ok(Rotation::Rotated {
            child_expires_at: rotated,
            ..
        }) = first
        else {
            panic!("{first:?}")
        };
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
        // Run again alone, in order: the second tab sees the first's
        // committed rotation and gets the same child, not a second one.
        let Ok(Rotation::Replayed {
            child_expires_at: replayed,
            ..
        }) = second
        else {
            panic!("{second:?}")
        };
        assert_eq!(rotated, replayed);
        assert_eq!(store.counts().await.ok(), Some((1, 3, 4)));
        // The failed batch wrote no audit rows; the runs alone one each.
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("SQLite only")
        };
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, COUNT(*) FROM audit_events WHERE session_id = 's1' GROUP BY kind ORDER BY kind",
        )
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            [
                ("refresh_replayed_within_interval".to_owned(), 1),
                ("refresh_rotated".to_owned(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn a_rotation_whose_caller_left_before_its_batch_ran_is_not_done() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = store_with_sessions(dir.path()).await;
        let mut left = Box::pin(store.rotate_refresh("parent-of-s1", "child-of-s1", rules(), "ip"));
        // One poll queues the job (the channel has room) and waits for the
        // answer; on this one-thread runtime the batching task has not run.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(left.as_mut(), &mut cx).is_pending());
        // The request is dropped (a timeout, a client that hung up).
        drop(left);
        let other = store
            .rotate_refresh("parent-of-s2", "child-of-s2", rules(), "ip")
            .await;
        assert!(matches!(other, Ok(Rotation::Rotated { .. })), "{other:?}");
        // Not spent behind the client's back: its retry, even after the
        // reuse interval, rotates instead of ending the session as a theft.
        assert_eq!(used_at(&store, "parent-of-s1").await, None);
        let retry = store
            .rotate_refresh("parent-of-s1", "child-of-s1", rules(), "ip")
            .await;
        assert!(matches!(retry, Ok(Rotation::Rotated { .. })), "{retry:?}");
    }

    #[tokio::test]
    async fn a_batch_that_panics_fails_its_callers_and_later_batches_run() {
        let batches =
            RotationBatches::start_with(|batch: Vec<(RotationJob, RotationReply)>| async move {
                // A stand-in for a bug in a batch.
                if batch.iter().any(|(job, _)| job.hash == "panics") {
                    panic!("a bug in the batch");
                }
                for (_, reply) in batch {
                    let _ = reply.send(Ok(Rotation::Invalid));
                }
            });
        let job = |hash: &str| RotationJob {
            hash: hash.to_owned(),
            child_hash: format!("child-of-{hash}"),
            rules: rules(),
            ip: "ip".to_owned(),
        };
        let failed = batches.rotate(job("panics")).await;
        assert!(
            matches!(failed, Err(StoreError::Interrupted(what)) if what.contains("batch")),
            "{failed:?}"
        );
        // The batching task lives on: refreshes are not 503 until a restart.
        let later = batches.rotate(job("fine")).await;
        assert!(matches!(later, Ok(Rotation::Invalid)), "{later:?}");
    }
}
