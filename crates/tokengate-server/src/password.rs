//! Password hashing: argon2id (OWASP parameters by default), bcrypt hashes
//! accepted for imported users, computed on a bounded pool of blocking
//! threads so a flood of logins queues instead of starving the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Why a hash could not be computed or checked. A wrong password is not an
/// error: it is `Ok(Verdict { matches: false, .. })`.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The hashing pool stayed full past the wait limit.
    #[error("password hashing is saturated")]
    Busy,
    /// The hashing task failed.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the password matches.
    pub matches: bool,
    /// Whether the stored hash should be replaced (bcrypt, or weaker argon2 parameters).
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password: unknown users are checked against
    /// it, so they cost the same time as known ones.
    dummy: Arc<String>,
    /// Password checks that reached the pool: what every limit in front of
    /// the hasher exists to bound (tests count it; so can an operator).
    verifications: Arc<AtomicU64>,
}

/// How long a login may wait for a hashing slot before getting a 503.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

impl Hasher {
    /// A hasher with these argon2id costs and at most `concurrency` hashes at once.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        concurrency: usize,
    ) -> Result<Hasher, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| HashError::Internal(format!("argon2 parameters: {e}")))?;
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| HashError::Internal("rng".into()))?;
        let dummy = argon2(&params)
            .hash_password(&random)
            .map_err(|e| HashError::Internal(e.to_string()))?
            .to_string();
        Ok(Hasher {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))?;
        Ok(result)
    }

    /// Hashes a new password with argon2id and a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = Zeroizing::new(password.to_owned());
        let params = self.params.clone();
        self.on_pool(move || {
            argon2(&params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| HashError::Internal(e.to_string()))
        })
        .await?
    }

    /// Checks `password` against `stored` (argon2 or bcrypt), or against the
    /// dummy hash when there is no user, so both paths take the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verdict, HashError> {
        let password = Zeroizing::new(password.to_owned());
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy.as_str().to_owned(), str::to_owned);
        let params = self.params.clone();
        let verifications = self.verifications.clone();
        let verdict = self
            .on_pool(move || {
                verifications.fetch_add(1, Ordering::Relaxed);
                check(&params, password.as_bytes(), &hash)
            })
            .await?;
        Ok(Verdict {
            matches: verdict.matches && known,
            needs_rehash: verdict.needs_rehash && known,
        })
    }
}

impl Hasher {
    /// How many password checks have reached the hashing pool so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn check(params: &Params, password: &[u8], hash: &str) -> Verdict {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        // bcrypt reads at most 72 bytes; the hash was made the same way.
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        return Verdict {
            matches,
            needs_rehash: true,
        };
    }
    let matches = argon2(params).verify_password(password, hash).is_ok();
    let current = format!(
        "m={},t={},p={}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    );
    let needs_rehash = !hash.starts_with("$argon2id$") || !hash.contains(&current);
    Verdict {
        matches,
        needs_rehash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        // Small costs: these tests check behaviour, not strength.
        Hasher::new(256, 1, 1, 2).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn argon2id_round_trip() {
        let h = hasher();
        let hash = h
            .hash("correct horse battery staple")
            .await
            .unwrap_or_default();
        assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{hash}");
        let ok = h
            .verify("correct horse battery staple", Some(&hash))
            .await
            .ok();
        assert_eq!(
            ok,
            Some(Verdict {
                matches: true,
                needs_rehash: false
            })
        );
        let bad = h
            .verify("wrong horse battery staple", Some(&hash))
            .await
            .ok();
        assert_eq!(bad.map(|v| v.matches), Some(false));
    }

    #[tokio::test]
    async fn bcrypt_hashes_verify_and_ask_for_a_rehash() {
        let h = hasher();
        let hash = bcrypt::hash("legacy password 1", 4).unwrap_or_default();
        let v = h.verify("legacy password 1", Some(&hash)).await.ok();
        assert_eq!(
            v,
            Some(Verdict {
                matches: true,
                needs_rehash: true
            })
        );
        let v = h.verify("legacy password 2", Some(&hash)).await.ok();
        assert_eq!(v.map(|v| v.matches), Some(false));
    }

    #[tokio::test]
    async fn unknown_users_never_match() {
        let h = hasher();
        let v = h.verify("anything at all", None).await.ok();
        assert_eq!(
            v,
            Some(Verdict {
                matches: false,
                needs_rehash: false
            })
        );
    }

    #[tokio::test]
    async fn weaker_argon2_parameters_ask_for_a_rehash() {
        let weak = Hasher::new(128, 1, 1, 1).unwrap_or_else(|e| panic!("{e}"));
        let hash = weak
            .hash("correct horse battery staple")
            .await
            .unwrap_or_default();
        let v = hasher()
            .verify("correct horse battery staple", Some(&hash))
            .await
            .ok();
        assert_eq!(
            v,
            Some(Verdict {
                matches: true,
                needs_rehash: true
            })
        );
    }
}
