//! Where a request comes from: the connection's peer address, or — when that peer is a
//! trusted proxy (`--trusted-proxy`) — the nearest address in `X-Forwarded-For` that is not
//! one. Used for the per-address limit of streams opened without a token.

use std::net::IpAddr;
use std::str::FromStr;

use http::Request;

use crate::vocab::control::PeerAddr;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`; a bare
/// address is a network of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = ();

    fn from_str(text: &str) -> Result<IpNet, ()> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| ())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(IpNet { address, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, address: IpAddr) -> bool {
        let bits = |address: IpAddr| -> Option<u128> {
            match (self.address, address) {
                (IpAddr::V4(_), IpAddr::V4(a)) => Some(u128::from(u32::from(a)) << 96),
                (IpAddr::V6(_), IpAddr::V6(a)) => Some(u128::from(a)),
                _ => None,
            }
        };
        let width = if self.address.is_ipv4() { 32 } else { 128 };
        let (Some(net), Some(candidate)) = (bits(self.address), bits(address)) else {
            return false;
        };
        let shift = 128 - u32::from(self.prefix) - (128 - width);
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (shift + (128 - width))
        };
        net & mask == candidate & mask
    }
}

/// The client's address: the peer's, or, behind trusted proxies, the last address in
/// `X-Forwarded-For` that is not a trusted proxy. `None` when the connection's peer is
/// unknown.
pub fn client_address<T>(request: &Request<T>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request.extensions().get::<PeerAddr>()?.0.ip();
    let is_trusted = |address: IpAddr| trusted.iter().any(|net| net.contains(address));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in request.headers().get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { break };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) if is_trusted(address) => client = address,
                Ok(address) => return Some(address),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(PeerAddr(format!("{peer}:40000").parse().unwrap()));
        for value in forwarded {
            request
                .headers_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        request
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let direct = request("203.0.113.9", &["198.51.100.1"]);
        assert_eq!(
            client_address(&direct, &trusted),
            Some("203.0.113.9".parse().unwrap()),
            "an untrusted peer's header is ignored"
        );
        let proxied = request("10.0.0.5", &["198.51.100.1, 10.0.0.7"]);
        assert_eq!(
            client_address(&proxied, &trusted),
            Some("198.51.100.1".parse().unwrap())
        );
        let spoofed = request("10.0.0.5", &["6.6.6.6, 198.51.100.2"]);
        assert_eq!(
            client_address(&spoofed, &trusted),
            Some("198.51.100.2".parse().unwrap()),
            "the nearest untrusted hop, not what the client claims further left"
        );
        let bare = request("10.0.0.5", &[]);
        assert_eq!(
            client_address(&bare, &trusted),
            Some("10.0.0.5".parse().unwrap())
        );
    }
}
