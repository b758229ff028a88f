//! The `Store` trait: the platform's facts, their full history, credentials, and policy versions.
//!
//! Every change of an access fact (membership, installation, consent, app status, policy
//! activation) is appended with the instant it took effect, so [`Store::facts_as_of`] can
//! reconstruct any past instant (invariant 5). The trait names no backend type.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod copy;
mod facts;
mod fence;
mod page;

use std::collections::{HashMap, HashSet};

use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Group, GroupId, Installation, Instant, Member, MemberId,
    OperatorRole, PolicyActivation, PolicyVersion, Post, PostId, Role,
};

pub use facts::{Change, FactHistory, Facts, Installed};
pub use fence::{FenceScope, FencedChange, ReleaseFence};
pub use page::{
    read_page_call_by_call, ListedMember, ListedPost, PageList, PageQuery, PageSnapshot, ProfileKinds,
};

/// What a store could not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The write refers to something that does not exist (e.g. a post by an unknown member).
    #[error("{0} not found")]
    NotFound(String),
    /// The write conflicts with what is stored (e.g. a duplicate client id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed; the message is for logs, not for clients.
    #[error("storage failure: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An app as stored, with the argon2 hash of its client secret (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentials {
    pub app: App,
    pub secret_hash: String,
}

/// An issued access token, known only by the hash of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Hex BLAKE3 hash of the token text.
    pub hash: String,
    pub app: AppId,
    pub issued_at: Instant,
    pub expires_at: Instant,
    pub revoked_at: Option<Instant>,
}

/// Where a notification to a developer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Given up after the last allowed attempt.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }
}

/// A webhook event for a developer, kept in a durable outbox until delivered or dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: u64,
    pub developer: DeveloperId,
    /// e.g. `installation.created`.
    pub event: String,
    /// The JSON body sent.
    pub payload: String,
    pub created_at: Instant,
    pub attempts: u32,
    pub next_attempt_at: Instant,
    pub status: DeliveryStatus,
    pub last_error: Option<String>,
}

/// Where a remediation case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseState {
    /// Access revoked, deletion of exactly the manifest requested; waiting for attestation.
    DeletionRequested,
    /// The developer attested the deletion.
    Attested,
    /// The deadline passed without an attestation.
    Overdue,
    /// The follow-up found the developer still received data.
    Failed,
    Closed,
}

impl CaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::DeletionRequested => "deletion_requested",
            CaseState::Attested => "attested",
            CaseState::Overdue => "overdue",
            CaseState::Failed => "failed",
            CaseState::Closed => "closed",
        }
    }
    pub fn parse(text: &str) -> Option<CaseState> {
        [
            CaseState::DeletionRequested,
            CaseState::Attested,
            CaseState::Overdue,
            CaseState::Failed,
            CaseState::Closed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The remediation of one developer's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub id: u64,
    pub developer: DeveloperId,
    pub state: CaseState,
    /// The deletion manifest (JSON): exactly the (app, app-scoped member, field) it received in violation.
    pub manifest: String,
    pub deadline: Instant,
    pub opened_at: Instant,
}

/// One transition of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    pub state: CaseState,
    pub at: Instant,
    pub note: String,
}

/// Who made an operator key. Whoever makes a key sees its secret once, so the maker (and
/// whoever made the maker, …) could act with it: the two-person rule reads this lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Over the platform API, with another operator key (its id).
    Key(String),
    /// On the server, by a command (e.g. `consentry keys create`) run by an OS user.
    Server { command: String, os_user: String },
}

/// The result of proving a policy version (invariants, never-errors, differences), kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofRecord {
    /// The key that asked for the proofs.
    pub by: String,
    pub at: Instant,
    /// Every invariant proven for every field and the version never errors.
    pub passed: bool,
    /// The review as JSON, as the platform API shows it.
    pub summary: String,
}

