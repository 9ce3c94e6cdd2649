//! The endpoints, by audience. Each handler translates HTTP into a service
//! call and its outcome back into HTTP; the rules live in [`crate::service`].

pub mod account;
pub mod admin;
pub mod auth;
pub mod verify;
pub mod wellknown;
