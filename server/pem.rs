//! Certificates and keys from the PEM files operators name, checked when
//! Herald starts, with errors that say what is wrong with which file: the
//! TLS stacks' own errors say little (tonic's: "transport error") and come
//! late (at the first handshake, or never).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate of a PEM file; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not valid PEM ({err})"))?;
    if chain.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(chain)
}

/// A certificate chain and its private key, each parsed, not yet known to
/// belong together (the caller's TLS configuration checks that).
pub fn identity(
    certificate_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain =
        certificates(certificate_pem).map_err(|err| format!("the certificate file {err}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|err| format!("the key file holds no usable PEM private key ({err})"))?;
    Ok((chain, key))
}

/// Checks a serving certificate and key as a TLS server would use them:
/// both parse, and the key is the certificate's.
pub fn check_serving(certificate_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let (chain, key) = identity(certificate_pem, key_pem)?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map(drop)
        .map_err(|err| format!("the key does not suit the certificate ({err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_passes_and_each_mistake_is_named() {
        crate::install_crypto_provider();
        let (cert, key) = pair();
        let (_, other_key) = pair();
        assert_eq!(check_serving(cert.as_bytes(), key.as_bytes()), Ok(()));
        let swapped = check_serving(key.as_bytes(), cert.as_bytes()).expect_err("swapped");
        assert!(
            swapped.contains("certificate file holds no PEM certificate"),
            "{swapped}"
        );
        let no_key = check_serving(cert.as_bytes(), cert.as_bytes()).expect_err("no key");
        assert!(
            no_key.contains("key file holds no usable PEM private key"),
            "{no_key}"
        );
        let mismatch =
            check_serving(cert.as_bytes(), other_key.as_bytes()).expect_err("another key");
        assert!(
            mismatch.contains("the key does not suit the certificate"),
            "{mismatch}"
        );
        assert!(certificates(b"").is_err());
    }
}
