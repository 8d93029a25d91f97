//! Who really called: the TCP peer, or, when the peer is a trusted proxy, the address the
//! proxies name in `Forwarded` (RFC 7239) or `X-Forwarded-For`.

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Forwarded addresses read at most; a longer chain is cut at its rightmost entries.
const MAX_HOPS: usize = 32;

/// Proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: walking the chain from the peer leftwards, the first hop not
    /// in the trusted list. Headers from an untrusted peer are never read, so a caller
    /// cannot choose the address it is counted and recorded under.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = canonical(peer?.ip());
        if !self.trusts(client) {
            return Some(client);
        }
        for hop in forwarded_chain(headers).into_iter().rev().take(MAX_HOPS) {
            // A hop that is not an address (`unknown`, an obfuscated name, garbage) was
            // written by a trusted proxy: the nearest trusted hop is the best answer.
            let Some(ip) = hop else { break };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The forwarded addresses, leftmost (farthest) first: from `Forwarded` when present,
/// else from `X-Forwarded-For`; `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// The `for=` of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value.trim().trim_matches('"')))?
    })
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    node.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The key a client address is rate limited under: an IPv6 caller usually holds a whole
/// /64, so the /64 counts as one.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 5000))
    }

    #[test]
    fn forwarding_headers_of_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let client = proxies(&["10.0.0.0/8"]).client(peer("192.0.2.9"), &h);
        assert_eq!(client, Some("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn the_chain_is_walked_right_to_left_past_trusted_hops() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        let client = proxies(&["10.0.0.0/8"]).client(peer("10.0.0.1"), &h);
        assert_eq!(client, Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_keeps_ipv6_brackets_and_ports() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https"#,
            ),
        ]);
        let client = proxies(&["10.0.0.0/8"]).client(peer("10.0.0.1"), &h);
        assert_eq!(client, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn an_entry_that_is_no_address_stops_at_the_nearest_trusted_hop() {
        let h = headers(&[("forwarded", "for=unknown")]);
        let client = proxies(&["10.0.0.0/8"]).client(peer("10.0.0.1"), &h);
        assert_eq!(client, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_caller_is_limited_by_its_64() {
        assert_eq!(
            limit_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
    }
}
