//! The `tokengate` binary: parse the command line, run, exit.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tokengate_server::cli::main()
}
