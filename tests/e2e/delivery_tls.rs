//! TLS control on delivery: an endpoint's pinned keys and private CA, and
//! the node's client certificate (`--delivery-client-cert`), against real
//! TLS receivers whose certificates a private CA made in the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_client::proto::{self, EndpointKind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, assert_status};
use crate::receiver::rows::Rows;
use crate::tls::Pki;

both_backends!(
    a_pinned_key_that_matches_is_delivered,
    a_pin_mismatch_sends_nothing_and_is_recorded,
    receivers_requiring_client_certificates_accept_heralds,
    tls_settings_are_validated,
);

const DEADLINE: Duration = Duration::from_secs(20);

/// What a TLS receiver saw: connections, the plaintext bytes of each
/// request, and why handshakes failed.
#[derive(Clone, Default)]
struct Seen {
    connections: Arc<Mutex<usize>>,
    requests: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn connections(&self) -> usize {
        *self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An HTTPS receiver on 127.0.0.1 (certificate for `localhost` from the
/// test's CA) answering 204; with `client_ca`, it requires a client
/// certificate that CA issued. Runs on a thread until the process ends.
struct TlsReceiver {
    port: u16,
    seen: Seen,
}

impl TlsReceiver {
    fn start(pki: &Pki, require_client_certificate: bool) -> TlsReceiver {
        herald::install_crypto_provider();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .expect("server certificate")
            .collect::<Result<_, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("server key");
        let builder = rustls::ServerConfig::builder();
        let config = if require_client_certificate {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(&pki.ca).expect("CA") {
                roots.add(certificate.expect("CA PEM")).expect("CA parses");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        }
        .with_single_cert(chain, key)
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let seen = Seen::default();
        let counted = seen.clone();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(socket) = socket else { continue };
                *counted
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) += 1;
                let config = config.clone();
                let counted = counted.clone();
                std::thread::spawn(move || serve(config, socket, &counted));
            }
        });
        TlsReceiver { port, seen }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/hook", self.port)
    }
}

/// One connection: the handshake, then one HTTP/1.1 request, answered 204.
fn serve(config: Arc<rustls::ServerConfig>, socket: TcpStream, seen: &Seen) {
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let connection = rustls::ServerConnection::new(config).expect("server connection");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                request.extend_from_slice(&buffer[..read]);
                if complete(&request) {
                    break;
                }
            }
            Err(err) => {
                if request.is_empty() {
                    seen.failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(err.to_string());
                }
                break;
            }
        }
    }
    if request.is_empty() {
        return;
    }
    seen.requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(String::from_utf8_lossy(&request).into_owned());
    let _ = stream
        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// Headers and as many body bytes as `content-length` says.
fn complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("read a PEM file")
}

/// The pin of a PEM key pair's public key.
fn pin_of_key(key_path: &std::path::Path) -> String {
    use rcgen::PublicKeyData;
    let key = rcgen::KeyPair::from_pem(&read(key_path)).expect("key pair");
    STANDARD.encode(Sha256::digest(key.subject_public_key_info()))
}

