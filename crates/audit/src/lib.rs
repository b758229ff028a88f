//! Retroactive audits. For a window and a policy P: which recorded disclosures P would have
//! denied given the facts as they were at that instant (*did*), and which apps held, through
//! their installations, a capability P denies whether or not they used it (*could*).
//!
//! The audit derives facts from history and decisions from the policy text (invariant 7):
//! it reads the ledger and the store's fact history, and decides with its own engine. It
//! never consults what enforcement decided or cached.

mod history;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use consentry_ledger::LedgerError;
use consentry_policy::{CompiledPolicy, Engine, PageFacts, PolicyError, SubjectFacts};
use consentry_types::{
    App, AppId, AppStatus, DeveloperId, Field, FieldSet, GroupId, Instant, MemberId, Role,
};

pub use history::History;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// What the audit knows besides history: the apps (developer, category), the policy to
/// audit against, the stored versions enforcement used, and how an app names a member.
pub struct AuditContext<'a> {
    pub policy: &'a CompiledPolicy,
    pub from: Instant,
    pub to: Instant,
    pub history: &'a History,
    pub apps: &'a HashMap<AppId, App>,
    /// Every stored policy version, compiled: the rules enforcement applied at each instant.
    pub enforced: &'a HashMap<u32, CompiledPolicy>,
    /// The app-scoped id an app received for a member.
    pub scoped_id: &'a (dyn Fn(&AppId, &MemberId) -> String + Sync),
}

/// Findings for one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFindings {
    pub developer: Option<DeveloperId>,
    pub category: String,
    /// Disclosed (subject, field) pairs the policy denies.
    pub violations: u64,
    pub by_field: BTreeMap<Field, u64>,
    pub members: BTreeSet<MemberId>,
    pub groups: BTreeSet<GroupId>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// The *did* answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DidReport {
    pub records_checked: u64,
    pub disclosures_checked: u64,
    pub violations: u64,
    pub by_app: BTreeMap<AppId, AppFindings>,
    /// Violating disclosures per (day, app), for the chart.
    pub by_day: BTreeMap<(String, AppId), u64>,
    /// Per developer and app: exactly the (app-scoped member id, field) pairs received in violation.
    pub manifests: BTreeMap<DeveloperId, BTreeMap<AppId, BTreeSet<(String, Field)>>>,
}

/// One app's capability that the policy denies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppExposure {
    pub developer: Option<DeveloperId>,
    pub category: String,
    pub groups: BTreeSet<GroupId>,
    pub members: BTreeSet<MemberId>,
    pub fields: BTreeSet<Field>,
    /// Sum over exposed members of the time they were exposed, in seconds.
    pub member_seconds: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// The *could* answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouldReport {
    pub installations_checked: u64,
    pub by_app: BTreeMap<AppId, AppExposure>,
}

impl DidReport {
    pub fn developers(&self) -> BTreeSet<DeveloperId> {
        self.by_app.values().filter_map(|a| a.developer.clone()).collect()
    }
}

impl CouldReport {
    pub fn developers(&self) -> BTreeSet<DeveloperId> {
        self.by_app.values().filter_map(|a| a.developer.clone()).collect()
    }
}

fn page_facts(context: &AuditContext<'_>, app: &AppId, group: &GroupId, t: Instant) -> PageFacts {
    let since = context.history.installed_since(app, group, t);
    PageFacts {
        app: app.clone(),
        // An app unknown at that instant is treated as not active: nothing would be permitted.
        app_status: context.history.app_status(app, t).unwrap_or(AppStatus::Banned),
        app_category: context.apps.get(app).map(|a| a.category.clone()).unwrap_or_default(),
        group: group.clone(),
        installed: since.is_some(),
        installed_since: since.map_or(0, |s| s.secs()),
    }
}

/// A fast hasher for small integer keys (the ledger's dictionary numbers).
#[derive(Default, Clone, Copy)]
struct NumberHasher(u64);

impl std::hash::Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type NumberMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<NumberHasher>>;

