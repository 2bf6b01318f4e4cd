//! Mutual TLS on the API (`--tls-client-ca`): only clients holding a
//! certificate the configured CA issued can open a connection, whatever
//! API key they have; checked with the client crate and with grpcurl.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_client::{Code, Herald};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::common::{ADMIN_TOKEN, Backend, TestServer};
use crate::grpcurl::grpcurl;

/// A private CA with a server certificate for `localhost` and a client
/// certificate, written as PEM files (the way an operator has them).
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let ca_path = write(dir.path(), "ca.pem", &ca.pem());
        let (server_cert, server_key) = leaf(
            &ca,
            dir.path(),
            "server",
            vec!["localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca,
            dir.path(),
            "client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            _dir: dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// A server on SQLite serving TLS with this CA's server certificate;
    /// with `mutual`, requiring client certificates from this CA.
    pub async fn server(&self, mutual: bool) -> TestServer {
        TestServer::start_with(Backend::Sqlite, |config| {
            config.tls_cert = Some(self.server_cert.clone());
            config.tls_key = Some(self.server_key.clone());
            config.tls_client_ca = mutual.then(|| self.ca.clone());
        })
        .await
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write a PEM file");
    path
}

/// An end-entity certificate signed by `ca`, and its key.
fn leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let certificate = params.signed_by(&key, ca).expect("leaf certificate");
    (
        write(dir, &format!("{name}.pem"), &certificate.pem()),
        write(dir, &format!("{name}.key"), &key.serialize_pem()),
    )
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read a PEM file")
}

/// Connects with the client crate and makes one call.
async fn stats(
    url: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> herald_client::Result<u64> {
    let mut builder = Herald::connect(url)
        .ca_certificate(read(ca))
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(5));
    if let Some((certificate, key)) = identity {
        builder = builder.identity(read(certificate), read(key));
    }
    let herald = builder.await?;
    Ok(herald.stats().await?.consumers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_certificates_from_the_client_ca() {
    let pki = Pki::new("herald");
    let rogue = Pki::new("rogue");
    let server = pki.server(true).await;
    let url = format!("https://localhost:{}", server.addr.port());

    // The client crate: with the CA's client certificate, calls work.
    let consumers = stats(&url, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("a call with the client certificate");
    assert_eq!(consumers, 0);
    // Without one, or with one another CA issued, nothing gets through,
    // even with the admin key.
    for (what, identity) in [
        ("no client certificate", None),
        (
            "a certificate from another CA",
            Some((rogue.client_cert.as_path(), rogue.client_key.as_path())),
        ),
    ] {
        let error = stats(&url, &pki.ca, identity).await.expect_err(what);
        // The server never answered: UNAVAILABLE, with the transport's
        // cause (TLS 1.3 reports the refusal after the handshake, as a
        // closed connection).
        assert_eq!(error.code(), Code::Unavailable, "{what}: {error}");
        assert!(
            error.message().contains("transport error"),
            "{what}: {error}"
        );
    }

    // grpcurl, as an operator runs it.
    let address = format!("localhost:{}", server.addr.port());
    let auth = format!("authorization: Bearer {ADMIN_TOKEN}");
    let (ca, cert, key) = (
        pki.ca.to_string_lossy().into_owned(),
        pki.client_cert.to_string_lossy().into_owned(),
        pki.client_key.to_string_lossy().into_owned(),
    );
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            grpcurl(&refs)
        })
    };
    let with_certificate = [
        "-cacert", &ca, "-cert", &cert, "-key", &key, "-H", &auth, &address,
    ];
    let mut list: Vec<String> = with_certificate.iter().map(|s| s.to_string()).collect();
    list.push("list".into());
    let (ok, out, err) = run(list).await.expect("grpcurl task");
    assert!(ok, "grpcurl list with a client certificate: {err}");
    assert!(out.contains("herald.v1.Events"), "{out}");
    let mut call: Vec<String> = with_certificate.iter().map(|s| s.to_string()).collect();
    call.extend(["herald.v1.Admin/GetStats".to_owned()]);
    let (ok, out, err) = run(call).await.expect("grpcurl task");
    assert!(ok, "grpcurl GetStats with a client certificate: {err}");
    assert!(out.starts_with('{'), "{out}");
    let without = ["-cacert", &ca, "-H", &auth, &address, "list"];
    let (ok, _, err) = run(without.iter().map(|s| s.to_string()).collect())
        .await
        .expect("grpcurl task");
    assert!(!ok, "grpcurl without a client certificate got through");
    // The handshake is refused: grpcurl cannot dial (it says "bad
    // certificate" or, when the alert loses the race, "broken pipe").
    assert!(err.contains("Failed to dial"), "{err}");
    server.finish().await;
}

/// Without `--tls-client-ca`, TLS stays one-way: a client with no
/// certificate is served (the flag, not the presence of TLS, asks for
/// client certificates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_tls_needs_no_client_certificate() {
    let pki = Pki::new("herald");
    let server = pki.server(false).await;
    let url = format!("https://localhost:{}", server.addr.port());
    let consumers = stats(&url, &pki.ca, None)
        .await
        .expect("a call without a client certificate");
    assert_eq!(consumers, 0);
    server.finish().await;
}
