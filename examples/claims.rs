//! What one sweep of the delivery engine costs during a large backlog: the
//! claim of due deliveries (and, on PostgreSQL, the endpoint ownership
//! statement before it), timed directly against the queue.
//!
//! ```text
//! cargo run --release --example claims -- --database sqlite
//! cargo run --release --example claims -- --database postgres --backlog 1000000
//! ```
//!
//! It fills a fresh database (a temporary SQLite file, or a PostgreSQL
//! database `herald_claims_<ulid>` created on `--postgres-url` and dropped
//! afterwards) with `--backlog` pending deliveries over `--endpoints`
//! endpoints, written straight into the tables, shaped like the backlogs that
//! made claims expensive:
//! - 30 % for one hot endpoint whose worker is full (the claim is told to
//!   leave it alone);
//! - 10 % for a disabled endpoint;
//! - 20 % leased by this node (work its workers hold in memory);
//! - 40 % due and free, over every other endpoint: what claims should take.
//!
//! The three first groups are the oldest, so an oldest-first scan meets them
//! before anything it may take. Then it runs `--sweeps` sweeps, each the
//! ownership statement and one claim of up to `--claim` deliveries (the
//! claimed deliveries stay leased, as in a node whose workers hold them), and
//! prints the latency percentiles of each and the cost per claimed delivery.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[path = "shared/fresh_database.rs"]
mod fresh_database;
use fresh_database::FreshDatabase;
use herald::domain::ids::EndpointId;
use herald::queue::{LeasePolicy, Queue};
use herald::storage::Database;
use sea_orm::ConnectionTrait;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The cost of claims during a backlog.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Backend,
    /// A PostgreSQL database the benchmark may connect to in order to create
    /// and drop its own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// Pending deliveries in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Endpoints (one consumer each).
    #[arg(long, default_value_t = 1_000)]
    endpoints: u64,
    /// Sweeps to time.
    #[arg(long, default_value_t = 100)]
    sweeps: usize,
    /// Deliveries one claim takes at most (the engine's claim batch).
    #[arg(long, default_value_t = 256)]
    claim: u64,
    /// Keep the PostgreSQL database afterwards (to look at plans).
    #[arg(long)]
    keep: bool,
    /// PostgreSQL: log the plan of every statement of the sweeps, with
    /// actual row counts and times (auto_explain, to the server's log).
    #[arg(long)]
    explain: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.endpoints < 3 || args.backlog < 10 {
        eprintln!("--endpoints must be at least 3 and --backlog at least 10");
        std::process::exit(2);
    }
    let database = FreshDatabase::create(
        "herald_claims",
        (args.database == Backend::Postgres).then_some(args.postgres_url.as_str()),
    )
    .await;
    let url = database.url.clone();
    if args.explain && args.database == Backend::Postgres {
        let name = url.rsplit('/').next().unwrap_or_default();
        let admin = sea_orm::Database::connect(&args.postgres_url)
            .await
            .expect("connect to --postgres-url");
        for setting in [
            "session_preload_libraries = 'auto_explain'",
            "auto_explain.log_min_duration = 5",
            "auto_explain.log_analyze = on",
            "auto_explain.log_buffers = on",
        ] {
            admin
                .execute_unprepared(&format!("ALTER DATABASE {name} SET {setting}"))
                .await
                .expect("set auto_explain");
        }
        let _ = admin.close().await;
    }
    let db = Database::open(&url).await.expect("open the database");
    let lease =
        LeasePolicy::new(Duration::from_secs(60), Duration::from_secs(15)).expect("lease policy");
    let queue = Queue::new(db.clone(), lease);
    let now = herald::domain::time::now_millis();

    let started = Instant::now();
    fill(&db, &args, queue.node().as_str(), now).await;
    println!(
        "backlog: {} deliveries over {} endpoints written in {:.1} s",
        args.backlog,
        args.endpoints,
        started.elapsed().as_secs_f64()
    );

    // On PostgreSQL this node must own the endpoints before it claims
    // their deliveries; the first sweeps take them.
    let hot = [EndpointId::from_stored(endpoint_id(0))];
    let mut busy: Vec<EndpointId> = Vec::new();
    for _ in 0..args.endpoints.div_ceil(50) + 4 {
        let at = herald::domain::time::now_millis();
        let unowned = queue
            .look_for_unowned(at)
            .await
            .expect("look for unowned work");
        let taken = queue
            .own_endpoints(&busy, &unowned, at)
            .await
            .expect("own endpoints");
        busy.extend(taken);
    }

    let mut own_us = Vec::with_capacity(args.sweeps);
    let mut claim_us = Vec::with_capacity(args.sweeps);
    let mut claimed_total = 0usize;
    for _ in 0..args.sweeps {
        let at = herald::domain::time::now_millis();
        let started = Instant::now();
        queue
            .own_endpoints(&busy, &[], at)
            .await
            .expect("own endpoints");
        own_us.push(started.elapsed().as_micros() as u64);
        let started = Instant::now();
        let claimed = queue
            .claim_due(at, args.claim, args.claim, &hot)
            .await
            .expect("claim due deliveries");
        claim_us.push(started.elapsed().as_micros() as u64);
        claimed_total += claimed.len();
    }
    let claim_total_us: u64 = claim_us.iter().sum();
    println!(
        "{:?}, {} sweeps: claimed {} deliveries ({:.0} per claim)",
        args.database,
        args.sweeps,
        claimed_total,
        claimed_total as f64 / args.sweeps as f64
    );
    println!("ownership statement: {}", percentiles(&mut own_us));
    println!("claim:               {}", percentiles(&mut claim_us));
    println!(
        "claim cost per claimed delivery: {:.1} µs",
        claim_total_us as f64 / claimed_total.max(1) as f64
    );

    drop(queue);
    let _ = db.conn.close().await;
    if args.keep {
        println!("kept: {url}");
    } else {
        database.drop_it().await;
    }
}

