//! The revocation hook: checked after the signature and the claims, on every
//! request. A JWT is valid until its `exp` by construction; logging out
//! before then needs a denylist the verifier consults. Three ways to revoke,
//! each kept only as long as a token it covers could still verify:
//! a session (`sid`), one token (`jti`), or every token of a user (`sub`)
//! issued before a moment (`iat` earlier than it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::time::UnixTime;

/// A boxed future, so that the hooks stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a revocation check looks at, read from the verified claims.
#[derive(Debug, Clone, Copy)]
pub struct RevocationQuery<'a> {
    /// `sub` (empty when absent).
    pub sub: &'a str,
    /// `sid`, the session, if the token has one.
    pub sid: Option<&'a str>,
    /// `jti`, the token's id, if it has one.
    pub jti: Option<&'a str>,
    /// `iat`, when the token was issued, if it says.
    pub iat: Option<i64>,
}

/// The revocation store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct RevocationError(pub String);

/// Answers whether a verified token has been revoked.
pub trait Revocations: Send + Sync + 'static {
    /// Whether the token described by `token` is revoked at `now`. An error
    /// means "cannot tell"; the guard then fails closed unless told otherwise.
    fn is_revoked<'a>(
        &'a self,
        token: RevocationQuery<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>>;
}

/// A revocation store that can also be written: the issuer's side.
/// `until` is when the entry may be forgotten — past the last moment a
/// covered token could verify (its latest `exp` plus the verifier's leeway).
pub trait RecordRevocations: Revocations {
    /// Revokes every token of session `sid`.
    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;

    /// Revokes the one token `jti`.
    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;

    /// Revokes the tokens of `sub` issued before `before`.
    fn revoke_user_before<'a>(
        &'a self,
        sub: &'a str,
        before: i64,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>>;

    /// Begins a pass that writes every revocation that matters anew, for
    /// [`RecordRevocations::mark_complete`]. The default does nothing (a
    /// store that cannot lose entries on its own).
    fn begin_complete(&self) -> BoxFuture<'_, Result<u64, RevocationError>> {
        Box::pin(async { Ok(0) })
    }

    /// Says that the pass `pass` wrote every revocation that matters, for
    /// the next `valid_for` seconds: a shared store that lost its data
    /// (restarted empty, even during the pass) then reads as "cannot tell"
    /// rather than "nothing revoked". The default does nothing.
    fn mark_complete(
        &self,
        pass: u64,
        valid_for: i64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        let _ = (pass, valid_for);
        Box::pin(async { Ok(()) })
    }
}

/// No revocation: purely stateless verification. A stolen or logged-out
/// token keeps working until its `exp`, so keep access tokens short (the
/// tokengate service issues 15-minute ones) — that is the trade-off.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRevocations;

impl Revocations for NoRevocations {
    fn is_revoked<'a>(
        &'a self,
        _token: RevocationQuery<'a>,
        _now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async { Ok(false) })
    }
}

/// A denylist in this process's memory: for one instance, or fed by a
/// sync from a shared store. Entries are forgotten once past their `until`;
/// expired ones are swept as new ones arrive, so memory stays bounded by the
/// revocations of one token lifetime.
#[derive(Debug)]
pub struct InProcessRevocations {
    sessions: Mutex<HashMap<String, i64>>,
    tokens: Mutex<HashMap<String, i64>>,
    /// `sub` → (before, until).
    users: Mutex<HashMap<String, (i64, i64)>>,
    /// The latest `now` a check was asked about. Writes carry no time of
    /// their own (`until` says nothing of the present: an entry may be kept
    /// for a week), so the sweep forgets only what ended before a moment
    /// that has certainly come.
    latest_now: AtomicI64,
}

impl Default for InProcessRevocations {
    fn default() -> Self {
        InProcessRevocations {
            sessions: Mutex::default(),
            tokens: Mutex::default(),
            users: Mutex::default(),
            latest_now: AtomicI64::new(i64::MIN),
        }
    }
}

