//! A world's history as an audit finds it: its changes played through the service into a
//! store (the fact history the audit reads), and its traffic as the disclosure ledger serving
//! would have written, each page holding the members the policy active then let the app see,
//! and, after a quarter of the changes that should hide something, a stale page that did not.
//! Shared by the `audit_scale` bench and the audit's tests (`#[path]`).

#![allow(dead_code)] // each includer uses its part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use consentry_ledger::{Ledger, LedgerOptions, LedgerStats};
use consentry_policy::{compile, CompiledPolicy, Engine, PageFacts, SubjectFacts};
use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock};
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppStatus, Disclosure, DisclosureRecord, FieldSet, Subject};
use consentry_world::{Applier, Event, Read, Replay, ShippedPolicy, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A world played into a store and a ledger under `dir`.
pub struct Played {
    pub store: Arc<SqliteStore>,
    pub ledger_dir: PathBuf,
    pub ledger: LedgerStats,
    /// Changes applied through the service (every event but the reads).
    pub changes: usize,
    pub store_seconds: f64,
    pub ledger_seconds: f64,
}

/// The benchmark's story: groups-2018-grandfathered rolled out six months late, so that
/// installations made after its cutoff (2018-04-04) were read under legacy-2017 until then,
/// and an audit against groups-2018-grandfathered finds something too.
pub fn late_rollout(params: &mut consentry_world::WorldParams) {
    let at = |text: &str| consentry_types::Instant::parse(text).unwrap_or_else(|e| unreachable!("{e}"));
    params.policies = vec![
        (at("2016-01-01"), ShippedPolicy::Legacy2017),
        (at("2018-10-01"), ShippedPolicy::Groups2018Grandfathered),
        (at("2019-11-05T12:00:00Z"), ShippedPolicy::Groups2018),
    ];
}

/// Plays `world` into `dir`: the store (`consentry.db`) and the ledger (`ledger/`).
pub fn play(world: &World, dir: &Path) -> Played {
    let started = std::time::Instant::now();
    let store =
        Arc::new(SqliteStore::open(&dir.join("consentry.db")).unwrap_or_else(|e| unreachable!("{e}")));
    store.set_bulk_load(true).unwrap_or_else(|e| unreachable!("{e}"));
    let clock = Arc::new(SimulatedClock::starting_at(world.params.start));
    let service =
        Arc::new(Service::new(store.clone(), clock.clone(), ServerKey::generate(), ServiceConfig::default()));
    let mut applier = Applier::new(service, clock).unwrap_or_else(|e| unreachable!("{e}"));
    let changes = applier.apply_changes(&world.events).unwrap_or_else(|e| unreachable!("{e}"));
    store.set_bulk_load(false).unwrap_or_else(|e| unreachable!("{e}"));
    let store_seconds = started.elapsed().as_secs_f64();

    let started = std::time::Instant::now();
    let ledger_dir = dir.join("ledger");
    let ledger = Ledger::open(&ledger_dir, LedgerOptions::default()).unwrap_or_else(|e| unreachable!("{e}"));
    let stats = write_traffic(world, &ledger);
    drop(ledger);
    Played {
        store,
        ledger_dir,
        ledger: stats,
        changes,
        store_seconds,
        ledger_seconds: started.elapsed().as_secs_f64(),
    }
}

/// Every read of the world as serving records it: the facts as they are at the read's
/// instant (the world's own replay), decided by the engine under the policy active then; a
/// members read walks the group in member id order, `limit` visible members a page, one
/// record per page; hidden members are skipped, as serving skips them.
pub fn write_traffic(world: &World, ledger: &Ledger) -> LedgerStats {
    traffic(world, Some(ledger));
    ledger.stats()
}

/// The (subject, field) pairs the world's traffic discloses, without writing them.
pub fn count_traffic(world: &World) -> u64 {
    traffic(world, None)
}

fn traffic(world: &World, ledger: Option<&Ledger>) -> u64 {
    let mut disclosed = 0u64;
    let compiled: HashMap<ShippedPolicy, CompiledPolicy> = ShippedPolicy::ALL
        .iter()
        .map(|p| (*p, compile(0, p.text()).unwrap_or_else(|e| unreachable!("{e}"))))
        .collect();
    let plans: HashMap<_, _> = world.apps.iter().map(|a| (a.id.clone(), a)).collect();
    let engine = Engine::new();
    let mut replay = Replay::new(world);
    let mut batch: Vec<DisclosureRecord> = Vec::with_capacity(1_024);
    let mut number = 0u64;
    let mut faults = StdRng::seed_from_u64(world.params.seed ^ 0xfa17);
    let member_fields = world.params.traffic.member_fields;
    let group_fields = world.params.traffic.group_fields;
    while let Some(timed) = replay.step() {
        if let Some(fault) = fault(&replay, &timed.event, &mut faults) {
            // A page served from a stale cache at the instant a fact changed: every field
            // asked for, whatever the policy says now.
            let (Some((version, _)), Some(plan)) = (replay.active_policy(), plans.get(&fault.app)) else {
                continue;
            };
            let disclosures = fault
                .members
                .into_iter()
                .map(|member| Disclosure { subject: Subject::Member(member), fields: member_fields })
                .chain(std::iter::once(Disclosure {
                    subject: Subject::Group(fault.group.clone()),
                    fields: group_fields,
                }))
                .collect();
            number += 1;
            batch.push(DisclosureRecord {
                at: timed.at,
                request_id: format!("{number:012x}"),
                app: fault.app,
                developer: plan.developer.clone(),
                group: fault.group,
                token_hash: String::new(),
                policy_version: version,
                route: "GET /v1/groups/{id}/members".into(),
                disclosures,
            });
        }
        let Event::Read { app, group, read } = &timed.event else { continue };
        let (Some((version, shipped)), Some(plan)) = (replay.active_policy(), plans.get(app)) else {
            continue;
        };
        let Some(policy) = compiled.get(&shipped) else { continue };
        let since = replay.installation(app, group).map(|(_, since)| *since);
        let mut decider = engine.page(
            policy,
            PageFacts {
                app: app.clone(),
                app_status: replay.status(app).unwrap_or(AppStatus::Banned),
                app_category: plan.category.to_string(),
                group: group.clone(),
                installed: since.is_some(),
                installed_since: since.map_or(0, |s| s.secs()),
            },
        );
        let mut allowed = |fields: FieldSet, subject: SubjectFacts| -> FieldSet {
            fields.iter().filter(|f| decider.allows(*f, subject).unwrap_or(false)).collect()
        };
        let mut record = |disclosures: Vec<Disclosure>| {
            number += 1;
            DisclosureRecord {
                at: timed.at,
                request_id: format!("{number:012x}"),
                app: app.clone(),
                developer: plan.developer.clone(),
                group: group.clone(),
                token_hash: String::new(),
                policy_version: version,
                route: match read {
                    Read::Group { .. } => "GET /v1/groups/{id}".into(),
                    Read::Members { .. } => "GET /v1/groups/{id}/members".into(),
                },
                disclosures,
            }
        };
        match *read {
            Read::Group { fields } => {
                let shown = allowed(fields, SubjectFacts::NONE);
                if !shown.is_empty() {
                    batch.push(record(vec![Disclosure {
                        subject: Subject::Group(group.clone()),
                        fields: shown,
                    }]));
                }
            }
            Read::Members { fields, limit } => {
                let mut page = Vec::with_capacity(limit);
                for (member, role) in replay.members(group) {
                    let subject = SubjectFacts {
                        is_member: true,
                        role: Some(role),
                        consented_profile: replay.consented(member, app),
                    };
                    let shown = allowed(fields, subject);
                    if shown.is_empty() {
                        continue;
                    }
                    page.push(Disclosure { subject: Subject::Member(member.clone()), fields: shown });
                    if page.len() == limit {
                        batch.push(record(std::mem::replace(&mut page, Vec::with_capacity(limit))));
                    }
                }
                if !page.is_empty() {
                    batch.push(record(page));
                }
            }
        }
        if batch.len() >= 1_000 {
            disclosed += flush(ledger, &mut batch);
        }
    }
    disclosed + flush(ledger, &mut batch)
}

/// Share of the changes that matter to a decision after which a stale page is served.
const FAULTS: f64 = 0.25;

/// A page enforcement should not have served.
struct Fault {
    app: consentry_types::AppId,
    group: consentry_types::GroupId,
    members: Vec<consentry_types::MemberId>,
}

/// After a change that should hide something (`replay` has applied it), sometimes a page that
/// still shows it: an app's group after it was uninstalled, suspended or banned (its first
/// page of members); a member to an app installed in the group she just left; a member to
/// an app she just withdrew her consent from. These make every fact the audit joins on
/// (installations, app status, memberships, consents) decide some answers.
fn fault(replay: &Replay<'_>, event: &Event, rng: &mut StdRng) -> Option<Fault> {
    use consentry_world::StatusChange;
    let installed_in = |app: &consentry_types::AppId| {
        replay.installations().keys().find(|(a, _)| a == app).map(|(_, g)| g.clone())
    };
    let fault = match event {
        Event::Uninstall { app, group } => {
            let members = replay.members(group).take(100).map(|(m, _)| m.clone()).collect();
            Fault { app: app.clone(), group: group.clone(), members }
        }
        Event::Status { app, change: StatusChange::Suspend | StatusChange::Ban } => {
            let group = installed_in(app)?;
            let members = replay.members(&group).take(100).map(|(m, _)| m.clone()).collect();
            Fault { app: app.clone(), group, members }
        }
        Event::Leave { group, member } => {
            let (app, _) = replay.installations().keys().find(|(_, g)| g == group)?;
            Fault { app: app.clone(), group: group.clone(), members: vec![member.clone()] }
        }
        Event::Withdraw { member, app } => {
            let group = installed_in(app)?;
            Fault { app: app.clone(), group, members: vec![member.clone()] }
        }
        _ => return None,
    };
    rng.gen_bool(FAULTS).then_some(fault)
}

fn flush(ledger: Option<&Ledger>, batch: &mut Vec<DisclosureRecord>) -> u64 {
    let pairs = batch.iter().map(consentry_ledger::field_pairs).sum();
    if let Some(ledger) = ledger {
        ledger.append_all(batch).unwrap_or_else(|e| unreachable!("{e}"));
    }
    batch.clear();
    pairs
}
