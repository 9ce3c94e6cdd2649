//! `tokengate migrate-data --from URL --to URL [--force]`: the front end of
//! the store's copy (`store::migrate_data`). Here: a progress bar per table
//! on stderr (indicatif draws nothing when stderr is not a terminal), the
//! summary on stdout, the URLs only ever shown redacted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::output::stdout_line;
use crate::cli::{Failure, MigrateDataArgs};
use crate::infra::config::redact_url;
use crate::store::{Copied, Progress, migrate_data};

/// Runs the copy and prints what it did.
pub fn run(args: MigrateDataArgs) -> Result<(), Failure> {
    let bars = Bars::default();
    let copied = super::block_on(migrate_data(&args.from, &args.to, args.force, &|p| {
        bars.show(p);
    }))?;
    bars.finish(copied.is_ok());
    let copied = copied?;
    // The signing keys moved as they were stored, sealed under the master
    // key; the refresh-token chain is keyed from it too. Without the same
    // master key the new deployment cannot start (or would make a new one
    // and orphan every key and session).
    stdout_line!(
        "signing keys were copied still sealed under the master key: give the new deployment the same one (the master.key file of the old data directory, or the same master_key_file / master_key setting)"
    )?;
    stdout_line!(
        "copied {} from {} to {}{}",
        summary(&copied),
        redact_url(&args.from),
        redact_url(&args.to),
        match copied.replaced {
            0 => String::new(),
            n => format!(
                " (replacing the {} the target held)",
                count(n, "row", "rows")
            ),
        }
    )?;
    Ok(())
}

/// One bar per table, each left showing its count when done.
#[derive(Default)]
struct Bars {
    multi: indicatif::MultiProgress,
    current: Mutex<Option<indicatif::ProgressBar>>,
    /// Whether any bar was added (a refused copy shows none).
    shown: AtomicBool,
}

impl Bars {
    fn show(&self, progress: Progress) {
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        match progress {
            Progress::Table { table, rows } => {
                if let Some(done) = current.take() {
                    done.finish();
                }
                let bar = self.multi.add(indicatif::ProgressBar::new(rows));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg:>15} {bar:40} {pos}/{len}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(table);
                *current = Some(bar);
                self.shown.store(true, Ordering::Relaxed);
            }
            Progress::Rows(n) => {
                if let Some(bar) = current.as_ref() {
                    bar.inc(n);
                }
            }
        }
    }

    /// Leaves the last bar full, or where the copy stopped, and moves the
    /// cursor below the bars: indicatif leaves it at the end of the last
    /// one, where the summary or the error line would be glued on.
    fn finish(&self, copied: bool) {
        if let Ok(mut current) = self.current.lock()
            && let Some(bar) = current.take()
        {
            if copied {
                bar.finish();
            } else {
                bar.abandon();
            }
        }
        if self.shown.load(Ordering::Relaxed) && !self.multi.is_hidden() {
            eprintln!();
        }
    }
}

/// `3 users, 5 sessions, …`, every table in copy order.
fn summary(copied: &Copied) -> String {
    copied
        .tables
        .iter()
        .map(|&(table, n)| match table {
            "users" => count(n, "user", "users"),
            "sessions" => count(n, "session", "sessions"),
            "refresh_tokens" => count(n, "refresh token", "refresh tokens"),
            "signing_keys" => count(n, "signing key", "signing keys"),
            "audit_events" => count(n, "audit event", "audit events"),
            // A table added later is still counted, by its own name.
            other => format!("{n} {other} rows"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "1 user", "2 users".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