/// A privacy officer's decision that a version may be approved although its proofs did not
/// pass (or could not be run), with the reason; kept and shown with the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofWaiver {
    pub by: String,
    pub at: Instant,
    pub reason: String,
}

/// An operator API key, known by its public id and the hash of its secret part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorKey {
    pub id: String,
    /// Hex BLAKE3 hash of the secret part.
    pub hash: String,
    pub name: String,
    pub role: OperatorRole,
    pub created_by: KeyOrigin,
    pub created_at: Instant,
    /// From this instant on the key no longer authenticates.
    pub expires_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
}

impl OperatorKey {
    /// Whether the key authenticates at `at`: not revoked and not expired.
    pub fn is_live(&self, at: Instant) -> bool {
        self.revoked_at.is_none_or(|revoked| revoked > at)
            && self.expires_at.is_none_or(|expires| expires > at)
    }
}

/// What a server secret is for. The identity secret never changes (app-scoped ids are kept by
/// developers for ever); cursor and webhook secrets rotate, each generation replacing the one
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretPurpose {
    /// App-scoped member and post ids (and, in generation 0, everything derived from it).
    Identity,
    /// Sealing paging cursors.
    Cursor,
    /// Signing webhooks (the developers' webhook secrets).
    Webhook,
}

impl SecretPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretPurpose::Identity => "identity",
            SecretPurpose::Cursor => "cursor",
            SecretPurpose::Webhook => "webhook",
        }
    }
    pub fn parse(text: &str) -> Option<SecretPurpose> {
        [SecretPurpose::Identity, SecretPurpose::Cursor, SecretPurpose::Webhook]
            .into_iter()
            .find(|p| p.as_str() == text)
    }
}

/// One generation of a server secret, shared by every node through the store. Never logged,
/// never served over any API.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSecret {
    pub purpose: SecretPurpose,
    /// 0 for the first; each rotation adds the next.
    pub generation: u32,
    /// 32 random bytes.
    pub material: [u8; 32],
    pub created_at: Instant,
    /// Until when the generation before this one is still accepted (cursors it sealed open,
    /// webhooks are signed with it too); after, only this one.
    pub previous_until: Instant,
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerSecret({} generation {}, …)", self.purpose.as_str(), self.generation)
    }
}

/// The schema version a database was last migrated to, beside the newest this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersions {
    /// The newest version recorded as applied in the database.
    pub applied: i64,
    /// The newest version this binary's migrations reach.
    pub known: i64,
}

impl SchemaVersions {
    /// Whether this binary serves the database's schema as it is: not when a newer consentry
    /// migrated it since this one opened it (nor, were it ever so, when it is behind).
    pub fn is_current(self) -> bool {
        self.applied == self.known
    }
}

/// How many notifications the outbox holds, by where they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: u64,
    pub dead: u64,
}

/// The platform's facts and their history. Implementations must be safe to share between
/// request handlers; each method is one atomic transaction.
pub trait Store: Send + Sync {
    // Values: what members, groups, posts and developers are called and say.
    fn put_member(&self, member: &Member, at: Instant) -> StoreResult<()>;
    fn member(&self, id: &MemberId) -> StoreResult<Option<Member>>;
    fn put_group(&self, group: &Group, at: Instant) -> StoreResult<()>;
    fn group(&self, id: &GroupId) -> StoreResult<Option<Group>>;
    /// Fails with `NotFound` if the group or the author does not exist.
    fn put_post(&self, post: &Post) -> StoreResult<()>;
    fn put_developer(&self, developer: &Developer, at: Instant) -> StoreResult<()>;
    fn developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>>;

