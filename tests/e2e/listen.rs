//! `herald listen`: the real binary, forwarding a stream to a real local HTTP
//! server.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use herald_client::webhook::Webhook;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::both_backends;
use crate::common::{ADMIN_TOKEN, Backend, TestServer, wait_for};
use crate::streams::{consumer, delivery_statuses, publish, stream_fixture};

both_backends!(listen_forwards_and_acks_only_on_success);

/// What the local server was sent.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

/// A local HTTP server on port 0 that records POSTs and answers each with
/// the next status of `answers` (200 once they run out).
async fn receiver(answers: Vec<StatusCode>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let app = axum::Router::new().route(
        "/webhooks",
        axum::routing::post({
            let received = received.clone();
            move |headers: HeaderMap, body: String| {
                let received = received.clone();
                let answers = answers.clone();
                async move {
                    received
                        .lock()
                        .expect("lock")
                        .push(Received { headers, body });
                    answers
                        .lock()
                        .expect("lock")
                        .next()
                        .unwrap_or(StatusCode::OK)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/webhooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received)
}

struct Listening {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    /// What it printed to stderr before it was receiving.
    preamble: Vec<String>,
}

/// Starts `herald listen` and waits until it has subscribed.
async fn listen(server: &TestServer, args: &[&str]) -> Listening {
    listen_with(server, args, &[]).await
}

/// [`listen`] with these environment variables set.
async fn listen_with(server: &TestServer, args: &[&str], envs: &[(&str, &str)]) -> Listening {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("listen")
        .args(args)
        .envs(envs.iter().copied())
        .env("HERALD_URL", server.url())
        .env("HERALD_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run herald listen");
    let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let preamble = tokio::time::timeout(Duration::from_secs(20), async {
        let mut preamble = Vec::new();
        loop {
            let line = stderr
                .next_line()
                .await
                .expect("read stderr")
                .expect("herald listen exited early");
            if line.contains("receiving") {
                return preamble;
            }
            preamble.push(line);
        }
    })
    .await
    .expect("herald listen subscribes within 20 s");
    Listening {
        child,
        stdout,
        stderr,
        preamble,
    }
}

impl Listening {
    /// The next stdout line that mentions `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = self
                    .stdout
                    .next_line()
                    .await
                    .expect("read stdout")
                    .expect("herald listen exited");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line mentioning {needle} within 20 s"))
    }

    /// Ctrl-C, then the exit status must be success.
    async fn interrupt(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("herald listen exits within 10 s of Ctrl-C")
            .expect("wait");
        assert!(exit.success(), "exit status {exit:?}");
        drop(self.stderr);
    }
}

async fn listen_forwards_and_acks_only_on_success(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fixture = stream_fixture(&server, "listener").await;
    // The first POST fails: that message must come back, the second succeeds.
    let (url, received) = receiver(vec![StatusCode::INTERNAL_SERVER_ERROR]).await;
    let mut listening = listen(
        &server,
        &[
            "--endpoint",
            &fixture.endpoint_id,
            "--forward-to",
            &url,
            "--ack-timeout",
            "1s",
        ],
    )
    .await;
    let payload = "{\"invoice\": 7,  \"paid\": true}";
    let event_id = publish(&server, &fixture.consumer_id, "invoice.paid", payload).await;

    let first = listening.line_with(&event_id).await;
    assert!(
        first.contains("invoice.paid") && first.contains("500"),
        "{first}"
    );
    let second = listening.line_with(&event_id).await;
    assert!(
        second.contains("200") && second.contains("acked"),
        "{second}"
    );
    wait_for(
        "the delivery to be acknowledged",
        Duration::from_secs(10),
        || async {
            (delivery_statuses(&server, &fixture.endpoint_id).await == ["succeeded"]).then_some(())
        },
    )
    .await;

    let received = received.lock().expect("lock").clone();
    assert_eq!(
        received.len(),
        2,
        "one failed POST, one successful: {received:?}"
    );
    for request in &received {
        assert_eq!(request.body, payload, "the payload byte for byte");
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("webhook-id"), event_id);
        assert!(
            header("webhook-signature").starts_with("v1,"),
            "{:?}",
            request.headers
        );
        assert!(!header("webhook-timestamp").is_empty());
        assert_eq!(header("content-type"), "application/json");
    }
    listening.interrupt().await;
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_tails_a_consumer_live() {
    let server = TestServer::start(Backend::Sqlite).await;
    let consumer_id = consumer(&server, "tail-cli").await;
    let (url, received) = receiver(vec![]).await;
    let mut listening = listen(
        &server,
        &[
            "--consumer",
            "tail-cli",
            "--event-types",
            "invoice.*,user.created",
            "--forward-to",
            &url,
        ],
    )
    .await;
    publish(&server, &consumer_id, "order.created", "{}").await;
    let wanted = publish(&server, &consumer_id, "invoice.paid", "{\"tail\":1}").await;
    let line = listening.line_with(&wanted).await;
    assert!(
        line.contains("invoice.paid") && line.contains("200"),
        "{line}"
    );
    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 1, "the filtered-out event is not forwarded");
    assert_eq!(received[0].body, "{\"tail\":1}");
    assert_eq!(
        received[0]
            .headers
            .get("webhook-id")
            .and_then(|value| value.to_str().ok()),
        Some(wanted.as_str())
    );
    // Signed with the secret it printed, as a webhook would be.
    let secret = listening
        .preamble
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("whsec_"))
        })
        .unwrap_or_else(|| panic!("no secret printed: {:?}", listening.preamble))
        .to_owned();
    let verified = Webhook::new(&secret)
        .expect("the printed secret")
        .verify(&received[0].headers, received[0].body.as_bytes())
        .expect("the forwarded event verifies with the printed secret");
    assert_eq!(verified.id, wanted);
    listening.interrupt().await;
    server.finish().await;
}

