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

/// A certificate and key that do not belong together (or a file that holds
/// neither) stop the start at once, naming the files and what is wrong.
#[test]
fn a_wrong_tls_certificate_or_key_stops_the_start_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let two = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert = write("cert.pem", one.cert.pem());
    let other_key = write("other-key.pem", two.signing_key.serialize_pem());
    let database = format!("sqlite://{}", dir.path().join("herald.db").display());
    let start = |cert: &str, key: &str| {
        let mut child = herald()
            .args(["serve", "--database-url", &database, "--tls-cert", cert])
            .args(["--tls-key", key, "--grpc-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start herald");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("herald kept running with a wrong --tls-key");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut said = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut said)
            .expect("read stderr");
        assert!(!status.success(), "{said}");
        said
    };
    let said = start(&cert, &other_key);
    assert!(
        said.contains(&cert) && said.contains(&other_key),
        "names the files: {said}"
    );
    assert!(
        said.contains("the key does not suit the certificate"),
        "{said}"
    );
    let said = start(&other_key, &cert);
    assert!(said.contains("holds no PEM certificate"), "{said}");
}

/// Runs the binary to its end; its exit status, stdout and stderr.
fn run_herald(args: &[&str]) -> (bool, String, String) {
    let output = herald().args(args).output().expect("run herald");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `herald key list` and `herald key revoke` without a server: the list
/// shows keys without tokens, a revoked key is refused by the server that
/// starts next, and revoking the last admin key says how to make another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_key_list_and_revoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let create = |scope: &str, name: &str| {
        let (ok, token, said) = run_herald(&[
            "key",
            "create",
            "--scope",
            scope,
            "--name",
            name,
            "--database-url",
            &url,
        ]);
        assert!(ok, "{said}");
        token.trim().to_owned()
    };
    let admin = create("admin", "ops\tteam");
    let publisher = create("publisher", "billing");

    let (ok, listed, said) = run_herald(&["key", "list", "--database-url", &url]);
    assert!(ok, "{said}");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ID", "SCOPE", "CONSUMER", "NAME", "CREATED", "EXPIRES", "REVOKED"
        ]
    );
    assert_eq!(rows.len(), 3, "{listed}");
    assert!(
        rows.iter().all(|row| row.len() == 7),
        "a tab in a name does not shift columns: {listed}"
    );
    assert_eq!(&rows[1][1..4], ["admin", "-", "ops team"]);
    assert_eq!(&rows[2][1..4], ["publisher", "-", "billing"]);
    assert!(
        !listed.contains(&admin) && !listed.contains(&publisher),
        "no token is listed"
    );
    let publisher_id = rows[2][0].to_owned();
    let admin_id = rows[1][0].to_owned();

    let (ok, said, _) = run_herald(&["key", "revoke", &publisher_id, "--database-url", &url]);
    assert!(ok);
    assert_eq!(said.trim(), format!("revoked {publisher_id}"));
    let (ok, again, _) = run_herald(&["key", "revoke", &publisher_id, "--database-url", &url]);
    assert!(ok);
    assert!(again.contains("already revoked at"), "{again}");
    let (ok, _, unknown) = run_herald(&["key", "revoke", "key_nope", "--database-url", &url]);
    assert!(!ok);
    assert!(unknown.contains("key_nope"), "{unknown}");

    let (_, live, _) = run_herald(&["key", "list", "--database-url", &url]);
    assert!(!live.contains(&publisher_id), "{live}");
    let (_, all, _) = run_herald(&["key", "list", "--include-revoked", "--database-url", &url]);
    let revoked = all
        .lines()
        .find(|line| line.starts_with(&publisher_id))
        .expect("listed");
    assert!(
        revoked.ends_with('Z'),
        "with its revocation time: {revoked}"
    );

    let mut server = serve(&url, &[]);
    wait_serving(&server.grpc.to_string()).await;
    let grpc = server.grpc.to_string();
    stats(&grpc, &admin).await.expect("the admin key works");
    let refused = stats(&grpc, &publisher).await.expect_err("revoked");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(terminate(&mut server.child).code(), Some(0));

    let (ok, said, _) = run_herald(&["key", "revoke", &admin_id, "--database-url", &url]);
    assert!(ok);
    assert!(said.contains("no live admin key is left"), "{said}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, mark) in [
        ("bash", "_herald()"),
        ("zsh", "#compdef herald"),
        ("fish", "complete -c herald"),
    ] {
        let (ok, script, said) = run_herald(&["completions", shell]);
        assert!(ok, "{said}");
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("listen"), "knows the subcommands: {shell}");
    }
    let (ok, _, said) = run_herald(&["completions", "tcsh"]);
    assert!(!ok);
    assert!(said.contains("possible values"), "{said}");
}

