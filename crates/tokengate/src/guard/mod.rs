//! The bouncer: verifies the access token of an incoming request.
//!
//! A [`Guard`] puts together what deciding one request takes, in this order:
//! where the token is read from ([`TokenSource`]: the `Authorization: Bearer`
//! header, or a named cookie; never the query string), the keys
//! ([`KeySource`]: a local [`KeyRing`](crate::KeyRing), a service's rotating keys, or a
//! remote JWKS), the [`VerifyPolicy`] (signature, `typ`, `exp`/`nbf`/`iat`,
//! issuer, audience), then the revocation hook ([`Revocations`]) — checked
//! on every request, cached or not. A bounded cache of verified tokens lets a
//! token presented again skip the signature check (see [`GuardBuilder::cache`]).
//!
//! The outcome is a [`VerifiedToken`], or a [`Rejection`] that says which
//! HTTP answer to give (401, 403 or 503) and nothing more: the precise
//! reason goes to `tracing` at `info` (`event = "access_token_rejected"`),
//! never to the client.
//!
//! With the `axum` feature, [`Guard::require`] and [`Guard::optional`] are
//! tower layers and [`Auth`]/[`OptionalAuth`] the extractors.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tokengate::guard::{Guard, StaticKeys};
//! use tokengate::{Algorithm, KeyRing, SigningKey, VerifyPolicy};
//!
//! let ring = KeyRing::with_signing_key(SigningKey::generate(Algorithm::ES256, None)?);
//! let policy = VerifyPolicy::builder()
//!     .issuer("https://auth.example")
//!     .audience("api")
//!     .typ("at+jwt")
//!     .build()?;
//! let guard = Guard::builder(StaticKeys::new(ring), policy).build();
//! # let _ = guard;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Error;
use crate::jws::Header;
use crate::policy::VerifyPolicy;
use crate::time::UnixTime;

mod cache;
mod csrf;
mod keys;
mod revocation;

#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "jwks")]
mod jwks;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "axum")]
pub use self::axum::{
    Auth, AuthRejection, OptionalAuth, RequireAuth, RequireAuthLayer, VerifyIfPresentLayer,
};
#[cfg(feature = "redis")]
pub use self::redis::{
    DEFAULT_DENYLIST_PREFIX, DEFAULT_REDIS_TIMEOUT, DenylistKeys, RedisRevocations, redis_call,
    redis_connect, redis_connect_lazy, redis_key_part,
};
pub use cache::DEFAULT_CACHE_SIZE;
use cache::VerifiedCache;
pub use csrf::{
    CSRF_CLAIM, CsrfFailure, CsrfPolicy, DEFAULT_ACCESS_COOKIE, DEFAULT_CSRF_COOKIE,
    DEFAULT_CSRF_HEADER, csrf_claim_value, csrf_digest,
};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use jwks::fuzzing as __fuzz_jwks;
#[cfg(feature = "jwks")]
pub use jwks::{JwksError, RemoteJwks, RemoteJwksBuilder};
pub use keys::{KeySource, StaticKeys};
pub use revocation::{
    BoxFuture, InProcessRevocations, NoRevocations, RecordRevocations, RevocationError,
    RevocationQuery, Revocations,
};

/// Where a request's access token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1), the default.
    AuthorizationHeader,
    /// The cookie of this name. Opt-in: a browser sends cookies on its own,
    /// so a request authenticated by it with an unsafe method must pass the
    /// guard's [`CsrfPolicy`].
    Cookie(String),
}

/// The `SameSite` attribute of the cookie that clears a refused access
/// cookie ([`Guard::clearing_cookie`]): the issuer's own, so that the
/// clearing `Set-Cookie` is the one the issuer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// `SameSite=Strict` (tokengate's default, `cookie_same_site`).
    #[default]
    Strict,
    /// `SameSite=Lax`.
    Lax,
}

/// What happens when the revocation hook cannot answer (its store is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationFailure {
    /// Refuse the request with 503: a revoked token never gets through.
    #[default]
    FailClosed,
    /// Let a token that otherwise verifies through, with a warning: a
    /// logged-out token may then work until its `exp`. Availability first.
    FailOpen,
}

