//! The world generator: determinism, its distributions, the platform's rules in every history,
//! and a service that applies a world reconstructing the generator's facts at any instant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // tests

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use consentry_service::{ServerKey, Service, ServiceConfig, SimulatedClock, Subject};
use consentry_store::Store;
use consentry_store_sqlite::SqliteStore;
use consentry_types::{AppStatus, Instant, MemberId, Role};
use consentry_world::{
    Applied, Applier, Event, Read, Replay, ShippedPolicy, StatusChange, World, WorldError, WorldParams,
};
use proptest::prelude::*;

/// A world small enough to play through a service in a debug build in a few seconds.
fn tiny(seed: u64) -> WorldParams {
    let mut params = WorldParams::small(seed);
    params.members = 600;
    params.groups.count = 30;
    params.groups.largest = 240;
    params.developers = 8;
    params.traffic.every_days = 90;
    params.traffic.limit = 40;
    params
}

#[test]
fn the_same_seed_gives_the_same_world_and_another_seed_another() {
    let params = WorldParams::small(7);
    let one = World::generate(&params).unwrap();
    let two = World::generate(&params).unwrap();
    assert_eq!(one, two);
    let other = World::generate(&WorldParams::small(8)).unwrap();
    assert_ne!(one.events, other.events);
    assert!(one.events.windows(2).all(|w| w[0].at < w[1].at), "instants strictly increase");
}

#[test]
fn parameters_print_with_their_seed_and_every_figure() {
    let params = WorldParams::benchmark(2019);
    let text = params.to_string();
    for part in [
        "world seed 2019",
        "2016-01-01..2019-12-31",
        "60000 members",
        "1500 groups sized by Zipf's law (exponent 0.9, largest 6000, smallest 5)",
        "opt-in 3%–15% per app, 20% withdrawn",
        "groups-2018-grandfathered from 2018-04-04",
        "groups-2018 from 2019-11-05T12:00:00Z",
        "members (name,picture, 100 a page, every page)",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(!text.contains('\n'), "one paragraph");
}

#[test]
fn impossible_parameters_are_refused_with_the_reason() {
    let mut params = WorldParams::small(1);
    params.opt_in.rate = (0.2, 0.1);
    assert!(matches!(World::generate(&params), Err(WorldError::Params(why)) if why.contains("opt-in")));
    let mut params = WorldParams::small(1);
    params.members = 0;
    assert!(matches!(World::generate(&params), Err(WorldError::Params(why)) if why.contains("members")));
    let mut params = WorldParams::small(1);
    params.end = params.start;
    assert!(World::generate(&params).is_err());
    let mut params = WorldParams::small(1);
    params.app_status.banned = 1.5;
    assert!(World::generate(&params).is_err());
}

/// Least-squares slope of ln(size) against ln(rank), over ranks not clamped to the smallest size.
fn zipf_exponent(sizes: &[usize], smallest: usize) -> f64 {
    let mut sorted: Vec<usize> = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let points: Vec<(f64, f64)> = sorted
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > smallest)
        .map(|(r, s)| (((r + 1) as f64).ln(), (*s as f64).ln()))
        .collect();
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    -sxy / sxx
}

#[test]
fn group_sizes_follow_zipfs_law() {
    for params in [WorldParams::benchmark(3), WorldParams::small(3)] {
        let world = World::generate(&params).unwrap();
        let g = &params.groups;
        let fitted = zipf_exponent(&world.starting_sizes, g.smallest);
        assert!((fitted - g.exponent).abs() < 0.08, "fitted exponent {fitted}, asked {}", g.exponent);
        let largest = world.starting_sizes.iter().max().copied().unwrap();
        assert!(
            largest as f64 >= g.largest as f64 * 0.9 && largest as f64 <= g.largest as f64 * 1.1,
            "largest group {largest}"
        );
        assert!(world.starting_sizes.iter().all(|s| *s >= g.smallest));
        // The starting joins are exactly the sizes: distinct members, at least one admin.
        let mut replay = Replay::new(&world);
        // Churn starts an hour into the window; the starting joins are all before.
        replay.advance_to(params.start.plus_secs(1_800));
        for (group, size) in world.groups.iter().zip(&world.starting_sizes) {
            assert_eq!(replay.member_count(group), *size, "{group}");
            assert!(replay.members(group).any(|(_, r)| r == Role::Admin), "{group} has an admin");
        }
        // Not everyone looks alike: the largest group is hundreds of times the smallest.
        assert!(largest >= 100 * g.smallest.max(1));
    }
}

