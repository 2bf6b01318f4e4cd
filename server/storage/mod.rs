//! The database: connecting (SQLite or PostgreSQL), migrating, and one module
//! of queries per resource. Storage returns `crate::error::Error`, never a gRPC
//! status. The writes of the `deliveries` table are not here: `crate::queue`
//! owns them.

pub mod api_keys;
pub mod consumers;
pub mod endpoints;
pub mod entities;
pub mod event_types;
pub mod events;
pub mod health;
pub mod history;
pub mod nodelay;
pub mod ops_changes;
pub mod portal_sessions;
pub mod reach;
pub mod server_secrets;
pub mod sql;
pub mod stats;
pub mod turns;

use std::fs::{File, OpenOptions};
use std::time::Duration;

use herald_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, DatabaseBackend, DatabaseConnection};

use crate::error::Error;

/// Why the database could not be opened: a failure to start, reported as a
/// plain error (no gRPC status: no request is being answered).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--database-url must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    #[error(
        "SQLite database {path} is in use by another Herald process; SQLite is single-process (use PostgreSQL to run several instances)"
    )]
    Locked { path: String },
    #[error("cannot open SQLite database {path}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database")]
    Connect(#[source] sea_orm::DbErr),
    #[error("cannot reach PostgreSQL at {target}: {cause}{hint}")]
    Unreachable {
        target: String,
        cause: String,
        /// What usually fixes it (`"; create it: createdb …"`), or empty.
        hint: String,
    },
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sea_orm::DbErr),
}

type OpenResult<T> = std::result::Result<T, OpenError>;

/// An update that matched no row means the row was deleted after it was read:
/// to the caller that is NOT_FOUND, not an internal error.
pub(crate) fn vanished_or(err: sea_orm::DbErr, what: &str, id: &str) -> Error {
    match err {
        sea_orm::DbErr::RecordNotUpdated => Error::not_found(what, id),
        other => Error::from(other),
    }
}

/// PostgreSQL connections of the main pool and of the queue's pool.
const MAIN_POOL: u32 = 16;
const QUEUE_POOL: u32 = 4;
/// The most database connections (so descriptors) a node opens.
pub const MAX_DATABASE_CONNECTIONS: usize = (MAIN_POOL + QUEUE_POOL) as usize + LISTENER;
/// The connection that listens for other nodes' wake-ups (`crate::wakeups`).
const LISTENER: usize = 1;

/// A migrated connection pool, plus (on SQLite) the lock that keeps a second
/// Herald process away from the same file.
#[derive(Clone)]
pub struct Database {
    pub conn: DatabaseConnection,
    /// For the delivery queue's statements (see [`QUEUE_PLANNER_SETTINGS`]);
    /// on SQLite the same pool as `conn`.
    pub queue: DatabaseConnection,
    /// Publishes before background writes where they share a connection
    /// (SQLite).
    pub turns: turns::Turns,
    _sqlite_lock: Option<std::sync::Arc<File>>,
}

