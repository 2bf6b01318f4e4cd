//! Endpoint configuration in memory, so that the hot path reads no database
//! per event. An entry is reloaded on a miss and once it is older than
//! [`FRESH_FOR`]; a change made through the API drops it at once, on this
//! node and (told by `crate::wakeups`) on the others; disabling by the
//! engine updates it at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::domain::endpoint::EndpointKind;
use crate::domain::endpoint_tls::{EndpointTls, decode_pin};
use crate::domain::secret::SigningSecret;
use crate::domain::time::now_millis;
use crate::error::Result;
use crate::storage::{Database, consumers, endpoints};

/// How long a loaded entry is trusted.
pub const FRESH_FOR: Duration = Duration::from_secs(3);
/// `max_in_flight = 0` means this many.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

/// What the engine needs to know about an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub is_stream: bool,
    pub url: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub enabled: bool,
    pub rate_limit: u32,
    pub max_in_flight: usize,
    pub ordered: bool,
    /// Pins and private CA, if the endpoint has either.
    pub tls: Option<Arc<EndpointTls>>,
    /// The row's `updated_at` when loaded (changes and rotations set it).
    pub updated_at: i64,
    /// Current and not yet expired rotated secrets, newest first, with expiry.
    secrets: Vec<(SigningSecret, Option<i64>)>,
}

impl EndpointConfig {
    /// The secrets live at `now`, newest first.
    pub fn live_secrets(&self, now: i64) -> Vec<SigningSecret> {
        self.secrets
            .iter()
            .filter(|(_, expires)| expires.is_none_or(|expires| expires > now))
            .map(|(secret, _)| secret.clone())
            .collect()
    }
}

/// An endpoint row's TLS settings. Pins that do not decode (never stored
/// by the API) fail closed: a pinned endpoint never loses its pinning.
fn endpoint_tls(row: &crate::storage::entities::endpoint::Model) -> Option<EndpointTls> {
    let stored = endpoints::pins_of(row);
    let mut pins: Vec<_> = stored.iter().filter_map(|pin| decode_pin(pin)).collect();
    if row.pinned_spki_sha256.is_some() && (pins.is_empty() || pins.len() != stored.len()) {
        tracing::warn!(endpoint_id = %row.id, "unreadable pinned_spki_sha256: no key will match");
        pins = vec![[0; 32]];
    }
    EndpointTls::new(pins, row.ca_pem.clone())
}

fn config_of(
    row: crate::storage::entities::endpoint::Model,
    secrets: Vec<crate::storage::entities::endpoint_secret::Model>,
) -> Arc<EndpointConfig> {
    Arc::new(EndpointConfig {
        is_stream: EndpointKind::from_stored(&row.kind) == EndpointKind::Stream,
        headers: parse_headers(&row.headers),
        enabled: row.enabled,
        rate_limit: u32::try_from(row.rate_limit).unwrap_or(0),
        max_in_flight: match usize::try_from(row.max_in_flight) {
            Ok(0) | Err(_) => DEFAULT_MAX_IN_FLIGHT,
            Ok(limit) => limit,
        },
        ordered: row.ordered,
        tls: endpoint_tls(&row).map(Arc::new),
        updated_at: row.updated_at,
        url: row.url,
        secrets: secrets
            .into_iter()
            .map(|secret| (SigningSecret::from_stored(secret.secret), secret.expires_at))
            .collect(),
    })
}

struct Entry<T> {
    value: Option<Arc<T>>,
    loaded_at: Instant,
}

/// Endpoints by id and consumers' callback secrets by consumer id; `None`
/// remembers that a row does not exist (deleted).
pub struct EndpointCache {
    db: Database,
    endpoints: Mutex<HashMap<String, Entry<EndpointConfig>>>,
    callback_secrets: Mutex<HashMap<String, Entry<SigningSecret>>>,
}

impl EndpointCache {
    pub fn new(db: Database) -> Self {
        EndpointCache {
            db,
            endpoints: Mutex::new(HashMap::new()),
            callback_secrets: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint's configuration, or `None` if it was deleted.
    pub async fn endpoint(&self, endpoint_id: &str) -> Result<Option<Arc<EndpointConfig>>> {
        if let Some(entry) = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint_id)
            && entry.loaded_at.elapsed() < FRESH_FOR
        {
            return Ok(entry.value.clone());
        }
        let loaded = endpoints::with_live_secrets(&self.db.conn, endpoint_id, now_millis())
            .await?
            .map(|(row, secrets)| config_of(row, secrets));
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                endpoint_id.to_owned(),
                Entry {
                    value: loaded.clone(),
                    loaded_at: Instant::now(),
                },
            );
        Ok(loaded)
    }

