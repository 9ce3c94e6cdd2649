//! Extractors: JSON bodies whose rejections are problem documents, and the
//! bearer-token authentication every protected route uses.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tokengate::AccessClaims;

use super::error::ApiError;
use crate::domain::{SessionId, UserId};
use crate::http::state::AppState;
use crate::infra::client_ip::ClientIp;

/// The client's address, as the `client_ip` middleware resolved it once per
/// request (the peer, or behind a trusted proxy the forwarded address).
impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or_else(|| ApiError::Internal("client address not resolved".into()))
    }
}

/// `Json<T>` with problem+json rejections.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Invalid {
                field: "body",
                detail: e.body_text(),
            }),
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::BadRequest("the body is not valid JSON".into()))
            }
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge)
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// A request carrying a valid, unrevoked access token in
/// `Authorization: Bearer`. A token anywhere else (query string, cookie)
/// is never looked at. Who it is for is parsed once, here.
pub struct Authenticated {
    /// The user (`sub`).
    pub user_id: UserId,
    /// The session (`sid`, which the policy requires).
    pub session_id: SessionId,
    /// The verified claims.
    pub claims: AccessClaims,
}

/// An authenticated caller whose *current* roles (read from the database,
/// not trusted from the token) include `admin`, and who is not disabled.
pub struct Admin {
    /// The admin's user id.
    pub id: UserId,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        let user = state
            .store
            .user_by_id(&caller.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(ApiError::InvalidToken { presented: true })?;
        if user.roles.contains("admin") {
            Ok(Admin { id: user.id })
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::InvalidToken { presented: false });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::InvalidToken { presented: true })?;
        let now = state.clock.now();
        let verified = state
            .keys
            .current()
            .ring
            .verify::<AccessClaims>(token, &state.policy, now)
            .map_err(|e| {
                crate::infra::metrics::token_rejected(e.code());
                tracing::info!(event = "access_token_rejected", reason = %e);
                ApiError::InvalidToken { presented: true }
            })?;
        let claims = verified.claims;
        if state
            .denylist
            .is_revoked(
                claims.sid.as_deref(),
                &claims.sub,
                claims.iat,
                now.as_secs(),
            )
            .await
        {
            crate::infra::metrics::token_rejected("revoked");
            tracing::info!(event = "access_token_rejected", reason = "revoked", user_id = %claims.sub, session_id = claims.sid.as_deref().unwrap_or(""));
            return Err(ApiError::InvalidToken { presented: true });
        }
        // The policy requires `sid`; a token without one never gets here.
        let session_id = claims
            .sid
            .clone()
            .ok_or(ApiError::InvalidToken { presented: true })?;
        Ok(Authenticated {
            user_id: UserId::from(claims.sub.clone()),
            session_id: SessionId::from(session_id),
            claims,
        })
    }
}
