//! Chaos: the real `herald` binary is killed with SIGKILL and restarted at
//! random moments while publishers keep publishing and every receiver fails
//! 10 % of the POSTs it gets. At the end:
//!
//! - every acknowledged event (its Publish or PublishBatch call answered OK)
//!   reached every endpoint it matched at least once (a 2xx answer to a POST
//!   whose `webhook-id` is the event's id, signed with the endpoint's secret,
//!   its body the payload as published);
//! - the `deliveries` table holds no pending delivery once the retry schedule
//!   had time to finish, and no failed one;
//! - a publish whose call failed because its node died is reported; if its
//!   event was stored all the same, it must have been delivered too;
//! - a publish retried with its idempotency key (on the other node when
//!   there is one) converged to one event;
//! - duplicates (one endpoint accepting the same `webhook-id` more than once:
//!   delivery is at least once) are counted and reported.
//!
//! Scenarios, `#[ignore]`d from the default run and run by `.ci/run`:
//! SQLite with one node, PostgreSQL with two nodes on one database.
//!
//! ```sh
//! HERALD_CHAOS_ROUNDS=20 cargo test --test e2e chaos -- --ignored --nocapture
//! ```
//!
//! `HERALD_CHAOS_ROUNDS` (default 20) is the number of kills per scenario
//! (0: a control run, publishing for 10 s without a kill),
//! `HERALD_CHAOS_SEED` seeds every random choice the test makes (printed at
//! the start; the timing of threads and processes still varies between runs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use herald::domain::delivery::DeliveryStatus;
use herald::storage::entities::{delivery, event};
use herald_client::proto;
use herald_client::proto::events_client::EventsClient;
use herald_client::proto::subscriptions_client::SubscriptionsClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::common::{
    ADMIN_TOKEN, Authed, Backend, BearerToken, HeraldProcess, TestDatabase, try_wait_for, wait_for,
};
use crate::receiver::{Received, signature_matches};

const SECOND: Duration = Duration::from_secs(1);
/// The share of POSTs each receiver answers 500.
const FAILURE_RATE: f64 = 0.10;
/// Retries: many short steps, so that no delivery fails for good (61 tries
/// at 10 % failure each) and a round's retries are over in milliseconds.
const RETRY_STEP: &str = "50ms";
const RETRY_STEPS: usize = 60;
/// A killed PostgreSQL node's leases lapse after this (hidden `--lease`).
const LEASE: &str = "3s";
const REQUEST_TIMEOUT: &str = "1s";
/// How long a publish call may take before the client gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a publish with idempotency keys is sent before the
/// publisher gives up on it (it is then reported, unacknowledged).
const MAX_SENDS: u32 = 50;
/// How long the cluster may take, after the last round, to deliver
/// everything and leave nothing pending.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const PUBLISHERS: usize = 3;
/// How long a run of no rounds publishes.
const CONTROL_RUN: Duration = Duration::from_secs(10);

/// The event types published, in equal shares.
const EVENT_TYPES: [&str; 5] = [
    "chaos.a.created",
    "chaos.a.updated",
    "chaos.b.paid",
    "chaos.b.refunded",
    "chaos.c.noted",
];

/// An endpoint as the test creates it.
struct EndpointPlan {
    name: &'static str,
    event_types: &'static [&'static str],
    ordered: bool,
}

