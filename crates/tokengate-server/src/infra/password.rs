//! Password hashing: argon2id (OWASP parameters by default), bcrypt hashes
//! accepted for imported users, computed on a pool of dedicated threads at a
//! lower scheduling priority, so a flood of logins queues instead of
//! starving the server, and token verification preempts a hash in progress.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
};
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
    /// One per hashing thread: a login holds one from before its job is
    /// queued until the job is done, so the job queue never grows beyond
    /// the threads and a waiting login holds no thread.
    permits: Arc<Semaphore>,
    pool: HashPool,
    /// A real hash of a random password: unknown users are checked against
    /// it, so they cost the same time as known ones.
    dummy: Arc<String>,
    /// Password checks that reached the pool: what every limit in front of
    /// the hasher exists to bound (tests count it; so can an operator).
    verifications: Arc<AtomicU64>,
}

/// How long a login may wait for a hashing slot before getting a 503.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

/// The niceness of the hashing threads unless configured: on a busy core the
/// kernel gives a nice-10 thread about a tenth of a nice-0 thread's share
/// and lets a waking nice-0 thread (a runtime worker with a request to
/// verify) preempt it, while an idle core still runs hashes at full speed.
pub const DEFAULT_HASH_NICENESS: u8 = 10;
/// The highest niceness Linux knows.
pub const MAX_HASH_NICENESS: u8 = 19;

type HashJob = Box<dyn FnOnce() + Send>;

/// The threads that compute password hashes, apart from tokio's blocking
/// pool: their priority is lowered once when they start, which could not be
/// done to a borrowed blocking thread (an unprivileged thread cannot raise
/// its priority back before handing the thread to other work). Written here
/// because no small crate offers a fixed pool with a per-thread start hook
/// (rayon does, with a work-stealing scheduler this does not need). The
/// threads end when the last `Hasher` clone is dropped.
#[derive(Clone)]
struct HashPool {
    jobs: mpsc::Sender<HashJob>,
    /// The threads' shared receiving end, watched by a test that they end.
    #[cfg(test)]
    queue: std::sync::Weak<Mutex<mpsc::Receiver<HashJob>>>,
}

