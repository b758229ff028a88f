//! The serving path and the platform's operations: authentication, field decisions,
//! redaction, and every write of a fact. No HTTP, no SQL.
//!
//! Every decision is made here, when a request is served, from the active policy and the
//! current facts read from the store (invariant 1). Nothing computed earlier is honored.

mod auth;
mod cases;
mod clock;
mod gate;
mod groups;
mod jobs;
mod keys;
mod platform;
mod proofs;
mod secret_checks;
mod secrets;
mod server_keys;
mod shown_kinds;
mod sign_in;
mod standing;
mod throttle;
mod token_owners;
mod webhook_target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use consentry_policy::{compile, CompiledPolicy, Engine, PolicyError};
use consentry_store::{FenceScope, Store, StoreError};

pub use auth::{AppSession, IssuedToken, OperatorSession, TokenIntrospection};
pub use clock::{Clock, SimulatedClock, SystemClock};
pub use consentry_types::{Disclosure, DisclosureRecord, Subject};
pub use groups::{parse_fields, AuthorView, GroupView, MemberView, Page, PageRequest, PostView, Served};
pub use jobs::JobSchedule;
pub use keys::{may_create, may_revoke, parse_key_lifetime, NewOperatorKey, MAX_KEY_LIFETIME_DAYS};
pub use platform::RegisteredApp;
pub use proofs::{ProofStanding, PROVERS};
pub use secrets::ServerKey;
pub use server_keys::{load_server_key, KeyOrigin};
pub use sign_in::{ResumedSession, SessionLimits, SignInSessions, SignedIn};
pub use standing::{RETRY_ROLES, STANDING_ROLES};
pub use throttle::{AddressBlock, AuthLimits, Credential, FailedAuthentication, TooManyAttempts};
pub use webhook_target::{refused_address, CheckedTarget, HostResolver, TargetError, WebhookTargets};

/// A fresh id for one request (64 random bits, hex).
pub fn request_id() -> String {
    secrets::random_hex(8)
}

/// Why a service call did not succeed. Messages are safe to show to the caller, except
/// `Internal`, whose detail is for logs only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    /// Well-formed but refused by a rule of the domain (e.g. installer is not an admin).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Policy(PolicyError),
    /// Too many failed authentications from this client id or address: nothing was checked.
    #[error("too many failed authentications; retry after {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Too many client secrets are being checked at once: nothing was checked.
    #[error("busy checking client secrets; retry after {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        match error {
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            StoreError::Backend(detail) => ServiceError::Internal(detail),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Where disclosure records go before a response may leave (the ledger implements it).
pub trait DisclosureSink: Send + Sync {
    /// Returns only once the record is durable; an error means nothing may be disclosed.
    fn record(&self, record: &DisclosureRecord) -> Result<(), String>;

    /// Records several responses' records, returning once all are durable (with one sync
    /// where the sink can); an error means none of them may be disclosed.
    fn record_all(&self, records: &[DisclosureRecord]) -> Result<(), String> {
        records.iter().try_for_each(|record| self.record(record))
    }
}

impl<T> Served<T> {
    /// The record describing this response.
    pub fn record(&self, request_id: &str, route: &str, session: &AppSession) -> DisclosureRecord {
        DisclosureRecord {
            at: self.released_at,
            request_id: request_id.to_string(),
            app: session.app.clone(),
            developer: self.developer.clone(),
            group: self.group.clone(),
            token_hash: session.token_hash.clone(),
            policy_version: self.policy_version,
            route: route.to_string(),
            disclosures: self.disclosures.clone(),
        }
    }
}

/// Tunables with production defaults.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Lifetime of access tokens.
    pub token_ttl_secs: i64,
    /// Page size when the app gives no `limit`.
    pub default_page_size: usize,
    /// Largest `limit` an app may ask for.
    pub max_page_size: usize,
    /// Throttling of failed authentication and of client-secret checks.
    pub auth_limits: AuthLimits,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            token_ttl_secs: 3600,
            default_page_size: 25,
            max_page_size: 500,
            auth_limits: AuthLimits::default(),
        }
    }
}

