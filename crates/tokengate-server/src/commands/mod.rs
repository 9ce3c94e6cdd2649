//! What each subcommand does. Each returns `Result<(), Failure>`; the exit
//! code and the one line on stderr are decided in `cli::main`.

pub mod keys;
pub mod secret;
pub mod serve;
pub mod token;
pub mod user;

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
