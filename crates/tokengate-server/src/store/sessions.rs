//! Sessions and their refresh tokens: starting a session, rotating its
//! refresh token, revoking, listing and counting sessions.

use sqlx::Row;

use super::users::{User, user_from_row};
use super::{Store, StoreError};
use crate::domain::{SessionId, UserId};
use crate::infra::audit::AuditEvent;

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
    pub async fn rotate_refresh(
        &self,
        hash: &str,
        child_hash: &str,
        rules: RotationRules,
        ip: &str,
    ) -> Result<Rotation, StoreError> {
        let now = rules.now;
        let outcome = with_pool!(self, pool => {
            let _turn = self.write_turn().await;
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
            // The owner comes with the session: the new access token's
            // claims need it, and one statement less is two thread hand-offs
            // less on SQLite (docs/BENCHMARKS.md, refresh).
            let session = sqlx::query(
                "SELECT s.user_id, s.last_used_at, s.expires_at AS session_expires_at, s.revoked_at, s.user_epoch, \
                 u.id, u.email, u.password_hash, u.roles, u.not_before, u.disabled, u.created_at, u.session_epoch \
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
            )
            .bind(&session_id)
            .fetch_optional(&mut *tx)
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
            match used_at {
                _ if ended => {
                    tx.rollback().await?;
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
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&session_id)
                        .execute(&mut *tx)
                        .await?;
                    let outcome = Rotation::Rotated { session: reference, user, child_expires_at };
                    if let Some(event) = outcome.audit_event(ip) {
                        insert_audit!(tx, event, now);
                    }
                    tx.commit().await?;
                    outcome
                }
                Some(used) if rules.reuse_interval > 0 && now - used <= rules.reuse_interval => {
                    // The child this token was rotated into, as stored then.
                    let child_expires_at = sqlx::query_scalar::<_, i64>(
                        "SELECT expires_at FROM refresh_tokens WHERE hash = $1",
                    )
                    .bind(child_hash)
                    .fetch_optional(&mut *tx)
                    .await?
                    .unwrap_or((used + rules.refresh_ttl).min(session_expires_at));
                    let outcome = Rotation::Replayed { session: reference, user, child_expires_at };
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
