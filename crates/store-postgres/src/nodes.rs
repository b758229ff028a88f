//! Several nodes on one database: the shared server secrets, and leases on webhook events and
//! on periodic jobs, so that each event is delivered by one node at a time and each job runs
//! once per period. These run READ COMMITTED with locks rather than SERIALIZABLE with retries:
//! - a claim of webhook events takes, with `pg_try_advisory_xact_lock`, one lock per developer
//!   whose events are due (skipping developers another node is claiming right now), then reads
//!   that developer's leases afresh: every lease of a developer is written under its lock, so
//!   the check and the take are one step, and two nodes claim different developers at once;
//! - recording or giving back a claim deletes the node's own lease row (its row lock orders it
//!   against a claim taking an expired lease over: one of them finds the row gone);
//! - a job's lease is one row changed by one `UPDATE … WHERE` (a concurrent one waits for the
//!   row and checks its condition again on what the first wrote).

use consentry_store::{DeliveryStatus, Notification, OutboxDepth, SecretPurpose, ServerSecret};
use consentry_types::Instant;

use crate::facts::limit_of;
use crate::outbox::notification_row;
use crate::sql::{corrupt, instant, Db, DbResult};

/// The first half of the advisory lock key of a developer's outbox claims ("outb").
const OUTBOX_LOCKS: i32 = 0x6f75_7462;

pub(crate) fn server_secrets(db: &mut dyn Db) -> DbResult<Vec<ServerSecret>> {
    db.query(
        "SELECT purpose, generation, material, created_at, previous_until FROM server_secrets
         ORDER BY purpose, generation",
        &[],
    )?
    .iter()
    .map(|row| {
        let purpose: String = row.try_get(0)?;
        let generation: i64 = row.try_get(1)?;
        let material: Vec<u8> = row.try_get(2)?;
        Ok(ServerSecret {
            purpose: SecretPurpose::parse(&purpose).ok_or_else(|| corrupt("secret purpose", &purpose))?,
            generation: u32::try_from(generation)
                .map_err(|_| corrupt("secret generation", &generation.to_string()))?,
            material: material.try_into().map_err(|_| corrupt("server secret", "(not 32 bytes)"))?,
            created_at: instant(row, 3)?,
            previous_until: instant(row, 4)?,
        })
    })
    .collect()
}

pub(crate) fn add_server_secret(db: &mut dyn Db, secret: &ServerSecret) -> DbResult<bool> {
    let added = db.execute(
        "INSERT INTO server_secrets (purpose, generation, material, created_at, previous_until)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (purpose, generation) DO NOTHING",
        &[
            &secret.purpose.as_str(),
            &i64::from(secret.generation),
            &secret.material.as_slice(),
            &secret.created_at.millis(),
            &secret.previous_until.millis(),
        ],
    )?;
    Ok(added == 1)
}