/// The current time, for the claims checks. Tests pass a manual clock.
pub type ClockFn = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// Told the reason code of every refusal (`expired`, `bad_signature`,
/// `revoked`, `not_bearer`, …: [`Error::code`] and a few of the guard's
/// own), for metrics. Called on the request path: keep it cheap.
pub type RejectionObserver = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Why a request was refused, as the HTTP answer it calls for. The detail
/// was logged when the rejection was made; clients see only the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No token was sent: 401 with `WWW-Authenticate: Bearer` (no error
    /// code, RFC 6750 §3.1).
    Missing,
    /// A token was sent and is not valid (malformed, bad signature, expired,
    /// wrong issuer or audience, revoked, …): 401 with
    /// `error="invalid_token"`.
    InvalidToken,
    /// The token is valid but lacks what the route requires (a role, a
    /// scope, a claim): 403 with `error="insufficient_scope"`.
    InsufficientScope {
        /// The scope to name in the challenge, when the requirement was one.
        scope: Option<String>,
    },
    /// The decision could not be made: the revocation store or the key
    /// source is unavailable. 503; the client may retry.
    Unavailable,
    /// A valid token from a cookie, on an unsafe request that failed the
    /// CSRF check ([`CsrfPolicy`]): 403, no challenge (a new token would
    /// not help; the request must come from the application).
    Csrf,
}

impl Rejection {
    /// The HTTP status this rejection calls for.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Rejection::Missing | Rejection::InvalidToken => http::StatusCode::UNAUTHORIZED,
            Rejection::InsufficientScope { .. } | Rejection::Csrf => http::StatusCode::FORBIDDEN,
            Rejection::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for `realm`, if any.
    pub fn challenge(&self, realm: &str) -> Option<String> {
        let realm = realm.replace(['"', '\\'], "");
        match self {
            Rejection::Missing => Some(format!("Bearer realm=\"{realm}\"")),
            Rejection::InvalidToken => {
                Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\""))
            }
            Rejection::InsufficientScope { scope } => Some(match scope {
                // A scope token is NQCHAR (RFC 6749 §3.3): no quote, no backslash.
                Some(scope) if is_scope_token(scope) => format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
                _ => format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\""),
            }),
            Rejection::Unavailable | Rejection::Csrf => None,
        }
    }

    /// A short name for the problem+json `type` (`urn:tokengate:problem:<slug>`).
    pub fn slug(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing-token",
            Rejection::InvalidToken => "invalid-token",
            Rejection::InsufficientScope { .. } => "insufficient-scope",
            Rejection::Unavailable => "unavailable",
            Rejection::Csrf => "csrf-failed",
        }
    }

    /// The problem+json `title`.
    pub fn title(&self) -> &'static str {
        match self {
            Rejection::Missing => "Authentication required",
            Rejection::InvalidToken => "Invalid token",
            Rejection::InsufficientScope { .. } => "Insufficient scope",
            Rejection::Unavailable => "Service unavailable",
            Rejection::Csrf => "CSRF check failed",
        }
    }

    /// A generic sentence for the problem+json `detail`: it never says which
    /// check failed.
    pub fn public_message(&self) -> &'static str {
        match self {
            Rejection::Missing => "An access token is required.",
            Rejection::InvalidToken => Error::Expired.public_message(),
            Rejection::InsufficientScope { .. } => {
                "The access token does not grant access to this resource."
            }
            Rejection::Unavailable => "Authentication is unavailable right now; try again shortly.",
            Rejection::Csrf => {
                "A request authenticated by cookie must come from an allowed origin and echo the CSRF cookie in the X-CSRF-Token header."
            }
        }
    }
}

fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.public_message())
    }
}

impl std::error::Error for Rejection {}

/// A predicate on verified claims, for [`Requirement::Claims`].
pub type ClaimsPredicate = Arc<dyn Fn(&Map<String, Value>) -> bool + Send + Sync>;

