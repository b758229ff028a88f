//! The schema: versioned migrations (`migrations/V*__*.sql`, applied by refinery on open), and
//! adopting a store written before migrations were versioned.
//!
//! Opening refuses, changing nothing, a store whose schema is newer than this binary knows.

use rusqlite::Connection;

use consentry_store::{SchemaVersions, StoreError, StoreResult};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The table refinery keeps its record of applied migrations in.
const HISTORY_TABLE: &str = "refinery_schema_history";

/// What a key from before keys recorded their maker is said to have been made by.
pub const UNRECORDED_ORIGIN: &str = "unrecorded (made before consentry recorded who makes keys)";

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// Brings the store up to the newest schema this binary knows, or refuses (changing nothing)
/// when it is newer.
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let failed =
        |e: &dyn std::fmt::Display| StoreError::Backend(format!("cannot migrate the store's schema: {e}"));
    let applied = applied_version(conn).map_err(|e| failed(&e))?;
    let latest = latest_version();
    if applied.is_some_and(|applied| applied > latest) {
        return Err(StoreError::Backend(format!(
            "the store's schema is version {}, newer than this consentry knows (version {latest}); \
             run a consentry at least as new as the one that last opened it",
            applied.unwrap_or_default()
        )));
    }
    if applied.is_none() {
        columns_before_versioning(conn).map_err(|e| failed(&e))?;
    }
    // Two processes opening a new file at once (two nodes starting together) both try the
    // same migration; the one that loses fails on the history's unique version, its
    // transaction rolled back. It tries again, finding the winner's work applied.
    let mut attempts = 0;
    loop {
        match embedded::migrations::runner().set_abort_missing(true).run(conn) {
            Ok(_) => return Ok(()),
            Err(_) if attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * attempts));
            }
            Err(e) => return Err(failed(&e)),
        }
    }
}

/// The database's schema version now, and the newest this binary knows.
pub(crate) fn versions(conn: &Connection) -> rusqlite::Result<SchemaVersions> {
    Ok(SchemaVersions { applied: applied_version(conn)?.unwrap_or(0), known: latest_version() })
}

/// The newest version recorded as applied; `None` for a store from before versioned migrations
/// (or a new one).
fn applied_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_history: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([HISTORY_TABLE])?;
    if !has_history {
        return Ok(None);
    }
    conn.query_row(&format!("SELECT MAX(version) FROM {HISTORY_TABLE}"), [], |r| r.get(0))
}

/// A store from before versioned migrations may predate keys recording who made them: its
/// operator keys gain those columns (and `expires_at`), and its keys are marked as made on the
/// server by an unrecorded command. After this the store is exactly version 1.
fn columns_before_versioning(conn: &mut Connection) -> rusqlite::Result<()> {
    let conn = conn.transaction()?;
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('operator_keys')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if columns.is_empty() {
        return Ok(()); // a new store: version 1 creates the table
    }
    let mut added = false;
    for (column, kind) in [
        ("created_by_key", "TEXT"),
        ("created_by_command", "TEXT"),
        ("created_by_user", "TEXT"),
        ("expires_at", "INTEGER"),
    ] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE operator_keys ADD COLUMN {column} {kind}"))?;
            added = true;
        }
    }
    if added {
        conn.execute(
            "UPDATE operator_keys SET created_by_command = ?1, created_by_user = 'unknown'
             WHERE created_by_key IS NULL AND created_by_command IS NULL",
            [UNRECORDED_ORIGIN],
        )?;
    }
    conn.commit()
}
