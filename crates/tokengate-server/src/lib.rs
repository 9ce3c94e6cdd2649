//! The tokengate auth service and command-line tool.
//!
//! Layers, imports pointing down only: the front ends (`cli` + `commands`;
//! `api`, built and served by `startup` and `server`) call `service`, which
//! uses `storage`, `keystore` and `domain`; infrastructure such as `files`,
//! `clock` and `metrics` is below them all. Nothing under the front ends
//! imports `cli` or `commands`; `docs/ARCHITECTURE.md` has the full map.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod files;
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
