//! `consentry demo`: a seeded world plays the Groups API story from 2017 to 2019 through the
//! same service path the HTTP server uses, prints what apps could see before and after the
//! April 2018 change, then hands the world to the server.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant as WallClock;

use anyhow::{bail, Context, Result};
use consentry_service::{
    AppSession, OperatorSession, PageRequest, Service, ServiceConfig, SimulatedClock, Subject, SystemClock,
};
use consentry_store::Store;
use consentry_types::{
    AppId, DeveloperId, Field, FieldSet, GroupId, Instant, MemberId, OperatorRole, PostId, Role, Scope,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::data_dir::DataDir;
use crate::keys::{os_user, BOOTSTRAP_KEY_FILE};
use crate::serve::announce_bootstrap_key;

const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const GROUPS_2018_SHIPPED: &str = include_str!("../../../policies/groups-2018-grandfathered.cedar");
const MARKER: &str = "demo-world.txt";
/// What the marker says: a directory holding it with these words is the demo's to replace.
const MARKER_TEXT: &str = "written by `consentry demo`; replaced on every run\n";

const CATEGORIES: [&str; 5] =
    ["social_media_management", "video_streaming", "analytics", "event_planning", "community_moderation"];
const FIRST: [&str; 16] = [
    "Ada", "Bao", "Chiara", "Dmitri", "Esi", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi", "Lars",
    "Mei", "Nia", "Omar", "Priya",
];
const LAST: [&str; 12] = [
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Moreau",
    "Silva",
    "Novak",
    "Haddad",
    "Kowalski",
    "Nguyen",
    "Ibarra",
    "Berg",
    "Costa",
];
const TOPICS: [&str; 12] = [
    "Hikers",
    "Sourdough",
    "Chess",
    "Parents",
    "Cyclists",
    "Gardeners",
    "Photographers",
    "Runners",
    "Birdwatchers",
    "Makers",
    "Readers",
    "Climbers",
];
const PLACES: [&str; 10] =
    ["Lisbon", "Osaka", "Lagos", "Oslo", "Austin", "Pune", "Lyon", "Cusco", "Leeds", "Perth"];

/// How big a world to simulate.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    Full,
    Small,
}

struct Params {
    members: usize,
    groups: usize,
    developers: usize,
    group_size: (usize, usize),
    installs_per_app: (usize, usize),
    consent_rate: f64,
    /// Developers whose apps keep reading member lists to the end (they *did*).
    active_developers: usize,
    withdraw_rate: f64,
    read_every_days: i64,
}

impl Scale {
    pub fn parse(text: &str) -> Result<Scale> {
        match text {
            "full" => Ok(Scale::Full),
            "small" => Ok(Scale::Small),
            other => bail!("unknown scale {other:?}: use full or small"),
        }
    }

