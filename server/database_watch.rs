//! Whether the database answers, watched on a connection of its own. While
//! it does not, every call that needs it is answered UNAVAILABLE at once
//! (and a call already waiting on it is answered so as the loss is seen),
//! the gRPC health service says NOT_SERVING for Herald's services,
//! `herald_database_up` is 0, and the log has one line for the loss and one
//! for the return (`domain::outage`). Delivery, streams and sweeps need no
//! signal: their statements fail and they try again on their own schedule.
//!
//! Only PostgreSQL is watched: SQLite is a file in this process (its
//! failures, a full disk or a read-only file, are answered by the statement
//! that meets them), and its one connection is often busy for longer than
//! a ping may wait.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectOptions, DatabaseConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::outage::{Change, Outage};
use crate::domain::time::now_millis;
use crate::error::Error;

/// How often the database is pinged.
const EVERY: Duration = Duration::from_millis(500);
/// How long a ping may take before the database counts as lost: with
/// [`EVERY`], a loss is seen within 1.4 s.
const PING_TIMEOUT: Duration = Duration::from_millis(900);

/// The database's state as the watch last saw it. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct DatabaseWatch {
    /// `None` while the database answers; since when it has not, otherwise.
    down_since: watch::Sender<Option<i64>>,
}

impl DatabaseWatch {
    /// A watch that says "up" until [`DatabaseWatch::run`] sees otherwise.
    pub fn new() -> Arc<DatabaseWatch> {
        Arc::new(DatabaseWatch {
            down_since: watch::Sender::new(None),
        })
    }

    pub fn is_up(&self) -> bool {
        self.down_since.borrow().is_none()
    }

    /// The error every call gets while the database is lost.
    pub fn unavailable(&self) -> Error {
        let since = self.down_since.borrow().unwrap_or_else(now_millis);
        let seconds = now_millis().saturating_sub(since).max(0) / 1000;
        Error::Unavailable(format!(
            "the database is unreachable (for {seconds} s): nothing can be stored or read now; \
             retry later (a publish retried with the same idempotency_key is stored once)"
        ))
    }

    /// Resolves once the database is lost (at once if it is now).
    pub async fn lost(&self) {
        let mut receiver = self.down_since.subscribe();
        let _ = receiver.wait_for(Option::is_some).await;
    }

    /// Pings `url`'s database every [`EVERY`] on a connection of its own
    /// (a busy pool must not look like a lost database) until `shutdown`,
    /// telling each change to the log, the health service and the watch.
    pub async fn run(
        self: Arc<Self>,
        url: String,
        health: tonic_health::server::HealthReporter,
        services: &'static [&'static str],
        shutdown: CancellationToken,
    ) {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(1)
            .min_connections(0)
            .connect_timeout(PING_TIMEOUT)
            .acquire_timeout(PING_TIMEOUT)
            .sqlx_logging(false);
        let mut connection: Option<DatabaseConnection> = None;
        let mut outage = Outage::default();
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (answered, cause) = ping(&mut connection, &options).await;
            match outage.observe(answered, now_millis()) {
                Some(Change::Lost) => {
                    tracing::warn!(
                        cause = %cause.unwrap_or_default(),
                        "database unreachable: calls are answered UNAVAILABLE until it is back"
                    );
                    self.down_since.send_replace(outage.down_since());
                    for service in services {
                        health
                            .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                }
                Some(Change::Back { down_for_ms }) => {
                    tracing::info!(
                        down_for_s = down_for_ms as f64 / 1000.0,
                        "database reachable again"
                    );
                    self.down_since.send_replace(None);
                    for service in services {
                        health
                            .set_service_status(*service, tonic_health::ServingStatus::Serving)
                            .await;
                    }
                }
                None => {}
            }
        }
    }
}

/// One ping within [`PING_TIMEOUT`], connecting first if needed; whether it
/// was answered and, if not, why.
async fn ping(
    connection: &mut Option<DatabaseConnection>,
    options: &ConnectOptions,
) -> (bool, Option<String>) {
    let attempt = async {
        if connection.is_none() {
            *connection = Some(sea_orm::Database::connect(options.clone()).await?);
        }
        match connection {
            Some(connection) => connection.ping().await,
            None => Ok(()),
        }
    };
    match tokio::time::timeout(PING_TIMEOUT, attempt).await {
        Ok(Ok(())) => (true, None),
        Ok(Err(err)) => {
            // A fresh connection next time: this one may be dead.
            *connection = None;
            (false, Some(crate::error::chain(&err)))
        }
        Err(_) => {
            *connection = None;
            (false, Some(format!("no answer within {PING_TIMEOUT:?}")))
        }
    }
}
