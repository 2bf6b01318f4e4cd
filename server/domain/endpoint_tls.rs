//! An endpoint's TLS settings for its deliveries: public keys it pins
//! (`pinned_spki_sha256`) and a private CA it trusts besides the public
//! roots (`ca_pem`). Both apply only to WEBHOOK endpoints with `https://`
//! URLs. How they are enforced is `crate::delivery`'s business (its `tls`
//! module); this module holds the rules for accepting them and the pin
//! comparison itself.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// At most this many pins per endpoint (a current key and its successors).
pub const MAX_PINS: usize = 8;
/// At most this much PEM text per endpoint's CA.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// The SHA-256 hash of a DER `SubjectPublicKeyInfo`: what a pin names.
pub type SpkiHash = [u8; 32];

/// An endpoint's validated TLS settings; `None` of them means the defaults
/// (public roots, no pins), for which the shared client is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointTls {
    /// Pins, in the order given; empty means none.
    pub pins: Vec<SpkiHash>,
    /// PEM text holding at least one certificate, if any.
    pub ca_pem: Option<String>,
}

impl EndpointTls {
    /// The settings, or `None` when there are none (neither pins nor a CA).
    pub fn new(pins: Vec<SpkiHash>, ca_pem: Option<String>) -> Option<EndpointTls> {
        (!pins.is_empty() || ca_pem.is_some()).then_some(EndpointTls { pins, ca_pem })
    }

    /// The certificates of the CA (already checked to parse when accepted).
    pub fn ca_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.ca_pem
            .as_deref()
            .map(|pem| {
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .filter_map(std::result::Result::ok)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Pins as a request gives them: each the standard base64 of exactly 32
/// bytes (as `openssl … | openssl dgst -sha256 -binary | base64` prints
/// it), at most [`MAX_PINS`], none twice. Returns them as given (trimmed),
/// for storing and showing.
pub fn parse_pins(field: &str, pins: &[String]) -> Result<Vec<String>> {
    if pins.len() > MAX_PINS {
        return Err(Error::invalid(
            field,
            format!("must have at most {MAX_PINS} entries"),
        ));
    }
    let mut checked: Vec<String> = Vec::with_capacity(pins.len());
    for (index, pin) in pins.iter().enumerate() {
        let entry = format!("{field}[{index}]");
        let pin = pin.trim();
        if decode_pin(pin).is_none() {
            return Err(Error::invalid(
                &entry,
                "must be the standard base64 of a SHA-256 hash (32 bytes, 44 characters) of the receiver's DER SubjectPublicKeyInfo",
            ));
        }
        if checked.iter().any(|seen| seen == pin) {
            return Err(Error::invalid(&entry, "is given twice"));
        }
        checked.push(pin.to_owned());
    }
    Ok(checked)
}

/// A pin's 32 bytes, if it is one.
pub fn decode_pin(pin: &str) -> Option<SpkiHash> {
    STANDARD.decode(pin).ok()?.try_into().ok()
}

/// A CA as a request gives it: empty (or blank) means none; otherwise PEM
/// text of at most [`MAX_CA_PEM_BYTES`] holding at least one certificate
/// that parses, and nothing that does not.
pub fn parse_ca_pem(field: &str, pem: &str) -> Result<Option<String>> {
    if pem.trim().is_empty() {
        return Ok(None);
    }
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_CA_PEM_BYTES} bytes of PEM"),
        ));
    }
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate
            .map_err(|err| Error::invalid(field, format!("is not valid PEM ({err})")))?;
        let mut roots = rustls::RootCertStore::empty();
        if roots.add(certificate).is_err() {
            return Err(Error::invalid(
                field,
                format!(
                    "certificate {} does not parse as an X.509 CA certificate",
                    count + 1
                ),
            ));
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::invalid(
            field,
            "must hold at least one PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(Some(pem.to_owned()))
}

/// Whether any of the presented chain's keys (`chain`: the SHA-256 of each
/// certificate's SPKI, end entity first) is pinned. No pins pins nothing:
/// every chain matches.
pub fn chain_matches_pins(pins: &[SpkiHash], chain: &[SpkiHash]) -> bool {
    pins.is_empty() || chain.iter().any(|presented| pins.contains(presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn pins_are_base64_of_32_bytes() {
        assert_eq!(
            parse_pins(
                "pins",
                &[PIN.to_owned(), format!(" {} ", PIN.replace('4', "5"))]
            )
            .expect("valid"),
            vec![PIN.to_owned(), PIN.replace('4', "5")]
        );
        for (bad, message) in [
            ("not base64!", "pins[0]: must be the standard base64"),
            ("AAAA", "pins[0]: must be the standard base64"),
            (
                "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
                "pins[0]: must be the standard base64",
            ),
        ] {
            let err = parse_pins("pins", &[bad.to_owned()]).expect_err(bad);
            assert!(err.to_string().starts_with(message), "{bad}: {err}");
        }
        let err = parse_pins("pins", &[PIN.to_owned(), PIN.to_owned()]).expect_err("twice");
        assert!(
            err.to_string().starts_with("pins[1]: is given twice"),
            "{err}"
        );
        let many = vec![PIN.to_owned(); MAX_PINS + 1];
        let err = parse_pins("pins", &many).expect_err("too many");
        assert!(err.to_string().contains("at most 8"), "{err}");
    }

    #[test]
    fn ca_pem_must_hold_certificates() {
        assert_eq!(parse_ca_pem("ca_pem", "  ").expect("none"), None);
        for bad in [
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let err = parse_ca_pem("ca_pem", bad).expect_err(bad);
            assert!(err.to_string().starts_with("ca_pem: "), "{err}");
        }
        let err = parse_ca_pem("ca_pem", &"x".repeat(MAX_CA_PEM_BYTES + 1)).expect_err("large");
        assert!(err.to_string().contains("at most 65536 bytes"), "{err}");
    }

    #[test]
    fn a_chain_matches_when_any_presented_key_is_pinned() {
        let leaf = [1u8; 32];
        let intermediate = [2u8; 32];
        let other = [3u8; 32];
        assert!(chain_matches_pins(&[], &[leaf]), "no pins, no check");
        assert!(chain_matches_pins(&[leaf], &[leaf, intermediate]));
        assert!(chain_matches_pins(
            &[other, intermediate],
            &[leaf, intermediate]
        ));
        assert!(!chain_matches_pins(&[other], &[leaf, intermediate]));
        assert!(!chain_matches_pins(&[other], &[]));
    }

    #[test]
    fn settings_without_pins_or_ca_are_none() {
        assert_eq!(EndpointTls::new(Vec::new(), None), None);
        assert!(EndpointTls::new(vec![[0; 32]], None).is_some());
    }
}
