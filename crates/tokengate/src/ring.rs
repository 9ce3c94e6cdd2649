//! Key rings: several keys by `kid`, one active signing key, JWKS in and out,
//! and the two operations everything else builds on: sign and verify.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::alg::{Algorithm, truncate_for_message};
use crate::b64;
use crate::claims;
use crate::error::{Error, KeyError, SignError};
use crate::jwk::JwkSet;
use crate::jws::{self, Header};
use crate::key::{Kid, SigningKey, VerifyingKey};
use crate::policy::VerifyPolicy;
use crate::time::UnixTime;

/// Default access-token lifetime used by [`SignOptions::default`]: 15 minutes.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// How [`KeyRing::sign`] fills the registered claims and the header.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// `exp` is set to `now + lifetime` when the claims carry no `exp`.
    pub lifetime: Duration,
    /// Header `typ`; `at+jwt` for access tokens (RFC 9068), `JWT` otherwise.
    pub typ: Option<String>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            lifetime: DEFAULT_LIFETIME,
            typ: Some("JWT".into()),
        }
    }
}

impl SignOptions {
    /// Options for an RFC 9068 access token of the given lifetime.
    pub fn access_token(lifetime: Duration) -> Self {
        SignOptions {
            lifetime,
            typ: Some("at+jwt".into()),
        }
    }
}

/// A token whose signature and claims passed the policy.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The protected header.
    pub header: Header,
    /// The claims, in the caller's type.
    pub claims: T,
}

/// A JWS whose signature verified; the payload is opaque bytes.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    /// The protected header.
    pub header: Header,
    /// The decoded payload.
    pub payload: Vec<u8>,
}

/// A JWKS entry [`KeyRing::from_jwks`] could not use, and why.
#[derive(Debug, Clone)]
pub struct SkippedKey {
    /// The entry's `kid`, if it had one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub error: KeyError,
}

enum Entry {
    Signing(Box<SigningKey>),
    Verifying(Box<VerifyingKey>),
}

impl Entry {
    fn verifying(&self) -> &VerifyingKey {
        match self {
            Entry::Signing(key) => key.verifying_key(),
            Entry::Verifying(key) => key,
        }
    }
}

