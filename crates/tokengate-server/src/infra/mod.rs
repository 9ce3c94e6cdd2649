//! Infrastructure below the service: what any layer may use, and which
//! uses none of them.

pub mod announce;
pub mod audit;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod files;
pub mod metrics;
pub mod password;
pub mod ratelimit;
pub mod telemetry;
