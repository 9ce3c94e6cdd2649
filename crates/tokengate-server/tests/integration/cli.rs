//! The `keys`, `token` and `secret` commands, run as the real binary.

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::*;

const ALL: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

fn generate(dir: &TempDir, alg: &str) -> String {
    tokengate(&["keys", "generate", "--alg", alg, "--out", path(dir.path())]).ok()
}

#[test]
fn help_lists_every_command() {
    let help = tokengate(&["--help"]).ok();
    for cmd in ["keys", "token", "secret"] {
        assert!(help.contains(cmd), "{help}");
    }
    let help = tokengate(&["token", "--help"]).ok();
    for cmd in ["sign", "verify", "decode"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[test]
fn every_algorithm_generates_signs_and_verifies() {
    let dir = TempDir::new().unwrap();
    for alg in ALL {
        let kid = generate(&dir, alg);
        let (private, public) = if alg.starts_with("HS") {
            let secret = dir.path().join(format!("{kid}.secret.jwk.json"));
            (secret.clone(), secret)
        } else {
            (
                dir.path().join(format!("{kid}.pem")),
                dir.path().join(format!("{kid}.jwk.json")),
            )
        };
        #[cfg(unix)]
        {
            assert_eq!(mode(&private), 0o600, "{alg} private key mode");
        }
        let token = tokengate(&[
            "token",
            "sign",
            "--key",
            path(&private),
            "--alg",
            alg,
            "--claims",
            r#"{"sub":"42","iss":"https://auth.example","aud":"api"}"#,
        ])
        .ok();
        let claims: Value = serde_json::from_str(
            &tokengate(&[
                "token",
                "verify",
                "--key",
                path(&public),
                "--iss",
                "https://auth.example",
                "--aud",
                "api",
                &token,
            ])
            .ok(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "42", "{alg}");
        let header = tokengate(&["token", "decode", &token]).ok();
        assert!(header.contains(&format!("\"kid\": \"{kid}\"")), "{header}");
    }
}

#[test]
fn generate_refuses_to_overwrite_and_unsafe_kids() {
    let dir = TempDir::new().unwrap();
    let args = [
        "keys",
        "generate",
        "--alg",
        "ES256",
        "--kid",
        "k1",
        "--out",
        path(dir.path()),
    ];
    assert_eq!(tokengate(&args).ok(), "k1");
    let before = std::fs::read(dir.path().join("k1.pem")).unwrap();
    let line = tokengate(&args).fails(2);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read(dir.path().join("k1.pem")).unwrap(), before);
    let line = tokengate(&[
        "keys",
        "generate",
        "--alg",
        "ES256",
        "--kid",
        "../escape",
        "--out",
        path(dir.path()),
    ])
    .fails(2);
    assert!(line.contains("cannot name a file"), "{line}");
    // Usage errors come from clap: the reason first, then its hint to --help.
    let run = tokengate(&["keys", "generate", "--alg", "none"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .lines()
            .next()
            .unwrap()
            .contains("unsupported algorithm"),
        "{}",
        run.stderr
    );
}

#[test]
fn jwks_publishes_public_halves_only_once_each() {
    let dir = TempDir::new().unwrap();
    let es = generate(&dir, "ES256");
    let ed = generate(&dir, "EdDSA");
    let hs = generate(&dir, "HS256");
    let run = tokengate(&["keys", "jwks", path(dir.path())]);
    let jwks: Value = serde_json::from_str(&run.ok()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    let mut expected = vec![es.as_str(), ed.as_str()];
    expected.sort();
    assert_eq!(kids, expected);
    let text = jwks.to_string();
    assert!(!text.contains("\"d\""), "private member published: {text}");
    assert!(!text.contains(&hs));
    assert!(run.stderr.contains("not published"), "{}", run.stderr);

    // The JWKS verifies tokens of both keys.
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    for kid in [&es, &ed] {
        let token = tokengate(&[
            "token",
            "sign",
            "--key",
            path(&dir.path().join(format!("{kid}.pem"))),
            "--claims",
            "{}",
        ])
        .ok();
        tokengate(&["token", "verify", "--jwks", path(&jwks_file), &token]).ok();
    }
}

#[test]
fn verify_reports_the_precise_reason_and_exits_1() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "ES256");
    let pem = dir.path().join(format!("{kid}.pem"));
    let jwk = dir.path().join(format!("{kid}.jwk.json"));
    let sign = |claims: &Value| {
        tokengate(&[
            "token",
            "sign",
            "--key",
            path(&pem),
            "--claims",
            &claims.to_string(),
        ])
        .ok()
    };
    let verify = |extra: &[&str], token: &str| {
        let mut args = vec!["token", "verify", "--key", path(&jwk)];
        args.extend_from_slice(extra);
        args.push(token);
        tokengate(&args)
    };

    let expired = sign(&json!({"iss": "i", "aud": "a", "exp": 1_000_000_000}));
    assert_eq!(
        verify(&[], &expired).fails(1),
        "invalid token: token expired"
    );

    let good = sign(&json!({"iss": "i", "aud": "a"}));
    assert_eq!(
        verify(&["--iss", "other"], &good).fails(1),
        "invalid token: invalid issuer"
    );
    assert_eq!(
        verify(&["--aud", "other"], &good).fails(1),
        "invalid token: invalid audience"
    );
    let run = verify(&[], &good);
    run.ok();
    assert!(run.stderr.contains("iss is not checked"), "{}", run.stderr);
    assert!(run.stderr.contains("aud is not checked"), "{}", run.stderr);

    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'Q' } else { 'A' });
    let line = verify(&[], &tampered).fails(1);
    assert!(
        line == "invalid token: signature verification failed"
            || line.starts_with("invalid token: malformed"),
        "{line}"
    );

    // A token read from standard input, with the newline `echo` adds.
    let run = tokengate_with_stdin(
        &[
            "token",
            "verify",
            "--key",
            path(&jwk),
            "--iss",
            "i",
            "--aud",
            "a",
            "-",
        ],
        &format!("{good}\n"),
    );
    run.ok();

    // Another key with another kid: unknown kid.
    let other = generate(&dir, "ES256");
    let other_jwk = dir.path().join(format!("{other}.jwk.json"));
    let line = tokengate(&["token", "verify", "--key", path(&other_jwk), &good]).fails(1);
    assert!(line.starts_with("invalid token: unknown kid"), "{line}");
    assert_eq!(
        verify(&["--leeway", "10m"], &good).fails(2),
        "error: leeway of 600 s is over the 300 s maximum"
    );
}

