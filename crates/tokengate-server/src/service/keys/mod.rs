//! Signing keys at rest: private keys are stored in the database encrypted
//! with AES-256-GCM under a master key that lives outside it (the file
//! `master_key_file`, else `data_dir/master.key`, mode 0600; or the
//! `master_key` setting), bound to their kid and algorithm. The master key
//! also derives the key that makes child refresh tokens. Kept apart from
//! the database (another disk, a secrets mount), a copy of the database or
//! its backups alone does not give away the signing keys.

use secrecy::ExposeSecret as _;
use std::path::PathBuf;

use aws_lc_rs::hmac;
use tokengate::{Algorithm, KeyError, KeyRing, Kid, SigningKey, b64};
use zeroize::Zeroizing;

mod master;

use master::context;
pub use master::{MasterKey, master_key_path};

use crate::infra::announce::{Announcement, Announcer};
use crate::infra::config::Settings;
use crate::infra::files::FileError;
use crate::store::{Store, StoreError, StoredKey};

/// Why the keys could not be loaded, stored or rotated; each is one clear
/// line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The master key (the setting or the file) is not 32 bytes of base64url.
    #[error(
        "{origin}: the master key must be 32 random bytes in base64url (make one with `tokengate secret generate`)"
    )]
    MalformedMasterKey {
        /// Where it came from: the setting, or the file's path.
        origin: String,
    },
    /// The master key file is gone while the database holds keys sealed
    /// with it: a new master key could not open them.
    #[error(
        "master key {} not found, but the database holds signing keys sealed with one: restore the file, or point master_key_file at it",
        .path.display()
    )]
    MasterKeyMissing {
        /// Where the file was looked for.
        path: PathBuf,
    },
    /// The master key file could not be read, created or made private.
    #[error(transparent)]
    MasterKeyFile(#[from] FileError),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
    /// AES-256-GCM refused the master key.
    #[error("master key rejected by AES-256-GCM")]
    MasterKeyRejected,
    /// Sealing a private key failed.
    #[error("encryption failed")]
    Encryption,
    /// A sealed key is not base64url, or too short to hold a nonce.
    #[error("stored key is corrupt")]
    CorruptStoredKey,
    /// A sealed key failed authentication: the master key is not the one
    /// that sealed it, or the row was altered.
    #[error("cannot decrypt: wrong master key, or the stored key was altered")]
    Decryption,
    /// One stored key could not be unsealed.
    #[error("signing key {kid}: {source}")]
    Unsealing {
        /// The key's id.
        kid: String,
        /// Why.
        source: Box<KeyStoreError>,
    },
    /// One stored key was unsealed but is not a usable key.
    #[error("signing key {kid}: {source}")]
    InvalidStoredKey {
        /// The key's id.
        kid: String,
        /// Why.
        source: KeyError,
    },
    /// One stored key names an algorithm this build does not know.
    #[error("key {kid}: {source}")]
    UnknownAlgorithm {
        /// The key's id.
        kid: String,
        /// Why.
        source: KeyError,
    },
    /// The stored keys could not be read.
    #[error("cannot read signing keys: {0}")]
    ReadKeys(#[source] StoreError),
    /// A new key could not be stored.
    #[error("cannot store the signing key: {0}")]
    StoreKey(#[source] StoreError),
    /// A rotation's key is still waiting to sign; one at a time.
    #[error("a rotation is already pending: wait until its key activates")]
    RotationPending,
    /// HS256 signs with `hs_secret`, which is configured, not stored.
    #[error("signing_alg is HS256: its key is hs_secret; rotate by changing hs_secret")]
    HsSecretNotRotatable,
    /// `hs_secret` is not a usable HS256 key.
    #[error("hs_secret: {0}")]
    HsSecret(#[source] KeyError),
    /// A new signing key could not be generated.
    #[error("key generation: {0}")]
    Generation(#[source] KeyError),
    /// A key operation failed: a kid, an export, or the ring refusing a key.
    #[error("{0}")]
    Key(#[source] KeyError),
    /// The JWKS could not be rendered.
    #[error("{0}")]
    Jwks(#[source] serde_json::Error),
}

/// Where a stored key is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published in the JWKS, not signing yet (caches are catching up).
    Pending,
    /// Signs new tokens.
    Signing,
    /// Superseded; verifies the tokens it signed until they expire.
    Verifying,
    /// Gone from the JWKS; verifies nothing.
    Retired,
}

impl KeyState {
    /// Lower-case name, for listings.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Signing => "signing",
            KeyState::Verifying => "verifying",
            KeyState::Retired => "retired",
        }
    }
}

/// The state of each stored key at `now`: the newest key whose activation
/// time has come signs; older live keys verify; keys past `retired_at` are
/// retired. With `hs_active`, the HS256 secret signs and every stored key
/// only verifies.
pub fn key_states(keys: &[StoredKey], now: i64, hs_active: bool) -> Vec<KeyState> {
    let live = |k: &StoredKey| k.retired_at.is_none_or(|r| r > now);
    let signer = if hs_active {
        None
    } else {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| live(k) && k.activates_at <= now)
            // The kid breaks a tie (two keys activated in one second):
            // every instance must pick the same signer, whatever order
            // the database returns the rows in.
            .max_by_key(|(_, k)| (k.activates_at, k.created_at, k.kid.as_str()))
            .map(|(i, _)| i)
    };
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if !live(k) {
                KeyState::Retired
            } else if Some(i) == signer {
                KeyState::Signing
            } else if k.activates_at > now && !hs_active {
                KeyState::Pending
            } else {
                KeyState::Verifying
            }
        })
        .collect()
}

