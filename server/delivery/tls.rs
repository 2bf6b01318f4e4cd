//! TLS for deliveries beyond the defaults: an endpoint's pinned keys and
//! private CA (`crate::domain::endpoint_tls`), and the node's client
//! certificate (`--delivery-client-cert`, `--delivery-client-key`).
//!
//! An endpoint with TLS settings gets its own rustls `ClientConfig`: the
//! public (webpki) roots plus its CA, verified by the normal
//! `WebPkiServerVerifier` and then, when it pins keys, by [`PinningVerifier`],
//! which refuses the chain unless one of its certificates carries a pinned
//! key. The refusal happens inside the handshake, so no byte of the request
//! is ever written to a receiver that fails the pin; it surfaces as a
//! [`PinMismatch`] inside the rustls error, which the HTTP client classifies
//! as `tls_pin_mismatch` ([`is_pin_mismatch`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::domain::endpoint_tls::{EndpointTls, SpkiHash, chain_matches_pins};

/// The certificate Herald presents to receivers that ask for one.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Certificates then key, as PEM, for reqwest's own TLS setup.
    pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            pem: self.pem.clone(),
        }
    }
}

impl ClientIdentity {
    /// Reads a PEM certificate chain and its PEM private key; says which
    /// file is wrong otherwise.
    pub fn from_files(certificate: &Path, key: &Path) -> Result<ClientIdentity, String> {
        let certificate_pem = std::fs::read(certificate)
            .map_err(|err| format!("cannot read {}: {err}", certificate.display()))?;
        let key_pem =
            std::fs::read(key).map_err(|err| format!("cannot read {}: {err}", key.display()))?;
        Self::from_pem(&certificate_pem, &key_pem).map_err(|err| {
            format!(
                "--delivery-client-cert {} / --delivery-client-key {}: {err}",
                certificate.display(),
                key.display()
            )
        })
    }

    pub fn from_pem(certificate_pem: &[u8], key_pem: &[u8]) -> Result<ClientIdentity, String> {
        let (chain, key) = crate::pem::identity(certificate_pem, key_pem)?;
        // Fails when the key does not parse or does not match.
        client_config(
            None,
            Some(&ClientIdentity {
                chain: chain.clone(),
                key: key.clone_key(),
                pem: Vec::new(),
            }),
        )
        .map_err(|err| format!("the key does not suit the certificate ({err})"))?;
        let mut pem = certificate_pem.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(key_pem);
        Ok(ClientIdentity { chain, key, pem })
    }

    /// Certificates then key, as one PEM buffer.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// The refusal of a chain that carries no pinned key.
#[derive(Debug, thiserror::Error)]
#[error(
    "the receiver's certificate chain carries none of the endpoint's pinned keys (pinned_spki_sha256)"
)]
pub struct PinMismatch;

/// Whether a rustls error is [`PinMismatch`]'s refusal.
pub fn is_pin_mismatch(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PinMismatch>().is_some()
        }
        _ => false,
    }
}

/// The SHA-256 of a certificate's DER SubjectPublicKeyInfo (outer SEQUENCE
/// included, as `openssl pkey -pubin -outform der` writes it); `None` when
/// the certificate does not parse.
pub fn spki_sha256(certificate: &CertificateDer<'_>) -> Option<SpkiHash> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    let spki = parsed.subject_public_key_info();
    Some(Sha256::digest(spki.as_ref()).into())
}

/// The normal verifier, then the pin check on the presented chain.
#[derive(Debug)]
pub struct PinningVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<SpkiHash>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let presented: Vec<SpkiHash> = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(spki_sha256)
            .collect();
        if chain_matches_pins(&self.pins, &presented) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client configuration for an endpoint's settings (`None`: the public
/// roots only) and the node's client certificate, if any. Needs the
/// process-wide rustls provider (`crate::install_crypto_provider`).
pub fn client_config(
    settings: Option<&EndpointTls>,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let pins = settings
        .map(|settings| settings.pins.clone())
        .unwrap_or_default();
    if let Some(settings) = settings {
        // Checked when accepted; a certificate that no longer parses is
        // left out (the endpoint then trusts less, never more).
        roots.add_parsable_certificates(settings.ca_certificates());
    }
    let inner = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|err| rustls::Error::General(err.to_string()))?;
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinningVerifier { inner, pins }));
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    // As reqwest's own configuration offers them.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pin_refusal_is_a_pin_mismatch() {
        let mismatch = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(PinMismatch),
        )));
        assert!(is_pin_mismatch(&mismatch));
        for other in [
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                std::io::Error::other("something else"),
            )))),
            rustls::Error::General("x".to_owned()),
        ] {
            assert!(!is_pin_mismatch(&other), "{other:?}");
        }
    }

    #[test]
    fn a_client_identity_needs_a_certificate_and_its_own_key() {
        crate::install_crypto_provider();
        let key = rcgen::KeyPair::generate().expect("key");
        let other_key = rcgen::KeyPair::generate().expect("another key");
        let certificate = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let certificate_pem = certificate.pem();
        let identity =
            ClientIdentity::from_pem(certificate_pem.as_bytes(), key.serialize_pem().as_bytes())
                .expect("a matching pair");
        assert!(client_config(None, Some(&identity)).is_ok());
        for (certificate, key, message) in [
            (
                certificate_pem.clone(),
                other_key.serialize_pem(),
                "does not suit",
            ),
            (String::new(), key.serialize_pem(), "no PEM certificate"),
            (
                certificate_pem.clone(),
                String::new(),
                "no usable PEM private key",
            ),
        ] {
            let err = ClientIdentity::from_pem(certificate.as_bytes(), key.as_bytes())
                .expect_err(message);
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn the_spki_hash_is_that_of_the_der_public_key() {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let expected: SpkiHash = Sha256::digest(key.subject_public_key_info()).into();
        assert_eq!(spki_sha256(certificate.der()), Some(expected));
        assert_eq!(spki_sha256(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
