//! Errors, one enum per concern: loading keys, building a policy, signing, and
//! verifying. Variants say exactly what failed, for logs and tests; HTTP
//! clients get [`Error::public_message`] instead.

use crate::alg::Algorithm;

/// Why a key could not be loaded, generated or added to a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm name is not one tokengate supports (this includes `none`).
    #[error(
        "unsupported algorithm {0:?}: supported are HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA"
    )]
    UnsupportedAlgorithm(String),
    /// An HMAC secret is shorter than the hash output (RFC 7518 §3.2).
    #[error("{alg} secret is {actual} bytes; at least {min} bytes ({} bits) of random data are required", min * 8)]
    SecretTooShort {
        /// The algorithm the secret is for.
        alg: Algorithm,
        /// The minimum length in bytes.
        min: usize,
        /// The length given.
        actual: usize,
    },
    /// An HMAC secret looks like a password rather than random data.
    #[error("HMAC secret rejected: {0}; generate one with `tokengate secret generate`")]
    WeakSecret(&'static str),
    /// An RSA key is smaller than 2048 bits.
    #[error("RSA key{} rejected: at least 2048 bits are required", bits.map(|b| format!(" of {b} bits")).unwrap_or_default())]
    RsaKeyTooSmall {
        /// The modulus size, when it could be read.
        bits: Option<usize>,
    },
    /// The key material is not of the family the algorithm needs.
    #[error("key does not fit algorithm {alg}: {detail}")]
    WrongKeyType {
        /// The algorithm asked for.
        alg: Algorithm,
        /// What was found instead.
        detail: String,
    },
    /// The key bytes could not be parsed, or the crypto library rejected them.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A PEM document could not be read.
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    /// A JWK is malformed or lacks a member.
    #[error("invalid JWK: {0}")]
    InvalidJwk(String),
    /// A JWK says (through `use` or `key_ops`) it is not for signatures.
    #[error("JWK is not a signature key: {0}")]
    NotForSignatures(String),
    /// A key id is empty, too long or holds control characters.
    #[error("invalid key id: must be 1 to 255 printable characters")]
    InvalidKid,
    /// A ring already holds a key with this id.
    #[error("duplicate key id {0:?}")]
    DuplicateKid(String),
    /// The key id names no key in the ring.
    #[error("no key with id {0:?}")]
    NoSuchKid(String),
    /// Only a key with private material can be the active signing key.
    #[error("key {0:?} is verify-only and cannot be the active signing key")]
    NotASigningKey(String),
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    Generation,
}

/// Why a [`VerifyPolicy`](crate::VerifyPolicy) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Leeway over 300 seconds hides real clock problems and extends stolen tokens.
    #[error("leeway of {0} s is over the 300 s maximum")]
    LeewayTooLarge(u64),
    /// No issuer was named and `any_issuer()` was not called.
    #[error("no issuer configured: name the expected issuer(s), or call any_issuer() explicitly")]
    IssuerUnspecified,
    /// No audience was named and `any_audience()` was not called.
    #[error(
        "no audience configured: name the expected audience(s), or call any_audience() explicitly"
    )]
    AudienceUnspecified,
    /// An empty list was given where at least one value is needed.
    #[error("empty {0} list")]
    Empty(&'static str),
    /// The maximum token length must be positive.
    #[error("maximum token length must be at least 1 byte")]
    ZeroMaxLength,
}

/// Why a token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The ring has no active signing key.
    #[error("no active signing key")]
    NoActiveKey,
    /// JWT claims must serialize to a JSON object.
    #[error("claims must serialize to a JSON object")]
    ClaimsNotObject,
    /// Serialization of the claims failed.
    #[error("claims could not be serialized: {0}")]
    Serialize(String),
    /// A time claim would not fit a JSON number.
    #[error("token lifetime overflows the time range")]
    TimeOverflow,
    /// The crypto library failed to sign.
    #[error("signing failed in the crypto library")]
    Crypto,
}