/// What a route requires of a valid token, beyond being valid. Failing one
/// is a 403, not a 401: a new token of the same user would not help.
#[derive(Clone)]
pub enum Requirement {
    /// The roles claim (by default `roles`, an array of strings) holds this role.
    Role(String),
    /// The `scope` claim (space-separated, RFC 9068; or an array) holds this scope.
    Scope(String),
    /// A predicate on the verified claims.
    Claims(ClaimsPredicate),
}

impl Requirement {
    /// Requires the role `role`.
    pub fn role(role: impl Into<String>) -> Self {
        Requirement::Role(role.into())
    }

    /// Requires the scope `scope`.
    pub fn scope(scope: impl Into<String>) -> Self {
        Requirement::Scope(scope.into())
    }

    /// Requires `predicate` to hold on the claims.
    pub fn claims(predicate: impl Fn(&Map<String, Value>) -> bool + Send + Sync + 'static) -> Self {
        Requirement::Claims(Arc::new(predicate))
    }

    /// Checks the requirement against a verified token.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), Rejection> {
        let met = match self {
            Requirement::Role(role) => token.has_role(role),
            Requirement::Scope(scope) => token.has_scope(scope),
            Requirement::Claims(predicate) => predicate(token.claims_json()),
        };
        if met {
            return Ok(());
        }
        tracing::info!(
            event = "access_token_forbidden",
            requirement = ?self,
            user_id = token.subject(),
            "token lacks what the route requires"
        );
        Err(Rejection::InsufficientScope {
            scope: match self {
                Requirement::Scope(scope) => Some(scope.clone()),
                _ => None,
            },
        })
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Role(r) => write!(f, "role {r:?}"),
            Requirement::Scope(s) => write!(f, "scope {s:?}"),
            Requirement::Claims(_) => f.write_str("a claims predicate"),
        }
    }
}

/// A token that passed every check: signature, policy and revocation. Cheap
/// to clone (the claims are shared).
#[derive(Clone)]
pub struct VerifiedToken {
    inner: Arc<Checked>,
    roles_claim: Arc<str>,
}

/// What the signature and policy checks produced, cached as one piece.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) header: Header,
    /// Always a JSON object.
    pub(crate) claims: Value,
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The claims are the caller's data; `sub` is enough to say whose.
        f.debug_struct("VerifiedToken")
            .field("sub", &self.subject())
            .field("kid", &self.inner.header.kid)
            .finish_non_exhaustive()
    }
}

impl VerifiedToken {
    /// The verified protected header.
    pub fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The claims as a JSON object.
    pub fn claims_json(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match &self.inner.claims {
            Value::Object(map) => map,
            _ => EMPTY.get_or_init(Map::new),
        }
    }

    /// The claims deserialized into `C` (e.g. [`AccessClaims`](crate::AccessClaims)).
    pub fn claims<C: DeserializeOwned>(&self) -> Result<C, Error> {
        C::deserialize(&self.inner.claims).map_err(|e| Error::InvalidClaims(e.to_string()))
    }

    /// `sub`, or `""` when the token has none.
    pub fn subject(&self) -> &str {
        self.str_claim("sub").unwrap_or("")
    }

    /// `sid`, the session the token belongs to, if any.
    pub fn session(&self) -> Option<&str> {
        self.str_claim("sid")
    }

    /// A string claim by name.
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims_json().get(name).and_then(Value::as_str)
    }

    /// The roles: the strings of the roles claim (an array; a single string
    /// counts as one role).
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        string_items(self.claims_json().get(&*self.roles_claim))
    }

    /// Whether the roles claim holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().any(|r| r == role)
    }

    /// The scopes: `scope` split on spaces (RFC 9068 §2.2.3), or the strings
    /// of `scope` when it is an array.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        let claims = self.claims_json();
        let spaced = claims
            .get("scope")
            .and_then(Value::as_str)
            .into_iter()
            .flat_map(|s| s.split(' ').filter(|s| !s.is_empty()));
        let listed = match claims.get("scope") {
            Some(Value::Array(_)) => string_items(claims.get("scope")),
            _ => string_items(None),
        };
        spaced.chain(listed)
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

