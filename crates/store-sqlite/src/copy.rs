//! Reading every table as it is, for `consentry store copy` to another backend.

use consentry_store::copy::{Cell, CopySource, TABLES};
use consentry_store::{StoreError, StoreResult};
use rusqlite::types::ValueRef;

use crate::sql::backend;
use crate::SqliteStore;

fn known(table: &str) -> StoreResult<&'static str> {
    TABLES.into_iter().find(|t| *t == table).ok_or_else(|| StoreError::NotFound(format!("table {table:?}")))
}

impl CopySource for SqliteStore {
    fn columns(&self, table: &str) -> StoreResult<Vec<String>> {
        let table = known(table)?;
        self.read(|c| {
            c.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
                .query_map([table], |r| r.get(0))?
                .collect()
        })
    }

    fn rows(&self, table: &str, row: &mut dyn FnMut(&[Cell]) -> StoreResult<()>) -> StoreResult<()> {
        let table = known(table)?;
        let columns = self.columns(table)?;
        let list = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let conn = self.reader()?;
        // In the order the rows were written (rowid; tables without one by primary key).
        let order =
            if matches!(table, "memberships" | "installations" | "consents") { "1, 2" } else { "rowid" };
        let mut statement =
            conn.prepare(&format!("SELECT {list} FROM {table} ORDER BY {order}")).map_err(backend)?;
        let mut rows = statement.query([]).map_err(backend)?;
        let mut cells = Vec::with_capacity(columns.len());
        while let Some(stored) = rows.next().map_err(backend)? {
            cells.clear();
            for index in 0..columns.len() {
                cells.push(match stored.get_ref(index).map_err(backend)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(n) => Cell::Integer(n),
                    ValueRef::Text(text) => Cell::Text(String::from_utf8_lossy(text).into_owned()),
                    ValueRef::Blob(bytes) => Cell::Bytes(bytes.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(StoreError::Backend(format!(
                            "table {table} holds a value of a kind consentry never writes (column {})",
                            columns.get(index).map_or("?", String::as_str)
                        )))
                    }
                });
            }
            row(&cells)?;
        }
        Ok(())
    }

    fn count(&self, table: &str) -> StoreResult<u64> {
        let table = known(table)?;
        self.read(|c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)))
    }
}
