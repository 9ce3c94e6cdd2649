//! Who the client is: the peer's address, or, only when the peer is a
//! trusted proxy, the rightmost address of the configured forwarding header
//! that is not itself a trusted proxy. Everything left of that address was
//! written by the client and could be anything; everything right of it was
//! appended by proxies we trust.
//!
//! Written here rather than taken from a crate: the crates that read these
//! headers either trust the leftmost entry (spoofable) or read every header
//! they know (one a proxy does not touch passes through forged).

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::infra::config::ClientIpHeader;

/// The address limits, audit rows and session lists attribute a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// Resolves [`ClientIp`] from the peer address and the request headers.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: ClientIpHeader,
}

/// How many forwarding entries are looked at, from the right; a longer chain
/// is cut there (the header-size limit bounds it anyway).
const MAX_HOPS: usize = 32;

impl ClientIpResolver {
    /// Believes `header` only from peers in `trusted`.
    pub fn new(trusted: Vec<IpNet>, header: ClientIpHeader) -> ClientIpResolver {
        ClientIpResolver { trusted, header }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. Never fails: a header that is missing, not
    /// ASCII or unparsable where it matters leaves the peer's address.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return ClientIp(peer);
        }
        // Entries are split on the raw bytes: one the client wrote that is
        // not text must not hide the entry a trusted proxy appended after it.
        let entries: Vec<&[u8]> = headers
            .get_all(self.header.name())
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .collect();
        let mut farthest_trusted = peer;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            let text = std::str::from_utf8(entry).ok();
            let parsed = match self.header {
                ClientIpHeader::XForwardedFor => text.and_then(parse_node),
                ClientIpHeader::Forwarded => text.and_then(forwarded_for).and_then(parse_node),
            };
            // A hop we trust wrote what is right of here; a broken entry
            // there means a misconfigured proxy, not a client to believe.
            let Some(ip) = parsed else {
                return ClientIp(farthest_trusted);
            };
            if !self.is_trusted(ip) {
                return ClientIp(ip);
            }
            farthest_trusted = ip;
        }
        ClientIp(farthest_trusted)
    }
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack listener reports)
/// is the IPv4 address it carries, so ranges and limits see one address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key a per-client limit counts under: an IPv4 address, or the IPv6
/// network of `ipv6_prefix_len` bits (one subscriber gets a whole /64, so
/// per address they could rotate through limits).
pub fn limit_key(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// The `for=` value of one RFC 7239 element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then_some(value)
    })
}

