//! The service layer: every rule of the service, written once. Both front
//! ends — the HTTP handlers and the `user` CLI — call these functions and
//! only translate their inputs and outcomes; nothing here knows axum or
//! clap. Each change is one store transaction with its audit row, then its
//! effect on the in-process denylist.

pub mod accounts;
pub mod activity;
pub mod denylist;
pub mod keys;
pub mod sessions;

pub use accounts::{Accounts, Actor, NewAccount};
pub use denylist::Denylist;
pub use sessions::{CsrfRefusal, IssuedTokens, LoginRequest, LogoutScope, Sessions};

use crate::infra::password::{HashError, Hasher, Verdict};
use crate::infra::ratelimit::{Attempt, LoginThrottle, Reservation};
use crate::store::StoreError;

/// What a service call can fail with. Client mistakes and refusals have
/// their own variants (the front ends map each once); everything else is a
/// fault of ours.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An input failed validation; the detail says how to fix it.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The input.
        field: &'static str,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Wrong email or password (deliberately one answer for both).
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    /// The current password given to change it is wrong (the caller is
    /// known, so this need not hide which input was wrong).
    #[error("the current password is incorrect")]
    WrongCurrentPassword,
    /// The account is disabled (said only after the right password).
    #[error("the account is disabled")]
    AccountDisabled,
    /// A limit was reached; try again after this many seconds.
    #[error("too many attempts: try again in {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The email already has an account.
    #[error("{0} already has an account")]
    EmailTaken(String),
    /// Bad, used, expired or revoked refresh token.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// No such user or session (or not the caller's).
    #[error("not found")]
    NotFound,
    /// The authenticated caller's account no longer exists.
    #[error("the caller's account no longer exists")]
    CallerGone,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing failed or is saturated.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    fn invalid<E: std::fmt::Display>(field: &'static str) -> impl FnOnce(E) -> ServiceError {
        move |e| ServiceError::Invalid {
            field,
            detail: e.to_string(),
        }
    }

    /// The system random generator failed (ids, tokens): our fault.
    fn random_failed() -> ServiceError {
        ServiceError::Internal("random generator failed".into())
    }
}

/// A random id, or an internal error if the system random generator fails.
fn random_id() -> Result<String, ServiceError> {
    crate::domain::random_id().ok_or_else(ServiceError::random_failed)
}

/// Checks a password under a throttle reservation and settles it by the
/// outcome: a match is no failure, a mismatch stays counted, a check that
/// never ran (the hashing pool saturated) is released. Login and password
/// change share it, so the throttle's rule is kept once.
async fn verify_reserved(
    throttle: &dyn LoginThrottle,
    hasher: &Hasher,
    reservation: Reservation,
    password: &str,
    stored: Option<&str>,
) -> Result<Verdict, ServiceError> {
    match hasher.verify(password, stored).await {
        Ok(verdict) => {
            let attempt = if verdict.matches {
                Attempt::Succeeded
            } else {
                Attempt::Failed
            };
            throttle.settle(reservation, attempt).await;
            Ok(verdict)
        }
        Err(e) => {
            throttle.settle(reservation, Attempt::Unchecked).await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests;
