//! `tokengate secret generate`.

use crate::cli::Failure;
use crate::cli::output::stdout_line;

/// Prints a random base64url secret of `bytes` bytes.
pub fn generate(bytes: usize) -> Result<(), Failure> {
    let secret = tokengate::generate_secret(bytes).map_err(|e| Failure::Input(e.to_string()))?;
    stdout_line!("{secret}")?;
    Ok(())
}
