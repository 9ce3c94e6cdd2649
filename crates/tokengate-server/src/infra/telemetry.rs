//! Logging: structured JSON lines on stdout (or a readable format), with
//! audit events under the `audit` target. Nothing logged carries a token, a
//! password or a secret: handlers log ids, emails, reasons and addresses.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber; `format` is `json` or `pretty`.
pub fn init<W>(format: &str, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    // A second init (tests) keeps the first subscriber: ignore the error.
    let _ = if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
