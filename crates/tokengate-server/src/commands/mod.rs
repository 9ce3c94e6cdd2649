//! What each subcommand does. Each returns `Result<(), Failure>`; the exit
//! code and the one line on stderr are decided in `cli::main`.

pub mod keys;
pub mod secret;
pub mod serve;
pub mod token;
pub mod user;
