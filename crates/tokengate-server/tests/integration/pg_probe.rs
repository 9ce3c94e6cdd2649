//! Where the PostgreSQL tests look for a server, and whether one listens
//! there. One file for two readers: `build.rs` (which compiles the
//! PostgreSQL variants as `#[ignore]`d when nothing listens, outside CI) and
//! the harness (which checks at run time that this verdict still holds).
//! See `app.rs` for the whole scheme.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The variable naming the administrative database URL.
pub const URL_VAR: &str = "TOKENGATE_TEST_PG_URL";

/// The URL the tests use when [`URL_VAR`] is unset.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The administrative database URL the tests connect to.
pub fn admin_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether we run under CI (`CI=true`, or `CI=1`): there a missing database
/// fails the run, and nothing is ever ignored.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether something accepts TCP connections at the URL's host and port;
/// `None` when the URL names no TCP address (a Unix socket, say), so the
/// question cannot be answered without connecting for real.
pub fn listening(url: &str) -> Option<bool> {
    let (host, port) = host_port(url)?;
    let addrs = (host.as_str(), port).to_socket_addrs().ok()?;
    let mut any = false;
    for addr in addrs {
        any = true;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Some(true);
        }
    }
    any.then_some(false)
}

/// The host and port of `scheme://[user[:password]@]host[:port][/db][?…]`
/// (port 5432 when absent).
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        // [v6]:port
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5432,
    };
    Some((host.to_owned(), port))
}
