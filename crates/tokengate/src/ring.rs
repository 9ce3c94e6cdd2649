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
        let Value::Object(mut map) =
            serde_json::to_value(claims).map_err(|e| SignError::Serialize(e.to_string()))?
        else {
            return Err(SignError::ClaimsNotObject);
        };
        let exp = now
            .checked_add(options.lifetime)
            .ok_or(SignError::TimeOverflow)?;
        map.entry("iat").or_insert_with(|| now.as_secs().into());
        map.entry("exp").or_insert_with(|| exp.as_secs().into());
        if !map.contains_key("jti") {
            let mut jti = [0u8; 16];
            aws_lc_rs::rand::fill(&mut jti).map_err(|_| SignError::Crypto)?;
            map.insert("jti".into(), b64::encode(jti).into());
        }
        let payload = serde_json::to_vec(&map).map_err(|e| SignError::Serialize(e.to_string()))?;
        self.sign_jws(&payload, options.typ.as_deref())
    }

    /// Signs arbitrary bytes as a compact JWS with the active key.
    pub fn sign_jws(&self, payload: &[u8], typ: Option<&str>) -> Result<String, SignError> {
        let key = self.active().ok_or(SignError::NoActiveKey)?;
        let mut header = Map::new();
        header.insert("alg".into(), key.alg().name().into());
        header.insert("kid".into(), key.kid().as_str().into());
        if let Some(typ) = typ {
            header.insert("typ".into(), typ.into());
        }
        let header =
            serde_json::to_vec(&header).map_err(|e| SignError::Serialize(e.to_string()))?;
        let mut token = b64::encode(header);
        token.push('.');
        token.push_str(&b64::encode(payload));
        let signature = key.sign_bytes(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64::encode(signature));
        Ok(token)
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
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&jws.payload) else {
            return Err(Error::Malformed("payload is not a JSON object"));
        };
        claims::check(&map, policy, now)?;
        let claims = serde_json::from_value(Value::Object(map))
            .map_err(|e| Error::InvalidClaims(e.to_string()))?;
        Ok(Verified {
            header: jws.header,
            claims,
        })
    }
}
