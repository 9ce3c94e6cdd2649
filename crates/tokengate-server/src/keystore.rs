//! Signing keys at rest: private keys are stored in the database encrypted
//! with AES-256-GCM under a master key that lives outside it (the file
//! `data_dir/master.key`, mode 0600, or the `master_key` setting), bound to
//! their kid and algorithm. The master key also derives the key that makes
//! child refresh tokens.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hmac, rand};
use tokengate::{Algorithm, KeyRing, Kid, SigningKey, b64};
use zeroize::Zeroizing;

use crate::config::Settings;
use crate::storage::{Store, StoredKey};

/// Why the keys could not be loaded; each is one clear line at start-up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyStoreError(pub String);

/// The master key: 32 random bytes.
pub struct MasterKey(Zeroizing<Vec<u8>>);

/// Where the master key file lives.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

impl MasterKey {
    /// The configured master key, else the file in `data_dir`, created on
    /// first start. Returns whether it was just created.
    pub fn load_or_create(settings: &Settings) -> Result<(MasterKey, bool), KeyStoreError> {
        if let Some(secret) = &settings.master_key {
            return Self::decode(secret.expose(), "the master_key setting").map(|k| (k, false));
        }
        let path = master_key_path(&settings.data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::decode(text.trim(), &path.display().to_string()).map(|k| (k, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new(vec![0u8; 32]);
                rand::fill(&mut bytes)
                    .map_err(|_| KeyStoreError("random generator failed".into()))?;
                crate::keyfile::create_private_dir(&settings.data_dir).map_err(|e| {
                    KeyStoreError(format!(
                        "cannot create {}: {e}",
                        settings.data_dir.display()
                    ))
                })?;
                let text = Zeroizing::new(format!("{}\n", b64::encode(bytes.as_slice())));
                crate::keyfile::create_new(&path, text.as_bytes(), true)
                    .map_err(|f| KeyStoreError(format!("{f:?}")))?;
                Ok((MasterKey(bytes), true))
            }
            Err(e) => Err(KeyStoreError(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn decode(text: &str, origin: &str) -> Result<MasterKey, KeyStoreError> {
        match b64::decode(text) {
            Ok(bytes) if bytes.len() == 32 => Ok(MasterKey(Zeroizing::new(bytes))),
            _ => Err(KeyStoreError(format!(
                "{origin}: the master key must be 32 random bytes in base64url (make one with `tokengate secret generate`)"
            ))),
        }
    }

    fn aead(&self) -> Result<LessSafeKey, KeyStoreError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| KeyStoreError("master key rejected by AES-256-GCM".into()))
    }

    /// Encrypts `plaintext`, bound to `context` (kid and algorithm).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, KeyStoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| KeyStoreError("random generator failed".into()))?;
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut *buffer,
            )
            .map_err(|_| KeyStoreError("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(b64::encode(out))
    }

    /// Decrypts what [`MasterKey::seal`] made with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let bytes =
            b64::decode(sealed).map_err(|_| KeyStoreError("stored key is corrupt".into()))?;
        let (nonce, ciphertext) = bytes
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| KeyStoreError("stored key is corrupt".into()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyStoreError("stored key is corrupt".into()))?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| {
                KeyStoreError(
                    "cannot decrypt: wrong master key, or the stored key was altered".into(),
                )
            })?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// The HMAC key that derives a child refresh token from its parent.
    pub fn refresh_derivation_key(&self) -> hmac::Key {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.0),
            b"tokengate refresh-token derivation v1",
        );
        hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
    }
}

fn context(kid: &str, alg: &str) -> String {
    format!("tokengate signing key|{kid}|{alg}")
}

/// What start-up needs: the ring, and the refresh derivation key.
pub struct LoadedKeys {
    /// Active signing key plus older keys that still verify.
    pub ring: KeyRing,
    /// Derives child refresh tokens.
    pub refresh_key: hmac::Key,
    /// Lines to log about what was created.
    pub notes: Vec<String>,
}