/// `herald serve --config FILE`: the file's keys are the long flags; a flag
/// on the command line and an environment variable each override it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_sets_what_flags_and_environment_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("herald.toml");
    let token = "hk_from_the_configuration_file_0123456789";
    std::fs::write(
        &path,
        format!(
            "# Settings of one node.\n\
             database-url = \"sqlite://{}\"\n\
             admin_token = \"{token}\"\n\
             grpc-addr = \"127.0.0.1:1\"  # overridden by the command line\n\
             max-payload-bytes = 100      # overridden by the environment\n\
             retry-schedule = [\"1s\", \"2s\"]\n",
            dir.path().join("file.db").display()
        ),
    )
    .expect("write the configuration file");
    let mut command = herald();
    command
        .env("HERALD_MAX_PAYLOAD_BYTES", "200")
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null());
    // spawn adds --grpc-addr 127.0.0.1:0: it serves on a chosen port, not 1.
    let mut server = HeraldProcess::spawn(command);
    assert_ne!(server.grpc.port(), 1, "the command line overrides the file");
    stats(&server.grpc.to_string(), token)
        .await
        .expect("the file's admin token is an admin key");

    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let broadcast = |bytes: usize| {
        let channel = channel.clone();
        async move {
            let mut request = tonic::Request::new(proto::BroadcastRequest {
                event_type: "config.checked".into(),
                payload: format!("{{\"x\":\"{}\"}}", "a".repeat(bytes - 8)),
                idempotency_key: String::new(),
            });
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            proto::events_client::EventsClient::new(channel)
                .broadcast(request)
                .await
        }
    };
    broadcast(150)
        .await
        .expect("150 bytes: the environment's limit (200) overrides the file's (100)");
    let refused = broadcast(250).await.expect_err("250 bytes is over 200");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("200"), "{}", refused.message());
    assert_eq!(terminate(&mut server.child).code(), Some(0));

    // A key that is not a setting stops the start, naming it and the file.
    std::fs::write(&path, "grpc-adress = \"127.0.0.1:0\"\n").expect("rewrite");
    let (ok, _, said) = run_herald(&["serve", "--config", &path.display().to_string()]);
    assert!(!ok, "an unknown key must stop the start");
    assert!(
        said.contains("`grpc-adress`") && said.contains("herald.toml"),
        "{said}"
    );
}

/// deploy/herald.service is a unit systemd accepts without a warning, and
/// its ExecStart runs this binary with deploy/herald.toml's shape of
/// arguments. (The Dockerfile beside it cannot be built here: these
/// machines have no Docker engine.)
#[test]
fn the_systemd_unit_in_deploy_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/herald.service"
    ))
    .expect("read deploy/herald.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/herald serve --config /etc/herald/herald.toml"),
        "{unit}"
    );
    let local = unit.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald"));
    let path = dir.path().join("herald.service");
    std::fs::write(&path, local).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is required for this test (Debian's systemd package)");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains("herald.service"),
        "systemd warns about the unit: {said}"
    );
}