#[test]
fn opt_in_rates_stay_within_three_to_fifteen_percent_per_app() {
    let world = World::generate(&WorldParams::benchmark(11)).unwrap();
    let mut opt_ins: BTreeMap<&str, usize> = BTreeMap::new();
    for timed in &world.events {
        if let Event::OptIn { app, .. } = &timed.event {
            *opt_ins.entry(app.as_str()).or_default() += 1;
        }
    }
    let (mut seen, mut opted) = (0, 0);
    for app in &world.apps {
        assert!((0.03..0.15).contains(&app.opt_in_rate), "{}: {}", app.id, app.opt_in_rate);
        assert_eq!(opt_ins.get(app.id.as_str()).copied().unwrap_or(0), app.opted_in, "{}", app.id);
        seen += app.could_see;
        opted += app.opted_in;
        if app.could_see >= 200 {
            let n = app.could_see as f64;
            let realized = app.opted_in as f64 / n;
            let sigma = (app.opt_in_rate * (1.0 - app.opt_in_rate) / n).sqrt();
            assert!(
                (realized - app.opt_in_rate).abs() <= 5.0 * sigma + 0.005,
                "{}: {realized} opted in against a rate of {}",
                app.id,
                app.opt_in_rate
            );
        }
    }
    let overall = opted as f64 / seen as f64;
    assert!((0.03..=0.15).contains(&overall), "overall opt-in {overall}");
    // Rates differ between apps: not everyone looks alike.
    let rates: Vec<f64> = world.apps.iter().map(|a| a.opt_in_rate).collect();
    let spread = rates.iter().cloned().fold(0.0, f64::max) - rates.iter().cloned().fold(1.0, f64::min);
    assert!(spread > 0.08, "rates spread over the range: {spread}");
    // Installations spread over the whole window, on both sides of the 2018 change.
    let change = Instant::parse("2018-04-04").unwrap();
    let installs: Vec<Instant> =
        world.events.iter().filter(|t| matches!(t.event, Event::Install { .. })).map(|t| t.at).collect();
    for year in ["2016", "2017", "2018", "2019"] {
        assert!(installs.iter().any(|t| t.to_string().starts_with(year)), "no installation in {year}");
    }
    assert!(installs.iter().filter(|t| **t < change).count() * 5 > installs.len());
    assert!(installs.iter().filter(|t| **t >= change).count() * 5 > installs.len());
    let counts = world.counts();
    for kind in ["leave", "change-role", "uninstall", "withdraw", "suspend", "reinstate", "ban", "post"] {
        assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind} in the world: {counts:?}");
    }
}