fn endpoint_id(index: u64) -> String {
    format!("ep_claims_{index:06}")
}

/// Writes the consumers, endpoints, one event per endpoint and the backlog
/// (see the module's doc for its shape), oldest groups first.
async fn fill(db: &Database, args: &Args, node: &str, now: i64) {
    let conn = &db.conn;
    let postgres = args.database == Backend::Postgres;
    let mut consumers = Vec::new();
    let mut endpoints = Vec::new();
    let mut events = Vec::new();
    for index in 0..args.endpoints {
        consumers.push(format!(
            "('co_claims_{index:06}', 'claims-{index}', '', '{{}}', 'whsec_claims', {now}, {now})"
        ));
        let enabled = if index == 1 { "false" } else { "true" };
        endpoints.push(format!(
            "('{}', 'co_claims_{index:06}', 'webhook', 'http://127.0.0.1:9/hook', '', '[]', \
              {enabled}, NULL, '{{}}', 0, 0, false, NULL, {now}, {now})",
            endpoint_id(index)
        ));
        events.push(format!(
            "('ev_claims_{index:06}', 'co_claims_{index:06}', 'claims.test', '{{}}', NULL, NULL, {now})"
        ));
    }
    for chunk in consumers.chunks(500) {
        conn.execute_unprepared(&format!(
            "INSERT INTO consumers (id, uid, name, metadata, callback_secret, created_at, updated_at) VALUES {}",
            chunk.join(",")
        ))
        .await
        .expect("insert consumers");
    }
    for chunk in endpoints.chunks(500) {
        conn.execute_unprepared(&format!(
            "INSERT INTO endpoints (id, consumer_id, kind, url, description, event_types, enabled, \
               disabled_reason, headers, rate_limit, max_in_flight, ordered, failing_since, \
               created_at, updated_at) VALUES {}",
            chunk.join(",")
        ))
        .await
        .expect("insert endpoints");
    }
    for chunk in events.chunks(500) {
        conn.execute_unprepared(&format!(
            "INSERT INTO events (id, consumer_id, event_type, payload, idempotency_key, callback_url, created_at) VALUES {}",
            chunk.join(",")
        ))
        .await
        .expect("insert events");
    }

    // Row g (1-based) of the backlog: its group by position, oldest first.
    let hot_end = args.backlog * 3 / 10;
    let disabled_end = hot_end + args.backlog / 10;
    let leased_end = disabled_end + args.backlog / 5;
    let others = args.endpoints - 2;
    let lease_until = now + 3_600_000;
    let (series, number, pad) = if postgres {
        (
            format!("generate_series(1, {}) AS s(g)", args.backlog),
            "g",
            "lpad(g::text, 12, '0')",
        )
    } else {
        (
            format!(
                "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {}) SELECT g FROM s)",
                args.backlog
            ),
            "g",
            "printf('%012d', g)",
        )
    };
    let endpoint_index = format!(
        "CASE WHEN {number} <= {hot_end} THEN 0 WHEN {number} <= {disabled_end} THEN 1 \
         ELSE 2 + ({number} % {others}) END"
    );
    let endpoint = if postgres {
        format!("'ep_claims_' || lpad(({endpoint_index})::text, 6, '0')")
    } else {
        format!("'ep_claims_' || printf('%06d', {endpoint_index})")
    };
    let event = endpoint.replace("ep_claims_", "ev_claims_");
    let lease_owner = format!(
        "CASE WHEN {number} > {disabled_end} AND {number} <= {leased_end} THEN '{node}' END"
    );
    let lease_expires_at = format!(
        "CASE WHEN {number} > {disabled_end} AND {number} <= {leased_end} THEN {lease_until} END"
    );
    // Oldest first, all due: created a millisecond apart ending a minute ago.
    let due = format!("{} + {number}", now - 60_000 - args.backlog as i64);
    conn.execute_unprepared(&format!(
        "INSERT INTO deliveries (id, event_id, endpoint_id, url, status, attempt_count, \
           next_attempt_at, lease_owner, lease_expires_at, last_attempt_at, created_at, updated_at) \
         SELECT 'dl_claims_' || {pad}, {event}, {endpoint}, NULL, 'pending', 0, {due}, \
           {lease_owner}, {lease_expires_at}, NULL, {due}, {due} FROM {series}"
    ))
    .await
    .expect("insert the backlog");
    conn.execute_unprepared("ANALYZE").await.expect("analyze");
}

fn percentiles(samples: &mut [u64]) -> String {
    samples.sort_unstable();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}