    fn params(self) -> Params {
        match self {
            Scale::Full => Params {
                members: 5_000,
                groups: 300,
                developers: 100,
                group_size: (15, 60),
                installs_per_app: (2, 6),
                consent_rate: 0.06,
                active_developers: 11,
                withdraw_rate: 0.25,
                read_every_days: 14,
            },
            Scale::Small => Params {
                members: 300,
                groups: 20,
                developers: 10,
                group_size: (8, 20),
                installs_per_app: (1, 3),
                consent_rate: 0.15,
                active_developers: 3,
                withdraw_rate: 0.3,
                read_every_days: 28,
            },
        }
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

fn id<T>(parse: fn(&str) -> Result<T, consentry_types::InvalidId>, text: &str) -> Result<T> {
    parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A change the story makes at an instant.
#[derive(Debug, Clone)]
enum Event {
    Install { app: usize, group: usize, by: MemberId },
    Uninstall { app: usize, group: usize },
    Consent { member: MemberId, app: usize },
    Withdraw { member: MemberId, app: usize },
    ShipGroups2018,
    Audit,
    Fix,
    Remediate,
}

struct AppInfo {
    id: AppId,
    developer: usize,
    category: &'static str,
    session: AppSession,
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

fn random_between(rng: &mut StdRng, from: Instant, to: Instant) -> Instant {
    if to <= from {
        return from;
    }
    Instant::from_millis(rng.gen_range(from.millis()..to.millis()))
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

/// Plays the story and returns the world ready to serve.
pub fn play(path: &Path, seed: u64, scale: Scale) -> Result<Story> {
    let started = WallClock::now();
    let params = scale.params();
    // Policy proofs, when an SMT solver is on this machine (CONSENTRY_SOLVER or PATH).
    let proofs = crate::prove::server_proofs(std::env::var("CONSENTRY_SOLVER").ok().as_deref(), None)?;
    let dir = prepare_dir(path)?;
    let store = Arc::new(dir.sqlite_store()?);
    let server_key = dir.server_key(store.as_ref())?;
    store.set_bulk_load(true)?;
    let key = server_key;
    // One node plays the story: its stream is `ledger/demo/`.
    let ledger = Arc::new(dir.ledger(&crate::node::node_id(Some("demo"))?)?);
    let start = at("2017-01-02T09:00:00Z")?;
    let change = at("2018-04-04T00:00:00Z")?;
    let end = at("2019-12-05T00:00:00Z")?;
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
    let mut rng = StdRng::seed_from_u64(seed);
    let fail = |e: consentry_service::ServiceError| anyhow::anyhow!("{e}");

    println!("consentry demo: the Groups API story, 2017 to 2019 (seed {seed})");
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
    let author = sim.authenticate_operator(&author.key).map_err(fail)?;
    let officer = sim.authenticate_operator(&officer.key).map_err(fail)?;
    println!(
        "{}  keys made on the server: operator key {} writes policies, privacy-officer key {} ({}) approves them",
        &start.to_string()[..10],
        author.key_id,
        officer.key_id,
        officer.name
    );

    // Policies: legacy rules at launch; the 2018 rules are written ahead of the change.
    let legacy = sim.submit_policy(LEGACY, &author).map_err(fail)?;
    review_and_approve(
        &sim,
        proofs.as_ref(),
        &["app-in-good-standing"],
        legacy,
        &author,
        &officer,
        start,
        "2017: the review had no proofs; approved as it was",
    )?;
    sim.activate_policy(legacy, &author, "Groups API rules at launch").map_err(fail)?;
    println!(
        "{}  policy v{legacy} legacy-2017 active: installed apps read every member's name and picture",
        &start.to_string()[..10]
    );

    // Members, groups, memberships, posts.
    let mut members = Vec::with_capacity(params.members);
    for i in 0..params.members {
        let member = id(MemberId::parse, &format!("m-{i:05}"))?;
        let name = format!(
            "{} {}",
            FIRST.choose(&mut rng).unwrap_or(&"Ada"),
            LAST.choose(&mut rng).unwrap_or(&"Berg")
        );
        sim.put_member(&member, &name, &format!("https://pictures.example/{member}.jpg")).map_err(fail)?;
        members.push(member);
    }
    let mut group_ids = Vec::with_capacity(params.groups);
    let mut group_members: Vec<Vec<MemberId>> = Vec::with_capacity(params.groups);
    let mut group_admins: Vec<Vec<MemberId>> = Vec::with_capacity(params.groups);
    for g in 0..params.groups {
        let group = id(GroupId::parse, &format!("g-{g:04}"))?;
        let name = format!(
            "{} of {}",
            TOPICS.choose(&mut rng).unwrap_or(&"Hikers"),
            PLACES.choose(&mut rng).unwrap_or(&"Oslo")
        );
        sim.put_group(&group, &name).map_err(fail)?;
        let size = rng.gen_range(params.group_size.0..=params.group_size.1);
        let chosen: Vec<MemberId> = members.choose_multiple(&mut rng, size).cloned().collect();
        let admins = rng.gen_range(1..=2usize);
        for (i, member) in chosen.iter().enumerate() {
            let role = if i < admins { Role::Admin } else { Role::Member };
            sim.set_membership(&group, member, Some(role)).map_err(fail)?;
        }
        for p in 0..3 {
            if let Some(author) = chosen.choose(&mut rng) {
                let post = id(PostId::parse, &format!("{group}-p{p}"))?;
                sim.put_post(&group, &post, author, &format!("Meet-up notes #{p} from {name}"))
                    .map_err(fail)?;
            }
        }
        group_admins.push(chosen.iter().take(admins).cloned().collect());
        group_members.push(chosen);
        group_ids.push(group);
    }

    // Developers and their apps.
    let mut apps: Vec<AppInfo> = Vec::new();
    let mut registrations = Vec::new();
    for d in 0..params.developers {
        let developer = id(DeveloperId::parse, &format!("dev-{d:03}"))?;
        let category = CATEGORIES.get(d % CATEGORIES.len()).copied().unwrap_or("analytics");
        sim.put_developer(
            &developer,
            &format!("Developer {d:03}"),
            &format!("privacy@dev{d:03}.example"),
            &format!("http://{}/hooks/dev-{d:03}", hooks.addr),
        )
        .map_err(fail)?;
        let count = if d % 8 == 0 { 2 } else { 1 };
        for n in 0..count {
            let app_id = id(AppId::parse, &format!("app-{d:03}-{n}"))?;
            let registered = sim
                .register_app_with_id(app_id, &developer, &format!("{category} app {d:03}-{n}"), category)
                .map_err(fail)?;
            let token =
                sim.issue_token(&registered.app.client_id, &registered.client_secret).map_err(fail)?;
            let session = sim.authenticate_app(&token.access_token).map_err(fail)?;
            registrations.push(registered.clone());
            apps.push(AppInfo { id: registered.app.id.clone(), developer: d, category, session });
        }
    }

    // The story's changes, in time order.
    let audit_at = at("2019-11-05T00:00:00Z")?;
    let fix_at = at("2019-11-05T12:00:00Z")?;
    let remediate_at = at("2019-11-06T09:00:00Z")?;
    let mut cases: Vec<(u64, DeveloperId)> = Vec::new();
    let mut attested = false;
    let mut events: Vec<(Instant, Event)> = vec![
        (change, Event::ShipGroups2018),
        (audit_at, Event::Audit),
        (fix_at, Event::Fix),
        (remediate_at, Event::Remediate),
    ];
    let legacy_window_end = at("2018-03-31T00:00:00Z")?;
    let late_start = at("2018-04-10T00:00:00Z")?;
    let late_end = at("2019-09-30T00:00:00Z")?;
    let uninstall_from = at("2018-06-01T00:00:00Z")?;
    let consent_until = at("2019-10-31T00:00:00Z")?;
    let mut kept_early_install = vec![false; apps.len()];
    for (a, _) in apps.iter().enumerate() {
        let installs = rng.gen_range(params.installs_per_app.0..=params.installs_per_app.1);
        let groups: Vec<usize> =
            (0..params.groups).collect::<Vec<_>>().choose_multiple(&mut rng, installs).copied().collect();
        for g in groups {
            let when = if rng.gen_bool(0.8) {
                random_between(&mut rng, start.plus_days(1), legacy_window_end)
            } else {
                random_between(&mut rng, late_start, late_end)
            };
            let by = group_admins.get(g).and_then(|a| a.first()).cloned().context("group without admin")?;
            events.push((when, Event::Install { app: a, group: g, by }));
            if rng.gen_bool(0.1) {
                events.push((
                    random_between(&mut rng, when.max(uninstall_from), late_end),
                    Event::Uninstall { app: a, group: g },
                ));
            } else if when < change {
                if let Some(kept) = kept_early_install.get_mut(a) {
                    *kept = true;
                }
            }
            for member in group_members.get(g).map(Vec::as_slice).unwrap_or_default() {
                if rng.gen_bool(params.consent_rate) {
                    let consent_at = random_between(&mut rng, when, consent_until);
                    events.push((consent_at, Event::Consent { member: member.clone(), app: a }));
                    if rng.gen_bool(params.withdraw_rate) {
                        let withdraw_at = random_between(&mut rng, consent_at.plus_secs(1), end);
                        events.push((withdraw_at, Event::Withdraw { member: member.clone(), app: a }));
                    }
                }
            }
        }
    }
    events.sort_by_key(|(t, _)| *t);
    // Most apps stop reading member lists by mid-2019 and read only the group; the apps of a
    // few developers with grandfathered installations keep reading members to the end.
    let mut candidates: Vec<usize> = (0..params.developers)
        .filter(|d| {
            apps.iter()
                .enumerate()
                .any(|(a, info)| info.developer == *d && kept_early_install.get(a) == Some(&true))
        })
        .collect();
    candidates.shuffle(&mut rng);
    let readers: HashSet<usize> = candidates.into_iter().take(params.active_developers).collect();
    let stop_from = at("2018-05-01T00:00:00Z")?;
    let stop_until = at("2019-08-31T00:00:00Z")?;
    let members_until: Vec<Instant> = apps
        .iter()
        .map(|info| {
            if readers.contains(&info.developer) {
                Instant::MAX
            } else {
                random_between(&mut rng, stop_from, stop_until)
            }
        })
        .collect();

    // Walk the clock: apply each change, and every read_every_days let every app read each
    // group it is installed in: its members while it still wants them, else the group alone.
    let profile_fields: FieldSet = [Field::MemberName, Field::MemberPicture].into_iter().collect();
    let group_fields: FieldSet = [Field::GroupName, Field::GroupMemberCount].into_iter().collect();
    let mut installed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); apps.len()];
    let mut consents: HashSet<(MemberId, usize)> = HashSet::new();
    let mut withdrawn: HashSet<(MemberId, usize)> = HashSet::new();
    let mut tallies = [Tally::default(), Tally::default(), Tally::default()];
    let (mut installs_before, mut installs_after, mut consent_events, mut withdrawals) =
        (0u64, 0u64, 0u64, 0u64);
    let mut first_audit = None;
    let mut pending = events.into_iter().peekable();
    let mut tick = start.plus_days(7);
    while tick <= end {
        while let Some((when, event)) = pending.next_if(|(t, _)| *t <= tick) {
            clock.set(when);
            match event {
                Event::Install { app, group, by } => {
                    let (Some(info), Some(gid)) = (apps.get(app), group_ids.get(group)) else { continue };
                    sim.install_app(&info.id, gid, &by).map_err(fail)?;
                    if let Some(set) = installed.get_mut(app) {
                        set.insert(group);
                    }
                    if when < change {
                        installs_before += 1
                    } else {
                        installs_after += 1
                    }
                }
                Event::Uninstall { app, group } => {
                    let (Some(info), Some(gid)) = (apps.get(app), group_ids.get(group)) else { continue };
                    sim.uninstall_app(&info.id, gid).map_err(fail)?;
                    if let Some(set) = installed.get_mut(app) {
                        set.remove(&group);
                    }
                }
                Event::Consent { member, app } => {
                    let Some(info) = apps.get(app) else { continue };
                    sim.set_consent(&member, &info.id, &[Scope::Profile]).map_err(fail)?;
                    withdrawn.remove(&(member.clone(), app));
                    consents.insert((member, app));
                    consent_events += 1;
                }
                Event::Withdraw { member, app } => {
                    let Some(info) = apps.get(app) else { continue };
                    sim.set_consent(&member, &info.id, &[]).map_err(fail)?;
                    consents.remove(&(member.clone(), app));
                    withdrawn.insert((member, app));
                    withdrawals += 1;
                }
                Event::ShipGroups2018 => {
                    println!(
                        "{}  {} installations under legacy-2017 so far",
                        day(legacy_window_end),
                        fmt(installs_before)
                    );
                    let version = sim.submit_policy(GROUPS_2018_SHIPPED, &author).map_err(fail)?;
                    println!(
                        "{}  policy v{version} groups-2018 ships, with a grandfathering clause by mistake:",
                        day(when)
                    );
                    println!("            installations from before today keep reading every member's name and picture");
                    review_and_approve(
                        &sim,
                        proofs.as_ref(),
                        &["consent-2018", "app-in-good-standing"],
                        version,
                        &author,
                        &officer,
                        when,
                        "in 2018 the review had no proofs, so the story goes on as it happened (recorded as a waiver)",
                    )?;
                    sim.activate_policy(version, &author, "April 2018: member profiles only with opt-in")
                        .map_err(fail)?;
                }
                Event::Audit => {
                    println!(
                        "{}  {} more installations since; {} opt-ins, {} withdrawn so far",
                        day(when),
                        fmt(installs_after),
                        fmt(consent_events),
                        fmt(withdrawals)
                    );
                    println!();
                    println!(
                        "{}  the privacy team audits the last 60 days against the intended groups-2018:",
                        day(when)
                    );
                    let report = crate::audit::run_audit(
                        &sim,
                        &dir.ledger_dir(),
                        Some((GROUPS_2018, "groups-2018 (intended)".to_string())),
                        None,
                        (when.plus_days(-60), when),
                    )?;
                    print!("{}", crate::audit::table(&report));
                    let html = dir.file("audit-2019-11-05.html");
                    std::fs::write(&html, crate::audit::html(&report))
                        .with_context(|| format!("cannot write {}", html.display()))?;
                    let manifests = crate::audit::write_manifests(&report, &dir.file("manifests"))?;
                    println!(
                        "  report: {}; {manifests} deletion manifests in {}",
                        html.display(),
                        dir.file("manifests").display()
                    );
                    println!();
                    first_audit = Some(report);
                }
                Event::Remediate => {
                    // One case per developer that did: revoke, request deletion of exactly its manifest.
                    let Some(report) = &first_audit else { continue };
                    let json = consentry_api::report_json(report);
                    for developer in report.did.manifests.keys() {
                        let manifest = json
                            .get("deletion_manifests")
                            .and_then(|m| m.get(developer.as_str()))
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "{}".into());
                        let case = sim.open_case(developer, &manifest, 30).map_err(fail)?;
                        cases.push((case, developer.clone()));
                    }
                    println!(
                        "{}  {} cases opened: their apps revoked, deletion of exactly what each received requested by 2019-12-06",
                        day(when),
                        cases.len()
                    );
                }
                Event::Fix => {
                    let version = sim.submit_policy(GROUPS_2018, &author).map_err(fail)?;
                    review_and_approve(
                        &sim,
                        proofs.as_ref(),
                        &["consent-2018", "app-in-good-standing"],
                        version,
                        &author,
                        &officer,
                        when,
                        "the fix is approved without proofs on this machine (no SMT solver)",
                    )?;
                    sim.activate_policy(
                        version,
                        &officer,
                        "remove the grandfathering clause found by the 2019-11-05 audit",
                    )
                    .map_err(fail)?;
                    println!(
                        "{}  policy v{version} groups-2018 without the clause is active from {}",
                        day(when),
                        when
                    );
                }
            }
        }
        clock.set(tick);
        // Three days after the cases open, every developer but the last attests its deletion.
        if !attested && !cases.is_empty() && tick >= remediate_at.plus_days(3) {
            for (case, developer) in cases.iter().take(cases.len().saturating_sub(1)) {
                sim.attest_case(
                    developer,
                    *case,
                    "deleted every item of the manifest from our systems and backups",
                )
                .map_err(fail)?;
            }
            attested = true;
        }
        let period = if tick < change {
            0
        } else if tick < fix_at {
            1
        } else {
            2
        };
        let Some(tally) = tallies.get_mut(period) else { break };
        let mut records = Vec::new();
        for (a, info) in apps.iter().enumerate() {
            let wants_members = members_until.get(a).is_some_and(|until| tick < *until);
            for &g in installed.get(a).into_iter().flatten() {
                let Some(group) = group_ids.get(g) else { continue };
                if !wants_members {
                    let served = match sim.read_group(&info.session, group, group_fields) {
                        Ok(served) => served,
                        // A revoked app's request is refused: nothing served, nothing recorded.
                        Err(consentry_service::ServiceError::Unauthenticated(_)) => continue,
                        Err(e) => return Err(fail(e)),
                    };
                    tally.requests += 1;
                    records.push(served.record(
                        &consentry_service::request_id(),
                        "GET /v1/groups/{id}",
                        &info.session,
                    ));
                    continue;
                }
                let page = PageRequest { after: None, limit: Some(500) };
                let served = match sim.read_members(&info.session, group, profile_fields, &page) {
                    Ok(served) => served,
                    Err(consentry_service::ServiceError::Unauthenticated(_)) => continue,
                    Err(e) => return Err(fail(e)),
                };
                tally.requests += 1;
                records.push(served.record(
                    &consentry_service::request_id(),
                    "GET /v1/groups/{id}/members",
                    &info.session,
                ));
                for disclosure in &served.disclosures {
                    let Subject::Member(member) = &disclosure.subject else { continue };
                    if !disclosure.fields.contains(Field::MemberName) {
                        continue;
                    }
                    tally.profiles += 1;
                    tally.members.insert(member.clone());
                    tally.apps.insert(info.id.clone());
                    let key = (member.clone(), a);
                    if consents.contains(&key) {
                        tally.consented += 1;
                    } else {
                        *tally.unconsented_by_category.entry(info.category).or_default() += 1;
                    }
                    if withdrawn.contains(&key) {
                        tally.after_withdrawal += 1;
                    }
                }
            }
        }
        // Every page of the tick is in the ledger before the story goes on.
        ledger.append_all(&records).context("cannot record the tick's disclosures")?;
        tick = tick.plus_days(params.read_every_days);
    }
    store.set_bulk_load(false)?;
    println!();
    report(&params, apps.len(), &tallies);

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
        Some((GROUPS_2018, "groups-2018 (intended)".to_string())),
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
        "History: on 2018-04-03 {} apps were installed in {} groups, and {} opt-ins existed; `facts_as_of` reconstructs any instant.",
        facts.installations.keys().map(|(a, _)| a).collect::<HashSet<_>>().len(),
        facts.installations.keys().map(|(_, g)| g).collect::<HashSet<_>>().len(),
        facts.profile_consents.len()
    );
    ledger_summary(&dir, &ledger, &apps)?;
    println!("The story took {:.1} s of wall time.", started.elapsed().as_secs_f64());
    println!();

    // Serve the same world with the wall clock (the developers' endpoints keep listening).
    hooks.set_clock(Arc::new(SystemClock::default()));
    let service = Arc::new(
        Service::new(store, Arc::new(SystemClock::default()), key, ServiceConfig::default())
            .with_webhook_targets(crate::serve::webhook_targets(true)),
    );
    announce_bootstrap_key(&service, &dir, "consentry demo")?;
    // Show the app and group where the most members opted in, so the example has people in it.
    let (best_app, best_group) = installed
        .iter()
        .enumerate()
        .flat_map(|(a, groups)| groups.iter().map(move |g| (a, *g)))
        // Revoked apps cannot get a token any more: show an app still in good standing.
        .filter(|(a, _)| {
            apps.get(*a).is_some_and(|info| {
                service
                    .store()
                    .app(&info.id)
                    .ok()
                    .flatten()
                    .is_some_and(|app| app.status == consentry_types::AppStatus::Active)
            })
        })
        .max_by_key(|(a, g)| {
            let in_group = group_members.get(*g).map(Vec::as_slice).unwrap_or_default();
            (in_group.iter().filter(|m| consents.contains(&((*m).clone(), *a))).count(), usize::MAX - a)
        })
        .context("no app is installed anywhere at the end of the story")?;
    let credentials = registrations.get(best_app).cloned().context("the demo registered no app")?;
    let group = group_ids.get(best_group).cloned().context("the demo has no group")?;
    let key_file = dir.file(BOOTSTRAP_KEY_FILE);
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
    });
    Ok(Story { dir, service, ledger, after_story, proofs })
}

/// Verifies the ledger the story wrote and tells, per app and from the ledger alone, what it received.
fn ledger_summary(dir: &DataDir, ledger: &consentry_ledger::Ledger, apps: &[AppInfo]) -> Result<()> {
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

fn report(params: &Params, apps: usize, tallies: &[Tally; 3]) {
    println!(
        "World: {} members in {} groups; {} developers with {apps} apps; every {} days each app read each of its groups.",
        fmt(params.members as u64),
        fmt(params.groups as u64),
        params.developers,
        params.read_every_days
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
