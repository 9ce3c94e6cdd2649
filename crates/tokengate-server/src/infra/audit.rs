//! Security events: each is a JSON log line under target `audit` and a row
//! of `audit_events`. When an event records a change (a login, a rotation,
//! a revocation) its row is written in the change's own transaction, so a
//! rolled-back change leaves no row; events without a change (a failed
//! login, a rate-limit hit) are written on their own.

use serde_json::{Map, Value};

/// One security event. Details never hold a token, password or secret.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// What happened, e.g. `login_succeeded`.
    pub kind: &'static str,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// Anything else worth keeping (a reason, a scope, an actor).
    pub detail: Map<String, Value>,
}

/// Event kinds logged at warning level: failures and attacks.
const WARNINGS: &[&str] = &[
    "login_failed",
    "login_rate_limited",
    "request_budget_exceeded",
    "refresh_reuse_detected",
    "password_change_failed",
    "csrf_refused",
];

impl AuditEvent {
    /// A new event of this kind.
    pub fn new(kind: &'static str) -> Self {
        AuditEvent {
            kind,
            user_id: None,
            session_id: None,
            ip: None,
            detail: Map::new(),
        }
    }

    /// Sets the user.
    pub fn user(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the session.
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Sets the client address.
    pub fn ip(mut self, ip: impl ToString) -> Self {
        self.ip = Some(ip.to_string());
        self
    }

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The details as JSON text, for the row.
    pub fn detail_json(&self) -> String {
        Value::Object(self.detail.clone()).to_string()
    }

    /// Writes the log line.
    pub fn log(&self) {
        let detail = self.detail_json();
        let user = self.user_id.as_deref().unwrap_or("");
        let session = self.session_id.as_deref().unwrap_or("");
        let ip = self.ip.as_deref().unwrap_or("");
        if WARNINGS.contains(&self.kind) {
            tracing::warn!(target: "audit", event = self.kind, user_id = user, session_id = session, ip, detail = %detail);
        } else {
            tracing::info!(target: "audit", event = self.kind, user_id = user, session_id = session, ip, detail = %detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_serialises() {
        let e = AuditEvent::new("logout")
            .user("u1")
            .session("s1")
            .ip("127.0.0.1")
            .with("scope", "local");
        assert_eq!(e.detail_json(), r#"{"scope":"local"}"#);
        assert_eq!(e.user_id.as_deref(), Some("u1"));
    }
}
