use std::time::Duration;

use serde_json::{Value, json};
use tokengate::{
    AccessClaims, Algorithm, Audience, Jwk, JwkSet, KeyRing, SignOptions, SigningKey, VerifyPolicy,
    VerifyingKey, b64,
};

use crate::common::*;

#[test]
fn every_algorithm_signs_and_verifies() {
    for alg in Algorithm::ALL {
        let ring = ring(alg);
        let token = ring
            .sign(&good_claims(), &SignOptions::default(), now())
            .unwrap();
        let verified = ring.verify::<Value>(&token, &policy(), now()).unwrap();
        assert_eq!(verified.header.alg, alg);
        assert_eq!(verified.claims["sub"], "user-1", "{alg}");
        // Tokens always carry the kid of the key that signed them.
        assert_eq!(
            verified.header.kid.as_deref(),
            Some(ring.active().unwrap().kid().as_str())
        );
    }
}

#[test]
fn sign_fills_iat_exp_jti_typ_and_kid() {
    let ring = ring(Algorithm::ES256);
    let token = ring
        .sign(
            &json!({"iss": ISS, "sub": "7", "aud": AUD}),
            &SignOptions::access_token(Duration::from_secs(600)),
            now(),
        )
        .unwrap();
    let policy = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .typ("at+jwt")
        .build()
        .unwrap();
    let v = ring.verify::<AccessClaims>(&token, &policy, now()).unwrap();
    assert_eq!(v.claims.iat, NOW);
    assert_eq!(v.claims.exp, NOW + 600);
    assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
    let jti = b64::decode(&v.claims.jti).unwrap();
    assert_eq!(jti.len(), 16, "jti is 128 random bits");
    assert_eq!(v.claims.aud, Audience::One(AUD.into()));

    let again = ring
        .sign(
            &json!({"iss": ISS, "sub": "7", "aud": AUD}),
            &SignOptions::default(),
            now(),
        )
        .unwrap();
    let v2 = ring
        .verify::<AccessClaims>(&again, &crate::common::policy(), now())
        .unwrap();
    assert_ne!(v.claims.jti, v2.claims.jti, "jti must be unique");
}

#[test]
fn claims_already_set_by_the_caller_are_kept() {
    let ring = ring(Algorithm::EdDSA);
    let token = ring
        .sign(
            &json!({"iss": ISS, "aud": AUD, "exp": NOW + 60, "jti": "mine"}),
            &SignOptions::default(),
            now(),
        )
        .unwrap();
    let v = ring.verify::<Value>(&token, &policy(), now()).unwrap();
    assert_eq!(v.claims["exp"], NOW + 60);
    assert_eq!(v.claims["jti"], "mine");
}

#[test]
fn non_object_claims_are_refused_when_signing() {
    let ring = ring(Algorithm::HS256);
    assert_eq!(
        ring.sign(&json!([1, 2]), &SignOptions::default(), now())
            .err(),
        Some(tokengate::SignError::ClaimsNotObject)
    );
    assert_eq!(
        KeyRing::new()
            .sign(&good_claims(), &SignOptions::default(), now())
            .err(),
        Some(tokengate::SignError::NoActiveKey)
    );
}

#[test]
fn pem_export_reloads_to_the_same_key() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS384,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let original = key(alg);
        let pem = original.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let reloaded =
            SigningKey::from_pem(pem.as_bytes(), Some(alg), Some(original.kid().clone())).unwrap();
        assert_eq!(reloaded.public_jwk(), original.public_jwk(), "{alg}");
        // A token from the reloaded key verifies with the original's public half.
        let token = KeyRing::with_signing_key(reloaded)
            .sign(&good_claims(), &SignOptions::default(), now())
            .unwrap();
        let verifier = KeyRing::with_verifying_key(original.verifying_key().clone());
        verifier.verify::<Value>(&token, &policy(), now()).unwrap();
    }
}

#[test]
fn pem_without_alg_takes_the_algorithm_the_key_implies() {
    for (alg, implied) in [
        (Algorithm::ES256, Algorithm::ES256),
        (Algorithm::ES384, Algorithm::ES384),
        (Algorithm::EdDSA, Algorithm::EdDSA),
        (Algorithm::PS256, Algorithm::RS256),
    ] {
        let pem = key(alg).to_pkcs8_pem().unwrap();
        let loaded = SigningKey::from_pem(pem.as_bytes(), None, None).unwrap();
        assert_eq!(loaded.alg(), implied);
    }
}