/// Why a token was rejected. Each variant names one check; the order of
/// checks is documented on [`KeyRing::verify`](crate::KeyRing::verify).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is longer than the policy's maximum; nothing was decoded.
    #[error("token is {len} bytes, over the {max} byte limit")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The token is not a well-formed compact JWS / JWT.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm tokengate does not implement (`none` included).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The algorithm is supported but not in the policy's allowlist.
    #[error("algorithm {0} is not allowed by the policy")]
    AlgorithmNotAllowed(Algorithm),
    /// The header's `alg` differs from the algorithm the key is bound to.
    #[error("header alg {header} does not match the key's algorithm {key}")]
    AlgorithmMismatch {
        /// What the token claims.
        header: Algorithm,
        /// What the key is bound to.
        key: Algorithm,
    },
    /// The token has no `kid` and the ring holds more than one key.
    #[error("token has no kid and the key ring holds several keys")]
    MissingKid,
    /// The token's `kid` is not in the ring; no other key was tried.
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    /// The header lists critical extensions (`crit`) tokengate does not implement.
    #[error("unsupported critical header extension")]
    UnsupportedCritical,
    /// The header asks for an unencoded payload (`b64: false`, RFC 7797).
    #[error("unencoded payloads (b64: false) are not accepted")]
    UnencodedPayload,
    /// The signature does not verify with the key.
    #[error("signature verification failed")]
    BadSignature,
    /// The header `typ` is not the one the policy expects.
    #[error(
        "token type {} where {expected:?} is expected",
        .found.as_ref().map_or_else(|| "absent".to_owned(), |t| format!("{t:?}"))
    )]
    InvalidType {
        /// The expected `typ`.
        expected: String,
        /// The `typ` found, if any.
        found: Option<String>,
    },
    /// `exp` is in the past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    /// The token is older than the policy's maximum age (from `iat`).
    #[error("token older than the maximum age")]
    TooOld,
    /// `iss` is not one of the expected issuers.
    #[error("invalid issuer")]
    InvalidIssuer,
    /// No `aud` value is one of the expected audiences.
    #[error("invalid audience")]
    InvalidAudience,
    /// A required claim is absent.
    #[error("missing required claim {0:?}")]
    MissingClaim(String),
    /// A registered claim has the wrong JSON type (e.g. `"exp": "123"` or `"nbf": null`).
    #[error("claim {0:?} has the wrong type")]
    InvalidClaimType(String),
    /// The claims do not deserialize into the caller's type.
    #[error("claims do not match the expected shape: {0}")]
    InvalidClaims(String),
}

impl Error {
    /// A stable snake_case name of the failed check, for metrics labels and
    /// structured logs (`expired`, `bad_signature`, `unknown_kid`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::Malformed(_) => "malformed",
            Error::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Error::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Error::AlgorithmMismatch { .. } => "algorithm_mismatch",
            Error::MissingKid => "missing_kid",
            Error::UnknownKid(_) => "unknown_kid",
            Error::UnsupportedCritical => "unsupported_critical",
            Error::UnencodedPayload => "unencoded_payload",
            Error::BadSignature => "bad_signature",
            Error::InvalidType { .. } => "invalid_type",
            Error::Expired => "expired",
            Error::NotYetValid => "not_yet_valid",
            Error::IssuedInFuture => "issued_in_future",
            Error::TooOld => "too_old",
            Error::InvalidIssuer => "invalid_issuer",
            Error::InvalidAudience => "invalid_audience",
            Error::MissingClaim(_) => "missing_claim",
            Error::InvalidClaimType(_) => "invalid_claim_type",
            Error::InvalidClaims(_) => "invalid_claims",
        }
    }

    /// The deliberately vague text to show an HTTP client: it never says which
    /// check failed, so a probing client learns nothing. Log the `Display` form.
    pub fn public_message(&self) -> &'static str {
        "The access token is invalid or has expired."
    }
}
