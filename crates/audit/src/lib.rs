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
    #[error("an audit thread stopped unexpectedly")]
    Thread,
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

/// The members an app read in a group, each with its facts' timelines.
#[derive(Default)]
struct Page<'h> {
    index: NumberMap<u64, usize>,
    slots: Vec<PageSlot<'h>>,
}

/// A member an app read in a group.
struct PageSlot<'h> {
    member: u64,
    role: Option<&'h history::Timeline<Option<Role>>>,
    consent: Option<&'h history::Timeline<bool>>,
    /// Every field of this member denied so far in this (app, group).
    denied: u16,
}

/// Identities and timelines looked up once per ledger number, then by number.
#[derive(Default)]
struct Resolved {
    apps: NumberMap<u64, AppId>,
    groups: NumberMap<u64, GroupId>,
    members: NumberMap<u64, MemberId>,
}

/// Where the identity a ledger number stands for is found: the ledger's own dictionary, or
/// the copy a reader handed to a thread (numbered alike, from 0).
trait Names {
    fn name(&self, number: u64) -> Option<&str>;
}

impl Names for consentry_ledger::RawEntries {
    fn name(&self, number: u64) -> Option<&str> {
        consentry_ledger::RawEntries::name(self, number)
    }
}

impl Names for Vec<String> {
    fn name(&self, number: u64) -> Option<&str> {
        usize::try_from(number).ok().and_then(|n| self.get(n)).map(String::as_str)
    }
}

fn resolve<T: Clone>(
    cache: &mut NumberMap<u64, T>,
    number: u64,
    names: &dyn Names,
    parse: fn(&str) -> Result<T, consentry_types::InvalidId>,
) -> Result<T, AuditError> {
    if let Some(found) = cache.get(&number) {
        return Ok(found.clone());
    }
    let name =
        names.name(number).ok_or_else(|| LedgerError::Corrupt(format!("unknown name number {number}")))?;
    let parsed = parse(name).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    cache.insert(number, parsed.clone());
    Ok(parsed)
}

/// What one thread found in the records it was given, before members and manifests are named.
#[derive(Default)]
struct DidPart {
    report: DidReport,
    /// (app, member) numbers -> every field of the member the app received in violation.
    manifest_masks: NumberMap<(u64, u64), u16>,
    /// Apps the store does not know, whose developer was read from the ledger: the sequence
    /// number of the record it was read from (the earliest wins, as one thread would have it).
    developer_from: HashMap<AppId, u64>,
}

/// One thread's share of a *did* audit: the records routed to it, in ledger order.
struct DidWorker<'c, 'a> {
    context: &'c AuditContext<'a>,
    engine: Engine,
    part: DidPart,
    resolved: Resolved,
    pages: NumberMap<(u64, u64), Page<'a>>,
}

impl<'c, 'a> DidWorker<'c, 'a> {
    fn new(context: &'c AuditContext<'a>) -> DidWorker<'c, 'a> {
        DidWorker {
            context,
            engine: Engine::new(),
            part: DidPart::default(),
            resolved: Resolved::default(),
            pages: NumberMap::default(),
        }
    }

    /// Re-decides one record of the window.
    fn record(&mut self, record: &consentry_ledger::RawRecord, names: &dyn Names) -> Result<(), AuditError> {
        let context = self.context;
        let history: &'a History = context.history;
        let report = &mut self.part.report;
        let t = record.at;
        report.records_checked += 1;
        let app = resolve(&mut self.resolved.apps, record.app, names, AppId::parse)?;
        let group = resolve(&mut self.resolved.groups, record.group, names, GroupId::parse)?;
        let mut decider = self.engine.page(context.policy, page_facts(context, &app, &group, t));
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
        // The same members of the same group are read again and again (every page of every
        // walk): keep each one's timelines and denied fields, looked up once per (app, group).
        let page = self.pages.entry((record.app, record.group)).or_default();
        for &(member_number, mask) in &record.members {
            report.disclosures_checked += u64::from(mask.count_ones());
            let index = match page.index.get(&member_number) {
                Some(index) => *index,
                None => {
                    let member = resolve(&mut self.resolved.members, member_number, names, MemberId::parse)?;
                    let index = page.slots.len();
                    page.slots.push(PageSlot {
                        member: member_number,
                        role: history.memberships.get(&(group.clone(), member.clone())),
                        consent: history.consents.get(&(member, app.clone())),
                        denied: 0,
                    });
                    page.index.insert(member_number, index);
                    index
                }
            };
            let Some(slot) = page.slots.get_mut(index) else { continue };
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
            return Ok(());
        }
        let info = context.apps.get(&app);
        let findings = report.by_app.entry(app.clone()).or_insert_with(|| AppFindings {
            developer: info.map(|a| a.developer.clone()),
            category: info.map(|a| a.category.clone()).unwrap_or_default(),
            ..AppFindings::default()
        });
        findings.groups.insert(group);
        findings.first = Some(findings.first.map_or(t, |f| f.min(t)));
        findings.last = Some(findings.last.map_or(t, |l| l.max(t)));
        for (field, n) in Field::ALL.iter().zip(field_counts) {
            if n > 0 {
                *findings.by_field.entry(*field).or_default() += n;
            }
        }
        if findings.developer.is_none() {
            let name = names.name(record.developer).unwrap_or_default();
            findings.developer =
                Some(DeveloperId::parse(name).map_err(|e| LedgerError::Corrupt(e.to_string()))?);
            self.part.developer_from.insert(app.clone(), record.seq);
        }
        findings.violations += count;
        report.violations += count;
        let day = t.to_string().get(..10).unwrap_or_default().to_string();
        *report.by_day.entry((day, app)).or_default() += count;
        Ok(())
    }

