//! What the dispatcher, the router, the sweep, the workers and the writer
//! share: the engine's state, and the operations on it that start nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoint_cache::EndpointCache;
use super::http_client::WebhookClient;
use super::messages::{Job, WorkerKey, WriterMessage};
use super::outbound::Outbound;
use super::schedule::RetrySchedule;
use super::settings::EngineSettings;
use crate::domain::ids::{DeliveryId, EndpointId};
use crate::metrics::Metrics;
use crate::queue::Queue;

pub(super) struct Shared {
    pub queue: Queue,
    pub settings: EngineSettings,
    pub cache: EndpointCache,
    pub client: WebhookClient,
    pub schedule: RetrySchedule,
    pub metrics: Arc<Metrics>,
    /// Permits for requests in flight (`outbound.rs`).
    pub outbound: Arc<Outbound>,
    /// Ids of deliveries held in memory (queued, in flight or waiting for an
    /// in-memory retry), so that the same delivery is never held twice.
    pub known: Mutex<HashSet<DeliveryId>>,
    pub workers: Mutex<HashMap<WorkerKey, mpsc::Sender<Job>>>,
    pub worker_tasks: TaskTracker,
    pub writer: mpsc::Sender<WriterMessage>,
    /// Deliveries whose leases the writer is to release (`release_later`).
    releases: Mutex<Vec<DeliveryId>>,
    /// Endpoints with deliveries waiting in the database because their
    /// worker's queue was full (turned away by routing, or left unleased by
    /// publishing). Their worker wakes the sweep once it has room again,
    /// rather than idle until the next tick.
    overflowed: Mutex<HashSet<EndpointId>>,
    /// Endpoints this node left unleased work for, which may have no owner
    /// yet (PostgreSQL): the next sweep looks at them for taking
    /// (`Queue::own_endpoints`). Bounded: past the bound, the slow look
    /// for unowned work finds the rest.
    hints: Mutex<HashSet<EndpointId>>,
    /// Wakes the sweep before its next tick.
    pub sweep_now: Notify,
    pub releases_ready: Notify,
    /// Cancelled when shutdown begins: stop claiming and starting attempts.
    pub stopping: CancellationToken,
    /// Set as shutdown begins: in-flight requests are abandoned after this.
    pub stop_deadline: OnceLock<Instant>,
}

