//! HTTPS: the binary serves TLS with HSTS, and a SIGHUP swaps the
//! certificate without a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::StatusCode;
use tempfile::TempDir;

use crate::process::start_with;

/// A new CA, and a certificate for localhost / 127.0.0.1 it signed,
/// written to `dir`. Returns the CA certificate (PEM).
pub fn issue(dir: &Path) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

pub fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_with_hsts_and_reloads_the_certificate_on_sighup() {
    let dir = TempDir::new().unwrap();
    let first_ca = issue(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let server = start_with(
        dir.path(),
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(server.url("").starts_with("https://"), "{}", server.url(""));
    let first = client_trusting(&first_ca);
    let r = first.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(server.url("/healthz").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));

    // Renew: a certificate from another CA, then SIGHUP.
    let second_ca = issue(dir.path());
    let pid = server.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let second = client_trusting(&second_ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = second.get(server.url("/healthz")).send().await {
            assert_eq!(r.status(), StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Connections opened before the reload may finish; a new one sees only
    // the new certificate.
    drop(first);
    let fresh_first = client_trusting(&first_ca);
    assert!(
        fresh_first
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err(),
        "the old certificate is gone"
    );
}

#[test]
fn half_a_tls_configuration_refuses_to_start() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tls-cert",
            "/nonexistent.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs both tls_cert and tls_key"));
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS: cannot use /nonexistent.pem"), "{err}");
    assert_eq!(err.lines().count(), 1);
}