/// One node: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`, optionally in double quotes. `unknown` and
/// obfuscated identifiers (RFC 7239 §6) are not addresses.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|v6| canonical(IpAddr::V6(v6)));
    }
    let (host, port) = text.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .filter_map(|t| {
                t.parse()
                    .ok()
                    .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            if let Ok(value) = HeaderValue::from_str(v) {
                map.append(name, value);
            }
        }
        map
    }

    fn xff(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver::new(nets(trusted), ClientIpHeader::XForwardedFor)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let r = xff(&[]);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            r.resolve(ip("198.51.100.1"), &h),
            ClientIp(ip("198.51.100.1"))
        );
        let r = xff(&["10.0.0.0/8"]);
        assert_eq!(
            r.resolve(ip("198.51.100.1"), &h),
            ClientIp(ip("198.51.100.1"))
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let r = xff(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the first entry; the proxy appended the real one.
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.9, 10.1.2.3"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("203.0.113.9")));
        // Several header lines form one list, in order.
        let h = headers("x-forwarded-for", &["6.6.6.6", "203.0.113.9", "10.1.2.3"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("203.0.113.9")));
        // Only trusted hops: the farthest one.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.1.2.3"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("10.9.9.9")));
        // No header: the proxy itself.
        assert_eq!(
            r.resolve(ip("127.0.0.1"), &HeaderMap::new()),
            ClientIp(ip("127.0.0.1"))
        );
    }

    #[test]
    fn garbage_where_a_trusted_proxy_wrote_leaves_the_last_trusted_hop() {
        let r = xff(&["127.0.0.1"]);
        for value in [
            "203.0.113.9, nonsense",
            "203.0.113.9, ",
            "unknown",
            "1.2.3.4:x",
        ] {
            let h = headers("x-forwarded-for", &[value]);
            assert_eq!(
                r.resolve(ip("127.0.0.1"), &h),
                ClientIp(ip("127.0.0.1")),
                "{value}"
            );
        }
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes("203.0.113.9, é".as_bytes()) {
            h.append("x-forwarded-for", v);
        }
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("127.0.0.1")));
    }

    #[test]
    fn a_client_byte_left_of_the_proxy_entry_cannot_hide_the_client() {
        let r = xff(&["127.0.0.1"]);
        for raw in [&b"\xff, 203.0.113.9"[..], b"6.6.6.6\xfe\x80, 203.0.113.9"] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(raw) {
                h.append("x-forwarded-for", v);
            }
            assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("203.0.113.9")));
        }
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let r = xff(&["127.0.0.1"]);
        for (value, expected) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            let h = headers("x-forwarded-for", &[value]);
            assert_eq!(
                r.resolve(ip("127.0.0.1"), &h),
                ClientIp(ip(expected)),
                "{value}"
            );
        }
        // A dual-stack listener's mapped peer matches an IPv4 range.
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            r.resolve(ip("::ffff:127.0.0.1"), &h),
            ClientIp(ip("203.0.113.9"))
        );
    }

    #[test]
    fn forwarded_is_read_only_when_configured() {
        let r = ClientIpResolver::new(nets(&["127.0.0.1"]), ClientIpHeader::Forwarded);
        let mut h = headers(
            "forwarded",
            &[r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1"#],
        );
        h.append("x-forwarded-for", HeaderValue::from_static("7.7.7.7"));
        assert_eq!(
            r.resolve(ip("127.0.0.1"), &h),
            ClientIp(ip("2001:db8:cafe::17"))
        );
        let h = headers("forwarded", &["For=192.0.2.60;proto=http"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("192.0.2.60")));
        let h = headers("forwarded", &["for=_hidden, for=unknown"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("127.0.0.1")));
        // X-Forwarded-For is not read in this mode.
        let h = headers("x-forwarded-for", &["7.7.7.7"]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ClientIp(ip("127.0.0.1")));
    }

    #[test]
    fn ipv6_clients_are_limited_per_prefix() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limit_key(ip("2001:db8:1:2:bbbb::9"), 64),
            limit_key(ip("2001:db8:1:2:aaaa::1"), 64)
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1"), 64),
            limit_key(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(limit_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(limit_key(ip("2001:db8::1"), 1), ip("::"));
        assert_eq!(limit_key(ip("203.0.113.9"), 64), ip("203.0.113.9"));
        assert_eq!(limit_key(ip("::ffff:203.0.113.9"), 64), ip("203.0.113.9"));
    }

    proptest! {
        /// Whatever a trusted proxy forwards, the answer is the peer or an
        /// address that appears in the header, and nothing panics.
        #[test]
        fn resolve_never_panics_and_never_invents_an_address(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            text in "\\PC{0,200}",
            forwarded in any::<bool>(),
        ) {
            let header = if forwarded { ClientIpHeader::Forwarded } else { ClientIpHeader::XForwardedFor };
            let r = ClientIpResolver::new(nets(&["127.0.0.0/8"]), header);
            let peer = ip("127.0.0.1");
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.append(header.name(), v);
            }
            if let Ok(v) = HeaderValue::from_str(&text) {
                h.append(header.name(), v);
            }
            let ClientIp(found) = r.resolve(peer, &h);
            let all: String = h
                .get_all(header.name())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            prop_assert!(found == peer || parse_node_anywhere(&all, found));
        }

        #[test]
        fn parse_node_never_panics(text in "\\PC{0,100}") {
            let _ = parse_node(&text);
            let _ = forwarded_for(&text);
        }
    }

    fn parse_node_anywhere(all: &str, found: IpAddr) -> bool {
        all.split([',', ';'])
            .filter_map(|part| {
                let part = part.trim();
                let part = part.split_once('=').map_or(part, |(_, v)| v);
                parse_node(part)
            })
            .any(|ip| ip == found)
    }
}