/// At most this many hints wait for the next sweep.
const MAX_HINTS: usize = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        queue: Queue,
        settings: EngineSettings,
        cache: EndpointCache,
        client: WebhookClient,
        metrics: Arc<Metrics>,
        writer: mpsc::Sender<WriterMessage>,
    ) -> Shared {
        Shared {
            schedule: RetrySchedule::new(settings.retry_schedule.clone()),
            outbound: Outbound::new(settings.outbound),
            queue,
            settings,
            cache,
            client,
            metrics,
            known: Mutex::new(HashSet::new()),
            workers: Mutex::new(HashMap::new()),
            worker_tasks: TaskTracker::new(),
            writer,
            releases: Mutex::new(Vec::new()),
            overflowed: Mutex::new(HashSet::new()),
            hints: Mutex::new(HashSet::new()),
            sweep_now: Notify::new(),
            releases_ready: Notify::new(),
            stopping: CancellationToken::new(),
            stop_deadline: OnceLock::new(),
        }
    }

    /// Notes endpoints that have deliveries waiting in the database for room
    /// in their worker's queue.
    pub fn mark_overflowed(&self, endpoint_ids: impl IntoIterator<Item = EndpointId>) {
        lock(&self.overflowed).extend(endpoint_ids);
    }

    /// Notes endpoints that may have work and no owner (see `hints`).
    pub fn hint(&self, endpoint_ids: impl IntoIterator<Item = EndpointId>) {
        let mut hints = lock(&self.hints);
        for endpoint_id in endpoint_ids {
            if hints.len() >= MAX_HINTS {
                break;
            }
            hints.insert(endpoint_id);
        }
    }

    /// The hints noted since the last call.
    pub fn take_hints(&self) -> Vec<EndpointId> {
        lock(&self.hints).drain().collect()
    }

    /// Called by a worker whose queue has room again: if deliveries of its
    /// endpoint wait in the database, the sweep claims them now.
    pub fn room_again(&self, key: &WorkerKey) {
        let WorkerKey::Endpoint(endpoint_id) = key else {
            return;
        };
        if lock(&self.overflowed).remove(endpoint_id) {
            self.sweep_now.notify_one();
        }
    }

    /// Releases a delivery's lease through the writer (which then forgets it).
    /// The ids wait in a set the writer drains, not in its channel: a burst of
    /// overflow would fill the channel, and a release dropped there would
    /// leave the delivery leased but held by no one until the lease lapsed.
    /// The set is bounded like `known`, where each id stays until released.
    pub fn release_later(&self, delivery_id: DeliveryId) {
        lock(&self.releases).push(delivery_id);
        self.releases_ready.notify_one();
    }

    /// The lease releases asked for so far.
    pub fn take_releases(&self) -> Vec<DeliveryId> {
        std::mem::take(&mut *lock(&self.releases))
    }

    pub fn forget(&self, ids: impl IntoIterator<Item = DeliveryId>) {
        let mut known = lock(&self.known);
        for id in ids {
            known.remove(&id);
        }
    }

    /// Takes a delivery into memory unless it is there already or memory is
    /// full; says which.
    pub fn hold(&self, delivery_id: &DeliveryId) -> Hold {
        let mut known = lock(&self.known);
        if known.contains(delivery_id) {
            Hold::AlreadyHeld
        } else if known.len() >= self.settings.max_in_memory {
            Hold::Full
        } else {
            known.insert(delivery_id.clone());
            Hold::Taken
        }
    }

    /// How many more deliveries memory has room for.
    pub fn room(&self) -> usize {
        self.settings
            .max_in_memory
            .saturating_sub(lock(&self.known).len())
    }

    pub fn held_count(&self) -> usize {
        lock(&self.known).len()
    }

    /// The deliveries held in memory (their leases are renewed).
    pub fn held(&self) -> Vec<DeliveryId> {
        lock(&self.known).iter().cloned().collect()
    }

    /// A worker with nothing to do asks to retire; it may only if no job
    /// arrived meanwhile (senders hold the same lock while sending).
    pub fn retire(&self, key: &WorkerKey, inbox: &mut mpsc::Receiver<Job>) -> Option<Job> {
        let mut workers = lock(&self.workers);
        match inbox.try_recv() {
            Ok(job) => Some(job),
            Err(_) => {
                workers.remove(key);
                None
            }
        }
    }

    /// The endpoints with a worker on this node: the ones whose ownership
    /// it keeps renewing (`crate::queue::owners`).
    pub fn endpoint_workers(&self) -> Vec<EndpointId> {
        lock(&self.workers)
            .keys()
            .filter_map(|key| match key {
                WorkerKey::Endpoint(endpoint_id) => Some(endpoint_id.clone()),
                WorkerKey::Callback(_) => None,
            })
            .collect()
    }

    pub fn clear_workers(&self) {
        lock(&self.workers).clear();
    }

    /// Endpoints whose worker queue has less than `1/free_part` of its room
    /// left. The sweep (with 2: more than half full) leaves their due
    /// deliveries in the database rather than claim them only to release
    /// them again; publishing (with 16: nearly full) inserts their new
    /// deliveries unleased for the sweep, rather than lease them, overflow
    /// and release them. Either way they are claimed once the worker has
    /// caught up.
    pub fn congested_endpoints(&self, free_part: usize) -> Vec<EndpointId> {
        lock(&self.workers)
            .iter()
            .filter_map(|(key, sender)| match key {
                WorkerKey::Endpoint(id)
                    if sender.capacity() < sender.max_capacity() / free_part.max(1) =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// What [`Shared::hold`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Taken,
    AlreadyHeld,
    Full,
}