/// consentry's core: holds the store, the decision engine and the clock.
pub struct Service {
    store: Arc<dyn Store>,
    engine: Engine,
    /// Compiled policy per stored version. Stored versions never change, so this is a pure
    /// function of the version's text.
    compiled: Mutex<HashMap<u32, Arc<CompiledPolicy>>>,
    clock: Arc<dyn Clock>,
    /// Orders changes of access facts against responses' release (see `gate`).
    gate: gate::Gate,
    /// The server keys, shared with every node through the store (see `server_keys.rs`).
    key: std::sync::RwLock<Arc<ServerKey>>,
    key_loaded_at: Mutex<Option<consentry_types::Instant>>,
    config: ServiceConfig,
    /// Where developers' webhooks may point (checked at registration and at each delivery).
    webhook_targets: webhook_target::WebhookTargets,
    /// The kinds of member each app's members pages in each group showed last (a guess that
    /// lets the next page's snapshot bring their profiles).
    shown_kinds: shown_kinds::ShownKinds,
    /// The app and expiry of the access tokens this node has seen (fixed at issue).
    token_owners: token_owners::TokenOwners,
    /// Tallies of failed authentication per client id and per address.
    failed_auth: FailedAuthentication,
    /// argon2 checks of client secrets, on their own threads.
    secret_checks: secret_checks::SecretChecks,
    #[cfg(feature = "bench-bypass")]
    bypass_enforcement: std::sync::atomic::AtomicBool,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        key: ServerKey,
        config: ServiceConfig,
    ) -> Service {
        Service {
            store,
            engine: Engine::new(),
            compiled: Mutex::new(HashMap::new()),
            clock,
            gate: gate::Gate::new(),
            key: std::sync::RwLock::new(Arc::new(key)),
            key_loaded_at: Mutex::new(None),
            token_owners: token_owners::TokenOwners::default(),
            shown_kinds: shown_kinds::ShownKinds::default(),
            failed_auth: FailedAuthentication::new(config.auth_limits.clone()),
            secret_checks: secret_checks::SecretChecks::new(
                config.auth_limits.secret_checks_at_once,
                config.auth_limits.secret_checks_waiting,
            ),
            config,
            webhook_targets: webhook_target::WebhookTargets::strict(),
            #[cfg(feature = "bench-bypass")]
            bypass_enforcement: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> consentry_types::Instant {
        self.clock.now()
    }

    /// Field decisions made and answered from memory since start (for metrics).
    pub fn decision_stats(&self) -> consentry_policy::DecisionStats {
        self.engine.stats()
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The secret `developer` checks webhook signatures with.
    pub fn webhook_secret(&self, developer: &consentry_types::DeveloperId) -> String {
        self.server_key().webhook_secret(developer)
    }

    /// Every secret a webhook to `developer` is signed with now (after a rotation, for a
    /// while, the previous one too).
    pub fn webhook_secrets(&self, developer: &consentry_types::DeveloperId) -> Vec<String> {
        self.server_key().webhook_secrets(developer)
    }

    /// Queues a webhook event for the developer of `app` in the durable outbox.
    fn notify_app_developer(
        &self,
        app: &consentry_types::AppId,
        event: &str,
        details: &str,
    ) -> ServiceResult<()> {
        let Some(app_row) = self.store.app(app)? else { return Ok(()) };
        self.notify_developer(&app_row.developer, event, &format!(r#","app":"{app}"{details}"#))
    }

    /// Queues a webhook event for a developer. `details` are further JSON members, each
    /// starting with a comma.
    fn notify_developer(
        &self,
        developer: &consentry_types::DeveloperId,
        event: &str,
        details: &str,
    ) -> ServiceResult<()> {
        let at = self.clock.now();
        // Ids are validated to [A-Za-z0-9_.:-], so they need no escaping in JSON.
        let payload = format!(r#"{{"event":"{event}","at":"{at}","developer":"{developer}"{details}}}"#);
        self.store.enqueue_notification(developer, event, &payload, at)?;
        Ok(())
    }

    /// The id `app` receives for `member` (for deletion manifests).
    pub fn scoped_member_id(
        &self,
        app: &consentry_types::AppId,
        member: &consentry_types::MemberId,
    ) -> String {
        self.server_key().scoped_member_id(app, member)
    }

    /// Benchmarks only: serve every requested field without deciding (the baseline that
    /// enforcement is measured against). Not compiled into the product.
    #[cfg(feature = "bench-bypass")]
    pub fn bypass_enforcement_for_benchmark(&self, bypass: bool) {
        self.bypass_enforcement.store(bypass, std::sync::atomic::Ordering::Relaxed);
    }

    fn enforcement_bypassed(&self) -> bool {
        #[cfg(feature = "bench-bypass")]
        {
            self.bypass_enforcement.load(std::sync::atomic::Ordering::Relaxed)
        }
        #[cfg(not(feature = "bench-bypass"))]
        {
            false
        }
    }

    /// Starts a change of an access fact in `scope`: ordered against every request by the
    /// store's release fence where the store has one (several processes on one database),
    /// otherwise by this process's gate. Commit the write with the change's instant before
    /// dropping it.
    fn change(&self, scope: FenceScope) -> ServiceResult<gate::Change<'_>> {
        match self.store.release_fence() {
            Some(fence) => Ok(gate::Change::fenced(fence.change(&scope)?)),
            None => Ok(self.gate.change(self.clock.as_ref())),
        }
    }

    /// Starts a request's read section (see `gate`).
    fn serve(&self) -> gate::Serving<'_> {
        if self.store.release_fence().is_some() {
            self.gate.serve_fenced_by_store()
        } else {
            self.gate.serve()
        }
    }

    /// The compiled form of a stored policy version.
    fn compiled_policy(&self, version: u32) -> ServiceResult<Arc<CompiledPolicy>> {
        if let Some(policy) = self.compiled.lock().ok().and_then(|c| c.get(&version).cloned()) {
            return Ok(policy);
        }
        let stored = self
            .store
            .policy_version(version)?
            .ok_or_else(|| ServiceError::NotFound(format!("policy version {version}")))?;
        let policy = Arc::new(compile(version, &stored.text).map_err(ServiceError::Policy)?);
        if let Ok(mut compiled) = self.compiled.lock() {
            compiled.insert(version, policy.clone());
        }
        Ok(policy)
    }
}