/// One member's place in a page an app keeps reading.
struct PageSlot<'h> {
    member: u64,
    role: Option<&'h history::Timeline<Option<Role>>>,
    consent: Option<&'h history::Timeline<bool>>,
    /// Every field of this member denied so far in this (app, group).
    denied: u16,
}

/// Identities and timelines looked up once per ledger number, then by number.
struct Resolved {
    apps: NumberMap<u64, AppId>,
    groups: NumberMap<u64, GroupId>,
    members: NumberMap<u64, MemberId>,
}

fn resolve<T: Clone>(
    cache: &mut NumberMap<u64, T>,
    number: u64,
    entries: &consentry_ledger::RawEntries,
    parse: fn(&str) -> Result<T, consentry_types::InvalidId>,
) -> Result<T, AuditError> {
    if let Some(found) = cache.get(&number) {
        return Ok(found.clone());
    }
    let name =
        entries.name(number).ok_or_else(|| LedgerError::Corrupt(format!("unknown name number {number}")))?;
    let parsed = parse(name).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    cache.insert(number, parsed.clone());
    Ok(parsed)
}

/// *Did*: re-decides every recorded disclosure in the window under the audited policy.
/// `progress` is called with the number of records read so far, every 65,536 records.
pub fn audit_did(
    context: &AuditContext<'_>,
    entries: &mut consentry_ledger::RawEntries,
    progress: &mut dyn FnMut(u64),
) -> Result<DidReport, AuditError> {
    let engine = Engine::new();
    let history = context.history;
    let mut report = DidReport::default();
    let mut resolved =
        Resolved { apps: NumberMap::default(), groups: NumberMap::default(), members: NumberMap::default() };
    let mut pages: NumberMap<(u64, u64), Vec<PageSlot<'_>>> = NumberMap::default();
    // (app, member) -> every field of the member the app received in violation.
    let mut manifest_masks: NumberMap<(u64, u64), u16> = NumberMap::default();
    let mut record = consentry_ledger::RawRecord::default();
    let mut read = 0u64;
    while entries.next_into(&mut record)? {
        read += 1;
        if read.is_multiple_of(65_536) {
            progress(read);
        }
        let t = record.at;
        if t < context.from || t >= context.to {
            continue;
        }
        report.records_checked += 1;
        let app = resolve(&mut resolved.apps, record.app, entries, AppId::parse)?;
        let group = resolve(&mut resolved.groups, record.group, entries, GroupId::parse)?;
        let mut decider = engine.page(context.policy, page_facts(context, &app, &group, t));
        // Within a record few distinct (fields, subject facts) occur: decide each once.
        let mut decided: Vec<(u16, SubjectFacts, u16)> = Vec::with_capacity(8);
        let mut deny = |mask: u16, subject: SubjectFacts| -> Result<u16, AuditError> {
            if let Some((_, _, denied)) = decided.iter().find(|(m, s, _)| *m == mask && *s == subject) {
                return Ok(*denied);
            }
            let mut denied = 0u16;
            for field in FieldSet::from_bits(mask).iter() {
                if !decider.allows(field, subject)? {
                    denied |= field.bit();
                }
            }
            decided.push((mask, subject, denied));
            Ok(denied)
        };
        let mut field_counts = [0u64; Field::ALL.len()];
        let mut count = 0u64;
        let mut any = false;
        if record.group_fields != 0 {
            report.disclosures_checked += u64::from(record.group_fields.count_ones());
            let denied = deny(record.group_fields, SubjectFacts::NONE)?;
            if denied != 0 {
                any = true;
                for field in FieldSet::from_bits(denied).iter() {
                    if let Some(c) = field_counts.get_mut(field as usize) {
                        *c += 1;
                    }
                    count += 1;
                }
            }
        }
        // The same page of the same group is read again and again: keep its subjects'
        // timelines and denied fields by position, falling back to lookups when it changed.
        let page = pages.entry((record.app, record.group)).or_default();
        for (position, &(member_number, mask)) in record.members.iter().enumerate() {
            report.disclosures_checked += u64::from(mask.count_ones());
            if page.get(position).is_none_or(|slot| slot.member != member_number) {
                let member = resolve(&mut resolved.members, member_number, entries, MemberId::parse)?;
                let slot = PageSlot {
                    member: member_number,
                    role: history.memberships.get(&(group.clone(), member.clone())),
                    consent: history.consents.get(&(member, app.clone())),
                    denied: 0,
                };
                match page.get_mut(position) {
                    Some(existing) => {
                        // Keep what the old occupant was denied before giving its place away.
                        if existing.denied != 0 {
                            *manifest_masks.entry((record.app, existing.member)).or_insert(0) |=
                                existing.denied;
                        }
                        *existing = slot;
                    }
                    None => page.push(slot),
                }
            }
            let Some(slot) = page.get_mut(position) else { continue };
            let role = slot.role.and_then(|l| l.at(t)).copied().flatten();
            let subject = SubjectFacts {
                is_member: role.is_some(),
                role,
                consented_profile: slot.consent.and_then(|l| l.at(t)).copied().unwrap_or(false),
            };
            let denied = deny(mask, subject)?;
            if denied == 0 {
                continue;
            }
            any = true;
            for field in FieldSet::from_bits(denied).iter() {
                if let Some(c) = field_counts.get_mut(field as usize) {
                    *c += 1;
                }
                count += 1;
            }
            slot.denied |= denied;
        }
        if !any {
            continue;
        }
        let info = context.apps.get(&app);
        let findings = report.by_app.entry(app.clone()).or_insert_with(|| AppFindings {
            developer: info.map(|a| a.developer.clone()),
            category: info.map(|a| a.category.clone()).unwrap_or_default(),
            ..AppFindings::default()
        });
        findings.groups.insert(group.clone());
        findings.first = Some(findings.first.map_or(t, |f| f.min(t)));
        findings.last = Some(findings.last.map_or(t, |l| l.max(t)));
        for (field, n) in Field::ALL.iter().zip(field_counts) {
            if n > 0 {
                *findings.by_field.entry(*field).or_default() += n;
            }
        }
        if findings.developer.is_none() {
            let name = entries.name(record.developer).unwrap_or_default();
            findings.developer =
                Some(DeveloperId::parse(name).map_err(|e| LedgerError::Corrupt(e.to_string()))?);
        }
        findings.violations += count;
        report.violations += count;
        let day = t.to_string().get(..10).unwrap_or_default().to_string();
        *report.by_day.entry((day, app)).or_default() += count;
    }
    // Members affected and deletion manifests, once per (app, member).
    for ((app_number, _), slots) in pages {
        for slot in slots.into_iter().filter(|s| s.denied != 0) {
            *manifest_masks.entry((app_number, slot.member)).or_insert(0) |= slot.denied;
        }
    }
    for ((app_number, member_number), denied) in manifest_masks {
        let app = resolve(&mut resolved.apps, app_number, entries, AppId::parse)?;
        let member = resolve(&mut resolved.members, member_number, entries, MemberId::parse)?;
        let Some(findings) = report.by_app.get_mut(&app) else { continue };
        let Some(developer) = findings.developer.clone() else { continue };
        let scoped = (context.scoped_id)(&app, &member);
        findings.members.insert(member);
        let manifest = report.manifests.entry(developer).or_default().entry(app).or_default();
        for field in FieldSet::from_bits(denied).iter() {
            manifest.insert((scoped.clone(), field));
        }
    }
    progress(read);
    Ok(report)
}

