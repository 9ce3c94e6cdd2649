//! The tokengate auth service and command-line tool.
//!
//! `cli` holds the clap definitions and dispatch; `commands` holds what each
//! subcommand does; `keyfile` reads and writes key files.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod keyfile;
pub mod keystore;
pub mod metrics;
pub mod password;
pub mod ratelimit;
pub mod revocation;
pub mod server;
pub mod service;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