    /// What this thread found, with every page's denied fields folded into the masks.
    fn finish(self) -> DidPart {
        let mut part = self.part;
        for ((app_number, _), page) in self.pages {
            for slot in page.slots.into_iter().filter(|s| s.denied != 0) {
                *part.manifest_masks.entry((app_number, slot.member)).or_insert(0) |= slot.denied;
            }
        }
        part
    }
}

impl DidPart {
    /// Adds another thread's findings: sums, unions, the earliest and latest instants. The
    /// result does not depend on the order parts are merged in.
    fn merge(&mut self, other: DidPart) {
        let (into, from) = (&mut self.report, other.report);
        into.records_checked += from.records_checked;
        into.disclosures_checked += from.disclosures_checked;
        into.violations += from.violations;
        for (key, n) in from.by_day {
            *into.by_day.entry(key).or_default() += n;
        }
        for (app, theirs) in from.by_app {
            let Some(ours) = into.by_app.get_mut(&app) else {
                into.by_app.insert(app, theirs);
                continue;
            };
            ours.violations += theirs.violations;
            for (field, n) in theirs.by_field {
                *ours.by_field.entry(field).or_default() += n;
            }
            ours.members.extend(theirs.members);
            ours.groups.extend(theirs.groups);
            ours.first = match (ours.first, theirs.first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            ours.last = ours.last.max(theirs.last);
            // The developer read from the ledger's earliest record, as one thread would have it.
            if let (Some(mine), Some(seen)) = (self.developer_from.get(&app), other.developer_from.get(&app))
            {
                if seen < mine {
                    ours.developer = theirs.developer;
                    self.developer_from.insert(app.clone(), *seen);
                }
            }
        }
        for (app, seq) in other.developer_from {
            self.developer_from.entry(app).or_insert(seq);
        }
        for (key, mask) in other.manifest_masks {
            *self.manifest_masks.entry(key).or_insert(0) |= mask;
        }
    }

    /// The report: members affected and deletion manifests, once per (app, member).
    fn complete(self, context: &AuditContext<'_>, names: &dyn Names) -> Result<DidReport, AuditError> {
        let mut report = self.report;
        let mut resolved = Resolved::default();
        for ((app_number, member_number), denied) in self.manifest_masks {
            let app = resolve(&mut resolved.apps, app_number, names, AppId::parse)?;
            let member = resolve(&mut resolved.members, member_number, names, MemberId::parse)?;
            let Some(findings) = report.by_app.get_mut(&app) else { continue };
            let Some(developer) = findings.developer.clone() else { continue };
            let scoped = (context.scoped_id)(&app, &member);
            findings.members.insert(member);
            let manifest = report.manifests.entry(developer).or_default().entry(app).or_default();
            for field in FieldSet::from_bits(denied).iter() {
                manifest.insert((scoped.clone(), field));
            }
        }
        Ok(report)
    }
}

/// How many threads an audit uses unless told otherwise: every core the process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// *Did*: re-decides every recorded disclosure in the window under the audited policy, on one
/// thread. `progress` is called with the number of records read so far, every 65,536 records.
pub fn audit_did(
    context: &AuditContext<'_>,
    entries: &mut consentry_ledger::RawEntries,
    progress: &mut dyn FnMut(u64),
) -> Result<DidReport, AuditError> {
    audit_did_threads(context, entries, 1, progress)
}

/// Records a reader hands to a thread, with the names numbered since its previous batch.
struct Batch {
    names: Vec<String>,
    records: Vec<consentry_ledger::RawRecord>,
    len: usize,
}

const BATCH_RECORDS: usize = 256;

/// The thread that re-decides the records of an (app, group): the same one for all of them,
/// so that the page it keeps for them stays warm.
fn lane_of(app: u64, group: u64, lanes: usize) -> usize {
    let mixed = (app.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ group).wrapping_mul(0xff51_afd7_ed55_8ccd);
    ((mixed >> 32) % lanes.max(1) as u64) as usize
}

/// *Did* on `threads` threads (at least one; the calling thread is one of them). The calling
/// thread reads the ledger (the hash chain and the dictionary are sequential) and routes each
/// record by (app, group) to a thread, deciding its own share; each thread keeps its own
/// engine and pages, and their findings are merged by sums and unions, so the report is
/// the same for any number of threads.
pub fn audit_did_threads(
    context: &AuditContext<'_>,
    entries: &mut consentry_ledger::RawEntries,
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<DidReport, AuditError> {
    let in_window =
        |record: &consentry_ledger::RawRecord| record.at >= context.from && record.at < context.to;
    let mut record = consentry_ledger::RawRecord::default();
    let mut read = 0u64;
    // One thread is the same path with no lanes: every record is the calling thread's.
    let threads = threads.max(1);
    struct Lane<'s> {
        sender: std::sync::mpsc::SyncSender<Batch>,
        /// Batches the thread is done with, to be filled again.
        spare: std::sync::mpsc::Receiver<Vec<consentry_ledger::RawRecord>>,
        filling: Batch,
        names_sent: u64,
        handle: std::thread::ScopedJoinHandle<'s, Result<DidPart, AuditError>>,
    }
    fn send(lane: &mut Lane<'_>, entries: &consentry_ledger::RawEntries) -> bool {
        let mut names = Vec::new();
        while let Some(name) = entries.name(lane.names_sent) {
            names.push(name.to_string());
            lane.names_sent += 1;
        }
        let records = lane.spare.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut lane.filling, Batch { names: Vec::new(), records, len: 0 });
        lane.sender.send(Batch { names, ..full }).is_ok()
    }
    std::thread::scope(|scope| {
        let mut lanes: Vec<Lane<'_>> = Vec::with_capacity(threads - 1);
        for _ in 1..threads {
            // Room for a few dozen batches, so that a thread the scheduler set aside for a
            // moment does not stop the reader.
            let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(32);
            let (done, spare) = std::sync::mpsc::channel();
            let handle = scope.spawn(move || {
                let mut worker = DidWorker::new(context);
                let mut names: Vec<String> = Vec::new();
                for batch in batches {
                    names.extend(batch.names);
                    for record in batch.records.iter().take(batch.len) {
                        worker.record(record, &names)?;
                    }
                    // The records go back to the reader, which fills them again.
                    let _ = done.send(batch.records);
                }
                Ok(worker.finish())
            });
            let filling = Batch { names: Vec::new(), records: Vec::new(), len: 0 };
            lanes.push(Lane { sender, spare, filling, names_sent: 0, handle });
        }
        let mut mine = DidWorker::new(context);
        let mut failed: Option<AuditError> = None;
        let mut stopped = false;
        loop {
            match entries.next_into(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            }
            read += 1;
            if read.is_multiple_of(65_536) {
                progress(read);
            }
            if !in_window(&record) {
                continue;
            }
            let lane = lane_of(record.app, record.group, threads);
            let Some(lane) = lane.checked_sub(1).and_then(|l| lanes.get_mut(l)) else {
                if let Err(e) = mine.record(&record, entries) {
                    failed = Some(e);
                    break;
                }
                continue;
            };
            let batch = &mut lane.filling;
            match batch.records.get_mut(batch.len) {
                Some(slot) => slot.clone_from(&record),
                None => batch.records.push(record.clone()),
            }
            batch.len += 1;
            if batch.len == BATCH_RECORDS && !send(lane, entries) {
                // The thread stopped on an error, which joining it returns.
                stopped = true;
                break;
            }
        }
        let mut part = mine.finish();
        for mut lane in lanes {
            if failed.is_none() && !stopped && lane.filling.len > 0 {
                send(&mut lane, entries);
            }
            drop(lane.sender);
            match lane.handle.join() {
                Ok(Ok(theirs)) => part.merge(theirs),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(AuditError::Thread);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        progress(read);
        part.complete(context, entries)
    })
}

/// *Could*: for every installation in the window, which members' fields the app could read
/// under the rules enforced at the time but may not under the audited policy, and for how long.
pub fn audit_could(context: &AuditContext<'_>) -> Result<CouldReport, AuditError> {
    audit_could_threads(context, 1)
}

type InstallationTimeline<'h> = (&'h (AppId, GroupId), &'h history::Timeline<consentry_store::Installed>);

/// *Could* on `threads` threads (at least one; the calling thread is one of them): the
/// installations dealt out in turn, each thread with its own engine, the exposures merged by
/// unions, sums, minima and maxima, so the report does not depend on the number of threads.
pub fn audit_could_threads(context: &AuditContext<'_>, threads: usize) -> Result<CouldReport, AuditError> {
    let mut installations: Vec<InstallationTimeline<'_>> = context.history.installations.iter().collect();
    installations.sort_by(|a, b| a.0.cmp(b.0));
    let threads = threads.clamp(1, installations.len().max(1));
    if threads == 1 {
        return could_part(context, installations.into_iter());
    }
    let installations = &installations;
    let share = move |k: usize| installations.iter().copied().skip(k).step_by(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (1..threads).map(|k| scope.spawn(move || could_part(context, share(k)))).collect();
        let mut report = could_part(context, share(0))?;
        for handle in handles {
            let theirs = handle.join().map_err(|_| AuditError::Thread)??;
            report.installations_checked += theirs.installations_checked;
            for (app, exposure) in theirs.by_app {
                let Some(ours) = report.by_app.get_mut(&app) else {
                    report.by_app.insert(app, exposure);
                    continue;
                };
                ours.groups.extend(exposure.groups);
                ours.members.extend(exposure.members);
                ours.fields.extend(exposure.fields);
                ours.member_seconds += exposure.member_seconds;
                ours.first = match (ours.first, exposure.first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                ours.last = ours.last.max(exposure.last);
            }
        }
        Ok(report)
    })
}

fn could_part<'h>(
    context: &AuditContext<'h>,
    installations: impl Iterator<Item = InstallationTimeline<'h>>,
) -> Result<CouldReport, AuditError> {
    let engine = Engine::new();
    let history = context.history;
    let profile = [Field::MemberName, Field::MemberPicture, Field::PostAuthor];
    let mut report = CouldReport::default();
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
    /// Wall time of the whole audit; of reading the fact history from the store and indexing
    /// it (with the apps and stored policies); and of the *did* part alone (the ledger's reading
    /// included).
    pub seconds: f64,
    pub history_seconds: f64,
    pub did_seconds: f64,
    /// The threads the *did* part ran on.
    pub threads: usize,
}

/// What an audit reads from the store before the ledger, for an [`AuditContext`].
pub struct Known {
    /// The fact history, indexed.
    pub history: History,
    pub apps: HashMap<AppId, App>,
    /// Every stored policy version, compiled.
    pub enforced: HashMap<u32, CompiledPolicy>,
}

/// Reads the store's fact history, apps and policy versions.
pub fn read_known(store: &dyn consentry_store::Store) -> Result<Known, RunError> {
    let history = History::new(&store.fact_history()?);
    let apps = apps_by_id(store.apps()?);
    let mut enforced = HashMap::new();
    for version in store.policy_versions()? {
        enforced.insert(
            version.version,
            consentry_policy::compile(version.version, &version.text).map_err(AuditError::from)?,
        );
    }
    Ok(Known { history, apps, enforced })
}

/// Runs an audit over what the store's history and the ledger hold, on every core
/// ([`default_threads`]).
pub fn run(
    store: &dyn consentry_store::Store,
    ledger_dir: &std::path::Path,
    policy: &CompiledPolicy,
    policy_label: &str,
    window: (Instant, Instant),
    scoped_id: &(dyn Fn(&AppId, &MemberId) -> String + Sync),
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, RunError> {
    run_with_threads(store, ledger_dir, policy, policy_label, window, default_threads(), scoped_id, progress)
}

/// Runs an audit over what the store's history and the ledger hold, on `threads` threads.
#[allow(
    clippy::too_many_arguments,
    reason = "run's arguments and the thread count; a struct would only rename them"
)]
pub fn run_with_threads(
    store: &dyn consentry_store::Store,
    ledger_dir: &std::path::Path,
    policy: &CompiledPolicy,
    policy_label: &str,
    window: (Instant, Instant),
    threads: usize,
    scoped_id: &(dyn Fn(&AppId, &MemberId) -> String + Sync),
    progress: &mut dyn FnMut(u64),
) -> Result<AuditReport, RunError> {
    let started = std::time::Instant::now();
    let known = read_known(store)?;
    let context = AuditContext {
        policy,
        from: window.0,
        to: window.1,
        history: &known.history,
        apps: &known.apps,
        enforced: &known.enforced,
        scoped_id,
    };
    let threads = threads.max(1);
    let history_seconds = started.elapsed().as_secs_f64();
    let did_started = std::time::Instant::now();
    // Every stream of the ledger, whichever node recorded it (none: nothing was disclosed).
    let did = audit_did_threads(
        &context,
        &mut consentry_ledger::RawEntries::open(ledger_dir).map_err(AuditError::from)?,
        threads,
        progress,
    )?;
    let did_seconds = did_started.elapsed().as_secs_f64();
    let could = audit_could_threads(&context, threads)?;
    Ok(AuditReport {
        did_seconds,
        history_seconds,
        threads,
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
