//! The release fence on PostgreSQL: advisory locks order every change of an access fact
//! against the reading of every page, across every process on the database, and the
//! database's clock gives both sides their instants.
//!
//! - A request reads its page with `consentry_read_page`, which takes the SHARED side of the
//!   locks of its scopes (everything, its app, its group) for the length of that one
//!   statement, then reads its facts in a statement that starts after they are held, and takes
//!   its release instant `r` from `clock_timestamp()` (milliseconds, rounded down) while they
//!   are held. If a change holds (or waits for) one of the locks, the request does not wait
//!   holding a connection: it lets go of it and asks again shortly (`PgStore::read_page`).
//! - A change (`PgFence::change`) takes the EXCLUSIVE side of its scope's lock as a session
//!   lock on a connection of its own, which waits for the requests reading in that scope to
//!   finish and keeps new ones out; then it takes its instant `c` = the database's clock in
//!   milliseconds, rounded down, plus one, and waits one millisecond, so that the clock is past
//!   `c` before anyone can read again; the caller writes (on another connection) and commits
//!   with `c`, and dropping the change lets go of the lock.
//!
//! Why that orders them, on one database whose clock does not step backwards: a request that
//! read before the change held its lock released it before the change got it, so its `r` was
//! read before the change read the clock: `r <= floor(t) < c`. A request that reads after the
//! change got its lock only once the change let go, after its write was committed: it sees the
//! change, and reads the clock more than a millisecond after the change read it: `r >= c`, so
//! its record is at or after the change, and `facts_as_of(r)` (every change with `at <= r`)
//! includes it. Every instant of both sides comes from the one database clock; the nodes'
//! clocks do not enter into it.

use std::time::Duration;

use consentry_store::{FenceScope, FencedChange, PageQuery, ReleaseFence, StoreError, StoreResult};
use consentry_types::Instant;

use crate::sql::{Connection, Db};
use crate::Pool;

/// FNV-1a, 64 bits: the same key for the same scope on every node and every build.
fn fnv1a(parts: &[&str]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The advisory lock key of a scope. Two scopes may share a key (a hash collision): they
/// are then ordered against each other too, which costs a wait and never a wrong order.
pub(crate) fn key(scope: &FenceScope) -> i64 {
    match scope {
        FenceScope::Everything => fnv1a(&["consentry", "everything"]),
        FenceScope::App(app) => fnv1a(&["consentry", "app", app.as_str()]),
        FenceScope::Group(group) => fnv1a(&["consentry", "group", group.as_str()]),
    }
}

/// The keys a request about `query` reads under.
pub(crate) fn page_keys(query: &PageQuery) -> Vec<i64> {
    vec![
        key(&FenceScope::Everything),
        key(&FenceScope::App(query.app.clone())),
        key(&FenceScope::Group(query.group.clone())),
    ]
}

/// The exclusive side, on connections of its own (a change waiting for its lock never holds
/// a connection that requests or its own write need).
pub struct PgFence {
    pub(crate) pool: Pool,
}

/// A held exclusive lock: dropping it lets go (or, if that fails, closes the connection,
/// which lets go as surely).
struct Held {
    connection: r2d2::PooledConnection<crate::Manager>,
    key: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let key = self.key;
        let unlocked = self
            .connection
            .query_one("SELECT pg_advisory_unlock($1)", &[&key])
            .ok()
            .and_then(|row| row.try_get::<_, bool>(0).ok());
        if unlocked != Some(true) {
            self.connection.broken = true;
        }
    }
}

impl ReleaseFence for PgFence {
    fn change(&self, scope: &FenceScope) -> StoreResult<FencedChange> {
        let mut connection =
            self.pool.get().map_err(|e| StoreError::Backend(format!("no connection for a change: {e}")))?;
        let key = key(scope);
        let taken = lock(&mut connection, key);
        let at = match taken {
            Ok(at) => at,
            Err(error) => {
                connection.broken = true;
                return Err(error.into_store_error());
            }
        };
        // Past `at` on the database's clock before anyone reads again (see the module documentation).
        std::thread::sleep(Duration::from_millis(1));
        Ok(FencedChange { at: Instant::from_millis(at), held: Box::new(Held { connection, key }) })
    }
}

fn lock(connection: &mut Connection, key: i64) -> crate::sql::DbResult<i64> {
    connection.query_one("SELECT pg_advisory_lock($1)", &[&key])?;
    let now: i64 = connection
        .query_one("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT", &[])?
        .try_get(0)?;
    Ok(now + 1)
}