pub(crate) fn claim_due_notifications(
    db: &mut dyn Db,
    node: &str,
    now: Instant,
    lease_until: Instant,
    limit: usize,
    per_developer: usize,
) -> DbResult<Vec<Notification>> {
    // The developers with the oldest due events, each locked for this transaction unless
    // another node is claiming its events now (then it is skipped, not waited for).
    let developers: Vec<String> = db
        .query(
            "SELECT developer FROM (
               SELECT developer, MIN(next_attempt_at) AS due, MIN(id) AS first FROM notifications
               WHERE status = 'pending' AND next_attempt_at <= $1
               GROUP BY developer ORDER BY due, first LIMIT $2
             ) AS due_developers
             WHERE pg_try_advisory_xact_lock($3, hashtext(developer))",
            &[&now.millis(), &limit_of(limit), &OUTBOX_LOCKS],
        )?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    if developers.is_empty() {
        return Ok(Vec::new());
    }
    // Under their locks, each statement reads afresh: leases that ran out go, and developers
    // with a lease still running are left to its holder.
    db.execute(
        "DELETE FROM notification_leases WHERE developer = ANY($1) AND lease_until <= $2",
        &[&developers, &now.millis()],
    )?;
    let per_developer = i64::try_from(per_developer.max(1)).unwrap_or(i64::MAX);
    let claimed: Vec<Notification> = db
        .query(
            "SELECT id, developer, event, payload, created_at, attempts, next_attempt_at, status, last_error
             FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY developer ORDER BY id) AS place
               FROM notifications
               WHERE status = 'pending' AND next_attempt_at <= $1 AND developer = ANY($2)
                 AND developer NOT IN (SELECT developer FROM notification_leases WHERE developer = ANY($2))
             ) AS due WHERE place <= $3 ORDER BY next_attempt_at, id LIMIT $4",
            &[&now.millis(), &developers, &per_developer, &limit_of(limit)],
        )?
        .iter()
        .map(notification_row)
        .collect::<DbResult<_>>()?;
    let ids: Vec<i64> = claimed.iter().filter_map(|n| i64::try_from(n.id).ok()).collect();
    let owners: Vec<&str> = claimed.iter().map(|n| n.developer.as_str()).collect();
    db.execute(
        "INSERT INTO notification_leases (notification, developer, node, lease_until)
         SELECT id, developer, $3, $4 FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS claimed(id, developer)",
        &[&ids, &owners, &node, &lease_until.millis()],
    )?;
    Ok(claimed)
}

pub(crate) fn record_claimed_delivery(
    db: &mut dyn Db,
    id: u64,
    node: &str,
    status: DeliveryStatus,
    next_attempt_at: Instant,
    error: Option<&str>,
) -> DbResult<bool> {
    let Ok(key) = i64::try_from(id) else { return Ok(false) };
    // A lease row still there is this node's to end: a claim deletes an expired lease in the
    // same transaction as it takes the notification over.
    let released =
        db.execute("DELETE FROM notification_leases WHERE notification = $1 AND node = $2", &[&key, &node])?;
    if released == 0 {
        return Ok(false);
    }
    crate::outbox::record_delivery(db, id, status, next_attempt_at, error)?;
    Ok(true)
}

pub(crate) fn release_notifications(db: &mut dyn Db, node: &str, ids: &[u64]) -> DbResult<()> {
    let ids: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(*id).ok()).collect();
    db.execute("DELETE FROM notification_leases WHERE notification = ANY($1) AND node = $2", &[&ids, &node])?;
    Ok(())
}

pub(crate) fn outbox_depth(db: &mut dyn Db) -> DbResult<OutboxDepth> {
    let mut depth = OutboxDepth::default();
    for row in db.query("SELECT status, COUNT(*) FROM notifications GROUP BY status", &[])? {
        let status: String = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        let count = u64::try_from(count).map_err(|_| corrupt("notification count", &count.to_string()))?;
        match status.as_str() {
            "pending" => depth.pending = count,
            "dead" => depth.dead = count,
            _ => {}
        }
    }
    Ok(depth)
}

pub(crate) fn claim_job(
    db: &mut dyn Db,
    job: &str,
    node: &str,
    now: Instant,
    lease_until: Instant,
    first_due: Instant,
) -> DbResult<bool> {
    db.execute(
        "INSERT INTO job_leases (job, node, lease_until, next_due) VALUES ($1, NULL, 0, $2)
         ON CONFLICT (job) DO NOTHING",
        &[&job, &first_due.millis()],
    )?;
    let taken = db.execute(
        "UPDATE job_leases SET node = $2, lease_until = $3
         WHERE job = $1 AND next_due <= $4 AND (node IS NULL OR lease_until <= $4)",
        &[&job, &node, &lease_until.millis(), &now.millis()],
    )?;
    Ok(taken == 1)
}

pub(crate) fn finish_job(db: &mut dyn Db, job: &str, node: &str, next_due: Instant) -> DbResult<bool> {
    let finished = db.execute(
        "UPDATE job_leases SET node = NULL, lease_until = 0, next_due = $3 WHERE job = $1 AND node = $2",
        &[&job, &node, &next_due.millis()],
    )?;
    Ok(finished == 1)
}