    // Access facts, each change appended to history.
    /// Sets or (with `None`) ends a membership. Unchanged values append nothing.
    fn set_membership(
        &self,
        group: &GroupId,
        member: &MemberId,
        role: Option<Role>,
        at: Instant,
    ) -> StoreResult<()>;
    fn membership(&self, group: &GroupId, member: &MemberId) -> StoreResult<Option<Role>>;
    fn register_app(&self, app: &App, secret_hash: &str, at: Instant) -> StoreResult<()>;
    fn set_app_status(&self, app: &AppId, status: AppStatus, at: Instant) -> StoreResult<()>;
    fn app(&self, id: &AppId) -> StoreResult<Option<App>>;
    fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<AppCredentials>>;
    fn apps(&self) -> StoreResult<Vec<App>>;
    /// Installs (keeping the original instant if already installed) or, with `None`, removes.
    fn set_installation(
        &self,
        app: &AppId,
        group: &GroupId,
        authorized_by: Option<&MemberId>,
        at: Instant,
    ) -> StoreResult<()>;
    fn installation(&self, app: &AppId, group: &GroupId) -> StoreResult<Option<Installation>>;
    /// Grants (`true`) or withdraws the member's `profile` consent to the app.
    fn set_consent(&self, member: &MemberId, app: &AppId, profile: bool, at: Instant) -> StoreResult<()>;
    /// Which of `members` consent now to `app` seeing their profile.
    fn profile_consents(&self, app: &AppId, members: &[MemberId]) -> StoreResult<HashSet<MemberId>>;

