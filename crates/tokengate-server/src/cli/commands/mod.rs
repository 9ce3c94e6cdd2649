//! What each subcommand does. Each returns `Result<(), Failure>`; the exit
//! code and the one line on stderr are decided in `cli::main`.

pub mod keyfiles;
pub mod keys;
pub mod secret;
pub mod serve;
pub mod token;
pub mod user;

/// The settings for a command that works on the service's data: the
/// layered configuration with `--data-dir`/`--config` and these overrides.
pub fn load_settings(
    data: &crate::cli::DataArgs,
    overrides: crate::infra::config::Overrides,
) -> Result<crate::infra::config::Settings, crate::cli::Failure> {
    crate::infra::config::Settings::load(&crate::infra::config::Overrides {
        config_file: data.config.clone(),
        data_dir: data.data_dir.clone(),
        ..overrides
    })
    .map_err(|e| crate::cli::Failure::Input(e.to_string()))
}

/// Runs a one-shot command's async work on a single-threaded runtime.
pub fn block_on<F: std::future::Future>(work: F) -> Result<F::Output, crate::cli::Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| runtime.block_on(work))
        .map_err(|e| crate::cli::Failure::Input(format!("cannot start the async runtime: {e}")))
}

/// A Unix time as an RFC 3339 date (UTC, seconds).
pub fn rfc3339(t: i64) -> String {
    match u64::try_from(t) {
        Ok(secs) => humantime::format_rfc3339_seconds(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string(),
        Err(_) => format!("{t} (before 1970)"),
    }
}
