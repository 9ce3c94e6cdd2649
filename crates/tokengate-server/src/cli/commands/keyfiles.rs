//! Key files for the CLI: reading PEM, JWK and JWKS files into keys and
//! rings, with each failure as the command's one line on standard error.
//! Creating files safely is [`crate::infra::files`]' part.

use std::fs;
use std::path::{Path, PathBuf};

use tokengate::{Algorithm, Jwk, JwkSet, KeyFamily, KeyRing, Kid, SigningKey, VerifyingKey};

use crate::cli::Failure;
use crate::infra::files;

fn input(path: &Path, what: impl std::fmt::Display) -> Failure {
    Failure::Input(format!("{}: {what}", path.display()))
}

/// The kid a PEM file stands for: `--kid`, else the file name without
/// `.pem` (which is how `keys generate` names files).
fn pem_kid(path: &Path, kid: Option<&str>) -> Result<Kid, Failure> {
    let name = match kid {
        Some(kid) => kid.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".pem").to_owned())
            .unwrap_or_default(),
    };
    Kid::new(name).map_err(|e| input(path, e))
}

fn is_pem(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .trim_start()
        .starts_with("-----BEGIN")
}

/// The public JWK `keys generate` writes beside `<kid>.pem`: `<kid>.jwk.json`.
fn sibling_jwk_path(pem: &Path) -> Option<PathBuf> {
    let stem = pem.file_name()?.to_str()?.strip_suffix(".pem")?;
    Some(pem.with_file_name(format!("{stem}.jwk.json")))
}

/// The algorithm of an RSA PEM, which the key does not say (RS256 and
/// PS256 keys look the same): `--alg`, or the `alg` of the sibling public
/// JWK written with it by `keys generate`, provided that JWK is this key's
/// public half. When both are there they must agree; with neither, refuse
/// rather than guess, since a guess signs tokens its own JWK rejects.
fn rsa_pem_alg(path: &Path, asked: Option<Algorithm>, public: &Jwk) -> Result<Algorithm, Failure> {
    let ambiguous = || {
        input(
            path,
            "an RSA key does not say whether it is RS256 or PS256: pass --alg",
        )
    };
    let Some(sibling_path) = sibling_jwk_path(path).filter(|p| p.exists()) else {
        return asked.ok_or_else(ambiguous);
    };
    let sibling: Jwk = serde_json::from_slice(&files::read(&sibling_path)?)
        .map_err(|e| input(&sibling_path, format!("not a JWK: {e}")))?;
    // RFC 7638 thumbprints: equal exactly when the public keys are.
    let same_key = sibling.thumbprint().is_some() && sibling.thumbprint() == public.thumbprint();
    if !same_key {
        return Err(input(
            path,
            format!(
                "{} is not the public half of this key",
                sibling_path.display()
            ),
        ));
    }
    let written = sibling
        .alg
        .as_deref()
        .map(Algorithm::from_name)
        .transpose()
        .map_err(|e| input(&sibling_path, e))?;
    match (asked, written) {
        (Some(asked), Some(written)) if asked != written => Err(input(
            path,
            format!(
                "--alg {asked} contradicts {}, which says {written}",
                sibling_path.display()
            ),
        )),
        (Some(alg), _) | (None, Some(alg)) => Ok(alg),
        (None, None) => Err(ambiguous()),
    }
}

/// Loads a private key PEM; an RSA key's algorithm is settled by
/// [`rsa_pem_alg`].
fn private_pem(
    path: &Path,
    bytes: &[u8],
    alg: Option<Algorithm>,
    kid: Option<&str>,
) -> Result<SigningKey, Failure> {
    let kid = pem_kid(path, kid)?;
    // Without `alg`, an RSA key loads as RS256: enough to read its public half.
    let key = SigningKey::from_pem(bytes, alg, Some(kid.clone())).map_err(|e| input(path, e))?;
    let Some(public) = key
        .public_jwk()
        .filter(|_| key.alg().family() == KeyFamily::Rsa)
    else {
        return Ok(key);
    };
    let settled = rsa_pem_alg(path, alg, public)?;
    if settled == key.alg() {
        return Ok(key);
    }
    SigningKey::from_pem(bytes, Some(settled), Some(kid)).map_err(|e| input(path, e))
}

