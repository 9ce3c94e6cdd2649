//! Whatever a token, a header or a JWK says, verification returns `Ok` or
//! `Err` and never panics. Tokens here are validly signed with an HS256 key,
//! so the header and the claims are what gets tested, not the signature; where
//! the outcome is simple to state independently, it is checked too.

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokengate::dangerous::decode_unverified;
use tokengate::{
    AccessClaims, Algorithm, Jwk, KeyRing, SigningKey, VerifyPolicy, VerifyingKey, b64,
};

use crate::common::*;

/// Large enough that a huge header still reaches the parser instead of
/// stopping at the length check.
const MAX_LEN: usize = 1 << 20;

static RING: LazyLock<KeyRing> = LazyLock::new(|| ring(Algorithm::HS256));

/// The ring's one key, which signs every token here.
fn signing_key() -> &'static SigningKey {
    RING.active().unwrap()
}

fn policy_with(typ: Option<&str>, iss_and_aud: bool) -> VerifyPolicy {
    let builder = VerifyPolicy::builder().max_token_len(MAX_LEN);
    let builder = if iss_and_aud {
        builder.issuer(ISS).audience(AUD)
    } else {
        builder.any_issuer().any_audience()
    };
    match typ {
        Some(typ) => builder.typ(typ),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Every policy shape the properties verify against.
fn policies() -> [VerifyPolicy; 4] {
    [
        policy_with(None, true),
        policy_with(None, false),
        policy_with(Some("at+jwt"), true),
        policy_with(Some("at+jwt"), false),
    ]
}

/// RFC 7515 §4.1.9 restated independently of the library: the media type
/// compared case-insensitively, with `application/` optional.
fn is_at_jwt(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// Strings as an attacker would choose them: any Unicode, multi-byte
/// characters right after an `application` prefix, near-misses of `at+jwt`,
/// empty, and huge.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        4 => "(?i)(application/?)?[aé🙂t+jw/\u{0}]{0,8}",
        2 => "(?i)(application/)?at\\+jwt",
        2 => "[\u{80}-\u{10FFFF}]{0,16}",
        1 => Just(String::new()),
        1 => ".{2000,9000}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A header member: mostly absent or a string, sometimes any JSON.
fn member() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        4 => text().prop_map(|s| Some(Value::String(s))),
        1 => json_value().prop_map(Some),
    ]
}

/// A header that usually gets past `alg`, `kid` and `crit`, so that `typ`
/// is reached; any member may instead be arbitrary.
fn header() -> impl Strategy<Value = Map<String, Value>> {
    let alg = prop_oneof![4 => Just(Some(json!("HS256"))), 1 => member()];
    let kid = prop_oneof![
        2 => Just(Some(json!(signing_key().kid().as_str()))),
        1 => Just(None),
        1 => member(),
    ];
    let crit = prop_oneof![4 => Just(None), 1 => member()];
    let extra = prop::collection::btree_map(text(), json_value(), 0..3);
    (alg, kid, member(), crit, extra).prop_map(|(alg, kid, typ, crit, extra)| {
        let mut header: Map<String, Value> = extra.into_iter().collect();
        for (name, value) in [("alg", alg), ("kid", kid), ("typ", typ), ("crit", crit)] {
            match value {
                Some(value) => header.insert(name.to_owned(), value),
                None => header.remove(name),
            };
        }
        header
    })
}

/// A registered claim: mostly a value that passes, sometimes anything.
fn claim(good: Value) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => Just(Some(good)),
        1 => Just(None),
        2 => json_value().prop_map(Some),
    ]
}

fn claims() -> impl Strategy<Value = Map<String, Value>> {
    let registered = (
        claim(json!(NOW + 900)),
        claim(json!(NOW)),
        claim(json!(NOW - 10)),
        claim(json!(ISS)),
        claim(json!(AUD)),
        claim(json!("user-1")),
        claim(json!("jti-1")),
        claim(json!(["user"])),
        claim(json!("read write")),
    );
    let extra = prop::collection::btree_map(text(), json_value(), 0..4);
    (registered, extra).prop_map(
        |((exp, iat, nbf, iss, aud, sub, jti, roles, scope), extra)| {
            let mut claims: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [
                ("exp", exp),
                ("iat", iat),
                ("nbf", nbf),
                ("iss", iss),
                ("aud", aud),
                ("sub", sub),
                ("jti", jti),
                ("roles", roles),
                ("scope", scope),
            ] {
                match value {
                    Some(value) => claims.insert(name.to_owned(), value),
                    None => claims.remove(name),
                };
            }
            claims
        },
    )
}

/// A compact JWS over exactly these header and payload bytes, validly signed.
fn signed_raw(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let signature = signing_key().sign_bytes(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(signature))
}

