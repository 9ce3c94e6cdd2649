//! The guard in axum: two tower layers and two extractors.
//!
//! ```ignore
//! let api = Router::new()
//!     .route("/api/protected", get(protected))
//!     .route("/api/admin", get(admin).route_layer(guard.require().role("admin")))
//!     .route_layer(guard.require());
//! ```
//!
//! [`RequireAuthLayer`] (from [`Guard::require`]) refuses a request without a
//! valid token; [`VerifyIfPresentLayer`] (from [`Guard::optional`]) refuses a
//! bad token but lets a request without one through. Both leave the
//! [`VerifiedToken`] in the request's extensions, where [`Auth`] and
//! [`OptionalAuth`] find it without verifying twice.
//!
//! A 401 that refused a token read from a cookie (expired, revoked, bad)
//! also clears that cookie ([`Guard::clearing_cookie`]), as the issuer
//! does: a browser would otherwise keep sending the dead token.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderValue, Request};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{Guard, Rejection, Requirement, VerifiedToken};
use crate::claims::AccessClaims;

/// A [`Rejection`] as an HTTP response: the status, the RFC 6750 challenge
/// and a generic problem+json body (RFC 9457).
#[derive(Debug, Clone)]
pub struct AuthRejection {
    rejection: Rejection,
    realm: Arc<str>,
    /// The `Set-Cookie` that clears the cookie whose token was refused.
    clear_cookie: Option<HeaderValue>,
}

impl AuthRejection {
    /// What was refused.
    pub fn rejection(&self) -> &Rejection {
        &self.rejection
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let status = self.rejection.status();
        let body = serde_json::json!({
            "type": format!("urn:tokengate:problem:{}", self.rejection.slug()),
            "title": self.rejection.title(),
            "status": status.as_u16(),
            "detail": self.rejection.public_message(),
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(value) = self
            .rejection
            .challenge(&self.realm)
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        if matches!(self.rejection, Rejection::Unavailable) {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Some(cleared) = self.clear_cookie {
            headers.append(http::header::SET_COOKIE, cleared);
        }
        response
    }
}

impl Guard {
    /// A layer that requires a valid token on every route it wraps; add
    /// [`RequireAuthLayer::role`], [`RequireAuthLayer::scope`] or
    /// [`RequireAuthLayer::claims`] for authorization (403 when unmet).
    pub fn require(&self) -> RequireAuthLayer {
        RequireAuthLayer {
            guard: self.clone(),
            requirements: Arc::from(Vec::new()),
            optional: false,
        }
    }

    /// A layer that verifies a token when one is sent (a bad one is still a
    /// 401) and lets requests without one through, for routes that serve
    /// everyone but say more to a signed-in caller ([`OptionalAuth`]).
    pub fn optional(&self) -> VerifyIfPresentLayer {
        VerifyIfPresentLayer {
            inner: RequireAuthLayer {
                guard: self.clone(),
                requirements: Arc::from(Vec::new()),
                optional: true,
            },
        }
    }

    fn rejection(&self, rejection: Rejection) -> AuthRejection {
        AuthRejection {
            rejection,
            realm: Arc::from(self.realm()),
            clear_cookie: None,
        }
    }

    /// [`Guard::check_request`], with the answer as an [`AuthRejection`]:
    /// a 401 for a token read from a cookie carries the `Set-Cookie` that
    /// clears it. Any other refusal leaves cookies alone: a bad bearer
    /// token says nothing about a cookie, a cookie sent twice may be a
    /// planted one we cannot clear, a 403 (CSRF, a missing role) or a 503
    /// refuses the request, not the token.
    async fn check_and_clear(
        &self,
        method: &http::Method,
        headers: &http::HeaderMap,
    ) -> Result<Option<VerifiedToken>, AuthRejection> {
        let presented = match self.presented_token(headers) {
            Ok(Some(presented)) => presented,
            Ok(None) => return Ok(None),
            Err(rejection) => return Err(self.rejection(rejection)),
        };
        let clearing = self.clearing_cookie(&presented);
        match self.check_presented(method, headers, presented).await {
            Ok(verified) => Ok(Some(verified)),
            Err(rejection) => {
                let clear_cookie = clearing.filter(|_| rejection == Rejection::InvalidToken);
                Err(AuthRejection {
                    clear_cookie,
                    ..self.rejection(rejection)
                })
            }
        }
    }
}

/// Requires a valid access token (and any requirements added) on the routes
/// it wraps. Made by [`Guard::require`].
#[derive(Clone)]
pub struct RequireAuthLayer {
    guard: Guard,
    requirements: Arc<[Requirement]>,
    optional: bool,
}

impl std::fmt::Debug for RequireAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireAuthLayer")
            .field("requirements", &self.requirements)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl RequireAuthLayer {
    fn with(self, requirement: Requirement) -> Self {
        let mut requirements = self.requirements.to_vec();
        requirements.push(requirement);
        RequireAuthLayer {
            requirements: Arc::from(requirements),
            ..self
        }
    }

    /// Also requires the role `role` (403 without it).
    pub fn role(self, role: impl Into<String>) -> Self {
        self.with(Requirement::role(role))
    }

    /// Also requires the scope `scope` (403 without it).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.with(Requirement::scope(scope))
    }

    /// Also requires `predicate` to hold on the claims (403 when it does not).
    pub fn claims(
        self,
        predicate: impl Fn(&Map<String, Value>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.with(Requirement::claims(predicate))
    }
}

/// Verifies a token when one is sent; made by [`Guard::optional`].
#[derive(Clone, Debug)]
pub struct VerifyIfPresentLayer {
    inner: RequireAuthLayer,
}

impl<S> tower_layer::Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            layer: self.clone(),
            inner,
        }
    }
}

