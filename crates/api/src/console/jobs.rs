//! Long work started from the console (audits, ledger verifications) runs on its own thread;
//! its page refreshes until it is done. At most [`MAX_RUNNING_JOBS`] run at once, and the last
//! few are kept, in memory, with their results.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use consentry_audit::AuditReport;
use consentry_ledger::LedgerReport;
use consentry_types::Instant;

/// Jobs running at once; starting another is refused until one ends.
pub const MAX_RUNNING_JOBS: usize = 2;
/// Finished jobs kept with their results.
const KEPT_JOBS: usize = 16;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Audit,
    Verification,
}

/// What a finished job found.
pub(crate) enum JobResult {
    Audit(Arc<AuditReport>),
    Verification(LedgerReport),
}

/// One job and where it stands.
pub(crate) struct Job {
    pub id: u64,
    pub kind: JobKind,
    /// e.g. `version 2, 2019-09-06 to 2019-11-05`.
    pub label: String,
    /// The key that started it (name and id).
    pub started_by: String,
    pub started_at: Instant,
    /// Records in the ledger when it started, for the progress bar.
    pub total: u64,
    /// Records read so far.
    pub progress: AtomicU64,
    pub outcome: Mutex<Option<Result<JobResult, String>>>,
    pub finished_at: Mutex<Option<Instant>>,
}

impl Job {
    pub(crate) fn running(&self) -> bool {
        self.outcome.lock().map(|o| o.is_none()).unwrap_or(false)
    }
}

/// The table of jobs.
#[derive(Default)]
pub(crate) struct Jobs {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    jobs: VecDeque<Arc<Job>>,
    last_verification: Option<Arc<Job>>,
}

/// Why a job did not start.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StartRefused {
    Busy,
    Poisoned,
}

impl Jobs {
    /// Starts `work` on its own thread, unless [`MAX_RUNNING_JOBS`] are running. `work` is
    /// told how many records it has read so far through the counter it is given.
    pub(crate) fn start(
        &self,
        kind: JobKind,
        label: String,
        started_by: String,
        now: Instant,
        total: u64,
        work: impl FnOnce(&AtomicU64) -> Result<JobResult, String> + Send + 'static,
    ) -> Result<Arc<Job>, StartRefused> {
        let job = {
            let mut table = self.table.lock().map_err(|_| StartRefused::Poisoned)?;
            if table.jobs.iter().filter(|j| j.running()).count() >= MAX_RUNNING_JOBS {
                return Err(StartRefused::Busy);
            }
            table.next += 1;
            let job = Arc::new(Job {
                id: table.next,
                kind,
                label,
                started_by,
                started_at: now,
                total,
                progress: AtomicU64::new(0),
                outcome: Mutex::new(None),
                finished_at: Mutex::new(None),
            });
            table.jobs.push_back(job.clone());
            while table.jobs.len() > KEPT_JOBS {
                match table.jobs.iter().position(|j| !j.running()) {
                    Some(oldest_done) => {
                        table.jobs.remove(oldest_done);
                    }
                    None => break,
                }
            }
            if kind == JobKind::Verification {
                table.last_verification = Some(job.clone());
            }
            job
        };
        let running = job.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&running.progress)))
                .unwrap_or_else(|_| Err("the job failed unexpectedly; it was logged".to_string()));
            if let Ok(mut finished) = running.finished_at.lock() {
                *finished = Some(Instant::now());
            }
            if let Ok(mut slot) = running.outcome.lock() {
                *slot = Some(outcome);
            }
        });
        Ok(job)
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.table.lock().ok()?.jobs.iter().find(|j| j.id == id).cloned()
    }

    /// The jobs of `kind`, newest first.
    pub(crate) fn list(&self, kind: JobKind) -> Vec<Arc<Job>> {
        self.table
            .lock()
            .map(|t| t.jobs.iter().rev().filter(|j| j.kind == kind).cloned().collect())
            .unwrap_or_default()
    }

    /// The most recent ledger verification started from the console.
    pub(crate) fn last_verification(&self) -> Option<Arc<Job>> {
        self.table.lock().ok()?.last_verification.clone()
    }

    /// Progress of a job as a fraction of the ledger, for the progress bar.
    pub(crate) fn fraction(job: &Job) -> (u64, u64) {
        let done = job.progress.load(Ordering::Relaxed);
        (done.min(job.total.max(done)), job.total.max(done).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_than_the_limit_run_at_once_and_a_finished_one_frees_a_place() {
        let jobs = Jobs::default();
        let gate = Arc::new(std::sync::Barrier::new(MAX_RUNNING_JOBS + 1));
        let mut started = Vec::new();
        for _ in 0..MAX_RUNNING_JOBS {
            let gate = gate.clone();
            let job = jobs.start(
                JobKind::Audit,
                "a".into(),
                "k".into(),
                Instant::from_secs(0),
                10,
                move |progress| {
                    progress.store(5, Ordering::Relaxed);
                    gate.wait();
                    Err("stopped".into())
                },
            );
            started.push(job.ok());
        }
        assert!(started.iter().all(Option::is_some));
        let refused =
            jobs.start(JobKind::Audit, "b".into(), "k".into(), Instant::from_secs(0), 0, |_| Err("x".into()));
        assert_eq!(refused.err(), Some(StartRefused::Busy));
        gate.wait();
        for job in started.into_iter().flatten() {
            while job.running() {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            assert_eq!(Jobs::fraction(&job), (5, 10));
        }
        assert!(jobs
            .start(JobKind::Audit, "c".into(), "k".into(), Instant::from_secs(0), 0, |_| Err("x".into()))
            .is_ok());
    }
}