/// Every rule the platform enforces, checked against the generator's own facts before each
/// event; `Err` names the first event that breaks one.
fn check_rules(world: &World) -> Result<(), String> {
    let mut replay = Replay::new(world);
    let mut last = Instant::MIN;
    let mut banned: HashSet<&str> = HashSet::new();
    let mut registered: HashSet<&str> = HashSet::new();
    for (n, timed) in world.events.iter().enumerate() {
        let fail = |why: &str| Err(format!("event {n} at {}: {:?}: {why}", timed.at, timed.event));
        if timed.at <= last {
            return fail("instants must strictly increase");
        }
        last = timed.at;
        let admins = |group| replay.members(group).filter(|(_, r)| *r == Role::Admin).count();
        match &timed.event {
            Event::Join { group, member, .. } if replay.role(group, member).is_some() => {
                return fail("already a member")
            }
            Event::Leave { group, member } => match replay.role(group, member) {
                None => return fail("not a member"),
                Some(Role::Admin) if admins(group) < 2 => return fail("the last admin left"),
                _ => {}
            },
            Event::ChangeRole { group, member, role } => match replay.role(group, member) {
                None => return fail("not a member"),
                Some(now) if now == *role => return fail("the role does not change"),
                Some(Role::Admin) if admins(group) < 2 => return fail("the last admin was demoted"),
                _ => {}
            },
            Event::Post { group, author, .. } if replay.role(group, author).is_none() => {
                return fail("the author is not a member")
            }
            Event::App { app, .. } => {
                registered.insert(app.as_str());
            }
            Event::Install { app, group, by } => {
                if replay.role(group, by) != Some(Role::Admin) {
                    return fail("the installer is not an admin");
                }
                if replay.status(app) != Some(AppStatus::Active) {
                    return fail("only an active app is installed");
                }
                if replay.installation(app, group).is_some() {
                    return fail("already installed");
                }
            }
            Event::Uninstall { app, group } if replay.installation(app, group).is_none() => {
                return fail("not installed")
            }
            Event::OptIn { member, app } => {
                if replay.consented(member, app) || banned.contains(app.as_str()) {
                    return fail("opted in twice, or to a banned app");
                }
                if !registered.contains(app.as_str()) {
                    return fail("opted in to an app not yet registered");
                }
            }
            Event::Withdraw { member, app } if !replay.consented(member, app) => {
                return fail("withdrew an opt-in it did not give")
            }
            Event::Status { app, change } => {
                let now = replay.status(app);
                let ok = match change {
                    StatusChange::Suspend => now == Some(AppStatus::Active),
                    StatusChange::Reinstate => now == Some(AppStatus::Suspended),
                    StatusChange::Ban => matches!(now, Some(AppStatus::Active | AppStatus::Suspended)),
                };
                if !ok {
                    return fail("a banned app stays banned; only a suspended app is reinstated");
                }
                if *change == StatusChange::Ban {
                    banned.insert(app.as_str());
                }
            }
            Event::Read { app, group, .. }
                if replay.status(app) != Some(AppStatus::Active)
                    || replay.installation(app, group).is_none() =>
            {
                return fail("an app reads only groups it is installed in while it is active");
            }
            _ => {}
        }
        replay.step();
    }
    Ok(())
}

#[test]
fn the_benchmark_world_keeps_every_rule() {
    let world = World::generate(&WorldParams::benchmark(2019)).unwrap();
    check_rules(&world).unwrap();
    // Membership really changes: leaves, joins after the start, promotions and demotions.
    let counts = world.counts();
    println!("{}\n{counts:?}", world.params);
    assert!(counts["leave"] > 1_000 && counts["change-role"] > 100, "{counts:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn every_generated_history_keeps_the_platforms_rules(
        seed in any::<u64>(),
        leaving in 0.0..0.9f64,
        role_changes in 0.0..0.5f64,
        removed in 0.0..1.0f64,
        reinstalled in 0.0..1.0f64,
        suspended in 0.0..1.0f64,
        banned in 0.0..1.0f64,
        withdrawn in 0.0..1.0f64,
        first_kept in any::<bool>(),
    ) {
        let mut params = tiny(seed);
        params.members = 300;
        params.groups.count = 12;
        params.groups.largest = 120;
        params.groups.leaving = leaving;
        params.groups.role_changes = role_changes;
        params.installations.removed = removed;
        params.installations.reinstalled = reinstalled;
        params.installations.first_kept = first_kept;
        params.app_status.suspended = suspended;
        params.app_status.banned = banned;
        params.opt_in.withdrawn = withdrawn;
        let world = World::generate(&params).unwrap();
        prop_assert_eq!(check_rules(&world), Ok(()));
    }
}

/// Which members of a page the shipped policy shows (name and picture), written from the
/// policy texts' own words, independently of the engine.
fn visible(policy: ShippedPolicy, installed_since: Instant, consented: bool) -> bool {
    let before_change = installed_since.secs() < 1_522_800_000;
    match policy {
        ShippedPolicy::Legacy2017 => true,
        ShippedPolicy::Groups2018Grandfathered => consented || before_change,
        ShippedPolicy::Groups2018 => consented,
    }
}

