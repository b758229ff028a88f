//! Copying a whole store from one backend to another (`consentry store copy`), history
//! included, verified by counting the rows of every table on both sides.
//!
//! Both backends keep the same tables with the same columns (PostgreSQL adds an ordering
//! column to operator keys), so a copy moves rows as they are, ids and history sequence
//! numbers included: the copy is the same store, not a replay of it.

use crate::{StoreError, StoreResult};

/// Every table a store keeps, each after the tables it refers to. Leases on webhook events are
/// not copied: a copy is made with every node stopped, so none is held.
pub const TABLES: [&str; 26] = [
    "members",
    "groups",
    "developers",
    "posts",
    "apps",
    "app_status_history",
    "memberships",
    "membership_history",
    "installations",
    "installation_history",
    "consents",
    "consent_history",
    "policy_versions",
    "policy_approvals",
    "policy_activations",
    "policy_previews",
    "policy_proofs",
    "policy_waivers",
    "tokens",
    "operator_keys",
    "notifications",
    "cases",
    "case_events",
    "certifications",
    "server_secrets",
    "job_leases",
];

/// One stored value, as both backends can hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Integer(i64),
    Text(String),
    /// Bytes (the server secrets).
    Bytes(Vec<u8>),
}

/// A store rows can be copied from.
pub trait CopySource {
    /// The columns of `table`, in the order [`CopySource::rows`] gives them.
    fn columns(&self, table: &str) -> StoreResult<Vec<String>>;
    /// Calls `row` with every row of `table`, in the order they were written.
    fn rows(&self, table: &str, row: &mut dyn FnMut(&[Cell]) -> StoreResult<()>) -> StoreResult<()>;
    fn count(&self, table: &str) -> StoreResult<u64>;
}

/// A store rows can be copied into.
pub trait CopyTarget {
    fn count(&self, table: &str) -> StoreResult<u64>;
    /// Loads every table of [`TABLES`] from `source` in one transaction: all of it or nothing.
    fn load(&self, source: &dyn CopySource) -> StoreResult<()>;
}

/// Copies `from` into the empty store `to` and checks that every table has as many rows on
/// both sides; returns the count per table. Refuses (`Conflict`) a target with any row.
pub fn copy_store(from: &dyn CopySource, to: &dyn CopyTarget) -> StoreResult<Vec<(&'static str, u64)>> {
    for table in TABLES {
        let rows = to.count(table)?;
        if rows > 0 {
            return Err(StoreError::Conflict(format!(
                "the target store is not empty (table {table} has {rows} rows); copy only into a new database"
            )));
        }
    }
    to.load(from)?;
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let (source, target) = (from.count(table)?, to.count(table)?);
        if source != target {
            return Err(StoreError::Conflict(format!(
                "table {table} has {source} rows in the source but {target} in the copy; was the source \
                 written to during the copy? stop every consentry using it and copy into a new database"
            )));
        }
        counts.push((table, target));
    }
    Ok(counts)
}
