//! `serve --print-config`: the effective configuration as a `tokengate.toml`
//! that loads back to the same settings (secrets aside).

use super::Settings;
use super::kinds::Shown;
use super::table::DEFAULTS;

impl Settings {
    /// The effective configuration as a valid `tokengate.toml`, each line
    /// with its source as a trailing comment. Secrets (and the password
    /// inside a database or Redis URL) are redacted and commented out, since
    /// the redacted text would load as a wrong value; unset optional
    /// settings (`# key = ""  # unset`) and values derived from other
    /// settings are commented out too.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# effective tokengate configuration, loadable as tokengate.toml; \
             secrets are redacted and commented out: set them again to use it\n",
        );
        for (key, shown) in self.shown() {
            let Some(source) = self.sources.get(key) else {
                // No layer set the key: it is unset, or was derived from
                // other settings. Commented out, it is derived again on
                // loading, and follows them if they are changed in the file.
                let line = match shown {
                    Shown::Text(text) | Shown::Redacted(text) => {
                        format!("# {key} = {}  # derived", toml_string(&text))
                    }
                    Shown::Bare(value) => format!("# {key} = {value}  # derived"),
                    Shown::Unset => format!("# {key} = \"\"  # unset"),
                };
                out.push_str(&line);
                out.push('\n');
                continue;
            };
            let line = match shown {
                Shown::Text(text) => format!("{key} = {}  # {source}", toml_string(&text)),
                Shown::Bare(value) => format!("{key} = {value}  # {source}"),
                Shown::Redacted(text) => {
                    format!("# {key} = {}  # {source}", toml_string(&text))
                }
                // Left out, the key is unset too, unless it has a default:
                // then only an explicit blank keeps it unset.
                Shown::Unset if has_default(key) => {
                    format!("{key} = \"\"  # {source}, unset")
                }
                Shown::Unset => format!("# {key} = \"\"  # {source}, unset"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Whether `key` has a value when no layer sets it.
fn has_default(key: &str) -> bool {
    DEFAULTS
        .iter()
        .any(|(default_key, text)| *default_key == key && !text.trim().is_empty())
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
