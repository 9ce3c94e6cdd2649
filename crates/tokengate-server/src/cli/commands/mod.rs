//! What each subcommand does. Each returns `Result<(), Failure>`; the exit
//! code and the one line on stderr are decided in `cli::main`.

pub mod keyfiles;
pub mod keys;
pub mod migrate_data;
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

/// What a data command is about to open, besides the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opens {
    /// Only the database (`user …`, `keys list`).
    Database,
    /// The database and the master key (`keys rotate`, `keys export-public`).
    DatabaseAndMasterKey,
}

/// Refuses to work on data that is not there, before anything is opened.
///
/// Opening a SQLite database creates its file and directory, and the first
/// key rotation creates a master key: run in the wrong directory, a data
/// command would quietly build a second, empty installation and report on
/// (or change) that one. Only `serve` and `migrate` set up data, so every
/// other command needs what they made:
///
/// - SQLite: the directory that holds the database file (the data directory,
///   unless `database_url` names a file elsewhere). The file itself may be
///   missing from an existing directory: that directory was chosen on purpose.
/// - PostgreSQL: the database is the server's to have or not (connecting says
///   which), so no directory is needed for it.
/// - Either way, a command that opens the master key needs the directory of
///   the master key file (`master_key_file`, else the data directory) unless
///   `master_key` is set; the file itself is made by the first rotation after
///   `migrate`, and missing later is refused by the key store.
pub fn require_existing_data(
    settings: &crate::infra::config::Settings,
    opens: Opens,
) -> Result<(), crate::cli::Failure> {
    use secrecy::ExposeSecret as _;
    let missing = |what: String, create_with: &str, point_with: &str| {
        crate::cli::Failure::Input(format!(
            "{what} does not exist; run {create_with} to create it, or point to yours with {point_with}"
        ))
    };
    let existing_dir = |file: &std::path::Path| {
        let dir = file.parent().unwrap_or(std::path::Path::new(""));
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        (dir.is_dir(), dir.to_path_buf())
    };
    if let Some(database) = crate::store::sqlite_file(settings.database_url.expose_secret()) {
        let (exists, dir) = existing_dir(database);
        if !exists {
            let what = if dir == settings.data_dir {
                format!("data directory {}", dir.display())
            } else {
                format!("directory {} (of database_url)", dir.display())
            };
            return Err(missing(
                what,
                "`tokengate serve` or `tokengate migrate`",
                "--data-dir, TOKENGATE_DATA_DIR or database_url",
            ));
        }
        // An existing but empty directory (an unmounted volume's mount
        // point) must not become a second, empty installation either.
        if !database.is_file() {
            return Err(missing(
                format!("database {}", database.display()),
                "`tokengate serve` or `tokengate migrate`",
                "--data-dir, TOKENGATE_DATA_DIR or database_url",
            ));
        }
    }
    if opens == Opens::DatabaseAndMasterKey && settings.master_key.is_none() {
        let (exists, dir) = existing_dir(&crate::service::keys::master_key_path(settings));
        if !exists {
            let what = if settings.master_key_file.is_some() {
                format!("directory {} (of master_key_file)", dir.display())
            } else {
                format!("data directory {} (for master.key)", dir.display())
            };
            return Err(missing(
                what,
                "`tokengate serve`",
                "--data-dir, TOKENGATE_DATA_DIR, master_key_file or master_key",
            ));
        }
    }
    Ok(())
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
