//! Logout in its three scopes, and ending one session: the store revokes,
//! then the denylist learns of it.

use std::net::IpAddr;

use super::Sessions;
use crate::domain::RefreshToken;
use crate::infra::audit::AuditEvent;
use crate::service::ServiceError;
use crate::store::RevokeScope;

/// Which sessions a logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// This session.
    Local,
    /// Every other session of the user.
    Others,
    /// Every session, and every access token issued so far.
    Global,
}

impl LogoutScope {
    /// `local` (the default), `others` or `global`.
    pub fn parse(scope: Option<&str>) -> Result<LogoutScope, ServiceError> {
        match scope.unwrap_or("local") {
            "local" => Ok(LogoutScope::Local),
            "others" => Ok(LogoutScope::Others),
            "global" => Ok(LogoutScope::Global),
            _ => Err(ServiceError::Invalid {
                field: "scope",
                detail: "scope must be local, others or global".into(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            LogoutScope::Local => "local",
            LogoutScope::Others => "others",
            LogoutScope::Global => "global",
        }
    }
}

impl Sessions {
    /// Logs `user_id` out of session `sid` (local), of every other session,
    /// or of everything including access tokens already issued (global).
    pub async fn logout(
        &self,
        user_id: &str,
        sid: &str,
        scope: LogoutScope,
        client: IpAddr,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now().as_secs();
        let revoke = match scope {
            LogoutScope::Local => RevokeScope::Only(sid),
            LogoutScope::Others => RevokeScope::AllExcept(sid),
            LogoutScope::Global => RevokeScope::All,
        };
        let event = AuditEvent::new("logout")
            .user(user_id)
            .session(sid)
            .ip(client)
            .with("scope", scope.name());
        let ended = self
            .store
            .revoke_sessions(user_id, revoke, now, &event)
            .await?;
        if RevokeScope::changed(revoke, &ended) {
            event.with("sessions_ended", ended.len()).log();
        }
        if scope == LogoutScope::Local {
            // Also when the session row was already gone: the token must die.
            self.denylist.deny_session(sid, now).await;
        }
        self.denylist.deny_sessions(&ended, now).await;
        if scope == LogoutScope::Global {
            self.denylist.deny_user_before(user_id, now).await;
        }
        Ok(())
    }

    /// Logs out by a refresh token instead of an access token: a browser
    /// in cookie mode whose access cookie has expired still holds its
    /// refresh cookie, and signing out must end the session, not only
    /// forget the cookies. The token must be the session's current one and
    /// the session live (a used or stale token, which the holder could not
    /// refresh with either, ends nothing: `InvalidGrant`); then it is
    /// [`Sessions::logout`] of that session. A token used within
    /// `refresh_reuse_interval` still counts (a tab refreshed while another
    /// signs out: the refresh's new cookies must not outlive the logout).
    /// Nothing is used up.
    pub async fn logout_by_refresh_token(
        &self,
        presented: &str,
        scope: LogoutScope,
        client: IpAddr,
    ) -> Result<(), ServiceError> {
        let token = RefreshToken::parse(presented).ok_or(ServiceError::InvalidGrant)?;
        let rules = self.rotation_rules(self.clock.now().as_secs());
        let session = self
            .store
            .live_session_of_current_refresh_token(&token.stored_hash(), rules)
            .await?
            .ok_or(ServiceError::InvalidGrant)?;
        self.logout(&session.user_id, &session.id, scope, client)
            .await
    }

    /// Ends one of `user_id`'s sessions; `NotFound` when it is not theirs,
    /// already ended, or unknown (one answer for all).
    pub async fn end_session(
        &self,
        user_id: &str,
        sid: &str,
        client: IpAddr,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now().as_secs();
        let event = AuditEvent::new("session_revoked")
            .user(user_id)
            .session(sid)
            .ip(client)
            .with("by", "user");
        let ended = self
            .store
            .revoke_sessions(user_id, RevokeScope::Only(sid), now, &event)
            .await?;
        if ended.is_empty() {
            return Err(ServiceError::NotFound);
        }
        event.log();
        self.denylist.deny_session(sid, now).await;
        Ok(())
    }
}