/// Planner settings of the PostgreSQL connections that run the delivery
/// queue's statements that find deliveries by id (outcomes, lease releases
/// and renewals, events of claimed deliveries). The claims themselves, which
/// scan the due index, run on the main pool with the default planner.
///
/// The table's statistics describe it as it was at the last ANALYZE, usually
/// when almost no delivery was pending. During a backlog (an endpoint back
/// from an outage, a burst beyond what the workers hold in memory) the
/// planner still believes `status = 'pending'` matches a handful of rows and
/// joins a batch of outcomes by hashing every pending row: each batch then
/// costs O(backlog), and the engine slows down exactly when it has the most
/// to do (measured: delivery fell from ~9,000 to ~5,000 events/s with a
/// 40,000-delivery backlog). Without hash, merge and bitmap plans and with
/// sequential scans discouraged, what remains is index lookups, whose cost
/// does not depend on the backlog.
pub const QUEUE_PLANNER_SETTINGS: [(&str, &str); 4] = [
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_seqscan", "off"),
];

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Database {
    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> OpenResult<Self> {
        let database = Self::connect(url).await?;
        database.migrate().await?;
        Ok(database)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> OpenResult<Self> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            Self::connect_sqlite(rest).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url).await
        } else {
            Err(OpenError::UnsupportedUrl)
        }
    }

    async fn connect_sqlite(rest: &str) -> OpenResult<Self> {
        let rest = rest.trim_start_matches("//");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory = path.is_empty() || path == ":memory:" || query.contains("mode=memory");
        let lock = if in_memory {
            None
        } else {
            Some(std::sync::Arc::new(lock_sqlite_file(path)?))
        };
        // sqlx refuses to create a missing file unless asked: a first start
        // must just work.
        let query = if query.contains("mode=") {
            query.to_owned()
        } else if query.is_empty() {
            "mode=rwc".to_owned()
        } else {
            format!("{query}&mode=rwc")
        };
        let mut options = ConnectOptions::new(format!("sqlite://{path}?{query}"));
        // One connection: SQLite has one writer at a time anyway, and a single
        // connection rules out SQLITE_BUSY between our own transactions.
        // Writes are batched by the callers (group commit), not parallelised.
        options
            .max_connections(1)
            .min_connections(1)
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(30))
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
            });
        // A transaction whose COMMIT failed with SQLITE_FULL or an I/O
        // error may have been rolled back by SQLite itself; the ROLLBACK
        // sqlx then sends fails, and its count of open transactions
        // stays at one. Every later "transaction" on that connection
        // would be a savepoint inside a transaction never committed:
        // acknowledged, then lost. Such a connection is closed instead
        // of reused (a fresh one is opened at once).
        // (Not for an in-memory database: closing its one connection
        // would drop the database.)
        if !in_memory {
            options.map_sqlx_sqlite_before_acquire(|connection, _| {
                use sea_orm::sqlx::Connection;
                let stuck = connection.is_in_transaction();
                if stuck {
                    tracing::warn!("closing a SQLite connection left inside a transaction");
                }
                Box::pin(async move { Ok(!stuck) })
            });
        }
        let conn = sea_orm::Database::connect(options)
            .await
            .map_err(OpenError::Connect)?;
        Ok(Database {
            queue: conn.clone(),
            conn,
            turns: turns::Turns::shared(),
            _sqlite_lock: lock,
        })
    }

    async fn connect_postgres(url: &str) -> OpenResult<Self> {
        reach::probe_postgres(url).await?;
        let peers = nodelay::DatabasePeers::resolve(url).await;
        let conn = Self::postgres_pool(url, MAIN_POOL, &[], peers.clone()).await?;
        let queue = Self::postgres_pool(url, QUEUE_POOL, &QUEUE_PLANNER_SETTINGS, peers).await?;
        Ok(Database {
            conn,
            queue,
            turns: turns::Turns::default(),
            _sqlite_lock: None,
        })
    }

    async fn postgres_pool(
        url: &str,
        size: u32,
        settings: &'static [(&'static str, &'static str)],
        peers: nodelay::DatabasePeers,
    ) -> OpenResult<DatabaseConnection> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(size)
            .min_connections(1)
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(30))
            .map_sqlx_postgres_opts(move |opts| {
                if settings.is_empty() {
                    opts
                } else {
                    // Sent with the start-up packet: no extra round trip.
                    opts.options(settings.iter().copied())
                }
            })
            .map_sqlx_postgres_pool_opts(move |pool| {
                let peers = peers.clone();
                pool.after_connect(move |_conn, _meta| {
                    peers.apply();
                    Box::pin(async { Ok(()) })
                })
            });
        sea_orm::Database::connect(options)
            .await
            .map_err(OpenError::Connect)
    }

    pub async fn migrate(&self) -> OpenResult<()> {
        Migrator::up(&self.conn, None)
            .await
            .map_err(OpenError::Migrate)
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DatabaseBackend::Postgres
    }
}

/// SQLite is single-process: a second Herald on the same file would run a
/// second dispatcher over the same queue. An advisory lock on the database
/// file itself (SQLite's own locks are of another kind and unaffected) makes
/// the second process fail at start with a clear message.
fn lock_sqlite_file(path: &str) -> OpenResult<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| OpenError::File {
            path: path.to_owned(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::File {
            path: path.to_owned(),
            source,
        }),
    }
}
