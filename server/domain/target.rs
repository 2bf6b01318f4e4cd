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
        // What is stored and shown is the URL as serialized: percent-encoding
        // can make it three times longer, and a stored URL too long to send
        // back (UpdateEndpoint) would be a trap.
        if url.as_str().len() > MAX_URL_LENGTH {
            return Err(Error::invalid(
                field,
                format!(
                    "must be at most {MAX_URL_LENGTH} characters once percent-encoded (it is {})",
                    url.as_str().len()
                ),
            ));
        }
        self.check_url(field, &url)?;
        Ok(url)
    }

    /// Checks a parsed URL against this policy: the scheme, and the host when
    /// it is a literal address or a `localhost` name. The delivery client
    /// calls it again before every POST, because a URL accepted under an
    /// earlier policy (`--allow-http`, a wider `--allow-target-cidr`) must not
    /// keep being served after the operator narrowed it.
    pub fn check_url(&self, field: &str, url: &Url) -> Result<()> {
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
        Ok(())
    }
}

/// Whether an address lies outside the public unicast internet.
///
/// Checked against the IANA IPv4 and IPv6 special-purpose address registries
/// (as of 2025). IPv4 is listed range by range; every range that is not
/// globally reachable is refused, and so are the documentation ranges (no
/// real receiver lives there, and both families must agree: `2001:db8::/32`
/// was refused while `192.0.2.0/24` was not) and the deprecated 6to4 relay
/// anycast. The few globally reachable special-purpose IPv4 ranges (AS112,
/// AMT, PCP and TURN anycast outside 192.0.0.0/24) stay allowed: they are
/// ordinary public addresses. IPv6 is checked the other way round: only the
/// global unicast space `2000::/3` holds public hosts (IANA allocates nothing
/// else), so anything outside it is refused (loopback, unspecified, ULA,
/// link-local, site-local, multicast, discard `100::/64`, the dummy prefix
/// `100:0:0:1::/64`, Segment Routing `5f00::/16`, IPv4-compatible and
/// IPv4-translated forms, the local-use NAT64 prefix `64:ff9b:1::/48`)
/// except the well-known NAT64 prefix `64:ff9b::/96`, which is judged by the
/// IPv4 address it embeds, as are IPv4-mapped `::ffff:0:0/96` and 6to4
/// `2002::/16`. Inside `2000::/3`, the IETF protocol assignments
/// `2001::/23` (Teredo, benchmarking, ORCHID, anycast service addresses;
/// none is a webhook receiver, and Teredo tunnels to embedded IPv4 hosts)
/// and both documentation prefixes (`2001:db8::/32`, `3fff::/20`) are refused.
pub fn is_non_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    address.is_loopback()
        || address.is_private()
        || address.is_link_local() // 169.254.0.0/16, cloud metadata included
        || address.is_multicast()
        || address.is_unspecified()
        || address.is_broadcast()
        || a == 0 // "this network" 0.0.0.0/8
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1 192.0.2.0/24
        || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast 192.88.99.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2 198.51.100.0/24
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3 203.0.113.0/24
        || a >= 240 // reserved 240.0.0.0/4
}

fn is_non_public_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_non_public_v4(v4);
    }
    let segments = address.segments();
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    // Well-known NAT64 (64:ff9b::/96) carries the IPv4 address it reaches.
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6].iter().all(|&s| s == 0) {
        return is_non_public_v4(embedded(segments[6], segments[7]));
    }
    // Global unicast is 2000::/3; nothing public lies outside it.
    if segments[0] & 0xe000 != 0x2000 {
        return true;
    }
    // 6to4 (2002::/16) carries an IPv4 address too.
    if segments[0] == 0x2002 {
        return is_non_public_v4(embedded(segments[1], segments[2]));
    }
    match segments[0] {
        // IETF protocol assignments 2001::/23, documentation 2001:db8::/32
        0x2001 => segments[1] < 0x0200 || segments[1] == 0x0db8,
        // documentation 3fff::/20
        0x3fff => segments[1] < 0x1000,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn urls_are_limited_as_stored_not_only_as_given() {
        let given = format!("https://example.com/{}", "é".repeat(1000));
        assert!(given.len() <= MAX_URL_LENGTH);
        let err = policy()
            .parse_url("url", &given)
            .expect_err("6,020 characters once encoded");
        assert!(err.to_string().contains("once percent-encoded"), "{err}");
        let fits = format!("https://example.com/{}", "é".repeat(300));
        let url = policy().parse_url("url", &fits).expect("under the limit");
        assert!(url.as_str().len() <= MAX_URL_LENGTH);
        // What was stored is accepted again as it is.
        assert!(policy().parse_url("url", url.as_str()).is_ok());
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
            // Documentation, in both families.
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.255",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "::ffff:192.0.2.1",
            "64:ff9b::c000:201",
            // Other special-purpose ranges.
            "192.0.0.9",
            "192.88.99.1",
            "198.19.255.255",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
            "100::1",
            "100:0:0:1::1",
            "5f00::1",
            "2001::1",
            "2001:2::1",
            "2001:1ff:ffff::1",
            "::8.8.8.8",
            "::ffff:0:808:808",
            "fec0::1",
            "4000::1",
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
            "64:ff9b::808:808",
            "2002:808:808::1",
            "192.0.3.1",
            "192.0.1.255",
            "198.51.101.1",
            "203.0.112.1",
            "2001:200::1",
            "2001:db9::1",
            "3ffe:ffff::1",
            "3fff:1000::1",
            "2a00:1450:4001::1",
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
            "https://192.0.2.10/hook",
            "https://198.51.100.1/hook",
            "https://203.0.113.5/hook",
            "https://[64:ff9b:1::a00:1]/hook",
            "https://[3fff::1]/hook",
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

    #[test]
    fn allowed_ranges_exempt_documentation_and_nat64_ranges() {
        let policy = TargetPolicy {
            allow_http: false,
            allowed: vec![
                "192.0.2.0/24".parse().expect("range parses"),
                "64:ff9b:1::/48".parse().expect("range parses"),
            ],
        };
        assert!(policy.parse_url("url", "https://192.0.2.10/hook").is_ok());
        assert!(policy.parse_url("url", "https://[64:ff9b:1::1]/").is_ok());
        assert!(policy.permits("192.0.2.200".parse().expect("address")));
        assert!(!policy.permits("198.51.100.1".parse().expect("address")));
    }
}
