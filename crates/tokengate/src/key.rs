//! Keys: each bound to exactly one algorithm and one key id, parsed once.
//!
//! A [`SigningKey`] holds private material (an HMAC secret or a key pair) and
//! the [`VerifyingKey`] for its public half. A [`VerifyingKey`] alone holds a
//! parsed public key (or, for HMAC, the secret). Strength rules are enforced
//! when a key is made: HMAC secrets by [`check_hmac_secret`], RSA moduli of at
//! least 2048 bits; nothing weaker can exist as a key value.
//!
//! Private material lives in aws-lc's key objects, whose memory aws-lc wipes
//! when they are freed (its `OPENSSL_free` cleanses every allocation), and in
//! [`Zeroizing`] buffers; `Debug` shows only the algorithm and key id.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPairComponents, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, ParsedPublicKey,
    RsaEncoding, RsaKeyPair, RsaParameters, VerificationAlgorithm,
};
use aws_lc_rs::{error::KeyRejected, hmac, rand};
use spki::der::Decode;
use zeroize::Zeroizing;

use crate::alg::{Algorithm, KeyFamily, truncate_for_message};
use crate::b64;
use crate::error::{KeyError, SignError};
use crate::jwk::{Jwk, JwkSecret};
use crate::secret::check_hmac_secret;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A key id (`kid`): 1 to 255 characters, none of them control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(String);

impl Kid {
    /// Validates a key id.
    pub fn new(kid: impl Into<String>) -> Result<Self, KeyError> {
        let kid = kid.into();
        let len = kid.chars().count();
        if (1..=255).contains(&len) && !kid.chars().any(char::is_control) {
            Ok(Kid(kid))
        } else {
            Err(KeyError::InvalidKid)
        }
    }

    /// A random 128-bit key id, base64url.
    pub fn random() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes).map_err(|_| KeyError::Generation)?;
        Ok(Kid(b64::encode(bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn verification_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

fn rsa_parameters(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn rsa_encoding(alg: Algorithm) -> Option<&'static dyn RsaEncoding> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

fn ecdsa_signing(alg: Algorithm) -> Option<&'static EcdsaSigningAlgorithm> {
    match alg {
        Algorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        _ => None,
    }
}

fn hmac_algorithm(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

/// Coordinate size in bytes for the EC algorithms.
fn ec_coordinate_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::ES256 => Some(32),
        Algorithm::ES384 => Some(48),
        _ => None,
    }
}

fn rejected(what: &str, e: KeyRejected) -> KeyError {
    if e.description_() == "TooSmall" {
        KeyError::RsaKeyTooSmall { bits: None }
    } else {
        KeyError::InvalidKey(format!(
            "{what} rejected by the crypto library ({})",
            e.description_()
        ))
    }
}

fn wrong_type(alg: Algorithm, detail: impl Into<String>) -> KeyError {
    KeyError::WrongKeyType {
        alg,
        detail: detail.into(),
    }
}

fn bit_len(big_endian: &[u8]) -> usize {
    let trimmed = strip_leading_zeros(big_endian);
    match trimmed.first() {
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// Checks an RSA public key before it is used: modulus of at least 2048
/// bits, an odd public exponent of at least 3, and no ROCA fingerprint.
fn check_rsa_public(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaKeyTooSmall { bits: Some(bits) });
    }
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if !e_odd || bit_len(e) < 2 {
        return Err(KeyError::InvalidKey(
            "RSA public exponent must be odd and at least 3".into(),
        ));
    }
    if has_roca_fingerprint(n) {
        return Err(KeyError::InvalidKey(
            "RSA key has the ROCA fingerprint (CVE-2017-15361): its private key can be computed; replace it".into(),
        ));
    }
    Ok(())
}

/// The ROCA test (Nemec et al., CCS 2017): moduli made by the vulnerable
/// Infineon library are, modulo each of these small primes, a power of 65537.
/// A random modulus passes all of them with negligible probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |r, b| (r * 256 + u32::from(*b)) % p);
        // Walk the subgroup generated by 65537 mod p, looking for the residue.
        let generator = 65537 % p;
        let mut power = 1u32;
        for _ in 0..p {
            if power == residue {
                return true;
            }
            power = power * generator % p;
            if power == 1 {
                break;
            }
        }
        false
    })
}

