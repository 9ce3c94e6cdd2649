//! The server crate's one integration-test binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod app;
mod attacks;
mod cli;
mod connections;
mod cookies;
mod example;
mod forward_auth;
mod fuzz_corpus;
mod hardening;
mod helpers;
mod logs;
mod metrics;
mod migrate_data;
mod openapi;
mod pg_probe;
mod process;
mod rotation;
mod scale;
mod service;
mod tls;
mod users_cli;
mod verify;
