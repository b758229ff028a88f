//! Credentials: access tokens and operator keys, known only by hashes.

use consentry_store::{KeyOrigin, OperatorKey, StoreError, StoreResult, TokenRecord};
use consentry_types::{AppId, Instant, OperatorRole};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql::{backend, corrupt, operator_role_of, require};

pub(crate) fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        hash: row.get(0)?,
        app: parse_column!(row, 1, AppId::parse, "app id"),
        issued_at: Instant::from_millis(row.get(2)?),
        expires_at: Instant::from_millis(row.get(3)?),
        revoked_at: row.get::<_, Option<i64>>(4)?.map(Instant::from_millis),
    })
}

pub(crate) const KEY_COLUMNS: &str =
    "id, hash, name, role, created_at, revoked_at, created_by_key, created_by_command,
     created_by_user, expires_at";

pub(crate) fn key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OperatorKey> {
    let id: String = row.get(0)?;
    let by_key: Option<String> = row.get(6)?;
    let command: Option<String> = row.get(7)?;
    let created_by = match (by_key, command) {
        (Some(parent), _) => KeyOrigin::Key(parent),
        (None, Some(command)) => {
            KeyOrigin::Server { command, os_user: row.get::<_, Option<String>>(8)?.unwrap_or_default() }
        }
        (None, None) => return Err(corrupt("maker of operator key", &id)),
    };
    Ok(OperatorKey {
        hash: row.get(1)?,
        name: row.get(2)?,
        role: parse_column!(row, 3, operator_role_of, "operator role"),
        created_at: Instant::from_millis(row.get(4)?),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(Instant::from_millis),
        created_by,
        expires_at: row.get::<_, Option<i64>>(9)?.map(Instant::from_millis),
        id,
    })
}

pub(crate) fn put_token(tx: &Transaction<'_>, token: &TokenRecord) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO tokens (hash, app, issued_at, expires_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.hash,
            token.app.as_str(),
            token.issued_at.millis(),
            token.expires_at.millis(),
            token.revoked_at.map(Instant::millis)
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn token(c: &Connection, hash: &str) -> rusqlite::Result<Option<TokenRecord>> {
    c.prepare_cached("SELECT hash, app, issued_at, expires_at, revoked_at FROM tokens WHERE hash = ?1")?
        .query_row([hash], token_row)
        .optional()
}

pub(crate) fn revoke_token(tx: &Transaction<'_>, hash: &str, at: Instant) -> StoreResult<bool> {
    let changed = tx
        .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL")
        .and_then(|mut s| s.execute(params![hash, at.millis()]))
        .map_err(backend)?;
    Ok(changed > 0)
}

pub(crate) fn revoke_app_tokens(tx: &Transaction<'_>, app: &AppId, at: Instant) -> StoreResult<u64> {
    let changed = tx
        .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE app = ?1 AND revoked_at IS NULL")
        .and_then(|mut s| s.execute(params![app.as_str(), at.millis()]))
        .map_err(backend)?;
    Ok(changed as u64)
}

pub(crate) fn put_operator_key(tx: &Transaction<'_>, key: &OperatorKey) -> StoreResult<()> {
    let (by_key, command, user) = match &key.created_by {
        KeyOrigin::Key(parent) => {
            require(tx, "operator_keys", "operator key", parent)?;
            (Some(parent.as_str()), None, None)
        }
        KeyOrigin::Server { command, os_user } => (None, Some(command.as_str()), Some(os_user.as_str())),
    };
    tx.prepare_cached(
        "INSERT INTO operator_keys (id, hash, name, role, created_at, revoked_at, created_by_key,
           created_by_command, created_by_user, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id,
            key.hash,
            key.name,
            key.role.as_str(),
            key.created_at.millis(),
            key.revoked_at.map(Instant::millis),
            by_key,
            command,
            user,
            key.expires_at.map(Instant::millis),
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn operator_key(c: &Connection, id: &str) -> rusqlite::Result<Option<OperatorKey>> {
    c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys WHERE id = ?1"))?
        .query_row([id], key_row)
        .optional()
}

pub(crate) fn operator_keys(c: &Connection) -> rusqlite::Result<Vec<OperatorKey>> {
    c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys ORDER BY created_at, rowid"))?
        .query_map([], key_row)?
        .collect()
}

pub(crate) fn operator_key_count(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row("SELECT COUNT(*) FROM operator_keys", [], |r| r.get(0))
}

pub(crate) fn revoke_operator_key(
    tx: &Transaction<'_>,
    id: &str,
    at: Instant,
    keep_a_live_officer: bool,
) -> StoreResult<bool> {
    let target = tx
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM operator_keys WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], key_row).optional())
        .map_err(backend)?
        .ok_or_else(|| StoreError::NotFound(format!("operator key {id:?}")))?;
    if target.revoked_at.is_some() {
        return Ok(false);
    }
    if keep_a_live_officer && target.role == OperatorRole::PrivacyOfficer && target.is_live(at) {
        let others: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM operator_keys WHERE role = ?1 AND id <> ?2
                   AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)",
                params![OperatorRole::PrivacyOfficer.as_str(), id, at.millis()],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if others == 0 {
            return Err(StoreError::Conflict(format!(
                "operator key {id:?} is the last live privacy-officer key"
            )));
        }
    }
    tx.execute(
        "UPDATE operator_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, at.millis()],
    )
    .map_err(backend)?;
    Ok(true)
}