/// Public key material plus the JWK that describes it.
#[derive(Clone)]
enum PublicMaterial {
    /// HMAC verification needs the secret itself.
    Hmac(Box<hmac::Key>),
    Asymmetric(ParsedPublicKey),
}

/// A key that verifies signatures of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    alg: Algorithm,
    kid: Kid,
    material: PublicMaterial,
    /// The public JWK (with kid, alg, use); `None` for HMAC keys, which are
    /// never published.
    jwk: Option<Jwk>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// An HMAC verification key. The secret must pass [`check_hmac_secret`].
    pub fn from_hmac_secret(alg: Algorithm, secret: &[u8], kid: Kid) -> Result<Self, KeyError> {
        check_hmac_secret(alg, secret)?;
        let hmac_alg =
            hmac_algorithm(alg).ok_or_else(|| wrong_type(alg, "not an HMAC algorithm"))?;
        Ok(VerifyingKey {
            alg,
            kid,
            material: PublicMaterial::Hmac(Box::new(hmac::Key::new(hmac_alg, secret))),
            jwk: None,
        })
    }

    /// **Dangerous.** An HMAC verification key that skips the strength rules
    /// (only an empty secret is refused). It exists to verify tokens already
    /// issued under a legacy weak secret while migrating away from it, and
    /// for conformance vectors that use fixed test keys. It can only verify:
    /// nothing is ever signed with a weak secret.
    pub fn dangerous_hmac_without_strength_check(
        alg: Algorithm,
        secret: &[u8],
        kid: Kid,
    ) -> Result<Self, KeyError> {
        let hmac_alg =
            hmac_algorithm(alg).ok_or_else(|| wrong_type(alg, "not an HMAC algorithm"))?;
        if secret.is_empty() {
            return Err(KeyError::SecretTooShort {
                alg,
                min: alg.hmac_min_secret_len().unwrap_or(32),
                actual: 0,
            });
        }
        Ok(VerifyingKey {
            alg,
            kid,
            material: PublicMaterial::Hmac(Box::new(hmac::Key::new(hmac_alg, secret))),
            jwk: None,
        })
    }

    /// Reads a public key PEM: `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY`
    /// (PKCS#1). `alg` picks RS* or PS* for RSA (default RS256) and must fit
    /// the key; EC and Ed25519 keys imply their algorithm. `kid` defaults to
    /// the RFC 7638 thumbprint.
    pub fn from_public_pem(
        pem_text: &[u8],
        alg: Option<Algorithm>,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let doc = pem::parse(pem_text).map_err(|e| KeyError::InvalidPem(e.to_string()))?;
        match doc.tag() {
            "PUBLIC KEY" => Self::from_spki_der(doc.contents(), alg, kid),
            "RSA PUBLIC KEY" => {
                let key = aws_lc_rs::rsa::PublicKey::from_der(doc.contents())
                    .map_err(|e| rejected("RSA public key", e))?;
                let PublicKeyComponents { n, e } = PublicKeyComponents::<Vec<u8>>::from(&key);
                Self::from_rsa_components(&n, &e, alg.unwrap_or(Algorithm::RS256), kid)
            }
            "CERTIFICATE" => Err(KeyError::InvalidPem(
                "a certificate, not a key: extract its key with `openssl x509 -pubkey -noout`"
                    .into(),
            )),
            tag if tag.contains("PRIVATE KEY") => Err(KeyError::InvalidPem(
                "a private key where a public key is expected".into(),
            )),
            tag => Err(KeyError::InvalidPem(format!(
                "unexpected PEM label {:?}",
                truncate_for_message(tag)
            ))),
        }
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(
        der: &[u8],
        alg: Option<Algorithm>,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::InvalidKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
        let key_bits = spki.subject_public_key.raw_bytes();
        match spki.algorithm.oid.to_string().as_str() {
            "1.2.840.113549.1.1.1" => {
                let key = aws_lc_rs::rsa::PublicKey::from_der(der)
                    .map_err(|e| rejected("RSA public key", e))?;
                let PublicKeyComponents { n, e } = PublicKeyComponents::<Vec<u8>>::from(&key);
                Self::from_rsa_components(&n, &e, alg.unwrap_or(Algorithm::RS256), kid)
            }
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| KeyError::InvalidKey("EC key without a named curve".into()))?;
                let implied = match curve.to_string().as_str() {
                    "1.2.840.10045.3.1.7" => Algorithm::ES256,
                    "1.3.132.0.34" => Algorithm::ES384,
                    "1.3.132.0.35" => {
                        return Err(KeyError::UnsupportedAlgorithm("ES512 (P-521)".into()));
                    }
                    other => {
                        return Err(KeyError::InvalidKey(format!("unsupported curve {other}")));
                    }
                };
                let alg = check_implied(alg, implied)?;
                Self::from_ec_point(key_bits, alg, kid)
            }
            "1.3.101.112" => {
                let alg = check_implied(alg, Algorithm::EdDSA)?;
                Self::from_okp_public(key_bits, alg, kid)
            }
            other => Err(KeyError::InvalidKey(format!(
                "unsupported public key algorithm {other}"
            ))),
        }
    }

    fn from_rsa_components(
        n: &[u8],
        e: &[u8],
        alg: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let params = rsa_parameters(alg).ok_or_else(|| wrong_type(alg, "an RSA key"))?;
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        check_rsa_public(n, e)?;
        let parsed = PublicKeyComponents { n, e }
            .to_parsed_public_key(params)
            .map_err(|err| rejected("RSA public key", err))?;
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some(b64::encode(n)),
            e: Some(b64::encode(e)),
            ..Jwk::default()
        };
        Self::asymmetric(alg, parsed, jwk, kid)
    }

    fn from_ec_point(point: &[u8], alg: Algorithm, kid: Option<Kid>) -> Result<Self, KeyError> {
        let (Some(len), Some(verify_alg), Some(crv)) = (
            ec_coordinate_len(alg),
            verification_algorithm(alg),
            alg.curve(),
        ) else {
            return Err(wrong_type(alg, "an EC key"));
        };
        // Uncompressed: 0x04, then x and y of `len` bytes each.
        let coordinates = match point.split_first() {
            Some((0x04, xy)) if xy.len() == 2 * len => xy.split_at_checked(len),
            _ => None,
        };
        let Some((x, y)) = coordinates else {
            return Err(KeyError::InvalidKey(
                "EC public key must be an uncompressed point on the algorithm's curve".into(),
            ));
        };
        let parsed =
            ParsedPublicKey::new(verify_alg, point).map_err(|e| rejected("EC public key", e))?;
        let jwk = Jwk {
            kty: "EC".into(),
            crv: Some(crv.into()),
            x: Some(b64::encode(x)),
            y: Some(b64::encode(y)),
            ..Jwk::default()
        };
        Self::asymmetric(alg, parsed, jwk, kid)
    }

    fn from_okp_public(x: &[u8], alg: Algorithm, kid: Option<Kid>) -> Result<Self, KeyError> {
        if x.len() != 32 {
            return Err(KeyError::InvalidKey(
                "Ed25519 public key must be 32 bytes".into(),
            ));
        }
        let parsed = ParsedPublicKey::new(&signature::ED25519, x)
            .map_err(|e| rejected("Ed25519 public key", e))?;
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(b64::encode(x)),
            ..Jwk::default()
        };
        Self::asymmetric(alg, parsed, jwk, kid)
    }

    fn asymmetric(
        alg: Algorithm,
        parsed: ParsedPublicKey,
        mut jwk: Jwk,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let kid = match kid {
            Some(kid) => kid,
            None => Kid::new(jwk.thumbprint().ok_or(KeyError::InvalidKid)?)?,
        };
        jwk.kid = Some(kid.as_str().to_owned());
        jwk.alg = Some(alg.name().to_owned());
        jwk.key_use = Some("sig".into());
        Ok(VerifyingKey {
            alg,
            kid,
            material: PublicMaterial::Asymmetric(parsed),
            jwk: Some(jwk),
        })
    }

    /// Reads a JWK (public, or private with its public members). The key must
    /// be meant for signatures: `use`, if present, is `sig`; `key_ops`, if
    /// present, includes `verify`. The algorithm is the JWK's `alg`, or implied
    /// by the key (EC curve, Ed25519, RS256 for RSA, HS256 for `oct`). The kid
    /// is the JWK's, or its RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        check_jwk_purpose(jwk, "verify")?;
        let (alg, kid) = jwk_alg_and_kid(jwk)?;
        match alg.family() {
            KeyFamily::Hmac => {
                let k = jwk_secret_bytes(jwk.k.as_ref(), "k")?;
                Self::from_hmac_secret(alg, &k, kid.map_or_else(Kid::random, Ok)?)
            }
            KeyFamily::Rsa => {
                let n = jwk_bytes(jwk.n.as_deref(), "n")?;
                let e = jwk_bytes(jwk.e.as_deref(), "e")?;
                Self::from_rsa_components(&n, &e, alg, kid)
            }
            KeyFamily::Ec => Self::from_ec_point(&jwk_ec_point(jwk, alg)?, alg, kid),
            KeyFamily::Okp => Self::from_okp_public(&jwk_bytes(jwk.x.as_deref(), "x")?, alg, kid),
        }
    }

    /// The algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The public JWK with `kid`, `alg` and `use: sig`; `None` for HMAC keys.
    pub fn to_jwk(&self) -> Option<&Jwk> {
        self.jwk.as_ref()
    }

    /// The public key as a SubjectPublicKeyInfo PEM (`PUBLIC KEY`), the form
    /// other JWT libraries read; `None` for HMAC keys.
    pub fn to_public_pem(&self) -> Option<String> {
        match &self.material {
            PublicMaterial::Hmac(_) => None,
            PublicMaterial::Asymmetric(key) => {
                let der: PublicKeyX509Der<'static> = key.as_der().ok()?;
                Some(pem::encode(&pem::Pem::new(
                    "PUBLIC KEY",
                    der.as_ref().to_vec(),
                )))
            }
        }
    }

    /// Verifies `signature` over `message`. Constant-time for HMAC.
    pub(crate) fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            PublicMaterial::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            PublicMaterial::Asymmetric(key) => key.verify_sig(message, signature).is_ok(),
        }
    }
}