fn play(params: &WorldParams) -> (World, Arc<SqliteStore>, Vec<usize>) {
    let world = World::generate(params).unwrap();
    check_rules(&world).unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Arc::new(SimulatedClock::starting_at(params.start));
    // Apps keep their first token for the whole window.
    let config = ServiceConfig { token_ttl_secs: 10 * 365 * 86_400, ..ServiceConfig::default() };
    let service = Arc::new(Service::new(store.clone(), clock.clone(), ServerKey::generate(), config));
    let mut applier = Applier::new(service, clock).unwrap();
    let mut replay = Replay::new(&world);
    let mut pages_by_policy = vec![0usize; ShippedPolicy::ALL.len()];
    for timed in &world.events {
        let applied = applier.apply(timed).unwrap_or_else(|e| panic!("{e}"));
        replay.step();
        let (Event::Read { app, group, read: Read::Members { .. } }, Applied::Served(records)) =
            (&timed.event, &applied)
        else {
            continue;
        };
        // The pages follow the group's membership order at that instant, showing exactly whom
        // the active policy lets the app see.
        let (version, policy) = replay.active_policy().unwrap();
        let (_, since) = replay.installation(app, group).unwrap();
        let expected: Vec<&MemberId> = replay
            .members(group)
            .filter(|(m, _)| visible(policy, *since, replay.consented(m, app)))
            .map(|(m, _)| m)
            .collect();
        let served: Vec<&MemberId> = records
            .iter()
            .flat_map(|r| &r.disclosures)
            .filter_map(|d| match &d.subject {
                Subject::Member(m) => Some(m),
                Subject::Group(_) => None,
            })
            .collect();
        assert_eq!(served, expected, "{} reading {group} at {} under {}", app, timed.at, policy.name());
        assert!(records.iter().all(|r| r.policy_version == version && r.at == timed.at));
        if let Some(n) = ShippedPolicy::ALL.iter().position(|p| *p == policy) {
            pages_by_policy[n] += records.len();
        }
    }
    (world, store, pages_by_policy)
}

#[test]
fn a_service_accepts_every_event_and_reconstructs_the_generators_facts_at_any_instant() {
    let params = tiny(5);
    let (world, store, pages) = play(&params);
    assert!(pages.iter().all(|p| *p > 0), "members read under every policy: {pages:?}");
    // History: the store's reconstruction equals the generator's at instants all over the
    // window, including just before and at an event's instant.
    let mut instants: Vec<Instant> =
        (0..40).map(|i| world.events[i * (world.events.len() - 1) / 39].at).collect();
    instants.extend(instants.clone().iter().map(|t| t.plus_millis(-1)));
    instants.push(Instant::parse("2018-04-03T23:59:59Z").unwrap());
    instants.sort();
    let mut replay = Replay::new(&world);
    for t in instants {
        replay.advance_to(t);
        let facts = store.facts_as_of(t).unwrap();
        assert_eq!(facts, replay.facts(), "facts at {t}");
    }
}

#[test]
fn apps_sign_in_again_when_their_token_expires() {
    let mut params = tiny(9);
    params.members = 200;
    params.groups.count = 6;
    params.groups.largest = 80;
    params.developers = 2;
    params.traffic.every_days = 200;
    let world = World::generate(&params).unwrap();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Arc::new(SimulatedClock::starting_at(params.start));
    // Tokens last a day; reads are 200 days apart.
    let config = ServiceConfig { token_ttl_secs: 86_400, ..ServiceConfig::default() };
    let service = Arc::new(Service::new(store, clock.clone(), ServerKey::generate(), config));
    let mut applier = Applier::new(service, clock).unwrap();
    let mut served = 0;
    for timed in &world.events {
        if let Applied::Served(records) = applier.apply(timed).unwrap_or_else(|e| panic!("{e}")) {
            served += records.len();
        }
    }
    assert!(served > 0);
}
