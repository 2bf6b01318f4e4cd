//! Which delivery targets Herald may reach: the SSRF policy.
//!
//! Webhook URLs come from callers, so without a policy anyone who can create an
//! endpoint could make Herald POST into the operator's private network or a
//! cloud metadata service. Addresses in non-public ranges are refused unless
//! the operator allows a range explicitly. The same [`TargetPolicy`] is applied
//! twice: to literal IP hosts when a URL is accepted, and by the delivery
//! client to every address a host name resolves to, right before connecting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use crate::error::{Error, Result};

pub const MAX_URL_LENGTH: usize = 2048;

#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Accept `http://` as well as `https://`.
    pub allow_http: bool,
    /// Ranges exempt from the block (`--allow-target-cidr`).
    pub allowed: Vec<IpNet>,
}

impl TargetPolicy {
    /// Whether a connection to `address` is allowed.
    pub fn permits(&self, address: IpAddr) -> bool {
        !is_non_public(address) || self.allowed.iter().any(|range| range.contains(&address))
    }

    /// Parses and checks a webhook URL given in `field`.
    pub fn parse_url(&self, field: &str, raw: &str) -> Result<Url> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if raw.len() > MAX_URL_LENGTH {
            return Err(Error::invalid(
                field,
                format!("must be at most {MAX_URL_LENGTH} characters"),
            ));
        }
        let url = Url::parse(raw)
            .map_err(|err| Error::invalid(field, format!("is not a valid URL ({err})")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Error::invalid(
                    field,
                    "must use https:// (this server does not allow http:// targets; see --allow-http)",
                ));
            }
            other => {
                return Err(Error::invalid(
                    field,
                    format!("must use https://, not {other}://"),
                ));
            }
        }
        if url.fragment().is_some() {
            return Err(Error::invalid(field, "must not contain a #fragment"));
        }
        let blocked = |address: IpAddr| {
            Error::invalid(
                field,
                format!(
                    "targets {address}, a loopback, private, link-local or otherwise non-public address (see --allow-target-cidr)"
                ),
            )
        };
        match url.host() {
            None => return Err(Error::invalid(field, "must have a host")),
            Some(Host::Ipv4(address)) if !self.permits(IpAddr::V4(address)) => {
                return Err(blocked(IpAddr::V4(address)));
            }
            Some(Host::Ipv6(address)) if !self.permits(IpAddr::V6(address)) => {
                return Err(blocked(IpAddr::V6(address)));
            }
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
                if (name == "localhost" || name.ends_with(".localhost")) && !self.permits(loopback)
                {
                    return Err(blocked(loopback));
                }
            }
            Some(_) => {}
        }
        Ok(url)
    }
}

/// Whether an address lies outside the public unicast internet: loopback,
/// private, link-local (including cloud metadata at 169.254.169.254), CGNAT,
/// multicast, unspecified, broadcast, reserved and benchmarking ranges, and
/// IPv6 forms that embed such an IPv4 address.
pub fn is_non_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, _, _] = address.octets();
    address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_multicast()
        || address.is_unspecified()
        || address.is_broadcast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && address.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_non_public_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_non_public_v4(v4);
    }
    let segments = address.segments();
    // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks).
    if segments[..6].iter().all(|&segment| segment == 0) {
        let v4 = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
        return address.is_loopback() || address.is_unspecified() || is_non_public_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address inside.
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6].iter().all(|&s| s == 0) {
        let v4 = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
        return is_non_public_v4(v4);
    }
    if segments[0] == 0x2002 {
        let v4 = Ipv4Addr::from(((segments[1] as u32) << 16) | segments[2] as u32);
        return is_non_public_v4(v4);
    }
    address.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[0] == 0x0100 && segments[1..4].iter().all(|&s| s == 0) // discard 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::ffff:169.254.169.254",
        ] {
            let address: IpAddr = blocked.parse().expect("test address parses");
            assert!(is_non_public(address), "{blocked} must be blocked");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            let address: IpAddr = public.parse().expect("test address parses");
            assert!(!is_non_public(address), "{public} must be allowed");
        }
    }

    #[test]
    fn urls_are_checked() {
        let policy = policy();
        assert!(policy.parse_url("url", "https://example.com/hook").is_ok());
        for bad in [
            "",
            "not a url",
            "http://example.com/",
            "ftp://example.com/",
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:8080/",
            "https://api.localhost/",
            "https://example.com/#frag",
        ] {
            let err = policy.parse_url("url", bad).expect_err(bad);
            assert!(err.to_string().starts_with("url: "), "{bad}: {err}");
        }
    }

    #[test]
    fn allowed_ranges_and_http_are_honoured() {
        let policy = TargetPolicy {
            allow_http: true,
            allowed: vec!["127.0.0.0/8".parse().expect("range parses")],
        };
        assert!(
            policy
                .parse_url("url", "http://127.0.0.1:8080/hook")
                .is_ok()
        );
        assert!(
            policy
                .parse_url("url", "http://localhost:8080/hook")
                .is_ok()
        );
        assert!(policy.parse_url("url", "http://10.0.0.1/").is_err());
    }
}
