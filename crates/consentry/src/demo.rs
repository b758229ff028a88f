//! `consentry demo`: the Groups API story from 2017 to 2019, played on a world from
//! `consentry-world` through the same service path the HTTP server uses. The world (members,
//! groups and their churn, apps, installations, opt-ins, suspensions, reads) is generated; the
//! story (its cast's numbers, the 2018-04-04 change with its grandfathering clause, the
//! 2019-11-05 audit, remediation) is told on top of it. Then the world is handed to the server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant as WallClock;

use anyhow::{bail, Context, Result};
use consentry_service::{
    OperatorSession, Service, ServiceConfig, ServiceError, SimulatedClock, Subject, SystemClock,
};
use consentry_store::Store;
use consentry_types::{AppId, AppStatus, DeveloperId, Field, FieldSet, Instant, MemberId, OperatorRole};
use consentry_world::{
    AppStatusParams, Applied, Applier, Event, GroupParams, InstallationParams, OptInParams, ShippedPolicy,
    TrafficParams, World, WorldParams, CATEGORIES,
};

use crate::data_dir::DataDir;
use crate::keys::{os_user, BOOTSTRAP_KEY_FILE};
use crate::serve::announce_bootstrap_key;

const MARKER: &str = "demo-world.txt";
/// What the marker says: a directory holding it with these words is the demo's to replace.
const MARKER_TEXT: &str = "written by `consentry demo`; replaced on every run\n";

/// How big a world to simulate.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    Full,
    Small,
}

impl Scale {
    pub fn parse(text: &str) -> Result<Scale> {
        match text {
            "full" => Ok(Scale::Full),
            "small" => Ok(Scale::Small),
            other => bail!("unknown scale {other:?}: use full or small"),
        }
    }

    /// The story's world: the generator's realistic world with the story's cast. Every
    /// developer's first app was installed in a group within its first 90 days, in 2017, and
    /// kept there (so every developer still held pre-2018 access when the audit came); the apps
    /// of a few developers (11 of 100 at full scale, 3 of 10 at small) keep reading member
    /// lists to the end, the others stop before the audit's window. Suspensions end by mid
    /// 2019 and the platform bans nobody before the story's remediation does.
    fn world(self, seed: u64) -> Result<WorldParams> {
        let (members, groups, largest, smallest, developers, per_app, readers, every_days) = match self {
            Scale::Full => (5_000, 300, 400, 8, 100, (2, 6), 11, 14),
            Scale::Small => (300, 20, 60, 5, 10, (1, 3), 3, 28),
        };
        let start = at("2017-01-02T09:00:00Z")?;
        let profile: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
        let group: FieldSet = [Field::GroupName, Field::GroupMemberCount].into_iter().collect();
        Ok(WorldParams {
            seed,
            start,
            end: at("2019-12-05T00:00:00Z")?,
            members,
            groups: GroupParams {
                count: groups,
                largest,
                smallest,
                exponent: 0.8,
                admins: (1, 2),
                posts: (2, 4),
                leaving: 0.1,
                role_changes: 0.02,
            },
            developers,
            second_app_every: 8,
            apps_launch: (start, at("2017-09-01")?),
            installations: InstallationParams {
                per_app,
                first_within_days: Some(90),
                first_kept: true,
                removed: 0.1,
                reinstalled: 0.2,
            },
            opt_in: OptInParams { rate: (0.03, 0.15), withdrawn: 0.25 },
            app_status: AppStatusParams {
                suspended: 0.08,
                suspension_days: (3, 30),
                banned: 0.0,
                between: (at("2017-03-01")?, at("2019-06-30")?),
            },
            policies: vec![
                (start, ShippedPolicy::Legacy2017),
                (at("2018-04-04")?, ShippedPolicy::Groups2018Grandfathered),
                (at("2019-11-05T12:00:00Z")?, ShippedPolicy::Groups2018),
            ],
            traffic: TrafficParams {
                first_after_days: 7,
                every_days,
                member_fields: profile,
                limit: 500,
                group_fields: group,
                keep_reading_developers: readers,
                stop_reading_between: (at("2018-05-01")?, at("2019-08-31")?),
            },
        })
    }
}

/// The world after the story, ready to serve.
pub struct Story {
    pub dir: DataDir,
    pub service: Arc<Service>,
    pub ledger: Arc<consentry_ledger::Ledger>,
    pub after_story: Arc<dyn Fn(SocketAddr) + Send + Sync>,
    /// The prover the story used (and the server goes on using), if a solver was found.
    pub proofs: Option<consentry_api::Proofs>,
}

