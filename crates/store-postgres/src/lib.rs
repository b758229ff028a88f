//! PostgreSQL implementation of `Store`, for several nodes on one database. Laid out module
//! by module like `consentry-store-sqlite`, so the two read side by side: `facts`, `access`,
//! `credentials`, `policies`, `outbox`, `cases`, `pages` hold the SQL of each family of facts
//! as functions over a connection or a transaction; this file holds the pool and the `Store`
//! impl that runs each function in a read or a write.
//!
//! What SQLite gives for free and this backend must make sure of:
//! - one writer at a time: every write runs SERIALIZABLE and is retried when it loses a race
//!   (the last live officer key, `MAX(version) + 1`, history appended in order per fact);
//! - text ordered byte by byte: every text column is `COLLATE "C"`, so pages and cursors
//!   order exactly as on SQLite;
//! - insertion order: history rows and operator keys carry a sequence number from an identity
//!   column (SQLite's rowid);
//! - one process changing facts: the release fence (`fence`) orders changes against requests
//!   across every node, with the database's clock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consentry_store::{
    AppCredentials, Case, CaseEvent, CaseState, DeliveryStatus, FactHistory, Facts, Notification,
    OperatorKey, OutboxDepth, PageQuery, PageSnapshot, ProofRecord, ProofWaiver, ReleaseFence,
    SchemaVersions, ServerSecret, Store, StoreError, StoreResult, TokenRecord,
};
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Installation, Instant, Member, MemberId,
    PolicyActivation, PolicyVersion, Post, PostId, Role,
};
use postgres::{IsolationLevel, NoTls};

mod access;
mod cases;
mod copy;
mod credentials;
mod facts;
mod fence;
mod nodes;
mod outbox;
mod pages;
mod policies;
mod schema;
mod sql;
pub mod testing;

pub use fence::PgFence;
pub use schema::latest_version as latest_schema_version;
pub use sql::Connection;
use sql::{in_transaction, Db, DbResult, Failure};

/// How many times a write that lost a race with another (a serialization failure) is tried.
const WRITE_ATTEMPTS: u32 = 30;
/// How long a request waits, in total, for changes in its scopes to finish.
const FENCE_PATIENCE: Duration = Duration::from_secs(30);
/// Connections kept for changes holding the fence (apart from the pool's).
const FENCE_CONNECTIONS: u32 = 4;

/// Opens connections for the pool.
pub struct Manager {
    config: postgres::Config,
    round_trips: Arc<AtomicU64>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        // Pages are read under READ COMMITTED (see `fence`), whatever the server's default.
        client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
        Ok(Connection {
            client,
            statements: HashMap::new(),
            broken: false,
            round_trips: self.round_trips.clone(),
        })
    }

    fn is_valid(&self, connection: &mut Connection) -> Result<(), postgres::Error> {
        connection.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.broken || connection.client.is_closed()
    }
}

pub(crate) type Pool = r2d2::Pool<Manager>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections for requests and writes (at least 1).
    pub pool_size: u32,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions { pool_size: 16 }
    }
}

/// The store on PostgreSQL: a pool of connections, each with its prepared statements.
pub struct PgStore {
    pool: Pool,
    fence: PgFence,
    round_trips: Arc<AtomicU64>,
}

