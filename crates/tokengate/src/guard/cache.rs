//! Verified tokens remembered by the SHA-256 of their text, so that a token
//! presented again (an API client sends the same one for its whole life)
//! skips the signature check.
//!
//! What a hit skips is only the signature and the parse: the claims are
//! checked against the clock again (an entry never outlives `exp`), and the
//! revocation hook runs on every request. An entry is tied to the key ring
//! that verified it: when the source's keys change (rotation, a refetched
//! JWKS that dropped a key), entries made with the old ring miss.

use std::sync::{Arc, Weak};

use aws_lc_rs::digest;

use super::Checked;
use crate::ring::KeyRing;

/// Default number of remembered tokens: about 10 MB at most for tokens of
/// typical size, enough for the distinct tokens of a busy API's window.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

#[derive(Clone)]
struct Entry {
    checked: Arc<Checked>,
    /// The ring that verified it. A `Weak` keeps the allocation's address
    /// reserved, so a new ring can never be mistaken for this one.
    ring: Weak<KeyRing>,
}

/// A bounded map from token digest to verified claims (S3-FIFO eviction,
/// by `quick_cache`).
pub(crate) struct VerifiedCache {
    entries: quick_cache::sync::Cache<[u8; 32], Entry>,
}

fn digest_of(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl VerifiedCache {
    /// A cache of `capacity` entries; none for 0.
    pub(crate) fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| VerifiedCache {
            entries: quick_cache::sync::Cache::new(capacity),
        })
    }

    /// The checked token, if `token` was verified with `ring` (the current
    /// one) and can still be valid at some time.
    pub(crate) fn get(&self, token: &str, ring: &Arc<KeyRing>) -> Option<Arc<Checked>> {
        let key = digest_of(token);
        let entry = self.entries.get(&key)?;
        if !std::ptr::eq(entry.ring.as_ptr(), Arc::as_ptr(ring)) {
            self.entries.remove(&key);
            return None;
        }
        Some(entry.checked)
    }

    /// Remembers a token that passed the signature and claims checks with
    /// `ring`.
    pub(crate) fn insert(&self, token: &str, ring: &Arc<KeyRing>, checked: Arc<Checked>) {
        self.entries.insert(
            digest_of(token),
            Entry {
                checked,
                ring: Arc::downgrade(ring),
            },
        );
    }

    /// Forgets a token (it expired).
    pub(crate) fn remove(&self, token: &str) {
        self.entries.remove(&digest_of(token));
    }
}
