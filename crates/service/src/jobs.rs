//! Periodic jobs (case deadlines, case follow-up from the ledger, inactivity expiry, lapsed
//! certifications) run by every node, each period by one: a job lease in the store decides
//! which node runs it ([`consentry_store::Store::claim_job`]); a node that dies mid-run loses
//! the lease when it runs out, and another runs the job.

use consentry_types::Instant;

use crate::{Service, ServiceResult};

/// When and how long a job runs.
#[derive(Debug, Clone, Copy)]
pub struct JobSchedule {
    /// From the end of one run to the next.
    pub every_secs: i64,
    /// How long a run may take before another node may take the job over.
    pub lease_secs: i64,
    /// A job never run before first runs this long after its first sight.
    pub first_after_secs: i64,
}

impl Service {
    /// Runs `body` as `node` if `job` is due and no other node holds it; returns whether it
    /// ran. The next run is due `every_secs` after this one ends, whatever `body` returned.
    pub fn run_job<E>(
        &self,
        job: &str,
        node: &str,
        schedule: JobSchedule,
        body: impl FnOnce() -> Result<(), E>,
    ) -> ServiceResult<Option<Result<(), E>>> {
        let now: Instant = self.clock.now();
        let taken = self.store.claim_job(
            job,
            node,
            now,
            now.plus_secs(schedule.lease_secs),
            now.plus_secs(schedule.first_after_secs),
        )?;
        if !taken {
            return Ok(None);
        }
        let outcome = body();
        self.store.finish_job(job, node, self.clock.now().plus_secs(schedule.every_secs))?;
        Ok(Some(outcome))
    }
}