/// The address without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = url.get(scheme + 3..at).unwrap_or("");
            match credentials.split_once(':') {
                Some((user, _)) => format!(
                    "{}{user}:***{}",
                    url.get(..scheme + 3).unwrap_or(""),
                    url.get(at..).unwrap_or("")
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PgStore {
    /// Connects, brings the schema up to date (refusing one newer than this binary knows), and
    /// opens the pool.
    pub fn open(url: &str, options: &PgOptions) -> StoreResult<PgStore> {
        let config: postgres::Config = url.parse().map_err(|e| {
            StoreError::Backend(format!("{} is not a PostgreSQL address: {e}", redacted(url)))
        })?;
        let mut client = config
            .connect(NoTls)
            .map_err(|e| StoreError::Backend(format!("cannot connect to {}: {e}", redacted(url))))?;
        schema::migrate(&mut client)?;
        drop(client);
        let round_trips = Arc::new(AtomicU64::new(0));
        let pool = |size: u32| {
            r2d2::Pool::builder()
                .max_size(size.max(1))
                .min_idle(Some(0))
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(30))
                .build_unchecked(Manager { config: config.clone(), round_trips: round_trips.clone() })
        };
        Ok(PgStore {
            pool: pool(options.pool_size),
            fence: PgFence { pool: pool(FENCE_CONNECTIONS) },
            round_trips: round_trips.clone(),
        })
    }

    pub(crate) fn connection(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| StoreError::Backend(format!("no database connection: {e}")))
    }

    /// One write transaction, SERIALIZABLE, tried again when it loses a race.
    fn write<T>(&self, mut body: impl FnMut(&mut dyn Db) -> DbResult<T>) -> StoreResult<T> {
        let mut attempt = 0;
        loop {
            let mut connection = self.connection()?;
            let outcome = in_transaction(&mut connection, IsolationLevel::Serializable, false, &mut body);
            match outcome {
                Ok(value) => return Ok(value),
                Err(failure) if failure.is_retryable() && attempt + 1 < WRITE_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(u64::from(attempt.min(10))));
                }
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// One write transaction, READ COMMITTED, for writes that order themselves with locks
    /// (`nodes`); tried again after a deadlock.
    fn write_committed<T>(&self, mut body: impl FnMut(&mut dyn Db) -> DbResult<T>) -> StoreResult<T> {
        let mut attempt = 0;
        loop {
            let mut connection = self.connection()?;
            let outcome = in_transaction(&mut connection, IsolationLevel::ReadCommitted, false, &mut body);
            match outcome {
                Ok(value) => return Ok(value),
                Err(failure) if failure.is_retryable() && attempt + 1 < WRITE_ATTEMPTS => attempt += 1,
                Err(failure) => return Err(failure.into_store_error()),
            }
        }
    }

    /// One read, one statement or several that need not agree.
    fn read<T>(&self, body: impl FnOnce(&mut dyn Db) -> DbResult<T>) -> StoreResult<T> {
        let mut connection = self.connection()?;
        body(&mut *connection).map_err(Failure::into_store_error)
    }

    /// Several reads that must see one snapshot: a REPEATABLE READ, READ ONLY transaction.
    fn read_consistent<T>(&self, body: impl FnOnce(&mut dyn Db) -> DbResult<T>) -> StoreResult<T> {
        let mut connection = self.connection()?;
        in_transaction(&mut connection, IsolationLevel::RepeatableRead, true, body)
            .map_err(Failure::into_store_error)
    }

    /// A page under the fence's shared side; while a change holds it, waits with no connection.
    fn read_page_fenced(&self, query: &PageQuery) -> StoreResult<PageSnapshot> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            let read = {
                let mut connection = self.connection()?;
                pages::read_page(&mut *connection, query).map_err(Failure::into_store_error)?
            };
            if let Some(snapshot) = read {
                return Ok(snapshot);
            }
            if started.elapsed() > FENCE_PATIENCE {
                return Err(StoreError::Backend(format!(
                    "a change of facts held the page's fence for more than {} s",
                    FENCE_PATIENCE.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// How many round trips this store's connections have made to the database so far (each
    /// statement, each statement prepared, each BEGIN and COMMIT), for counting them per page.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

impl Store for PgStore {
    fn put_member(&self, member: &Member, at: Instant) -> StoreResult<()> {
        self.write(|db| facts::put_member(db, member, at))
    }

    fn member(&self, id: &MemberId) -> StoreResult<Option<Member>> {
        self.read(|db| facts::member(db, id))
    }

    fn put_group(&self, group: &Group, at: Instant) -> StoreResult<()> {
        self.write(|db| facts::put_group(db, group, at))
    }

    fn group(&self, id: &GroupId) -> StoreResult<Option<Group>> {
        self.read(|db| facts::group(db, id))
    }

    fn put_post(&self, post: &Post) -> StoreResult<()> {
        self.write(|db| facts::put_post(db, post))
    }

    fn put_developer(&self, developer: &Developer, at: Instant) -> StoreResult<()> {
        self.write(|db| facts::put_developer(db, developer, at))
    }

    fn developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>> {
        self.read(|db| facts::developer(db, id))
    }

    fn set_membership(
        &self,
        group: &GroupId,
        member: &MemberId,
        role: Option<Role>,
        at: Instant,
    ) -> StoreResult<()> {
        self.write(|db| access::set_membership(db, group, member, role, at))
    }

    fn membership(&self, group: &GroupId, member: &MemberId) -> StoreResult<Option<Role>> {
        self.read(|db| access::membership(db, group, member))
    }

    fn register_app(&self, app: &App, secret_hash: &str, at: Instant) -> StoreResult<()> {
        self.write(|db| facts::register_app(db, app, secret_hash, at))
    }

    fn set_app_status(&self, app: &AppId, status: AppStatus, at: Instant) -> StoreResult<()> {
        self.write(|db| access::set_app_status(db, app, status, at))
    }

    fn app(&self, id: &AppId) -> StoreResult<Option<App>> {
        self.read(|db| facts::app(db, id))
    }

    fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppCredentials>> {
        self.read(|db| facts::app_by_client_id(db, client_id))
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
        self.write(|db| access::set_installation(db, app, group, authorized_by, at))
    }

    fn installation(&self, app: &AppId, group: &GroupId) -> StoreResult<Option<Installation>> {
        self.read(|db| access::installation(db, app, group))
    }

    fn set_consent(&self, member: &MemberId, app: &AppId, profile: bool, at: Instant) -> StoreResult<()> {
        self.write(|db| access::set_consent(db, member, app, profile, at))
    }

    fn profile_consents(&self, app: &AppId, members: &[MemberId]) -> StoreResult<HashSet<MemberId>> {
        self.read(|db| access::profile_consents(db, app, members))
    }

    fn member_count(&self, group: &GroupId) -> StoreResult<u64> {
        self.read(|db| facts::member_count(db, group))
    }

    fn members_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(Member, Role)>> {
        self.read(|db| facts::members_page(db, group, after, limit))
    }

    fn posts_page(&self, group: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>> {
        self.read(|db| facts::posts_page(db, group, after, limit))
    }

    fn add_policy_version(&self, text: &str, author: &str, at: Instant) -> StoreResult<u32> {
        self.write(|db| policies::add_policy_version(db, text, author, at))
    }

    fn policy_version(&self, version: u32) -> StoreResult<Option<PolicyVersion>> {
        self.read(|db| policies::policy_version(db, version))
    }

    fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>> {
        self.read(policies::policy_versions)
    }

    fn approve_policy(&self, version: u32, approver: &str, at: Instant) -> StoreResult<()> {
        self.write(|db| policies::approve_policy(db, version, approver, at))
    }

    fn policy_approvals(&self, version: u32) -> StoreResult<Vec<(String, Instant)>> {
        self.read(|db| policies::policy_approvals(db, version))
    }

    fn record_preview(&self, version: u32, by: &str, summary: &str, at: Instant) -> StoreResult<()> {
        self.write(|db| policies::record_preview(db, version, by, summary, at))
    }

    fn policy_previews(&self, version: u32) -> StoreResult<Vec<(String, Instant, String)>> {
        self.read(|db| policies::policy_previews(db, version))
    }

    fn record_proof(&self, version: u32, proof: &ProofRecord) -> StoreResult<()> {
        self.write(|db| policies::record_proof(db, version, proof))
    }

    fn policy_proofs(&self, version: u32) -> StoreResult<Vec<ProofRecord>> {
        self.read(|db| policies::policy_proofs(db, version))
    }

    fn record_waiver(&self, version: u32, waiver: &ProofWaiver) -> StoreResult<()> {
        self.write(|db| policies::record_waiver(db, version, waiver))
    }

    fn policy_waivers(&self, version: u32) -> StoreResult<Vec<ProofWaiver>> {
        self.read(|db| policies::policy_waivers(db, version))
    }

    fn activate_policy(&self, activation: &PolicyActivation) -> StoreResult<()> {
        self.write(|db| policies::activate_policy(db, activation))
    }

    fn policy_activations(&self) -> StoreResult<Vec<PolicyActivation>> {
        self.read(policies::policy_activations)
    }

    fn active_policy(&self) -> StoreResult<Option<PolicyVersion>> {
        self.read(policies::active_policy)
    }

    fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.write(|db| credentials::put_token(db, token))
    }

    fn token(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        self.read(|db| credentials::token(db, hash))
    }

    fn revoke_token(&self, hash: &str, at: Instant) -> StoreResult<bool> {
        self.write(|db| credentials::revoke_token(db, hash, at))
    }

    fn revoke_app_tokens(&self, app: &AppId, at: Instant) -> StoreResult<u64> {
        self.write(|db| credentials::revoke_app_tokens(db, app, at))
    }

    fn put_operator_key(&self, key: &OperatorKey) -> StoreResult<()> {
        self.write(|db| credentials::put_operator_key(db, key))
    }

    fn operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>> {
        self.read(|db| credentials::operator_key(db, id))
    }

    fn operator_keys(&self) -> StoreResult<Vec<OperatorKey>> {
        self.read(credentials::operator_keys)
    }

    fn operator_key_count(&self) -> StoreResult<u64> {
        self.read(credentials::operator_key_count)
    }

    fn revoke_operator_key(&self, id: &str, at: Instant, keep_a_live_officer: bool) -> StoreResult<bool> {
        self.write(|db| credentials::revoke_operator_key(db, id, at, keep_a_live_officer))
    }

    fn enqueue_notification(
        &self,
        developer: &DeveloperId,
        event: &str,
        payload: &str,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|db| outbox::enqueue_notification(db, developer, event, payload, at))
    }

    fn due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<Notification>> {
        self.read(|db| outbox::due_notifications(db, now, limit))
    }

    fn record_delivery(
        &self,
        id: u64,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.write(|db| outbox::record_delivery(db, id, status, next_attempt_at, error))
    }

    fn notifications(&self, developer: &DeveloperId) -> StoreResult<Vec<Notification>> {
        self.read(|db| outbox::notifications(db, developer))
    }

    fn certify_app(&self, app: &AppId, statement: &str, at: Instant) -> StoreResult<()> {
        self.write(|db| cases::certify_app(db, app, statement, at))
    }

    fn last_certified(&self, app: &AppId) -> StoreResult<Option<Instant>> {
        self.read(|db| cases::last_certified(db, app))
    }

    fn open_case(
        &self,
        developer: &DeveloperId,
        manifest: &str,
        deadline: Instant,
        at: Instant,
    ) -> StoreResult<u64> {
        self.write(|db| cases::open_case(db, developer, manifest, deadline, at))
    }

    fn case(&self, id: u64) -> StoreResult<Option<Case>> {
        self.read(|db| cases::case(db, id))
    }

    fn cases(&self) -> StoreResult<Vec<Case>> {
        self.read(cases::cases)
    }

    fn move_case(&self, id: u64, from: CaseState, to: CaseState, note: &str, at: Instant) -> StoreResult<()> {
        self.write(|db| cases::move_case(db, id, from, to, note, at))
    }

    fn case_events(&self, id: u64) -> StoreResult<Vec<CaseEvent>> {
        self.read(|db| cases::case_events(db, id))
    }

    fn server_secrets(&self) -> StoreResult<Vec<ServerSecret>> {
        self.read(nodes::server_secrets)
    }

    fn add_server_secret(&self, secret: &ServerSecret) -> StoreResult<bool> {
        self.write_committed(|db| nodes::add_server_secret(db, secret))
    }

    fn claim_due_notifications(
        &self,
        node: &str,
        now: Instant,
        lease_until: Instant,
        limit: usize,
        per_developer: usize,
    ) -> StoreResult<Vec<Notification>> {
        self.write_committed(|db| {
            nodes::claim_due_notifications(db, node, now, lease_until, limit, per_developer)
        })
    }

    fn record_claimed_delivery(
        &self,
        id: u64,
        node: &str,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        self.write_committed(|db| {
            nodes::record_claimed_delivery(db, id, node, status, next_attempt_at, error)
        })
    }

    fn release_notifications(&self, node: &str, ids: &[u64]) -> StoreResult<()> {
        self.write_committed(|db| nodes::release_notifications(db, node, ids))
    }

    fn outbox_depth(&self) -> StoreResult<OutboxDepth> {
        self.read(nodes::outbox_depth)
    }

    fn claim_job(
        &self,
        job: &str,
        node: &str,
        now: Instant,
        lease_until: Instant,
        first_due: Instant,
    ) -> StoreResult<bool> {
        self.write_committed(|db| nodes::claim_job(db, job, node, now, lease_until, first_due))
    }

    fn finish_job(&self, job: &str, node: &str, next_due: Instant) -> StoreResult<bool> {
        self.write_committed(|db| nodes::finish_job(db, job, node, next_due))
    }

    fn schema_versions(&self) -> StoreResult<SchemaVersions> {
        self.read(schema::versions)
    }

    fn facts_as_of(&self, at: Instant) -> StoreResult<Facts> {
        self.read_consistent(|db| access::facts_as_of(db, at.millis()))
    }

    fn fact_history(&self) -> StoreResult<FactHistory> {
        self.read_consistent(access::fact_history)
    }

    fn read_page(&self, query: &PageQuery) -> StoreResult<PageSnapshot> {
        self.read_page_fenced(query)
    }

    fn release_fence(&self) -> Option<&dyn ReleaseFence> {
        Some(&self.fence)
    }
}
