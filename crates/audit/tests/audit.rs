//! The audit against brute force, against the policy enforced throughout, and against an
//! injected enforcement fault.

#![allow(clippy::indexing_slicing)] // the story's indices are generated within range

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use consentry_audit::{apps_by_id, audit_could, audit_did, AppExposure, AuditContext, History};
use consentry_ledger::{Entries, Ledger, LedgerOptions};
use consentry_policy::{compile, naive_decide, CompiledPolicy, PageFacts, SubjectFacts};
use consentry_service::{Clock, PageRequest, ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store::{AppCredentials, FactHistory, Facts, OperatorKey, Store, StoreResult, TokenRecord};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{
    App, AppId, AppStatus, Developer, DeveloperId, Field, Group, GroupId, Installation, Instant, Member,
    MemberId, OperatorRole, PolicyActivation, PolicyVersion, Post, PostId, ResourceKind, Role, Scope,
    Subject,
};
use proptest::prelude::*;

const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const GRANDFATHERED: &str = include_str!("../../../policies/groups-2018-grandfathered.cedar");

/// The grandfathered rules with their cutoff moved into the stories below, which start at
/// 1,500,000,000 and advance an hour a step: installations of the first 15 hours keep the
/// old access.
fn grandfathered_in_story() -> String {
    GRANDFATHERED.replace("1522800000", "1500054000")
}

/// The same rules spelled otherwise: attributes as escaped strings. Cedar reads them alike,
/// so must the engine (issue 8: it used to search the text for `installed_since`).
fn reworded(text: &str) -> String {
    text.replace("context.installed_since", r#"context["installed\u{5f}since"]"#)
        .replace("principal.status", r#"principal["st\u{61}tus"]"#)
        .replace("context.subject_consented_profile", r#"context["subject_consented_profile"]"#)
}

/// The profile fields whose capability *could* audits.
const PROFILE: [Field; 3] = [Field::MemberName, Field::MemberPicture, Field::PostAuthor];

fn member(i: usize) -> MemberId {
    MemberId::parse(&format!("m{i}")).unwrap_or_else(|e| unreachable!("{e}"))
}
fn group(i: usize) -> GroupId {
    GroupId::parse(&format!("g{i}")).unwrap_or_else(|e| unreachable!("{e}"))
}

/// A store that answers consent questions as they were at a fixed earlier instant: the
/// enforcement fault the audit must catch.
struct StaleConsents {
    inner: SqliteStore,
    stale_at: std::sync::Mutex<Option<Instant>>,
}

macro_rules! delegate {
    ($($name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.inner.$name($($arg),*) })*
    };
}

impl Store for StaleConsents {
    delegate! {
        put_member(&self, m: &Member, at: Instant) -> StoreResult<()>;
        member(&self, id: &MemberId) -> StoreResult<Option<Member>>;
        put_group(&self, g: &Group, at: Instant) -> StoreResult<()>;
        group(&self, id: &GroupId) -> StoreResult<Option<Group>>;
        put_post(&self, p: &Post) -> StoreResult<()>;
        put_developer(&self, d: &Developer, at: Instant) -> StoreResult<()>;
        developer(&self, id: &DeveloperId) -> StoreResult<Option<Developer>>;
        set_membership(&self, g: &GroupId, m: &MemberId, r: Option<Role>, at: Instant) -> StoreResult<()>;
        membership(&self, g: &GroupId, m: &MemberId) -> StoreResult<Option<Role>>;
        register_app(&self, a: &App, h: &str, at: Instant) -> StoreResult<()>;
        set_app_status(&self, a: &AppId, s: AppStatus, at: Instant) -> StoreResult<()>;
        app(&self, id: &AppId) -> StoreResult<Option<App>>;
        app_by_client_id(&self, c: &str) -> StoreResult<Option<AppCredentials>>;
        apps(&self) -> StoreResult<Vec<App>>;
        set_installation(&self, a: &AppId, g: &GroupId, by: Option<&MemberId>, at: Instant) -> StoreResult<()>;
        installation(&self, a: &AppId, g: &GroupId) -> StoreResult<Option<Installation>>;
        set_consent(&self, m: &MemberId, a: &AppId, p: bool, at: Instant) -> StoreResult<()>;
        member_count(&self, g: &GroupId) -> StoreResult<u64>;
        members_page(&self, g: &GroupId, after: Option<&MemberId>, limit: usize) -> StoreResult<Vec<(Member, Role)>>;
        posts_page(&self, g: &GroupId, after: Option<&PostId>, limit: usize) -> StoreResult<Vec<Post>>;
        add_policy_version(&self, t: &str, a: &str, at: Instant) -> StoreResult<u32>;
        policy_version(&self, v: u32) -> StoreResult<Option<PolicyVersion>>;
        policy_versions(&self) -> StoreResult<Vec<PolicyVersion>>;
        activate_policy(&self, a: &PolicyActivation) -> StoreResult<()>;
        approve_policy(&self, v: u32, who: &str, at: Instant) -> StoreResult<()>;
        policy_approvals(&self, v: u32) -> StoreResult<Vec<(String, Instant)>>;
        record_preview(&self, v: u32, by: &str, s: &str, at: Instant) -> StoreResult<()>;
        policy_previews(&self, v: u32) -> StoreResult<Vec<(String, Instant, String)>>;
        record_proof(&self, v: u32, p: &consentry_store::ProofRecord) -> StoreResult<()>;
        policy_proofs(&self, v: u32) -> StoreResult<Vec<consentry_store::ProofRecord>>;
        record_waiver(&self, v: u32, w: &consentry_store::ProofWaiver) -> StoreResult<()>;
        policy_waivers(&self, v: u32) -> StoreResult<Vec<consentry_store::ProofWaiver>>;
        policy_activations(&self) -> StoreResult<Vec<PolicyActivation>>;
        active_policy(&self) -> StoreResult<Option<PolicyVersion>>;
        put_token(&self, t: &TokenRecord) -> StoreResult<()>;
        token(&self, h: &str) -> StoreResult<Option<TokenRecord>>;
        revoke_token(&self, h: &str, at: Instant) -> StoreResult<bool>;
        revoke_app_tokens(&self, a: &AppId, at: Instant) -> StoreResult<u64>;
        put_operator_key(&self, k: &OperatorKey) -> StoreResult<()>;
        operator_key(&self, id: &str) -> StoreResult<Option<OperatorKey>>;
        operator_key_count(&self) -> StoreResult<u64>;
        operator_keys(&self) -> StoreResult<Vec<OperatorKey>>;
        revoke_operator_key(&self, id: &str, at: Instant, keep: bool) -> StoreResult<bool>;
        facts_as_of(&self, at: Instant) -> StoreResult<Facts>;
        fact_history(&self) -> StoreResult<FactHistory>;
        enqueue_notification(&self, d: &DeveloperId, e: &str, p: &str, at: Instant) -> StoreResult<u64>;
        due_notifications(&self, now: Instant, limit: usize) -> StoreResult<Vec<consentry_store::Notification>>;
        record_delivery(&self, id: u64, s: consentry_store::DeliveryStatus, next: Instant, e: Option<&str>) -> StoreResult<()>;
        server_secrets(&self) -> StoreResult<Vec<consentry_store::ServerSecret>>;
        add_server_secret(&self, s: &consentry_store::ServerSecret) -> StoreResult<bool>;
        claim_due_notifications(&self, n: &str, now: Instant, until: Instant, limit: usize, per: usize) -> StoreResult<Vec<consentry_store::Notification>>;
        record_claimed_delivery(&self, id: u64, n: &str, s: consentry_store::DeliveryStatus, next: Instant, e: Option<&str>) -> StoreResult<bool>;
        release_notifications(&self, n: &str, ids: &[u64]) -> StoreResult<()>;
        outbox_depth(&self) -> StoreResult<consentry_store::OutboxDepth>;
        claim_job(&self, j: &str, n: &str, now: Instant, until: Instant, first: Instant) -> StoreResult<bool>;
        finish_job(&self, j: &str, n: &str, next: Instant) -> StoreResult<bool>;
        schema_versions(&self) -> StoreResult<consentry_store::SchemaVersions>;
        notifications(&self, d: &DeveloperId) -> StoreResult<Vec<consentry_store::Notification>>;
        open_case(&self, d: &DeveloperId, m: &str, deadline: Instant, at: Instant) -> StoreResult<u64>;
        case(&self, id: u64) -> StoreResult<Option<consentry_store::Case>>;
        cases(&self) -> StoreResult<Vec<consentry_store::Case>>;
        move_case(&self, id: u64, f: consentry_store::CaseState, t: consentry_store::CaseState, n: &str, at: Instant) -> StoreResult<()>;
        case_events(&self, id: u64) -> StoreResult<Vec<consentry_store::CaseEvent>>;
        certify_app(&self, a: &AppId, s: &str, at: Instant) -> StoreResult<()>;
        last_certified(&self, a: &AppId) -> StoreResult<Option<Instant>>;
    }

    fn profile_consents(&self, app: &AppId, members: &[MemberId]) -> StoreResult<HashSet<MemberId>> {
        match *self.stale_at.lock().map_err(|e| consentry_store::StoreError::Backend(e.to_string()))? {
            None => self.inner.profile_consents(app, members),
            Some(stale) => {
                let facts = self.inner.facts_as_of(stale)?;
                Ok(members
                    .iter()
                    .filter(|m| facts.profile_consents.contains(&((*m).clone(), app.clone())))
                    .cloned()
                    .collect())
            }
        }
    }
}

/// A step of a random story.
#[derive(Debug, Clone)]
enum Step {
    Join(usize, usize, bool),
    Leave(usize, usize),
    Consent(usize, usize, bool),
    Install(usize, usize),
    Uninstall(usize, usize),
    Status(usize, AppStatus),
    Read(usize, usize, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..8usize, any::<bool>()).prop_map(|(g, m, admin)| Step::Join(g, m, admin)),
        (0..3usize, 0..8usize).prop_map(|(g, m)| Step::Leave(g, m)),
        (0..8usize, 0..2usize, any::<bool>()).prop_map(|(m, a, c)| Step::Consent(m, a, c)),
        (0..2usize, 0..3usize).prop_map(|(a, g)| Step::Install(a, g)),
        (0..2usize, 0..3usize).prop_map(|(a, g)| Step::Uninstall(a, g)),
        (0..2usize, prop_oneof![Just(AppStatus::Active), Just(AppStatus::Suspended)])
            .prop_map(|(a, s)| Step::Status(a, s)),
        (0..2usize, 0..3usize, 0..3u8).prop_map(|(a, g, r)| Step::Read(a, g, r)),
        (0..2usize, 0..3usize, 0..3u8).prop_map(|(a, g, r)| Step::Read(a, g, r)),
    ]
}

struct World {
    store: Arc<StaleConsents>,
    service: Service,
    clock: Arc<SimulatedClock>,
    /// Two nodes' streams under one ledger root: reads are recorded by each in turn, so the
    /// audit reads a ledger of two streams interleaved in time, as several nodes write it.
    ledger: [Ledger; 2],
    reads: std::cell::Cell<usize>,
    dir: std::path::PathBuf,
    apps: Vec<(AppId, consentry_service::AppSession)>,
    key: ServerKey,
    /// Two keys made on the server: one writes policies, the other approves them.
    author: consentry_service::OperatorSession,
    officer: consentry_service::OperatorSession,
}

fn world(name: &str) -> World {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("consentry-audit-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(StaleConsents {
        inner: SqliteStore::in_memory().unwrap_or_else(|e| unreachable!("{e}")),
        stale_at: std::sync::Mutex::new(None),
    });
    let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_500_000_000)));
    let key = ServerKey::generate();
    let config = ServiceConfig { token_ttl_secs: 10 * 365 * 86_400, ..ServiceConfig::default() };
    let service = Service::new(store.clone(), clock.clone(), key.clone(), config);
    let ok = |r: Result<(), consentry_service::ServiceError>| r.unwrap_or_else(|e| unreachable!("{e}"));
    for m in 0..8 {
        ok(service.put_member(&member(m), &format!("M{m}"), "https://p.example/m.jpg"));
    }
    for g in 0..3 {
        ok(service.put_group(&group(g), &format!("G{g}")));
        ok(service.set_membership(&group(g), &member(g), Some(Role::Admin)));
    }
    let developer = DeveloperId::parse("dev").unwrap_or_else(|e| unreachable!("{e}"));
    ok(service.put_developer(&developer, "Dev", "d@dev.example", "https://dev.example/h"));
    let mut apps = Vec::new();
    for a in 0..2 {
        let id = AppId::parse(&format!("app-{a}")).unwrap_or_else(|e| unreachable!("{e}"));
        let registered = service
            .register_app_with_id(id.clone(), &developer, "App", "analytics")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let token = service
            .issue_token(&registered.app.client_id, &registered.client_secret)
            .unwrap_or_else(|e| unreachable!("{e}"));
        apps.push((
            id,
            service.authenticate_app(&token.access_token).unwrap_or_else(|e| unreachable!("{e}")),
        ));
    }
    let stream = |node: &str| {
        let node = consentry_types::NodeId::parse(node).unwrap_or_else(|e| unreachable!("{e}"));
        Ledger::open_stream(&dir.join("ledger"), &node, LedgerOptions::default())
            .unwrap_or_else(|e| unreachable!("{e}"))
    };
    let ledger = [stream("web-a"), stream("web-b")];
    let sign_in = |name: &str, role: OperatorRole| {
        let made = service.create_key_on_server("test", "tester", name, role, None);
        let made = made.unwrap_or_else(|e| unreachable!("{e}"));
        service.authenticate_operator(&made.key).unwrap_or_else(|e| unreachable!("{e}"))
    };
    let (author, officer) =
        (sign_in("author", OperatorRole::Operator), sign_in("officer", OperatorRole::PrivacyOfficer));
    World { store, service, clock, ledger, reads: std::cell::Cell::new(0), dir, apps, key, author, officer }
}

