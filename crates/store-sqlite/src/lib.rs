//! SQLite implementation of `Store`: one file, WAL, synchronous commits. The only crate that knows SQL.
//!
//! One module per family of facts (`facts`, `access`, `credentials`, `policies`, `outbox`,
//! `cases`) holds its SQL as functions over a connection or transaction; this file holds the
//! connections and the `Store` impl that runs each function in a read or a write transaction.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use consentry_store::{
    AppCredentials, Case, CaseEvent, CaseState, DeliveryStatus, FactHistory, Facts, Notification,
    OperatorKey, OutboxDepth, PageQuery, PageSnapshot, ProofRecord, ProofWaiver, SchemaVersions,
    ServerSecret, Store, StoreError, StoreResult, TokenRecord,
};
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Installation, Instant, Member, MemberId,
    PolicyActivation, PolicyVersion, Post, PostId, Role,
};
use rusqlite::{Connection, OpenFlags, Transaction};

macro_rules! parse_column {
    ($row:expr, $index:expr, $parse:expr, $what:literal) => {{
        let text: String = $row.get($index)?;
        $parse(&text).map_err(|_| $crate::sql::corrupt($what, &text))?
    }};
}

mod access;
mod cases;
mod copy;
mod credentials;
mod facts;
mod nodes;
mod outbox;
mod pages;
mod policies;
mod schema;
mod sql;

pub use schema::latest_version as latest_schema_version;
use schema::migrate;
pub use schema::UNRECORDED_ORIGIN;
use sql::backend;

const READERS: usize = 4;

/// The embedded store: one SQLite file, one writer connection and a few readers.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// Why one attempt at opening the store failed: an I/O error (tried again), or anything else.
enum Opening {
    Io(StoreError),
    Failed(StoreError),
}

/// How long a connection waits for another's lock before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Puts the file in WAL mode. Switching needs the file to itself and SQLite does not wait for
/// it (no busy timeout): when another process opens the same new file at that moment (and may
/// be migrating it, slowly on a busy machine), try again for as long as the busy timeout.
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    let mut attempt: u64 = 0;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy && started.elapsed() < BUSY_TIMEOUT =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(attempt.min(20)));
            }
            outcome => return outcome,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in one file.
    ///
    /// Two processes creating one new store at the same instant (nodes started together on a
    /// shared data directory) were seen, about once in a few hundred tries on a loaded
    /// machine, to get SQLite's "disk I/O error" while one switched the new file to WAL as the
    /// other read it. Nothing is written before the schema's migrations, which are
    /// transactions, so an open that fails with an I/O error is tried again from the start,
    /// for as long as the busy timeout; a lasting disk error is reported then, naming the
    /// step.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let started = std::time::Instant::now();
        loop {
            match Self::open_once(path) {
                Ok(store) => return Ok(store),
                Err(Opening::Io(_)) if started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(Opening::Io(error) | Opening::Failed(error)) => return Err(error),
            }
        }
    }

    fn open_once(path: &Path) -> Result<SqliteStore, Opening> {
        let at = |step: &'static str| {
            move |e: rusqlite::Error| {
                let io = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::SystemIoFailure);
                let error = StoreError::Backend(format!("{step} {}: {e}", path.display()));
                if io {
                    Opening::Io(error)
                } else {
                    Opening::Failed(error)
                }
            }
        };
        let mut writer = Connection::open(path).map_err(at("cannot open"))?;
        // The busy timeout first: nodes opening one file at once wait for each other's
        // migrations instead of failing.
        configure(&writer).map_err(at("cannot configure"))?;
        switch_to_wal(&writer).map_err(at("cannot switch to WAL"))?;
        migrate(&mut writer).map_err(Opening::Failed)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(at("cannot open for reading"))?;
            reader.busy_timeout(BUSY_TIMEOUT).map_err(at("cannot open for reading"))?;
            readers.push(Mutex::new(reader));
        }
        Ok(SqliteStore { writer: Mutex::new(writer), readers, next_reader: AtomicUsize::new(0) })
    }

    /// A private in-memory store, for tests and benchmarks.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        let mut writer = Connection::open_in_memory().map_err(backend)?;
        configure(&writer).map_err(backend)?;
        migrate(&mut writer)?;
        Ok(SqliteStore { writer: Mutex::new(writer), readers: Vec::new(), next_reader: AtomicUsize::new(0) })
    }

    /// Bulk loading (e.g. the demo seeding a world it can regenerate): commits stop waiting
    /// for the disk. Turn it off again before serving; off is the default.
    pub fn set_bulk_load(&self, bulk: bool) -> StoreResult<()> {
        let level = if bulk { "OFF" } else { "FULL" };
        self.writer()?.pragma_update(None, "synchronous", level).map_err(backend)
    }

    fn writer(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.writer.lock().map_err(|_| StoreError::Backend("writer connection poisoned".into()))
    }

    fn reader(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        if self.readers.is_empty() {
            return self.writer();
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            if let Some(Ok(guard)) =
                self.readers.get((start + offset) % self.readers.len()).map(|m| m.try_lock())
            {
                return Ok(guard);
            }
        }
        self.readers
            .get(start % self.readers.len())
            .ok_or_else(|| StoreError::Backend("no reader".into()))?
            .lock()
            .map_err(|_| StoreError::Backend("reader connection poisoned".into()))
    }

    fn write<T>(&self, body: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer()?;
        // IMMEDIATE: the write lock is taken at BEGIN, waiting (busy timeout) for another
        // process's write. A deferred transaction that read first would fail at once with
        // "database is locked" when another process wrote meanwhile (its snapshot is stale),
        // which two `serve` nodes on one data directory did under load.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
        let value = body(&tx)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }

    fn read<T>(&self, body: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.reader()?;
        body(&conn).map_err(backend)
    }

    /// Several reads in one read transaction: all of them see the store as it was at one instant.
    fn read_snapshot<T>(&self, body: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let mut conn = self.reader()?;
        let tx = conn.transaction().map_err(backend)?;
        let value = body(&tx).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(value)
    }
}

