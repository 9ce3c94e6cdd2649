//! Standard output for every command: one place that knows a closed pipe is
//! not an error.
//!
//! `tokengate user list | head -1` closes the pipe after one line. Rust
//! ignores SIGPIPE, so the next write fails with `BrokenPipe`; `println!`
//! would panic on it (exit 101). A Unix tool in the same place is killed by
//! SIGPIPE, which a shell reports as 141 (128 + 13), silently. We do the
//! same without the signal: stop writing, print nothing on stderr, exit 141.
//! Exit 0 would tell a `set -o pipefail` script that the whole output was
//! written when it was not; 141 is what such scripts already expect from
//! `cat` or `grep` upstream of `head`.

use std::fmt;
use std::io::Write as _;

use super::Failure;

/// Writes `text` and a newline to standard output.
pub fn line(text: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(failure)
}

/// Writes `text` to standard output as it is (it carries its own newlines).
pub fn text(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(failure)
}

fn failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::Input(format!("cannot write to standard output: {e}"))
    }
}

/// `println!` for command output: `stdout_line!("{kid}")?`. A closed pipe
/// becomes [`Failure::OutputClosed`] instead of a panic.
macro_rules! stdout_line {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use stdout_line;
