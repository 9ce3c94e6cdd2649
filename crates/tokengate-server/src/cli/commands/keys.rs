//! `tokengate keys generate` and `tokengate keys jwks`.

use secrecy::ExposeSecret as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokengate::{Jwk, JwkSet, Kid, SigningKey, VerifyingKey};

use super::keyfiles;
use crate::cli::output::stdout_line;
use crate::cli::{Failure, KeysCommand};
use crate::infra::files;

/// Runs a `keys` subcommand.
pub fn run(cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Generate { alg, kid, out } => generate(alg, kid, &out),
        KeysCommand::Jwks { paths } => jwks(&paths),
        KeysCommand::Rotate { data } => service_keys(&data, ServiceKeys::Rotate),
        KeysCommand::List { data } => service_keys(&data, ServiceKeys::List),
        KeysCommand::ExportPublic { data } => service_keys(&data, ServiceKeys::ExportPublic),
    }
}

enum ServiceKeys {
    Rotate,
    List,
    ExportPublic,
}

/// The keys of the service's data directory / database.
fn service_keys(data: &crate::cli::DataArgs, what: ServiceKeys) -> Result<(), Failure> {
    use crate::infra::clock::{Clock, SystemClock};
    use crate::service::keys::{KeyManager, key_states};
    let settings = super::load_settings(data, crate::infra::config::Overrides::default())?;
    let opens = match what {
        ServiceKeys::List => super::Opens::Database,
        ServiceKeys::Rotate | ServiceKeys::ExportPublic => super::Opens::DatabaseAndMasterKey,
    };
    super::require_existing_data(&settings, opens)?;
    super::block_on(async move {
        let store = crate::store::Store::connect(settings.database_url.expose_secret())
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        let now = SystemClock.now().as_secs();
        let stored = store
            .signing_keys()
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        let result = match what {
            ServiceKeys::List => {
                let states = key_states(
                    &stored,
                    now,
                    settings.signing_alg == tokengate::Algorithm::HS256,
                );
                stdout_line!(
                    "{:<44} {:<6} {:<10} {:<21} {:<21} retires",
                    "kid",
                    "alg",
                    "state",
                    "created",
                    "activates"
                )?;
                for (k, state) in stored.iter().zip(states) {
                    stdout_line!(
                        "{:<44} {:<6} {:<10} {:<21} {:<21} {}",
                        k.kid,
                        k.alg,
                        state.name(),
                        super::rfc3339(k.created_at),
                        super::rfc3339(k.activates_at),
                        k.retired_at
                            .map(super::rfc3339)
                            .unwrap_or_else(|| "-".into())
                    )?;
                }
                Ok(())
            }
            ServiceKeys::ExportPublic if stored.is_empty() => Err(Failure::Input(
                "no signing keys yet: start the service once".into(),
            )),
            ServiceKeys::Rotate => {
                let first = stored.is_empty();
                let (manager, _, _) = KeyManager::start(&settings, &store, now)
                    .await
                    .map_err(|e| Failure::Input(e.to_string()))?;
                if first {
                    stdout_line!(
                        "created the first signing key: {}",
                        manager
                            .current()
                            .ring
                            .active()
                            .map(|k| k.kid().to_string())
                            .unwrap_or_default()
                    )?;
                    Ok(())
                } else {
                    let kid = manager
                        .rotate(&store, now, "cli")
                        .await
                        .map_err(|e| Failure::Input(e.to_string()))?;
                    stdout_line!(
                        "{kid}: published now, signs from {}",
                        super::rfc3339(
                            now + crate::infra::config::secs(settings.key_publish_delay)
                        )
                    )?;
                    Ok(())
                }
            }
            ServiceKeys::ExportPublic => {
                let (manager, _, _) = KeyManager::start(&settings, &store, now)
                    .await
                    .map_err(|e| Failure::Input(e.to_string()))?;
                let jwks = manager.current().ring.jwks();
                stdout_line!(
                    "{}",
                    serde_json::to_string_pretty(&jwks)
                        .map_err(|e| Failure::Input(e.to_string()))?
                )?;
                Ok(())
            }
        };
        store.close().await;
        result
    })?
}