#[test]
fn public_jwk_and_jwks_round_trip() {
    let mut ring = KeyRing::new();
    for alg in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        ring.add_signing_key(key(alg)).unwrap();
    }
    let jwks = ring.jwks();
    assert_eq!(jwks.keys.len(), 3, "HMAC secrets are never published");
    for jwk in &jwks.keys {
        assert!(!jwk.is_private());
        assert_eq!(jwk.key_use.as_deref(), Some("sig"));
        assert!(jwk.kid.is_some() && jwk.alg.is_some());
        // Default kids are RFC 7638 thumbprints.
        assert_eq!(jwk.kid, jwk.thumbprint());
    }
    let text = serde_json::to_string(&jwks).unwrap();
    let parsed: JwkSet = serde_json::from_str(&text).unwrap();
    let (verifier, skipped) = KeyRing::from_jwks(&parsed);
    assert!(skipped.is_empty());
    assert_eq!(verifier.len(), 3);
    assert!(verifier.active().is_none(), "a JWKS ring only verifies");
    // The active key (RS256, first added) signs; the JWKS ring verifies.
    let token = ring
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    verifier.verify::<Value>(&token, &policy(), now()).unwrap();
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_old_key_is_removed() {
    let old = key(Algorithm::ES256);
    let new = key(Algorithm::ES256);
    let (old_kid, new_kid) = (old.kid().clone(), new.kid().clone());
    let mut ring = KeyRing::with_signing_key(old);
    let before = ring
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    ring.add_signing_key(new).unwrap();
    assert_eq!(
        ring.active().unwrap().kid(),
        &old_kid,
        "adding does not rotate"
    );
    ring.set_active(new_kid.as_str()).unwrap();
    let after = ring
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    let v = ring.verify::<Value>(&after, &policy(), now()).unwrap();
    assert_eq!(v.header.kid.as_deref(), Some(new_kid.as_str()));
    ring.verify::<Value>(&before, &policy(), now()).unwrap();
    assert_eq!(ring.jwks().keys[0].kid.as_deref(), Some(new_kid.as_str()));

    ring.remove(old_kid.as_str()).unwrap();
    assert_eq!(
        ring.verify::<Value>(&before, &policy(), now()).err(),
        Some(tokengate::Error::UnknownKid(old_kid.as_str().into()))
    );
    ring.verify::<Value>(&after, &policy(), now()).unwrap();
}

#[test]
fn ring_refuses_duplicate_kids_and_verify_only_active_keys() {
    let a = key(Algorithm::ES256);
    let kid = a.kid().clone();
    let public = a.verifying_key().clone();
    let mut ring = KeyRing::with_signing_key(a);
    assert!(matches!(
        ring.add_verifying_key(public.clone()),
        Err(tokengate::KeyError::DuplicateKid(_))
    ));
    let mut verify_only = KeyRing::with_verifying_key(public);
    assert!(matches!(
        verify_only.set_active(kid.as_str()),
        Err(tokengate::KeyError::NotASigningKey(_))
    ));
    assert!(matches!(
        ring.set_active("nope"),
        Err(tokengate::KeyError::NoSuchKid(_))
    ));
}

#[test]
fn hmac_secret_jwk_round_trips() {
    let k = key(Algorithm::HS384);
    let jwk = k.to_secret_jwk().unwrap();
    assert_eq!(jwk.kty, "oct");
    let text = serde_json::to_string(&jwk).unwrap();
    let parsed: Jwk = serde_json::from_str(&text).unwrap();
    let reloaded = SigningKey::from_jwk(&parsed).unwrap();
    assert_eq!(reloaded.kid(), k.kid());
    let token = KeyRing::with_signing_key(k)
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    KeyRing::with_verifying_key(VerifyingKey::from_jwk(&parsed).unwrap())
        .verify::<Value>(&token, &policy(), now())
        .unwrap();
}

#[test]
fn debug_output_never_contains_key_material() {
    let k = key(Algorithm::HS256);
    let secret = k.to_secret_jwk().unwrap().k.unwrap();
    let ring = KeyRing::with_signing_key(k);
    let shown = format!("{ring:?} {:?}", ring.active().unwrap());
    assert!(!shown.contains(secret.expose()), "{shown}");
    let ec = key(Algorithm::ES256);
    let pem = ec.to_pkcs8_pem().unwrap();
    let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
    assert!(!format!("{ec:?}").contains(&body));
}

#[test]
fn audience_array_containing_ours_is_accepted() {
    let k = key(Algorithm::ES256);
    let mut claims = good_claims();
    claims["aud"] = json!(["other", AUD]);
    claims["jti"] = json!("j-1");
    let token = forge(&header(&k), &claims, &k);
    let ring = KeyRing::with_signing_key(k);
    let v = ring
        .verify::<AccessClaims>(&token, &policy(), now())
        .unwrap();
    assert!(v.claims.aud.contains(AUD));
}

#[test]
fn several_issuers_and_audiences_may_be_accepted() {
    let k = key(Algorithm::EdDSA);
    let mut claims = good_claims();
    claims["iss"] = json!("https://b.example");
    claims["aud"] = json!("svc-2");
    let token = forge(&header(&k), &claims, &k);
    let policy = VerifyPolicy::builder()
        .issuers(["https://a.example", "https://b.example"])
        .audiences(["svc-1", "svc-2"])
        .build()
        .unwrap();
    KeyRing::with_signing_key(k)
        .verify::<Value>(&token, &policy, now())
        .unwrap();
}