    /// Loads the entries of those of `endpoint_ids` that are missing or
    /// stale, all in one read (a broadcast's slice: a hundred endpoints
    /// that a hundred reads would otherwise load one by one).
    pub async fn prime(&self, endpoint_ids: &[String]) -> Result<()> {
        let wanted: Vec<String> = {
            let entries = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            endpoint_ids
                .iter()
                .filter(|id| {
                    entries
                        .get(id.as_str())
                        .is_none_or(|entry| entry.loaded_at.elapsed() >= FRESH_FOR)
                })
                .cloned()
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        self.db.turns.background().await;
        let loaded =
            endpoints::many_with_live_secrets(&self.db.conn, &wanted, now_millis()).await?;
        let loaded_at = Instant::now();
        let mut entries = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (row, secrets) in loaded {
            let id = row.id.clone();
            entries.insert(
                id,
                Entry {
                    value: Some(config_of(row, secrets)),
                    loaded_at,
                },
            );
        }
        Ok(())
    }

    /// Drops an endpoint's entry: it changed (here or on another node), and
    /// the next delivery must see the change.
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(endpoint_id);
    }

    /// Drops the entries of endpoints whose `updated_at`, as just read from
    /// the database, is not the cached one's.
    pub fn forget_changed<'a>(&self, read: impl Iterator<Item = (&'a str, i64)>) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (endpoint_id, updated_at) in read {
            let changed = endpoints.get(endpoint_id).is_some_and(|entry| {
                entry
                    .value
                    .as_ref()
                    .is_none_or(|config| config.updated_at != updated_at)
            });
            if changed {
                endpoints.remove(endpoint_id);
            }
        }
    }

    /// Drops a consumer's callback secret.
    pub fn forget_consumer(&self, consumer_id: &str) {
        self.callback_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(consumer_id);
    }

    /// Drops every entry (changes may have been missed).
    pub fn forget_all(&self) {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.callback_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Records a disabling made by the engine, effective immediately.
    pub fn mark_disabled(&self, endpoint_id: &str) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = endpoints.get_mut(endpoint_id)
            && let Some(config) = &entry.value
        {
            let mut config = (**config).clone();
            config.enabled = false;
            entry.value = Some(Arc::new(config));
        }
    }

    /// The consumer's callback secret, or `None` if the consumer is gone.
    pub async fn callback_secret(&self, consumer_id: &str) -> Result<Option<Arc<SigningSecret>>> {
        if let Some(entry) = self
            .callback_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(consumer_id)
            && entry.loaded_at.elapsed() < FRESH_FOR
        {
            return Ok(entry.value.clone());
        }
        let loaded = consumers::callback_secret(&self.db.conn, consumer_id)
            .await?
            .map(|secret| Arc::new(SigningSecret::from_stored(secret)));
        let mut secrets = self
            .callback_secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Callbacks name arbitrary consumers; keep the map from growing without bound.
        if secrets.len() > 10_000 {
            secrets.retain(|_, entry| entry.loaded_at.elapsed() < FRESH_FOR);
        }
        secrets.insert(
            consumer_id.to_owned(),
            Entry {
                value: loaded.clone(),
                loaded_at: Instant::now(),
            },
        );
        Ok(loaded)
    }
}

/// The stored JSON object of extra headers; entries that are not valid
/// headers (validated at write time, so never expected) are skipped.
fn parse_headers(stored: &str) -> Vec<(HeaderName, HeaderValue)> {
    let Ok(map) = serde_json::from_str::<HashMap<String, String>>(stored) else {
        return Vec::new();
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = map
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(&value).ok()?,
            ))
        })
        .collect();
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_parse() {
        let headers = parse_headers(r#"{"X-Team":"payments","bad name":"x"}"#);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), "x-team");
        assert!(parse_headers("not json").is_empty());
    }

    /// A change made elsewhere (no notice yet) is seen as soon as a publish
    /// reads the endpoint's new `updated_at`; the same version keeps the
    /// cached copy.
    #[tokio::test]
    async fn a_copy_of_another_version_is_read_again() {
        use sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("cache.db").display());
        let db = Database::open(&url).await.expect("database");
        for statement in [
            "INSERT INTO consumers (id, uid, name, metadata, callback_secret, created_at, updated_at) \
             VALUES ('co_1', 'one', '', '{}', 'whsec_x', 1, 1)",
            "INSERT INTO endpoints (id, consumer_id, kind, url, description, event_types, enabled, \
               disabled_reason, headers, rate_limit, max_in_flight, ordered, failing_since, \
               created_at, updated_at) \
             VALUES ('ep_1', 'co_1', 'webhook', 'https://one.example/', '', '[]', true, NULL, '{}', \
               0, 0, false, NULL, 1, 100)",
        ] {
            db.conn.execute_unprepared(statement).await.expect("insert");
        }
        let cache = EndpointCache::new(db.clone());
        let loaded = cache.endpoint("ep_1").await.expect("load").expect("exists");
        assert_eq!(loaded.updated_at, 100);
        db.conn
            .execute_unprepared(
                "UPDATE endpoints SET updated_at = 101, rate_limit = 7 WHERE id = 'ep_1'",
            )
            .await
            .expect("change elsewhere");
        cache.forget_changed([("ep_1", 100)].into_iter());
        let cached = cache.endpoint("ep_1").await.expect("load").expect("exists");
        assert_eq!(cached.rate_limit, 0, "same version: the cached copy");
        cache.forget_changed([("ep_1", 101)].into_iter());
        let fresh = cache.endpoint("ep_1").await.expect("load").expect("exists");
        assert_eq!((fresh.updated_at, fresh.rate_limit), (101, 7));
    }
}