fn string_items(value: Option<&Value>) -> Box<dyn Iterator<Item = &str> + '_> {
    match value {
        Some(Value::Array(items)) => Box::new(items.iter().filter_map(Value::as_str)),
        Some(Value::String(one)) => Box::new(std::iter::once(one.as_str())),
        _ => Box::new(std::iter::empty()),
    }
}

/// Verifies requests' access tokens. Cheap to clone: clones share the keys,
/// the cache and the revocation hook.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    keys: Arc<dyn KeySource>,
    policy: VerifyPolicy,
    revocations: Arc<dyn Revocations>,
    on_revocation_failure: RevocationFailure,
    cache: Option<VerifiedCache>,
    clock: ClockFn,
    sources: Vec<TokenSource>,
    csrf: CsrfPolicy,
    cookie_same_site: SameSite,
    roles_claim: Arc<str>,
    realm: String,
    observer: Option<RejectionObserver>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("policy", &self.inner.policy)
            .field("sources", &self.inner.sources)
            .field("cache", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Guard`]; every setting has a safe default.
pub struct GuardBuilder {
    keys: Arc<dyn KeySource>,
    policy: VerifyPolicy,
    revocations: Arc<dyn Revocations>,
    on_revocation_failure: RevocationFailure,
    cache_size: usize,
    clock: ClockFn,
    sources: Vec<TokenSource>,
    csrf: CsrfPolicy,
    cookie_same_site: SameSite,
    roles_claim: String,
    realm: String,
    observer: Option<RejectionObserver>,
}

impl GuardBuilder {
    /// The revocation hook, checked after the signature and the claims on
    /// every request. Default: [`NoRevocations`] — purely stateless, so a
    /// logged-out token works until its `exp`; keep access tokens short, or
    /// pass the issuer's denylist.
    pub fn revocations(mut self, revocations: Arc<dyn Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// What to do when the revocation hook fails. Default: fail closed (503).
    pub fn on_revocation_failure(mut self, mode: RevocationFailure) -> Self {
        self.on_revocation_failure = mode;
        self
    }

    /// How many verified tokens to remember, so that a token presented
    /// again skips the signature check; 0 turns the cache off. Entries are
    /// keyed by the SHA-256 of the token, never outlive its `exp` (the
    /// claims are checked again on every hit), are dropped when the key set
    /// changes, and never skip the revocation check. Default:
    /// [`DEFAULT_CACHE_SIZE`].
    pub fn cache(mut self, entries: usize) -> Self {
        self.cache_size = entries;
        self
    }

    /// Where the token is read from, tried in order. Default: the
    /// `Authorization: Bearer` header only. The query string is never read
    /// (RFC 6750 §5.3: URLs end up in logs and `Referer`).
    pub fn token_sources(mut self, sources: Vec<TokenSource>) -> Self {
        self.sources = sources;
        self
    }

    /// Also reads the token from the cookie `name` (an issuer in cookie
    /// mode sets [`DEFAULT_ACCESS_COOKIE`]), after the header. Unsafe
    /// requests authenticated by it must pass the [`CsrfPolicy`]
    /// ([`GuardBuilder::csrf`]).
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        self.sources.push(TokenSource::Cookie(name.into()));
        self
    }

    /// The CSRF check for requests authenticated by cookie with a method
    /// other than GET, HEAD and OPTIONS. Default: [`CsrfPolicy::default`],
    /// which allows no origin (name the application's).
    pub fn csrf(mut self, policy: CsrfPolicy) -> Self {
        self.csrf = policy;
        self
    }

    /// The `SameSite` attribute of the `Set-Cookie` that clears a refused
    /// access cookie ([`Guard::clearing_cookie`]): the issuer's
    /// (tokengate's `cookie_same_site`). Default: [`SameSite::Strict`].
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.cookie_same_site = same_site;
        self
    }

    /// The claim that lists roles. Default: `roles`.
    pub fn roles_claim(mut self, name: impl Into<String>) -> Self {
        self.roles_claim = name.into();
        self
    }

    /// The realm named in `WWW-Authenticate`. Default: `api`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// A function told the reason code of every refusal (for metrics).
    pub fn on_rejection(mut self, observer: RejectionObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The clock for the time checks. Default: the system clock.
    pub fn clock(mut self, clock: ClockFn) -> Self {
        self.clock = clock;
        self
    }

    /// The guard.
    pub fn build(self) -> Guard {
        Guard {
            inner: Arc::new(GuardInner {
                keys: self.keys,
                policy: self.policy,
                revocations: self.revocations,
                on_revocation_failure: self.on_revocation_failure,
                cache: VerifiedCache::new(self.cache_size),
                clock: self.clock,
                sources: self.sources,
                csrf: self.csrf,
                cookie_same_site: self.cookie_same_site,
                roles_claim: Arc::from(self.roles_claim),
                realm: self.realm,
                observer: self.observer,
            }),
        }
    }
}

fn system_clock() -> UnixTime {
    UnixTime::from_system_time(std::time::SystemTime::now())
}

impl GuardInner {
    /// Logs a refusal with its detail (never the token) and tells the observer.
    fn refused(&self, reason: &'static str, detail: &dyn fmt::Display, token: Option<&Checked>) {
        let sub = token
            .and_then(|t| t.claims.get("sub"))
            .and_then(Value::as_str)
            .unwrap_or("");
        tracing::info!(
            event = "access_token_rejected",
            reason,
            detail = %detail,
            user_id = sub,
            "access token rejected"
        );
        if let Some(observer) = &self.observer {
            observer(reason);
        }
    }
}

impl Guard {
    /// Starts a guard over `keys` with `policy`.
    pub fn builder(keys: impl KeySource, policy: VerifyPolicy) -> GuardBuilder {
        GuardBuilder {
            keys: Arc::new(keys),
            policy,
            revocations: Arc::new(NoRevocations),
            on_revocation_failure: RevocationFailure::default(),
            cache_size: DEFAULT_CACHE_SIZE,
            clock: Arc::new(system_clock),
            sources: vec![TokenSource::AuthorizationHeader],
            csrf: CsrfPolicy::default(),
            cookie_same_site: SameSite::default(),
            roles_claim: "roles".to_owned(),
            realm: "api".to_owned(),
            observer: None,
        }
    }

    /// The verification policy.
    pub fn policy(&self) -> &VerifyPolicy {
        &self.inner.policy
    }

    /// The realm for `WWW-Authenticate`.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    /// The CSRF check applied to requests authenticated by cookie.
    pub fn csrf_policy(&self) -> &CsrfPolicy {
        &self.inner.csrf
    }

    /// The token a request carries, from the first configured source that
    /// has one; `Ok(None)` when none does.
    ///
    /// Deprecated: it does not say where the token came from, and a token
    /// from a cookie must also pass the CSRF check before it authorises an
    /// unsafe request. [`Guard::check_request`] does both (as the axum
    /// layer does); [`Guard::presented_token`] says the source when you
    /// need the raw token.
    #[deprecated(
        note = "a cookie token needs the CSRF check: use check_request, or presented_token and check_presented"
    )]
    pub fn token_in<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, Rejection> {
        Ok(self.presented_token(headers)?.map(|p| p.value))
    }

    /// The token a request carries and where it was found, from the first
    /// configured source that has one; `Ok(None)` when none does.
    ///
    /// An `Authorization: Bearer` header that is malformed (empty, not
    /// text, sent twice) is an invalid token, not a missing one: the client
    /// meant to authenticate. An `Authorization` header of another scheme
    /// (`Basic` from a staging proxy's password prompt) is no bearer token:
    /// when a cookie source is configured after it, the cookie is read;
    /// otherwise it is an invalid token, as before.
    ///
    /// Pass the result to [`Guard::check_presented`], which applies the CSRF
    /// rule to a token from a cookie; or use [`Guard::check_request`], which
    /// does both.
    pub fn presented_token<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<PresentedToken<'h>>, Rejection> {
        let cookie_configured = self
            .inner
            .sources
            .iter()
            .any(|s| matches!(s, TokenSource::Cookie(_)));
        for (index, source) in self.inner.sources.iter().enumerate() {
            match source {
                TokenSource::AuthorizationHeader => match authorization(headers) {
                    Authorization::Bearer(token) => {
                        return Ok(Some(PresentedToken {
                            value: token,
                            cookie: None,
                        }));
                    }
                    Authorization::Absent => {}
                    // Not ours to read: the cookie may still authenticate.
                    Authorization::OtherScheme if cookie_configured => {}
                    Authorization::OtherScheme => {
                        self.inner
                            .refused("not_bearer", &"Authorization is not Bearer", None);
                        return Err(Rejection::InvalidToken);
                    }
                    Authorization::Malformed(reason) => {
                        self.inner
                            .refused(reason, &"malformed Authorization header", None);
                        return Err(Rejection::InvalidToken);
                    }
                },
                TokenSource::Cookie(name) => match cookie_value(headers, name) {
                    Ok(Some(token)) => {
                        return Ok(Some(PresentedToken {
                            value: token,
                            cookie: Some(index),
                        }));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.inner.refused("several_cookies", &e, None);
                        return Err(Rejection::InvalidToken);
                    }
                },
            }
        }
        Ok(None)
    }

    /// Verifies a token [`Guard::presented_token`] found in a request made
    /// with `method`: [`Guard::verify`], then, for a token from a cookie,
    /// [`Guard::check_csrf`].
    pub async fn check_presented(
        &self,
        method: &Method,
        headers: &HeaderMap,
        presented: PresentedToken<'_>,
    ) -> Result<VerifiedToken, Rejection> {
        let verified = self.verify(presented.value).await?;
        if presented.from_cookie() {
            self.check_csrf(method, headers, &verified)?;
        }
        Ok(verified)
    }

    /// Verifies the token a request made with `method` carries, if any:
    /// `Ok(None)` when it carries none, a [`Rejection`] when it carries a
    /// bad one. A token read from a cookie on an unsafe method must also
    /// pass the CSRF check ([`Rejection::Csrf`]); a token from the
    /// `Authorization` header never needs it.
    pub async fn check_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<VerifiedToken>, Rejection> {
        let Some(presented) = self.presented_token(headers)? else {
            return Ok(None);
        };
        self.check_presented(method, headers, presented)
            .await
            .map(Some)
    }

    /// The CSRF check of a request authenticated by a cookie holding
    /// `token` (for callers that read the cookie themselves).
    pub fn check_csrf(
        &self,
        method: &Method,
        headers: &HeaderMap,
        token: &VerifiedToken,
    ) -> Result<(), Rejection> {
        self.inner
            .csrf
            .check_token(method, headers, token)
            .map_err(|failure| {
                let checked = &token.inner;
                self.inner
                    .refused(failure.code(), &failure, Some(checked.as_ref()));
                Rejection::Csrf
            })
    }

    /// The `Set-Cookie` value that clears the cookie `presented` was read
    /// from, for a 401 that refused its token (expired, revoked, bad): a
    /// browser would otherwise send the dead token on every request until
    /// the cookie's own `Max-Age` ran out. `None` for a token from the
    /// `Authorization` header, which is no cookie of ours to clear.
    ///
    /// The attributes are the issuer's (tokengate's access cookie):
    /// `Path=/`, no `Domain`, `HttpOnly`, the [`SameSite`] of
    /// [`GuardBuilder::cookie_same_site`], `Max-Age=0`, and `Secure` when
    /// the name has the `__Host-` or `__Secure-` prefix, in any case — which the
    /// browser requires for such a name, and which an unprefixed name
    /// (tokengate's plain-http development mode) must not have, or a
    /// browser on `http://` would ignore it.
    pub fn clearing_cookie(&self, presented: &PresentedToken<'_>) -> Option<http::HeaderValue> {
        let index = presented.cookie?;
        let Some(TokenSource::Cookie(name)) = self.inner.sources.get(index) else {
            return None;
        };
        // Browsers match the prefixes in any case (RFC 6265bis): `__host-x`
        // is refused without `Secure` as `__Host-x` is.
        let has_prefix = |prefix: &str| {
            name.get(..prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        };
        let secure = has_prefix("__Host-") || has_prefix("__Secure-");
        let same_site = match self.inner.cookie_same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        };
        let secure = if secure { "; Secure" } else { "" };
        http::HeaderValue::from_str(&format!(
            "{name}=; Path=/; Max-Age=0; HttpOnly{secure}; SameSite={same_site}"
        ))
        .ok()
    }

    /// Verifies a token: the signature and the policy (skipped for a token
    /// in the cache, whose claims are still checked against the clock), then
    /// the revocation hook.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, Rejection> {
        let inner = &self.inner;
        let now = (inner.clock)();
        let checked = self.check_signature_and_claims(token, now).await?;
        self.check_revocation(&checked, now).await?;
        Ok(VerifiedToken {
            inner: checked,
            roles_claim: inner.roles_claim.clone(),
        })
    }

    async fn check_signature_and_claims(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Arc<Checked>, Rejection> {
        let inner = &self.inner;
        let ring = inner.keys.keys();
        let cached = inner.cache.as_ref().and_then(|c| c.get(token, &ring));
        if let (Some(cache), Some(checked)) = (&inner.cache, cached) {
            // The signature held for these keys; time has moved since.
            // `Checked` is built from an object; anything else fails closed.
            let outcome = match &checked.claims {
                Value::Object(map) => crate::claims::check(map, &inner.policy, now),
                _ => Err(Error::Malformed("payload is not a JSON object")),
            };
            if let Err(e) = outcome {
                cache.remove(token);
                inner.refused(e.code(), &e, Some(&checked));
                return Err(Rejection::InvalidToken);
            }
            return Ok(checked);
        }
        let outcome = match ring.verify_to_object(token, &inner.policy, now) {
            // No keys yet (a remote source before its first fetch): a token
            // without a `kid` asks for them as an unknown one would.
            Err(Error::MissingKid) if ring.is_empty() => Err(Error::UnknownKid(String::new())),
            outcome => outcome,
        };
        let (ring, outcome) = match outcome {
            Err(Error::UnknownKid(kid)) => match inner.keys.unknown_kid(&kid).await {
                Some(fresh) => {
                    let outcome = fresh.verify_to_object(token, &inner.policy, now);
                    (fresh, outcome)
                }
                None if ring.is_empty() => {
                    inner.refused("no_keys", &"no verification keys are loaded yet", None);
                    return Err(Rejection::Unavailable);
                }
                None => (ring, Err(Error::UnknownKid(kid))),
            },
            outcome => (ring, outcome),
        };
        let (header, map) = outcome.map_err(|e| {
            inner.refused(e.code(), &e, None);
            Rejection::InvalidToken
        })?;
        let checked = Arc::new(Checked {
            header,
            claims: Value::Object(map),
        });
        if let Some(cache) = &inner.cache {
            cache.insert(token, &ring, checked.clone());
        }
        Ok(checked)
    }

    async fn check_revocation(&self, checked: &Checked, now: UnixTime) -> Result<(), Rejection> {
        let inner = &self.inner;
        let claims = &checked.claims;
        let query = RevocationQuery {
            sub: claims.get("sub").and_then(Value::as_str).unwrap_or(""),
            sid: claims.get("sid").and_then(Value::as_str),
            jti: claims.get("jti").and_then(Value::as_str),
            iat: claims.get("iat").and_then(Value::as_i64),
        };
        match inner.revocations.is_revoked(query, now).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                inner.refused("revoked", &"revoked", Some(checked));
                Err(Rejection::InvalidToken)
            }
            Err(e) => match inner.on_revocation_failure {
                RevocationFailure::FailClosed => {
                    tracing::error!(event = "revocation_unavailable", cause = %e, "revocation check failed: refusing (fail closed)");
                    if let Some(observer) = &inner.observer {
                        observer("revocation_unavailable");
                    }
                    Err(Rejection::Unavailable)
                }
                RevocationFailure::FailOpen => {
                    tracing::warn!(event = "revocation_unavailable", cause = %e, "revocation check failed: letting the token through (fail open)");
                    Ok(())
                }
            },
        }
    }
}