/// The keys in force: the ring that signs and verifies, and its JWKS.
pub struct KeySet {
    /// Signing key plus the keys that still verify. One `Arc` per set: the
    /// request guard's verified-token cache tells sets apart by it.
    pub ring: std::sync::Arc<KeyRing>,
    /// The JWKS document, rendered once per set.
    pub jwks_json: String,
    /// What this set was built from; a change means rebuild.
    fingerprint: String,
    /// The time the states were computed for. A refresh for an earlier time
    /// (a background tick that read the clock before a newer refresh ran)
    /// never replaces a set built for a later one.
    built_for: i64,
}

/// Owns the keys of a running service: builds the [`KeySet`] from storage,
/// rebuilds it when a rotation (by the CLI, another instance, or the
/// automatic schedule) or a scheduled transition happens.
pub struct KeyManager {
    master: MasterKey,
    hs_key: Option<(Kid, Zeroizing<Vec<u8>>)>,
    signing_alg: Algorithm,
    publish_delay: i64,
    retire_after: i64,
    rotation_interval: Option<i64>,
    current: std::sync::RwLock<std::sync::Arc<KeySet>>,
    /// Tells the other instances of a rotation (with Redis).
    announcer: Option<Announcer>,
}

use crate::infra::config::secs;

impl KeyManager {
    /// Loads the master key (creating it on first start), creates the first
    /// signing key if there is none, and builds the key set. Returns the
    /// manager, the HMAC key that derives refresh tokens, and notes to log.
    pub async fn start(
        settings: &Settings,
        store: &Store,
        now: i64,
    ) -> Result<(KeyManager, hmac::Key, Vec<String>), KeyStoreError> {
        let stored = store
            .signing_keys()
            .await
            .map_err(KeyStoreError::ReadKeys)?;
        let (master, created_master) = MasterKey::load_or_create(settings, stored.is_empty())?;
        let mut notes = Vec::new();
        if created_master {
            notes.push(format!(
                "created master key {} (mode 0600): it encrypts the signing keys; back it up, apart from the database",
                master_key_path(settings).display()
            ));
        }
        let hs_key = match (&settings.hs_secret, settings.signing_alg) {
            (Some(secret), Algorithm::HS256) => {
                // A stable kid that reveals nothing usable about the secret.
                let tag = hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes()),
                    b"kid",
                );
                let kid = Kid::new(format!("hs-{}", &b64::encode(tag.as_ref())[..16]))
                    .map_err(KeyStoreError::Key)?;
                Some((
                    kid,
                    Zeroizing::new(secret.expose_secret().as_bytes().to_vec()),
                ))
            }
            _ => None,
        };
        let refresh_key = master.refresh_derivation_key();
        let manager = KeyManager {
            master,
            hs_key,
            signing_alg: settings.signing_alg,
            publish_delay: secs(settings.key_publish_delay),
            retire_after: secs(settings.access_ttl) + secs(settings.leeway),
            rotation_interval: settings.key_rotation_interval.map(secs),
            announcer: Announcer::from_settings(settings),
            current: std::sync::RwLock::new(std::sync::Arc::new(KeySet {
                ring: std::sync::Arc::new(KeyRing::new()),
                jwks_json: "{\"keys\":[]}".into(),
                // Matches no real set, so the first refresh always builds.
                fingerprint: "unbuilt".into(),
                built_for: i64::MIN,
            })),
        };
        let states = key_states(&stored, now, manager.hs_key.is_some());
        if manager.hs_key.is_none()
            && !states.contains(&KeyState::Signing)
            && !states.contains(&KeyState::Pending)
        {
            // First start (or every key retired): a key that signs at once.
            let kid = manager.create(store, now, now, None, "created").await?;
            notes.push(format!(
                "created {} signing key {kid}; its private key is stored encrypted with the master key",
                manager.signing_alg
            ));
        }
        manager.refresh(store, now).await?;
        Ok((manager, refresh_key, notes))
    }

    /// The keys in force.
    pub fn current(&self) -> std::sync::Arc<KeySet> {
        match self.current.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn create(
        &self,
        store: &Store,
        now: i64,
        activates_at: i64,
        retire_others_at: Option<i64>,
        how: &str,
    ) -> Result<String, KeyStoreError> {
        let key =
            SigningKey::generate(self.signing_alg, None).map_err(KeyStoreError::Generation)?;
        let kid = key.kid().as_str().to_owned();
        let alg = key.alg().name().to_owned();
        let der = key.to_pkcs8_der().map_err(KeyStoreError::Key)?;
        let sealed = self.master.seal(&der, &context(&kid, &alg))?;
        let audit = crate::infra::audit::AuditEvent::new("key_rotated")
            .with("kid", kid.as_str())
            .with("alg", alg.as_str())
            .with("how", how)
            .with("activates_at", activates_at);
        let row = StoredKey {
            kid: kid.clone(),
            alg,
            encrypted_key: sealed,
            created_at: now,
            activates_at,
            retired_at: None,
        };
        let added = store
            .add_signing_key(&row, retire_others_at, now, &audit)
            .await
            .map_err(KeyStoreError::StoreKey)?;
        if !added {
            return Err(KeyStoreError::RotationPending);
        }
        audit.log();
        Ok(kid)
    }

    /// Rotates: a new key is published now, signs after the publish delay,
    /// and the keys it replaces retire once the last token they signed has
    /// expired. Returns the new kid.
    pub async fn rotate(
        &self,
        store: &Store,
        now: i64,
        how: &str,
    ) -> Result<String, KeyStoreError> {
        if self.hs_key.is_some() {
            return Err(KeyStoreError::HsSecretNotRotatable);
        }
        let kid = self.schedule_rotation(store, now, how).await?;
        self.refresh(store, now).await?;
        self.announce().await;
        Ok(kid)
    }

    /// Where rotations are announced to the other instances, if anywhere.
    pub fn announcer(&self) -> Option<&Announcer> {
        self.announcer.as_ref()
    }

    /// Tells the other instances to reload now rather than at their next
    /// sync.
    async fn announce(&self) {
        if let Some(announcer) = &self.announcer {
            announcer.publish(Announcement::KeysChanged).await;
        }
    }

    /// Rebuilds the key set if the stored keys or their states at `now`
    /// changed, and rotates on schedule when `key_rotation_interval` is set.
    pub async fn refresh(&self, store: &Store, now: i64) -> Result<(), KeyStoreError> {
        let stored = store
            .signing_keys()
            .await
            .map_err(KeyStoreError::ReadKeys)?;
        let hs = self.hs_key.is_some();
        let states = key_states(&stored, now, hs);
        if let (Some(interval), false) = (self.rotation_interval, hs) {
            let newest = stored.iter().map(|k| k.activates_at).max().unwrap_or(0);
            if newest + interval <= now && !states.contains(&KeyState::Pending) {
                match self.schedule_rotation(store, now, "scheduled").await {
                    Ok(_) => {
                        let refreshed = Box::pin(self.refresh(store, now)).await;
                        self.announce().await;
                        return refreshed;
                    }
                    Err(e) => tracing::warn!(cause = %e, "scheduled key rotation skipped"),
                }
            }
        }
        let hs_part = self
            .hs_key
            .as_ref()
            .map(|(kid, _)| format!("hs:{kid};"))
            .unwrap_or_default();
        let fingerprint: String = std::iter::once(hs_part)
            .chain(
                stored
                    .iter()
                    .zip(&states)
                    .map(|(k, s)| format!("{}:{}:{:?};", k.kid, s.name(), k.retired_at)),
            )
            .collect();
        let current = self.current();
        if now < current.built_for || fingerprint == current.fingerprint {
            return Ok(());
        }
        let mut ring = KeyRing::new();
        if let Some((kid, secret)) = &self.hs_key {
            let key = SigningKey::from_hmac_secret(Algorithm::HS256, secret, kid.clone())
                .map_err(KeyStoreError::HsSecret)?;
            ring.add_signing_key(key).map_err(KeyStoreError::Key)?;
        }
        let mut signer = None;
        for (row, state) in stored.iter().zip(&states) {
            if *state == KeyState::Retired {
                continue;
            }
            let alg = Algorithm::from_name(&row.alg).map_err(|source| {
                KeyStoreError::UnknownAlgorithm {
                    kid: row.kid.clone(),
                    source,
                }
            })?;
            let der = self
                .master
                .open(&row.encrypted_key, &context(&row.kid, &row.alg))
                .map_err(|e| KeyStoreError::Unsealing {
                    kid: row.kid.clone(),
                    source: Box::new(e),
                })?;
            let kid = Kid::new(row.kid.clone()).map_err(KeyStoreError::Key)?;
            let key = SigningKey::from_pkcs8_der(&der, Some(alg), Some(kid)).map_err(|source| {
                KeyStoreError::InvalidStoredKey {
                    kid: row.kid.clone(),
                    source,
                }
            })?;
            ring.add_signing_key(key).map_err(KeyStoreError::Key)?;
            if *state == KeyState::Signing {
                signer = Some(row.kid.clone());
            }
        }
        if let Some(kid) = signer {
            ring.set_active(&kid).map_err(KeyStoreError::Key)?;
        }
        let jwks_json = serde_json::to_string(&ring.jwks()).map_err(KeyStoreError::Jwks)?;
        let set = std::sync::Arc::new(KeySet {
            ring: std::sync::Arc::new(ring),
            jwks_json,
            fingerprint,
            built_for: now,
        });
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Checked again under the lock: another refresh may have finished first.
        if now >= current.built_for {
            *current = set;
        }
        Ok(())
    }

    /// Stores a new key that signs after the publish delay and schedules
    /// the retirement of the keys it replaces.
    async fn schedule_rotation(
        &self,
        store: &Store,
        now: i64,
        how: &str,
    ) -> Result<String, KeyStoreError> {
        let activates_at = now + self.publish_delay;
        self.create(
            store,
            now,
            activates_at,
            Some(activates_at + self.retire_after),
            how,
        )
        .await
    }
}

