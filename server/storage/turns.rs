//! Publishes first on SQLite's one connection.
//!
//! SQLite's pool has one connection, handed out first come, first served,
//! and a transaction holds it from its BEGIN to its COMMIT, awaits between
//! statements included. Background writers (attempt outcomes, large
//! fan-outs, the delivery engine's cache) take it thousands of times a
//! second while a broadcast is delivered, and a publish, whose caller
//! waits for its commit, queued behind each of them: a broadcast to 10,000
//! endpoints made another publisher's calls several times slower (measured
//! in BENCHMARKS.md) with neither the CPU nor SQLite's own thread busy.
//! So a publish says when it wants the connection, and a background
//! writer about to begin a transaction first lets waiting publishes go,
//! for at most [`MAX_YIELD`] (it must not starve under a steady stream of
//! publishes). On PostgreSQL each writer has a connection of its own, and
//! nothing waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a background writer lets publishes go first, per
/// transaction.
pub const MAX_YIELD: Duration = Duration::from_millis(10);

/// Cheap to clone; all clones share the same turns.
#[derive(Debug, Clone, Default)]
pub struct Turns {
    /// `None` where writers do not share a connection (PostgreSQL).
    shared: Option<Arc<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Publishes that want or hold the connection.
    foreground: AtomicUsize,
    /// Told when the last of them is done.
    idle: Notify,
}

impl Turns {
    /// Turns for writers that share one connection.
    pub fn shared() -> Turns {
        Turns {
            shared: Some(Arc::default()),
        }
    }

    /// A publish wants the connection until the guard is dropped (after its
    /// commit, or on any early return).
    pub fn foreground(&self) -> Foreground {
        if let Some(shared) = &self.shared {
            shared.foreground.fetch_add(1, Ordering::SeqCst);
        }
        Foreground {
            shared: self.shared.clone(),
        }
    }

    /// Before a background transaction: waits while publishes want the
    /// connection, for at most [`MAX_YIELD`].
    pub async fn background(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let deadline = tokio::time::Instant::now() + MAX_YIELD;
        loop {
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            let idle = shared.idle.notified();
            if shared.foreground.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }

    /// How many publishes want the connection (for tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.foreground.load(Ordering::SeqCst))
    }
}

/// A publish's claim to go first; see [`Turns::foreground`].
#[derive(Debug)]
pub struct Foreground {
    shared: Option<Arc<Shared>>,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared
            && shared.foreground.fetch_sub(1, Ordering::SeqCst) == 1
        {
            shared.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_goes_at_once_when_no_publish_waits() {
        let turns = Turns::shared();
        let started = tokio::time::Instant::now();
        turns.background().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn background_waits_for_the_last_publish_to_finish() {
        let turns = Turns::shared();
        let first = turns.foreground();
        let second = turns.foreground();
        assert_eq!(turns.waiting(), 2);
        let waiter = tokio::spawn({
            let turns = turns.clone();
            async move {
                let started = tokio::time::Instant::now();
                turns.background().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            !waiter.is_finished(),
            "one publish still wants the connection"
        );
        drop(second);
        let waited = waiter.await.expect("the background writer");
        assert_eq!(waited, Duration::from_millis(3));
        assert_eq!(turns.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn background_is_not_starved_by_publishes_that_never_stop() {
        let turns = Turns::shared();
        let _forever = turns.foreground();
        let started = tokio::time::Instant::now();
        turns.background().await;
        assert_eq!(started.elapsed(), MAX_YIELD);
    }

    #[tokio::test(start_paused = true)]
    async fn unshared_turns_never_wait() {
        let turns = Turns::default();
        let _publish = turns.foreground();
        let started = tokio::time::Instant::now();
        turns.background().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(turns.waiting(), 0);
    }
}