impl World {
    fn play(&self, step: &Step) {
        self.clock.advance_secs(3_600);
        let _ = match step {
            Step::Join(g, m, admin) => self.service.set_membership(
                &group(*g),
                &member(*m),
                Some(if *admin { Role::Admin } else { Role::Member }),
            ),
            Step::Leave(g, m) => self.service.set_membership(&group(*g), &member(*m), None),
            Step::Consent(m, a, c) => self.service.set_consent(
                &member(*m),
                &self.apps[*a].0,
                if *c { &[Scope::Profile] } else { &[] },
            ),
            Step::Install(a, g) => {
                // Any current admin of the group may install.
                let admin = (0..8).find(|m| {
                    self.store.membership(&group(*g), &member(*m)).ok().flatten() == Some(Role::Admin)
                });
                match admin {
                    Some(admin) => self.service.install_app(&self.apps[*a].0, &group(*g), &member(admin)),
                    None => Ok(()),
                }
            }
            Step::Uninstall(a, g) => self.service.uninstall_app(&self.apps[*a].0, &group(*g)),
            Step::Status(a, s) => self.service.set_app_status(&self.apps[*a].0, *s),
            Step::Read(a, g, route) => {
                let (_, session) = &self.apps[*a];
                let page = PageRequest { after: None, limit: Some(50) };
                let record = match route {
                    0 => self
                        .service
                        .read_members(
                            session,
                            &group(*g),
                            consentry_service::parse_fields(ResourceKind::Member, None).unwrap_or_default(),
                            &page,
                        )
                        .map(|s| {
                            s.record(&consentry_service::request_id(), "GET /v1/groups/{id}/members", session)
                        }),
                    1 => self
                        .service
                        .read_posts(
                            session,
                            &group(*g),
                            consentry_service::parse_fields(ResourceKind::Post, None).unwrap_or_default(),
                            &page,
                        )
                        .map(|s| {
                            s.record(&consentry_service::request_id(), "GET /v1/groups/{id}/posts", session)
                        }),
                    _ => self
                        .service
                        .read_group(
                            session,
                            &group(*g),
                            consentry_service::parse_fields(ResourceKind::Group, None).unwrap_or_default(),
                        )
                        .map(|s| s.record(&consentry_service::request_id(), "GET /v1/groups/{id}", session)),
                };
                if let Ok(record) = record {
                    let node = self.reads.replace(self.reads.get() + 1) % 2;
                    self.ledger[node].append(&record).unwrap_or_else(|e| unreachable!("{e}"));
                }
                Ok(())
            }
        };
    }

