//! The schema: versioned migrations (`migrations/V*__*.sql`, applied by refinery on open, one
//! process at a time), and the refusal to serve a schema newer than this binary knows.

use consentry_store::{SchemaVersions, StoreError, StoreResult};
use postgres::Client;

use crate::sql::{backend, Db, DbResult};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock that keeps two processes from migrating at once.
const MIGRATING: i64 = 0x636f_6e73_656e_7472; // "consentr"

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// Brings the database up to the newest schema this binary knows, or refuses (changing
/// nothing) when it is newer.
pub(crate) fn migrate(client: &mut Client) -> StoreResult<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATING]).map_err(|e| backend(&e))?;
    let outcome = migrate_locked(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATING]).map_err(|e| backend(&e));
    outcome.and(unlocked.map(|_| ()))
}

fn migrate_locked(client: &mut Client) -> StoreResult<()> {
    let has_history: bool = client
        .query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|e| backend(&e))?;
    let applied: Option<i64> = if has_history {
        client
            .query_one("SELECT MAX(version)::BIGINT FROM refinery_schema_history", &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| backend(&e))?
    } else {
        None
    };
    let latest = latest_version();
    if let Some(applied) = applied.filter(|applied| *applied > latest) {
        return Err(StoreError::Backend(format!(
            "the store's schema is version {applied}, newer than this consentry knows (version {latest}); \
             run a consentry at least as new as the one that last opened it"
        )));
    }
    embedded::migrations::runner()
        .set_abort_missing(true)
        .run(client)
        .map_err(|e| StoreError::Backend(format!("cannot migrate the store's schema: {e}")))?;
    Ok(())
}

/// The database's schema version now, and the newest this binary knows.
pub(crate) fn versions(db: &mut dyn Db) -> DbResult<SchemaVersions> {
    let applied: Option<i64> =
        db.query_one("SELECT MAX(version)::BIGINT FROM refinery_schema_history", &[])?.try_get(0)?;
    Ok(SchemaVersions { applied: applied.unwrap_or(0), known: latest_version() })
}