/// A kid becomes a file name, so it must not be able to leave the directory.
fn file_safe(kid: &Kid) -> Result<(), Failure> {
    let ok = kid
        .as_str()
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !kid.as_str().starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Failure::Input(format!(
            "kid {:?} cannot name a file: use letters, digits, '-', '_' and '.' only",
            kid.as_str()
        )))
    }
}

fn generate(alg: tokengate::Algorithm, kid: Option<String>, out: &Path) -> Result<(), Failure> {
    let kid = kid
        .map(Kid::new)
        .transpose()
        .map_err(|e| Failure::Input(e.to_string()))?;
    if let Some(kid) = &kid {
        file_safe(kid)?;
    }
    let key = SigningKey::generate(alg, kid).map_err(|e| Failure::Input(e.to_string()))?;
    let kid = key.kid().clone();
    file_safe(&kid)?;
    files::create_private_dir(out)?;
    let pretty = |jwk: &Jwk| {
        serde_json::to_string_pretty(jwk)
            .map(|s| s + "\n")
            .map_err(|e| Failure::Input(e.to_string()))
    };
    if let Some(secret_jwk) = key.to_secret_jwk() {
        let path = out.join(format!("{kid}.secret.jwk.json"));
        files::create_new(&path, pretty(&secret_jwk)?.as_bytes(), true)?;
    } else {
        let pem_path = out.join(format!("{kid}.pem"));
        let jwk_path = out.join(format!("{kid}.jwk.json"));
        // Check both before writing either, so a refusal leaves nothing half-made.
        for path in [&pem_path, &jwk_path] {
            if path.exists() {
                return Err(Failure::Input(format!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                )));
            }
        }
        let pem = key
            .to_pkcs8_pem()
            .map_err(|e| Failure::Input(e.to_string()))?;
        files::create_new(&pem_path, pem.as_bytes(), true)?;
        let public = key
            .public_jwk()
            .ok_or_else(|| Failure::Input("key has no public half".into()))?;
        files::create_new(&jwk_path, pretty(public)?.as_bytes(), false)?;
    }
    stdout_line!("{kid}")?;
    Ok(())
}

/// The public JWKs one file contributes (none for secrets).
fn public_jwks_of(path: &Path) -> Result<Vec<Jwk>, Failure> {
    let bytes = zeroize::Zeroizing::new(files::read(path)?);
    let is_json = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
    if !is_json {
        let ring = keyfiles::verifying_ring(path, None, None)?;
        return Ok(ring.jwks().keys);
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
    let jwks: Vec<Jwk> = if value.get("keys").is_some() {
        serde_json::from_value::<JwkSet>(value)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?
            .keys
    } else {
        vec![
            serde_json::from_value(value)
                .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?,
        ]
    };
    let mut out = Vec::new();
    for jwk in jwks {
        if jwk.kty == "oct" {
            eprintln!("note: {}: secret (oct) key not published", path.display());
            continue;
        }
        let key = VerifyingKey::from_jwk(&jwk)
            .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
        out.extend(key.to_jwk().cloned());
    }
    Ok(out)
}

fn jwks(paths: &[PathBuf]) -> Result<(), Failure> {
    let mut key_paths = Vec::new();
    for path in paths {
        if path.is_dir() {
            key_paths.extend(keyfiles::key_files(path)?);
        } else {
            key_paths.push(path.clone());
        }
    }
    // A key generated by `keys generate` appears twice (PEM and JWK): the
    // same kid with the same JWK is one key; the same kid with another key
    // is an error, since a JWKS must not be ambiguous.
    let mut by_kid: BTreeMap<String, Jwk> = BTreeMap::new();
    for file in &key_paths {
        for jwk in public_jwks_of(file)? {
            let kid = jwk.kid.clone().unwrap_or_default();
            match by_kid.get(&kid) {
                Some(existing) if existing != &jwk => {
                    return Err(Failure::Input(format!(
                        "two different keys share kid {kid:?} (second in {})",
                        file.display()
                    )));
                }
                Some(_) => {}
                None => {
                    by_kid.insert(kid, jwk);
                }
            }
        }
    }
    let set = JwkSet {
        keys: by_kid.into_values().collect(),
    };
    let text = serde_json::to_string_pretty(&set).map_err(|e| Failure::Input(e.to_string()))?;
    stdout_line!("{text}")?;
    Ok(())
}