const ENDPOINTS: [EndpointPlan; 4] = [
    EndpointPlan {
        name: "every-type",
        event_types: &[],
        ordered: false,
    },
    EndpointPlan {
        name: "a-prefix",
        event_types: &["chaos.a.*"],
        ordered: false,
    },
    EndpointPlan {
        name: "b-paid",
        event_types: &["chaos.b.paid"],
        ordered: false,
    },
    EndpointPlan {
        name: "b-ordered",
        event_types: &["chaos.b.*"],
        ordered: true,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos run: .ci/run runs it (HERALD_CHAOS_ROUNDS=20 cargo test --test e2e chaos -- --ignored --nocapture)"]
async fn sqlite_one_node_killed_while_publishing() {
    run(Backend::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos run: .ci/run runs it (HERALD_CHAOS_ROUNDS=20 cargo test --test e2e chaos -- --ignored --nocapture)"]
async fn postgres_two_nodes_one_killed_while_publishing() {
    run(Backend::Postgres, 2).await;
}

/// The number of rounds and the seed, from the environment.
fn settings() -> (usize, u64) {
    let rounds = match std::env::var("HERALD_CHAOS_ROUNDS") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("HERALD_CHAOS_ROUNDS is a number of rounds"),
        Err(_) => 20,
    };
    let seed = match std::env::var("HERALD_CHAOS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .expect("HERALD_CHAOS_SEED is an unsigned 64-bit number"),
        Err(_) => rand::random(),
    };
    (rounds, seed)
}

async fn run(backend: Backend, node_count: usize) {
    let (rounds, seed) = settings();
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!(
        "chaos {name}: {node_count} node(s), {rounds} rounds, seed {seed} \
         (HERALD_CHAOS_SEED={seed} HERALD_CHAOS_ROUNDS={rounds} to run it again)"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let database = TestDatabase::new(backend).await;

    // The receivers outlive every node: they are this process.
    let mut receivers = Vec::new();
    for _ in &ENDPOINTS {
        receivers.push(FlakyReceiver::start(rng.random()).await);
    }

    // Nodes one after another, so that only the first runs the migrations.
    let mut processes = Vec::new();
    let nodes = Arc::new(Nodes::new(node_count));
    for node in 0..node_count {
        let (process, client) = start_node(&database.url).await;
        processes.push(process);
        nodes.revive(node, client);
    }

    // The consumer and its endpoints, through the API of the first node.
    let mut subscriptions =
        SubscriptionsClient::new(connect(&format!("http://{}", processes[0].grpc)).await);
    let consumer_id = subscriptions
        .create_consumer(proto::CreateConsumerRequest {
            uid: "chaos".into(),
            ..Default::default()
        })
        .await
        .expect("create consumer")
        .into_inner()
        .consumer
        .expect("consumer returned")
        .id;
    let mut endpoints = Vec::new();
    for (plan, receiver) in ENDPOINTS.iter().zip(&receivers) {
        let created = subscriptions
            .create_endpoint(proto::CreateEndpointRequest {
                consumer_id: consumer_id.clone(),
                kind: proto::EndpointKind::Webhook as i32,
                url: receiver.url(plan.name),
                event_types: plan.event_types.iter().map(|t| t.to_string()).collect(),
                ordered: plan.ordered,
                ..Default::default()
            })
            .await
            .expect("create endpoint")
            .into_inner();
        endpoints.push((
            created.endpoint.expect("endpoint returned").id,
            created.secret,
        ));
    }
    drop(subscriptions);

    // Publishers, until the rounds are over.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let mut publishers = Vec::new();
    for index in 0..PUBLISHERS {
        let publisher = Publisher {
            index,
            nodes: nodes.clone(),
            ledger: ledger.clone(),
            rng: StdRng::seed_from_u64(rng.random()),
            consumer_id: consumer_id.clone(),
            key_prefix: format!("{seed:x}-{index}"),
        };
        publishers.push(tokio::spawn(publisher.run(stop.clone())));
    }

    // The rounds: up for a random while, kill -9, down for a random while,
    // start again.
    for round in 1..=rounds {
        let up = Duration::from_millis(rng.random_range(100..1500));
        tokio::time::sleep(up).await;
        let victim = rng.random_range(0..node_count);
        let pid = processes[victim].child.id();
        nodes.kill(victim);
        tokio::task::block_in_place(|| processes[victim].kill9());
        let down = Duration::from_millis(rng.random_range(0..400));
        tokio::time::sleep(down).await;
        let restarting = Instant::now();
        let (process, client) = start_node(&database.url).await;
        processes[victim] = process;
        nodes.revive(victim, client);
        let acknowledged = ledger.lock().expect("ledger").acked.len();
        println!(
            "chaos {name}: round {round}/{rounds}: kill -9 node {victim} (pid {pid}) after {} ms up, \
             {} ms down, serving again after {} ms; {acknowledged} events acknowledged so far",
            up.as_millis(),
            down.as_millis(),
            restarting.elapsed().as_millis(),
        );
    }
    if rounds == 0 {
        // A control run: the same traffic, no kill, to tell what the kills
        // cause from what happens anyway.
        println!("chaos {name}: no rounds: publishing for {CONTROL_RUN:?} without a kill");
        tokio::time::sleep(CONTROL_RUN).await;
    }
    let rounds_took = started.elapsed();

    // Publishing stops; calls under way finish (with idempotency keys, a
    // failed one is sent again until answered).
    stop.cancel();
    for publisher in publishers {
        publisher.await.expect("publisher did not panic");
    }
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));

    // Everything acknowledged delivered, nothing pending.
    let draining = Instant::now();
    let db = sea_orm::Database::connect(&database.url)
        .await
        .expect("the test connects to the database");
    let pending_status = DeliveryStatus::Pending.as_str();
    let drained = try_wait_for(DRAIN_DEADLINE, || async {
        let pending = delivery::Entity::find()
            .filter(delivery::Column::Status.eq(pending_status))
            .count(&db)
            .await
            .ok()?;
        if pending > 0 {
            return None;
        }
        let delivered = ledger.acked.iter().all(|acked| {
            ENDPOINTS
                .iter()
                .zip(&receivers)
                .filter(|(plan, _)| matches(plan.event_types, &acked.spec.event_type))
                .all(|(_, receiver)| receiver.accepted(&acked.id))
        });
        delivered.then_some(())
    })
    .await
    .is_some();
    let drain_took = draining.elapsed();

    let observed = Observed {
        events: event::Entity::find()
            .all(&db)
            .await
            .expect("read events")
            .into_iter()
            .map(|row| StoredEvent {
                id: row.id,
                event_type: row.event_type,
                payload: row.payload,
                key: row.idempotency_key,
            })
            .collect(),
        deliveries: delivery::Entity::find()
            .all(&db)
            .await
            .expect("read deliveries")
            .into_iter()
            .map(|row| StoredDelivery {
                event_id: row.event_id,
                endpoint_id: row.endpoint_id.unwrap_or_default(),
                status: row.status,
                attempt_count: row.attempt_count,
            })
            .collect(),
        endpoints: ENDPOINTS
            .iter()
            .zip(endpoints)
            .zip(&receivers)
            .map(|((plan, (id, secret)), receiver)| EndpointSeen {
                id,
                name: plan.name,
                event_types: plan.event_types,
                ordered: plan.ordered,
                secret,
                hits: receiver.hits(),
            })
            .collect(),
    };
    let _ = db.close().await;
    let report = verify(&ledger, &observed, backend == Backend::Sqlite);

    println!(
        "chaos {name} (seed {seed}, {rounds} rounds, {node_count} node(s)): {:.1} s \
         ({:.1} s of rounds, {:.1} s to drain)",
        started.elapsed().as_secs_f64(),
        rounds_took.as_secs_f64(),
        drain_took.as_secs_f64(),
    );
    for line in &report.summary {
        println!("  {line}");
    }
    drop(processes);
    if report.problems.is_empty() && drained {
        database.drop_database().await;
        return;
    }
    for problem in report.problems.iter().take(50) {
        println!("  PROBLEM: {problem}");
    }
    panic!(
        "chaos {name} (seed {seed}, {rounds} rounds): {} problem(s){}; the first are printed above",
        report.problems.len(),
        if drained {
            String::new()
        } else {
            format!(", and the cluster did not drain within {DRAIN_DEADLINE:?}")
        },
    );
}

/// Starts the `herald` binary on the database and connects to it.
async fn start_node(database_url: &str) -> (HeraldProcess, EventsClient<Authed>) {
    let url = database_url.to_owned();
    let process = tokio::task::spawn_blocking(move || {
        let schedule = vec![RETRY_STEP; RETRY_STEPS].join(",");
        let command = HeraldProcess::serve_command(
            &url,
            &[
                "--retry-schedule",
                &schedule,
                "--request-timeout",
                REQUEST_TIMEOUT,
                "--lease",
                LEASE,
            ],
        );
        HeraldProcess::spawn(command)
    })
    .await
    .expect("start herald");
    let client = EventsClient::new(connect(&process.url()).await);
    (process, client)
}

async fn connect(url: &str) -> Authed {
    let channel = wait_for("herald to accept connections", 30 * SECOND, || async {
        Channel::from_shared(url.to_owned())
            .ok()?
            .connect_timeout(5 * SECOND)
            .connect()
            .await
            .ok()
    })
    .await;
    InterceptedService::new(channel, BearerToken::bearer(ADMIN_TOKEN))
}

/// The nodes as publishers see them: a client while a node serves, and a
/// count of its deaths, so that a failed call can tell whether its node
/// was killed under it.
struct Nodes {
    slots: Vec<Mutex<Slot>>,
}

#[derive(Default)]
struct Slot {
    client: Option<EventsClient<Authed>>,
    deaths: u64,
}

impl Nodes {
    fn new(count: usize) -> Nodes {
        Nodes {
            slots: (0..count).map(|_| Mutex::default()).collect(),
        }
    }

    fn slot(&self, node: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[node].lock().expect("node slot")
    }

    /// Called before the kill: calls already sent fail from now on.
    fn kill(&self, node: usize) {
        let mut slot = self.slot(node);
        slot.client = None;
        slot.deaths += 1;
    }

    fn revive(&self, node: usize, client: EventsClient<Authed>) {
        self.slot(node).client = Some(client);
    }

    fn deaths(&self, node: usize) -> u64 {
        self.slot(node).deaths
    }

    /// A serving node, `preferred` if it serves: (node, client, deaths).
    async fn pick(&self, preferred: usize) -> (usize, EventsClient<Authed>, u64) {
        let count = self.slots.len();
        wait_for("a node to serve", 60 * SECOND, || async {
            (0..count)
                .map(|offset| (preferred + offset) % count)
                .find_map(|node| {
                    let slot = self.slot(node);
                    let client = slot.client.clone()?;
                    Some((node, client, slot.deaths))
                })
        })
        .await
    }
}

/// One event of a publish call.
#[derive(Debug, Clone)]
struct EventSpec {
    event_type: String,
    payload: String,
    key: Option<String>,
}

/// One Publish or PublishBatch call.
#[derive(Debug, Clone)]
struct Call {
    label: String,
    batch: bool,
    /// Every event has an idempotency key: a failed call is sent again.
    keyed: bool,
    events: Vec<EventSpec>,
}

/// What the publishers saw.
#[derive(Debug, Default)]
struct Ledger {
    calls: usize,
    batch_calls: usize,
    keyed_calls: usize,
    acked: Vec<Acked>,
    /// Events of calls that never got an OK answer.
    unacked: Vec<Unacked>,
    /// Every failed send, including those of keyed calls sent again.
    failures: Vec<Failure>,
}

#[derive(Debug, Clone)]
struct Acked {
    call: String,
    spec: EventSpec,
    id: String,
    duplicate: bool,
    deliveries: u32,
    /// How many times the call was sent (1 unless a send failed).
    sends: u32,
}

#[derive(Debug, Clone)]
struct Unacked {
    call: String,
    spec: EventSpec,
}

#[derive(Debug, Clone)]
struct Failure {
    call: String,
    node: usize,
    code: tonic::Code,
    message: String,
    /// The node was killed while the call was under way.
    node_died: bool,
}

struct Publisher {
    index: usize,
    nodes: Arc<Nodes>,
    ledger: Arc<Mutex<Ledger>>,
    rng: StdRng,
    consumer_id: String,
    key_prefix: String,
}

impl Publisher {
    async fn run(mut self, stop: CancellationToken) {
        let mut number = 0;
        while !stop.is_cancelled() {
            number += 1;
            let call = self.next_call(number);
            self.publish(call).await;
            let pause = Duration::from_millis(self.rng.random_range(10..60));
            tokio::time::sleep(pause).await;
        }
    }

    fn next_call(&mut self, number: usize) -> Call {
        let label = format!("publisher {} call {number}", self.index);
        let batch = self.rng.random_bool(0.4);
        let keyed = self.rng.random_bool(0.5);
        let count = if batch {
            self.rng.random_range(2..=5)
        } else {
            1
        };
        let events = (0..count)
            .map(|n| EventSpec {
                event_type: EVENT_TYPES[self.rng.random_range(0..EVENT_TYPES.len())].to_owned(),
                payload: format!(
                    "{{\"publisher\":{},\"call\":{number},\"n\":{n}}}",
                    self.index
                ),
                key: keyed.then(|| format!("chaos-{}-{number}-{n}", self.key_prefix)),
            })
            .collect();
        Call {
            label,
            batch,
            keyed,
            events,
        }
    }

    /// Sends the call until it is answered OK, or once when it has no keys.
    async fn publish(&mut self, call: Call) {
        let node_count = self.nodes.slots.len();
        let mut preferred = self.rng.random_range(0..node_count);
        let mut sends = 0;
        loop {
            sends += 1;
            let (node, client, deaths) = self.nodes.pick(preferred).await;
            match send(client, &self.consumer_id, &call).await {
                Ok(results) => {
                    let mut ledger = self.ledger.lock().expect("ledger");
                    ledger.count(&call);
                    if results.len() != call.events.len() {
                        panic!(
                            "{}: {} results for {} events",
                            call.label,
                            results.len(),
                            call.events.len()
                        );
                    }
                    for (spec, result) in call.events.iter().zip(results) {
                        let event = result.event.expect("an answer holds its event");
                        ledger.acked.push(Acked {
                            call: call.label.clone(),
                            spec: spec.clone(),
                            id: event.id,
                            duplicate: result.duplicate,
                            deliveries: result.deliveries,
                            sends,
                        });
                    }
                    return;
                }
                Err(status) => {
                    let node_died = self.nodes.deaths(node) != deaths;
                    let mut ledger = self.ledger.lock().expect("ledger");
                    ledger.failures.push(Failure {
                        call: call.label.clone(),
                        node,
                        code: status.code(),
                        message: status.message().to_owned(),
                        node_died,
                    });
                    if !call.keyed || sends >= MAX_SENDS {
                        ledger.count(&call);
                        ledger
                            .unacked
                            .extend(call.events.iter().map(|spec| Unacked {
                                call: call.label.clone(),
                                spec: spec.clone(),
                            }));
                        return;
                    }
                    // With keys: again, on the next node if there is one.
                    preferred = (node + 1) % node_count;
                }
            }
        }
    }
}

impl Ledger {
    fn count(&mut self, call: &Call) {
        self.calls += 1;
        self.batch_calls += usize::from(call.batch);
        self.keyed_calls += usize::from(call.keyed);
    }
}

fn request(consumer_id: &str, spec: &EventSpec) -> proto::PublishRequest {
    proto::PublishRequest {
        consumer_id: consumer_id.to_owned(),
        event_type: spec.event_type.clone(),
        payload: spec.payload.clone(),
        idempotency_key: spec.key.clone().unwrap_or_default(),
        ..Default::default()
    }
}

async fn send(
    mut client: EventsClient<Authed>,
    consumer: &str,
    call: &Call,
) -> Result<Vec<proto::PublishResponse>, tonic::Status> {
    let answer = async {
        if call.batch {
            let events = call
                .events
                .iter()
                .map(|spec| request(consumer, spec))
                .collect();
            client
                .publish_batch(proto::PublishBatchRequest { events })
                .await
                .map(|response| response.into_inner().results)
        } else {
            client
                .publish(request(consumer, &call.events[0]))
                .await
                .map(|response| vec![response.into_inner()])
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {CALL_TIMEOUT:?} (client side)"
            )))
        })
}

