//! Reading key files (PEM, JWK, JWKS) and writing new ones safely.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tokengate::{Algorithm, Jwk, JwkSet, KeyFamily, KeyRing, Kid, SigningKey, VerifyingKey};

use crate::cli::Failure;

/// Reads a file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    fs::read(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))
}

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
    let sibling: Jwk = serde_json::from_slice(&read(&sibling_path)?)
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
    let bytes = zeroize::Zeroizing::new(read(path)?);
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
    let bytes = zeroize::Zeroizing::new(read(path)?);
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

/// Creates `path` with `contents`, refusing to overwrite, with mode 0600
/// when `private` (set at creation, so the file is never world-readable).
pub fn create_new(path: &Path, contents: &[u8], private: bool) -> Result<(), Failure> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::Input(format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ))
        } else {
            Failure::Input(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))
}

/// The key files in a directory (`*.pem`, `*.json`), sorted by name.
pub fn key_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let entries = fs::read_dir(dir)
        .map_err(|e| Failure::Input(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|ext| ext == "pem" || ext == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing
/// file is left as it is, never truncated). For files another library
/// would otherwise create with the umask's mode.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes group and other permissions off `path` (mode 0600) if it has
/// any, logging a warning that names the file. A missing file is fine.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            tracing::warn!(
                file = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "file was readable by others: made private (mode 600)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Creates `dir` (and parents) readable by the owner only: it holds the
/// database and the master key. The mode is given at creation, so the
/// umask can only narrow it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
