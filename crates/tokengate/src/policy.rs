//! The verification policy: one struct, secure defaults, a builder.

use std::time::Duration;

use crate::alg::Algorithm;
use crate::error::PolicyError;

/// Default leeway for `exp`, `nbf` and `iat`: 30 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest leeway a policy accepts: 300 seconds.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default maximum token length: 8 KiB, checked before any decoding.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// What a token must satisfy besides a valid signature.
///
/// Always checked: `exp` is present, numeric and not past (beyond the leeway);
/// `nbf` and `iat`, when present, are numeric and not in the future. Chosen
/// explicitly when building: the issuer(s) and audience(s), or an explicit
/// `any_issuer()` / `any_audience()` — forgetting them is a build error, not
/// a silent "accept all".
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    pub(crate) algorithms: Option<Vec<Algorithm>>,
    pub(crate) issuers: Option<Vec<String>>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) leeway: u64,
    pub(crate) max_age: Option<u64>,
    pub(crate) typ: Option<String>,
    pub(crate) required_claims: Vec<String>,
    pub(crate) max_token_len: usize,
}

impl VerifyPolicy {
    /// Starts a policy with the defaults: algorithms of the ring's keys,
    /// 30 s leeway, 8 KiB maximum length, no `typ` check, no maximum age.
    pub fn builder() -> VerifyPolicyBuilder {
        VerifyPolicyBuilder::default()
    }

    /// The maximum token length in bytes.
    pub fn max_token_len(&self) -> usize {
        self.max_token_len
    }

    /// The leeway in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    /// Whether `alg` passes the allowlist (no list means: any algorithm of a
    /// key in the ring, which the key binding then narrows to one).
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms
            .as_ref()
            .is_none_or(|list| list.contains(&alg))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Unset,
    Any,
    Listed,
}

/// Builds a [`VerifyPolicy`]; see each method for its default.
#[derive(Debug, Clone)]
pub struct VerifyPolicyBuilder {
    algorithms: Option<Vec<Algorithm>>,
    issuers: Vec<String>,
    issuer_choice: Choice,
    audiences: Vec<String>,
    audience_choice: Choice,
    leeway: Duration,
    max_age: Option<Duration>,
    typ: Option<String>,
    required_claims: Vec<String>,
    max_token_len: usize,
}

impl Default for VerifyPolicyBuilder {
    fn default() -> Self {
        VerifyPolicyBuilder {
            algorithms: None,
            issuers: Vec::new(),
            issuer_choice: Choice::Unset,
            audiences: Vec::new(),
            audience_choice: Choice::Unset,
            leeway: DEFAULT_LEEWAY,
            max_age: None,
            typ: None,
            required_claims: Vec::new(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }
}

impl VerifyPolicyBuilder {
    /// Restricts the accepted algorithms (default: those of the ring's keys).
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// Accepts tokens whose `iss` equals `issuer`; may be called repeatedly.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self.issuer_choice = Choice::Listed;
        self
    }

    /// Accepts any of these issuers.
    pub fn issuers<I: Into<String>>(mut self, issuers: impl IntoIterator<Item = I>) -> Self {
        self.issuers.extend(issuers.into_iter().map(Into::into));
        self.issuer_choice = Choice::Listed;
        self
    }

    /// Explicitly skips the issuer check (`iss`, if present, must still be a string).
    pub fn any_issuer(mut self) -> Self {
        self.issuer_choice = Choice::Any;
        self
    }

    /// Accepts tokens with `audience` among their `aud`; may be called repeatedly.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self.audience_choice = Choice::Listed;
        self
    }

    /// Accepts any of these audiences.
    pub fn audiences<I: Into<String>>(mut self, audiences: impl IntoIterator<Item = I>) -> Self {
        self.audiences.extend(audiences.into_iter().map(Into::into));
        self.audience_choice = Choice::Listed;
        self
    }

    /// Explicitly skips the audience check (`aud`, if present, must still be well-typed).
    pub fn any_audience(mut self) -> Self {
        self.audience_choice = Choice::Any;
        self
    }

    /// Clock-skew allowance for `exp`, `nbf`, `iat` (default 30 s, at most 300 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Rejects tokens whose `iat` is older than this (and requires `iat`).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Requires this header `typ`, compared case-insensitively and with an
    /// optional `application/` prefix (RFC 7515 §4.1.9); e.g. `at+jwt`.
    pub fn typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Claims that must be present (in addition to `exp`).
    pub fn require_claims<I: Into<String>>(mut self, names: impl IntoIterator<Item = I>) -> Self {
        self.required_claims
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Maximum token length in bytes (default 8 KiB).
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// Checks the configuration and builds the policy.
    pub fn build(self) -> Result<VerifyPolicy, PolicyError> {
        if self.leeway > MAX_LEEWAY {
            return Err(PolicyError::LeewayTooLarge(self.leeway.as_secs()));
        }
        if self.max_token_len == 0 {
            return Err(PolicyError::ZeroMaxLength);
        }
        if self.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err(PolicyError::Empty("algorithm"));
        }
        let issuers = match self.issuer_choice {
            Choice::Unset => return Err(PolicyError::IssuerUnspecified),
            Choice::Any => None,
            Choice::Listed if self.issuers.is_empty() => return Err(PolicyError::Empty("issuer")),
            Choice::Listed => Some(self.issuers),
        };
        let audiences = match self.audience_choice {
            Choice::Unset => return Err(PolicyError::AudienceUnspecified),
            Choice::Any => None,
            Choice::Listed if self.audiences.is_empty() => {
                return Err(PolicyError::Empty("audience"));
            }
            Choice::Listed => Some(self.audiences),
        };
        let mut required_claims = self.required_claims;
        if self.max_age.is_some() {
            required_claims.push("iat".into());
        }
        Ok(VerifyPolicy {
            algorithms: self.algorithms,
            issuers,
            audiences,
            leeway: self.leeway.as_secs(),
            max_age: self.max_age.map(|d| d.as_secs()),
            typ: self.typ,
            required_claims,
            max_token_len: self.max_token_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leeway_over_300_seconds_is_a_configuration_error() {
        let built = VerifyPolicy::builder()
            .any_issuer()
            .any_audience()
            .leeway(Duration::from_secs(301))
            .build();
        assert_eq!(built.err(), Some(PolicyError::LeewayTooLarge(301)));
        assert!(
            VerifyPolicy::builder()
                .any_issuer()
                .any_audience()
                .leeway(MAX_LEEWAY)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn issuer_and_audience_must_be_chosen() {
        assert_eq!(
            VerifyPolicy::builder().any_audience().build().err(),
            Some(PolicyError::IssuerUnspecified)
        );
        assert_eq!(
            VerifyPolicy::builder().issuer("i").build().err(),
            Some(PolicyError::AudienceUnspecified)
        );
        assert_eq!(
            VerifyPolicy::builder()
                .issuers(Vec::<String>::new())
                .any_audience()
                .build()
                .err(),
            Some(PolicyError::Empty("issuer"))
        );
    }

    #[test]
    fn defaults() {
        let p = VerifyPolicy::builder()
            .issuer("i")
            .audience("a")
            .build()
            .ok();
        assert_eq!(p.as_ref().map(|p| p.leeway), Some(30));
        assert_eq!(p.as_ref().map(|p| p.max_token_len), Some(8192));
        assert_eq!(p.map(|p| p.allows(Algorithm::EdDSA)), Some(true));
    }
}
