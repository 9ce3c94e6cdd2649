//! The guard's integration-test binary: each test runs a real HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwks;