/// Proves `version` within `invariants` (when a solver was found) and approves it: when the
/// proofs pass, as consentry's review requires; otherwise `history` says why the story goes on
/// as it happened, and the officer records it as a waiver first.
#[allow(clippy::too_many_arguments)]
fn review_and_approve(
    sim: &Service,
    proofs: Option<&consentry_api::Proofs>,
    invariants: &[&str],
    version: u32,
    author: &OperatorSession,
    officer: &OperatorSession,
    when: Instant,
    history: &str,
) -> Result<()> {
    let fail = |e: consentry_service::ServiceError| anyhow::anyhow!("{e}");
    let indent = "            ";
    match proofs {
        Some(proofs) => {
            let chosen = consentry_api::Proofs {
                prover: proofs.prover.clone(),
                invariants: proofs
                    .invariants
                    .iter()
                    .filter(|i| invariants.contains(&i.name.as_str()))
                    .cloned()
                    .collect(),
            };
            let (review, _) = consentry_api::prove_version(sim, &chosen, version, None, author)
                .map_err(|e| anyhow::anyhow!("proving policy version {version}: {}", e.problem.detail))?;
            for report in &review.invariants {
                let failed: Vec<&consentry_prove::FieldOutcome> =
                    report.fields.iter().filter(|f| !f.outcome.is_proven()).collect();
                if failed.is_empty() {
                    println!(
                        "{}  proofs of v{version} within {}: proven for every field",
                        day(when),
                        report.name
                    );
                    continue;
                }
                let fields: Vec<&str> = failed.iter().map(|f| f.field.as_str()).collect();
                println!(
                    "{}  proofs of v{version} within {}: VIOLATED for {}",
                    day(when),
                    report.name,
                    fields.join(", ")
                );
                if let Some((witness, category)) = failed.iter().find_map(|f| match &f.outcome {
                    consentry_prove::Outcome::Violated(w) => Some((w, f.category_matters)),
                    _ => None,
                }) {
                    println!("{indent}e.g. {}: {} allowed", witness.situation(category), witness.field);
                }
            }
            if let Some(comparison) = &review.comparison {
                println!(
                    "{indent}against {}: newly allows {} kinds of situation, newly denies {}",
                    comparison.against,
                    comparison.newly_allowed.len(),
                    comparison.newly_denied.len()
                );
            }
        }
        None => {
            println!(
                "{}  no proofs of v{version}: no SMT solver on this machine (install cvc5 to see them); approved on the privacy officer's waiver",
                day(when)
            );
            sim.waive_proofs(version, officer, "the demo ran where no SMT solver was installed")
                .map_err(fail)?;
        }
    }
    if !sim.proof_standing(version).map_err(fail)?.allows_approval() {
        println!("{indent}consentry would refuse to approve it; {history}");
        sim.waive_proofs(version, officer, history).map_err(fail)?;
    }
    sim.approve_policy(version, officer).map_err(fail)?;
    Ok(())
}

