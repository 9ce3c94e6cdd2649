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
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let start = e.span().map_or(0, |span| span.start);
        let before = text.get(..start).unwrap_or_default();
        ConfigError::Malformed {
            path: path.to_owned(),
            line: before.matches('\n').count() + 1,
            column: before
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .count()
                + 1,
            message: e.message().replace('\n', " "),
        }
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
            let var = variable(key);
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

/// The prefix of every variable the service reads.
const PREFIX: &str = "TOKENGATE_";

/// The variable that sets `key`.
fn variable(key: &str) -> String {
    format!("{PREFIX}{}", key.to_uppercase())
}

/// The variables read besides the settings: the configuration file's path.
const OTHER_VARIABLES: &[&str] = &["TOKENGATE_CONFIG"];

/// Refuses a `TOKENGATE_*` variable in `names` that the service does not
/// read, naming the closest one it does; the first in name order, so the
/// message does not depend on the environment's order.
pub(super) fn refuse_unknown_variables(
    names: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let known: Vec<String> = KEYS
        .iter()
        .map(|key| variable(key))
        .chain(OTHER_VARIABLES.iter().map(|name| name.to_string()))
        .collect();
    let mut unknown: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with(PREFIX) && !known.contains(name))
        .filter(|name| !is_set_by_others(name, env))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(ConfigError::UnknownVariable {
            name: name.to_string(),
            closest: known
                .iter()
                .min_by_key(|candidate| edit_distance(name, candidate))
                .cloned()
                .unwrap_or_default(),
        }),
    }
}

/// `TOKENGATE_*` variables that are not settings but are legitimately in a
/// server's environment, so refusing them would stop a working deployment:
/// the test suite's PostgreSQL address (the integration tests run the binary
/// with their own environment), and the service-link variables Kubernetes
/// (and Docker links) give every pod for a Service named `tokengate`
/// (`TOKENGATE_SERVICE_HOST`, `TOKENGATE_PORT=tcp://…`,
/// `TOKENGATE_PORT_8080_TCP_ADDR`, …).
fn is_set_by_others(name: &str, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    // Kubernetes and Docker links for a Service named `tokengate` or any
    // `tokengate-*` sibling (a Helm release's `tokengate-postgresql`):
    // `[<SVC>_]SERVICE_HOST`, `[<SVC>_]SERVICE_PORT[_<name>]`,
    // `[<SVC>_]PORT_<n>_<TCP|UDP|SCTP>[_ADDR|_PORT|_PROTO]`, `[<SVC>_]PORT`.
    let after_service = |marker: &str| {
        rest.match_indices(marker)
            .any(|(at, _)| at == 0 || rest.get(..at).is_some_and(|s| s.ends_with('_')))
    };
    let port_link = rest.match_indices("PORT_").any(|(at, _)| {
        let starts_a_part = at == 0 || rest.get(..at).is_some_and(|s| s.ends_with('_'));
        let link = rest
            .get(at + "PORT_".len()..)
            .and_then(|after| after.split_once('_'));
        starts_a_part
            && link.is_some_and(|(number, protocol)| {
                !number.is_empty()
                    && number.bytes().all(|b| b.is_ascii_digit())
                    && ["TCP", "UDP", "SCTP"].iter().any(|p| {
                        protocol == *p
                            || protocol.strip_prefix(p).is_some_and(|s| s.starts_with('_'))
                    })
            })
    });
    rest == "TEST_PG_URL"
        || (after_service("SERVICE_HOST") && rest.ends_with("SERVICE_HOST"))
        || after_service("SERVICE_PORT")
        || port_link
        // Only a link's URL: an operator's `TOKENGATE_PORT=8080` is a typo
        // for `TOKENGATE_ADDR` and is refused.
        || ((rest == "PORT" || rest.ends_with("_PORT"))
            && env(name).is_some_and(|value| value.contains("://")))
}

/// Levenshtein distance in bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    // `previous[j]`: the distance from the part of `a` read so far to the
    // first `j` bytes of `b`.
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_byte) in a.bytes().enumerate() {
        let mut left = i + 1;
        let mut current = vec![left];
        let diagonal_and_above = previous.iter().zip(previous.iter().skip(1));
        for (b_byte, (diagonal, above)) in b.bytes().zip(diagonal_and_above) {
            left = (diagonal + usize::from(a_byte != b_byte))
                .min(above + 1)
                .min(left + 1);
            current.push(left);
        }
        previous = current;
    }
    previous.last().copied().unwrap_or_default()
}
