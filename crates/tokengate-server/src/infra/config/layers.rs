//! The layers a setting's text comes from, merged by precedence:
//! defaults < `tokengate.toml` < `TOKENGATE_*` environment < flags.
//!
//! Every layer is text: a value is parsed once, from the text that won, so an
//! error can name the key, the text and the layer it came from.

use std::collections::BTreeMap;
use std::path::Path;

use super::table::DEFAULTS;
use super::{ConfigError, KEYS, Overrides, Source};

/// Key → (text, where it came from).
type Layer = BTreeMap<String, (String, Source)>;

/// The winning text of every key that any layer sets.
pub(super) struct Merged(Layer);

impl Merged {
    /// Reads and merges the layers. The file is `--config`, else
    /// `TOKENGATE_CONFIG`, else `./tokengate.toml` if it exists.
    pub(super) fn collect(
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Merged, ConfigError> {
        let mut merged: Layer = DEFAULTS
            .iter()
            .map(|(key, text)| (key.to_string(), (text.to_string(), Source::Default)))
            .collect();
        let file = match (&overrides.config_file, env("TOKENGATE_CONFIG")) {
            (Some(path), _) => file_layer(path, true)?,
            (None, Some(path)) => file_layer(Path::new(&path), true)?,
            (None, None) => file_layer(Path::new("tokengate.toml"), false)?,
        };
        merged.extend(file);
        merged.extend(env_layer(env));
        merged.extend(flag_layer(overrides));
        Ok(Merged(merged))
    }

    /// The winning text for `key` and its source, if any layer sets it.
    pub(super) fn get(&self, key: &str) -> Option<(&str, &Source)> {
        self.0
            .get(key)
            .map(|(text, source)| (text.as_str(), source))
    }

    /// Where each key that is set came from.
    pub(super) fn sources(&self) -> BTreeMap<String, Source> {
        self.0
            .iter()
            .map(|(key, (_, source))| (key.clone(), source.clone()))
            .collect()
    }
}

fn file_layer(path: &Path, required: bool) -> Result<Layer, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(Layer::new()),
        Err(source) => {
            return Err(ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    let mut layer = Layer::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownSetting {
                path: path.to_owned(),
                key,
            });
        }
        let text = match value {
            toml::Value::String(s) => s,
            // Lists (trusted_proxies) are kept as comma-separated text, as
            // the environment gives them.
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::UnsupportedType {
                    path: path.to_owned(),
                    key,
                    found: other.type_str(),
                });
            }
        };
        layer.insert(key, (text, Source::File(path.to_owned())));
    }
    Ok(layer)
}

fn env_layer(env: &dyn Fn(&str) -> Option<String>) -> Layer {
    KEYS.iter()
        .filter_map(|key| {
            let var = format!("TOKENGATE_{}", key.to_uppercase());
            env(&var).map(|value| (key.to_string(), (value, Source::Env(var))))
        })
        .collect()
}

/// The command-line flags that set a key.
fn flag_layer(overrides: &Overrides) -> Layer {
    let paths = [
        ("data_dir", "--data-dir", &overrides.data_dir),
        ("tls_cert", "--tls-cert", &overrides.tls_cert),
        ("tls_key", "--tls-key", &overrides.tls_key),
    ];
    let addr = overrides
        .addr
        .as_ref()
        .map(|addr| ("addr", "--addr", addr.clone()));
    addr.into_iter()
        .chain(paths.into_iter().filter_map(|(key, flag, path)| {
            path.as_ref()
                .map(|path| (key, flag, path.display().to_string()))
        }))
        .map(|(key, flag, text)| (key.to_owned(), (text, Source::Flag(flag.to_owned()))))
        .collect()
}