/// What a request's `Authorization` header holds.
enum Authorization<'h> {
    /// No header.
    Absent,
    /// `Bearer <token>`.
    Bearer(&'h str),
    /// A well-formed header of another scheme (`Basic …`).
    OtherScheme,
    /// Sent twice, not text, or `Bearer` without a token: the refusal's reason.
    Malformed(&'static str),
}

fn authorization(headers: &HeaderMap) -> Authorization<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Authorization::Absent;
    };
    // Two Authorization headers: which one a proxy and we each read could
    // differ. Refuse.
    if values.next().is_some() {
        return Authorization::Malformed("several_authorization_headers");
    }
    let Some(text) = value.to_str().ok().map(str::trim) else {
        return Authorization::Malformed("not_bearer");
    };
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return match rest.trim() {
            "" => Authorization::Malformed("not_bearer"),
            token => Authorization::Bearer(token),
        };
    }
    // A scheme is a token (RFC 9110 §11.1); anything else is garbage.
    if !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        Authorization::OtherScheme
    } else {
        Authorization::Malformed("not_bearer")
    }
}

/// A token as a request presented it ([`Guard::presented_token`]): the
/// value, and whether it came from a cookie (then an unsafe request needs
/// the CSRF check, which [`Guard::check_presented`] applies). Its `Debug`
/// never shows the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken<'h> {
    value: &'h str,
    /// The index of the cookie source it was read from, if any.
    cookie: Option<usize>,
}