impl HashPool {
    fn start(threads: usize, niceness: u8) -> Result<HashPool, HashError> {
        let (jobs, queue) = mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("tokengate-hash-{index}"))
                .spawn(move || {
                    lower_this_threads_priority(niceness);
                    loop {
                        // The lock is held while waiting: one idle thread
                        // waits on the queue, the others on the lock.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panic ends the job (its caller sees the result
                        // channel closed), never the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| HashError::Internal(format!("hashing thread: {e}")))?;
        }
        Ok(HashPool {
            #[cfg(test)]
            queue: Arc::downgrade(&queue),
            jobs,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| HashError::Internal("hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| HashError::Internal("the hashing job panicked".into()))
    }
}

/// Lowers the calling thread's scheduling priority to `niceness` (Linux:
/// `setpriority` on the thread id affects that thread alone). Best effort:
/// where it fails or is not supported, hashes run at normal priority.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority(niceness: u8) {
    let thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(thread), i32::from(niceness)) {
        tracing::warn!(error = %e, "could not lower the hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority(_niceness: u8) {}

/// The highest argon2 memory cost accepted, in KiB (1 GiB). Verifying
/// spends the stored hash's own costs, so a hash is a bill its holder
/// presents at each login: these ceilings bound it.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1_048_576;
/// The highest argon2 time cost (passes over memory) accepted.
pub const MAX_ARGON2_ITERATIONS: u32 = 32;
/// The highest argon2 parallelism (lanes) accepted.
pub const MAX_ARGON2_PARALLELISM: u32 = 16;
/// The bcrypt costs accepted: 4 is bcrypt's own minimum; 17 and above take
/// seconds per check.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=16;
/// bcrypt reads at most this many bytes of a password and ignores the rest.
pub const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;

/// A stored hash tokengate can verify, with its costs within the ceilings.
enum StoredHash {
    Bcrypt,
    Argon2 {
        algorithm: Algorithm,
        version: Version,
        params: Params,
    },
}

/// Reads a stored hash: bcrypt (`$2a$`, `$2b$`, `$2y$`) or an argon2 PHC
/// string (`$argon2id$`, `$argon2i$`, `$argon2d$`), refusing malformed
/// hashes and costs over the ceilings. The error names the rule, never the hash.
fn parse_stored_hash(hash: &str) -> Result<StoredHash, String> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        let parts = hash
            .parse::<bcrypt::HashParts>()
            .map_err(|_| "malformed bcrypt hash".to_owned())?;
        let cost = parts.get_cost();
        if !BCRYPT_COSTS.contains(&cost) {
            return Err(format!(
                "bcrypt cost {cost} is outside {} to {}",
                BCRYPT_COSTS.start(),
                BCRYPT_COSTS.end()
            ));
        }
        return Ok(StoredHash::Bcrypt);
    }
    if hash.starts_with("$argon2") {
        fn malformed<E>(_: E) -> String {
            "malformed argon2 hash".to_owned()
        }
        let phc = PasswordHash::new(hash).map_err(malformed)?;
        let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(malformed)?;
        let version = phc
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(malformed)?
            .unwrap_or_default();
        let params = Params::try_from(&phc).map_err(malformed)?;
        if phc.salt.is_none() || phc.hash.is_none() {
            return Err("malformed argon2 hash: no salt or no output".into());
        }
        check_argon2_costs(&params)?;
        return Ok(StoredHash::Argon2 {
            algorithm,
            version,
            params,
        });
    }
    Err("password_hash must be a bcrypt ($2a$/$2b$/$2y$) or argon2 PHC hash".into())
}

fn check_argon2_costs(params: &Params) -> Result<(), String> {
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    if m > MAX_ARGON2_MEMORY_KIB {
        return Err(format!(
            "argon2 memory cost m={m} KiB is over the ceiling of {MAX_ARGON2_MEMORY_KIB} KiB (1 GiB)"
        ));
    }
    if t > MAX_ARGON2_ITERATIONS {
        return Err(format!(
            "argon2 time cost t={t} is over the ceiling of {MAX_ARGON2_ITERATIONS}"
        ));
    }
    if p > MAX_ARGON2_PARALLELISM {
        return Err(format!(
            "argon2 parallelism p={p} is over the ceiling of {MAX_ARGON2_PARALLELISM}"
        ));
    }
    Ok(())
}

/// Whether tokengate accepts this stored hash: a well-formed bcrypt or
/// argon2 PHC hash whose costs are within the ceilings. Used at import,
/// and before every check, so no hash over them is ever computed. The
/// error says which rule failed and never contains the hash.
pub fn check_stored_hash_costs(hash: &str) -> Result<(), String> {
    parse_stored_hash(hash).map(|_| ())
}

impl Hasher {
    /// A hasher with these argon2id costs and at most `concurrency` hashes
    /// at once, on threads at [`DEFAULT_HASH_NICENESS`].
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        concurrency: usize,
    ) -> Result<Hasher, HashError> {
        Hasher::with_niceness(
            memory_kib,
            iterations,
            parallelism,
            concurrency,
            DEFAULT_HASH_NICENESS,
        )
    }

    /// [`Hasher::new`] with the hashing threads at this niceness (0 to
    /// [`MAX_HASH_NICENESS`]; 0 is the server's own priority).
    pub fn with_niceness(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        concurrency: usize,
        niceness: u8,
    ) -> Result<Hasher, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| HashError::Internal(format!("argon2 parameters: {e}")))?;
        // Hashes made with costs over the ceilings would be refused at the
        // next login: refuse the costs instead.
        check_argon2_costs(&params)
            .map_err(|rule| HashError::Internal(format!("configured {rule}")))?;
        let mut random = [0u8; 32];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| HashError::Internal("rng".into()))?;
        let dummy = argon2(&params)
            .hash_password(&random)
            .map_err(|e| HashError::Internal(e.to_string()))?
            .to_string();
        let threads = concurrency.max(1);
        Ok(Hasher {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            pool: HashPool::start(threads, niceness.min(MAX_HASH_NICENESS))?,
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
        // The permit is released when the job is done, not when this future
        // is: a login whose client went away still holds its slot until its
        // hash ends, so the queue stays bounded.
        self.pool
            .run(move || {
                let out = job();
                drop(permit);
                out
            })
            .await
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
    /// A stored hash that [`check_stored_hash_costs`] refuses never matches
    /// and is never computed: the dummy is, in its place.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verdict, HashError> {
        let password = Zeroizing::new(password.to_owned());
        let stored = stored.filter(|hash| check_stored_hash_costs(hash).is_ok());
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

/// Whether a stored argon2id hash should be remade with the configured
/// costs: only upwards. It is when it is below them in at least one of
/// memory, time and lanes and above them in none; a hash stronger in any
/// cost is kept, so lowering the configuration downgrades nobody.
fn weaker_than_configured(stored: &Params, configured: &Params) -> bool {
    let pairs = [
        (stored.m_cost(), configured.m_cost()),
        (stored.t_cost(), configured.t_cost()),
        (stored.p_cost(), configured.p_cost()),
    ];
    pairs.iter().any(|(s, c)| s < c) && !pairs.iter().any(|(s, c)| s > c)
}

fn check(configured: &Params, password: &[u8], hash: &str) -> Verdict {
    let no_match = Verdict {
        matches: false,
        needs_rehash: false,
    };
    match parse_stored_hash(hash) {
        // `verify` passes only accepted hashes; this keeps `check` safe alone.
        Err(_) => no_match,
        Ok(StoredHash::Bcrypt) => {
            // bcrypt ignores what follows byte 72, so a longer password
            // would match on its first 72 bytes and then be stored, whole,
            // as the new argon2 hash. The hash is still computed, so the
            // refusal takes the time of a wrong password.
            let bcrypt_matches = bcrypt::verify(password, hash).unwrap_or(false);
            Verdict {
                matches: bcrypt_matches && password.len() <= BCRYPT_MAX_PASSWORD_BYTES,
                needs_rehash: true,
            }
        }
        Ok(StoredHash::Argon2 {
            algorithm,
            version,
            params,
        }) => Verdict {
            // Verification uses the hash's own algorithm and costs.
            matches: argon2(configured).verify_password(password, hash).is_ok(),
            needs_rehash: algorithm != Algorithm::Argon2id
                || version != Version::V0x13
                || weaker_than_configured(&params, configured),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        // Small costs: these tests check behaviour, not strength.
        Hasher::new(256, 1, 1, 2).unwrap_or_else(|e| panic!("{e}"))
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashes_run_on_their_own_threads_at_the_configured_niceness() {
        use rustix::process::getpriority_process;
        use rustix::thread::gettid;
        let own_before = getpriority_process(Some(gettid())).ok();
        let h = Hasher::with_niceness(256, 1, 1, 2, 7).unwrap_or_else(|e| panic!("{e}"));
        let seen = h
            .pool
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, getpriority_process(Some(gettid())).ok())
            })
            .await
            .ok();
        let (name, niceness) = seen.unwrap_or_default();
        assert!(
            name.is_some_and(|n| n.starts_with("tokengate-hash-")),
            "a hash ran on a thread not of the pool"
        );
        assert_eq!(niceness, Some(7));
        // The runtime's threads keep their priority.
        assert_eq!(getpriority_process(Some(gettid())).ok(), own_before);
        // And a hash still works there.
        assert!(h.hash("correct horse battery staple").await.is_ok());
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_its_thread_goes_on() {
        let h = Hasher::with_niceness(256, 1, 1, 1, 0).unwrap_or_else(|e| panic!("{e}"));
        let failed = h.on_pool(|| -> u8 { panic!("a job that panics") }).await;
        assert!(matches!(failed, Err(HashError::Internal(_))), "{failed:?}");
        // One thread and one permit: both came back.
        let hash = h.hash("correct horse battery staple").await;
        assert!(hash.is_ok(), "{hash:?}");
    }

    #[tokio::test]
    async fn the_threads_end_with_the_last_hasher() {
        let h = Hasher::with_niceness(256, 1, 1, 3, 0).unwrap_or_else(|e| panic!("{e}"));
        let other = h.clone();
        assert!(h.hash("a password for the pool").await.is_ok());
        let queue = h.pool.queue.clone();
        drop(h);
        // A clone still holds the pool: its threads still serve.
        assert!(queue.upgrade().is_some());
        assert!(other.hash("a password for the pool").await.is_ok());
        drop(other);
        // The threads hold the queue's receiving end until they return.
        let mut waited = 0;
        while queue.upgrade().is_some() && waited < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert!(
            queue.upgrade().is_none(),
            "hashing threads outlived every Hasher"
        );
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

    /// Whether a hash made with costs (m, t, p) asks for a rehash when the
    /// configured costs are those of `hasher()`: m=256, t=1, p=1.
    async fn rehash_asked(m: u32, t: u32, p: u32, configured: &Hasher) -> bool {
        let made_with = Hasher::new(m, t, p, 1).unwrap_or_else(|e| panic!("{e}"));
        let hash = made_with
            .hash("correct horse battery staple")
            .await
            .unwrap_or_default();
        let verdict = configured
            .verify("correct horse battery staple", Some(&hash))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(verdict.matches, "m={m},t={t},p={p}");
        verdict.needs_rehash
    }

    #[tokio::test]
    async fn argon2_rehash_goes_only_upwards() {
        let configured = Hasher::new(256, 2, 2, 2).unwrap_or_else(|e| panic!("{e}"));
        // Weaker in one cost, equal in the others: upgraded.
        assert!(rehash_asked(128, 2, 2, &configured).await);
        assert!(rehash_asked(256, 1, 2, &configured).await);
        assert!(rehash_asked(256, 2, 1, &configured).await);
        assert!(rehash_asked(128, 1, 1, &configured).await);
        // Equal: kept.
        assert!(!rehash_asked(256, 2, 2, &configured).await);
        // Stronger: kept, so lowering the configured costs downgrades nobody.
        assert!(!rehash_asked(512, 2, 2, &configured).await);
        assert!(!rehash_asked(256, 3, 4, &configured).await);
        // Stronger in one cost, weaker in another: a rehash would lower
        // one of them, so the hash is kept.
        assert!(!rehash_asked(512, 1, 2, &configured).await);
        assert!(!rehash_asked(128, 3, 2, &configured).await);
    }

    #[tokio::test]
    async fn argon2i_and_argon2d_hashes_are_upgraded_to_argon2id() {
        let h = hasher();
        for algorithm in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let params = Params::new(256, 1, 1, None).unwrap_or_else(|e| panic!("{e}"));
            let hash = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password_with_salt(b"correct horse battery staple", b"sixteen byte salt")
                .map(|h| h.to_string())
                .unwrap_or_default();
            let v = h
                .verify("correct horse battery staple", Some(&hash))
                .await
                .ok();
            assert_eq!(
                v,
                Some(Verdict {
                    matches: true,
                    needs_rehash: true
                }),
                "{hash}"
            );
        }
    }

    #[tokio::test]
    async fn bcrypt_refuses_passwords_longer_than_its_72_bytes() {
        let h = hasher();
        let exact = "x".repeat(71) + "!";
        let hash = bcrypt::hash(&exact, 4).unwrap_or_default();
        // bcrypt itself ignores everything after byte 72.
        assert_eq!(bcrypt::verify(exact.clone() + "?", &hash).ok(), Some(true));
        for longer in [exact.clone() + "?", exact.clone() + &"y".repeat(100)] {
            let v = h.verify(&longer, Some(&hash)).await.ok();
            assert_eq!(v.map(|v| v.matches), Some(false), "{} bytes", longer.len());
        }
        let v = h.verify(&exact, Some(&hash)).await.ok();
        assert_eq!(
            v,
            Some(Verdict {
                matches: true,
                needs_rehash: true
            })
        );
    }

    #[tokio::test]
    async fn stored_hashes_over_the_ceilings_are_never_computed() {
        let h = hasher();
        // Real hashes of the password, cheap to compute but each over one ceiling.
        for (m, t, p) in [(64, 33, 1), (17 * 8, 1, 17)] {
            let params = Params::new(m, t, p, None).unwrap_or_else(|e| panic!("{e}"));
            let hash = argon2(&params)
                .hash_password_with_salt(b"correct horse battery staple", b"sixteen byte salt")
                .map(|h| h.to_string())
                .unwrap_or_default();
            let v = h
                .verify("correct horse battery staple", Some(&hash))
                .await
                .ok();
            assert_eq!(v.map(|v| v.matches), Some(false), "{hash}");
        }
    }

    #[test]
    fn configured_costs_over_the_ceilings_are_refused() {
        // Over the time-cost ceiling but cheap, so the old code's dummy
        // hash would not take long to compute.
        assert!(Hasher::new(64, 33, 1, 1).is_err());
        assert!(Hasher::new(17 * 8, 1, 17, 1).is_err());
        assert!(Hasher::new(64, 32, 1, 1).is_ok());
    }

    /// An argon2id PHC string with these costs (placeholder salt and output).
    fn argon2id_phc(m: u32, t: u32, p: u32) -> String {
        format!(
            "$argon2id$v=19$m={m},t={t},p={p}$c2l4dGVlbiBieXRlIHNhbHQ$BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"
        )
    }

    #[test]
    fn stored_hash_costs_are_bounded() {
        let bcrypt4 = bcrypt::hash("pw", 4).unwrap_or_default();
        let bcrypt_cost = |cost: &str| bcrypt4.replacen("$04$", &format!("${cost}$"), 1);
        for accepted in [
            argon2id_phc(19_456, 2, 1),
            argon2id_phc(
                MAX_ARGON2_MEMORY_KIB,
                MAX_ARGON2_ITERATIONS,
                MAX_ARGON2_PARALLELISM,
            ),
            argon2id_phc(64, 1, 1).replace("argon2id", "argon2i"),
            bcrypt4.clone(),
            bcrypt_cost("16"),
        ] {
            assert_eq!(check_stored_hash_costs(&accepted), Ok(()), "{accepted}");
        }
        for (refused, rule) in [
            (
                argon2id_phc(MAX_ARGON2_MEMORY_KIB + 1, 1, 1),
                "argon2 memory cost m=1048577 KiB is over the ceiling of 1048576 KiB (1 GiB)",
            ),
            (
                argon2id_phc(4_194_304, 1, 1),
                "argon2 memory cost m=4194304 KiB is over the ceiling of 1048576 KiB (1 GiB)",
            ),
            (
                argon2id_phc(19_456, 33, 1),
                "argon2 time cost t=33 is over the ceiling of 32",
            ),
            (
                argon2id_phc(19_456, 1, 17),
                "argon2 parallelism p=17 is over the ceiling of 16",
            ),
            (bcrypt_cost("17"), "bcrypt cost 17 is outside 4 to 16"),
            (bcrypt_cost("31"), "bcrypt cost 31 is outside 4 to 16"),
            (bcrypt_cost("03"), "bcrypt cost 3 is outside 4 to 16"),
        ] {
            assert_eq!(
                check_stored_hash_costs(&refused),
                Err(rule.to_owned()),
                "{refused}"
            );
        }
        for malformed in [
            String::new(),
            "plaintext-password".into(),
            "$2b$04$tooshort".into(),
            "$argon2id$v=19$m=19456,t=2,p=1".into(),
            argon2id_phc(19_456, 2, 1).replace("argon2id", "argon2x"),
            argon2id_phc(19_456, 2, 1).replace("v=19", "v=18"),
            argon2id_phc(19_456, 2, 1).replace("m=19456", "m=lots"),
            // Fewer than 8 KiB per lane is not a valid argon2 cost.
            argon2id_phc(64, 1, 16),
        ] {
            assert!(
                check_stored_hash_costs(&malformed).is_err(),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn rehash_rule_compares_each_cost() {
        let params = |m, t, p| Params::new(m, t, p, None).unwrap_or_else(|e| panic!("{e}"));
        let configured = params(19_456, 2, 1);
        assert!(weaker_than_configured(&params(9_216, 2, 1), &configured));
        assert!(weaker_than_configured(&params(19_456, 1, 1), &configured));
        assert!(!weaker_than_configured(&params(19_456, 2, 1), &configured));
        assert!(!weaker_than_configured(&params(47_104, 2, 1), &configured));
        assert!(!weaker_than_configured(&params(47_104, 1, 1), &configured));
        assert!(!weaker_than_configured(&params(9_216, 4, 1), &configured));
        assert!(!weaker_than_configured(&params(9_216, 2, 2), &configured));
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
