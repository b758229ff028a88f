//! Group commit for responses: every disclosure record goes to one writer thread, which makes
//! all the records that queued while it was syncing durable with its next sync. When fewer
//! than [`ENOUGH_PER_SYNC`] are queued and requests already being decided will record soon,
//! it waits for them, a bounded moment counted from the oldest queued record's arrival, so
//! that many responses share one sync even when syncs are fast; when syncs are slow, enough
//! queue during each sync and it never waits. A waiting response holds no thread: it awaits
//! its answer.
//!
//! A response is answered only after the sink said its record is durable; if the sink fails,
//! every response of that sync gets the error (and a 503), none is disclosed.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use consentry_service::{DisclosureRecord, DisclosureSink};
use tokio::sync::oneshot;

/// How long a record waits, at most, for others before the writer syncs it (counted from its
/// arrival). Only while fewer than [`ENOUGH_PER_SYNC`] are queued and requests being decided
/// will record soon: a lone request is synced at once.
pub const COMMIT_WAIT: Duration = Duration::from_millis(2);
/// With this many records queued, the writer syncs without waiting for more.
pub const ENOUGH_PER_SYNC: usize = 16;
/// Writer threads. Two, so that while one is in its sync the other has taken what queued
/// meanwhile and is ready (its records encoded, waiting in the ledger's own group commit) to
/// write and sync the moment the first sync ends: the disk never waits for a thread to wake.
pub const WRITERS: usize = 2;
/// Most records one sync takes.
pub const MOST_PER_SYNC: usize = 1024;

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct Queue {
    records: Vec<DisclosureRecord>,
    replies: Vec<Reply>,
    /// When the oldest queued record arrived.
    oldest: Option<Instant>,
    /// Requests being decided whose record will follow ([`Coming`]).
    coming: usize,
    /// No more records: the recorder is gone, or the writer stopped.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    wait: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue's state stays consistent at every unlock, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The writer thread and its queue. Dropping it lets the writer finish what is queued and waits
/// for it to stop.
pub struct Recorder {
    shared: Arc<Shared>,
    writers: Vec<JoinHandle<()>>,
}

/// A request being decided whose record will follow: while any exists, the writer waits (at
/// most [`COMMIT_WAIT`]) before it syncs. Dropped without a record (the request failed), it
/// stops counting.
pub struct Coming {
    shared: Option<Arc<Shared>>,
}

impl Drop for Coming {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut queue = shared.lock();
            queue.coming = queue.coming.saturating_sub(1);
            drop(queue);
            shared.changed.notify_all();
        }
    }
}

impl Coming {
    /// For a state that records nothing.
    pub fn none() -> Coming {
        Coming { shared: None }
    }
}

impl Recorder {
    /// Starts the writer threads over `sink`; they wait at most `wait` for coming records.
    pub fn start(sink: Arc<dyn DisclosureSink>, wait: Duration) -> std::io::Result<Recorder> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), changed: Condvar::new(), wait });
        let mut recorder = Recorder { shared, writers: Vec::with_capacity(WRITERS) };
        for n in 0..WRITERS {
            let (shared, sink) = (recorder.shared.clone(), sink.clone());
            let writer = std::thread::Builder::new()
                .name(format!("consentry-ledger-writer-{n}"))
                .spawn(move || write(&shared, sink.as_ref()));
            // On failure, dropping the recorder stops the writers already started.
            recorder.writers.push(writer?);
        }
        Ok(recorder)
    }

    /// Announces a request whose record will follow.
    pub fn coming(&self) -> Coming {
        self.shared.lock().coming += 1;
        Coming { shared: Some(self.shared.clone()) }
    }

    /// Queues `record` (the announced request's, if `coming` is one); the answer says once it
    /// is durable, or why it cannot be.
    pub fn submit(
        &self,
        record: DisclosureRecord,
        mut coming: Coming,
    ) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let (reply, answer) = oneshot::channel();
        let mut queue = self.shared.lock();
        if coming.shared.take().is_some() {
            queue.coming = queue.coming.saturating_sub(1);
        }
        if queue.closed {
            return Err("the ledger writer has stopped".into());
        }
        if queue.records.is_empty() {
            queue.oldest = Some(Instant::now());
        }
        queue.records.push(record);
        queue.replies.push(reply);
        drop(queue);
        self.shared.changed.notify_all();
        Ok(answer)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        for writer in self.writers.drain(..) {
            let _ = writer.join();
        }
    }
}

