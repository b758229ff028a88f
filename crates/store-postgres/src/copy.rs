//! Loading a whole store copied from another backend (`consentry store copy`): every table in
//! one transaction with COPY, then the identity sequences moved past the copied ids.

use consentry_store::copy::{Cell, CopySource, CopyTarget, TABLES};
use consentry_store::{StoreError, StoreResult};
use std::io::Write;

use crate::sql::backend;
use crate::PgStore;

/// The tables whose ids or sequence numbers the database assigns, and that column.
const IDENTITIES: [(&str, &str); 13] = [
    ("app_status_history", "seq"),
    ("membership_history", "seq"),
    ("installation_history", "seq"),
    ("consent_history", "seq"),
    ("policy_activations", "seq"),
    ("policy_previews", "seq"),
    ("policy_proofs", "seq"),
    ("policy_waivers", "seq"),
    ("operator_keys", "seq"),
    ("notifications", "id"),
    ("cases", "id"),
    ("case_events", "seq"),
    ("certifications", "seq"),
];

fn known(table: &str) -> StoreResult<&'static str> {
    TABLES.into_iter().find(|t| *t == table).ok_or_else(|| StoreError::NotFound(format!("table {table:?}")))
}

/// A column name as the source gave it, if it is one consentry could have made.
fn column(name: &str) -> StoreResult<&str> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        Ok(name)
    } else {
        Err(StoreError::Backend(format!(
            "the source has a column named {name:?}, which consentry never makes"
        )))
    }
}

/// One value in COPY's text format.
fn copy_text(cell: &Cell, line: &mut Vec<u8>) {
    match cell {
        Cell::Null => line.extend_from_slice(b"\\N"),
        Cell::Integer(n) => line.extend_from_slice(n.to_string().as_bytes()),
        Cell::Bytes(bytes) => {
            // bytea's hex form, its backslash escaped for COPY's text format.
            line.extend_from_slice(b"\\\\x");
            for byte in bytes {
                line.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
        }
        Cell::Text(text) => {
            for byte in text.bytes() {
                match byte {
                    b'\\' => line.extend_from_slice(b"\\\\"),
                    b'\n' => line.extend_from_slice(b"\\n"),
                    b'\r' => line.extend_from_slice(b"\\r"),
                    b'\t' => line.extend_from_slice(b"\\t"),
                    other => line.push(other),
                }
            }
        }
    }
}

impl CopyTarget for PgStore {
    fn count(&self, table: &str) -> StoreResult<u64> {
        let table = known(table)?;
        let mut connection = self.connection()?;
        let count: i64 = connection
            .client
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| backend(&e))?;
        Ok(count.unsigned_abs())
    }

    fn load(&self, source: &dyn CopySource) -> StoreResult<()> {
        let mut connection = self.connection()?;
        let mut tx = connection.client.transaction().map_err(|e| backend(&e))?;
        for table in TABLES {
            let columns = source.columns(table)?;
            let list = columns.iter().map(|c| column(c)).collect::<StoreResult<Vec<_>>>()?.join(", ");
            let mut writer =
                tx.copy_in(&format!("COPY {table} ({list}) FROM STDIN")).map_err(|e| backend(&e))?;
            let mut line = Vec::new();
            let mut failed: Option<String> = None;
            source.rows(table, &mut |cells| {
                line.clear();
                for (i, cell) in cells.iter().enumerate() {
                    if i > 0 {
                        line.push(b'\t');
                    }
                    copy_text(cell, &mut line);
                }
                line.push(b'\n');
                writer.write_all(&line).map_err(|e| {
                    failed = Some(e.to_string());
                    StoreError::Backend(format!("cannot copy into {table}: {e}"))
                })
            })?;
            if let Some(error) = failed {
                return Err(StoreError::Backend(format!("cannot copy into {table}: {error}")));
            }
            writer.finish().map_err(|e| {
                let error = backend(&e);
                StoreError::Backend(format!("cannot copy into {table}: {error}"))
            })?;
        }
        for (table, id) in IDENTITIES {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{id}'), COALESCE(MAX({id}), 0) + 1, false) FROM {table}"
                ),
                &[],
            )
            .map_err(|e| backend(&e))?;
        }
        tx.commit().map_err(|e| backend(&e))
    }
}
