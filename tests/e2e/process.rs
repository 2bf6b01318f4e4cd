//! The `herald` binary as an operator runs it: first start, offline key
//! creation, the SQLite single-process guard, SIGTERM, and TLS.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use herald_client::proto;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::common::{Backend, HeraldProcess, TestServer, wait_for};

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_remove("HERALD_ADMIN_TOKEN")
        .env_remove("HERALD_DATABASE_URL");
    command
}

fn serve(database_url: &str, extra: &[&str]) -> HeraldProcess {
    let mut command = herald();
    command
        .args(["serve", "--database-url", database_url])
        .args(extra)
        .stdout(Stdio::piped());
    HeraldProcess::spawn(command)
}

async fn wait_serving(grpc: &str) {
    let url = format!("http://{grpc}");
    wait_for(
        "herald to answer health checks",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let channel = Channel::from_shared(url).ok()?.connect().await.ok()?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn stats(grpc: &str, token: &str) -> Result<proto::GetStatsResponse, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut request = tonic::Request::new(proto::GetStatsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    proto::admin_client::AdminClient::new(channel)
        .get_stats(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_an_admin_key_once_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("first.db").display());

    let mut first = serve(&url, &[]);
    // Keep draining stdout after the token is found, so the server never
    // writes into a pipe nobody reads.
    let stdout = first.child.stdout.take().expect("stdout");
    let (found, token) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(word) = line.split_whitespace().find(|word| word.starts_with("hk_"))
                && let Some(found) = found.take()
            {
                let _ = found.send(word.to_owned());
            }
        }
    });
    let token = tokio::time::timeout(Duration::from_secs(60), token)
        .await
        .expect("the first start prints an admin key within 60 s")
        .expect("the first start prints an admin key");
    wait_serving(&first.grpc.to_string()).await;
    stats(&first.grpc.to_string(), &token)
        .await
        .expect("the printed key is an admin key");
    let status = terminate(&mut first.child);
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");

    // The second start finds the key and prints nothing.
    let mut second = serve(&url, &[]);
    wait_serving(&second.grpc.to_string()).await;
    stats(&second.grpc.to_string(), &token)
        .await
        .expect("the key survives a restart");
    let status = terminate(&mut second.child);
    assert_eq!(status.code(), Some(0));
    let mut printed = String::new();
    std::io::Read::read_to_string(
        &mut second.child.stdout.take().expect("stdout"),
        &mut printed,
    )
    .expect("read stdout");
    assert!(
        !printed.contains("hk_"),
        "a second start must not mint a key: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_key_creation_and_the_single_process_guard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());

    let migrated = herald()
        .args(["migrate", "--database-url", &url])
        .output()
        .expect("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let created = herald()
        .args([
            "key",
            "create",
            "--scope",
            "admin",
            "--name",
            "ops",
            "--database-url",
            &url,
        ])
        .output()
        .expect("key create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(token.starts_with("hk_"), "{token}");
    let refused = herald()
        .args([
            "key",
            "create",
            "--scope",
            "consumer",
            "--database-url",
            &url,
        ])
        .output()
        .expect("key create");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--consumer"));

    let mut server = serve(&url, &[]);
    wait_serving(&server.grpc.to_string()).await;
    stats(&server.grpc.to_string(), &token)
        .await
        .expect("an offline-created key works");

    // A second process on the same SQLite file refuses to start.
    let second = herald()
        .args(["key", "create", "--scope", "admin", "--database-url", &url])
        .output()
        .expect("second process");
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use by another Herald process"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(terminate(&mut server.child).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_is_served_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("self-signed cert");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");

    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.tls_cert = Some(cert_path.clone());
        config.tls_key = Some(key_path.clone());
    })
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("url")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("TLS handshake with herald");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health over TLS")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Plaintext to a TLS port fails rather than silently working.
    let plaintext = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        assert!(
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err()
        );
    }
    server.finish().await;
}

/// PostgreSQL that cannot be reached fails the start within seconds, naming
/// where it tried, what it was told and what usually fixes it.
#[test]
fn an_unreachable_or_missing_postgres_database_fails_fast_and_says_why() {
    let attempt = |url: &str| {
        let started = std::time::Instant::now();
        let output = herald()
            .args(["migrate", "--database-url", url])
            .output()
            .expect("herald migrate");
        assert!(!output.status.success(), "{url} must fail");
        (
            started.elapsed(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Port 1 on loopback: nothing listens, the connection is refused.
    let (took, said) = attempt("postgres://postgres@127.0.0.1:1/test");
    assert!(took < Duration::from_secs(10), "took {took:?}: {said}");
    assert!(said.contains("127.0.0.1:1"), "names host and port: {said}");
    assert!(said.contains("is PostgreSQL running"), "{said}");

    let (took, said) = attempt("postgres://postgres@127.0.0.1:5432/herald_no_such_database");
    assert!(took < Duration::from_secs(10), "took {took:?}: {said}");
    assert!(
        said.contains("createdb -h 127.0.0.1 -p 5432 -U postgres herald_no_such_database"),
        "{said}"
    );
}
