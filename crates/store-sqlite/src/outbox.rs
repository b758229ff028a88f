//! The webhook outbox: notifications to developers until delivered or dead.

use consentry_store::{DeliveryStatus, Notification, StoreError, StoreResult};
use consentry_types::{DeveloperId, Instant};
use rusqlite::{params, Connection, Transaction};

use crate::sql::{backend, corrupt};

pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, developer, event, payload, created_at, attempts, next_attempt_at, status, last_error";

pub(crate) fn notification_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let status: String = row.get(7)?;
    let status = match status.as_str() {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "dead" => DeliveryStatus::Dead,
        other => return Err(corrupt("delivery status", other)),
    };
    Ok(Notification {
        id: row.get::<_, i64>(0)? as u64,
        developer: parse_column!(row, 1, DeveloperId::parse, "developer id"),
        event: row.get(2)?,
        payload: row.get(3)?,
        created_at: Instant::from_millis(row.get(4)?),
        attempts: row.get(5)?,
        next_attempt_at: Instant::from_millis(row.get(6)?),
        status,
        last_error: row.get(8)?,
    })
}

pub(crate) fn enqueue_notification(
    tx: &Transaction<'_>,
    developer: &DeveloperId,
    event: &str,
    payload: &str,
    at: Instant,
) -> StoreResult<u64> {
    tx.prepare_cached(
        "INSERT INTO notifications (developer, event, payload, created_at, next_attempt_at, status)
         VALUES (?1, ?2, ?3, ?4, ?4, 'pending')",
    )
    .and_then(|mut s| s.execute(params![developer.as_str(), event, payload, at.millis()]))
    .map_err(backend)?;
    Ok(tx.last_insert_rowid() as u64)
}

pub(crate) fn due_notifications(
    c: &Connection,
    now: Instant,
    limit: usize,
) -> rusqlite::Result<Vec<Notification>> {
    c.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE status = 'pending' AND next_attempt_at <= ?1
         ORDER BY next_attempt_at, id LIMIT ?2"
    ))?
    .query_map(params![now.millis(), limit as i64], notification_row)?
    .collect()
}

/// A dead notification pending again, due at `at`, its attempts and last error kept.
pub(crate) fn retry_notification(tx: &Transaction<'_>, id: u64, at: Instant) -> StoreResult<()> {
    let changed = tx
        .prepare_cached(
            "UPDATE notifications SET status = 'pending', next_attempt_at = ?2 WHERE id = ?1 AND status = 'dead'",
        )
        .and_then(|mut s| s.execute(params![id as i64, at.millis()]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("dead notification {id}")));
    }
    Ok(())
}

pub(crate) fn record_delivery(
    tx: &Transaction<'_>,
    id: u64,
    status: DeliveryStatus,
    next_attempt_at: Instant,
    error: Option<&str>,
) -> StoreResult<()> {
    let changed = tx
        .prepare_cached(
            "UPDATE notifications SET attempts = attempts + 1, status = ?2, next_attempt_at = ?3, last_error = ?4
             WHERE id = ?1 AND status = 'pending'",
        )
        .and_then(|mut s| s.execute(params![id as i64, status.as_str(), next_attempt_at.millis(), error]))
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("pending notification {id}")));
    }
    Ok(())
}

pub(crate) fn notifications(c: &Connection, developer: &DeveloperId) -> rusqlite::Result<Vec<Notification>> {
    c.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE developer = ?1 ORDER BY id"
    ))?
    .query_map([developer.as_str()], notification_row)?
    .collect()
}
