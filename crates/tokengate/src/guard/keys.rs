//! Where a guard's verification keys come from.

use std::sync::Arc;

use super::revocation::BoxFuture;
use crate::ring::KeyRing;

/// The keys a [`Guard`](super::Guard) verifies with. A source may change its
/// keys over time (a rotating service, a remote JWKS); the guard asks for
/// the current ring on every request and drops cached verifications made
/// with an older one.
pub trait KeySource: Send + Sync + 'static {
    /// The keys to verify with now. The same `Arc` until the keys change:
    /// the verified-token cache compares rings by identity.
    fn keys(&self) -> Arc<KeyRing>;

    /// A token names `kid`, which [`KeySource::keys`] does not hold. A source
    /// that can learn new keys (a remote JWKS) fetches them — within its own
    /// rate limit, never at the token's say-so beyond that — and returns the
    /// new ring if it now holds `kid`. The default: `None`.
    fn unknown_kid<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, Option<Arc<KeyRing>>> {
        let _ = kid;
        Box::pin(async { None })
    }
}

/// A fixed key ring: keys from files, PEM or JWK, loaded once.
#[derive(Debug, Clone)]
pub struct StaticKeys(Arc<KeyRing>);

impl StaticKeys {
    /// Keys that never change.
    pub fn new(ring: KeyRing) -> Self {
        StaticKeys(Arc::new(ring))
    }
}

impl KeySource for StaticKeys {
    fn keys(&self) -> Arc<KeyRing> {
        self.0.clone()
    }
}

impl From<KeyRing> for StaticKeys {
    fn from(ring: KeyRing) -> Self {
        StaticKeys::new(ring)
    }
}

impl<T: KeySource + ?Sized> KeySource for Arc<T> {
    fn keys(&self) -> Arc<KeyRing> {
        (**self).keys()
    }

    fn unknown_kid<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, Option<Arc<KeyRing>>> {
        (**self).unknown_kid(kid)
    }
}
