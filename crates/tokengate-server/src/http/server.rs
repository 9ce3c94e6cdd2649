//! The accept loop both listeners share: HTTP/1.1 over TCP or TLS, guarded
//! against slow and numerous clients, drained gracefully on shutdown.
//!
//! A slowloris client opens connections and sends its headers a byte at a
//! time, or never: each connection it holds costs a task, buffers and a
//! file descriptor for as long as it likes. Here the TLS handshake and
//! each request's headers must arrive within `header_read_timeout`, and at
//! most `max_connections` connections are served at once. A connection
//! slot is taken *before* `accept`, so while all are in use new clients
//! wait in the kernel's backlog, costing this process nothing.
//!
//! A client can also hold a slot from the other end: pipeline requests and
//! never read the answers. hyper then waits, for ever, for the socket to
//! take the response, with the next requests already read and nothing left
//! to time out. So a write the socket does not take within
//! `write_stall_timeout` fails, and the connection is closed. Pipelining
//! itself needs no cap: hyper serves a connection's requests one at a time,
//! through bounded buffers, so a pipeline costs no more than the same
//! requests sent one by one on a keep-alive connection.
//!
//! HTTP/1.1 only (TLS offers no `h2` in ALPN): hyper's header-read timeout
//! is an HTTP/1 guard, and HTTP/2 would need its own.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum_server::tls_rustls::RustlsConfig;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt;

/// How long in-flight requests get to finish after the shutdown signal;
/// connections still open then are closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// After an `accept` error that is not one client's (out of file
/// descriptors, say), wait this long before the next, rather than spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The guards against slow and numerous clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The TLS handshake, and then each request's headers, must arrive
    /// within this; an idle keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// The longest a connection may wait for the client to take any of
    /// what is written to it (a response, a TLS record) before it is closed.
    pub write_stall_timeout: Duration,
}

/// Serves `router` on `listener` (with TLS when `tls` is given, taking the
/// configuration current at each handshake, so a reload applies to new
/// connections) until `shutdown` completes; then stops accepting, lets
/// each connection finish the request in flight, and returns once all are
/// closed or [`DRAIN_TIMEOUT`] has passed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, _) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections, so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = next_connection(&listener, &slots) => {
                let Some((stream, peer, slot)) = accepted else { break };
                let connection = Connection {
                    router: router.clone(),
                    tls: tls.clone(),
                    limits,
                    peer,
                    stopping: stop.subscribe(),
                    _slot: slot,
                };
                connections.spawn(connection.run(stream));
            }
        }
    }
    // Refuse new connections at once, rather than leave them in the backlog.
    drop(listener);
    stop.send_replace(());
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout: closing them"
        );
        connections.shutdown().await;
    }
}

/// Waits for a free connection slot, then for a client. `None` only if the
/// slots are gone (never: the semaphore is not closed).
async fn next_connection(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return Some((stream, peer, slot)),
            // One client gave up between connecting and being accepted.
            Err(e) if is_one_clients_error(&e) => {}
            Err(e) => {
                tracing::error!(cause = %e, "cannot accept connections");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

fn is_one_clients_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}

/// One accepted connection, holding its slot until it closes.
struct Connection {
    router: Router,
    tls: Option<RustlsConfig>,
    limits: Limits,
    peer: SocketAddr,
    /// Changes when the server stops.
    stopping: watch::Receiver<()>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Responses are written whole; do not hold their last segment back.
        let _ = stream.set_nodelay(true);
        // Under TLS too: what stalls is the socket, and TLS writes to it
        // outside hyper's writes as well (alerts, close_notify).
        let stream = WriteStallGuard::new(stream, self.limits.write_stall_timeout);
        let Some(tls) = self.tls.take() else {
            return self.serve_http(stream).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
        // The handshake counts as reading headers: a client stalled in it
        // holds a slot just as one stalled in its headers does.
        let handshake =
            tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, cause = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = self.stopping.changed() => return,
        };
        self.serve_http(stream).await;
    }

    async fn serve_http(mut self, io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) {
        let peer = self.peer;
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // As axum's own server does: handlers and middleware read the
            // peer's address from this extension.
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = self.stopping.changed() => {
                // Finish the request in flight, if any, then close.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %peer, cause = %e, "connection closed on an error");
        }
    }
}

/// A stream whose writes fail with [`io::ErrorKind::TimedOut`] once the peer
/// has taken none of the bytes offered to it for `limit`: the socket stays
/// full because the client does not read. hyper then closes the connection
/// and its slot is freed. Reads pass through untouched: how long a client
/// may take to send is `header_read_timeout`'s business.
struct WriteStallGuard<S> {
    inner: S,
    limit: Duration,
    /// Set when a write or flush first finds the socket full; cleared as
    /// soon as one makes progress. Boxed: `Sleep` is `!Unpin`, and most
    /// connections never stall, so they never allocate it.
    stalled_until: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled_until: None,
        }
    }

    /// Passes on what a write-side operation returned: progress clears the
    /// stall; `Pending` starts it (or keeps it going) and, once it has
    /// lasted `limit`, becomes an error. Polling the deadline registers this
    /// task's waker, so the error comes even if the socket never wakes it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_until = None;
            return polled;
        }
        let limit = self.limit;
        let deadline = self
            .stalled_until
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took none of the response within the write stall timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing writes too (TLS's close_notify, the FIN after buffered
        // bytes): a client that never reads must not stall it either.
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}