/// *Could*: for every installation in the window, which members' fields the app could read
/// under the rules enforced at the time but may not under the audited policy, and for how long.
pub fn audit_could(context: &AuditContext<'_>) -> Result<CouldReport, AuditError> {
    let engine = Engine::new();
    let history = context.history;
    let profile = [Field::MemberName, Field::MemberPicture, Field::PostAuthor];
    let mut report = CouldReport::default();
    let mut installations: Vec<(&(AppId, GroupId), &history::Timeline<consentry_store::Installed>)> =
        history.installations.iter().collect();
    installations.sort_by(|a, b| a.0.cmp(b.0));
    for ((app, group), timeline) in installations {
        // The installed intervals, clipped to the window.
        let mut intervals = Vec::new();
        let points = timeline.points();
        for (i, (start, value)) in points.iter().enumerate() {
            if value.is_none() {
                continue;
            }
            let end = points.get(i + 1).map_or(Instant::MAX, |(next, _)| *next);
            let (start, end) = ((*start).max(context.from), end.min(context.to));
            if start < end {
                intervals.push((start, end));
            }
        }
        if intervals.is_empty() {
            continue;
        }
        report.installations_checked += 1;
        let group_changes = history.group_changes.get(group).map(Vec::as_slice).unwrap_or_default();
        let consent_changes = history.app_consent_changes.get(app).map(Vec::as_slice).unwrap_or_default();
        // Each member's consent timeline for this app, looked up once.
        let mut consent_of: HashMap<&MemberId, Option<&history::Timeline<bool>>> = HashMap::new();
        for (_, member, _) in group_changes {
            consent_of.entry(member).or_insert_with(|| history.consents.get(&(member.clone(), app.clone())));
        }
        for (start, end) in intervals {
            // Cut the interval wherever a fact the decision depends on may change.
            let mut cuts: Vec<Instant> = vec![start, end];
            cuts.extend(group_changes.iter().map(|(t, _, _)| *t).filter(|t| *t > start && *t < end));
            cuts.extend(
                consent_changes
                    .iter()
                    .filter(|(t, member)| *t > start && *t < end && consent_of.contains_key(member))
                    .map(|(t, _)| *t),
            );
            cuts.extend(
                history.activations.points().iter().map(|(t, _)| *t).filter(|t| *t > start && *t < end),
            );
            if let Some(statuses) = history.statuses.get(app) {
                cuts.extend(statuses.points().iter().map(|(t, _)| *t).filter(|t| *t > start && *t < end));
            }
            cuts.sort();
            cuts.dedup();
            // Members of the group, swept forward through its changes.
            let mut members: BTreeMap<&MemberId, Role> = BTreeMap::new();
            let mut applied = 0;
            for pair in cuts.windows(2) {
                let [from, to] = pair else { continue };
                while let Some((t, member, role)) = group_changes.get(applied) {
                    if t > from {
                        break;
                    }
                    match role {
                        Some(role) => members.insert(member, *role),
                        None => members.remove(member),
                    };
                    applied += 1;
                }
                let Some(enforced) = history.active_version(*from).and_then(|v| context.enforced.get(&v))
                else {
                    continue;
                };
                let facts = page_facts(context, app, group, *from);
                let mut then = engine.page(enforced, facts.clone());
                let mut now = engine.page(context.policy, facts);
                for (member, role) in &members {
                    let consented = consent_of
                        .get(member)
                        .copied()
                        .flatten()
                        .and_then(|l| l.at(*from))
                        .copied()
                        .unwrap_or(false);
                    let subject =
                        SubjectFacts { is_member: true, role: Some(*role), consented_profile: consented };
                    let mut exposed = Vec::new();
                    for field in profile {
                        if then.allows(field, subject)? && !now.allows(field, subject)? {
                            exposed.push(field);
                        }
                    }
                    if exposed.is_empty() {
                        continue;
                    }
                    let info = context.apps.get(app);
                    let exposure = report.by_app.entry(app.clone()).or_insert_with(|| AppExposure {
                        developer: info.map(|a| a.developer.clone()),
                        category: info.map(|a| a.category.clone()).unwrap_or_default(),
                        ..AppExposure::default()
                    });
                    exposure.groups.insert(group.clone());
                    if !exposure.members.contains(*member) {
                        exposure.members.insert((*member).clone());
                    }
                    exposure.fields.extend(exposed);
                    exposure.member_seconds += u64::try_from(to.secs() - from.secs()).unwrap_or(0);
                    exposure.first = Some(exposure.first.map_or(*from, |f| f.min(*from)));
                    exposure.last = Some(exposure.last.map_or(*to, |l| l.max(*to)));
                }
            }
        }
    }
    Ok(report)
}

