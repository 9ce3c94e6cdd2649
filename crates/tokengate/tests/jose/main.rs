//! The library's one integration-test binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod interop;
mod keys;
mod never_panics;
mod properties;
mod rejections;
mod round_trip_properties;
mod roundtrip;
mod vectors;
