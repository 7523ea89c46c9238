//! Who is asking: the client's IP address, for the login limiter and the pixel's open records.
//!
//! Its own module because both the dashboard login and the public pixel need it, and neither should
//! depend on the other for it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;

/// The client address: the TCP peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`). Then
/// `X-Forwarded-For` is read from right to left, each hop appended by the one after it: trusted
/// proxies are passed over, and the first address that is not one is the client. An entry that does
/// not parse (`unknown`, a name, garbage) stops the walk, and the client is the last trusted hop
/// reached: what lies left of it was written by someone we do not trust, so it cannot be believed,
/// and skipping it would let a client put any address it likes there.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpAddr]) -> Option<IpAddr> {
    let mut client = peer?;
    if !trusted.contains(&client) {
        return Some(client);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.into_iter().rev() {
        match forwarded_address(entry) {
            Some(ip) if trusted.contains(&ip) => client = ip,
            Some(ip) => return Some(ip),
            None => break,
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|sa| sa.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

/// The TCP peer of `req`, when the server recorded it (`into_make_service_with_connect_info`).
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(&h, Some(stranger), &[proxy]), Some(stranger));
        assert_eq!(
            client_ip(&h, Some(proxy), &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), Some(proxy), &[proxy]),
            Some(proxy)
        );
    }

    /// Each row: the peer, the `X-Forwarded-For` header, the client it gives. 10.0.0.1 and 10.0.0.2
    /// are trusted proxies.
    #[test]
    fn forwarded_for_is_walked_right_to_left_and_stops_at_garbage() {
        let trusted: [IpAddr; 2] = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        for (peer, header, want) in [
            ("198.51.100.1", "203.0.113.9", "198.51.100.1"),
            ("10.0.0.1", "", "10.0.0.1"),
            ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
            ("10.0.0.1", "192.0.2.66, 203.0.113.9", "203.0.113.9"),
            ("10.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),
            ("10.0.0.1", "192.0.2.66, unknown", "10.0.0.1"),
            ("10.0.0.1", "192.0.2.66, unknown, 10.0.0.2", "10.0.0.2"),
            ("10.0.0.1", "192.0.2.66, attacker.example", "10.0.0.1"),
            ("10.0.0.1", "192.0.2.66,", "10.0.0.1"),
            ("10.0.0.1", "192.0.2.66, 203.0.113.9:4711", "203.0.113.9"),
            ("10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
            ("10.0.0.1", "[2001:db8::7]", "2001:db8::7"),
            ("10.0.0.1", "2001:db8::7", "2001:db8::7"),
            ("10.0.0.1", "10.0.0.2, 10.0.0.2", "10.0.0.2"),
        ] {
            let mut h = HeaderMap::new();
            if !header.is_empty() {
                h.insert("x-forwarded-for", HeaderValue::from_str(header).unwrap());
            }
            let got = client_ip(&h, Some(peer.parse().unwrap()), &trusted);
            assert_eq!(got, Some(want.parse().unwrap()), "{peer} {header:?}");
        }
    }
}
