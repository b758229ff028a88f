//! Client-secret checks (argon2) on their own few threads behind a bounded queue.
//!
//! argon2 is slow on purpose. Run on the threads that serve requests and record disclosures,
//! a flood of wrong secrets would take them all; here at most `at_once` checks run, at most
//! `waiting` wait, and any further check is refused at once ("busy") without work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use crate::secrets::slow_verify;

/// Why a secret could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckRefused {
    #[error("too many client secrets are being checked; try again shortly")]
    Busy,
    #[error("the client-secret checker stopped: {0}")]
    Stopped(String),
}

struct Job {
    secret: String,
    stored: String,
    answer: SyncSender<bool>,
    /// Frees its place when the job is done or dropped unrun.
    place: Place,
}

/// One of the `at_once + waiting` places a check holds from admission to its answer.
struct Place(Arc<AtomicUsize>);

impl Place {
    fn take(admitted: &Arc<AtomicUsize>, places: usize) -> Option<Place> {
        admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < places).then_some(n + 1))
            .ok()
            .map(|_| Place(admitted.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pool of client-secret checkers, started on first use.
pub struct SecretChecks {
    at_once: usize,
    waiting: usize,
    /// Checks admitted and not yet answered (running or waiting).
    admitted: Arc<AtomicUsize>,
    queue: Mutex<Option<Sender<Job>>>,
}

impl std::fmt::Debug for SecretChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretChecks")
            .field("at_once", &self.at_once)
            .field("waiting", &self.waiting)
            .finish()
    }
}

impl SecretChecks {
    pub fn new(at_once: usize, waiting: usize) -> SecretChecks {
        SecretChecks {
            at_once: at_once.max(1),
            waiting,
            admitted: Arc::new(AtomicUsize::new(0)),
            queue: Mutex::new(None),
        }
    }

    fn sender(&self) -> Result<Sender<Job>, CheckRefused> {
        let mut queue = self.queue.lock().map_err(|_| CheckRefused::Stopped("lock poisoned".into()))?;
        if let Some(sender) = queue.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..self.at_once {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("client-secret-check-{n}"))
                .spawn(move || check_until_closed(&receiver))
                .map_err(|e| CheckRefused::Stopped(e.to_string()))?;
        }
        *queue = Some(sender.clone());
        Ok(sender)
    }

    /// Checks `secret` against its stored argon2 hash on the checker threads, waiting for the
    /// answer; refuses at once when `at_once` checks run and `waiting` more wait.
    pub fn check(&self, secret: &str, stored: &str) -> Result<bool, CheckRefused> {
        let place = Place::take(&self.admitted, self.at_once + self.waiting).ok_or(CheckRefused::Busy)?;
        let (answer, answered) = sync_channel(1);
        let job = Job { secret: secret.to_string(), stored: stored.to_string(), answer, place };
        match self.sender()?.send(job) {
            Ok(()) => {}
            Err(_) => {
                // Every checker thread is gone; the next call starts new ones.
                if let Ok(mut queue) = self.queue.lock() {
                    *queue = None;
                }
                return Err(CheckRefused::Stopped("no checker thread is running".into()));
            }
        }
        answered.recv().map_err(|_| CheckRefused::Stopped("the checker thread stopped".into()))
    }
}

fn check_until_closed(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let Job { secret, stored, answer, place } = job;
        let matches = slow_verify(&secret, &stored);
        // The place is free before the answer arrives, so a caller that asks again at once
        // finds it free.
        drop(place);
        let _ = answer.send(matches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::slow_hash;
    use std::sync::Barrier;

    #[test]
    fn checks_answer_like_slow_verify() {
        let checks = SecretChecks::new(1, 2);
        let hash = slow_hash("s3cret").unwrap_or_default();
        assert_eq!(checks.check("s3cret", &hash), Ok(true));
        assert_eq!(checks.check("s3creT", &hash), Ok(false));
        assert_eq!(checks.check("s3cret", "not a hash"), Ok(false));
    }

    #[test]
    fn beyond_the_queue_a_check_is_refused_at_once() {
        // One checker, one waiting place: of eight simultaneous checks, some are refused
        // without waiting for a checker, and every other one is answered.
        let checks = Arc::new(SecretChecks::new(1, 1));
        let hash = slow_hash("s3cret").unwrap_or_default();
        let callers = 8;
        let start = Arc::new(Barrier::new(callers));
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let (checks, hash, start) = (checks.clone(), hash.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    checks.check("wrong", &hash)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        assert_eq!(outcomes.len(), callers);
        let busy = outcomes.iter().filter(|o| **o == Err(CheckRefused::Busy)).count();
        let checked = outcomes.iter().filter(|o| **o == Ok(false)).count();
        assert!(busy >= 1, "{outcomes:?}");
        assert_eq!(busy + checked, callers, "{outcomes:?}");
    }
}