/// If the writer ever unwinds, the queue is closed and every waiting reply dropped (its
/// request gets an error), so that no request waits for a writer that is gone.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.closed = true;
        queue.records.clear();
        queue.replies.clear();
    }
}

/// The writer: takes everything queued, waits a bounded moment for coming records, has the
/// sink make them durable at once, answers each.
fn write(shared: &Shared, sink: &dyn DisclosureSink) {
    let _close = CloseOnExit(shared);
    loop {
        let (records, replies) = {
            let mut queue = shared.lock();
            while queue.records.is_empty() {
                if queue.closed {
                    return;
                }
                queue = shared.changed.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            // Wait while others will record soon, fewer than enough are queued, and the oldest
            // queued record has waited less than the bound (read afresh: the other writer may
            // have taken what was queued meanwhile).
            while queue.coming > 0
                && !queue.closed
                && !queue.records.is_empty()
                && queue.records.len() < ENOUGH_PER_SYNC
            {
                let oldest = queue.oldest.unwrap_or_else(Instant::now);
                let Some(left) = shared.wait.checked_sub(oldest.elapsed()).filter(|left| !left.is_zero())
                else {
                    break;
                };
                queue = shared
                    .changed
                    .wait_timeout(queue, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            if queue.records.is_empty() {
                // The other writer took them while this one waited.
                continue;
            }
            let take = queue.records.len().min(MOST_PER_SYNC);
            let records: Vec<DisclosureRecord> = queue.records.drain(..take).collect();
            let replies: Vec<Reply> = queue.replies.drain(..take).collect();
            queue.oldest = (!queue.records.is_empty()).then(Instant::now);
            (records, replies)
        };
        let outcome = sink.record_all(&records);
        for reply in replies {
            // A request that went away (its client hung up) no longer listens.
            let _ = reply.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // tests

    use super::*;
    use consentry_types::{AppId, DeveloperId, GroupId, Instant as At};

    fn record(n: u32) -> DisclosureRecord {
        DisclosureRecord {
            at: At::from_millis(1_600_000_000_000),
            request_id: format!("r{n}"),
            app: AppId::parse("app_1").unwrap(),
            developer: DeveloperId::parse("dev").unwrap(),
            group: GroupId::parse("g").unwrap(),
            token_hash: String::new(),
            policy_version: 1,
            route: "GET /v1/groups/{id}".into(),
            disclosures: Vec::new(),
        }
    }

    /// Keeps the batches it was given; syncs take `sync`.
    struct Batches {
        seen: Mutex<Vec<Vec<String>>>,
        sync: Duration,
        fail: bool,
    }

    impl DisclosureSink for Batches {
        fn record(&self, record: &DisclosureRecord) -> Result<(), String> {
            self.record_all(std::slice::from_ref(record))
        }
        fn record_all(&self, records: &[DisclosureRecord]) -> Result<(), String> {
            // One sync at a time, as the ledger does.
            let mut seen = self.seen.lock().unwrap();
            std::thread::sleep(self.sync);
            seen.push(records.iter().map(|r| r.request_id.clone()).collect());
            if self.fail {
                Err("disk full".into())
            } else {
                Ok(())
            }
        }
    }

    fn sink(sync: Duration, fail: bool) -> Arc<Batches> {
        Arc::new(Batches { seen: Mutex::new(Vec::new()), sync, fail })
    }

    #[tokio::test]
    async fn what_queues_while_a_sync_runs_goes_into_the_next_sync() {
        let batches = sink(Duration::from_millis(30), false);
        let recorder = Recorder::start(batches.clone(), Duration::ZERO).unwrap();
        let first = recorder.submit(record(0), Coming::none()).unwrap();
        // The first sync is running: these queue behind it.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (1..=20).map(|n| recorder.submit(record(n), Coming::none()).unwrap()).collect();
        assert_eq!(first.await.unwrap(), Ok(()));
        for answer in rest {
            assert_eq!(answer.await.unwrap(), Ok(()));
        }
        let seen = batches.seen.lock().unwrap().clone();
        // The other writer may have taken some of them before the rest arrived; the rest
        // queued during the syncs go together in one more: 20 records, at most 2 syncs.
        assert!(seen.len() == 2 || seen.len() == 3, "{seen:?}");
        assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 21, "{seen:?}");
    }

    #[tokio::test]
    async fn the_writer_waits_for_announced_records_but_not_past_its_bound() {
        let batches = sink(Duration::ZERO, false);
        let recorder = Recorder::start(batches.clone(), Duration::from_millis(200)).unwrap();
        let (a, b) = (recorder.coming(), recorder.coming());
        let first = recorder.submit(record(1), a).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = recorder.submit(record(2), b).unwrap();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(second.await.unwrap(), Ok(()));
        assert_eq!(batches.seen.lock().unwrap().clone(), [vec!["r1".to_string(), "r2".to_string()]]);

        // A request that never records (it failed) stops the wait as soon as it is dropped.
        let (c, gone) = (recorder.coming(), recorder.coming());
        let started = Instant::now();
        let third = recorder.submit(record(3), c).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(gone);
        assert_eq!(third.await.unwrap(), Ok(()));
        assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());

        // One that never arrives holds the sync back only for the bound.
        let _stuck = recorder.coming();
        let started = Instant::now();
        assert_eq!(recorder.submit(record(4), Coming::none()).unwrap().await.unwrap(), Ok(()));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn with_enough_queued_the_writer_does_not_wait() {
        let batches = sink(Duration::ZERO, false);
        let recorder = Recorder::start(batches.clone(), Duration::from_secs(5)).unwrap();
        let _still_deciding = recorder.coming();
        let started = Instant::now();
        let answers: Vec<_> = (0..ENOUGH_PER_SYNC as u32)
            .map(|n| recorder.submit(record(n), Coming::none()).unwrap())
            .collect();
        for answer in answers {
            assert_eq!(answer.await.unwrap(), Ok(()));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn records_that_waited_through_a_sync_do_not_wait_again() {
        let batches = sink(Duration::from_millis(300), false);
        let recorder = Recorder::start(batches.clone(), Duration::from_millis(250)).unwrap();
        let first = recorder.submit(record(0), Coming::none()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued during the 300 ms sync, while another request is still being decided: it has
        // waited longer than the bound by the time the writer is free, so it goes at once.
        let _still_deciding = recorder.coming();
        let second = recorder.submit(record(1), Coming::none()).unwrap();
        let started = Instant::now();
        assert_eq!(first.await.unwrap(), Ok(()));
        assert_eq!(second.await.unwrap(), Ok(()));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(750),
            "{waited:?}: the rest of the first sync and one more (~580 ms), no 250 ms wait between them"
        );
    }

    #[tokio::test]
    async fn a_lone_record_is_synced_at_once() {
        let batches = sink(Duration::ZERO, false);
        let recorder = Recorder::start(batches.clone(), Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        let coming = recorder.coming();
        assert_eq!(recorder.submit(record(1), coming).unwrap().await.unwrap(), Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_record_it_held() {
        let batches = sink(Duration::from_millis(20), true);
        let recorder = Recorder::start(batches.clone(), Duration::ZERO).unwrap();
        let answers: Vec<_> = (0..5).map(|n| recorder.submit(record(n), Coming::none()).unwrap()).collect();
        for answer in answers {
            assert_eq!(answer.await.unwrap(), Err("disk full".to_string()));
        }
    }

    #[tokio::test]
    async fn a_writer_that_died_answers_instead_of_leaving_requests_waiting() {
        struct Panics;
        impl DisclosureSink for Panics {
            fn record(&self, _: &DisclosureRecord) -> Result<(), String> {
                panic!("a sink bug")
            }
        }
        let recorder = Recorder::start(Arc::new(Panics), Duration::ZERO).unwrap();
        let answer = recorder.submit(record(1), Coming::none()).unwrap();
        assert!(answer.await.is_err(), "the reply was dropped, not left hanging");
        // Later records are refused at once.
        let mut refused = false;
        for _ in 0..100 {
            if recorder.submit(record(2), Coming::none()).is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused);
    }
}