/// Keys by `kid`: at most one active signing key, any number of keys that
/// only verify (retired signing keys, or keys read from a JWKS).
#[derive(Default)]
pub struct KeyRing {
    entries: Vec<Entry>,
    active: Option<usize>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("active", &self.active().map(|k| k.kid().as_str()))
            .finish()
    }
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// A ring holding one key, active.
    pub fn with_signing_key(key: SigningKey) -> Self {
        KeyRing {
            entries: vec![Entry::Signing(Box::new(key))],
            active: Some(0),
        }
    }

    /// A verify-only ring holding one key.
    pub fn with_verifying_key(key: VerifyingKey) -> Self {
        KeyRing {
            entries: vec![Entry::Verifying(Box::new(key))],
            active: None,
        }
    }

    fn check_new_kid(&self, kid: &Kid) -> Result<(), KeyError> {
        if self.position(kid.as_str()).is_some() {
            return Err(KeyError::DuplicateKid(kid.as_str().to_owned()));
        }
        Ok(())
    }

    /// Adds a signing key. It becomes active only if no key is active yet;
    /// use [`KeyRing::set_active`] to rotate.
    pub fn add_signing_key(&mut self, key: SigningKey) -> Result<(), KeyError> {
        self.check_new_kid(key.kid())?;
        self.entries.push(Entry::Signing(Box::new(key)));
        if self.active.is_none() {
            self.active = Some(self.entries.len() - 1);
        }
        Ok(())
    }

    /// Adds a key that only verifies.
    pub fn add_verifying_key(&mut self, key: VerifyingKey) -> Result<(), KeyError> {
        self.check_new_kid(key.kid())?;
        self.entries.push(Entry::Verifying(Box::new(key)));
        Ok(())
    }

    /// Makes the signing key `kid` the one new tokens are signed with. The
    /// previous active key stays in the ring and keeps verifying.
    pub fn set_active(&mut self, kid: &str) -> Result<(), KeyError> {
        let index = self
            .position(kid)
            .ok_or_else(|| KeyError::NoSuchKid(kid.to_owned()))?;
        match self.entries.get(index) {
            Some(Entry::Signing(_)) => {
                self.active = Some(index);
                Ok(())
            }
            _ => Err(KeyError::NotASigningKey(kid.to_owned())),
        }
    }

    /// Removes the key `kid`; tokens signed with it stop verifying. Removing
    /// the active key leaves the ring without one until `set_active`.
    pub fn remove(&mut self, kid: &str) -> Result<(), KeyError> {
        let index = self
            .position(kid)
            .ok_or_else(|| KeyError::NoSuchKid(kid.to_owned()))?;
        self.entries.remove(index);
        self.active = match self.active {
            Some(a) if a == index => None,
            Some(a) if a > index => Some(a - 1),
            other => other,
        };
        Ok(())
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.verifying().kid().as_str() == kid)
    }

    /// The active signing key.
    pub fn active(&self) -> Option<&SigningKey> {
        match self.active.and_then(|i| self.entries.get(i)) {
            Some(Entry::Signing(key)) => Some(key),
            _ => None,
        }
    }

    /// The verifying key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.position(kid)
            .and_then(|i| self.entries.get(i))
            .map(Entry::verifying)
    }

    /// The key ids, in insertion order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.verifying().kid().as_str())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The JWKS of every public key in the ring (HMAC secrets are never
    /// published), active key first.
    pub fn jwks(&self) -> JwkSet {
        let active = self.active().and_then(SigningKey::public_jwk).cloned();
        let others = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.active)
            .filter_map(|(_, e)| e.verifying().to_jwk().cloned());
        JwkSet {
            keys: active.into_iter().chain(others).collect(),
        }
    }

    /// A verify-only ring from a JWKS. Entries that are not usable signature
    /// keys (encryption keys, unsupported algorithms, weak keys) are skipped
    /// and reported, and so are two kinds of ambiguity: every entry of a `kid`
    /// that appears more than once (a `kid` naming two keys names none), and
    /// symmetric (`oct`) keys in a set that also holds public keys (a public
    /// document holding a secret is a leak or a key-confusion trap).
    pub fn from_jwks(set: &JwkSet) -> (KeyRing, Vec<SkippedKey>) {
        let mut ring = KeyRing::new();
        let mut skipped = Vec::new();
        let mixed =
            set.keys.iter().any(|k| k.kty == "oct") && set.keys.iter().any(|k| k.kty != "oct");
        for jwk in &set.keys {
            let duplicated = jwk.kid.is_some()
                && set.keys.iter().filter(|other| other.kid == jwk.kid).count() > 1;
            let result = if duplicated {
                Err(KeyError::DuplicateKid(jwk.kid.clone().unwrap_or_default()))
            } else if mixed && jwk.kty == "oct" {
                Err(KeyError::InvalidJwk(
                    "symmetric key in a set of public keys is ignored".into(),
                ))
            } else {
                VerifyingKey::from_jwk(jwk).and_then(|key| ring.add_verifying_key(key))
            };
            if let Err(error) = result {
                skipped.push(SkippedKey {
                    kid: jwk.kid.clone(),
                    error,
                });
            }
        }
        (ring, skipped)
    }

    /// Signs `claims` as a JWT with the active key. The header carries `alg`,
    /// `kid` and `typ`; the claims get `iat = now`, `exp = now + lifetime` and
    /// a random 128-bit `jti` unless they already have them.
    pub fn sign<T: Serialize>(
        &self,
        claims: &T,
        options: &SignOptions,
        now: UnixTime,
    ) -> Result<String, SignError> {
        let key = self.active().ok_or(SignError::NoActiveKey)?;
        // Serialize once, straight to bytes, and append the missing
        // registered claims before the closing brace: no intermediate map.
        let mut payload =
            serde_json::to_vec(claims).map_err(|e| SignError::Serialize(e.to_string()))?;
        if payload.first() != Some(&b'{') || payload.last() != Some(&b'}') {
            return Err(SignError::ClaimsNotObject);
        }
        let present = TopLevelKeys::scan(&payload);
        let exp = now
            .checked_add(options.lifetime)
            .ok_or(SignError::TimeOverflow)?;
        payload.pop();
        let mut first = payload.len() == 1;
        let mut append = |name: &str, value: &str| {
            if !first {
                payload.push(b',');
            }
            first = false;
            payload.extend_from_slice(b"\"");
            payload.extend_from_slice(name.as_bytes());
            payload.extend_from_slice(b"\":");
            payload.extend_from_slice(value.as_bytes());
        };
        if !present.iat {
            append("iat", &now.as_secs().to_string());
        }
        if !present.exp {
            append("exp", &exp.as_secs().to_string());
        }
        if !present.jti {
            let mut jti = [0u8; 16];
            aws_lc_rs::rand::fill(&mut jti).map_err(|_| SignError::Crypto)?;
            append("jti", &format!("\"{}\"", b64::encode(jti)));
        }
        payload.push(b'}');
        sign_compact(key, &payload, options.typ.as_deref())
    }

    /// Signs arbitrary bytes as a compact JWS with the active key.
    pub fn sign_jws(&self, payload: &[u8], typ: Option<&str>) -> Result<String, SignError> {
        let key = self.active().ok_or(SignError::NoActiveKey)?;
        sign_compact(key, payload, typ)
    }

    /// Verifies a compact JWS and returns its payload, unparsed. Checks, in
    /// order: length (before any decoding), shape and base64url, `crit` and
    /// `b64`, `alg` is supported and allowed, the key by `kid` (an unknown
    /// `kid` fails without trying other keys), header `alg` equals the key's
    /// algorithm, the signature.
    pub fn verify_jws(&self, token: &str, policy: &VerifyPolicy) -> Result<VerifiedJws, Error> {
        let parsed = jws::parse(token, policy.max_token_len())?;
        let alg = Algorithm::from_name(&parsed.alg_name)
            .map_err(|_| Error::UnsupportedAlgorithm(truncate_for_message(&parsed.alg_name)))?;
        if !policy.allows(alg) {
            return Err(Error::AlgorithmNotAllowed(alg));
        }
        let key = match &parsed.kid {
            Some(kid) => self
                .get(kid)
                .ok_or_else(|| Error::UnknownKid(truncate_for_message(kid)))?,
            None => match self.entries.as_slice() {
                [only] => only.verifying(),
                _ => return Err(Error::MissingKid),
            },
        };
        if key.alg() != alg {
            return Err(Error::AlgorithmMismatch {
                header: alg,
                key: key.alg(),
            });
        }
        if !key.verify_signature(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(Error::BadSignature);
        }
        Ok(VerifiedJws {
            header: Header {
                alg,
                kid: parsed.kid,
                typ: parsed.typ,
                cty: parsed.cty,
            },
            payload: parsed.payload,
        })
    }

    /// Verifies a JWT: everything [`KeyRing::verify_jws`] checks, then the
    /// header `typ` if the policy names one, then that the payload is a JSON
    /// object whose registered claims pass the policy at `now` (see
    /// [`VerifyPolicy`]), then decodes the claims into `T`.
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        policy: &VerifyPolicy,
        now: UnixTime,
    ) -> Result<Verified<T>, Error> {
        let (header, map) = self.verify_to_object(token, policy, now)?;
        let claims = serde_json::from_value(Value::Object(map))
            .map_err(|e| Error::InvalidClaims(e.to_string()))?;
        Ok(Verified { header, claims })
    }

    /// [`KeyRing::verify`] up to the claims check, returning the claims as a
    /// JSON object: the request guard keeps them so that the claims checks
    /// can run again on a cached token without a second signature check.
    pub(crate) fn verify_to_object(
        &self,
        token: &str,
        policy: &VerifyPolicy,
        now: UnixTime,
    ) -> Result<(Header, Map<String, Value>), Error> {
        let jws = self.verify_jws(token, policy)?;
        if let Some(expected) = &policy.typ {
            let found = jws.header.typ.as_deref();
            if !found.is_some_and(|t| claims::typ_matches(expected, t)) {
                return Err(Error::InvalidType {
                    expected: expected.clone(),
                    found: found.map(truncate_for_message),
                });
            }
        }
        let map = jws::payload_object(&jws.payload)?;
        claims::check(&map, policy, now)?;
        Ok((jws.header, map))
    }
}

