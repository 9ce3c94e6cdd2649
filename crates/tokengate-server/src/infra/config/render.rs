//! `serve --print-config`: the effective configuration as TOML.

use super::Settings;

impl Settings {
    /// The effective configuration as TOML, secrets redacted (and the
    /// password inside a database or Redis URL), each line with its source.
    pub fn render(&self) -> String {
        let mut out = String::from("# effective tokengate configuration (secrets redacted)\n");
        for (key, value) in self.shown() {
            // A key no layer set was filled in from other settings (or is unset).
            let source = self
                .sources
                .get(key)
                .map_or_else(|| "derived".to_owned(), ToString::to_string);
            let value = if value.parse::<u64>().is_ok() || value == "true" || value == "false" {
                value
            } else {
                format!("{value:?}")
            };
            out.push_str(&format!("{key} = {value}  # {source}\n"));
        }
        out
    }
}