/// Loads a public key PEM, settling an RSA key's algorithm as
/// [`private_pem`] does.
fn public_pem(
    path: &Path,
    bytes: &[u8],
    alg: Option<Algorithm>,
    kid: Option<&str>,
) -> Result<VerifyingKey, Failure> {
    let kid = pem_kid(path, kid)?;
    let key =
        VerifyingKey::from_public_pem(bytes, alg, Some(kid.clone())).map_err(|e| input(path, e))?;
    let Some(public) = key
        .to_jwk()
        .filter(|_| key.alg().family() == KeyFamily::Rsa)
    else {
        return Ok(key);
    };
    let settled = rsa_pem_alg(path, alg, public)?;
    if settled == key.alg() {
        return Ok(key);
    }
    VerifyingKey::from_public_pem(bytes, Some(settled), Some(kid)).map_err(|e| input(path, e))
}

/// Loads a private key from a PEM or a JWK with private members.
pub fn signing_key(
    path: &Path,
    alg: Option<Algorithm>,
    kid: Option<&str>,
) -> Result<SigningKey, Failure> {
    let bytes = zeroize::Zeroizing::new(files::read(path)?);
    if is_pem(&bytes) {
        return private_pem(path, &bytes, alg, kid);
    }
    let jwk: Jwk = serde_json::from_slice(&bytes)
        .map_err(|e| input(path, format!("neither a PEM nor a JWK: {e}")))?;
    if !jwk.is_private() {
        return Err(input(path, "a public JWK: signing needs the private key"));
    }
    SigningKey::from_jwk(&jwk).map_err(|e| input(path, e))
}

/// Loads a verify-only ring from a PEM (public or private), a JWK or a JWKS.
pub fn verifying_ring(
    path: &Path,
    alg: Option<Algorithm>,
    kid: Option<&str>,
) -> Result<KeyRing, Failure> {
    let bytes = zeroize::Zeroizing::new(files::read(path)?);
    if is_pem(&bytes) {
        let text = String::from_utf8_lossy(&bytes);
        let key = if text.contains("PRIVATE KEY-----") {
            private_pem(path, &bytes, alg, kid)?.verifying_key().clone()
        } else {
            public_pem(path, &bytes, alg, kid)?
        };
        return Ok(KeyRing::with_verifying_key(key));
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| input(path, format!("neither a PEM nor JSON: {e}")))?;
    if value.get("keys").is_some() {
        let set: JwkSet = serde_json::from_value(value).map_err(|e| input(path, e))?;
        let (ring, skipped) = KeyRing::from_jwks(&set);
        for s in &skipped {
            eprintln!(
                "note: {}: skipped key {}: {}",
                path.display(),
                s.kid.as_deref().unwrap_or("(no kid)"),
                s.error
            );
        }
        if ring.is_empty() {
            return Err(input(path, "the JWKS holds no usable signature key"));
        }
        return Ok(ring);
    }
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| input(path, e))?;
    VerifyingKey::from_jwk(&jwk)
        .map(KeyRing::with_verifying_key)
        .map_err(|e| input(path, e))
}

/// The key files in a directory (`*.pem`, `*.jwk.json`), sorted by name.
/// Only the names `keys generate` writes: a directory of keys often holds
/// other JSON (notes, configuration) that is not a key and must not fail
/// the whole listing.
pub fn key_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Failure::Input(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.ends_with(".pem") || name.ends_with(".jwk.json"))
        })
        .collect();
    found.sort();
    Ok(found)
}