fn at(text: &str) -> Result<Instant> {
    Instant::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Profile disclosures counted in one period.
#[derive(Default)]
struct Tally {
    requests: u64,
    profiles: u64,
    consented: u64,
    members: HashSet<MemberId>,
    apps: HashSet<AppId>,
    unconsented_by_category: BTreeMap<&'static str, u64>,
    after_withdrawal: u64,
}

/// The demo's data directory: a new one, an empty one, or one the demo wrote itself (its
/// marker, in the demo's own words, is there), which is replaced. Anything else is refused
/// with nothing deleted.
fn prepare_dir(path: &Path) -> Result<DataDir> {
    let refuse = |why: &str| {
        anyhow::anyhow!("{} {why}; give the demo an empty or new directory with --data-dir", path.display())
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
        Ok(found) if found.file_type().is_symlink() => return Err(refuse("is a symbolic link")),
        Ok(found) if !found.is_dir() => return Err(refuse("is not a directory")),
        Ok(_) => {
            let empty = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .next()
                .is_none();
            let ours = std::fs::read_to_string(path.join(MARKER)).is_ok_and(|text| text == MARKER_TEXT);
            if !empty && !ours {
                return Err(refuse("holds files the demo did not write"));
            }
            if ours {
                std::fs::remove_dir_all(path).with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
    }
    let dir = DataDir::open(path)?;
    let marker = dir.file(MARKER);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .and_then(|mut file| std::io::Write::write_all(&mut file, MARKER_TEXT.as_bytes()))
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(dir)
}

fn day(t: Instant) -> String {
    t.to_string().get(..10).unwrap_or_default().to_string()
}

fn fmt(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A moment of the story, told on top of the world's history.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// The privacy team audits the last 60 days against the intended rules.
    Audit,
    /// A case per developer that did: apps revoked, deletion of exactly its manifest requested.
    Remediate,
    /// Every developer but the last attests its deletion.
    Attest,
}

/// Appends the records of the reads served so far: every page of a tick is in the ledger
/// before the story goes on.
fn flush(
    ledger: &consentry_ledger::Ledger,
    pending: &mut Vec<consentry_types::DisclosureRecord>,
) -> Result<()> {
    if !pending.is_empty() {
        ledger.append_all(pending).context("cannot record the tick's disclosures")?;
        pending.clear();
    }
    Ok(())
}

/// Plays the story and returns the world ready to serve.
pub fn play(path: &Path, seed: u64, scale: Scale) -> Result<Story> {
    let started = WallClock::now();
    let params = scale.world(seed)?;
    let world = World::generate(&params).map_err(|e| anyhow::anyhow!("{e}"))?;
    let when = |wanted: ShippedPolicy| {
        params
            .policies
            .iter()
            .find(|(_, p)| *p == wanted)
            .map(|(t, _)| *t)
            .context("the story needs its policies")
    };
    let (start, end) = (params.start, params.end);
    let change = when(ShippedPolicy::Groups2018Grandfathered)?;
    let fix_at = when(ShippedPolicy::Groups2018)?;
    let audit_at = at("2019-11-05T00:00:00Z")?;
    let remediate_at = at("2019-11-06T09:00:00Z")?;
    // Policy proofs, when an SMT solver is on this machine (CONSENTRY_SOLVER or PATH).
    let proofs = crate::prove::server_proofs(std::env::var("CONSENTRY_SOLVER").ok().as_deref(), None)?;
    let dir = prepare_dir(path)?;
    let store = Arc::new(dir.sqlite_store()?);
    let server_key = dir.server_key(store.as_ref())?;
    store.set_bulk_load(true)?;
    let key = server_key;
    // One node plays the story: its stream is `ledger/demo/`.
    let ledger = Arc::new(dir.ledger(&crate::node::node_id(Some("demo"))?)?);
    let clock = Arc::new(SimulatedClock::starting_at(start));
    // Simulated apps keep one token for the whole story; served tokens live an hour.
    let sim_config = ServiceConfig { token_ttl_secs: 5 * 365 * 86_400, ..ServiceConfig::default() };
    // The developers' endpoints are on loopback: local webhooks are allowed for the demo.
    let sim = Arc::new(
        Service::new(store.clone(), clock.clone(), key.clone(), sim_config)
            .with_webhook_targets(crate::serve::webhook_targets(true)),
    );
    let secrets = sim.clone();
    let hooks = WebhookReceiver::start(move |developer| secrets.webhook_secret(developer), clock.clone())?;
    let fail = |e: ServiceError| anyhow::anyhow!("{e}");

    println!("consentry demo: the Groups API story, 2017 to 2019 (seed {seed})");
    println!("The world: {params}.");
    println!();

    // The policy team's keys, made on the server as `consentry serve` and `consentry keys
    // create` make them: the first operator key writes policies, and an independent
    // privacy officer's key approves them (two-person rule, checked by key).
    let user = os_user();
    let author = sim.bootstrap_operator_key("consentry demo", &user).map_err(fail)?;
    let author = author.context("the demo's store already had operator keys")?;
    dir.write_secret(BOOTSTRAP_KEY_FILE, &format!("{}\n", author.key))?;
    let officer = sim
        .create_key_on_server("consentry demo", &user, "privacy-team", OperatorRole::PrivacyOfficer, None)
        .map_err(fail)?;
    dir.write_secret("privacy-officer.key", &format!("{}\n", officer.key))?;
    // An auditor's key too, so every role of the console can be tried.
    let auditor = sim
        .create_key_on_server("consentry demo", &user, "audit-team", OperatorRole::Auditor, None)
        .map_err(fail)?;
    dir.write_secret("auditor.key", &format!("{}\n", auditor.key))?;
    let author = sim.authenticate_operator(&author.key).map_err(fail)?;
    let officer = sim.authenticate_operator(&officer.key).map_err(fail)?;
    println!(
        "{}  keys made on the server: operator key {} writes policies, privacy-officer key {} ({}) approves them",
        day(start),
        author.key_id,
        officer.key_id,
        officer.name
    );
    let hooks_addr = hooks.addr;
    let mut applier = Applier::with_keys(sim.clone(), clock.clone(), author.clone(), officer.clone())
        .with_webhook_url(move |developer| format!("http://{hooks_addr}/hooks/{developer}"));
    let categories: HashMap<&AppId, &'static str> = world.apps.iter().map(|a| (&a.id, a.category)).collect();

    let mut moments = vec![
        (audit_at, Moment::Audit),
        (remediate_at, Moment::Remediate),
        (remediate_at.plus_days(3), Moment::Attest),
    ]
    .into_iter()
    .peekable();
    let mut cases: Vec<(u64, DeveloperId)> = Vec::new();
    let mut consents: HashSet<(MemberId, AppId)> = HashSet::new();
    let mut withdrawn: HashSet<(MemberId, AppId)> = HashSet::new();
    let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
    let (mut installs_before, mut installs_after, mut consent_events, mut withdrawals) =
        (0u64, 0u64, 0u64, 0u64);
    let mut first_audit = None;
    let mut pending = Vec::new();
    let story =
        Storyteller { sim: &sim, proofs: proofs.as_ref(), author: &author, officer: &officer, dir: &dir };
    let last = world.events.last().map_or(end, |t| t.at);
    for timed in world.events.iter().map(Some).chain([None]) {
        let now = timed.map_or(Instant::MAX, |t| t.at);
        while let Some((when, moment)) = moments.next_if(|(t, _)| *t <= now) {
            flush(&ledger, &mut pending)?;
            clock.set(when);
            match moment {
                Moment::Audit => {
                    println!(
                        "{}  {} more installations since; {} opt-ins, {} withdrawn so far",
                        day(when),
                        fmt(installs_after),
                        fmt(consent_events),
                        fmt(withdrawals)
                    );
                    println!();
                    first_audit = Some(story.audit(when)?);
                }
                Moment::Remediate => {
                    let Some(report) = &first_audit else { continue };
                    cases = story.remediate(report)?;
                    println!(
                        "{}  {} cases opened: their apps revoked, deletion of exactly what each received requested by 2019-12-06",
                        day(when),
                        cases.len()
                    );
                }
                Moment::Attest => {
                    for (case, developer) in cases.iter().take(cases.len().saturating_sub(1)) {
                        sim.attest_case(
                            developer,
                            *case,
                            "deleted every item of the manifest from our systems and backups",
                        )
                        .map_err(fail)?;
                    }
                }
            }
        }
        let Some(timed) = timed else { break };
        if !timed.event.is_read() {
            flush(&ledger, &mut pending)?;
        }
        let period = if timed.at < change {
            0
        } else if timed.at < fix_at {
            1
        } else {
            2
        };
        match &timed.event {
            Event::Policy { policy } => {
                clock.set(timed.at);
                if *policy == ShippedPolicy::Groups2018Grandfathered {
                    println!(
                        "{}  {} installations under legacy-2017 so far",
                        day(change.plus_days(-1)),
                        fmt(installs_before)
                    );
                }
                story.activate(*policy, timed.at)?;
                continue;
            }
            Event::Install { .. } if period == 0 => installs_before += 1,
            Event::Install { .. } => installs_after += 1,
            Event::OptIn { member, app } => {
                withdrawn.remove(&(member.clone(), app.clone()));
                consents.insert((member.clone(), app.clone()));
                consent_events += 1;
            }
            Event::Withdraw { member, app } => {
                consents.remove(&(member.clone(), app.clone()));
                withdrawn.insert((member.clone(), app.clone()));
                withdrawals += 1;
            }
            _ => {}
        }
        let records = match applier.apply(timed) {
            Ok(Applied::Served(records)) => records,
            Ok(_) => continue,
            // An app the story revoked is refused: nothing served, nothing recorded.
            Err(e)
                if timed.event.is_read()
                    && matches!(
                        e.refusal(),
                        Some(ServiceError::Unauthenticated(_) | ServiceError::Forbidden(_))
                    ) =>
            {
                continue
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        };
        let Some(tally) = tallies.get_mut(period) else { continue };
        for record in &records {
            tally.requests += 1;
            for disclosure in &record.disclosures {
                let Subject::Member(member) = &disclosure.subject else { continue };
                if !disclosure.fields.contains(Field::MemberName) {
                    continue;
                }
                tally.profiles += 1;
                tally.members.insert(member.clone());
                tally.apps.insert(record.app.clone());
                let key = (member.clone(), record.app.clone());
                if consents.contains(&key) {
                    tally.consented += 1;
                } else {
                    let category = categories.get(&record.app).copied().unwrap_or_default();
                    *tally.unconsented_by_category.entry(category).or_default() += 1;
                }
                if withdrawn.contains(&key) {
                    tally.after_withdrawal += 1;
                }
            }
        }
        pending.extend(records);
    }
    flush(&ledger, &mut pending)?;
    clock.set(last);
    store.set_bulk_load(false)?;
    println!();
    report(&params, world.apps.len(), &tallies);

    let [_, _, fixed] = &tallies;
    let unconsented_after = fixed.profiles - fixed.consented;
    if unconsented_after > 0 || fixed.after_withdrawal > 0 {
        bail!(
            "invariant broken: {unconsented_after} profiles disclosed without opt-in after the fix, {} after withdrawal",
            fixed.after_withdrawal
        );
    }
    let first = first_audit.context("the story ended before its audit")?;
    let follow_up = crate::audit::run_audit(
        &sim,
        &dir.ledger_dir(),
        Some((ShippedPolicy::Groups2018.text(), "groups-2018 (intended)".to_string())),
        None,
        (fix_at, end.plus_days(1)),
    )?;
    println!(
        "Follow-up audit, {} to {}: {} violating disclosures, {} developers could (was {} could, {} did on 2019-11-05).",
        day(follow_up.from),
        day(follow_up.to),
        follow_up.did.violations,
        follow_up.could.developers().len(),
        first.could.developers().len(),
        first.did.developers().len()
    );
    if follow_up.did.violations > 0 || !follow_up.could.by_app.is_empty() {
        bail!("the follow-up audit still finds violations after the fix");
    }
    // The deadline passes; webhooks go out; each case is followed up.
    clock.set(at("2019-12-07T00:00:00Z")?);
    let overdue = sim.check_case_deadlines().map_err(fail)?;
    let deliverer =
        consentry_notify::Deliverer::new(sim.clone(), consentry_notify::DeliveryOptions::default());
    let mut delivered = 0;
    loop {
        let pass = deliverer.deliver_due().map_err(|e| anyhow::anyhow!("{e}"))?;
        delivered += pass.delivered;
        if pass.delivered + pass.retrying + pass.dead == 0 || pass.retrying + pass.dead > 0 {
            break;
        }
    }
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (case, _) in &cases {
        let state = crate::cases::follow_up(&sim, &dir.ledger_dir(), *case)?;
        *outcomes.entry(state.as_str()).or_default() += 1;
    }
    println!(
        "Remediation: {} cases; {} attested in time, {overdue} missed the deadline; follow-up: {}.",
        cases.len(),
        cases.len().saturating_sub(overdue as usize),
        outcomes.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    );
    let (refused, summary) = hooks.summary();
    println!(
        "Webhooks: {delivered} deliveries, each signature and id checked by the developers' endpoints ({summary})."
    );
    if refused > 0 {
        bail!("the developers' endpoints refused {refused} webhook signatures");
    }
    println!();
    let facts = store.facts_as_of(change.plus_millis(-1)).context("cannot reconstruct the facts")?;
    println!(
        "History: on {} {} apps were installed in {} groups, and {} opt-ins existed; `facts_as_of` reconstructs any instant.",
        day(change.plus_millis(-1)),
        facts.installations.keys().map(|(a, _)| a).collect::<HashSet<_>>().len(),
        facts.installations.keys().map(|(_, g)| g).collect::<HashSet<_>>().len(),
        facts.profile_consents.len()
    );
    ledger_summary(&dir, &ledger, &world.apps)?;
    println!("The story took {:.1} s of wall time.", started.elapsed().as_secs_f64());
    println!();

    // Serve the same world with the wall clock (the developers' endpoints keep listening).
    hooks.set_clock(Arc::new(SystemClock::default()));
    let service = Arc::new(
        Service::new(store, Arc::new(SystemClock::default()), key, ServiceConfig::default())
            .with_webhook_targets(crate::serve::webhook_targets(true)),
    );
    announce_bootstrap_key(&service, &dir, "consentry demo")?;
    // Show the app and group where the most members opted in, so the example has people in it;
    // an app still in good standing (a revoked app cannot get a token any more).
    let now = service.store().facts_as_of(service.now()).context("cannot read the facts")?;
    let mut members_of: HashMap<&consentry_types::GroupId, Vec<&MemberId>> = HashMap::new();
    for (group, member) in now.memberships.keys() {
        members_of.entry(group).or_default().push(member);
    }
    let (best_app, best_group) = now
        .installations
        .keys()
        .filter(|(app, _)| now.app_statuses.get(app) == Some(&AppStatus::Active))
        .max_by_key(|(app, group)| {
            let members = members_of.get(group).map(Vec::as_slice).unwrap_or_default();
            let opted =
                members.iter().filter(|m| now.profile_consents.contains(&((**m).clone(), app.clone())));
            (opted.count(), std::cmp::Reverse(app.clone()))
        })
        .context("no app is installed anywhere at the end of the story")?;
    let credentials = applier.credentials(best_app).cloned().context("the demo registered no such app")?;
    let group = best_group.clone();
    let key_file = dir.file(BOOTSTRAP_KEY_FILE);
    let officer_file = dir.file("privacy-officer.key");
    let auditor_file = dir.file("auditor.key");
    let after_story: Arc<dyn Fn(SocketAddr) + Send + Sync> = Arc::new(move |addr: SocketAddr| {
        let base = format!("http://{addr}");
        println!();
        println!("Try it (app {} is installed in group {group}):", credentials.app.id);
        println!("  TOKEN=$(curl -s -u '{}:{}' -d grant_type=client_credentials {base}/oauth/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')", credentials.app.client_id, credentials.client_secret);
        println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/v1/groups/{group}?fields=name,member_count'");
        println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/v1/groups/{group}/members?fields=name,picture&limit=5'");
        println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/v1/groups/{group}/posts?fields=content,author'");
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" {base}/platform/v1/policies",
            key_file.display()
        );
        println!("  curl -s {base}/openapi.json");
        println!();
        println!("The privacy team's console: {base}/console");
        println!(
            "  sign in with a key: the privacy officer's is in {} (`cat` it); the operator's in {}, the auditor's in {}",
            officer_file.display(),
            key_file.display(),
            auditor_file.display()
        );
    });
    Ok(Story { dir, service, ledger, after_story, proofs })
}

/// The story's policy team and privacy team at work: the activations, the audit, the cases.
struct Storyteller<'a> {
    sim: &'a Arc<Service>,
    proofs: Option<&'a consentry_api::Proofs>,
    author: &'a OperatorSession,
    officer: &'a OperatorSession,
    dir: &'a DataDir,
}

impl Storyteller<'_> {
    /// A shipped policy becomes the active one when the world's history says, reviewed (with
    /// proofs when a solver is here) and approved by the independent privacy officer.
    fn activate(&self, policy: ShippedPolicy, when: Instant) -> Result<()> {
        let fail = |e: ServiceError| anyhow::anyhow!("{e}");
        let (sim, author, officer) = (self.sim, self.author, self.officer);
        let version = sim.submit_policy(policy.text(), author).map_err(fail)?;
        let review = |invariants: &[&str], history: &str| {
            review_and_approve(sim, self.proofs, invariants, version, author, officer, when, history)
        };
        match policy {
            ShippedPolicy::Legacy2017 => {
                review(&["app-in-good-standing"], "2017: the review had no proofs; approved as it was")?;
                sim.activate_policy(version, author, "Groups API rules at launch").map_err(fail)?;
                println!(
                    "{}  policy v{version} legacy-2017 active: installed apps read every member's name and picture",
                    day(when)
                );
            }
            ShippedPolicy::Groups2018Grandfathered => {
                println!(
                    "{}  policy v{version} groups-2018 ships, with a grandfathering clause by mistake:",
                    day(when)
                );
                println!("            installations from before today keep reading every member's name and picture");
                review(
                    &["consent-2018", "app-in-good-standing"],
                    "in 2018 the review had no proofs, so the story goes on as it happened (recorded as a waiver)",
                )?;
                sim.activate_policy(version, author, "April 2018: member profiles only with opt-in")
                    .map_err(fail)?;
            }
            ShippedPolicy::Groups2018 => {
                review(
                    &["consent-2018", "app-in-good-standing"],
                    "the fix is approved without proofs on this machine (no SMT solver)",
                )?;
                sim.activate_policy(
                    version,
                    officer,
                    "remove the grandfathering clause found by the 2019-11-05 audit",
                )
                .map_err(fail)?;
                println!(
                    "{}  policy v{version} groups-2018 without the clause is active from {when}",
                    day(when)
                );
            }
        }
        Ok(())
    }

    /// The 2019-11-05 audit of the last 60 days against the intended rules, its HTML report
    /// and deletion manifests.
    fn audit(&self, when: Instant) -> Result<consentry_audit::AuditReport> {
        println!("{}  the privacy team audits the last 60 days against the intended groups-2018:", day(when));
        let report = crate::audit::run_audit(
            self.sim,
            &self.dir.ledger_dir(),
            Some((ShippedPolicy::Groups2018.text(), "groups-2018 (intended)".to_string())),
            None,
            (when.plus_days(-60), when),
        )?;
        print!("{}", crate::audit::table(&report));
        let html = self.dir.file("audit-2019-11-05.html");
        std::fs::write(&html, consentry_api::report_html(&report))
            .with_context(|| format!("cannot write {}", html.display()))?;
        let manifests = crate::audit::write_manifests(&report, &self.dir.file("manifests"))?;
        println!(
            "  report: {}; {manifests} deletion manifests in {}",
            html.display(),
            self.dir.file("manifests").display()
        );
        println!();
        Ok(report)
    }

    /// One case per developer that did: its apps revoked, deletion of exactly its manifest requested.
    fn remediate(&self, report: &consentry_audit::AuditReport) -> Result<Vec<(u64, DeveloperId)>> {
        let json = consentry_api::report_json(report);
        let mut cases = Vec::new();
        for developer in report.did.manifests.keys() {
            let manifest = json
                .get("deletion_manifests")
                .and_then(|m| m.get(developer.as_str()))
                .map(|m| m.to_string())
                .unwrap_or_else(|| "{}".into());
            let case = self.sim.open_case(developer, &manifest, 30).map_err(|e| anyhow::anyhow!("{e}"))?;
            cases.push((case, developer.clone()));
        }
        Ok(cases)
    }
}

/// Verifies the ledger the story wrote and tells, per app and from the ledger alone, what it received.
fn ledger_summary(
    dir: &DataDir,
    ledger: &consentry_ledger::Ledger,
    apps: &[consentry_world::AppPlan],
) -> Result<()> {
    let checkpoint = ledger.checkpoint().context("cannot sign a ledger checkpoint")?;
    let report = consentry_ledger::verify(ledger.dir(), &[]).context("cannot verify the ledger")?;
    if let Some(problem) = &report.problem {
        bail!("the ledger does not verify: {problem}");
    }
    println!(
        "Ledger: verify OK: {} records, {} disclosures in {} bytes ({:.2} bytes a disclosure), checkpoint at record {}.",
        fmt(report.records),
        fmt(report.disclosures),
        fmt(report.bytes),
        report.bytes as f64 / report.disclosures.max(1) as f64,
        checkpoint.seq
    );
    let mut per_app: BTreeMap<String, (u64, u64, HashSet<MemberId>)> = BTreeMap::new();
    for entry in consentry_ledger::Entries::open(&dir.ledger_dir())? {
        let record = entry?.record;
        let line = per_app.entry(record.app.to_string()).or_default();
        line.0 += 1;
        for disclosure in record.disclosures {
            if let Subject::Member(member) = disclosure.subject {
                line.1 += 1;
                line.2.insert(member);
            }
        }
    }
    println!("What each app received, read back from the ledger:");
    for app in apps {
        let (responses, profiles, members) = per_app.remove(app.id.as_str()).unwrap_or_default();
        println!(
            "  {} {:<26} {:>7} responses {:>9} member profiles of {:>6} members",
            app.id,
            app.category,
            fmt(responses),
            fmt(profiles),
            fmt(members.len() as u64)
        );
    }
    println!();
    Ok(())
}

fn report(params: &WorldParams, apps: usize, tallies: &[Tally; 3]) {
    println!(
        "World: {} members in {} groups; {} developers with {apps} apps; every {} days each app read each of its groups.",
        fmt(params.members as u64),
        fmt(params.groups.count as u64),
        params.developers,
        params.traffic.every_days
    );
    println!();
    println!("What apps saw of members (name and picture, GET /v1/groups/{{id}}/members):");
    println!("  {:<44}{:>16}{:>16}{:>16}", "", "legacy-2017", "2018 as shipped", "2018 fixed");
    let [legacy, shipped, fixed] = tallies;
    let row = |label: &str, f: &dyn Fn(&Tally) -> String| {
        println!("  {label:<44}{:>16}{:>16}{:>16}", f(legacy), f(shipped), f(fixed));
    };
    row("pages served", &|t| fmt(t.requests));
    row("member profiles disclosed", &|t| fmt(t.profiles));
    row("  of members who had opted in to that app", &|t| fmt(t.consented));
    row("  of members who had not", &|t| fmt(t.profiles - t.consented));
    row("  share with opt-in", &|t| percent(t.consented, t.profiles));
    row("distinct members seen", &|t| fmt(t.members.len() as u64));
    row("apps that saw any member profile", &|t| fmt(t.apps.len() as u64));
    row("profiles sent after the member withdrew", &|t| fmt(t.after_withdrawal));
    println!();
    println!("Profiles disclosed without opt-in, by app category:");
    for category in CATEGORIES {
        row(category, &|t| fmt(t.unconsented_by_category.get(category).copied().unwrap_or(0)));
    }
    println!();
    println!("Under legacy-2017 every installed app saw every member. The 2018 rules as shipped kept that");
    println!("access alive for installations made before the change; the audit found the apps that used it.");
    println!("From the fix on, the very next request of every app was decided without the clause: nothing");
    println!(
        "granted earlier was honored, and a withdrawn opt-in removed the member from the next response."
    );
    println!();
}

/// A local stand-in for the developers' webhook endpoints, served with axum as a developer's
/// would be: each delivery's signature is checked with that developer's secret against the
/// story's clock (five minutes' tolerance), deliveries are deduplicated by their signed id,
/// and only verified events are counted. A bad signature is answered 400.
struct WebhookReceiver {
    addr: SocketAddr,
    received: Arc<std::sync::Mutex<Received>>,
    clock: ReceiverClock,
}

/// The developers' notion of now: the story's clock while it plays, then the wall clock.
type ReceiverClock = Arc<std::sync::RwLock<Arc<dyn consentry_service::Clock>>>;

/// What the developers' endpoints accepted and refused.
#[derive(Default)]
struct Received {
    events: BTreeMap<String, usize>,
    ids: HashSet<(String, String)>,
    duplicates: usize,
    refused: usize,
}

#[derive(Clone)]
struct ReceiverState {
    /// The secret each developer was given (`GET /platform/v1/developers/{id}/webhook-secret`).
    secret: Arc<dyn Fn(&DeveloperId) -> String + Send + Sync>,
    clock: ReceiverClock,
    received: Arc<std::sync::Mutex<Received>>,
}

/// `POST /hooks/{developer}`: what a developer's endpoint does with a delivery.
async fn receive_webhook(
    axum::extract::State(state): axum::extract::State<ReceiverState>,
    axum::extract::Path(developer): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let Ok(developer) = DeveloperId::parse(&developer) else { return StatusCode::NOT_FOUND };
    let header = headers.get("consentry-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(now) = state.clock.read().map(|clock| clock.now().secs()) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let verified = consentry_notify::verify_signature(&(state.secret)(&developer), header, &body, now, 300);
    let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let field = |name: &str| json.as_ref().and_then(|v| v.get(name)?.as_str().map(str::to_string));
    let Ok(mut received) = state.received.lock() else { return StatusCode::INTERNAL_SERVER_ERROR };
    match (verified, field("id"), field("event")) {
        (Ok(()), Some(id), Some(event)) => {
            if received.ids.insert((developer.to_string(), id)) {
                *received.events.entry(event).or_default() += 1;
            } else {
                received.duplicates += 1;
            }
            StatusCode::OK
        }
        _ => {
            received.refused += 1;
            StatusCode::BAD_REQUEST
        }
    }
}

impl WebhookReceiver {
    fn start(
        secret: impl Fn(&DeveloperId) -> String + Send + Sync + 'static,
        clock: Arc<dyn consentry_service::Clock>,
    ) -> Result<WebhookReceiver> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot start the demo's webhook receiver")?;
        listener.set_nonblocking(true).context("cannot start the demo's webhook receiver")?;
        let addr = listener.local_addr()?;
        let received: Arc<std::sync::Mutex<Received>> = Arc::default();
        let clock: ReceiverClock = Arc::new(std::sync::RwLock::new(clock));
        let state =
            ReceiverState { secret: Arc::new(secret), clock: clock.clone(), received: received.clone() };
        let router = axum::Router::new()
            .route("/hooks/{developer}", axum::routing::post(receive_webhook))
            .with_state(state);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the demo's webhook receiver")?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, router).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    eprintln!("the demo's webhook receiver stopped: {error}");
                }
            });
        });
        Ok(WebhookReceiver { addr, received, clock })
    }

    /// From now on, signatures are checked against `clock`.
    fn set_clock(&self, clock: Arc<dyn consentry_service::Clock>) {
        if let Ok(mut current) = self.clock.write() {
            *current = clock;
        }
    }

    /// Refused signatures, and what was accepted, e.g. `3 deletion.requested, 1 case.failed`.
    fn summary(&self) -> (usize, String) {
        let Ok(received) = self.received.lock() else { return (0, String::new()) };
        let events = received.events.iter().map(|(name, n)| format!("{n} {name}")).collect::<Vec<_>>();
        let accepted = if events.is_empty() { "nothing accepted".to_string() } else { events.join(", ") };
        let summary =
            format!("{accepted}; {} refused, {} duplicates ignored", received.refused, received.duplicates);
        (received.refused, summary)
    }
}
