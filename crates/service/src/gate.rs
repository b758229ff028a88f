//! The revocation gate: orders every change of an access fact against the release of every
//! Groups API response, so that no response decided before a revocation is recorded after it.
//!
//! # Why it is sound (on one node)
//!
//! A *change* (token revoked, app status set or app banned, installation made or removed,
//! consent set or withdrawn, membership changed, policy activated) holds the write side of
//! one `RwLock` while it takes its instant and commits its write. A *request* holds the read
//! side from the moment it re-checks its token through reading the facts, deciding every
//! field, and taking its release instant, which is the instant its disclosure record carries.
//! The two sides exclude each other, so every change falls wholly before or wholly after a
//! request's read section:
//!
//! - **before**: the change is committed when the request reads, so the request sees it and is
//!   refused (401 for a dead token or an app no longer active, 404 for a removed
//!   installation) or decides under it (a withdrawn consent hides the member);
//! - **after**: the change takes its instant after the request released, and that instant is
//!   made strictly later than every release instant already taken (`last_release + 1 ms` if
//!   the clock has not moved on), so the disclosure is recorded strictly before the change.
//!
//! Release instants are likewise never earlier than the latest change (`last_change`), so a
//! request that saw a change is never recorded before it. The record therefore always carries
//! an instant at which the facts were exactly those the decisions were made from, which is
//! what an audit reconstructs (`facts_as_of` folds every change with `at <= t`).
//!
//! A change waits for the read sections in progress (decisions take microseconds to a few
//! milliseconds); std's `RwLock` makes new readers wait behind a waiting writer, so a stream
//! of requests cannot starve a revocation.
//!
//! The read side is not held while the record is made durable (the ledger's fsync), so a
//! change waits only for decisions in progress, not for the disk; a response released before a
//! change may still be on its way out while the change returns, recorded with its earlier
//! instant.
//!
//! The lock orders the changes and requests of one process. A change made by another process
//! on the same SQLite file (the CLI's `policy activate`, `case open` or `installations expire`
//! while `serve` runs) is outside it.
//!
//! # Several processes on one database
//!
//! A store that several processes (nodes, the CLI) change at once has a release fence
//! (`consentry_store::ReleaseFence`, PostgreSQL's advisory locks): then a change holds the
//! fence's exclusive side for its scope instead of this lock, and a request's read section is
//! inside `Store::read_page`, which reads its facts and takes its release instant under the
//! fence's shared side, both instants from the database's clock. The argument above holds
//! unchanged, with the database's locks in place of the `RwLock` and its clock in place of
//! `last_release`/`last_change` (see `store-postgres`'s `fence` module).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use consentry_store::FencedChange;
use consentry_types::Instant;

use crate::clock::Clock;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Gate {
    lock: RwLock<()>,
    /// The latest release instant taken (milliseconds).
    last_release: AtomicI64,
    /// The latest change's instant (milliseconds).
    last_change: AtomicI64,
}

/// A change of an access fact in progress: commit it with `at` before dropping this.
pub(crate) struct Change<'a> {
    _exclusive: Exclusive<'a>,
    pub at: Instant,
}

/// What keeps requests out while a change is made.
enum Exclusive<'a> {
    InProcess(#[allow(dead_code, reason = "held for its drop")] RwLockWriteGuard<'a, ()>),
    /// The store's release fence (several processes on one database).
    Fenced(#[allow(dead_code, reason = "held for its drop")] FencedChange),
}

impl Change<'_> {
    /// A change ordered by the store's release fence instead of this process's lock.
    pub(crate) fn fenced(change: FencedChange) -> Change<'static> {
        Change { at: change.at, _exclusive: Exclusive::Fenced(change) }
    }
}

/// A request's read section: facts read and decisions made while this lives cannot be
/// overtaken by a change.
pub(crate) struct Serving<'a> {
    /// `None` when the store's fence orders the request (inside `Store::read_page`).
    _shared: Option<RwLockReadGuard<'a, ()>>,
    gate: &'a Gate,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            lock: RwLock::new(()),
            last_release: AtomicI64::new(i64::MIN),
            last_change: AtomicI64::new(i64::MIN),
        }
    }

    /// Starts a change: waits until no request is between reading its facts and taking its
    /// release instant, then gives the change's instant, strictly after every release so far.
    pub(crate) fn change(&self, clock: &dyn Clock) -> Change<'_> {
        // The lock guards no data, so a poisoned lock is still a sound lock.
        let exclusive = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let after_releases = Instant::from_millis(self.last_release.load(Ordering::SeqCst)).plus_millis(1);
        let at = clock
            .now()
            .max(after_releases)
            .max(Instant::from_millis(self.last_change.load(Ordering::SeqCst)));
        self.last_change.store(at.millis(), Ordering::SeqCst);
        Change { _exclusive: Exclusive::InProcess(exclusive), at }
    }

    /// Starts a request's read section.
    pub(crate) fn serve(&self) -> Serving<'_> {
        Serving { _shared: Some(self.lock.read().unwrap_or_else(PoisonError::into_inner)), gate: self }
    }

    /// A request's read section when the store's release fence orders it: this lock is not
    /// taken, and the release instant is the one `Store::read_page` gives.
    pub(crate) fn serve_fenced_by_store(&self) -> Serving<'_> {
        Serving { _shared: None, gate: self }
    }
}

impl Serving<'_> {
    /// The instant this response is released at: never before the latest change.
    pub(crate) fn release_instant(&self, clock: &dyn Clock) -> Instant {
        let at = clock.now().max(Instant::from_millis(self.gate.last_change.load(Ordering::SeqCst)));
        self.gate.last_release.fetch_max(at.millis(), Ordering::SeqCst);
        at
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SimulatedClock;

    #[test]
    fn a_change_is_strictly_after_every_release_and_a_release_never_before_a_change() {
        let clock = SimulatedClock::starting_at(Instant::from_secs(100));
        let gate = Gate::new();
        let released = gate.serve().release_instant(&clock);
        let change = gate.change(&clock).at;
        assert!(change > released, "the clock did not move, the change still comes after");
        let next = gate.serve().release_instant(&clock);
        assert!(next >= change, "a request that saw the change is not recorded before it");
        assert_eq!(gate.change(&clock).at, next.plus_millis(1));
    }

    #[test]
    fn a_change_waits_for_a_read_section_in_progress() {
        let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(100)));
        let gate = Arc::new(Gate::new());
        let serving = gate.serve();
        let (g, c) = (gate.clone(), clock.clone());
        let change = std::thread::spawn(move || g.change(c.as_ref()).at);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!change.is_finished(), "a change must wait for the read section");
        clock.advance_secs(1);
        let released = serving.release_instant(clock.as_ref());
        drop(serving);
        let at = change.join().unwrap_or(Instant::MIN);
        assert!(at > released);
    }
}
