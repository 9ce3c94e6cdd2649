//! Key loading: strength rules, formats, and clear errors.

use serde_json::json;
use tokengate::{Algorithm, Jwk, KeyError, Kid, SigningKey, VerifyingKey};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn kid() -> Kid {
    Kid::new("k1").unwrap()
}

#[test]
fn weak_hmac_secrets_are_refused_at_load_time() {
    for secret in [&b"mysecret"[..], b"password123", b"", &[b'a'; 64]] {
        assert!(SigningKey::from_hmac_secret(Algorithm::HS256, secret, kid()).is_err());
        assert!(VerifyingKey::from_hmac_secret(Algorithm::HS256, secret, kid()).is_err());
    }
    let err = SigningKey::from_hmac_secret(Algorithm::HS256, b"short", kid()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HS256 secret is 5 bytes; at least 32 bytes (256 bits) of random data are required"
    );
    let err = SigningKey::from_hmac_secret(
        Algorithm::HS256,
        b"password123password123password123",
        kid(),
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::WeakSecret(_)));
    assert!(err.to_string().contains("tokengate secret generate"));
}

#[test]
fn hmac_secret_jwk_is_checked_too() {
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "oct", "alg": "HS256", "k": tokengate::b64::encode(b"mysecretmysecretmysecretmysecret!")
    }))
    .unwrap();
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::WeakSecret(_))
    ));
}

#[test]
fn dangerous_hmac_door_only_verifies_and_refuses_empty() {
    let key =
        VerifyingKey::dangerous_hmac_without_strength_check(Algorithm::HS256, b"mysecret", kid())
            .unwrap();
    assert_eq!(key.alg(), Algorithm::HS256);
    assert!(
        VerifyingKey::dangerous_hmac_without_strength_check(Algorithm::HS256, b"", kid()).is_err()
    );
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    for file in ["rsa1024.pem", "rsa1024.pkcs8.pem"] {
        let err = SigningKey::from_pem(&fixture(file), None, None).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeyTooSmall { .. }),
            "{file}: {err}"
        );
        assert!(err.to_string().contains("2048"), "{err}");
    }
    let err = VerifyingKey::from_public_pem(&fixture("rsa1024.pub.pem"), None, None).unwrap_err();
    assert_eq!(err, KeyError::RsaKeyTooSmall { bits: Some(1024) });
    assert_eq!(
        err.to_string(),
        "RSA key of 1024 bits rejected: at least 2048 bits are required"
    );
}

#[test]
fn pem_errors_say_what_is_wrong() {
    let ec = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let public_pem = ec.verifying_key().to_public_pem().unwrap();
    let private_pem = ec.to_pkcs8_pem().unwrap();
    assert!(matches!(
        SigningKey::from_pem(public_pem.as_bytes(), None, None),
        Err(KeyError::InvalidPem(m)) if m.contains("public key")
    ));
    assert!(matches!(
        VerifyingKey::from_public_pem(private_pem.as_bytes(), None, None),
        Err(KeyError::InvalidPem(m)) if m.contains("private key")
    ));
    assert!(matches!(
        SigningKey::from_pem(b"not a pem", None, None),
        Err(KeyError::InvalidPem(_))
    ));
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert!(matches!(
        SigningKey::from_pem(encrypted.as_bytes(), None, None),
        Err(KeyError::InvalidPem(m)) if m.contains("encrypted")
    ));
    // An EC key cannot be loaded as RS256 or as ES384.
    assert!(matches!(
        SigningKey::from_pem(private_pem.as_bytes(), Some(Algorithm::ES384), None),
        Err(KeyError::WrongKeyType { .. })
    ));
    assert!(matches!(
        VerifyingKey::from_public_pem(public_pem.as_bytes(), Some(Algorithm::RS256), None),
        Err(KeyError::WrongKeyType { .. })
    ));
}

#[test]
fn public_pem_round_trips_for_every_asymmetric_family() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let k = SigningKey::generate(alg, None).unwrap();
        let pem = k.verifying_key().to_public_pem().unwrap();
        let loaded = VerifyingKey::from_public_pem(pem.as_bytes(), Some(alg), None).unwrap();
        assert_eq!(loaded.to_jwk(), k.public_jwk(), "{alg}");
    }
}

#[test]
fn sec1_and_pkcs1_private_keys_load() {
    let ec = SigningKey::from_pem(&fixture("ec-p256-sec1.pem"), None, None).unwrap();
    assert_eq!(ec.alg(), Algorithm::ES256);
    let rsa =
        SigningKey::from_pem(&fixture("rsa2048-pkcs1.pem"), Some(Algorithm::PS256), None).unwrap();
    assert_eq!(rsa.alg(), Algorithm::PS256);
    // Re-exported as PKCS#8 they are the same keys.
    for k in [ec, rsa] {
        let again = SigningKey::from_pem(k.to_pkcs8_pem().unwrap().as_bytes(), Some(k.alg()), None)
            .unwrap();
        assert_eq!(again.public_jwk(), k.public_jwk());
    }
}

#[test]
fn jwk_must_be_meant_for_signatures() {
    let k = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let mut jwk = k.public_jwk().unwrap().clone();
    jwk.key_use = Some("enc".into());
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::NotForSignatures(_))
    ));
    jwk.key_use = None;
    jwk.key_ops = Some(vec!["encrypt".into()]);
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::NotForSignatures(_))
    ));
    jwk.key_ops = Some(vec!["verify".into()]);
    assert!(VerifyingKey::from_jwk(&jwk).is_ok());
}

#[test]
fn jwk_algorithm_must_fit_the_key() {
    let k = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let mut jwk = k.public_jwk().unwrap().clone();
    jwk.alg = Some("ES384".into());
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::WrongKeyType { .. })
    ));
    jwk.alg = Some("HS256".into());
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::WrongKeyType { .. })
    ));
    jwk.alg = Some("none".into());
    assert!(matches!(
        VerifyingKey::from_jwk(&jwk),
        Err(KeyError::UnsupportedAlgorithm(_))
    ));
    jwk.alg = None;
    assert_eq!(
        VerifyingKey::from_jwk(&jwk).unwrap().alg(),
        Algorithm::ES256
    );
}

#[test]
fn kids_are_validated() {
    assert!(Kid::new("").is_err());
    assert!(Kid::new("a\nb").is_err());
    assert!(Kid::new("x".repeat(256)).is_err());
    assert!(Kid::new("bilbo.baggins@hobbiton.example").is_ok());
}

#[test]
fn every_algorithm_generates_keys_of_the_right_strength() {
    for alg in Algorithm::ALL {
        let k = SigningKey::generate(alg, None).unwrap();
        assert_eq!(k.alg(), alg);
        match k.public_jwk() {
            Some(jwk) if jwk.kty == "RSA" => {
                let n = tokengate::b64::decode(jwk.n.as_deref().unwrap()).unwrap();
                assert_eq!(n.len() * 8, 2048);
            }
            Some(_) => {}
            None => {
                let secret = k.to_secret_jwk().unwrap();
                let bytes = tokengate::b64::decode(secret.k.unwrap().expose()).unwrap();
                assert_eq!(Some(bytes.len()), alg.hmac_min_secret_len());
            }
        }
    }
}
