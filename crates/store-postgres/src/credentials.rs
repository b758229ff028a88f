//! Credentials: access tokens and operator keys, known only by hashes.

use consentry_store::{KeyOrigin, OperatorKey, StoreError, TokenRecord};
use consentry_types::{AppId, Instant, OperatorRole};
use postgres::Row;

use crate::sql::{
    corrupt, instant, operator_role_of, optional_instant, parsed, require, Db, DbResult, Failure,
};

pub(crate) fn token_row(row: &Row) -> DbResult<TokenRecord> {
    Ok(TokenRecord {
        hash: row.try_get(0)?,
        app: parsed(row, 1, AppId::parse, "app id")?,
        issued_at: instant(row, 2)?,
        expires_at: instant(row, 3)?,
        revoked_at: optional_instant(row, 4)?,
    })
}

pub(crate) fn key_row(row: &Row) -> DbResult<OperatorKey> {
    let id: String = row.try_get(0)?;
    let by_key: Option<String> = row.try_get(6)?;
    let command: Option<String> = row.try_get(7)?;
    let created_by = match (by_key, command) {
        (Some(parent), _) => KeyOrigin::Key(parent),
        (None, Some(command)) => {
            KeyOrigin::Server { command, os_user: row.try_get::<_, Option<String>>(8)?.unwrap_or_default() }
        }
        (None, None) => return Err(corrupt("maker of operator key", &id)),
    };
    Ok(OperatorKey {
        hash: row.try_get(1)?,
        name: row.try_get(2)?,
        role: parsed(row, 3, operator_role_of, "operator role")?,
        created_at: instant(row, 4)?,
        revoked_at: optional_instant(row, 5)?,
        created_by,
        expires_at: optional_instant(row, 9)?,
        id,
    })
}

pub(crate) fn put_token(db: &mut dyn Db, token: &TokenRecord) -> DbResult<()> {
    db.execute(
        "INSERT INTO tokens (hash, app, issued_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &token.hash,
            &token.app.as_str(),
            &token.issued_at.millis(),
            &token.expires_at.millis(),
            &token.revoked_at.map(Instant::millis),
        ],
    )?;
    Ok(())
}

pub(crate) fn token(db: &mut dyn Db, hash: &str) -> DbResult<Option<TokenRecord>> {
    db.query_opt("SELECT hash, app, issued_at, expires_at, revoked_at FROM tokens WHERE hash = $1", &[&hash])?
        .map(|row| token_row(&row))
        .transpose()
}

pub(crate) fn revoke_token(db: &mut dyn Db, hash: &str, at: Instant) -> DbResult<bool> {
    let changed = db.execute(
        "UPDATE tokens SET revoked_at = $2 WHERE hash = $1 AND revoked_at IS NULL",
        &[&hash, &at.millis()],
    )?;
    Ok(changed > 0)
}

pub(crate) fn revoke_app_tokens(db: &mut dyn Db, app: &AppId, at: Instant) -> DbResult<u64> {
    db.execute(
        "UPDATE tokens SET revoked_at = $2 WHERE app = $1 AND revoked_at IS NULL",
        &[&app.as_str(), &at.millis()],
    )
}

pub(crate) fn put_operator_key(db: &mut dyn Db, key: &OperatorKey) -> DbResult<()> {
    let (by_key, command, user) = match &key.created_by {
        KeyOrigin::Key(parent) => {
            require(db, "SELECT 1 FROM operator_keys WHERE id = $1", "operator key", parent)?;
            (Some(parent.as_str()), None, None)
        }
        KeyOrigin::Server { command, os_user } => (None, Some(command.as_str()), Some(os_user.as_str())),
    };
    db.execute(
        "INSERT INTO operator_keys (id, hash, name, role, created_at, revoked_at, created_by_key,
           created_by_command, created_by_user, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &key.id,
            &key.hash,
            &key.name,
            &key.role.as_str(),
            &key.created_at.millis(),
            &key.revoked_at.map(Instant::millis),
            &by_key,
            &command,
            &user,
            &key.expires_at.map(Instant::millis),
        ],
    )?;
    Ok(())
}

pub(crate) fn operator_key(db: &mut dyn Db, id: &str) -> DbResult<Option<OperatorKey>> {
    db.query_opt(
        "SELECT id, hash, name, role, created_at, revoked_at, created_by_key, created_by_command,
           created_by_user, expires_at FROM operator_keys WHERE id = $1",
        &[&id],
    )?
    .map(|row| key_row(&row))
    .transpose()
}

pub(crate) fn operator_keys(db: &mut dyn Db) -> DbResult<Vec<OperatorKey>> {
    db.query(
        "SELECT id, hash, name, role, created_at, revoked_at, created_by_key, created_by_command,
           created_by_user, expires_at FROM operator_keys ORDER BY created_at, seq",
        &[],
    )?
    .iter()
    .map(key_row)
    .collect()
}

pub(crate) fn operator_key_count(db: &mut dyn Db) -> DbResult<u64> {
    let count: i64 = db.query_one("SELECT COUNT(*) FROM operator_keys", &[])?.try_get(0)?;
    Ok(count.unsigned_abs())
}

/// Under SERIALIZABLE (every write is), two revocations that each leave the other key as the
/// last live officer key cannot both commit: the second is retried and then refused.
pub(crate) fn revoke_operator_key(
    db: &mut dyn Db,
    id: &str,
    at: Instant,
    keep_a_live_officer: bool,
) -> DbResult<bool> {
    let target = operator_key(db, id)?
        .ok_or_else(|| Failure::Store(StoreError::NotFound(format!("operator key {id:?}"))))?;
    if target.revoked_at.is_some() {
        return Ok(false);
    }
    if keep_a_live_officer && target.role == OperatorRole::PrivacyOfficer && target.is_live(at) {
        let others: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM operator_keys WHERE role = $1 AND id <> $2
                   AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
                &[&OperatorRole::PrivacyOfficer.as_str(), &id, &at.millis()],
            )?
            .try_get(0)?;
        if others == 0 {
            return Err(Failure::Store(StoreError::Conflict(format!(
                "operator key {id:?} is the last live privacy-officer key"
            ))));
        }
    }
    db.execute(
        "UPDATE operator_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        &[&id, &at.millis()],
    )?;
    Ok(true)
}
