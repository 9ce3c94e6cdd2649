//! The tokengate auth service and command-line tool.
//!
//! Layers, imports pointing down only:
//!
//! - front ends: [`cli`] (clap, the one failure → exit-code mapping, the
//!   commands) and [`http`] (axum router, middleware, extractors, routes,
//!   the one error → problem+json mapping, the accept loop); [`startup`]
//!   wires a running service together;
//! - [`service`]: every rule, once, for both front ends;
//! - [`store`] (SQLite / PostgreSQL) and [`domain`] (types parsed once);
//! - [`infra`]: configuration, telemetry, metrics, the password hasher, the
//!   clock, the revocation and throttle backends, client addresses, private
//!   files, the audit event.
//!
//! Nothing imports a layer above its own; `docs/ARCHITECTURE.md` has the
//! full map.
#![forbid(unsafe_code)]

pub mod cli;
pub mod domain;
pub mod http;
pub mod infra;
pub mod service;
pub mod startup;
pub mod store;