/// `--forward-secret` signs a live tail's events with a secret the local
/// server already has (a webhook endpoint's, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_signs_a_live_tail_with_the_given_secret() {
    let server = TestServer::start(Backend::Sqlite).await;
    let consumer_id = consumer(&server, "tail-secret").await;
    let (url, received) = receiver(vec![]).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut listening = listen(
        &server,
        &[
            "--consumer",
            "tail-secret",
            "--forward-secret",
            secret,
            "--forward-to",
            &url,
        ],
    )
    .await;
    assert!(
        !listening
            .preamble
            .iter()
            .any(|line| line.contains("whsec_")),
        "a given secret is not printed: {:?}",
        listening.preamble
    );
    let wanted = publish(&server, &consumer_id, "invoice.paid", "{\"given\":1}").await;
    listening.line_with(&wanted).await;
    let received = received.lock().expect("lock").clone();
    let webhook = Webhook::new(secret).expect("secret");
    webhook
        .verify(&received[0].headers, received[0].body.as_bytes())
        .expect("verifies with the given secret");
    let other = Webhook::new("whsec_c2VjcmV0LW90aGVyLXRoYW4tdGhlLWdpdmVuLW9uZQ==").expect("other");
    assert!(
        other
            .verify(&received[0].headers, received[0].body.as_bytes())
            .is_err(),
        "a signature checks something"
    );
    listening.interrupt().await;
    server.finish().await;
}