impl<S> tower_layer::Layer<S> for VerifyIfPresentLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            layer: self.inner.clone(),
            inner,
        }
    }
}

/// The service of [`RequireAuthLayer`] and [`VerifyIfPresentLayer`].
#[derive(Clone, Debug)]
pub struct RequireAuth<S> {
    layer: RequireAuthLayer,
    inner: S,
}

impl<S> tower_service::Service<Request<Body>> for RequireAuth<S>
where
    S: tower_service::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let guard = &layer.guard;
            let verified = match guard
                .check_and_clear(request.method(), request.headers())
                .await
            {
                Ok(Some(token)) => token,
                Ok(None) if layer.optional => {
                    request.extensions_mut().insert(guard.clone());
                    return inner.call(request).await;
                }
                Ok(None) => {
                    tracing::info!(
                        event = "access_token_rejected",
                        reason = "missing",
                        "no access token"
                    );
                    return Ok(guard.rejection(Rejection::Missing).into_response());
                }
                Err(rejection) => return Ok(rejection.into_response()),
            };
            for requirement in layer.requirements.iter() {
                if let Err(rejection) = requirement.check(&verified) {
                    return Ok(guard.rejection(rejection).into_response());
                }
            }
            request.extensions_mut().insert(guard.clone());
            request.extensions_mut().insert(verified);
            inner.call(request).await
        })
    }
}

/// The verified claims of the request's access token, as `C`.
///
/// Behind [`Guard::require`] (or [`Guard::optional`]) it takes the token the
/// layer verified. On a route without a guard layer it needs the [`Guard`]
/// in the request extensions (`Extension(guard)`), and verifies itself.
/// Without a token: 401 with `WWW-Authenticate: Bearer`. Claims that do not
/// fit `C`: 401, the mismatch logged.
#[derive(Debug, Clone)]
pub struct Auth<C = AccessClaims> {
    /// The claims.
    pub claims: C,
    /// The verified token (header, raw claims, roles, scopes).
    pub token: VerifiedToken,
}

/// Like [`Auth`], but `None` when the request carries no token. A token that
/// is sent and bad is still refused with 401: a client that meant to
/// authenticate learns that it failed.
#[derive(Debug, Clone)]
pub struct OptionalAuth<C = AccessClaims>(pub Option<Auth<C>>);

/// Finds or makes the request's verified token: `Ok(None)` when it has none.
async fn verified_token(parts: &mut Parts) -> Result<Option<VerifiedToken>, AuthRejection> {
    if let Some(token) = parts.extensions.get::<VerifiedToken>() {
        return Ok(Some(token.clone()));
    }
    let Some(guard) = parts.extensions.get::<Guard>().cloned() else {
        tracing::error!(
            event = "guard_missing",
            "Auth/OptionalAuth used on a route without a guard layer or Extension(guard): refusing"
        );
        return Err(AuthRejection {
            rejection: Rejection::Unavailable,
            realm: Arc::from("api"),
            clear_cookie: None,
        });
    };
    let token = guard.check_and_clear(&parts.method, &parts.headers).await?;
    if let Some(token) = &token {
        parts.extensions.insert(token.clone());
    }
    Ok(token)
}

/// The claims as `C`. A mismatch is a 401 that leaves any cookie alone:
/// the token verified, and `C` is the API's own type (a mismatch can be
/// the API's bug, which clearing every caller's cookie would not fix).
fn typed<C: DeserializeOwned>(token: VerifiedToken, realm: &str) -> Result<Auth<C>, AuthRejection> {
    match token.claims::<C>() {
        Ok(claims) => Ok(Auth { claims, token }),
        Err(e) => {
            tracing::info!(event = "access_token_rejected", reason = e.code(), detail = %e, "access token rejected");
            Err(AuthRejection {
                rejection: Rejection::InvalidToken,
                realm: Arc::from(realm),
                clear_cookie: None,
            })
        }
    }
}

fn realm_of(parts: &Parts) -> Arc<str> {
    parts
        .extensions
        .get::<Guard>()
        .map_or_else(|| Arc::from("api"), |g| Arc::from(g.realm()))
}

impl<S, C> FromRequestParts<S> for Auth<C>
where
    S: Send + Sync,
    C: DeserializeOwned + Send + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match verified_token(parts).await? {
            Some(token) => typed(token, &realm_of(parts)),
            None => Err(AuthRejection {
                rejection: Rejection::Missing,
                realm: realm_of(parts),
                clear_cookie: None,
            }),
        }
    }
}

impl<S, C> FromRequestParts<S> for OptionalAuth<C>
where
    S: Send + Sync,
    C: DeserializeOwned + Send + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // `Option<Auth<C>>`, under a name that reads well in a handler.
        <Auth<C> as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(OptionalAuth)
    }
}

impl<S, C> OptionalFromRequestParts<S> for Auth<C>
where
    S: Send + Sync,
    C: DeserializeOwned + Send + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match verified_token(parts).await? {
            Some(token) => typed(token, &realm_of(parts)).map(Some),
            None => Ok(None),
        }
    }
}
