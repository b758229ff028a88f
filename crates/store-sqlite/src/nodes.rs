//! Several nodes on one store: the shared server secrets, and leases on webhook events and on
//! periodic jobs, so that each event is delivered by one node at a time and each job runs once
//! per period. Claims run in `BEGIN IMMEDIATE` transactions: on a file several processes open,
//! the check and the take are one step.

use consentry_store::{
    DeliveryStatus, Notification, OutboxDepth, SecretPurpose, ServerSecret, StoreError, StoreResult,
};
use consentry_types::Instant;
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use crate::outbox::{notification_row, NOTIFICATION_COLUMNS};
use crate::sql::{backend, corrupt};
use crate::SqliteStore;

impl SqliteStore {
    /// A write transaction that takes the write lock at once.
    fn write_now<T>(&self, body: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let value = body(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }
}

pub(crate) fn server_secrets(store: &SqliteStore) -> StoreResult<Vec<ServerSecret>> {
    store.read(|c| {
        c.prepare_cached(
            "SELECT purpose, generation, material, created_at, previous_until FROM server_secrets
             ORDER BY purpose, generation",
        )?
        .query_map([], |row| {
            let purpose: String = row.get(0)?;
            let material: Vec<u8> = row.get(2)?;
            Ok(ServerSecret {
                purpose: SecretPurpose::parse(&purpose).ok_or_else(|| corrupt("secret purpose", &purpose))?,
                generation: row.get(1)?,
                material: material.try_into().map_err(|_| corrupt("server secret", "(not 32 bytes)"))?,
                created_at: Instant::from_millis(row.get(3)?),
                previous_until: Instant::from_millis(row.get(4)?),
            })
        })?
        .collect()
    })
}

pub(crate) fn add_server_secret(store: &SqliteStore, secret: &ServerSecret) -> StoreResult<bool> {
    store.write_now(|tx| {
        let added = tx
            .execute(
                "INSERT INTO server_secrets (purpose, generation, material, created_at, previous_until)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (purpose, generation) DO NOTHING",
                params![
                    secret.purpose.as_str(),
                    secret.generation,
                    secret.material.as_slice(),
                    secret.created_at.millis(),
                    secret.previous_until.millis()
                ],
            )
            .map_err(backend)?;
        Ok(added == 1)
    })
}

pub(crate) fn claim_due_notifications(
    store: &SqliteStore,
    node: &str,
    now: Instant,
    lease_until: Instant,
    limit: usize,
    per_developer: usize,
) -> StoreResult<Vec<Notification>> {
    store.write_now(|tx| {
        tx.execute("DELETE FROM notification_leases WHERE lease_until <= ?1", [now.millis()]).map_err(backend)?;
        let claimed: Vec<Notification> = tx
            .prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM (
                   SELECT *, ROW_NUMBER() OVER (PARTITION BY developer ORDER BY id) AS place
                   FROM notifications
                   WHERE status = 'pending' AND next_attempt_at <= ?1
                     AND developer NOT IN (SELECT developer FROM notification_leases)
                 ) WHERE place <= ?2 ORDER BY next_attempt_at, id LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![now.millis(), per_developer.max(1) as i64, limit as i64], notification_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(backend)?;
        for notification in &claimed {
            tx.prepare_cached(
                "INSERT INTO notification_leases (notification, developer, node, lease_until) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    notification.id as i64,
                    notification.developer.as_str(),
                    node,
                    lease_until.millis()
                ])
            })
            .map_err(backend)?;
        }
        Ok(claimed)
    })
}

pub(crate) fn record_claimed_delivery(
    store: &SqliteStore,
    id: u64,
    node: &str,
    status: DeliveryStatus,
    next_attempt_at: Instant,
    error: Option<&str>,
) -> StoreResult<bool> {
    store.write_now(|tx| {
        // A lease row still there is this node's to end: claims delete expired leases in the
        // same transaction as they take the notification over.
        let released = tx
            .execute("DELETE FROM notification_leases WHERE notification = ?1 AND node = ?2", params![id as i64, node])
            .map_err(backend)?;
        if released == 0 {
            return Ok(false);
        }
        let changed = tx
            .execute(
                "UPDATE notifications SET attempts = attempts + 1, status = ?2, next_attempt_at = ?3, last_error = ?4
                 WHERE id = ?1 AND status = 'pending'",
                params![id as i64, status.as_str(), next_attempt_at.millis(), error],
            )
            .map_err(backend)?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("pending notification {id}")));
        }
        Ok(true)
    })
}

pub(crate) fn release_notifications(store: &SqliteStore, node: &str, ids: &[u64]) -> StoreResult<()> {
    store.write_now(|tx| {
        for id in ids {
            tx.prepare_cached("DELETE FROM notification_leases WHERE notification = ?1 AND node = ?2")
                .and_then(|mut s| s.execute(params![*id as i64, node]))
                .map_err(backend)?;
        }
        Ok(())
    })
}

pub(crate) fn outbox_depth(store: &SqliteStore) -> StoreResult<OutboxDepth> {
    store.read(|c| {
        let mut depth = OutboxDepth::default();
        let mut statement = c.prepare_cached("SELECT status, COUNT(*) FROM notifications GROUP BY status")?;
        let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            match row? {
                (status, n) if status == "pending" => depth.pending = n as u64,
                (status, n) if status == "dead" => depth.dead = n as u64,
                _ => {}
            }
        }
        Ok(depth)
    })
}

pub(crate) fn claim_job(
    store: &SqliteStore,
    job: &str,
    node: &str,
    now: Instant,
    lease_until: Instant,
    first_due: Instant,
) -> StoreResult<bool> {
    store.write_now(|tx| {
        tx.execute(
            "INSERT INTO job_leases (job, node, lease_until, next_due) VALUES (?1, NULL, 0, ?2)
             ON CONFLICT (job) DO NOTHING",
            params![job, first_due.millis()],
        )
        .map_err(backend)?;
        let taken = tx
            .execute(
                "UPDATE job_leases SET node = ?2, lease_until = ?3
                 WHERE job = ?1 AND next_due <= ?4 AND (node IS NULL OR lease_until <= ?4)",
                params![job, node, lease_until.millis(), now.millis()],
            )
            .map_err(backend)?;
        Ok(taken == 1)
    })
}

pub(crate) fn finish_job(store: &SqliteStore, job: &str, node: &str, next_due: Instant) -> StoreResult<bool> {
    store.write_now(|tx| {
        let holder: Option<Option<String>> = tx
            .query_row("SELECT node FROM job_leases WHERE job = ?1", [job], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        if holder.flatten().as_deref() != Some(node) {
            return Ok(false);
        }
        tx.execute(
            "UPDATE job_leases SET node = NULL, lease_until = 0, next_due = ?2 WHERE job = ?1",
            params![job, next_due.millis()],
        )
        .map_err(backend)?;
        Ok(true)
    })
}