async fn consumer(server: &TestServer, uid: &str) -> String {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_consumer(proto::CreateConsumerRequest {
            uid: uid.into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer")
        .id
}

async fn endpoint(server: &TestServer, request: proto::CreateEndpointRequest) -> proto::Endpoint {
    server
        .subscriptions(ADMIN_TOKEN)
        .await
        .create_endpoint(request)
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
}

/// Publishes one event to the endpoint and waits for its first attempt.
async fn first_attempt(
    rows: &Rows,
    consumer_id: &str,
    endpoint_id: &str,
    payload: &str,
) -> herald::storage::entities::attempt::Model {
    let (_, delivery_id) = rows
        .publish(consumer_id, Some(endpoint_id), None, payload)
        .await;
    crate::common::wait_for("an attempt", DEADLINE, || async {
        rows.attempts(&delivery_id).await.into_iter().next()
    })
    .await
}

async fn a_pinned_key_that_matches_is_delivered(backend: Backend) {
    let pki = Pki::new("receiver");
    let receiver = TlsReceiver::start(&pki, false);
    let server = TestServer::start(backend).await;
    let rows = Rows::open(&server.database.url).await;
    let consumer_id = consumer(&server, "pinned").await;
    let pin = pin_of_key(&pki.server_key);
    let created = endpoint(
        &server,
        proto::CreateEndpointRequest {
            consumer_id: consumer_id.clone(),
            url: receiver.url(),
            // Another key first: any pinned key in the chain will do.
            pinned_spki_sha256: vec![STANDARD.encode([7u8; 32]), pin.clone()],
            ca_pem: read(&pki.ca),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(created.pinned_spki_sha256.len(), 2);
    assert_eq!(created.pinned_spki_sha256[1], pin);
    assert!(created.ca_pem.contains("BEGIN CERTIFICATE"));

    let attempt = first_attempt(&rows, &consumer_id, &created.id, r#"{"pinned":true}"#).await;
    assert_eq!(attempt.status_code, Some(204), "{attempt:?}");
    assert!(attempt.succeeded, "{attempt:?}");
    let requests = receiver.seen.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains(r#"{"pinned":true}"#));
    server.finish().await;
}

async fn a_pin_mismatch_sends_nothing_and_is_recorded(backend: Backend) {
    let pki = Pki::new("receiver");
    let receiver = TlsReceiver::start(&pki, false);
    let server = TestServer::start(backend).await;
    let rows = Rows::open(&server.database.url).await;
    let consumer_id = consumer(&server, "mismatch").await;
    // The CA's key is not in the chain the receiver presents (only its own
    // certificate is), so it does not match either.
    let created = endpoint(
        &server,
        proto::CreateEndpointRequest {
            consumer_id: consumer_id.clone(),
            url: receiver.url(),
            pinned_spki_sha256: vec![STANDARD.encode([9u8; 32])],
            ca_pem: read(&pki.ca),
            ..Default::default()
        },
    )
    .await;
    let attempt = first_attempt(&rows, &consumer_id, &created.id, r#"{"secret":"payload"}"#).await;
    assert_eq!(
        attempt.error_class.as_deref(),
        Some("tls_pin_mismatch"),
        "{attempt:?}"
    );
    assert!(!attempt.succeeded);
    assert_eq!(attempt.status_code, None);
    assert!(
        attempt.response_body.contains("pinned"),
        "{}",
        attempt.response_body
    );
    assert!(receiver.seen.connections() >= 1, "a handshake was tried");
    assert!(
        receiver.seen.requests().is_empty(),
        "not a byte of the request reached the receiver: {:?}",
        receiver.seen.requests()
    );

    // The same receiver without pins (its CA still trusted) is delivered
    // to: the mismatch was the pin, nothing else.
    let unpinned = server
        .subscriptions(ADMIN_TOKEN)
        .await
        .update_endpoint(proto::UpdateEndpointRequest {
            id: created.id.clone(),
            pinned_spki_sha256: Some(proto::StringList { values: Vec::new() }),
            ..Default::default()
        })
        .await
        .expect("remove the pins")
        .into_inner();
    assert!(unpinned.pinned_spki_sha256.is_empty());
    let attempt = first_attempt(&rows, &consumer_id, &created.id, r#"{"n":2}"#).await;
    assert_eq!(attempt.status_code, Some(204), "{attempt:?}");
    server.finish().await;
}

async fn receivers_requiring_client_certificates_accept_heralds(backend: Backend) {
    let pki = Pki::new("mutual");
    let receiver = TlsReceiver::start(&pki, true);

    // Without a client certificate the receiver refuses the connection.
    let plain = TestServer::start(backend).await;
    let plain_rows = Rows::open(&plain.database.url).await;
    let consumer_id = consumer(&plain, "no-client-cert").await;
    let created = endpoint(
        &plain,
        proto::CreateEndpointRequest {
            consumer_id: consumer_id.clone(),
            url: receiver.url(),
            ca_pem: read(&pki.ca),
            ..Default::default()
        },
    )
    .await;
    let attempt = first_attempt(&plain_rows, &consumer_id, &created.id, "{}").await;
    assert!(!attempt.succeeded, "{attempt:?}");
    assert_eq!(attempt.status_code, None, "{attempt:?}");
    assert!(receiver.seen.requests().is_empty());
    crate::common::wait_for("the receiver's refusal", DEADLINE, || async {
        (!receiver.seen.failures().is_empty()).then_some(())
    })
    .await;
    assert!(
        receiver
            .seen
            .failures()
            .iter()
            .any(|failure| failure.to_lowercase().contains("certificate")),
        "{:?}",
        receiver.seen.failures()
    );
    plain.finish().await;

    // With --delivery-client-cert, it accepts Herald's.
    let server = TestServer::start_with(backend, |config| {
        config.delivery_client_cert = Some(pki.client_cert.clone());
        config.delivery_client_key = Some(pki.client_key.clone());
    })
    .await;
    let rows = Rows::open(&server.database.url).await;
    let consumer_id = consumer(&server, "client-cert").await;
    let created = endpoint(
        &server,
        proto::CreateEndpointRequest {
            consumer_id: consumer_id.clone(),
            url: receiver.url(),
            ca_pem: read(&pki.ca),
            pinned_spki_sha256: vec![pin_of_key(&pki.server_key)],
            ..Default::default()
        },
    )
    .await;
    let attempt = first_attempt(&rows, &consumer_id, &created.id, r#"{"mutual":true}"#).await;
    assert_eq!(attempt.status_code, Some(204), "{attempt:?}");
    let requests = receiver.seen.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains(r#"{"mutual":true}"#));
    server.finish().await;
}

async fn tls_settings_are_validated(backend: Backend) {
    let pki = Pki::new("validation");
    let server = TestServer::start(backend).await;
    let consumer_id = consumer(&server, "validation").await;
    let mut client = server.subscriptions(ADMIN_TOKEN).await;
    let pin = pin_of_key(&pki.server_key);
    let base = proto::CreateEndpointRequest {
        consumer_id: consumer_id.clone(),
        url: "https://localhost:9/hook".into(),
        ..Default::default()
    };
    for (request, needle) in [
        (
            proto::CreateEndpointRequest {
                pinned_spki_sha256: vec!["not a pin".into()],
                ..base.clone()
            },
            "pinned_spki_sha256[0]: must be the standard base64",
        ),
        (
            proto::CreateEndpointRequest {
                pinned_spki_sha256: vec![pin.clone(), STANDARD.encode([1u8; 31])],
                ..base.clone()
            },
            "pinned_spki_sha256[1]: must be the standard base64",
        ),
        (
            proto::CreateEndpointRequest {
                pinned_spki_sha256: vec![pin.clone(); 9],
                ..base.clone()
            },
            "pinned_spki_sha256: must have at most 8 entries",
        ),
        (
            proto::CreateEndpointRequest {
                ca_pem: "not PEM at all".into(),
                ..base.clone()
            },
            "ca_pem: must hold at least one PEM certificate",
        ),
        (
            proto::CreateEndpointRequest {
                ca_pem: "x".repeat(64 * 1024 + 1),
                ..base.clone()
            },
            "ca_pem: must be at most 65536 bytes",
        ),
        (
            proto::CreateEndpointRequest {
                url: "http://localhost:9/hook".into(),
                pinned_spki_sha256: vec![pin.clone()],
                ..base.clone()
            },
            "pinned_spki_sha256: applies only to https:// URLs",
        ),
        (
            proto::CreateEndpointRequest {
                url: "http://localhost:9/hook".into(),
                ca_pem: read(&pki.ca),
                ..base.clone()
            },
            "ca_pem: applies only to https:// URLs",
        ),
        (
            proto::CreateEndpointRequest {
                kind: EndpointKind::Stream as i32,
                url: String::new(),
                pinned_spki_sha256: vec![pin.clone()],
                ..base.clone()
            },
            "pinned_spki_sha256: applies only to WEBHOOK endpoints",
        ),
    ] {
        assert_status(
            client.create_endpoint(request).await,
            Code::InvalidArgument,
            needle,
        );
    }

    // Updates follow the same rules, and the URL cannot lose https://
    // while settings need it.
    let created = client
        .create_endpoint(proto::CreateEndpointRequest {
            pinned_spki_sha256: vec![pin.clone()],
            ca_pem: read(&pki.ca),
            ..base.clone()
        })
        .await
        .expect("valid settings")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(created.pinned_spki_sha256, vec![pin.clone()]);
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: created.id.clone(),
                url: Some("http://localhost:9/hook".into()),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "url: must be https:// while the endpoint has pinned_spki_sha256",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: created.id.clone(),
                pinned_spki_sha256: Some(proto::StringList {
                    values: vec!["AAAA".into()],
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "pinned_spki_sha256[0]",
    );
    assert_status(
        client
            .update_endpoint(proto::UpdateEndpointRequest {
                id: created.id.clone(),
                ca_pem: Some(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                ),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "ca_pem",
    );
    // Clearing both lets the URL become http:// (the test server allows it).
    let cleared = client
        .update_endpoint(proto::UpdateEndpointRequest {
            id: created.id.clone(),
            pinned_spki_sha256: Some(proto::StringList { values: Vec::new() }),
            ca_pem: Some(String::new()),
            url: Some("http://localhost:9/hook".into()),
            ..Default::default()
        })
        .await
        .expect("settings removed")
        .into_inner();
    assert!(cleared.pinned_spki_sha256.is_empty());
    assert_eq!(cleared.ca_pem, "");
    assert_eq!(cleared.url, "http://localhost:9/hook");
    server.finish().await;
}
