//! Users: the account rows, their lookup, listing, import and changes
//! (roles, disabling, password hashes).

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{Roles, UserId};
use crate::infra::audit::AuditEvent;

/// A user row.
#[derive(Debug, Clone)]
pub struct User {
    /// Opaque id (the `sub` claim).
    pub id: UserId,
    /// Normalised email.
    pub email: String,
    /// PHC-format hash (argon2id, or bcrypt for imported users).
    pub password_hash: String,
    /// Roles.
    pub roles: Roles,
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
    pub fn new(email: &str, password_hash: String, roles: &Roles) -> Option<User> {
        Some(User {
            id: UserId::random()?,
            email: email.to_owned(),
            password_hash,
            roles: roles.clone(),
            not_before: None,
            disabled: false,
            created_at: 0,
            session_epoch: 0,
        })
    }
}

pub(super) fn user_from_row<R: Row>(r: &R) -> Result<User, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    i32: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
    i64: for<'d> sqlx::Decode<'d, R::Database> + sqlx::Type<R::Database>,
{
    Ok(User {
        id: UserId::from(r.try_get::<String, _>("id")?),
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        roles: Roles::from_stored(&r.try_get::<String, _>("roles")?),
        not_before: r.try_get("not_before")?,
        disabled: r.try_get::<i32, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
        session_epoch: r.try_get("session_epoch")?,
    })
}

impl Store {
    /// Inserts a user and its audit row; `Conflict(Unique::Email)` if the
    /// email is taken, `Conflict(Unique::UserId)` if the id is (and then no
    /// row is written).
    pub async fn create_user(
        &self,
        user: &User,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(user.id.as_str())
            .bind(&user.email)
            .bind(&user.password_hash)
            .bind(user.roles.stored())
            .bind(i32::from(user.disabled))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_audit!(tx, audit, now);
            tx.commit().await?;
        });
        Ok(())
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

    /// Replaces a user's password hash with a stronger one of the same
    /// password (the rehash at login), with its audit row — only if the
    /// stored hash is still `replaces`. A password change committed while
    /// the login was hashing must win: the login's hash is of the old
    /// password. Returns whether the hash was replaced.
    pub async fn upgrade_password_hash(
        &self,
        user_id: &str,
        replaces: &str,
        hash: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let replaced = with_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND password_hash = $4",
            )
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .bind(replaces)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tx.rollback().await?;
                false
            } else {
                insert_audit!(tx, audit, now);
                tx.commit().await?;
                true
            }
        });
        Ok(replaced)
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
            let _turn = self.write_turn().await;
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
        roles: Option<&Roles>,
        disabled: Option<bool>,
        now: i64,
        audit: &AuditEvent,
    ) -> Result<Option<(User, Vec<String>)>, StoreError> {
        let result = with_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            if disabled == Some(true) {
                bump_session_epoch!(tx, user_id, now);
            }
            let updated = sqlx::query(
                "UPDATE users SET roles = COALESCE(CAST($1 AS TEXT), roles), disabled = COALESCE(CAST($2 AS INTEGER), disabled), updated_at = $3 WHERE id = $4",
            )
            .bind(roles.map(Roles::stored))
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
            }
            // Disabling voids every access token issued so far; so does a
            // change of roles, whose old values the tokens carry (and
            // forward-auth trusts). `now + 1`: tokens of this very second
            // too; other instances read it in their revocation sync.
            if disabled == Some(true) || roles.is_some() {
                sqlx::query("UPDATE users SET not_before = CASE WHEN not_before IS NULL OR not_before < $1 THEN $1 ELSE not_before END WHERE id = $2")
                    .bind(now + 1)
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

    /// Raises `user_id`'s `not_before` to `before` (never lowers it): the
    /// access tokens issued earlier are void, on every instance's sync.
    pub async fn raise_not_before(&self, user_id: &str, before: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        with_pool!(self, pool => {
            sqlx::query("UPDATE users SET not_before = CASE WHEN not_before IS NULL OR not_before < $1 THEN $1 ELSE not_before END WHERE id = $2")
                .bind(before)
                .bind(user_id)
                .execute(pool)
                .await?;
        });
        Ok(())
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
    /// import (`Conflict(Unique::Email)`). `progress` is called after each
    /// row. Returns how many were inserted.
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
        let inserted = with_pool!(self, pool => {
            let _turn = self.write_turn().await;
            let mut tx = pool.begin().await?;
            let mut inserted = 0u64;
            for user in users {
                inserted += sqlx::query(sql)
                    .bind(user.id.as_str())
                    .bind(&user.email)
                    .bind(&user.password_hash)
                    .bind(user.roles.stored())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                progress(1);
            }
            let event = audit.clone().with("imported", inserted).with("skipped", users.len() as u64 - inserted);
            insert_audit!(tx, event, now);
            tx.commit().await?;
            inserted
        });
        Ok(inserted)
    }
}
