//! The SSRF policy: webhook and callback URLs, and the addresses a delivery
//! may connect to.
//!
//! Input: line 1 is a URL, checked under the default policy and under
//! `--allow-http`; line 2, if it is an IP address in text, is checked as an
//! address. The first 4 and 16 bytes of the input are also read as an IPv4
//! and an IPv6 address, so that the fuzzer's comparison tracing steers
//! address bits straight into the ranges the policy tests.
//!
//! Invariants:
//! - nothing panics, and every refusal names the field;
//! - an accepted URL has an allowed scheme, a host, no fragment, no
//!   non-public literal address and no `localhost` name, and survives being
//!   stored and read back: the delivery client parses the stored text again
//!   and re-checks it, and must reach the same decision;
//! - a URL whose host is a literal address is accepted exactly when the
//!   address is, so URL parsing cannot smuggle an address past the check;
//! - every address the standard library's (unstable) `is_global` calls not
//!   globally reachable is non-public here too; the known and intended
//!   differences are IPv4-mapped and 6to4 addresses, which are judged by the
//!   IPv4 address they carry, as NAT64 ones are;
//! - the default policy permits exactly the public addresses, and an allowed
//!   range permits every address inside it.
#![no_main]
#![feature(ip)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herald::domain::target::{MAX_URL_LENGTH, TargetPolicy, is_non_public};
use herald_fuzz::lines;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

const FIELD: &str = "url";

fuzz_target!(|data: &[u8]| {
    let (fields, _) = lines(data, 2);
    let strict = TargetPolicy::default();
    let http = TargetPolicy {
        allow_http: true,
        allowed: Vec::new(),
    };
    check_url_text(&strict, &fields[0]);
    check_url_text(&http, &fields[0]);

    if let Ok(address) = fields[1].trim().parse::<IpAddr>() {
        check_address(&strict, address, data);
    }
    let mut v6 = [0u8; 16];
    let head = &data[..data.len().min(16)];
    v6[..head.len()].copy_from_slice(head);
    let v4 = Ipv4Addr::new(v6[0], v6[1], v6[2], v6[3]);
    check_address(&strict, IpAddr::V4(v4), data);
    check_address(&strict, IpAddr::V6(Ipv6Addr::from(v6)), data);
    check_embeddings(v4, &v6);
});

fn check_url_text(policy: &TargetPolicy, raw: &str) {
    let url = match policy.parse_url(FIELD, raw) {
        Ok(url) => url,
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("url: "), "{raw:?}: {message}");
            return;
        }
    };
    assert!(!raw.is_empty() && raw.len() <= MAX_URL_LENGTH, "{raw:?}");
    assert_accepted(policy, &url, raw);

    // What the delivery client does with the stored text.
    let stored = url.as_str();
    let reread = Url::parse(stored)
        .unwrap_or_else(|error| panic!("{raw:?} was stored as {stored:?}, unparsable: {error}"));
    assert_eq!(reread, url, "{raw:?} changes when read back");
    if let Err(error) = policy.check_url(FIELD, &reread) {
        panic!("{raw:?} accepted, but refused at delivery as {stored:?}: {error}");
    }
}

fn assert_accepted(policy: &TargetPolicy, url: &Url, raw: &str) {
    match url.scheme() {
        "https" => {}
        "http" => assert!(policy.allow_http, "{raw:?}"),
        other => panic!("{raw:?} accepted with scheme {other}"),
    }
    assert!(url.fragment().is_none(), "{raw:?} kept a fragment");
    match url.host() {
        None => panic!("{raw:?} accepted without a host"),
        Some(Host::Ipv4(address)) => assert!(
            policy.permits(IpAddr::V4(address)),
            "{raw:?} targets {address}"
        ),
        Some(Host::Ipv6(address)) => assert!(
            policy.permits(IpAddr::V6(address)),
            "{raw:?} targets {address}"
        ),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            assert!(
                name != "localhost" && !name.ends_with(".localhost"),
                "{raw:?} targets {name}"
            );
        }
    }
}

fn check_address(policy: &TargetPolicy, address: IpAddr, data: &[u8]) {
    let blocked = is_non_public(address);
    assert_eq!(policy.permits(address), !blocked, "{address}");
    agrees_with_std(address, blocked);

    let literal = match address {
        IpAddr::V4(v4) => format!("https://{v4}/hook"),
        IpAddr::V6(v6) => format!("https://[{v6}]/hook"),
    };
    match policy.parse_url(FIELD, &literal) {
        Ok(url) => assert!(!blocked, "{literal} accepted: {url}"),
        Err(error) => assert!(blocked, "{literal} refused: {error}"),
    }

    // A range the operator allowed exempts every address in it. The prefix
    // length comes from the input so that narrow and wide ranges both occur.
    let bits = data.get(16).copied().unwrap_or(0);
    let prefix = match address {
        IpAddr::V4(_) => bits % 33,
        IpAddr::V6(_) => bits % 129,
    };
    if let Ok(range) = IpNet::new(address, prefix) {
        let exempt = TargetPolicy {
            allow_http: false,
            allowed: vec![range.trunc()],
        };
        assert!(exempt.permits(address), "{address} in {range}");
    }
}

/// One-sided: Herald may refuse more than std (multicast, 192.0.0.9 and
/// .10, the 6to4 relay anycast, the rest of 2001::/23, NAT64 to a private
/// address), never less.
fn agrees_with_std(address: IpAddr, blocked: bool) {
    let judged_by_embedded_v4 = match address {
        IpAddr::V4(_) => false,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some() || v6.segments()[0] == 0x2002,
    };
    if !judged_by_embedded_v4 && !address.is_global() {
        assert!(blocked, "{address} is not global, yet Herald would connect");
    }
}

/// Addresses that carry an IPv4 address are judged by it, whatever else
/// they hold: a 6to4 prefix has 80 bits of its own, all irrelevant.
fn check_embeddings(v4: Ipv4Addr, bytes: &[u8; 16]) {
    let expected = is_non_public(IpAddr::V4(v4));
    let [a, b, c, d] = v4.octets();
    let mapped = v4.to_ipv6_mapped();
    let nat64 = Ipv6Addr::from([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]);
    let mut six_to_four = *bytes;
    six_to_four[..6].copy_from_slice(&[0x20, 0x02, a, b, c, d]);
    for (form, v6) in [
        ("mapped", mapped),
        ("NAT64", nat64),
        ("6to4", Ipv6Addr::from(six_to_four)),
    ] {
        assert_eq!(
            is_non_public(IpAddr::V6(v6)),
            expected,
            "{v4} and its {form} form {v6} disagree"
        );
    }
}