impl<'h> PresentedToken<'h> {
    /// The token as sent. A token from a cookie authorises an unsafe
    /// request only after [`Guard::check_csrf`].
    pub fn value(&self) -> &'h str {
        self.value
    }

    /// Whether it came from a cookie (rather than `Authorization`).
    pub fn from_cookie(&self) -> bool {
        self.cookie.is_some()
    }
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("from_cookie", &self.from_cookie())
            .finish_non_exhaustive()
    }
}

/// A cookie name sent twice: which value is meant is ambiguous, and the
/// first one can be an attacker's (a sibling subdomain can set a cookie of
/// the same name with a longer `Path`, which browsers send first). Refused
/// like two `Authorization` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cookie is sent more than once")]
pub struct AmbiguousCookie;

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265
/// §5.4: `name=value` pairs separated by `;`); `Ok(None)` when absent or
/// empty, an error when the name appears more than once.
///
/// The headers are read as bytes: another cookie that is not ASCII (a
/// UTF-8 value some other part of the site set) hides nothing. Names are
/// compared byte for byte; only the value found must be visible ASCII
/// (RFC 6265 cookie-octets and a few more), else it counts as absent.
pub fn cookie_value<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, AmbiguousCookie> {
    let mut found = cookie_pairs(headers, name);
    let first = found.next();
    if found.next().is_some() {
        return Err(AmbiguousCookie);
    }
    Ok(first.and_then(cookie_text))
}

/// Every value of cookie `name` in the request, in the order sent, for a
/// caller that can tell a planted one from the real one by other means
/// (the refresh cookie, whose session's CSRF token the request must echo).
/// Values that are empty or not visible ASCII are left out.
pub fn cookie_values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    cookie_pairs(headers, name)
        .filter_map(cookie_text)
        .collect()
}

/// The raw values of the pairs named `name`, whitespace around them trimmed.
fn cookie_pairs<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h [u8]> {
    let name = name.as_bytes().to_vec();
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            let (n, v) = (parts.next()?, parts.next()?);
            (trim_ows(n) == name.as_slice()).then(|| trim_ows(v))
        })
}

/// A cookie value as text: surrounding quotes dropped; empty or not
/// visible ASCII is no value.
fn cookie_text(value: &[u8]) -> Option<&str> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    if value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |at| at + 1);
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