/// The request guard verifies with the keys in force, and sees a rotation
/// at once.
impl tokengate::guard::KeySource for KeyManager {
    fn keys(&self) -> std::sync::Arc<KeyRing> {
        self.current().ring.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activates_at: i64, retired_at: Option<i64>) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            encrypted_key: String::new(),
            created_at: activates_at - 300,
            activates_at,
            retired_at,
        }
    }

    #[test]
    fn a_rotation_moves_through_its_states_with_the_clock() {
        // k1 signed from 0; k2 published at 700, signs from 1000; k1 retires at 1930.
        let keys = [key("k1", 0, Some(1930)), key("k2", 1000, None)];
        use KeyState::*;
        assert_eq!(key_states(&keys, 999, false), vec![Signing, Pending]);
        assert_eq!(key_states(&keys, 1000, false), vec![Verifying, Signing]);
        assert_eq!(key_states(&keys, 1929, false), vec![Verifying, Signing]);
        assert_eq!(key_states(&keys, 1930, false), vec![Retired, Signing]);
        assert_eq!(
            key_states(&keys, 500, true),
            vec![Verifying, Verifying],
            "HS256 signs; stored keys verify"
        );
    }

    #[test]
    fn a_key_sealed_under_another_master_key_does_not_open() {
        let sealer = MasterKey(Zeroizing::new(vec![1; 32]));
        let other = MasterKey(Zeroizing::new(vec![2; 32]));
        let bound_to = context("k1", "ES256");
        let sealed = sealer.seal(b"private key", &bound_to).unwrap();
        assert_eq!(
            sealer.open(&sealed, &bound_to).unwrap().as_slice(),
            b"private key"
        );
        let refused = other.open(&sealed, &bound_to).unwrap_err();
        assert!(matches!(refused, KeyStoreError::Decryption));
        assert_eq!(
            refused.to_string(),
            "cannot decrypt: wrong master key, or the stored key was altered"
        );
        assert!(matches!(
            sealer.open(&sealed, &context("k2", "ES256")),
            Err(KeyStoreError::Decryption)
        ));
        assert!(matches!(
            sealer.open("AAAA", &bound_to),
            Err(KeyStoreError::CorruptStoredKey)
        ));
    }
}