fn sign_compact(key: &SigningKey, payload: &[u8], typ: Option<&str>) -> Result<String, SignError> {
    let mut header = String::with_capacity(key.header_prefix().len() + 24);
    header.push_str(key.header_prefix());
    if let Some(typ) = typ {
        header.push_str(",\"typ\":");
        header.push_str(
            &serde_json::to_string(typ).map_err(|e| SignError::Serialize(e.to_string()))?,
        );
    }
    header.push('}');
    let mut token = b64::encode(header);
    token.push('.');
    token.push_str(&b64::encode(payload));
    let signature = key.sign_bytes(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(signature));
    Ok(token)
}

/// Which registered claims the caller's object already has.
#[derive(Default, Debug, PartialEq, Eq)]
struct TopLevelKeys {
    iat: bool,
    exp: bool,
    jti: bool,
}

impl TopLevelKeys {
    /// Scans the top-level member names of a JSON object. The input is
    /// serde_json's own compact output, so it is valid JSON: tracking string
    /// state and nesting depth is enough, and it costs one pass with no
    /// allocation (a second full parse was the largest part of signing).
    fn scan(json: &[u8]) -> Self {
        let mut keys = TopLevelKeys::default();
        let mut depth = 0usize;
        let mut i = 0;
        // At depth 1, a string that follows '{' or ',' is a member name.
        let mut expect_name = false;
        while let Some(&b) = json.get(i) {
            match b {
                b'{' | b'[' => {
                    depth += 1;
                    expect_name = b == b'{' && depth == 1;
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b',' => expect_name = depth == 1,
                b'"' => {
                    let start = i + 1;
                    i = start;
                    while let Some(&c) = json.get(i) {
                        match c {
                            b'\\' => i += 2,
                            b'"' => break,
                            _ => i += 1,
                        }
                    }
                    if expect_name {
                        match json.get(start..i) {
                            Some(b"iat") => keys.iat = true,
                            Some(b"exp") => keys.exp = true,
                            Some(b"jti") => keys.jti = true,
                            _ => {}
                        }
                        expect_name = false;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::TopLevelKeys;

    fn scan(v: serde_json::Value) -> TopLevelKeys {
        TopLevelKeys::scan(&serde_json::to_vec(&v).unwrap_or_default())
    }

    #[test]
    fn scan_sees_only_top_level_names() {
        use serde_json::json;
        assert_eq!(scan(json!({})), TopLevelKeys::default());
        assert_eq!(
            scan(json!({"exp": 1, "jti": "x", "iat": 2})),
            TopLevelKeys {
                iat: true,
                exp: true,
                jti: true
            }
        );
        assert_eq!(
            scan(json!({"ctx": {"exp": 1, "iat": [{"jti": 1}]}, "a": "\"exp\":"})),
            TopLevelKeys::default()
        );
        assert_eq!(
            scan(json!({"a\"b": ["exp", {"iat": 1}], "exp": {"x": "}"}, "q\\": 1, "jti": 0})),
            TopLevelKeys {
                iat: false,
                exp: true,
                jti: true
            }
        );
    }
}
