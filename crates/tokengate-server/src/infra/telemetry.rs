//! Logging: structured JSON lines on stdout (or a readable format), with
//! audit events under the `audit` target. Nothing logged carries a token, a
//! password or a secret: handlers log ids, emails, reasons and addresses.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::infra::config::LogFormat;

/// Installs the global subscriber. `colour` allows ANSI colours in the text
/// format: pass whether the writer is a terminal, so that a file or a log
/// collector gets plain text.
pub fn init<W>(format: LogFormat, level: &str, writer: W, colour: bool)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour)
        .with_target(true);
    // A second init (tests) keeps the first subscriber: ignore the error.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