/// A receiver that answers 500 to a random 10 % of POSTs and records every
/// POST with the status it answered.
struct FlakyReceiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

struct Inbox {
    rng: Mutex<StdRng>,
    hits: Mutex<Vec<Hit>>,
    /// `webhook-id`s answered 2xx at least once.
    accepted: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct Hit {
    received: Received,
    status: u16,
}

impl FlakyReceiver {
    async fn start(seed: u64) -> FlakyReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let inbox = Arc::new(Inbox {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hits: Mutex::default(),
            accepted: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(flaky)
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FlakyReceiver { addr, inbox, task }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.inbox.hits.lock().expect("hits").clone()
    }

    fn accepted(&self, event_id: &str) -> bool {
        self.inbox
            .accepted
            .lock()
            .expect("accepted")
            .contains(event_id)
    }
}

impl Drop for FlakyReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky(
    State(inbox): State<Arc<Inbox>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let fail = inbox.rng.lock().expect("rng").random_bool(FAILURE_RATE);
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let received = Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        at: tokio::time::Instant::now(),
    };
    if !fail {
        inbox
            .accepted
            .lock()
            .expect("accepted")
            .insert(received.header("webhook-id").to_owned());
    }
    inbox.hits.lock().expect("hits").push(Hit {
        received,
        status: status.as_u16(),
    });
    status
}

/// Whether an endpoint with these `event_types` receives `event_type`: the
/// rule of `Endpoint.event_types` (exact names, `prefix.*`, empty = all),
/// written here independently of the server's.
fn matches(event_types: &[&str], event_type: &str) -> bool {
    event_types.is_empty()
        || event_types
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
                None => *pattern == event_type,
            })
}