/// Loads the signing keys (decrypting them), creating the master key and a
/// signing key of `signing_alg` on first start.
pub async fn load(
    settings: &Settings,
    store: &Store,
    now: i64,
) -> Result<LoadedKeys, KeyStoreError> {
    let (master, created_master) = MasterKey::load_or_create(settings)?;
    let mut notes = Vec::new();
    if created_master {
        notes.push(format!(
            "created master key {} (mode 0600): it encrypts the signing keys; back it up with the database",
            master_key_path(&settings.data_dir).display()
        ));
    }
    let mut ring = KeyRing::new();
    if settings.signing_alg == Algorithm::HS256 {
        let secret = settings
            .hs_secret
            .as_ref()
            .ok_or_else(|| KeyStoreError("HS256 needs hs_secret".into()))?;
        // A stable kid that reveals nothing usable about the secret.
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes()),
            b"kid",
        );
        let kid = Kid::new(format!("hs-{}", &b64::encode(tag.as_ref())[..16]))
            .map_err(|e| KeyStoreError(e.to_string()))?;
        let key = SigningKey::from_hmac_secret(Algorithm::HS256, secret.expose().as_bytes(), kid)
            .map_err(|e| KeyStoreError(format!("hs_secret: {e}")))?;
        ring.add_signing_key(key)
            .map_err(|e| KeyStoreError(e.to_string()))?;
    }
    let stored = store
        .signing_keys()
        .await
        .map_err(|e| KeyStoreError(format!("cannot read signing keys: {e}")))?;
    let mut active_matches = false;
    for row in &stored {
        let alg = Algorithm::from_name(&row.alg)
            .map_err(|e| KeyStoreError(format!("key {}: {e}", row.kid)))?;
        let der = master
            .open(&row.encrypted_key, &context(&row.kid, &row.alg))
            .map_err(|e| KeyStoreError(format!("signing key {}: {e}", row.kid)))?;
        let kid = Kid::new(row.kid.clone()).map_err(|e| KeyStoreError(e.to_string()))?;
        let key = SigningKey::from_pkcs8_der(&der, Some(alg), Some(kid))
            .map_err(|e| KeyStoreError(format!("signing key {}: {e}", row.kid)))?;
        if settings.signing_alg == Algorithm::HS256 {
            ring.add_verifying_key(key.verifying_key().clone())
                .map_err(|e| KeyStoreError(e.to_string()))?;
        } else {
            ring.add_signing_key(key)
                .map_err(|e| KeyStoreError(e.to_string()))?;
            if row.active && alg == settings.signing_alg {
                ring.set_active(&row.kid)
                    .map_err(|e| KeyStoreError(e.to_string()))?;
                active_matches = true;
            }
        }
    }
    if settings.signing_alg != Algorithm::HS256 && !active_matches {
        let key = SigningKey::generate(settings.signing_alg, None)
            .map_err(|e| KeyStoreError(format!("key generation: {e}")))?;
        let kid = key.kid().as_str().to_owned();
        let alg = key.alg().name().to_owned();
        let der = key
            .to_pkcs8_der()
            .map_err(|e| KeyStoreError(e.to_string()))?;
        let sealed = master.seal(&der, &context(&kid, &alg))?;
        store
            .add_active_signing_key(
                &StoredKey {
                    kid: kid.clone(),
                    alg: alg.clone(),
                    encrypted_key: sealed,
                    active: true,
                },
                now,
            )
            .await
            .map_err(|e| KeyStoreError(format!("cannot store the signing key: {e}")))?;
        ring.add_signing_key(key)
            .map_err(|e| KeyStoreError(e.to_string()))?;
        ring.set_active(&kid)
            .map_err(|e| KeyStoreError(e.to_string()))?;
        notes.push(format!(
            "created {alg} signing key {kid}; its private key is stored encrypted with the master key"
        ));
    }
    Ok(LoadedKeys {
        ring,
        refresh_key: master.refresh_derivation_key(),
        notes,
    })
}