fn check_implied(asked: Option<Algorithm>, implied: Algorithm) -> Result<Algorithm, KeyError> {
    match asked {
        Some(alg) if alg != implied => Err(wrong_type(
            alg,
            format!("the key is for {implied} and cannot be used with {alg}"),
        )),
        _ => Ok(implied),
    }
}

fn check_jwk_purpose(jwk: &Jwk, op: &str) -> Result<(), KeyError> {
    if let Some(key_use) = &jwk.key_use
        && key_use != "sig"
    {
        return Err(KeyError::NotForSignatures(format!(
            "use is {:?}",
            truncate_for_message(key_use)
        )));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == op)
    {
        return Err(KeyError::NotForSignatures(format!(
            "key_ops does not include {op:?}"
        )));
    }
    Ok(())
}

fn jwk_alg_and_kid(jwk: &Jwk) -> Result<(Algorithm, Option<Kid>), KeyError> {
    let alg = match jwk.alg.as_deref() {
        Some(name) => Algorithm::from_name(name)?,
        None => match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => Algorithm::RS256,
            ("oct", _) => Algorithm::HS256,
            ("EC", Some("P-256")) => Algorithm::ES256,
            ("EC", Some("P-384")) => Algorithm::ES384,
            ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
            ("EC", Some("P-521")) => return Err(KeyError::UnsupportedAlgorithm("ES512".into())),
            (kty, crv) => {
                return Err(KeyError::InvalidJwk(format!(
                    "unsupported key type {:?} / curve {:?}",
                    truncate_for_message(kty),
                    crv.map(truncate_for_message)
                )));
            }
        },
    };
    let expected_kty = match alg.family() {
        KeyFamily::Hmac => "oct",
        KeyFamily::Rsa => "RSA",
        KeyFamily::Ec => "EC",
        KeyFamily::Okp => "OKP",
    };
    if jwk.kty != expected_kty {
        return Err(wrong_type(
            alg,
            format!(
                "JWK kty is {:?}, {alg} needs {expected_kty:?}",
                truncate_for_message(&jwk.kty)
            ),
        ));
    }
    if let (Some(expected), Some(crv)) = (alg.curve(), jwk.crv.as_deref())
        && expected != crv
    {
        return Err(wrong_type(
            alg,
            format!("curve {:?}", truncate_for_message(crv)),
        ));
    }
    if jwk.oth.is_some() {
        return Err(KeyError::InvalidJwk(
            "multi-prime RSA keys (oth) are not supported".into(),
        ));
    }
    let kid = jwk.kid.as_deref().map(Kid::new).transpose()?;
    Ok((alg, kid))
}