/// Arguments that could only fail later are refused at once, saying what
/// to give instead.
#[test]
fn listen_refuses_a_target_without_a_scheme_and_a_missing_source() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("listen")
            .args(args)
            .env("HERALD_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("run herald listen");
        assert!(!output.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let no_scheme = run(&["--endpoint", "ep_1", "--forward-to", "localhost:8080"]);
    assert!(
        no_scheme.contains("http://localhost:8080"),
        "says what to give: {no_scheme}"
    );
    let no_source = run(&["--forward-to", "http://localhost:8080/"]);
    assert!(
        no_source.contains("--endpoint") && no_source.contains("--consumer"),
        "names both choices: {no_source}"
    );
    let both = run(&[
        "--endpoint",
        "ep_1",
        "--consumer",
        "acme",
        "--forward-to",
        "http://localhost:8080/",
    ]);
    assert!(both.contains("cannot be used with"), "{both}");
}

/// `herald listen` against a server that requires mutual TLS, with a
/// private CA (`--ca-cert`) and a client certificate (`--client-cert`,
/// `--client-key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connects_with_a_private_ca_and_a_client_certificate() {
    let pki = crate::tls::Pki::new("listen");
    let server = pki.server(true).await;
    let read = |path: &std::path::Path| std::fs::read(path).expect("read a PEM file");
    let herald =
        herald_client::Herald::connect(format!("https://localhost:{}", server.addr.port()))
            .ca_certificate(read(&pki.ca))
            .identity(read(&pki.client_cert), read(&pki.client_key))
            .token(ADMIN_TOKEN)
            .await
            .expect("connect with the client certificate");
    herald
        .create_consumer("tail-tls")
        .send()
        .await
        .expect("create consumer");
    let (url, received) = receiver(vec![]).await;
    let https = format!("https://localhost:{}", server.addr.port());
    let path = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let mut listening = listen(
        &server,
        &[
            "--server",
            &https,
            "--ca-cert",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "--consumer",
            "tail-tls",
            "--forward-to",
            &url,
        ],
    )
    .await;
    let published = herald
        .publish("tail-tls", "invoice.paid", serde_json::json!({"tls": true}))
        .send()
        .await
        .expect("publish")
        .event
        .expect("the event")
        .id;
    let line = listening.line_with(&published).await;
    assert!(line.contains("200"), "{line}");
    assert_eq!(received.lock().expect("lock").len(), 1);
    listening.interrupt().await;

    // The CA from SSL_CERT_FILE instead of --ca-cert, as curl and grpcurl
    // take it.
    let mut listening = listen_with(
        &server,
        &[
            "--server",
            &https,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "--consumer",
            "tail-tls",
            "--forward-to",
            &url,
        ],
        &[("SSL_CERT_FILE", ca.as_str())],
    )
    .await;
    let published = herald
        .publish(
            "tail-tls",
            "invoice.paid",
            serde_json::json!({"ssl_cert_file": true}),
        )
        .send()
        .await
        .expect("publish")
        .event
        .expect("the event")
        .id;
    let line = listening.line_with(&published).await;
    assert!(line.contains("200"), "{line}");
    assert_eq!(received.lock().expect("lock").len(), 2);
    listening.interrupt().await;
    server.finish().await;
}

/// The `openssl req …` command of the README's TLS section, as written
/// there (its continuation lines joined).
fn readme_certificate_recipe() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let mut lines = readme
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("openssl req -x509"));
    let mut command = String::new();
    for line in lines.by_ref() {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(part) => {
                command.push_str(part);
                command.push(' ');
            }
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    assert!(
        command.starts_with("openssl req -x509"),
        "the README shows how to make a serving certificate with openssl"
    );
    command
}

/// The README's TLS recipe, run as written: the certificate it makes is
/// served by Herald and trusted, as its own CA, by Herald's Rust client,
/// by `herald listen --ca-cert` and by grpcurl `-cacert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tls_recipe_works_with_the_client_listen_and_grpcurl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = std::process::Command::new("bash")
        .args(["-c", &readme_certificate_recipe()])
        .current_dir(dir.path())
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cert = dir.path().join("herald-cert.pem");
    let key = dir.path().join("herald-key.pem");
    let server = TestServer::start_with(Backend::Sqlite, |config| {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    })
    .await;
    let https = format!("https://localhost:{}", server.addr.port());
    let herald = herald_client::Herald::connect(https.clone())
        .ca_certificate(std::fs::read(&cert).expect("read the certificate"))
        .token(ADMIN_TOKEN)
        .connect_timeout(Duration::from_secs(5))
        .await
        .expect("Herald's client trusts the README's certificate");
    herald
        .create_consumer("readme-tls")
        .send()
        .await
        .expect("a call over TLS");

    let (url, received) = receiver(vec![]).await;
    let cert_arg = cert.to_string_lossy().into_owned();
    let mut listening = listen(
        &server,
        &[
            "--server",
            &https,
            "--ca-cert",
            &cert_arg,
            "--consumer",
            "readme-tls",
            "--forward-to",
            &url,
        ],
    )
    .await;
    let published = herald
        .publish("readme-tls", "order.created", serde_json::json!({"n": 1}))
        .send()
        .await
        .expect("publish")
        .event
        .expect("the event")
        .id;
    let line = listening.line_with(&published).await;
    assert!(line.contains("200"), "{line}");
    assert_eq!(received.lock().expect("lock").len(), 1);
    listening.interrupt().await;

    let authorization = format!("authorization: Bearer {ADMIN_TOKEN}");
    let address = format!("localhost:{}", server.addr.port());
    let (ok, listed, said) =
        crate::grpcurl::grpcurl(&["-H", &authorization, "-cacert", &cert_arg, &address, "list"]);
    assert!(ok, "{said}");
    assert!(listed.contains("herald.v1.Events"), "{listed}");
    server.finish().await;
}