/// Drops entries that ended by `now`, once every 256 insertions.
fn sweep<V>(map: &mut HashMap<String, V>, now: i64, until: impl Fn(&V) -> i64) {
    if map.len() % 256 == 255 {
        map.retain(|_, v| until(v) > now);
    }
}

/// A lock poisoned by a panic elsewhere cannot be trusted: answer "cannot tell".
fn poisoned<T>(_: T) -> RevocationError {
    RevocationError("in-process denylist lock poisoned".to_owned())
}

impl InProcessRevocations {
    fn record(
        &self,
        map: &Mutex<HashMap<String, i64>>,
        id: &str,
        until: i64,
    ) -> Result<(), RevocationError> {
        let mut map = map.lock().map_err(poisoned)?;
        sweep(&mut map, self.latest_now.load(Ordering::Relaxed), |e| *e);
        let entry = map.entry(id.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }

    fn holds(
        map: &Mutex<HashMap<String, i64>>,
        id: Option<&str>,
        now: i64,
    ) -> Result<bool, RevocationError> {
        let map = map.lock().map_err(poisoned)?;
        Ok(id.is_some_and(|id| map.get(id).is_some_and(|until| *until > now)))
    }
}

impl Revocations for InProcessRevocations {
    fn is_revoked<'a>(
        &'a self,
        token: RevocationQuery<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, RevocationError>> {
        Box::pin(async move {
            let now = now.as_secs();
            self.latest_now.fetch_max(now, Ordering::Relaxed);
            if Self::holds(&self.sessions, token.sid, now)?
                || Self::holds(&self.tokens, token.jti, now)?
            {
                return Ok(true);
            }
            let users = self.users.lock().map_err(poisoned)?;
            Ok(users.get(token.sub).is_some_and(|(before, until)| {
                // A token that does not say when it was issued could be
                // from before: revoked.
                *until > now && token.iat.is_none_or(|iat| iat < *before)
            }))
        })
    }
}

impl RecordRevocations for InProcessRevocations {
    fn revoke_session<'a>(
        &'a self,
        sid: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move { self.record(&self.sessions, sid, until) })
    }

    fn revoke_token<'a>(
        &'a self,
        jti: &'a str,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move { self.record(&self.tokens, jti, until) })
    }

    fn revoke_user_before<'a>(
        &'a self,
        sub: &'a str,
        before: i64,
        until: i64,
    ) -> BoxFuture<'a, Result<(), RevocationError>> {
        Box::pin(async move {
            let mut users = self.users.lock().map_err(poisoned)?;
            sweep(&mut users, self.latest_now.load(Ordering::Relaxed), |e| e.1);
            let entry = users.entry(sub.to_owned()).or_insert((before, until));
            *entry = (entry.0.max(before), entry.1.max(until));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_entries_are_swept_once_a_check_has_seen_their_end() {
        let r = InProcessRevocations::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..300 {
                r.revoke_session(&format!("s{i}"), 1_000).await.unwrap();
            }
            // No check has seen time pass: nothing may be forgotten.
            assert_eq!(r.sessions.lock().unwrap().len(), 300);
            let query = RevocationQuery {
                sub: "u",
                sid: Some("s0"),
                jti: None,
                iat: Some(0),
            };
            assert!(
                !r.is_revoked(query, UnixTime::from_secs(1_000))
                    .await
                    .unwrap()
            );
            for i in 300..512 {
                r.revoke_session(&format!("s{i}"), 5_000).await.unwrap();
            }
            let left = r.sessions.lock().unwrap().len();
            assert!(left < 300, "the ended 300 were swept, {left} left");
            assert!(
                r.is_revoked(
                    RevocationQuery {
                        sid: Some("s400"),
                        ..query
                    },
                    UnixTime::from_secs(1_001)
                )
                .await
                .unwrap()
            );
        });
    }
}