fn jwk_bytes(value: Option<&str>, member: &str) -> Result<Vec<u8>, KeyError> {
    let text = value.ok_or_else(|| KeyError::InvalidJwk(format!("missing member {member:?}")))?;
    b64::decode(text)
        .map_err(|_| KeyError::InvalidJwk(format!("member {member:?} is not base64url")))
}

fn jwk_secret_bytes(
    value: Option<&JwkSecret>,
    member: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    jwk_bytes(value.map(JwkSecret::expose), member).map(Zeroizing::new)
}

fn jwk_ec_point(jwk: &Jwk, alg: Algorithm) -> Result<Vec<u8>, KeyError> {
    let len = ec_coordinate_len(alg).ok_or_else(|| wrong_type(alg, "an EC key"))?;
    let x = jwk_bytes(jwk.x.as_deref(), "x")?;
    let y = jwk_bytes(jwk.y.as_deref(), "y")?;
    if x.len() != len || y.len() != len {
        return Err(KeyError::InvalidJwk(format!(
            "EC coordinates must be {len} bytes for {alg}"
        )));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

enum PrivateMaterial {
    Hmac {
        key: Box<hmac::Key>,
        secret: Zeroizing<Vec<u8>>,
    },
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A key that signs with exactly one algorithm, parsed once and kept ready.
pub struct SigningKey {
    material: PrivateMaterial,
    public: VerifyingKey,
    /// `{"alg":"…","kid":"…"` — the fixed start of every header it signs.
    header_prefix: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn assemble(material: PrivateMaterial, public: VerifyingKey) -> Self {
        // A kid is a plain string, so JSON escaping cannot fail; the
        // fallback is never taken but keeps this path free of panics.
        let kid = serde_json::to_string(public.kid.as_str()).unwrap_or_else(|_| "\"\"".into());
        let header_prefix = format!(r#"{{"alg":"{}","kid":{kid}"#, public.alg.name());
        SigningKey {
            material,
            public,
            header_prefix,
        }
    }

    pub(crate) fn header_prefix(&self) -> &str {
        &self.header_prefix
    }

    /// Generates a new key: a random secret of the hash size for HS*, RSA
    /// 2048 for RS*/PS*, P-256/P-384 for ES256/ES384, Ed25519 for EdDSA.
    /// `kid` defaults to the RFC 7638 thumbprint (random for HMAC keys, whose
    /// thumbprint would be a hash of the secret).
    pub fn generate(alg: Algorithm, kid: Option<Kid>) -> Result<Self, KeyError> {
        match alg.family() {
            KeyFamily::Hmac => {
                let len = alg.hmac_min_secret_len().ok_or(KeyError::Generation)?;
                let mut secret = Zeroizing::new(vec![0u8; len]);
                rand::fill(&mut secret).map_err(|_| KeyError::Generation)?;
                Self::from_hmac_secret(alg, &secret, kid.map_or_else(Kid::random, Ok)?)
            }
            KeyFamily::Rsa => {
                let pair =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
                Self::from_rsa_pair(pair, alg, kid)
            }
            KeyFamily::Ec => {
                let signing = ecdsa_signing(alg).ok_or(KeyError::Generation)?;
                let pair = EcdsaKeyPair::generate(signing).map_err(|_| KeyError::Generation)?;
                Self::from_ec_pair(pair, alg, kid)
            }
            KeyFamily::Okp => {
                let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?;
                Self::from_ed_pair(pair, alg, kid)
            }
        }
    }

    /// An HMAC signing key. The secret must pass [`check_hmac_secret`].
    pub fn from_hmac_secret(alg: Algorithm, secret: &[u8], kid: Kid) -> Result<Self, KeyError> {
        let public = VerifyingKey::from_hmac_secret(alg, secret, kid)?;
        let hmac_alg =
            hmac_algorithm(alg).ok_or_else(|| wrong_type(alg, "not an HMAC algorithm"))?;
        Ok(SigningKey::assemble(
            PrivateMaterial::Hmac {
                key: Box::new(hmac::Key::new(hmac_alg, secret)),
                secret: Zeroizing::new(secret.to_vec()),
            },
            public,
        ))
    }

    /// Reads a private key PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
    /// (PKCS#1) or `EC PRIVATE KEY` (SEC1). Without `alg`, the key type
    /// decides (RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA).
    pub fn from_pem(
        pem_text: &[u8],
        alg: Option<Algorithm>,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let doc = pem::parse(pem_text).map_err(|e| KeyError::InvalidPem(e.to_string()))?;
        let tag = doc.tag().to_owned();
        let der = Zeroizing::new(doc.into_contents());
        match tag.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der, alg, kid),
            "RSA PRIVATE KEY" => {
                let pair =
                    RsaKeyPair::from_der(&der).map_err(|e| rejected("RSA private key", e))?;
                Self::from_rsa_pair(pair, alg.unwrap_or(Algorithm::RS256), kid)
            }
            "EC PRIVATE KEY" => {
                let candidates = match alg {
                    Some(alg) => vec![alg],
                    None => vec![Algorithm::ES256, Algorithm::ES384],
                };
                for candidate in candidates {
                    let Some(signing) = ecdsa_signing(candidate) else {
                        return Err(wrong_type(candidate, "an EC key"));
                    };
                    if let Ok(pair) = EcdsaKeyPair::from_private_key_der(signing, &der) {
                        return Self::from_ec_pair(pair, candidate, kid);
                    }
                }
                Err(KeyError::InvalidKey(
                    "EC private key is not on P-256 or P-384 (or does not fit the algorithm)"
                        .into(),
                ))
            }
            "ENCRYPTED PRIVATE KEY" => Err(KeyError::InvalidPem(
                "encrypted PEM is not supported: decrypt it with `openssl pkcs8` first".into(),
            )),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(KeyError::InvalidPem(
                "a public key where a private key is needed to sign".into(),
            )),
            other => Err(KeyError::InvalidPem(format!(
                "unexpected PEM label {:?}",
                truncate_for_message(other)
            ))),
        }
    }

    /// Reads an unencrypted PKCS#8 private key (v1 or v2).
    pub fn from_pkcs8_der(
        der: &[u8],
        alg: Option<Algorithm>,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Self::from_ed_pair(pair, check_implied(alg, Algorithm::EdDSA)?, kid);
        }
        for implied in [Algorithm::ES256, Algorithm::ES384] {
            let Some(signing) = ecdsa_signing(implied) else {
                continue;
            };
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(signing, der) {
                return Self::from_ec_pair(pair, check_implied(alg, implied)?, kid);
            }
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(pair) => Self::from_rsa_pair(pair, alg.unwrap_or(Algorithm::RS256), kid),
            Err(e) if e.description_() == "TooSmall" => {
                Err(KeyError::RsaKeyTooSmall { bits: None })
            }
            Err(_) => Err(KeyError::InvalidKey(
                "not an RSA, P-256, P-384 or Ed25519 PKCS#8 private key".into(),
            )),
        }
    }

    /// Reads a private JWK. `key_ops`, if present, must include `sign`.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        check_jwk_purpose(jwk, "sign")?;
        let (alg, kid) = jwk_alg_and_kid(jwk)?;
        match alg.family() {
            KeyFamily::Hmac => {
                let k = jwk_secret_bytes(jwk.k.as_ref(), "k")?;
                Self::from_hmac_secret(alg, &k, kid.map_or_else(Kid::random, Ok)?)
            }
            KeyFamily::Rsa => {
                let n = jwk_bytes(jwk.n.as_deref(), "n")?;
                let e = jwk_bytes(jwk.e.as_deref(), "e")?;
                check_rsa_public(strip_leading_zeros(&n), strip_leading_zeros(&e))?;
                let d = jwk_secret_bytes(jwk.d.as_ref(), "d")?;
                let p = jwk_secret_bytes(jwk.p.as_ref(), "p")?;
                let q = jwk_secret_bytes(jwk.q.as_ref(), "q")?;
                let dp = jwk_secret_bytes(jwk.dp.as_ref(), "dp")?;
                let dq = jwk_secret_bytes(jwk.dq.as_ref(), "dq")?;
                let qi = jwk_secret_bytes(jwk.qi.as_ref(), "qi")?;
                let components = KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: strip_leading_zeros(&n),
                        e: strip_leading_zeros(&e),
                    },
                    d: d.as_slice(),
                    p: p.as_slice(),
                    q: q.as_slice(),
                    dP: dp.as_slice(),
                    dQ: dq.as_slice(),
                    qInv: qi.as_slice(),
                };
                let pair = RsaKeyPair::from_components(&components)
                    .map_err(|e| rejected("RSA private JWK", e))?;
                Self::from_rsa_pair(pair, alg, kid)
            }
            KeyFamily::Ec => {
                let signing = ecdsa_signing(alg).ok_or_else(|| wrong_type(alg, "an EC key"))?;
                let point = jwk_ec_point(jwk, alg)?;
                let d = jwk_secret_bytes(jwk.d.as_ref(), "d")?;
                let pair = EcdsaKeyPair::from_private_key_and_public_key(signing, &d, &point)
                    .map_err(|e| rejected("EC private JWK", e))?;
                Self::from_ec_pair(pair, alg, kid)
            }
            KeyFamily::Okp => {
                let x = jwk_bytes(jwk.x.as_deref(), "x")?;
                let d = jwk_secret_bytes(jwk.d.as_ref(), "d")?;
                let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x)
                    .map_err(|e| rejected("Ed25519 private JWK", e))?;
                Self::from_ed_pair(pair, alg, kid)
            }
        }
    }

    fn from_rsa_pair(pair: RsaKeyPair, alg: Algorithm, kid: Option<Kid>) -> Result<Self, KeyError> {
        if alg.family() != KeyFamily::Rsa {
            return Err(wrong_type(alg, "the key is an RSA key"));
        }
        let PublicKeyComponents { n, e } = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let verifying = VerifyingKey::from_rsa_components(&n, &e, alg, kid)?;
        Ok(SigningKey::assemble(PrivateMaterial::Rsa(pair), verifying))
    }

    fn from_ec_pair(
        pair: EcdsaKeyPair,
        alg: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let verifying = VerifyingKey::from_ec_point(pair.public_key().as_ref(), alg, kid)?;
        Ok(SigningKey::assemble(PrivateMaterial::Ec(pair), verifying))
    }

    fn from_ed_pair(
        pair: Ed25519KeyPair,
        alg: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let verifying = VerifyingKey::from_okp_public(pair.public_key().as_ref(), alg, kid)?;
        Ok(SigningKey::assemble(PrivateMaterial::Ed(pair), verifying))
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.public.alg
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        &self.public.kid
    }

    /// The verifying half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public JWK; `None` for HMAC keys, which have no public half.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public.to_jwk()
    }

    /// The private key as PKCS#8 v1 DER, for asymmetric keys. v1 is what
    /// OpenSSL and other JOSE libraries read for Ed25519 too.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        Ok(match &self.material {
            PrivateMaterial::Hmac { .. } => {
                return Err(KeyError::InvalidKey(
                    "an HMAC secret has no PKCS#8 form; export it as a JWK".into(),
                ));
            }
            PrivateMaterial::Rsa(pair) => {
                let doc: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| KeyError::Generation)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
            PrivateMaterial::Ec(pair) => Zeroizing::new(
                pair.to_pkcs8v1()
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec(),
            ),
            PrivateMaterial::Ed(pair) => Zeroizing::new(
                pair.to_pkcs8v1()
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec(),
            ),
        })
    }

    /// The private key as PKCS#8 v1 PEM (`PRIVATE KEY`), for asymmetric keys.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        let pem = pem::Pem::new("PRIVATE KEY", der.to_vec());
        Ok(Zeroizing::new(pem::encode(&pem)))
    }

    /// The secret as an `oct` JWK (with kid, alg, use), for HMAC keys only.
    pub fn to_secret_jwk(&self) -> Option<Jwk> {
        match &self.material {
            PrivateMaterial::Hmac { secret, .. } => Some(Jwk {
                kty: "oct".into(),
                kid: Some(self.kid().as_str().to_owned()),
                alg: Some(self.alg().name().to_owned()),
                key_use: Some("sig".into()),
                k: Some(JwkSecret::new(b64::encode(secret.as_slice()))),
                ..Jwk::default()
            }),
            _ => None,
        }
    }

    /// Signs `message` (a JWS signing input) and returns the raw signature
    /// (fixed-size `r || s` for ECDSA, as JWS requires).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match &self.material {
            PrivateMaterial::Hmac { key, .. } => Ok(hmac::sign(key, message).as_ref().to_vec()),
            PrivateMaterial::Rsa(pair) => {
                let encoding = rsa_encoding(self.alg()).ok_or(SignError::Crypto)?;
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    encoding,
                    &rand::SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| SignError::Crypto)?;
                Ok(signature)
            }
            PrivateMaterial::Ec(pair) => pair
                .sign(&rand::SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::Crypto),
            PrivateMaterial::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}