#[test]
fn decode_marks_output_unverified_and_shows_dates() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "EdDSA");
    let pem = dir.path().join(format!("{kid}.pem"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "u", "iat": now - 3600, "exp": now - 600});
    let token = tokengate(&[
        "token",
        "sign",
        "--key",
        path(&pem),
        "--claims",
        &claims.to_string(),
    ])
    .ok();
    let out = tokengate(&["token", "decode", &token]).ok();
    assert!(out.starts_with("UNVERIFIED"), "{out}");
    assert!(out.contains("exp: "), "{out}");
    assert!(out.contains("expired 10 min ago"), "{out}");
    assert!(out.contains("60 min ago"), "{out}");
    assert!(out.contains("\"sub\": \"u\""), "{out}");
    let out = tokengate_with_stdin(&["token", "decode", "-"], &token).ok();
    assert!(out.starts_with("UNVERIFIED"));
}

#[test]
fn sign_reads_claims_from_a_file_and_honours_exp() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "ES384");
    let pem = dir.path().join(format!("{kid}.pem"));
    let claims_file = dir.path().join("claims.json");
    std::fs::write(&claims_file, r#"{"sub":"from-file"}"#).unwrap();
    let token = tokengate(&[
        "token",
        "sign",
        "--key",
        path(&pem),
        "--claims",
        &format!("@{}", path(&claims_file)),
        "--exp",
        "1h",
        "--typ",
        "at+jwt",
    ])
    .ok();
    let decoded = tokengate(&["token", "decode", &token]).ok();
    assert!(decoded.contains("from-file"));
    assert!(decoded.contains("\"typ\": \"at+jwt\""));
    assert!(
        decoded.contains("expires in 60 min") || decoded.contains("expires in 59 min"),
        "{decoded}"
    );
    let claims: Value = serde_json::from_str(
        &tokengate(&[
            "token",
            "verify",
            "--key",
            path(&dir.path().join(format!("{kid}.jwk.json"))),
            "--typ",
            "at+jwt",
            &token,
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

#[test]
fn bad_input_gives_one_clear_line_and_a_nonzero_exit() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing.pem");
    let line = tokengate(&["token", "sign", "--key", path(&missing), "--claims", "{}"]).fails(2);
    assert!(line.starts_with("error: cannot read"), "{line}");

    let bad_pem = dir.path().join("bad.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let line = tokengate(&["token", "sign", "--key", path(&bad_pem), "--claims", "{}"]).fails(2);
    assert!(line.contains("bad.pem"), "{line}");

    let kid = generate(&dir, "ES256");
    let pem = dir.path().join(format!("{kid}.pem"));
    let line = tokengate(&["token", "sign", "--key", path(&pem), "--claims", "[1]"]).fails(2);
    assert_eq!(line, "error: claims must be a JSON object");
    let line = tokengate(&["token", "sign", "--key", path(&pem), "--claims", "{oops"]).fails(2);
    assert!(
        line.starts_with("error: claims are not valid JSON"),
        "{line}"
    );

    let jwk = dir.path().join(format!("{kid}.jwk.json"));
    for token in ["not-a-token", "a.b.c", "", "🙂.🙂.🙂"] {
        let run = tokengate(&["token", "verify", "--key", path(&jwk), token]);
        assert_ne!(run.code, 0, "{token}");
        assert!(!run.stderr.contains("panicked"));
    }
    let line = tokengate(&["token", "decode", "x.y"]).fails(2);
    assert!(line.contains("three dot-separated parts"), "{line}");
    let line = tokengate(&["token", "sign", "--key", path(&jwk), "--claims", "{}"]).fails(2);
    assert!(line.contains("signing needs the private key"), "{line}");
}

#[test]
fn weak_hmac_secret_files_are_refused() {
    let dir = TempDir::new().unwrap();
    let weak = dir.path().join("weak.jwk.json");
    let k = tokengate::b64::encode(b"password123password123password123");
    std::fs::write(
        &weak,
        json!({"kty": "oct", "alg": "HS256", "k": k}).to_string(),
    )
    .unwrap();
    let line = tokengate(&["token", "sign", "--key", path(&weak), "--claims", "{}"]).fails(2);
    assert!(line.contains("HMAC secret rejected"), "{line}");
}

#[test]
fn secret_generate_prints_a_strong_secret() {
    let s = tokengate(&["secret", "generate"]).ok();
    assert_eq!(s.len(), 43);
    assert!(
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_ne!(s, tokengate(&["secret", "generate"]).ok());
    assert!(tokengate::check_hmac_secret(tokengate::Algorithm::HS256, s.as_bytes()).is_ok());
    assert_eq!(
        tokengate(&["secret", "generate", "--bytes", "64"])
            .ok()
            .len(),
        86
    );
    let line = tokengate(&["secret", "generate", "--bytes", "8"]).fails(2);
    assert!(line.contains("at least 32 bytes"), "{line}");
}

#[test]
fn verify_with_a_required_typ_refuses_a_multibyte_typ_cleanly() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "ES256");
    let pem = dir.path().join(format!("{kid}.pem"));
    let jwk = dir.path().join(format!("{kid}.jwk.json"));
    // "application" is 11 bytes: a byte slice at 12 would split the 'é'.
    let token = tokengate(&[
        "token",
        "sign",
        "--key",
        path(&pem),
        "--typ",
        "applicationéééé",
        "--claims",
        r#"{"sub":"42"}"#,
    ])
    .ok();
    let line = tokengate(&[
        "token",
        "verify",
        "--key",
        path(&jwk),
        "--typ",
        "at+jwt",
        &token,
    ])
    .fails(1);
    assert_eq!(
        line,
        r#"invalid token: token type "applicationéééé" where "at+jwt" is expected"#
    );
}

/// The `alg` a token's header names.
fn header_alg(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&tokengate::b64::decode(header).unwrap()).unwrap();
    header["alg"].as_str().unwrap().to_owned()
}

fn sign_with(key: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "token",
        "sign",
        "--key",
        path(key),
        "--claims",
        r#"{"sub":"42"}"#,
    ];
    args.extend_from_slice(extra);
    tokengate(&args)
}

fn verify_with(key: &std::path::Path, extra: &[&str], token: &str) -> Run {
    let mut args = vec!["token", "verify", "--key", path(key)];
    args.extend_from_slice(extra);
    args.push(token);
    tokengate(&args)
}

const RSA_AMBIGUOUS: &str = "an RSA key does not say whether it is RS256 or PS256: pass --alg";

#[test]
fn a_generated_ps256_pair_signs_and_verifies_ps256_without_alg() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "PS256");
    let pem = dir.path().join(format!("{kid}.pem"));
    let jwk = dir.path().join(format!("{kid}.jwk.json"));
    let token = sign_with(&pem, &[]).ok();
    assert_eq!(header_alg(&token), "PS256");
    let claims: Value = serde_json::from_str(&verify_with(&jwk, &[], &token).ok()).unwrap();
    assert_eq!(claims["sub"], "42");
    verify_with(&pem, &[], &token).ok();
    // The PEM and the JWK are one key, so the JWKS of the directory holds it once, as PS256.
    let jwks: Value =
        serde_json::from_str(&tokengate(&["keys", "jwks", path(dir.path())]).ok()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    assert_eq!(jwks["keys"][0]["alg"], "PS256");
}

