//! The database goes away under a steady publisher and comes back: calls
//! fail fast with UNAVAILABLE (never a false acknowledgement), readiness,
//! the health service and `herald_database_up` say so, one log line tells
//! the loss and one the return, and afterwards every acknowledged event is
//! delivered and nothing is left pending. The PostgreSQL stopped here is a
//! private one (its own data directory and port), never the shared one.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use herald_client::proto;
use herald_client::proto::admin_client::AdminClient;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{Authed, HeraldProcess, gauge_at, wait_for};
use crate::operations::{channel, endpoint_at};
use crate::receiver::{Receiver, Reply};

const DEADLINE: Duration = Duration::from_secs(30);
/// How long a call may take to be refused once the loss has been seen.
const FAST: Duration = Duration::from_millis(1500);

/// A PostgreSQL cluster of this test's own, run by the installed binaries
/// as the `postgres` user; stopped and removed when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn init() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql are required for this test")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("temp dir");
        let owner = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(owner.success(), "chown the data directory to postgres");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = PrivatePostgres { dir, bin, port };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("run {tool}: {err}"));
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "-l",
                &log,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// Publishes one event with idempotency key `key`, waiting at most 5 s.
async fn publish(
    events: &mut EventsClient<Authed>,
    key: &str,
) -> Result<proto::PublishResponse, tonic::Status> {
    let mut request = tonic::Request::new(proto::PublishRequest {
        consumer_id: "acme".into(),
        event_type: "order.created".into(),
        payload: format!("{{\"key\":\"{key}\"}}"),
        idempotency_key: key.into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(5));
    events
        .publish(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn serving(herald: &HeraldProcess, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(herald.url())
        .ok()?
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

/// The health service and the gauge agree that the database is `up`.
async fn assert_said(herald: &HeraldProcess, up: bool) {
    let (status, gauge) = if up {
        (ServingStatus::Serving, 1.0)
    } else {
        (ServingStatus::NotServing, 0.0)
    };
    assert_eq!(serving(herald, "herald.v1.Events").await, Some(status));
    assert_eq!(serving(herald, "").await, Some(status));
    assert_eq!(
        gauge_at(herald.metrics, "herald_database_up").await,
        Some(gauge)
    );
}

async fn ready(herald: &HeraldProcess) -> Option<u16> {
    let answer = reqwest::get(format!("http://{}/readyz", herald.metrics))
        .await
        .ok()?;
    Some(answer.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stops_under_a_publisher_and_comes_back() {
    herald::install_crypto_provider();
    let postgres = PrivatePostgres::init();
    postgres.start();
    let mut command = HeraldProcess::serve_command(&postgres.url(), &[]);
    command.env(
        "RUST_LOG",
        "warn,herald::serve=info,herald::database_watch=info",
    );
    let herald = HeraldProcess::spawn(command);
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut subscriptions = SubscriptionsClient::new(channel(&herald).await);
    let mut events = EventsClient::new(channel(&herald).await);
    endpoint_at(&mut subscriptions, "acme", receiver.url("/hook")).await;
    assert_said(&herald, true).await;

    let mut keys = Vec::new();
    for n in 0..20 {
        let key = format!("before-{n}");
        publish(&mut events, &key).await.expect("publish while up");
        keys.push(key);
    }

    postgres.stop();
    let stopped = Instant::now();
    let mut refused = 0;
    let mut n = 0;
    while refused < 10 {
        assert!(
            stopped.elapsed() < DEADLINE,
            "publishes still not refused {DEADLINE:?} after the database stopped"
        );
        let key = format!("during-{n}");
        n += 1;
        let sent = Instant::now();
        let answer = publish(&mut events, &key).await;
        let took = sent.elapsed();
        keys.push(key);
        match answer {
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::Unavailable,
                    "while the database is away: {status:?}"
                );
                assert!(
                    status.message().contains("database is unreachable"),
                    "{status:?}"
                );
                if refused > 0 {
                    assert!(took < FAST, "a refusal took {took:?}");
                }
                refused += 1;
            }
            Ok(answer) => panic!(
                "an acknowledgement with the database stopped {:?} ago: {answer:?}",
                stopped.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "refusals came too slowly: {:?}",
        stopped.elapsed()
    );
    assert_eq!(ready(&herald).await, Some(503), "readiness says not ready");
    assert_said(&herald, false).await;
    assert_eq!(
        herald.count_logged(|line| line.contains("database unreachable")),
        1,
        "one line for the loss, not one per call"
    );

    postgres.start();
    wait_for("a publish accepted again", DEADLINE, || {
        let mut events = events.clone();
        async move { publish(&mut events, "after-0").await.ok() }
    })
    .await;
    keys.push("after-0".into());
    wait_for("ready again", DEADLINE, || async {
        (ready(&herald).await == Some(200)).then_some(())
    })
    .await;
    assert_said(&herald, true).await;
    herald
        .logged("the return logged", DEADLINE, |line| {
            line.contains("database reachable again")
        })
        .await;

    // Every refused publish, retried with its key, is stored exactly once
    // (a call cut while its commit was under way may have been stored:
    // then the retry finds it).
    let mut event_ids = std::collections::BTreeSet::new();
    for key in &keys {
        let answer = publish(&mut events, key)
            .await
            .expect("retry after the return");
        event_ids.insert(answer.event.expect("event").id);
    }
    assert_eq!(event_ids.len(), keys.len(), "one event per idempotency key");

    let delivered = wait_for("every event delivered", DEADLINE, || {
        let receiver = &receiver;
        let event_ids = &event_ids;
        async move {
            let seen: std::collections::BTreeSet<String> = receiver
                .received()
                .iter()
                .map(|received| received.header("webhook-id").to_owned())
                .collect();
            event_ids.is_subset(&seen).then_some(seen)
        }
    })
    .await;
    assert_eq!(
        &delivered, &event_ids,
        "nothing delivered that was not published"
    );
    let admin = AdminClient::new(channel(&herald).await);
    wait_for("nothing pending", DEADLINE, || {
        let mut admin = admin.clone();
        async move {
            let stats = admin
                .get_stats(proto::GetStatsRequest {})
                .await
                .ok()?
                .into_inner();
            (stats.deliveries_pending == 0).then_some(())
        }
    })
    .await;
    drop(herald);
}

/// A tmpfs of its own size on a fresh directory (mounting needs root, as
/// CI has); unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let disk = SmallDisk {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        disk.mount_with(&format!("size={size}"));
        disk
    }

    fn mount_with(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs (this test needs root)");
    }

    fn resize(&self, size: &str) {
        self.mount_with(&format!("remount,size={size}"));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// SQLite on a disk that fills up: publishes are refused with
/// RESOURCE_EXHAUSTED naming the full disk (never acknowledged, never
/// stored), and accepted again once there is space, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_refuses_publishes_until_there_is_space() {
    herald::install_crypto_provider();
    let disk = SmallDisk::mount("3m");
    let url = format!("sqlite://{}", disk.dir.path().join("herald.db").display());
    let herald = HeraldProcess::spawn(HeraldProcess::serve_command(&url, &[]));
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut subscriptions = SubscriptionsClient::new(channel(&herald).await);
    let events = EventsClient::new(channel(&herald).await);
    endpoint_at(&mut subscriptions, "acme", receiver.url("/hook")).await;

    let filler = "x".repeat(60_000);
    let publish_big = |key: String| {
        let mut events = events.clone();
        let payload = format!("{{\"key\":\"{key}\",\"fill\":\"{filler}\"}}");
        async move {
            let mut request = tonic::Request::new(proto::PublishRequest {
                consumer_id: "acme".into(),
                event_type: "order.created".into(),
                payload,
                idempotency_key: key,
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(10));
            events
                .publish(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for n in 0..200 {
        let key = format!("fill-{n}");
        // Once full, a write may still fit now and then (a rolled-back
        // transaction gives its pages back): acknowledged, it is stored.
        match publish_big(key.clone()).await {
            Ok(_) => acknowledged.push(key),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("disk is full"), "{status:?}");
                refused.push(key);
                if refused.len() == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(
        refused.len(),
        3,
        "a 3 MB disk filled by 200 events of 60 KB"
    );
    assert!(!acknowledged.is_empty());

    disk.resize("64m");
    wait_for("a publish accepted once there is space", DEADLINE, || {
        let publish = publish_big("after".into());
        async move { publish.await.ok() }
    })
    .await;
    for key in &acknowledged {
        let answer = publish_big(key.clone()).await.expect("publish again");
        assert!(answer.duplicate, "{key} was acknowledged, so it was stored");
    }
    for key in &refused {
        let answer = publish_big(key.clone()).await.expect("publish again");
        assert!(
            !answer.duplicate,
            "{key} was refused, so nothing was stored"
        );
    }
    receiver
        .wait_for_count(acknowledged.len() + refused.len() + 1, DEADLINE)
        .await;
    drop(herald);
}
