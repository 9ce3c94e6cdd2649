//! The tokengate auth service and command-line tool.
//!
//! `cli` holds the clap definitions and dispatch; `commands` holds what each
//! subcommand does; `keyfile` reads and writes key files.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod keyfile;
pub mod clock;
pub mod config;
pub mod storage;
pub mod domain;
pub mod password;
pub mod keystore;
pub mod ratelimit;
pub mod revocation;
pub mod api;
pub mod startup;
pub mod state;
pub mod telemetry;
