//! The schema, and bringing a store written by an earlier version up to it.

use rusqlite::Connection;

pub(crate) const SCHEMA: &str = include_str!("schema.sql");

/// Brings a store written by an earlier version up to this schema, in place: operator keys
/// gain the columns that say who made them and when they expire. Keys from before are marked
/// as made on the server by an unrecorded command.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('operator_keys')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
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
    Ok(())
}

/// What a key from before keys recorded their maker is said to have been made by.
pub const UNRECORDED_ORIGIN: &str = "unrecorded (made before consentry recorded who makes keys)";
