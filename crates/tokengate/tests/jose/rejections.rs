//! One test per rejection the policy promises, each asserting the exact error.

use std::time::Duration;

use serde_json::{Value, json};
use tokengate::{Algorithm, Error, KeyRing, SignOptions, VerifyPolicy, b64};

use crate::common::*;

fn verify(ring: &KeyRing, token: &str) -> Result<Value, Error> {
    ring.verify::<Value>(token, &policy(), now())
        .map(|v| v.claims)
}

#[test]
fn alg_none_is_rejected() {
    let k = key(Algorithm::HS256);
    let kid = k.kid().as_str().to_owned();
    let ring = KeyRing::with_signing_key(k);
    for (alg, sig) in [("none", ""), ("None", ""), ("NONE", "AA")] {
        let token = format!(
            "{}.{}.{sig}",
            b64_json(&json!({"alg": alg, "kid": kid})),
            b64_json(&good_claims())
        );
        assert_eq!(
            verify(&ring, &token),
            Err(Error::UnsupportedAlgorithm(alg.into()))
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_pem_is_rejected() {
    // The classic RS256 -> HS256 confusion: the attacker MACs with the
    // server's public key PEM as the secret and sets alg to HS256.
    let rsa = key(Algorithm::RS256);
    let public_pem = rsa.verifying_key().to_public_pem().unwrap();
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let header = json!({"alg": "HS256", "kid": rsa.kid().as_str(), "typ": "JWT"});
    let input = format!("{}.{}", b64_json(&header), b64_json(&good_claims()));
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_pem.as_bytes()),
        input.as_bytes(),
    );
    let token = format!("{input}.{}", b64::encode(mac.as_ref()));
    // The resource server loaded that same public PEM.
    let server_key = tokengate::VerifyingKey::from_public_pem(
        public_pem.as_bytes(),
        Some(Algorithm::RS256),
        Some(rsa.kid().clone()),
    )
    .unwrap();
    let ring = KeyRing::with_verifying_key(server_key);
    assert_eq!(
        verify(&ring, &token),
        Err(Error::AlgorithmMismatch {
            header: Algorithm::HS256,
            key: Algorithm::RS256
        })
    );
}

#[test]
fn es256_signature_of_all_zeros_is_rejected() {
    let k = key(Algorithm::ES256);
    let token = ring_token(&k);
    let (input, _) = token.rsplit_once('.').unwrap();
    let zeros = format!("{input}.{}", b64::encode([0u8; 64]));
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(verify(&ring, &zeros), Err(Error::BadSignature));
}

fn ring_token(k: &tokengate::SigningKey) -> String {
    forge(&header(k), &good_claims(), k)
}

#[test]
fn expiry_honours_the_leeway_exactly() {
    let k = key(Algorithm::ES256);
    let token = ring_token(&k);
    let ring = KeyRing::with_signing_key(k);
    let exp = NOW + 900;
    // Expired by 31 s with the default 30 s leeway: rejected.
    assert_eq!(
        ring.verify::<Value>(&token, &policy(), tokengate::UnixTime::from_secs(exp + 31))
            .err(),
        Some(Error::Expired)
    );
    // Expired by 29 s: still inside the leeway.
    assert!(
        ring.verify::<Value>(&token, &policy(), tokengate::UnixTime::from_secs(exp + 29))
            .is_ok()
    );
    // Zero leeway: exp itself is already too late (RFC 7519 §4.1.4).
    let strict = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(
        ring.verify::<Value>(&token, &strict, tokengate::UnixTime::from_secs(exp))
            .err(),
        Some(Error::Expired)
    );
    assert!(
        ring.verify::<Value>(&token, &strict, tokengate::UnixTime::from_secs(exp - 1))
            .is_ok()
    );
}

fn with_claims(edit: impl FnOnce(&mut Value)) -> (KeyRing, String) {
    let k = key(Algorithm::EdDSA);
    let mut claims = good_claims();
    edit(&mut claims);
    let token = forge(&header(&k), &claims, &k);
    (KeyRing::with_signing_key(k), token)
}

#[test]
fn nbf_in_the_future_is_rejected() {
    let (ring, token) = with_claims(|c| c["nbf"] = json!(NOW + 31));
    assert_eq!(verify(&ring, &token), Err(Error::NotYetValid));
    let (ring, token) = with_claims(|c| c["nbf"] = json!(NOW + 29));
    assert!(verify(&ring, &token).is_ok(), "within leeway");
}

#[test]
fn iat_in_the_future_is_rejected() {
    let (ring, token) = with_claims(|c| c["iat"] = json!(NOW + 120));
    assert_eq!(verify(&ring, &token), Err(Error::IssuedInFuture));
}

#[test]
fn max_age_is_measured_from_iat() {
    let (ring, token) = with_claims(|c| c["iat"] = json!(NOW - 3600));
    let policy = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .max_age(Duration::from_secs(600))
        .build()
        .unwrap();
    assert_eq!(
        ring.verify::<Value>(&token, &policy, now()).err(),
        Some(Error::TooOld)
    );
    let (ring, token) = with_claims(|c| {
        c.as_object_mut().unwrap().remove("iat");
    });
    assert_eq!(
        ring.verify::<Value>(&token, &policy, now()).err(),
        Some(Error::MissingClaim("iat".into()))
    );
}

#[test]
fn wrong_issuer_is_rejected() {
    let (ring, token) = with_claims(|c| c["iss"] = json!("https://evil.example"));
    assert_eq!(verify(&ring, &token), Err(Error::InvalidIssuer));
    let (ring, token) = with_claims(|c| {
        c.as_object_mut().unwrap().remove("iss");
    });
    assert_eq!(
        verify(&ring, &token),
        Err(Error::MissingClaim("iss".into()))
    );
}

#[test]
fn wrong_audience_is_rejected() {
    let (ring, token) = with_claims(|c| c["aud"] = json!("another-api"));
    assert_eq!(verify(&ring, &token), Err(Error::InvalidAudience));
    let (ring, token) = with_claims(|c| c["aud"] = json!(["x", "y"]));
    assert_eq!(verify(&ring, &token), Err(Error::InvalidAudience));
    let (ring, token) = with_claims(|c| c["aud"] = json!([]));
    assert_eq!(verify(&ring, &token), Err(Error::InvalidAudience));
    let (ring, token) = with_claims(|c| c["aud"] = json!([AUD, 7]));
    assert_eq!(
        verify(&ring, &token),
        Err(Error::InvalidClaimType("aud".into()))
    );
}

#[test]
fn missing_exp_is_rejected() {
    let (ring, token) = with_claims(|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(
        verify(&ring, &token),
        Err(Error::MissingClaim("exp".into()))
    );
}

#[test]
fn time_claims_of_the_wrong_type_are_rejected_not_ignored() {
    for (name, value) in [
        ("exp", json!("9999999999")),
        ("exp", json!(null)),
        ("nbf", json!(null)),
        ("nbf", json!("0")),
        ("iat", json!(true)),
        ("iat", json!({})),
    ] {
        let (ring, token) = with_claims(|c| c[name] = value.clone());
        assert_eq!(
            verify(&ring, &token),
            Err(Error::InvalidClaimType(name.into())),
            "{name}: {value}"
        );
    }
    let (ring, token) = with_claims(|c| c["iss"] = json!(["https://auth.example"]));
    assert_eq!(
        verify(&ring, &token),
        Err(Error::InvalidClaimType("iss".into()))
    );
    let (ring, token) = with_claims(|c| c["sub"] = json!(42));
    assert_eq!(
        verify(&ring, &token),
        Err(Error::InvalidClaimType("sub".into()))
    );
}

#[test]
fn unknown_kid_is_rejected_without_trying_other_keys() {
    let signer = key(Algorithm::ES256);
    let mut ring = KeyRing::with_signing_key(key(Algorithm::ES256));
    ring.add_verifying_key(signer.verifying_key().clone())
        .unwrap();
    // Signed by a key the ring holds, but the header names another kid: the
    // ring must not fall back to trying its keys.
    let mut h = header(&signer);
    h["kid"] = json!("not-in-the-ring");
    let token = forge(&h, &good_claims(), &signer);
    assert_eq!(
        verify(&ring, &token),
        Err(Error::UnknownKid("not-in-the-ring".into()))
    );
    // Without kid, a ring of two keys cannot pick one.
    let h = json!({"alg": "ES256"});
    let token = forge(&h, &good_claims(), &signer);
    assert_eq!(verify(&ring, &token), Err(Error::MissingKid));
}

#[test]
fn crit_header_is_rejected() {
    let k = key(Algorithm::ES256);
    let mut h = header(&k);
    h["crit"] = json!(["x"]);
    h["x"] = json!(1);
    let token = forge(&h, &good_claims(), &k);
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(verify(&ring, &token), Err(Error::UnsupportedCritical));
}

#[test]
fn unencoded_payload_is_rejected() {
    let k = key(Algorithm::HS256);
    let mut h = header(&k);
    h["b64"] = json!(false);
    let token = forge(&h, &good_claims(), &k);
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(verify(&ring, &token), Err(Error::UnencodedPayload));
}

#[test]
fn oversized_token_is_rejected_before_decoding() {
    let k = key(Algorithm::HS256);
    let mut claims = good_claims();
    claims["pad"] = json!("x".repeat(9 * 1024));
    let token = forge(&header(&k), &claims, &k);
    let ring = KeyRing::with_signing_key(k);
    assert!(matches!(
        verify(&ring, &token),
        Err(Error::TooLarge { max: 8192, .. })
    ));
    // 9 KiB of garbage is refused the same way: nothing was decoded.
    let garbage = "!".repeat(9 * 1024);
    assert!(matches!(
        verify(&ring, &garbage),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn embedded_jwk_of_the_attacker_is_ignored() {
    let victim = key(Algorithm::ES256);
    let attacker = key(Algorithm::ES256);
    let mut h = header(&victim);
    h["jwk"] = serde_json::to_value(attacker.public_jwk().unwrap()).unwrap();
    h["jku"] = json!("https://evil.example/jwks.json");
    h["x5u"] = json!("https://evil.example/cert.pem");
    let token = forge(&h, &good_claims(), &attacker);
    let ring = KeyRing::with_verifying_key(victim.verifying_key().clone());
    assert_eq!(verify(&ring, &token), Err(Error::BadSignature));
}

#[test]
fn trailing_garbage_is_rejected() {
    let k = key(Algorithm::ES256);
    let token = ring_token(&k);
    let ring = KeyRing::with_signing_key(k);
    assert!(verify(&ring, &token).is_ok());
    for bad in [
        format!("{token}."),
        format!("{token}.e30"),
        format!("{token} "),
        format!("{token}\n"),
        format!("{token}="),
    ] {
        assert!(
            matches!(verify(&ring, &bad), Err(Error::Malformed(_))),
            "{bad:?} gave {:?}",
            verify(&ring, &bad)
        );
    }
    // Extra base64url characters decode to a longer signature, which fails.
    assert_eq!(
        verify(&ring, &format!("{token}AA")),
        Err(Error::BadSignature)
    );
}

#[test]
fn non_base64url_characters_are_rejected() {
    let k = key(Algorithm::HS256);
    let token = ring_token(&k);
    let ring = KeyRing::with_signing_key(k);
    let (h, rest) = token.split_once('.').unwrap();
    for bad in [
        format!("{h}+.{rest}"),
        format!("{h}/.{rest}"),
        format!("{}.{rest}", h.replacen('e', "é", 1)),
        format!("{h}.{}", rest.replacen('.', ".?", 1)),
        format!("{h}=.{rest}"),
    ] {
        assert!(
            matches!(verify(&ring, &bad), Err(Error::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn signature_must_be_canonical_base64url() {
    // A 64-byte ES256 signature is 86 characters; the last one carries 2
    // unused bits. Setting them keeps the decoded bytes but must still fail.
    let k = key(Algorithm::ES256);
    let token = ring_token(&k);
    let ring = KeyRing::with_signing_key(k);
    let (input, sig) = token.rsplit_once('.').unwrap();
    assert_eq!(sig.len(), 86);
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let stray = alphabet.chars().nth(idx ^ 1).unwrap();
    let altered = format!("{input}.{}{stray}", &sig[..85]);
    assert_eq!(
        verify(&ring, &altered),
        Err(Error::Malformed("signature is not base64url"))
    );
    let padded = format!("{token}==");
    assert!(matches!(verify(&ring, &padded), Err(Error::Malformed(_))));
}

#[test]
fn payload_that_is_a_json_array_is_rejected() {
    let k = key(Algorithm::ES256);
    let token = forge(&header(&k), &json!([good_claims()]), &k);
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(
        verify(&ring, &token),
        Err(Error::Malformed("payload is not a JSON object"))
    );
    let k = key(Algorithm::ES256);
    let token = forge_raw(&header(&k), b"not json", &k);
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(
        verify(&ring, &token),
        Err(Error::Malformed("payload is not a JSON object"))
    );
}

#[test]
fn header_that_is_not_an_object_or_repeats_alg_is_rejected() {
    let k = key(Algorithm::HS256);
    let ring = KeyRing::with_signing_key(key(Algorithm::HS256));
    let claims = b64_json(&good_claims());
    for header in [
        "[]".to_owned(),
        "\"HS256\"".to_owned(),
        format!(r#"{{"alg":"HS256","kid":"{}","alg":"none"}}"#, k.kid()),
        r#"{"kid":"x"}"#.to_owned(),
        r#"{"alg":256}"#.to_owned(),
    ] {
        let token = format!("{}.{claims}.AAAA", b64::encode(header.as_bytes()));
        assert!(
            matches!(verify(&ring, &token), Err(Error::Malformed(_))),
            "{header}"
        );
    }
}

#[test]
fn a_payload_that_names_a_member_twice_is_rejected() {
    // Parsers disagree on `{"exp":1,"exp":2}`: serde_json keeps the last,
    // others the first. A token two verifiers read two ways is refused,
    // whichever order the members come in and at whatever depth.
    let ring = KeyRing::with_signing_key(key(Algorithm::ES256));
    let k = ring.active().unwrap();
    let h = header(k);
    let (past, future) = (NOW - 3_600, NOW + 3_600);
    let base = format!(r#""iss":"{ISS}","sub":"user-1","aud":"{AUD}","iat":{NOW}"#);
    let control = format!(r#"{{{base},"exp":{future}}}"#);
    assert!(verify(&ring, &forge_raw(&h, control.as_bytes(), k)).is_ok());
    for payload in [
        format!(r#"{{{base},"exp":{past},"exp":{future}}}"#),
        format!(r#"{{{base},"exp":{future},"exp":{past}}}"#),
        // The same name spelled with an escape is the same member.
        format!(r#"{{{base},"exp":{future},"\u0065xp":{future}}}"#),
        format!(r#"{{{base},"exp":{future},"sub":"admin"}}"#),
        format!(r#"{{{base},"exp":{future},"cnf":{{"jkt":"a","jkt":"b"}}}}"#),
        format!(r#"{{{base},"exp":{future},"roles":[{{"n":1,"n":2}}]}}"#),
    ] {
        assert_eq!(
            verify(&ring, &forge_raw(&h, payload.as_bytes(), k)),
            Err(Error::Malformed("payload names a member twice")),
            "{payload}"
        );
    }
}

#[test]
fn algorithm_outside_the_allowlist_is_rejected() {
    let k = key(Algorithm::HS256);
    let token = ring_token(&k);
    let ring = KeyRing::with_signing_key(k);
    let policy = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::ES256, Algorithm::EdDSA])
        .build()
        .unwrap();
    assert_eq!(
        ring.verify::<Value>(&token, &policy, now()).err(),
        Some(Error::AlgorithmNotAllowed(Algorithm::HS256))
    );
}

#[test]
fn header_alg_must_equal_the_key_alg_within_a_family() {
    // PS256 header on an RS256 key: same key type, different algorithm.
    let k = key(Algorithm::RS256);
    let mut h = header(&k);
    h["alg"] = json!("PS256");
    let token = forge(&h, &good_claims(), &k);
    let ring = KeyRing::with_signing_key(k);
    assert_eq!(
        verify(&ring, &token),
        Err(Error::AlgorithmMismatch {
            header: Algorithm::PS256,
            key: Algorithm::RS256
        })
    );
}

#[test]
fn wrong_typ_is_rejected_when_the_policy_names_one() {
    let ring = ring(Algorithm::ES256);
    let token = ring
        .sign(&good_claims(), &SignOptions::default(), now())
        .unwrap();
    let policy = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .typ("at+jwt")
        .build()
        .unwrap();
    assert_eq!(
        ring.verify::<Value>(&token, &policy, now()).err(),
        Some(Error::InvalidType {
            expected: "at+jwt".into(),
            found: Some("JWT".into())
        })
    );
}

#[test]
fn required_claims_and_claim_shapes_are_enforced() {
    let (ring, token) = with_claims(|_| {});
    let policy = VerifyPolicy::builder()
        .issuer(ISS)
        .audience(AUD)
        .require_claims(["sid"])
        .build()
        .unwrap();
    assert_eq!(
        ring.verify::<Value>(&token, &policy, now()).err(),
        Some(Error::MissingClaim("sid".into()))
    );
    // good_claims has no jti: AccessClaims requires it.
    assert!(matches!(
        ring.verify::<tokengate::AccessClaims>(&token, &crate::common::policy(), now()),
        Err(Error::InvalidClaims(_))
    ));
}

#[test]
fn public_message_is_the_same_for_every_failure() {
    let errors = [
        Error::Expired,
        Error::BadSignature,
        Error::UnknownKid("k".into()),
        Error::InvalidAudience,
        Error::Malformed("x"),
    ];
    let first = errors[0].public_message();
    assert!(errors.iter().all(|e| e.public_message() == first));
    assert!(!first.to_lowercase().contains("signature"));
}

#[test]
fn a_wrong_or_absent_type_is_named_in_plain_words() {
    let wrong = Error::InvalidType {
        expected: "at+jwt".into(),
        found: Some("JWT".into()),
    };
    assert_eq!(
        wrong.to_string(),
        r#"token type "JWT" where "at+jwt" is expected"#
    );
    let absent = Error::InvalidType {
        expected: "at+jwt".into(),
        found: None,
    };
    assert_eq!(
        absent.to_string(),
        r#"token type absent where "at+jwt" is expected"#
    );
}