/// What the database and the receivers hold at the end.
struct Observed {
    events: Vec<StoredEvent>,
    deliveries: Vec<StoredDelivery>,
    endpoints: Vec<EndpointSeen>,
}

struct StoredEvent {
    id: String,
    event_type: String,
    payload: String,
    key: Option<String>,
}

struct StoredDelivery {
    event_id: String,
    endpoint_id: String,
    status: String,
    attempt_count: i32,
}

struct EndpointSeen {
    id: String,
    name: &'static str,
    event_types: &'static [&'static str],
    ordered: bool,
    secret: String,
    hits: Vec<Hit>,
}

struct Report {
    /// Everything that breaks a promise; empty when the run passed.
    problems: Vec<String>,
    /// What happened, for the test's output.
    summary: Vec<String>,
}

/// Checks the end state against what was published and acknowledged.
/// `strict_order`: the ordered endpoint must keep its order (see
/// [`ordering`]); with one node, one id generator makes event ids follow
/// publish order. With several nodes both measures are only counted: ids
/// of two generators need not follow commit order, and Herald does not keep
/// an ordered endpoint's order across nodes (each node's hot path delivers
/// the deliveries it committed, whatever another node holds: events are
/// accepted while an earlier one fails on the other node, with no kill).
fn verify(ledger: &Ledger, observed: &Observed, strict_order: bool) -> Report {
    let mut problems = Vec::new();
    let mut summary = Vec::new();

    let stored_by_id: HashMap<&str, &StoredEvent> = observed
        .events
        .iter()
        .map(|stored| (stored.id.as_str(), stored))
        .collect();
    let mut stored_by_payload: HashMap<&str, Vec<&StoredEvent>> = HashMap::new();
    for stored in &observed.events {
        stored_by_payload
            .entry(stored.payload.as_str())
            .or_default()
            .push(stored);
    }
    let expected_endpoints = |event_type: &str| -> Vec<&EndpointSeen> {
        observed
            .endpoints
            .iter()
            .filter(|endpoint| matches(endpoint.event_types, event_type))
            .collect()
    };

    // Each published payload (unique per event) is stored at most once: an
    // event sent again with its idempotency key converged to one event.
    let mut published: HashSet<&str> = HashSet::new();
    for spec in ledger
        .acked
        .iter()
        .map(|a| &a.spec)
        .chain(ledger.unacked.iter().map(|u| &u.spec))
    {
        published.insert(spec.payload.as_str());
    }
    let mut not_converged = 0;
    for (payload, stored) in &stored_by_payload {
        if stored.len() > 1 {
            not_converged += 1;
            let ids: Vec<&str> = stored.iter().map(|s| s.id.as_str()).collect();
            problems.push(format!(
                "payload {payload} stored as {} events: {ids:?}",
                ids.len()
            ));
        }
        if !published.contains(payload) {
            problems.push(format!(
                "event {} ({payload}) is stored but was never published",
                stored[0].id
            ));
        }
    }

    // Acknowledged events are stored as published, and their answers told
    // the truth.
    let mut retried_calls = HashSet::new();
    for acked in &ledger.acked {
        if acked.sends > 1 {
            retried_calls.insert(acked.call.as_str());
        }
        let Some(stored) = stored_by_id.get(acked.id.as_str()) else {
            problems.push(format!(
                "LOST: acknowledged event {} ({}, {}) is not in the database",
                acked.id, acked.call, acked.spec.payload
            ));
            continue;
        };
        if stored.payload != acked.spec.payload
            || stored.event_type != acked.spec.event_type
            || stored.key != acked.spec.key
        {
            problems.push(format!(
                "event {} is stored as {} {} (key {:?}), published as {} {} (key {:?})",
                acked.id,
                stored.event_type,
                stored.payload,
                stored.key,
                acked.spec.event_type,
                acked.spec.payload,
                acked.spec.key
            ));
        }
        let expected = expected_endpoints(&acked.spec.event_type).len();
        if !acked.duplicate && acked.deliveries as usize != expected {
            problems.push(format!(
                "event {} was answered with {} deliveries; {expected} endpoints match {}",
                acked.id, acked.deliveries, acked.spec.event_type
            ));
        }
        if acked.duplicate && acked.sends == 1 {
            problems.push(format!(
                "event {} ({}) was answered as a duplicate on its first send",
                acked.id, acked.call
            ));
        }
    }

    // Unacknowledged publishes: stored or not, and then delivered like the rest.
    let mut unacked_stored = 0;
    let mut unacked_calls = HashSet::new();
    for unacked in &ledger.unacked {
        unacked_calls.insert(unacked.call.as_str());
        if stored_by_payload.contains_key(unacked.spec.payload.as_str()) {
            unacked_stored += 1;
        }
    }

    // Every stored event has one delivery per matching endpoint, settled as
    // succeeded, and each endpoint accepted it at least once, as published.
    let mut deliveries_by_event: HashMap<&str, Vec<&StoredDelivery>> = HashMap::new();
    for stored in &observed.deliveries {
        deliveries_by_event
            .entry(stored.event_id.as_str())
            .or_default()
            .push(stored);
        if !stored_by_id.contains_key(stored.event_id.as_str()) {
            problems.push(format!(
                "a delivery to {} belongs to no stored event ({})",
                stored.endpoint_id, stored.event_id
            ));
        }
    }
    let mut accepted: Vec<HashMap<&str, Vec<&Hit>>> = Vec::new();
    for endpoint in &observed.endpoints {
        let mut by_id: HashMap<&str, Vec<&Hit>> = HashMap::new();
        for hit in endpoint.hits.iter().filter(|hit| is_success(hit.status)) {
            by_id
                .entry(hit.received.header("webhook-id"))
                .or_default()
                .push(hit);
        }
        accepted.push(by_id);
    }
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for stored in &observed.deliveries {
        *statuses.entry(stored.status.as_str()).or_default() += 1;
    }
    let succeeded = DeliveryStatus::Succeeded.as_str();
    for stored in &observed.events {
        let expected = expected_endpoints(&stored.event_type);
        let rows = deliveries_by_event
            .get(stored.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (index, endpoint) in observed.endpoints.iter().enumerate() {
            let wanted = expected.iter().any(|e| e.id == endpoint.id);
            let here: Vec<&&StoredDelivery> = rows
                .iter()
                .filter(|row| row.endpoint_id == endpoint.id)
                .collect();
            match (wanted, here.as_slice()) {
                (false, []) => {}
                (false, _) => problems.push(format!(
                    "event {} ({}) has a delivery to {}, which does not match it",
                    stored.id, stored.event_type, endpoint.name
                )),
                (true, []) => problems.push(format!(
                    "LOST: event {} ({}) has no delivery to {}",
                    stored.id, stored.event_type, endpoint.name
                )),
                (true, [row]) => {
                    if row.status != succeeded {
                        problems.push(format!(
                            "the delivery of event {} to {} is {} after {} attempts",
                            stored.id, endpoint.name, row.status, row.attempt_count
                        ));
                    }
                }
                (true, rows) => problems.push(format!(
                    "event {} has {} deliveries to {}",
                    stored.id,
                    rows.len(),
                    endpoint.name
                )),
            }
            if wanted {
                match accepted[index].get(stored.id.as_str()) {
                    None => problems.push(format!(
                        "LOST: event {} ({}, {}) never reached {}",
                        stored.id, stored.event_type, stored.payload, endpoint.name
                    )),
                    Some(hits) => {
                        for hit in hits {
                            if hit.received.body != stored.payload.as_bytes() {
                                problems.push(format!(
                                    "{} received event {} with body {:?}, published as {}",
                                    endpoint.name,
                                    stored.id,
                                    String::from_utf8_lossy(&hit.received.body),
                                    stored.payload
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    // Every POST is signed with the endpoint's secret and carries a stored
    // event that the endpoint matches.
    let mut posts = 0;
    let mut refused = 0;
    let mut duplicate_lines = Vec::new();
    let mut duplicate_ids = 0;
    let mut extra_posts = 0;
    for (index, endpoint) in observed.endpoints.iter().enumerate() {
        posts += endpoint.hits.len();
        refused += endpoint
            .hits
            .iter()
            .filter(|hit| !is_success(hit.status))
            .count();
        for hit in &endpoint.hits {
            let id = hit.received.header("webhook-id");
            if !signature_matches(&hit.received, &endpoint.secret) {
                problems.push(format!(
                    "{} received event {id} with a bad signature {:?}",
                    endpoint.name,
                    hit.received.header("webhook-signature")
                ));
            }
            match stored_by_id.get(id) {
                None => problems.push(format!(
                    "{} received event {id:?}, which is not in the database",
                    endpoint.name
                )),
                Some(stored) if !matches(endpoint.event_types, &stored.event_type) => problems
                    .push(format!(
                        "{} received event {id} of type {}, which it does not match",
                        endpoint.name, stored.event_type
                    )),
                Some(_) => {}
            }
        }
        let duplicated: Vec<usize> = accepted[index]
            .values()
            .map(Vec::len)
            .filter(|count| *count > 1)
            .collect();
        let extra: usize = duplicated.iter().map(|count| count - 1).sum();
        duplicate_ids += duplicated.len();
        extra_posts += extra;
        duplicate_lines.push(format!(
            "{} {} ({} POSTs, {} accepted ids)",
            endpoint.name,
            duplicated.len(),
            endpoint.hits.len(),
            accepted[index].len()
        ));

        if endpoint.ordered {
            let order = ordering(&endpoint.hits);
            summary.push(format!(
                "ordered endpoint {}: {} events first accepted out of event id order, \
                 {} accepted while an earlier one was failing{}{}",
                endpoint.name,
                order.inversions.len(),
                order.overtakes.len(),
                if strict_order {
                    ""
                } else {
                    " (several nodes: counted, not asserted)"
                },
                match order.overtakes.first() {
                    Some(example) if !strict_order => format!("; e.g. {example}"),
                    _ => String::new(),
                }
            ));
            if strict_order {
                for violation in order.inversions.iter().chain(&order.overtakes) {
                    problems.push(format!("ordered endpoint {}: {violation}", endpoint.name));
                }
            }
        }
    }

    // Failed sends: a live node must not fail a publish.
    let mut failure_codes: BTreeMap<String, usize> = BTreeMap::new();
    for failure in &ledger.failures {
        *failure_codes
            .entry(format!("{:?}", failure.code))
            .or_default() += 1;
        if !failure.node_died {
            problems.push(format!(
                "{} failed on node {}, which was not killed during the call: {:?} {}",
                failure.call, failure.node, failure.code, failure.message
            ));
        }
    }

    let acked_events = ledger.acked.len();
    summary.insert(
        0,
        format!(
            "published: {} calls ({} PublishBatch, {} with idempotency keys); \
             {acked_events} events acknowledged ({} stored events in all)",
            ledger.calls,
            ledger.batch_calls,
            ledger.keyed_calls,
            observed.events.len()
        ),
    );
    summary.insert(
        1,
        format!(
            "unacknowledged: {} calls ({} events) failed as their node died: \
             {unacked_stored} of those events were stored anyway (and delivered), {} not stored",
            unacked_calls.len(),
            ledger.unacked.len(),
            ledger.unacked.len() - unacked_stored
        ),
    );
    summary.insert(
        2,
        format!(
            "sent again with idempotency keys: {} calls; payloads stored more than once: \
             {not_converged}; failed sends by code: {failure_codes:?}",
            retried_calls.len()
        ),
    );
    summary.insert(
        3,
        format!(
            "deliveries in the database: {} ({statuses:?})",
            observed.deliveries.len()
        ),
    );
    summary.insert(
        4,
        format!(
            "receivers: {posts} POSTs, {refused} answered 500, {} answered 200",
            posts - refused
        ),
    );
    summary.insert(
        5,
        format!(
            "duplicates (an endpoint accepting one webhook-id more than once): {duplicate_ids} \
             ids, {extra_posts} extra POSTs; per endpoint: {}",
            duplicate_lines.join(", ")
        ),
    );
    Report { problems, summary }
}

/// How an ordered endpoint's POSTs (in arrival order) kept to "one event at
/// a time, in publish order; later events wait behind a failing one".
struct Ordering {
    /// Events first accepted after an event with a higher id (ids follow
    /// publish order where one generator made them).
    inversions: Vec<String>,
    /// Events first accepted after another event was answered 500 and
    /// before that one was accepted: whichever was published first, one of
    /// them did not wait for the other. Sending an already accepted event
    /// again (at least once, after a kill) is no overtake.
    overtakes: Vec<String>,
}

fn ordering(hits: &[Hit]) -> Ordering {
    let mut inversions = Vec::new();
    let mut overtakes = Vec::new();
    let mut accepted: HashSet<&str> = HashSet::new();
    let mut highest: Option<&str> = None;
    // Events answered 500 and not accepted yet.
    let mut failing: Vec<&str> = Vec::new();
    for hit in hits {
        let id = hit.received.header("webhook-id");
        if !is_success(hit.status) {
            if !accepted.contains(id) && !failing.contains(&id) {
                failing.push(id);
            }
            continue;
        }
        if !accepted.insert(id) {
            continue;
        }
        failing.retain(|waiting| *waiting != id);
        for waiting in &failing {
            overtakes.push(format!("{id} accepted while {waiting} was failing"));
        }
        match highest {
            Some(before) if id < before => {
                inversions.push(format!("{id} first accepted after {before}"))
            }
            _ => highest = Some(id),
        }
    }
    Ordering {
        inversions,
        overtakes,
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The checks themselves, on made-up end states: each kind of loss is found.
mod checks {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn spec(event_type: &str, payload: &str) -> EventSpec {
        EventSpec {
            event_type: event_type.into(),
            payload: payload.into(),
            key: None,
        }
    }

    fn acked(id: &str, spec: EventSpec, deliveries: u32) -> Acked {
        Acked {
            call: format!("call of {id}"),
            spec,
            id: id.into(),
            duplicate: false,
            deliveries,
            sends: 1,
        }
    }

    fn stored(id: &str, spec: &EventSpec) -> StoredEvent {
        StoredEvent {
            id: id.into(),
            event_type: spec.event_type.clone(),
            payload: spec.payload.clone(),
            key: spec.key.clone(),
        }
    }

    fn delivery(event_id: &str, endpoint_id: &str, status: DeliveryStatus) -> StoredDelivery {
        StoredDelivery {
            event_id: event_id.into(),
            endpoint_id: endpoint_id.into(),
            status: status.as_str().into(),
            attempt_count: 1,
        }
    }

    /// A POST of `id` signed with `secret`, answered `status`.
    fn hit(id: &str, payload: &str, secret: &str, status: u16) -> Hit {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("prefix"))
            .expect("base64");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("key");
        mac.update(format!("{id}.1700000000.{payload}").as_bytes());
        let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().expect("header"));
        headers.insert("webhook-timestamp", "1700000000".parse().expect("header"));
        headers.insert("webhook-signature", signature.parse().expect("header"));
        Hit {
            received: Received {
                path: "/".into(),
                headers,
                body: payload.as_bytes().to_vec(),
                at: tokio::time::Instant::now(),
            },
            status,
        }
    }

    /// One endpoint of every plan, with these POSTs (by plan name).
    fn endpoints(mut hits: HashMap<&str, Vec<Hit>>) -> Vec<EndpointSeen> {
        ENDPOINTS
            .iter()
            .map(|plan| EndpointSeen {
                id: format!("ep_{}", plan.name),
                name: plan.name,
                event_types: plan.event_types,
                ordered: plan.ordered,
                secret: SECRET.into(),
                hits: hits.remove(plan.name).unwrap_or_default(),
            })
            .collect()
    }

    /// One event of type `chaos.c.noted` (only `every-type` matches it),
    /// stored, settled and accepted: the clean state the others break.
    fn clean() -> (Ledger, Observed) {
        let spec = spec("chaos.c.noted", "{\"n\":1}");
        let ledger = Ledger {
            calls: 1,
            acked: vec![acked("evt_1", spec.clone(), 1)],
            ..Default::default()
        };
        let observed = Observed {
            events: vec![stored("evt_1", &spec)],
            deliveries: vec![delivery(
                "evt_1",
                "ep_every-type",
                DeliveryStatus::Succeeded,
            )],
            endpoints: endpoints(HashMap::from([(
                "every-type",
                vec![
                    hit("evt_1", &spec.payload, SECRET, 500),
                    hit("evt_1", &spec.payload, SECRET, 200),
                ],
            )])),
        };
        (ledger, observed)
    }

    fn problems(ledger: &Ledger, observed: &Observed) -> Vec<String> {
        verify(ledger, observed, true).problems
    }

    fn assert_found(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|problem| problem.contains(needle)),
            "expected a problem mentioning {needle:?}: {problems:?}"
        );
    }

    #[test]
    fn a_clean_run_has_no_problem() {
        let (ledger, observed) = clean();
        assert_eq!(problems(&ledger, &observed), Vec::<String>::new());
    }

    #[test]
    fn an_acknowledged_event_missing_from_the_database_is_lost() {
        let (ledger, mut observed) = clean();
        observed.events.clear();
        observed.deliveries.clear();
        let found = problems(&ledger, &observed);
        assert_found(&found, "LOST: acknowledged event evt_1");
        assert_found(&found, "which is not in the database");
    }

    #[test]
    fn an_event_never_accepted_by_a_matching_endpoint_is_lost() {
        let (ledger, mut observed) = clean();
        // Only the 500 arrived.
        observed.endpoints[0].hits.pop();
        assert_found(
            &problems(&ledger, &observed),
            "LOST: event evt_1 (chaos.c.noted, {\"n\":1}) never reached every-type",
        );
    }

    #[test]
    fn a_pending_or_missing_delivery_is_reported() {
        let (ledger, mut observed) = clean();
        observed.deliveries[0].status = DeliveryStatus::Pending.as_str().into();
        assert_found(
            &problems(&ledger, &observed),
            "the delivery of event evt_1 to every-type is pending",
        );
        observed.deliveries.clear();
        assert_found(
            &problems(&ledger, &observed),
            "LOST: event evt_1 (chaos.c.noted) has no delivery to every-type",
        );
    }

    #[test]
    fn bad_signatures_bodies_and_misrouted_posts_are_reported() {
        let (ledger, mut observed) = clean();
        observed.endpoints[0].hits[1] = hit(
            "evt_1",
            "{\"n\":1}",
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            200,
        );
        let found = problems(&ledger, &observed);
        assert_found(
            &found,
            "every-type received event evt_1 with a bad signature",
        );
        let (ledger, mut observed) = clean();
        observed.endpoints[0].hits[1].received.body = b"{}".to_vec();
        assert_found(
            &problems(&ledger, &observed),
            "every-type received event evt_1 with body \"{}\"",
        );
        let (ledger, mut observed) = clean();
        observed.endpoints[2]
            .hits
            .push(hit("evt_1", "{\"n\":1}", SECRET, 200));
        assert_found(
            &problems(&ledger, &observed),
            "b-paid received event evt_1 of type chaos.c.noted, which it does not match",
        );
    }

    #[test]
    fn an_unacknowledged_event_stored_must_be_delivered_and_a_stray_one_is_reported() {
        let (mut ledger, mut observed) = clean();
        let lost = spec("chaos.c.noted", "{\"n\":2}");
        ledger.unacked.push(Unacked {
            call: "call 2".into(),
            spec: lost.clone(),
        });
        observed.events.push(stored("evt_2", &lost));
        let found = problems(&ledger, &observed);
        assert_found(&found, "LOST: event evt_2 (chaos.c.noted) has no delivery");
        assert_found(
            &found,
            "LOST: event evt_2 (chaos.c.noted, {\"n\":2}) never reached",
        );
        let (ledger, mut observed) = clean();
        observed
            .events
            .push(stored("evt_3", &spec("chaos.c.noted", "{\"n\":3}")));
        assert_found(
            &problems(&ledger, &observed),
            "event evt_3 ({\"n\":3}) is stored but was never published",
        );
    }

    #[test]
    fn a_retried_publish_stored_twice_did_not_converge() {
        let (mut ledger, mut observed) = clean();
        ledger.acked[0].spec.key = Some("k".into());
        ledger.acked[0].sends = 2;
        observed.events[0].key = Some("k".into());
        let mut twice = stored("evt_2", &ledger.acked[0].spec);
        twice.key = Some("k".into());
        observed.events.push(twice);
        assert_found(
            &problems(&ledger, &observed),
            "payload {\"n\":1} stored as 2 events",
        );
    }

    #[test]
    fn wrong_answers_and_failures_of_live_nodes_are_reported() {
        let (mut ledger, observed) = clean();
        ledger.acked[0].deliveries = 2;
        ledger.acked[0].duplicate = false;
        ledger.failures.push(Failure {
            call: "call 9".into(),
            node: 1,
            code: tonic::Code::Internal,
            message: "boom".into(),
            node_died: false,
        });
        let found = problems(&ledger, &observed);
        assert_found(
            &found,
            "event evt_1 was answered with 2 deliveries; 1 endpoints match",
        );
        assert_found(&found, "call 9 failed on node 1, which was not killed");
        let (mut ledger, observed) = clean();
        ledger.acked[0].duplicate = true;
        assert_found(
            &problems(&ledger, &observed),
            "was answered as a duplicate on its first send",
        );
    }

    #[test]
    fn ordered_endpoints_report_overtakes_and_inversions_but_not_resends() {
        let p = "{}";
        let order = ordering(&[
            hit("evt_1", p, SECRET, 200),
            hit("evt_2", p, SECRET, 500),
            // evt_1 again (a kill before its success was written): allowed.
            hit("evt_1", p, SECRET, 200),
            hit("evt_3", p, SECRET, 200),
            hit("evt_2", p, SECRET, 200),
        ]);
        assert_eq!(
            order.overtakes,
            vec!["evt_3 accepted while evt_2 was failing"]
        );
        assert_eq!(order.inversions, vec!["evt_2 first accepted after evt_3"]);
        let order = ordering(&[
            hit("evt_1", p, SECRET, 500),
            hit("evt_1", p, SECRET, 200),
            hit("evt_2", p, SECRET, 200),
            hit("evt_1", p, SECRET, 200),
            hit("evt_3", p, SECRET, 200),
        ]);
        assert!(order.overtakes.is_empty() && order.inversions.is_empty());
    }
}