impl Store for SqliteStore {
    fn put_member(&self, member: &Member, at: Instant) -> StoreResult<()> {
        self.write(|tx| facts::put_member(tx, member, at))
    }

    fn member(&self, id: &MemberId) -> StoreResult<Option<Member>> {
        self.read(|c| facts::member(c, id))
    }

    fn put_group(&self, group: &Group, at: Instant) -> StoreResult<()> {
        self.write(|tx| facts::put_group(tx, group, at))
    }

    fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        self.read(|c| facts::group(c, id))
    }

    fn put_post(&self, post: &Post) -> StoreResult<()> {
        self.write(|tx| facts::put_post(tx, post))
    }

    fn put_developer(&self, developer: &Developer, at: Instant) -> StoreResult<()> {
        self.write(|tx| facts::put_developer(tx, developer, at))
    }

    fn developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>> {
        self.read(|c| facts::developer(c, id))
    }

    fn set_membership(
        &self,
        group: &GroupId,
        member: &MemberId,
        role: Option<Role>,
        at: Instant,
    ) -> StoreResult<()> {
        self.write(|tx| access::set_membership(tx, group, member, role, at))
    }

    fn membership(&self, group: &GroupId, member: &MemberId) -> StoreResult<Option<Role>> {
        self.read(|c| access::membership(c, group, member))
    }

    fn register_app(&self, app: &App, secret_hash: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| facts::register_app(tx, app, secret_hash, at))
    }

    fn set_app_status(&self, app: &AppId, status: AppStatus, at: Instant) -> StoreResult<()> {
        self.write(|tx| access::set_app_status(tx, app, status, at))
    }

    fn app(&self, id: &AppId) -> StoreResult<Option<App>> {
        self.read(|c| facts::app(c, id))
    }

    fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppCredentials>> {
        self.read(|c| facts::app_by_client_id(c, client_id))
    }

    fn apps(&self) -> StoreResult<Vec<App>> {
        self.read(facts::apps)
    }

    fn set_installation(
        &self,
        app: &AppId,
        group: &GroupId,
        authorized_by: Option<&MemberId>,
        at: Instant,
    ) -> StoreResult<()> {
        self.write(|tx| access::set_installation(tx, app, group, authorized_by, at))
    }

    fn installation(&self, app: &AppId, group: &GroupId) -> StoreResult<Option<Installation>> {
        self.read(|c| access::installation(c, app, group))
    }

    fn set_consent(&self, member: &MemberId, app: &AppId, profile: bool, at: Instant) -> StoreResult<()> {
        self.write(|tx| access::set_consent(tx, member, app, profile, at))
    }

    fn profile_consents(&self, app: &AppId, members: &[MemberId]) -> StoreResult<HashSet<MemberId>> {
        self.read(|c| access::profile_consents(c, app, members))
    }

    fn member_count(&self, group: &GroupId) -> StoreResult<u64> {
        self.read(|c| facts::member_count(c, group))
    }

    fn members_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(Member, Role)>> {
        self.read(|c| facts::members_page(c, group, after, limit))
    }

    fn member_roles_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(MemberId, Role)>> {
        self.read(|c| facts::member_roles_page(c, group, after, limit))
    }

    fn members_by_id(&self, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, Member>> {
        self.read(|c| facts::members_by_id(c, ids))
    }

    fn posts_page(&self, group: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>> {
        self.read(|c| facts::posts_page(c, group, after, limit))
    }

    fn add_policy_version(&self, text: &str, author: &str, at: Instant) -> StoreResult<u32> {
        self.write(|tx| policies::add_policy_version(tx, text, author, at))
    }

    fn policy_version(&self, version: u32) -> StoreResult<Option<PolicyVersion>> {
        self.read(|c| policies::policy_version(c, version))
    }

    fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>> {
        self.read(policies::policy_versions)
    }

    fn approve_policy(&self, version: u32, approver: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| policies::approve_policy(tx, version, approver, at))
    }

    fn policy_approvals(&self, version: u32) -> StoreResult<Vec<(String, Instant)>> {
        self.read(|c| policies::policy_approvals(c, version))
    }

    fn record_preview(&self, version: u32, by: &str, summary: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| policies::record_preview(tx, version, by, summary, at))
    }

    fn policy_previews(&self, version: u32) -> StoreResult<Vec<(String, Instant, String)>> {
        self.read(|c| policies::policy_previews(c, version))
    }

    fn record_proof(&self, version: u32, proof: &ProofRecord) -> StoreResult<()> {
        self.write(|tx| policies::record_proof(tx, version, proof))
    }

    fn policy_proofs(&self, version: u32) -> StoreResult<Vec<ProofRecord>> {
        self.read(|c| policies::policy_proofs(c, version))
    }

    fn record_waiver(&self, version: u32, waiver: &ProofWaiver) -> StoreResult<()> {
        self.write(|tx| policies::record_waiver(tx, version, waiver))
    }

    fn policy_waivers(&self, version: u32) -> StoreResult<Vec<ProofWaiver>> {
        self.read(|c| policies::policy_waivers(c, version))
    }

    fn activate_policy(&self, activation: &PolicyActivation) -> StoreResult<()> {
        self.write(|tx| policies::activate_policy(tx, activation))
    }

    fn policy_activations(&self) -> StoreResult<Vec<PolicyActivation>> {
        self.read(policies::policy_activations)
    }

    fn active_policy(&self) -> StoreResult<Option<PolicyVersion>> {
        self.read(policies::active_policy)
    }

    fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.write(|tx| credentials::put_token(tx, token))
    }

    fn token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read(|c| credentials::token(c, hash))
    }

    fn revoke_token(&self, hash: &str, at: Instant) -> StoreResult<bool> {
        self.write(|tx| credentials::revoke_token(tx, hash, at))
    }

    fn revoke_app_tokens(&self, app: &AppId, at: Instant) -> StoreResult<u64> {
        self.write(|tx| credentials::revoke_app_tokens(tx, app, at))
    }

    fn put_operator_key(&self, key: &OperatorKey) -> StoreResult<()> {
        self.write(|tx| credentials::put_operator_key(tx, key))
    }

    fn operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>> {
        self.read(|c| credentials::operator_key(c, id))
    }

    fn operator_keys(&self) -> StoreResult<Vec<OperatorKey>> {
        self.read(credentials::operator_keys)
    }

    fn operator_key_count(&self) -> StoreResult<u64> {
        self.read(credentials::operator_key_count)
    }

    fn revoke_operator_key(&self, id: &str, at: Instant, keep_a_live_officer: bool) -> StoreResult<bool> {
        self.write(|tx| credentials::revoke_operator_key(tx, id, at, keep_a_live_officer))
    }

    fn enqueue_notification(
        &self,
        developer: &DeveloperId,
        event: &str,
        payload: &str,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|tx| outbox::enqueue_notification(tx, developer, event, payload, at))
    }

    fn due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<Notification>> {
        self.read(|c| outbox::due_notifications(c, now, limit))
    }

    fn record_delivery(
        &self,
        id: u64,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.write(|tx| outbox::record_delivery(tx, id, status, next_attempt_at, error))
    }

    fn notifications(&self, developer: &DeveloperId) -> StoreResult<Vec<Notification>> {
        self.read(|c| outbox::notifications(c, developer))
    }

    fn retry_notification(&self, id: u64, at: Instant) -> StoreResult<()> {
        self.write(|tx| outbox::retry_notification(tx, id, at))
    }

    fn server_secrets(&self) -> StoreResult<Vec<ServerSecret>> {
        nodes::server_secrets(self)
    }

    fn add_server_secret(&self, secret: &ServerSecret) -> StoreResult<bool> {
        nodes::add_server_secret(self, secret)
    }

    fn claim_due_notifications(
        &self,
        node: &str,
        now: Instant,
        lease_until: Instant,
        limit: usize,
        per_developer: usize,
    ) -> StoreResult<Vec<Notification>> {
        nodes::claim_due_notifications(self, node, now, lease_until, limit, per_developer)
    }

    fn record_claimed_delivery(
        &self,
        id: u64,
        node: &str,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        nodes::record_claimed_delivery(self, id, node, status, next_attempt_at, error)
    }

    fn release_notifications(&self, node: &str, ids: &[u64]) -> StoreResult<()> {
        nodes::release_notifications(self, node, ids)
    }

    fn outbox_depth(&self) -> StoreResult<OutboxDepth> {
        nodes::outbox_depth(self)
    }

    fn claim_job(
        &self,
        job: &str,
        node: &str,
        now: Instant,
        lease_until: Instant,
        first_due: Instant,
    ) -> StoreResult<bool> {
        nodes::claim_job(self, job, node, now, lease_until, first_due)
    }

    fn finish_job(&self, job: &str, node: &str, next_due: Instant) -> StoreResult<bool> {
        nodes::finish_job(self, job, node, next_due)
    }

    fn schema_versions(&self) -> StoreResult<SchemaVersions> {
        self.read(schema::versions)
    }

    fn certify_app(&self, app: &AppId, statement: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| cases::certify_app(tx, app, statement, at))
    }

    fn last_certified(&self, app: &AppId) -> StoreResult<Option<Instant>> {
        self.read(|c| cases::last_certified(c, app))
    }

    fn open_case(
        &self,
        developer: &DeveloperId,
        manifest: &str,
        deadline: Instant,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|tx| cases::open_case(tx, developer, manifest, deadline, at))
    }

    fn case(&self, id: u64) -> StoreResult<Option<Case>> {
        self.read(|c| cases::case(c, id))
    }

    fn cases(&self) -> StoreResult<Vec<Case>> {
        self.read(cases::cases)
    }

    fn move_case(&self, id: u64, from: CaseState, to: CaseState, note: &str, at: Instant) -> StoreResult<()> {
        self.write(|tx| cases::move_case(tx, id, from, to, note, at))
    }

    fn case_events(&self, id: u64) -> StoreResult<Vec<CaseEvent>> {
        self.read(|c| cases::case_events(c, id))
    }

    fn facts_as_of(&self, at: Instant) -> StoreResult<Facts> {
        self.read(|c| access::facts_as_of(c, at.millis()))
    }

    fn fact_history(&self) -> StoreResult<FactHistory> {
        self.read(access::fact_history)
    }

    fn read_page(&self, query: &PageQuery) -> StoreResult<PageSnapshot> {
        self.read_snapshot(|c| pages::read_page(c, query))
    }
}