    // Pages, for serving.
    fn member_count(&self, group: &GroupId) -> StoreResult<u64>;
    /// Members of the group with their roles, ordered by member id, after `after`.
    fn members_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(Member, Role)>>;
    /// The same page as [`Store::members_page`] without the members' profiles: their ids and
    /// roles only, which is all a page needs to decide whom it may show (so that the names
    /// and pictures of hidden members are never read). Backends should answer it from the
    /// memberships alone; this default reads the profiles and drops them.
    fn member_roles_page(
        &self,
        group: &GroupId,
        after: Option<&MemberId>,
        limit: usize,
    ) -> StoreResult<Vec<(MemberId, Role)>> {
        Ok(self.members_page(group, after, limit)?.into_iter().map(|(m, role)| (m.id, role)).collect())
    }
    /// The profiles of those of `ids` that exist, by id (unknown ids are left out).
    fn members_by_id(&self, ids: &[MemberId]) -> StoreResult<HashMap<MemberId, Member>> {
        let mut found = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(member) = self.member(id)? {
                found.insert(id.clone(), member);
            }
        }
        Ok(found)
    }
    /// Posts of the group ordered by post id, after `after`.
    fn posts_page(&self, group: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>>;

    // Policies.
    /// Stores new policy text and returns its version number (1, 2, …).
    fn add_policy_version(&self, text: &str, author: &str, at: Instant) -> StoreResult<u32>;
    fn policy_version(&self, version: u32) -> StoreResult<Option<PolicyVersion>>;
    fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>>;
    /// Records that `approver` approved a stored version (idempotent per approver).
    fn approve_policy(&self, version: u32, approver: &str, at: Instant) -> StoreResult<()>;
    /// Who approved a version, and when, oldest first.
    fn policy_approvals(&self, version: u32) -> StoreResult<Vec<(String, Instant)>>;
    /// Keeps a preview (a JSON summary of gains and losses) with the version it previewed.
    fn record_preview(&self, version: u32, by: &str, summary: &str, at: Instant) -> StoreResult<()>;
    /// The previews of a version: (by, when, summary), oldest first.
    fn policy_previews(&self, version: u32) -> StoreResult<Vec<(String, Instant, String)>>;
    /// Keeps the result of a proof review with the version it reviewed.
    fn record_proof(&self, version: u32, proof: &ProofRecord) -> StoreResult<()>;
    /// The proof reviews of a version, oldest first.
    fn policy_proofs(&self, version: u32) -> StoreResult<Vec<ProofRecord>>;
    /// Keeps a privacy officer's waiver of a version's proofs.
    fn record_waiver(&self, version: u32, waiver: &ProofWaiver) -> StoreResult<()>;
    /// The waivers of a version, oldest first.
    fn policy_waivers(&self, version: u32) -> StoreResult<Vec<ProofWaiver>>;
    fn activate_policy(&self, activation: &PolicyActivation) -> StoreResult<()>;
    /// Every activation, oldest first; the last is the active policy.
    fn policy_activations(&self) -> StoreResult<Vec<PolicyActivation>>;
    fn active_policy(&self) -> StoreResult<Option<PolicyVersion>>;

    // Credentials.
    fn put_token(&self, token: &TokenRecord) -> StoreResult<()>;
    fn token(&self, hash: &str) -> StoreResult<Option<TokenRecord>>;
    /// A token with its app's status (`None`: the app no longer exists): what authenticating an
    /// app's request reads, in one read where the backend can (a round trip fewer on a server).
    fn token_with_app_status(&self, hash: &str) -> StoreResult<Option<(TokenRecord, Option<AppStatus>)>> {
        let Some(token) = self.token(hash)? else { return Ok(None) };
        let status = self.app(&token.app)?.map(|app| app.status);
        Ok(Some((token, status)))
    }
    /// Returns whether a live token was revoked.
    fn revoke_token(&self, hash: &str, at: Instant) -> StoreResult<bool>;
    /// Revokes every live token of an app; returns how many.
    fn revoke_app_tokens(&self, app: &AppId, at: Instant) -> StoreResult<u64>;
    /// Stores a new key: `NotFound` if it was made with a key that does not exist, `Conflict`
    /// if its id is taken.
    fn put_operator_key(&self, key: &OperatorKey) -> StoreResult<()>;
    fn operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>>;
    /// Every key, revoked and expired ones too, oldest first (keys made at the same instant
    /// in the order they were stored).
    fn operator_keys(&self) -> StoreResult<Vec<OperatorKey>>;
    fn operator_key_count(&self) -> StoreResult<u64>;
    /// Revokes a key from `at` on; returns whether it was live until now (`false`: it was
    /// already revoked, and keeps its first revocation instant). `NotFound` if unknown. With
    /// `keep_a_live_officer`, refuses (`Conflict`) to revoke the last privacy-officer key live
    /// at `at`, checked and written in one transaction so that two revocations cannot race
    /// past the check together.
    fn revoke_operator_key(&self, id: &str, at: Instant, keep_a_live_officer: bool) -> StoreResult<bool>;

    // The webhook outbox.
    /// Adds a pending notification, due at once; returns its id.
    fn enqueue_notification(
        &self,
        developer: &DeveloperId,
        event: &str,
        payload: &str,
        at: Instant,
    ) -> StoreResult<u64>;
    /// Pending notifications due by `now`, oldest first.
    fn due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<Notification>>;
    /// Records an attempt: delivered, retry at an instant, or dead.
    fn record_delivery(
        &self,
        id: u64,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<()>;
    fn notifications(&self, developer: &DeveloperId) -> StoreResult<Vec<Notification>>;
    /// Gives a dead notification another attempt: pending again, due at `at`, its attempts
    /// and last error kept (so one more failure makes it dead again). `NotFound` unless it is
    /// dead now.
    fn retry_notification(&self, id: u64, at: Instant) -> StoreResult<()>;

    // Annual data-use checkups.
    /// Records that the developer re-certified the app's use of member data.
    fn certify_app(&self, app: &AppId, statement: &str, at: Instant) -> StoreResult<()>;
    /// When the app was last certified, or registered if never.
    fn last_certified(&self, app: &AppId) -> StoreResult<Option<Instant>>;

    // Remediation cases, with every transition kept.
    fn open_case(
        &self,
        developer: &DeveloperId,
        manifest: &str,
        deadline: Instant,
        at: Instant,
    ) -> StoreResult<u64>;
    fn case(&self, id: u64) -> StoreResult<Option<Case>>;
    fn cases(&self) -> StoreResult<Vec<Case>>;
    /// Moves a case from `from` to `to`; a `Conflict` if it is no longer in `from`.
    fn move_case(&self, id: u64, from: CaseState, to: CaseState, note: &str, at: Instant) -> StoreResult<()>;
    fn case_events(&self, id: u64) -> StoreResult<Vec<CaseEvent>>;

    // Several nodes on one store: the shared server secrets, and leases so that each webhook
    // event and each periodic job is handled by one node at a time. `node` is the node's id.
    /// Every generation of every server secret, oldest first per purpose.
    fn server_secrets(&self) -> StoreResult<Vec<ServerSecret>>;
    /// Adds a generation unless one of that (purpose, generation) exists: returns whether this
    /// one was added (`false`: another node added its own first; read it back and use that).
    fn add_server_secret(&self, secret: &ServerSecret) -> StoreResult<bool>;
    /// Hands pending notifications due by `now` to `node` until `lease_until`, oldest first:
    /// at most `limit`, at most `per_developer` of one developer, and only of developers none of
    /// whose notifications is leased (unexpired) by anyone, so that one node at a time delivers
    /// a developer's events, in queue order. A claimed notification is handed to no one else
    /// until it is recorded or its lease ends.
    fn claim_due_notifications(
        &self,
        node: &str,
        now: Instant,
        lease_until: Instant,
        limit: usize,
        per_developer: usize,
    ) -> StoreResult<Vec<Notification>>;
    /// Records an attempt of a notification `node` claimed, as [`Store::record_delivery`] does,
    /// ending the lease; returns `false` and writes nothing when the lease is no longer
    /// `node`'s (it ran out and another node claimed the notification, or it was recorded).
    fn record_claimed_delivery(
        &self,
        id: u64,
        node: &str,
        status: DeliveryStatus,
        next_attempt_at: Instant,
        error: Option<&str>,
    ) -> StoreResult<bool>;
    /// Gives back notifications `node` claimed and did not attempt (they become claimable at
    /// once, attempts unchanged); others' leases are left alone.
    fn release_notifications(&self, node: &str, ids: &[u64]) -> StoreResult<()>;
    /// How many notifications are pending and dead.
    fn outbox_depth(&self) -> StoreResult<OutboxDepth>;
    /// Takes the periodic job `job` for `node` until `lease_until` if it is due at `now` and no
    /// one holds it (a lease that ran out is free): returns whether `node` holds it. A job
    /// never seen before is first due at `first_due`.
    fn claim_job(
        &self,
        job: &str,
        node: &str,
        now: Instant,
        lease_until: Instant,
        first_due: Instant,
    ) -> StoreResult<bool>;
    /// Ends `node`'s run of `job`: the job is next due at `next_due`. `false` (nothing written)
    /// when `node` no longer holds it.
    fn finish_job(&self, job: &str, node: &str, next_due: Instant) -> StoreResult<bool>;
    /// The database's schema version now, read afresh (another node may have migrated it
    /// since this one opened it), and the newest this binary knows: `/readyz` says not ready
    /// unless they are the same.
    fn schema_versions(&self) -> StoreResult<SchemaVersions>;

    // History.
    /// Exactly the access facts that were true at `at`.
    fn facts_as_of(&self, at: Instant) -> StoreResult<Facts>;
    /// Every change of every access fact, for audits that replay history.
    fn fact_history(&self) -> StoreResult<FactHistory>;

    // Serving: one snapshot per request, ordered against changes.
    /// Everything one request decides on, read as one consistent snapshot (see [`page`]). The
    /// default reads fact by fact ([`read_page_call_by_call`]), which is a snapshot only if
    /// nothing changes meanwhile: every backend reads it in one transaction instead.
    fn read_page(&self, query: &PageQuery) -> StoreResult<PageSnapshot> {
        read_page_call_by_call(self, query)
    }
    /// The fence that orders changes against requests across processes (see [`fence`]);
    /// `None` where one process makes every change and orders them itself (SQLite).
    fn release_fence(&self) -> Option<&dyn ReleaseFence> {
        None
    }
}