#[test]
fn an_rsa_pem_without_its_jwk_needs_alg() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "PS256");
    let jwk = dir.path().join(format!("{kid}.jwk.json"));
    let alone = TempDir::new().unwrap();
    let pem = alone.path().join(format!("{kid}.pem"));
    std::fs::copy(dir.path().join(format!("{kid}.pem")), &pem).unwrap();

    let line = sign_with(&pem, &[]).fails(2);
    assert_eq!(line, format!("error: {}: {RSA_AMBIGUOUS}", path(&pem)));
    let token = sign_with(&pem, &["--alg", "PS256"]).ok();
    assert_eq!(header_alg(&token), "PS256");
    verify_with(&jwk, &[], &token).ok();
    let line = verify_with(&pem, &[], &token).fails(2);
    assert_eq!(line, format!("error: {}: {RSA_AMBIGUOUS}", path(&pem)));
    verify_with(&pem, &["--alg", "PS256"], &token).ok();

    // A public PEM is as ambiguous, and is settled the same ways.
    let public_pem = alone.path().join("public.pem");
    let public = tokengate::VerifyingKey::from_jwk(
        &serde_json::from_slice(&std::fs::read(&jwk).unwrap()).unwrap(),
    )
    .unwrap()
    .to_public_pem()
    .unwrap();
    std::fs::write(&public_pem, &public).unwrap();
    let kid_flag = ["--kid", kid.as_str()];
    let line = verify_with(&public_pem, &kid_flag, &token).fails(2);
    assert_eq!(
        line,
        format!("error: {}: {RSA_AMBIGUOUS}", path(&public_pem))
    );
    verify_with(&public_pem, &["--kid", &kid, "--alg", "PS256"], &token).ok();
    let paired = alone.path().join("paired.pem");
    std::fs::write(&paired, &public).unwrap();
    std::fs::copy(&jwk, alone.path().join("paired.jwk.json")).unwrap();
    verify_with(&paired, &kid_flag, &token).ok();

    // EC and Ed25519 keys name their algorithm: no sibling needed.
    for alg in ["ES256", "EdDSA"] {
        let kid = generate(&dir, alg);
        let pem = alone.path().join(format!("{kid}.pem"));
        std::fs::copy(dir.path().join(format!("{kid}.pem")), &pem).unwrap();
        let token = sign_with(&pem, &[]).ok();
        assert_eq!(header_alg(&token), alg);
        verify_with(&pem, &[], &token).ok();
    }
}

