//! Slow and numerous clients, over real TCP: headers (and the TLS handshake)
//! must arrive within `header_read_timeout`, a response the client will not
//! take is abandoned after `request_timeout`, and at most `max_connections`
//! connections are served at once while the rest wait their turn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::{Backend, TestApp, spawn_app_with};
use crate::tls::{client_trusting, issue};

/// A request whose last header line never comes.
const UNFINISHED_HEADERS: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

fn addr_of(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("the app's address")
}

/// Reads until the server closes the connection; what it sent first, or
/// `None` if it still holds the connection after `within`.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Closed with nothing, or with a 408: either way, not served.
fn assert_cut_off(answer: Option<String>, what: &str) {
    let answer = answer.unwrap_or_else(|| panic!("{what}: still connected"));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{what}: {answer:?}"
    );
}

/// Sends a whole request and reads its whole answer, leaving the
/// connection open (keep-alive): it then holds one connection slot.
async fn served_and_kept_open(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&received).ends_with(r#"{"status":"ok"}"#) {
            let n = stream.read(&mut buffer).await.unwrap();
            assert_ne!(n, 0, "closed before answering");
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("answered");
    assert!(received.starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = addr_of(&app);
    let started = Instant::now();
    let mut unfinished = TcpStream::connect(addr).await.unwrap();
    unfinished.write_all(UNFINISHED_HEADERS).await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Meanwhile a whole request, on another connection, is answered.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_cut_off(
        until_closed(&mut unfinished, Duration::from_secs(4)).await,
        "unfinished headers",
    );
    assert_cut_off(
        until_closed(&mut silent, Duration::from_secs(4)).await,
        "no bytes at all",
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}, not about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut idle = served_and_kept_open(addr_of(&app)).await;
    let answered = Instant::now();
    // The next request's headers are due too: idling holds no slot for long.
    assert_cut_off(
        until_closed(&mut idle, Duration::from_secs(4)).await,
        "idle keep-alive connection",
    );
    let elapsed = answered.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}, not about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_max_connections_wait_until_one_closes() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.max_connections = 2).await;
    let addr = addr_of(&app);
    let first = served_and_kept_open(addr).await;
    let second = served_and_kept_open(addr).await;
    let third = tokio::spawn({
        let url = app.url("/healthz");
        async move { reqwest::get(url).await.map(|r| r.status()) }
    });
    let mut third = std::pin::pin!(third);
    // Both slots are held: the third connection waits in the backlog.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut third)
            .await
            .is_err(),
        "answered while both connections were held"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("answered once a slot was free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(second);
}

/// Requests enough to fill both ends' socket buffers with their answers.
fn pipelined_requests(count: usize) -> Vec<u8> {
    let one = b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\n\r\n";
    one.iter()
        .copied()
        .cycle()
        .take(one.len() * count)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_cannot_hold_a_slot_forever() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.max_connections = 1;
        s.header_read_timeout = Duration::from_secs(1);
        s.request_timeout = Duration::from_secs(1);
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window: the server's writes stall sooner.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr_of(&app)).await.unwrap();
    let (never_read, mut write_half) = stream.into_split();
    // Pipelined requests, whose answers are never read: hyper blocks
    // writing them, with the next requests already in its buffer.
    let writer = tokio::spawn(async move {
        let burst = pipelined_requests(50_000);
        let _ = tokio::time::timeout(Duration::from_secs(30), write_half.write_all(&burst)).await;
        write_half
    });
    // Well past both timeouts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let other = tokio::time::timeout(
        Duration::from_secs(6),
        app.client.get(app.url("/healthz")).send(),
    )
    .await;
    let _held_open = (never_read, writer);
    assert!(
        matches!(other, Ok(Ok(ref r)) if r.status() == StatusCode::OK),
        "a client that never reads still holds the only connection slot: {other:?}"
    );
}

/// An app serving HTTPS with a certificate from a new CA; returns the CA.
async fn spawn_tls_app(
    certs: &TempDir,
    tweak: impl FnOnce(&mut tokengate_server::infra::config::Settings),
) -> (TestApp, String) {
    let ca = issue(certs.path());
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.tls_cert = Some(certs.path().join("cert.pem"));
        s.tls_key = Some(certs.path().join("key.pem"));
        tweak(s);
    })
    .await;
    (app, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_a_stalled_handshake_is_cut_off_and_frees_its_connection() {
    let certs = TempDir::new().unwrap();
    let (app, ca) = spawn_tls_app(&certs, |s| {
        s.header_read_timeout = Duration::from_secs(1);
        s.max_connections = 1;
    })
    .await;
    let addr = addr_of(&app);
    let started = Instant::now();
    // The start of a ClientHello, then nothing: it holds the only slot.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let request = tokio::spawn({
        let client = client_trusting(&ca);
        let url = format!("https://{addr}/healthz");
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    let mut request = std::pin::pin!(request);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut request)
            .await
            .is_err(),
        "answered while the only connection slot was held"
    );
    assert_cut_off(
        until_closed(&mut stalled, Duration::from_secs(4)).await,
        "stalled handshake",
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}, not about 1 s"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("answered once the slot was free")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// A TLS client trusting `ca` (PEM), offering `alpn`.
fn tls_connector(ca: &str, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The name the test certificates are issued for.
fn localhost() -> tokio_rustls::rustls::pki_types::ServerName<'static> {
    tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_a_client_that_never_finishes_its_headers_is_disconnected() {
    let certs = TempDir::new().unwrap();
    let (app, ca) = spawn_tls_app(&certs, |s| {
        s.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = addr_of(&app);
    // A browser's offer: HTTP/2 first.
    let connector = tls_connector(&ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut tls = connector.connect(localhost(), tcp).await.unwrap();
    // HTTP/1.1, whose headers have a deadline, even when HTTP/2 is offered.
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(UNFINISHED_HEADERS).await.unwrap();
    tls.flush().await.unwrap();
    // Meanwhile a whole request over TLS is answered.
    let r = client_trusting(&ca)
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_cut_off(
        until_closed(&mut tls, Duration::from_secs(4)).await,
        "unfinished headers over TLS",
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}, not about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_a_client_that_never_reads_cannot_hold_a_slot_forever() {
    let certs = TempDir::new().unwrap();
    let (app, ca) = spawn_tls_app(&certs, |s| {
        s.max_connections = 1;
        s.header_read_timeout = Duration::from_secs(1);
        s.request_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = addr_of(&app);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let tls = tls_connector(&ca, vec![b"http/1.1".to_vec()])
        .connect(localhost(), tcp)
        .await
        .unwrap();
    let (never_read, mut write_half) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let burst = pipelined_requests(50_000);
        let _ = tokio::time::timeout(Duration::from_secs(30), write_half.write_all(&burst)).await;
        write_half
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    let other = tokio::time::timeout(
        Duration::from_secs(6),
        client_trusting(&ca)
            .get(format!("https://{addr}/healthz"))
            .send(),
    )
    .await;
    let _held_open = (never_read, writer);
    assert!(
        matches!(other, Ok(Ok(ref r)) if r.status() == StatusCode::OK),
        "over TLS, a client that never reads still holds the only connection slot: {other:?}"
    );
}
