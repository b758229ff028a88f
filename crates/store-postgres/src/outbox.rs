//! The webhook outbox: notifications to developers until delivered or dead.

use consentry_store::{DeliveryStatus, Notification, StoreError};
use consentry_types::{DeveloperId, Instant};
use postgres::Row;

use crate::facts::limit_of;
use crate::sql::{corrupt, instant, parsed, Db, DbResult, Failure};

pub(crate) fn notification_row(row: &Row) -> DbResult<Notification> {
    let status: String = row.try_get(7)?;
    let status = match status.as_str() {
        "pending" => DeliveryStatus::Pending,
        "delivered" => DeliveryStatus::Delivered,
        "dead" => DeliveryStatus::Dead,
        other => return Err(corrupt("delivery status", other)),
    };
    let id: i64 = row.try_get(0)?;
    let attempts: i64 = row.try_get(5)?;
    Ok(Notification {
        id: u64::try_from(id).map_err(|_| corrupt("notification id", &id.to_string()))?,
        developer: parsed(row, 1, DeveloperId::parse, "developer id")?,
        event: row.try_get(2)?,
        payload: row.try_get(3)?,
        created_at: instant(row, 4)?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts", &attempts.to_string()))?,
        next_attempt_at: instant(row, 6)?,
        status,
        last_error: row.try_get(8)?,
    })
}

pub(crate) fn enqueue_notification(
    db: &mut dyn Db,
    developer: &DeveloperId,
    event: &str,
    payload: &str,
    at: Instant,
) -> DbResult<u64> {
    let id: i64 = db
        .query_one(
            "INSERT INTO notifications (developer, event, payload, created_at, next_attempt_at, status)
             VALUES ($1, $2, $3, $4, $4, 'pending') RETURNING id",
            &[&developer.as_str(), &event, &payload, &at.millis()],
        )?
        .try_get(0)?;
    u64::try_from(id).map_err(|_| corrupt("notification id", &id.to_string()))
}

pub(crate) fn due_notifications(db: &mut dyn Db, now: Instant, limit: usize) -> DbResult<Vec<Notification>> {
    db.query(
        "SELECT id, developer, event, payload, created_at, attempts, next_attempt_at, status, last_error
         FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, id LIMIT $2",
        &[&now.millis(), &limit_of(limit)],
    )?
    .iter()
    .map(notification_row)
    .collect()
}

pub(crate) fn record_delivery(
    db: &mut dyn Db,
    id: u64,
    status: DeliveryStatus,
    next_attempt_at: Instant,
    error: Option<&str>,
) -> DbResult<()> {
    let not_found = || Failure::Store(StoreError::NotFound(format!("pending notification {id}")));
    let key = i64::try_from(id).map_err(|_| not_found())?;
    let changed = db.execute(
        "UPDATE notifications SET attempts = attempts + 1, status = $2, next_attempt_at = $3, last_error = $4
         WHERE id = $1 AND status = 'pending'",
        &[&key, &status.as_str(), &next_attempt_at.millis(), &error],
    )?;
    if changed == 0 {
        return Err(not_found());
    }
    Ok(())
}

pub(crate) fn notifications(db: &mut dyn Db, developer: &DeveloperId) -> DbResult<Vec<Notification>> {
    db.query(
        "SELECT id, developer, event, payload, created_at, attempts, next_attempt_at, status, last_error
         FROM notifications WHERE developer = $1 ORDER BY id",
        &[&developer.as_str()],
    )?
    .iter()
    .map(notification_row)
    .collect()
}