fn signed(header: &Map<String, Value>, claims: &Map<String, Value>) -> String {
    signed_raw(
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(claims).unwrap(),
    )
}

/// Runs every verification entry point over `token`: none may panic.
fn verify_everywhere(token: &str) {
    for policy in policies() {
        let _ = RING.verify::<Value>(token, &policy, now());
        let _ = RING.verify::<AccessClaims>(token, &policy, now());
        let _ = RING.verify_jws(token, &policy);
    }
    let _ = decode_unverified(token, MAX_LEN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_header_members_are_refused_or_accepted_never_panic(header in header()) {
        let token = signed(&header, good_claims().as_object().unwrap());
        verify_everywhere(&token);

        // What the header alone decides, restated: alg is HS256, kid absent
        // or the key's, no crit, typ absent or a string.
        let kid_fits = match header.get("kid") {
            None | Some(Value::Null) => true,
            Some(Value::String(kid)) => kid == signing_key().kid().as_str(),
            Some(_) => false,
        };
        let typ = match header.get("typ") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(typ)) => Ok(Some(typ.as_str())),
            Some(_) => Err(()),
        };
        let acceptable = header.get("alg") == Some(&json!("HS256"))
            && kid_fits
            && !header.contains_key("crit")
            && typ.is_ok();
        let without_typ = RING.verify::<Value>(&token, &policy_with(None, true), now());
        prop_assert_eq!(without_typ.is_ok(), acceptable, "{:?}", without_typ);
        let with_typ = RING.verify::<Value>(&token, &policy_with(Some("at+jwt"), true), now());
        let typ_fits = matches!(typ, Ok(Some(t)) if is_at_jwt(t));
        prop_assert_eq!(with_typ.is_ok(), acceptable && typ_fits, "{:?}", with_typ);
    }

    #[test]
    fn arbitrary_claims_are_refused_or_accepted_never_panic(claims in claims(), typ in text()) {
        let mut header = Map::new();
        header.insert("alg".into(), json!("HS256"));
        header.insert("kid".into(), json!(signing_key().kid().as_str()));
        header.insert("typ".into(), json!(typ));
        let token = signed(&header, &claims);
        verify_everywhere(&token);

        // exp is always required, and only as a number.
        if !claims.get("exp").is_some_and(Value::is_number) {
            for policy in policies() {
                prop_assert!(RING.verify::<Value>(&token, &policy, now()).is_err());
            }
        }
    }

    #[test]
    fn arbitrary_header_and_payload_bytes_never_panic(
        header in prop_oneof![
            any::<Vec<u8>>(),
            text().prop_map(String::into_bytes),
            // Duplicate members and near-JSON, which a map cannot produce.
            (text(), text()).prop_map(|(a, b)| {
                format!(r#"{{"alg":"HS256","typ":{a:?},"typ":{b:?}}}"#).into_bytes()
            }),
        ],
        payload in prop_oneof![any::<Vec<u8>>(), text().prop_map(String::into_bytes)],
    ) {
        verify_everywhere(&signed_raw(&header, &payload));
    }

    #[test]
    fn arbitrary_token_text_is_refused_never_panics(
        token in prop_oneof![any::<String>(), "[A-Za-z0-9_\\-.=+/ é🙂]{0,300}"],
    ) {
        verify_everywhere(&token);
        prop_assert!(RING.verify::<Value>(&token, &policy_with(None, false), now()).is_err());
    }

    #[test]
    fn arbitrary_jwk_members_are_refused_or_loaded_never_panic(
        kty in prop_oneof![Just("RSA".to_owned()), Just("EC".to_owned()), Just("OKP".to_owned()), Just("oct".to_owned()), text()],
        alg in prop::option::of(prop_oneof![
            prop::sample::select(Algorithm::ALL.iter().map(|a| a.name().to_owned()).collect::<Vec<_>>()),
            text(),
        ]),
        crv in prop::option::of(prop_oneof![Just("P-256".to_owned()), Just("P-384".to_owned()), Just("Ed25519".to_owned()), text()]),
        kid in prop::option::of(text()),
        members in prop::collection::vec(
            prop::option::of(prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300).prop_map(b64::encode),
                text(),
            ]),
            5,
        ),
    ) {
        let mut jwk = json!({"kty": kty, "alg": alg, "crv": crv, "kid": kid});
        for (name, value) in ["x", "y", "n", "e", "k"].iter().zip(members) {
            jwk[*name] = json!(value);
        }
        if let Ok(jwk) = serde_json::from_value::<Jwk>(jwk) {
            let _ = VerifyingKey::from_jwk(&jwk);
            let _ = SigningKey::from_jwk(&jwk);
            let _ = jwk.thumbprint();
        }
    }
}
