//! Revoked access tokens: a denylist of session ids and a per-user "not
//! before", each kept only as long as an access token could still be alive.
//! One trait; in-process now, Redis when several instances share it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed future, so the trait stays object-safe for other backends.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where revocations of live access tokens are kept.
pub trait Revocations: Send + Sync + 'static {
    /// Rejects access tokens of session `sid` until `expires_at`.
    fn revoke_session<'a>(&'a self, sid: &'a str, expires_at: i64) -> BoxFuture<'a, ()>;
    /// Rejects access tokens of `user_id` issued before `before`, until `expires_at`.
    fn revoke_user_before<'a>(
        &'a self,
        user_id: &'a str,
        before: i64,
        expires_at: i64,
    ) -> BoxFuture<'a, ()>;
    /// Whether a token of this session and user, issued at `iat`, is revoked at `now`.
    fn is_revoked<'a>(
        &'a self,
        sid: Option<&'a str>,
        user_id: &'a str,
        iat: i64,
        now: i64,
    ) -> BoxFuture<'a, bool>;
}

/// The single-process denylist. Entries expire with the tokens they block;
/// expired ones are swept as new ones arrive, so memory stays bounded by
/// the revocations of one access-token lifetime.
#[derive(Default)]
pub struct InProcessRevocations {
    sessions: Mutex<HashMap<String, i64>>,
    users: Mutex<HashMap<String, (i64, i64)>>,
}

fn sweep<V>(map: &mut HashMap<String, V>, now: i64, expires: impl Fn(&V) -> i64) {
    if map.len() % 256 == 255 {
        map.retain(|_, v| expires(v) > now);
    }
}

impl Revocations for InProcessRevocations {
    fn revoke_session<'a>(&'a self, sid: &'a str, expires_at: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(mut map) = self.sessions.lock() {
                sweep(&mut map, expires_at - 86_400 * 2, |e| *e);
                let entry = map.entry(sid.to_owned()).or_insert(expires_at);
                *entry = (*entry).max(expires_at);
            }
        })
    }

    fn revoke_user_before<'a>(
        &'a self,
        user_id: &'a str,
        before: i64,
        expires_at: i64,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(mut map) = self.users.lock() {
                sweep(&mut map, expires_at - 86_400 * 2, |e| e.1);
                let entry = map
                    .entry(user_id.to_owned())
                    .or_insert((before, expires_at));
                *entry = (entry.0.max(before), entry.1.max(expires_at));
            }
        })
    }

    fn is_revoked<'a>(
        &'a self,
        sid: Option<&'a str>,
        user_id: &'a str,
        iat: i64,
        now: i64,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            // A poisoned lock means a panic elsewhere: fail closed.
            let session_revoked = match (sid, self.sessions.lock()) {
                (Some(sid), Ok(map)) => map.get(sid).is_some_and(|exp| *exp > now),
                (None, Ok(_)) => false,
                (_, Err(_)) => true,
            };
            let user_revoked = match self.users.lock() {
                Ok(map) => map
                    .get(user_id)
                    .is_some_and(|(before, exp)| *exp > now && iat < *before),
                Err(_) => true,
            };
            session_revoked || user_revoked
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_and_users_are_revoked_until_expiry() {
        let r = InProcessRevocations::default();
        r.revoke_session("s1", 1_000).await;
        assert!(r.is_revoked(Some("s1"), "u", 0, 999).await);
        assert!(
            !r.is_revoked(Some("s1"), "u", 0, 1_000).await,
            "expired with the token"
        );
        assert!(!r.is_revoked(Some("s2"), "u", 0, 999).await);
        r.revoke_user_before("u", 500, 1_000).await;
        assert!(r.is_revoked(Some("s2"), "u", 499, 600).await);
        assert!(
            !r.is_revoked(Some("s2"), "u", 500, 600).await,
            "issued after the logout"
        );
        assert!(!r.is_revoked(Some("s2"), "other", 10, 600).await);
    }
}
