//! What every module shares: error mapping, column parsing, existence and ordering checks.

use consentry_store::{StoreError, StoreResult};
use consentry_types::{AppStatus, Instant, OperatorRole, Role};
use rusqlite::{ErrorCode, Transaction};

pub(crate) fn backend(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &error {
        let detail = message.clone().unwrap_or_else(|| failure.to_string());
        if failure.code == ErrorCode::ConstraintViolation {
            return if detail.contains("FOREIGN KEY") {
                StoreError::NotFound(format!("a referenced entity ({detail})"))
            } else {
                StoreError::Conflict(detail)
            };
        }
    }
    StoreError::Backend(error.to_string())
}

pub(crate) fn corrupt(what: &str, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} {text:?} is not valid").into(),
    )
}

pub(crate) fn role_of(text: &str) -> Result<Role, ()> {
    Role::parse(text).ok_or(())
}

pub(crate) fn status_of(text: &str) -> Result<AppStatus, ()> {
    AppStatus::parse(text).ok_or(())
}

pub(crate) fn operator_role_of(text: &str) -> Result<OperatorRole, ()> {
    OperatorRole::parse(text).ok_or(())
}

pub(crate) fn exists(tx: &Transaction<'_>, sql: &str, id: &str) -> StoreResult<bool> {
    tx.prepare_cached(sql).and_then(|mut s| s.exists([id])).map_err(backend)
}

pub(crate) fn require(tx: &Transaction<'_>, table: &str, what: &str, id: &str) -> StoreResult<()> {
    if exists(tx, &format!("SELECT 1 FROM {table} WHERE id = ?1"), id)? {
        Ok(())
    } else {
        Err(StoreError::NotFound(format!("{what} {id:?}")))
    }
}

/// History is appended in time order: a change may not take effect before the last one of the same fact.
pub(crate) fn require_in_order(
    tx: &Transaction<'_>,
    sql: &str,
    key: [&str; 2],
    at: Instant,
) -> StoreResult<()> {
    let last: Option<i64> =
        tx.prepare_cached(sql).and_then(|mut s| s.query_row(key, |r| r.get(0))).map_err(backend)?;
    match last {
        Some(last) if last > at.millis() => Err(StoreError::Conflict(format!(
            "a change at {at} would precede the last recorded change at {}",
            Instant::from_millis(last)
        ))),
        _ => Ok(()),
    }
}