#[test]
fn an_rsa_pem_whose_sibling_jwk_disagrees_is_refused() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "PS256");
    let pem = dir.path().join(format!("{kid}.pem"));
    let line = sign_with(&pem, &["--alg", "RS256"]).fails(2);
    assert!(line.contains("PS256") && line.contains("RS256"), "{line}");
    assert!(line.contains(&format!("{kid}.jwk.json")), "{line}");
    let line = verify_with(&pem, &["--alg", "PS384"], "x.y.z").fails(2);
    assert!(line.contains("PS256") && line.contains("PS384"), "{line}");

    // A sibling JWK of another key says nothing about this one.
    let other = generate(&dir, "PS256");
    let mixed = TempDir::new().unwrap();
    let mixed_pem = mixed.path().join(format!("{kid}.pem"));
    std::fs::copy(&pem, &mixed_pem).unwrap();
    std::fs::copy(
        dir.path().join(format!("{other}.jwk.json")),
        mixed.path().join(format!("{kid}.jwk.json")),
    )
    .unwrap();
    for extra in [&[][..], &["--alg", "PS256"][..]] {
        let line = sign_with(&mixed_pem, extra).fails(2);
        assert!(line.contains("not the public half"), "{line}");
    }
}

#[test]
fn jwks_of_a_directory_reads_only_key_files() {
    let dir = TempDir::new().unwrap();
    let kid = generate(&dir, "ES256");
    // JSON that is not a key, as a key directory often holds.
    std::fs::write(dir.path().join("notes.json"), r#"{"rotated_by":"ops"}"#).unwrap();
    std::fs::write(dir.path().join("README.txt"), "keys for the billing API\n").unwrap();
    let jwks: Value =
        serde_json::from_str(&tokengate(&["keys", "jwks", path(dir.path())]).ok()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    // Named on the command line, the file is still read, and refused.
    tokengate(&["keys", "jwks", path(&dir.path().join("notes.json"))]).fails(2);
}

#[test]
fn a_closed_output_pipe_ends_quietly_with_141() {
    let dir = TempDir::new().unwrap();
    for alg in ["ES256", "EdDSA", "ES384"] {
        generate(&dir, alg);
    }
    // The reader is gone before the command writes a byte, as after
    // `| head -0`: every write fails with EPIPE, deterministically.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["keys", "jwks", path(dir.path())])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert_eq!(stderr, "", "nothing on stderr: no panic, no Broken pipe");
}
