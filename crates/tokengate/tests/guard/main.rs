//! The guard over real HTTP: the axum layer and extractors, and the remote
//! JWKS client against servers the tests control.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod jwks;
mod layer;
