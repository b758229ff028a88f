//! What every module shares: connections with their prepared statements, error mapping,
//! column parsing, existence and ordering checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use consentry_store::StoreError;
use consentry_types::{AppStatus, Instant, OperatorRole, Role};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement, Transaction};

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A pooled connection and the statements prepared on it (each prepared once per connection,
/// so a query costs one round trip).
pub struct Connection {
    pub(crate) client: Client,
    pub(crate) statements: HashMap<&'static str, Statement>,
    /// Set when the connection must not go back to the pool (e.g. it may still hold a lock).
    pub(crate) broken: bool,
    /// Round trips made on this store's connections (shared by all of them).
    pub(crate) round_trips: Arc<AtomicU64>,
}

/// Counts one round trip to the database.
pub(crate) fn count(round_trips: &AtomicU64) {
    round_trips.fetch_add(1, Ordering::Relaxed);
}

/// What a query may fail with inside a store function: the database's error (which the caller
/// may retry, e.g. a serialization failure) or the store's own refusal.
#[derive(Debug)]
pub(crate) enum Failure {
    Database(postgres::Error),
    Store(StoreError),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Failure {
        Failure::Database(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Store(error)
    }
}

pub(crate) type DbResult<T> = Result<T, Failure>;

impl Failure {
    /// Whether running the transaction again may succeed (it lost a race with another).
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Failure::Database(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
    }

    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Failure::Store(error) => error,
            Failure::Database(error) => backend(&error),
        }
    }
}

/// The store's error for a database error: a missing referenced row is `NotFound`, any other
/// broken constraint a `Conflict`, everything else a backend failure (for logs).
pub(crate) fn backend(error: &postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let detail = match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        };
        if db.code() == &SqlState::FOREIGN_KEY_VIOLATION {
            return StoreError::NotFound(format!("a referenced entity ({detail})"));
        }
        if db.code().code().starts_with("23") {
            return StoreError::Conflict(detail);
        }
        return StoreError::Backend(format!("{}: {detail}", db.code().code()));
    }
    StoreError::Backend(error.to_string())
}

/// A stored value that does not parse: the database holds something consentry never writes.
pub(crate) fn corrupt(what: &str, text: &str) -> Failure {
    Failure::Store(StoreError::Backend(format!("stored {what} {text:?} is not valid")))
}

/// Parses a text column with `parse`, or says which stored value is not valid.
pub(crate) fn parsed<T, E>(
    row: &Row,
    index: usize,
    parse: impl Fn(&str) -> Result<T, E>,
    what: &str,
) -> DbResult<T> {
    let text: String = row.try_get(index)?;
    parse(&text).map_err(|_| corrupt(what, &text))
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

pub(crate) fn instant(row: &Row, index: usize) -> DbResult<Instant> {
    Ok(Instant::from_millis(row.try_get(index)?))
}

pub(crate) fn optional_instant(row: &Row, index: usize) -> DbResult<Option<Instant>> {
    Ok(row.try_get::<_, Option<i64>>(index)?.map(Instant::from_millis))
}

/// A policy version as the database keeps it (BIGINT).
pub(crate) fn version_of(row: &Row, index: usize) -> DbResult<u32> {
    let version: i64 = row.try_get(index)?;
    u32::try_from(version).map_err(|_| corrupt("policy version", &version.to_string()))
}

/// Queries through a connection's prepared statements, in or out of a transaction.
pub(crate) trait Db {
    fn statement(&mut self, sql: &'static str) -> DbResult<Statement>;
    fn query(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<Vec<Row>>;
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<u64>;

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<Row> {
        self.query_opt(sql, params)?
            .ok_or_else(|| Failure::Store(StoreError::Backend(format!("no row from {sql}"))))
    }
}

fn prepared(
    statements: &mut HashMap<&'static str, Statement>,
    round_trips: &AtomicU64,
    sql: &'static str,
    prepare: impl FnOnce() -> Result<Statement, postgres::Error>,
) -> DbResult<Statement> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    count(round_trips);
    let statement = prepare()?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

impl Db for Connection {
    fn statement(&mut self, sql: &'static str) -> DbResult<Statement> {
        let client = &mut self.client;
        prepared(&mut self.statements, &self.round_trips, sql, || client.prepare(sql))
    }
    fn query(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<Vec<Row>> {
        let statement = self.statement(sql)?;
        count(&self.round_trips);
        Ok(self.client.query(&statement, params)?)
    }
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<u64> {
        let statement = self.statement(sql)?;
        count(&self.round_trips);
        Ok(self.client.execute(&statement, params)?)
    }
}

/// A transaction on a pooled connection (BEGIN and COMMIT are a round trip each).
pub(crate) struct Tx<'a> {
    pub(crate) tx: Transaction<'a>,
    pub(crate) statements: &'a mut HashMap<&'static str, Statement>,
    pub(crate) round_trips: &'a AtomicU64,
}

impl Db for Tx<'_> {
    fn statement(&mut self, sql: &'static str) -> DbResult<Statement> {
        let tx = &mut self.tx;
        prepared(self.statements, self.round_trips, sql, || tx.prepare(sql))
    }
    fn query(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<Vec<Row>> {
        let statement = self.statement(sql)?;
        count(self.round_trips);
        Ok(self.tx.query(&statement, params)?)
    }
    fn execute(&mut self, sql: &'static str, params: Params<'_>) -> DbResult<u64> {
        let statement = self.statement(sql)?;
        count(self.round_trips);
        Ok(self.tx.execute(&statement, params)?)
    }
}

/// Runs `body` in a transaction of `isolation` on `connection`, committing if it succeeds.
pub(crate) fn in_transaction<T>(
    connection: &mut Connection,
    isolation: postgres::IsolationLevel,
    read_only: bool,
    body: impl FnOnce(&mut dyn Db) -> DbResult<T>,
) -> DbResult<T> {
    let Connection { client, statements, round_trips, .. } = connection;
    count(round_trips);
    let tx = client.build_transaction().isolation_level(isolation).read_only(read_only).start()?;
    let mut tx = Tx { tx, statements, round_trips };
    let value = body(&mut tx)?;
    count(tx.round_trips);
    tx.tx.commit()?;
    Ok(value)
}

/// Fails with `NotFound` unless `sql` (one `$1` parameter) finds a row.
pub(crate) fn require(db: &mut dyn Db, sql: &'static str, what: &str, id: &str) -> DbResult<()> {
    if db.query_opt(sql, &[&id])?.is_some() {
        Ok(())
    } else {
        Err(Failure::Store(StoreError::NotFound(format!("{what} {id:?}"))))
    }
}

/// History is appended in time order: a change may not take effect before the last one of
/// the same fact (`sql` gives that last instant).
pub(crate) fn require_in_order(
    db: &mut dyn Db,
    sql: &'static str,
    key: Params<'_>,
    at: Instant,
) -> DbResult<()> {
    let last: Option<i64> = db.query_one(sql, key)?.try_get(0)?;
    match last {
        Some(last) if last > at.millis() => Err(Failure::Store(StoreError::Conflict(format!(
            "a change at {at} would precede the last recorded change at {}",
            Instant::from_millis(last)
        )))),
        _ => Ok(()),
    }
}