    fn post_something(&self) {
        for g in 0..3 {
            let _ = self.service.put_post(
                &group(g),
                &PostId::parse(&format!("p{g}")).unwrap_or_else(|e| unreachable!("{e}")),
                &member(g),
                "hello",
            );
        }
    }

    fn audit(&self, policy: &CompiledPolicy) -> (consentry_audit::DidReport, consentry_audit::CouldReport) {
        let history = History::new(&self.store.fact_history().unwrap_or_default());
        let apps = apps_by_id(self.store.apps().unwrap_or_default());
        let enforced: HashMap<u32, CompiledPolicy> = self
            .store
            .policy_versions()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| compile(v.version, &v.text).ok().map(|c| (v.version, c)))
            .collect();
        let key = self.key.clone();
        let scoped = move |a: &AppId, m: &MemberId| key.scoped_member_id(a, m);
        let context = AuditContext {
            policy,
            from: Instant::MIN,
            to: Instant::MAX,
            history: &history,
            apps: &apps,
            enforced: &enforced,
            scoped_id: &scoped,
        };
        let mut entries = consentry_ledger::RawEntries::open(&self.dir.join("ledger"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let did = audit_did(&context, &mut entries, &mut |_| {}).unwrap_or_else(|e| unreachable!("{e}"));
        let could = audit_could(&context).unwrap_or_else(|e| unreachable!("{e}"));
        (did, could)
    }

    /// Brute force: facts reconstructed by the store for each record's instant, Cedar called
    /// through plain per-field requests, violations counted per (app, field).
    fn brute_force(&self, policy: &CompiledPolicy) -> BTreeMap<(AppId, Field), u64> {
        let apps = apps_by_id(self.store.apps().unwrap_or_default());
        let mut counts = BTreeMap::new();
        for entry in Entries::open(&self.dir.join("ledger")).unwrap_or_else(|e| unreachable!("{e}")) {
            let record = entry.unwrap_or_else(|e| unreachable!("{e}")).record;
            let facts = self.store.facts_as_of(record.at).unwrap_or_default();
            let installation = facts.installations.get(&(record.app.clone(), record.group.clone()));
            let page = PageFacts {
                app: record.app.clone(),
                app_status: facts.app_statuses.get(&record.app).copied().unwrap_or(AppStatus::Banned),
                app_category: apps.get(&record.app).map(|a| a.category.clone()).unwrap_or_default(),
                group: record.group.clone(),
                installed: installation.is_some(),
                installed_since: installation.map_or(0, |(_, since)| since.secs()),
            };
            for disclosure in &record.disclosures {
                let subject = match &disclosure.subject {
                    Subject::Member(m) => {
                        let role = facts.memberships.get(&(record.group.clone(), m.clone())).copied();
                        Some((
                            m,
                            SubjectFacts {
                                is_member: role.is_some(),
                                role,
                                consented_profile: facts
                                    .profile_consents
                                    .contains(&(m.clone(), record.app.clone())),
                            },
                        ))
                    }
                    Subject::Group(_) => None,
                };
                for field in disclosure.fields.iter() {
                    if !naive_decide(policy, &page, field, subject).unwrap_or(true) {
                        *counts.entry((record.app.clone(), field)).or_default() += 1;
                    }
                }
            }
        }
        counts
    }
}

impl World {
    /// Brute force for *could*: the facts the store reconstructs at every instant any fact
    /// changed, and plain Cedar on every (installation, member of its group, profile field)
    /// they hold: what the policy enforced at that instant allowed and `policy` denies, and for
    /// how long. Independent of the audit's history index, cuts and engine.
    fn brute_force_could(&self, policy: &CompiledPolicy) -> BTreeMap<AppId, AppExposure> {
        let history = self.store.fact_history().unwrap_or_default();
        let apps = apps_by_id(self.store.apps().unwrap_or_default());
        let enforced: HashMap<u32, CompiledPolicy> = self
            .store
            .policy_versions()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| compile(v.version, &v.text).ok().map(|c| (v.version, c)))
            .collect();
        let mut instants: Vec<Instant> = history
            .memberships
            .iter()
            .map(|c| c.at)
            .chain(history.installations.iter().map(|c| c.at))
            .chain(history.profile_consents.iter().map(|c| c.at))
            .chain(history.app_statuses.iter().map(|c| c.at))
            .chain(history.activations.iter().map(|a| a.at))
            .collect();
        instants.sort();
        instants.dedup();
        // Plain Cedar's answers, remembered by their whole input (real ids and values) only to
        // keep the test fast: (version enforced, or None for `policy`), facts, field, member.
        type Input = (Option<u32>, PageFacts, Field, MemberId, SubjectFacts);
        let mut cedar: HashMap<Input, bool> = HashMap::new();
        let mut decide =
            |version: Option<u32>, page: &PageFacts, field: Field, member: &MemberId, subject| {
                let which = match version {
                    Some(v) => enforced.get(&v),
                    None => Some(policy),
                };
                let Some(which) = which else { return false };
                *cedar.entry((version, page.clone(), field, member.clone(), subject)).or_insert_with(|| {
                    naive_decide(which, page, field, Some((member, subject)))
                        .unwrap_or_else(|e| unreachable!("{e}"))
                })
            };
        let mut report: BTreeMap<AppId, AppExposure> = BTreeMap::new();
        for (i, from) in instants.iter().enumerate() {
            let to = instants.get(i + 1).copied().unwrap_or(Instant::MAX);
            let facts = self.store.facts_as_of(*from).unwrap_or_else(|e| unreachable!("{e}"));
            let Some(version) = facts.active_policy else { continue };
            for ((app, group), (_, since)) in &facts.installations {
                let page = PageFacts {
                    app: app.clone(),
                    app_status: facts.app_statuses.get(app).copied().unwrap_or(AppStatus::Banned),
                    app_category: apps.get(app).map(|a| a.category.clone()).unwrap_or_default(),
                    group: group.clone(),
                    installed: true,
                    installed_since: since.secs(),
                };
                for ((_, member), role) in facts.memberships.iter().filter(|((g, _), _)| g == group) {
                    let subject = SubjectFacts {
                        is_member: true,
                        role: Some(*role),
                        consented_profile: facts.profile_consents.contains(&(member.clone(), app.clone())),
                    };
                    let exposed: Vec<Field> = PROFILE
                        .into_iter()
                        .filter(|f| {
                            decide(Some(version), &page, *f, member, subject)
                                && !decide(None, &page, *f, member, subject)
                        })
                        .collect();
                    if exposed.is_empty() {
                        continue;
                    }
                    let info = apps.get(app);
                    let exposure = report.entry(app.clone()).or_insert_with(|| AppExposure {
                        developer: info.map(|a| a.developer.clone()),
                        category: info.map(|a| a.category.clone()).unwrap_or_default(),
                        ..AppExposure::default()
                    });
                    exposure.groups.insert(group.clone());
                    exposure.members.insert(member.clone());
                    exposure.fields.extend(exposed);
                    exposure.member_seconds += u64::try_from(to.secs() - from.secs()).unwrap_or(0);
                    exposure.first = Some(exposure.first.map_or(*from, |f| f.min(*from)));
                    exposure.last = Some(exposure.last.map_or(to, |l| l.max(to)));
                }
            }
        }
        report
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn by_app_field(report: &consentry_audit::DidReport) -> BTreeMap<(AppId, Field), u64> {
    report
        .by_app
        .iter()
        .flat_map(|(app, f)| f.by_field.iter().map(move |(field, n)| ((app.clone(), *field), *n)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Auditing against the policy enforced throughout, spelled otherwise, finds nothing, did
    /// or could; brute force agrees. The enforced and the audited texts differ (one reads its
    /// attributes as escaped strings), so each is compiled and decided on its own: if the
    /// engine read either differently from Cedar, findings would appear.
    #[test]
    fn the_enforced_policy_finds_zero_violations(
        which in 0..3usize,
        reworded_enforced in any::<bool>(),
        steps in prop::collection::vec(step(), 5..60),
    ) {
        let w = world("zero");
        let text = [LEGACY.to_string(), GROUPS_2018.to_string(), grandfathered_in_story()][which].clone();
        let (enforced_text, audited_text) =
            if reworded_enforced { (reworded(&text), text) } else { (text.clone(), reworded(&text)) };
        let version = w.service.submit_policy(&enforced_text, &w.author).unwrap_or_else(|e| unreachable!("{e}"));
        w.service.record_proof(version, &w.officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
        w.service.approve_policy(version, &w.officer).unwrap_or_else(|e| unreachable!("{e}"));
        w.service.activate_policy(version, &w.author, "throughout").unwrap_or_else(|e| unreachable!("{e}"));
        w.post_something();
        for s in &steps {
            w.play(s);
        }
        let policy = compile(version, &audited_text).unwrap_or_else(|e| unreachable!("{e}"));
        let (did, could) = w.audit(&policy);
        prop_assert_eq!(did.violations, 0);
        prop_assert!(could.by_app.is_empty(), "{:?}", could.by_app);
        prop_assert!(w.brute_force_could(&policy).is_empty());
    }

    /// Under a policy change mid-story (legacy, then groups-2018), the audit against another
    /// policy equals brute force, both what apps did receive and what they could read.
    #[test]
    fn the_audit_equals_brute_force_for_did_and_could(
        audited in 0..3usize,
        before in prop::collection::vec(step(), 3..30),
        after in prop::collection::vec(step(), 3..30),
    ) {
        let w = world("brute");
        let legacy = w.service.submit_policy(LEGACY, &w.author).unwrap_or_else(|e| unreachable!("{e}"));
        w.service.record_proof(legacy, &w.officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
        w.service.approve_policy(legacy, &w.officer).unwrap_or_else(|e| unreachable!("{e}"));
        w.service.activate_policy(legacy, &w.author, "first").unwrap_or_else(|e| unreachable!("{e}"));
        w.post_something();
        for s in &before {
            w.play(s);
        }
        let intended = w.service.submit_policy(GROUPS_2018, &w.author).unwrap_or_else(|e| unreachable!("{e}"));
        w.clock.advance_secs(60);
        w.service.record_proof(intended, &w.officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
        w.service.approve_policy(intended, &w.officer).unwrap_or_else(|e| unreachable!("{e}"));
        w.service.activate_policy(intended, &w.author, "change").unwrap_or_else(|e| unreachable!("{e}"));
        for s in &after {
            w.play(s);
        }
        let text = [GROUPS_2018.to_string(), grandfathered_in_story(), reworded(&grandfathered_in_story())][audited].clone();
        let policy = compile(99, &text).unwrap_or_else(|e| unreachable!("{e}"));
        let (did, could) = w.audit(&policy);
        prop_assert_eq!(by_app_field(&did), w.brute_force(&policy));
        prop_assert_eq!(could.by_app, w.brute_force_could(&policy));
    }
}

#[test]
fn a_stale_consent_in_enforcement_is_found_exactly() {
    let w = world("stale");
    let version = w.service.submit_policy(GROUPS_2018, &w.author).unwrap_or_else(|e| unreachable!("{e}"));
    w.service.record_proof(version, &w.officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    w.service.approve_policy(version, &w.officer).unwrap_or_else(|e| unreachable!("{e}"));
    w.service.activate_policy(version, &w.author, "throughout").unwrap_or_else(|e| unreachable!("{e}"));
    let (app, _) = w.apps[0].clone();
    for m in 0..8 {
        let _ = w.service.set_membership(
            &group(0),
            &member(m),
            Some(if m == 0 { Role::Admin } else { Role::Member }),
        );
        let _ = w.service.set_consent(&member(m), &app, &[Scope::Profile]);
    }
    let _ = w.service.install_app(&app, &group(0), &member(0));
    w.clock.advance_secs(10);
    w.play(&Step::Read(0, 0, 0));
    // Enforcement starts reading consents as of now, then three members withdraw.
    *w.store.stale_at.lock().unwrap_or_else(|e| unreachable!("{e}")) = Some(w.clock.now());
    for m in [2, 5, 7] {
        w.play(&Step::Consent(m, 0, false));
    }
    w.play(&Step::Read(0, 0, 0));
    w.play(&Step::Read(0, 0, 0));
    let policy = compile(version, GROUPS_2018).unwrap_or_else(|e| unreachable!("{e}"));
    let (did, _) = w.audit(&policy);
    let findings = did.by_app.get(&app).cloned().unwrap_or_default();
    let expected: std::collections::BTreeSet<MemberId> = [2, 5, 7].into_iter().map(member).collect();
    assert_eq!(findings.members, expected);
    // Two reads after the withdrawals, each with name and picture of three members.
    assert_eq!(findings.violations, 2 * 3 * 2);
    assert_eq!(did.violations, 12);
    let manifest: Vec<(String, Field)> =
        did.manifests.values().flat_map(|a| a.values()).flat_map(|s| s.iter().cloned()).collect();
    let scoped: HashSet<String> =
        [2, 5, 7].into_iter().map(|m| w.key.scoped_member_id(&app, &member(m))).collect();
    assert_eq!(manifest.len(), 6);
    assert!(manifest.iter().all(|(id, _)| scoped.contains(id)));
    let _ = OperatorRole::Auditor;
}

#[test]
fn legacy_reads_of_members_who_never_opted_in_are_violations_of_groups_2018() {
    let w = world("legacy");
    let legacy = w.service.submit_policy(LEGACY, &w.author).unwrap_or_else(|e| unreachable!("{e}"));
    w.service.record_proof(legacy, &w.officer, true, "{}").unwrap_or_else(|e| unreachable!("{e}"));
    w.service.approve_policy(legacy, &w.officer).unwrap_or_else(|e| unreachable!("{e}"));
    w.service.activate_policy(legacy, &w.author, "2017").unwrap_or_else(|e| unreachable!("{e}"));
    let (app, _) = w.apps[0].clone();
    for m in [1, 2] {
        let _ = w.service.set_membership(&group(0), &member(m), Some(Role::Member));
    }
    let _ = w.service.set_consent(&member(1), &app, &[Scope::Profile]);
    let _ = w.service.install_app(&app, &group(0), &member(0));
    w.post_something();
    w.play(&Step::Read(0, 0, 0)); // members m0, m1, m2: name and picture
    w.play(&Step::Read(0, 0, 1)); // the post by m0: content, time, author
    let policy = compile(2, GROUPS_2018).unwrap_or_else(|e| unreachable!("{e}"));
    let (did, could) = w.audit(&policy);
    let expected: BTreeMap<(AppId, Field), u64> = [
        ((app.clone(), Field::MemberName), 2),
        ((app.clone(), Field::MemberPicture), 2),
        ((app.clone(), Field::PostAuthor), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_app_field(&did), expected);
    assert_eq!(w.brute_force(&policy), expected);
    // The capability: m0 and m2 exposed from the installation on, whether read or not.
    let exposure = could.by_app.get(&app).cloned().unwrap_or_default();
    assert_eq!(exposure.members, [0, 2].into_iter().map(member).collect());
    assert!(exposure.member_seconds > 0);
    assert_eq!(could.by_app, w.brute_force_could(&policy));
}