/// Apps by id, for an [`AuditContext`].
pub fn apps_by_id(apps: Vec<App>) -> HashMap<AppId, App> {
    apps.into_iter().map(|a| (a.id.clone(), a)).collect()
}

/// Distinct members across findings.
pub fn members_affected(report: &DidReport) -> usize {
    report.by_app.values().flat_map(|a| a.members.iter()).collect::<HashSet<_>>().len()
}

/// A whole audit: the window, the policy, and both answers.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// e.g. `version 2` or `draft policies/groups-2018.cedar`.
    pub policy: String,
    pub from: Instant,
    pub to: Instant,
    pub did: DidReport,
    pub could: CouldReport,
    /// Wall time of the whole audit, and of its *did* part alone.
    pub seconds: f64,
    pub did_seconds: f64,
}

/// Runs an audit over what the store's history and the ledger hold.
pub fn run(
    store: &dyn consentry_store::Store,
    ledger_dir: &std::path::Path,
    policy: &CompiledPolicy,
    policy_label: &str,
    window: (Instant, Instant),
    scoped_id: &(dyn Fn(&AppId, &MemberId) -> String + Sync),
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, RunError> {
    let started = std::time::Instant::now();
    let facts = store.fact_history()?;
    let history = History::new(&facts);
    let apps = apps_by_id(store.apps()?);
    let mut enforced = HashMap::new();
    for version in store.policy_versions()? {
        enforced.insert(
            version.version,
            consentry_policy::compile(version.version, &version.text).map_err(AuditError::from)?,
        );
    }
    let context = AuditContext {
        policy,
        from: window.0,
        to: window.1,
        history: &history,
        apps: &apps,
        enforced: &enforced,
        scoped_id,
    };
    let did_started = std::time::Instant::now();
    // Every stream of the ledger, whichever node recorded it (none: nothing was disclosed).
    let did = audit_did(
        &context,
        &mut consentry_ledger::RawEntries::open(ledger_dir).map_err(AuditError::from)?,
        progress,
    )?;
    let did_seconds = did_started.elapsed().as_secs_f64();
    let could = audit_could(&context)?;
    Ok(AuditReport {
        did_seconds,
        policy: policy_label.to_string(),
        from: window.0,
        to: window.1,
        did,
        could,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Why a whole audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] consentry_store::StoreError),
}

/// What a draft would change against the policy active now, replayed over a window.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Audited against the draft: what apps received, or could read, that it would deny.
    pub loses: AuditReport,
    /// What the draft would let apps read that the rules in force denied.
    pub gains: CouldReport,
}

/// Previews `draft` against `active` over `window`, from history and the ledger.
pub fn preview(
    store: &dyn consentry_store::Store,
    ledger_dir: &std::path::Path,
    draft: &CompiledPolicy,
    active: &CompiledPolicy,
    window: (Instant, Instant),
    scoped_id: &(dyn Fn(&AppId, &MemberId) -> String + Sync),
) -> Result<Preview, RunError> {
    let loses = run(store, ledger_dir, draft, "draft", window, scoped_id, &mut |_| {})?;
    let history = History::new(&store.fact_history()?);
    let apps = apps_by_id(store.apps()?);
    // "Then" is the draft at every instant, "now" the active policy: what only the draft allows.
    let as_if_draft: HashMap<u32, CompiledPolicy> =
        store.policy_versions()?.into_iter().map(|v| (v.version, draft.clone())).collect();
    let context = AuditContext {
        policy: active,
        from: window.0,
        to: window.1,
        history: &history,
        apps: &apps,
        enforced: &as_if_draft,
        scoped_id,
    };
    let gains = audit_could(&context)?;
    Ok(Preview { loses, gains })
}
