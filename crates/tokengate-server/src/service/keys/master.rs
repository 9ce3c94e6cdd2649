//! The master key: 32 random bytes that live outside the database and seal
//! the signing keys in it (AES-256-GCM, bound to each key's kid and
//! algorithm), and derive the key that makes child refresh tokens.

use std::path::PathBuf;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hmac, rand};
use secrecy::ExposeSecret as _;
use tokengate::b64;
use zeroize::Zeroizing;

use super::KeyStoreError;
use crate::infra::config::Settings;
use crate::infra::files::{self, FileError};

/// The master key: 32 random bytes.
pub struct MasterKey(pub(super) Zeroizing<Vec<u8>>);

/// Where the master key file lives: `master_key_file`, else
/// `data_dir/master.key`.
pub fn master_key_path(settings: &Settings) -> PathBuf {
    settings
        .master_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("master.key"))
}

impl MasterKey {
    /// The configured master key, else the file at [`master_key_path`]:
    /// made private if others could read it, created (mode 0600, in a
    /// directory made 0700) when missing and `may_create`. Returns whether
    /// it was just created.
    ///
    /// `may_create` is false once the database holds keys sealed with a
    /// master key: a new one could not open them, and would only leave a
    /// second key file behind.
    pub fn load_or_create(
        settings: &Settings,
        may_create: bool,
    ) -> Result<(MasterKey, bool), KeyStoreError> {
        if let Some(secret) = &settings.master_key {
            return Self::decode(secret.expose_secret(), "the master_key setting")
                .map(|k| (k, false));
        }
        let path = master_key_path(settings);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                files::make_private(&path)?;
                Self::decode(text.trim(), &path.display().to_string()).map(|k| (k, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
                Err(KeyStoreError::MasterKeyMissing { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new(vec![0u8; 32]);
                rand::fill(&mut bytes).map_err(|_| KeyStoreError::Random)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    files::create_private_dir(dir)?;
                }
                let text = Zeroizing::new(format!("{}\n", b64::encode(bytes.as_slice())));
                files::create_new(&path, text.as_bytes(), true)?;
                Ok((MasterKey(bytes), true))
            }
            Err(source) => Err(FileError::Read { path, source }.into()),
        }
    }

    fn decode(text: &str, origin: &str) -> Result<MasterKey, KeyStoreError> {
        match b64::decode(text) {
            Ok(bytes) if bytes.len() == 32 => Ok(MasterKey(Zeroizing::new(bytes))),
            _ => Err(KeyStoreError::MalformedMasterKey {
                origin: origin.to_owned(),
            }),
        }
    }

    fn aead(&self) -> Result<LessSafeKey, KeyStoreError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| KeyStoreError::MasterKeyRejected)
    }

    /// Encrypts `plaintext`, bound to `context` (kid and algorithm).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, KeyStoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| KeyStoreError::Random)?;
        let mut buffer = Zeroizing::new(plaintext.to_vec());
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut *buffer,
            )
            .map_err(|_| KeyStoreError::Encryption)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(b64::encode(out))
    }

    /// Decrypts what [`MasterKey::seal`] made with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Zeroizing<Vec<u8>>, KeyStoreError> {
        let bytes = b64::decode(sealed).map_err(|_| KeyStoreError::CorruptStoredKey)?;
        let (nonce, ciphertext) = bytes
            .split_at_checked(NONCE_LEN)
            .ok_or(KeyStoreError::CorruptStoredKey)?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyStoreError::CorruptStoredKey)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| KeyStoreError::Decryption)?;
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

pub(super) fn context(kid: &str, alg: &str) -> String {
    format!("tokengate signing key|{kid}|{alg}")
}
