//! Benchmark: field decisions per second on pages of members from the realistic world, for
//! every shipped policy, the engine against (a) naive per-field Cedar (`naive_decide`: entities
//! built and the request validated against the schema for every field) and (b) the best plain
//! Cedar a user would write (entities built once per page, requests without schema validation,
//! one `is_authorized` per (member, field), nothing remembered across requests). Same pages,
//! same world, same run, timed the same way; decisions asserted identical on every side.
//!
//! `cargo bench -p consentry-policy --bench field_decisions` prints the figures (200 pages of 500
//! members); under `cargo test` it runs a few small pages and checks that every side agrees.

#![allow(clippy::indexing_slicing)] // indices come from the pages' own lengths

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::Instant as WallClock;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use consentry_policy::{compile, naive_decide, schema, CompiledPolicy, Engine, PageFacts, SubjectFacts};
use consentry_types::{AppStatus, Field, MemberId, Role};
use consentry_world::{Event, Replay, ShippedPolicy, World, WorldParams};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const SEED: u64 = 2019;
const FIELDS: [Field; 2] = [Field::MemberName, Field::MemberPicture];

/// One page an app read: the page's facts and a run of consecutive members in the group's
/// order, with their facts, at the instant of the read.
struct Page {
    facts: PageFacts,
    members: Vec<(MemberId, SubjectFacts)>,
}

/// `count` pages of `size` members, at the instants of reads the world's apps made, in groups
/// that had at least `size` members then, from a random offset in the member list.
fn pages(world: &World, count: usize, size: usize) -> Vec<Page> {
    let mut rng = StdRng::seed_from_u64(world.params.seed ^ 0x9e37);
    let big: HashSet<&consentry_types::GroupId> = world
        .groups
        .iter()
        .zip(&world.starting_sizes)
        .filter(|(_, s)| **s >= size + size / 4)
        .map(|(g, _)| g)
        .collect();
    // Reads in large groups, by the year the reading app's installation there began, so that
    // installations from every year of the window (both sides of the 2018 change) are on pages.
    let mut by_year: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut replay = Replay::new(world);
    while let Some(timed) = replay.step() {
        let Event::Read { app, group, .. } = &timed.event else { continue };
        if let (true, Some((_, since))) = (big.contains(group), replay.installation(app, group)) {
            by_year.entry(since.secs() / (365 * 86_400)).or_default().push(replay.applied() - 1);
        }
    }
    for reads in by_year.values_mut() {
        reads.shuffle(&mut rng);
    }
    // Twice as many as needed, taken from each year in turn: a group may have shrunk by then.
    let mut candidates = Vec::with_capacity(count * 2);
    while candidates.len() < count * 2 && by_year.values().any(|r| !r.is_empty()) {
        for reads in by_year.values_mut() {
            if let Some(index) = reads.pop() {
                candidates.push(index);
            }
        }
    }
    candidates.sort_unstable();
    let mut replay = Replay::new(world);
    let mut built: BTreeMap<i64, Vec<Page>> = BTreeMap::new();
    for index in candidates {
        while replay.applied() <= index {
            replay.step();
        }
        let Event::Read { app, group, .. } = &world.events[index].event else { continue };
        let members: Vec<(&MemberId, Role)> = replay.members(group).collect();
        if members.len() < size {
            continue;
        }
        let (Some(plan), Some(status), Some((_, since))) =
            (world.app(app), replay.status(app), replay.installation(app, group))
        else {
            continue;
        };
        let offset = rng.gen_range(0..=members.len() - size);
        let members = members[offset..offset + size]
            .iter()
            .map(|(m, role)| {
                let facts = SubjectFacts {
                    is_member: true,
                    role: Some(*role),
                    consented_profile: replay.consented(m, app),
                };
                ((*m).clone(), facts)
            })
            .collect();
        let facts = PageFacts {
            app: app.clone(),
            app_status: status,
            app_category: plan.category.to_string(),
            group: group.clone(),
            installed: true,
            installed_since: since.secs(),
        };
        built.entry(facts.installed_since / (365 * 86_400)).or_default().push(Page { facts, members });
    }
    // As many pages from each year as there are, in turn, up to `count`.
    let mut pages = Vec::with_capacity(count);
    while pages.len() < count && built.values().any(|p| !p.is_empty()) {
        for year in built.values_mut() {
            if pages.len() < count {
                if let Some(page) = year.pop() {
                    pages.push(page);
                }
            }
        }
    }
    pages
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    let type_name = EntityTypeName::from_str(type_name).unwrap_or_else(|e| unreachable!("{e}"));
    EntityUid::from_type_name_and_id(type_name, EntityId::new(id))
}

/// (b) The best plain Cedar a user would write for a members page.
struct PlainCedar {
    policies: PolicySet,
    authorizer: Authorizer,
    actions: Vec<EntityUid>,
}

impl PlainCedar {
    fn new(text: &str) -> PlainCedar {
        PlainCedar {
            policies: PolicySet::from_str(text).unwrap_or_else(|e| unreachable!("{e}")),
            authorizer: Authorizer::new(),
            actions: FIELDS.iter().map(|f| uid("Consentry::Action", f.as_str())).collect(),
        }
    }

    /// Entities built once for the page (the app, the group, every member on it), then one
    /// request per (member, field), not validated against the schema.
    fn decide_page(&self, page: &Page, out: &mut Vec<bool>) {
        let f = &page.facts;
        let principal = uid("Consentry::App", f.app.as_str());
        let app = Entity::new(
            principal.clone(),
            HashMap::from([
                ("status".to_string(), RestrictedExpression::new_string(f.app_status.as_str().to_string())),
                ("category".to_string(), RestrictedExpression::new_string(f.app_category.clone())),
            ]),
            HashSet::new(),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let group = Entity::new_no_attrs(uid("Consentry::Group", f.group.as_str()), HashSet::new());
        let members: Vec<EntityUid> =
            page.members.iter().map(|(m, _)| uid("Consentry::Member", m.as_str())).collect();
        let entities = Entities::from_entities(
            [app, group]
                .into_iter()
                .chain(members.iter().map(|m| Entity::new_no_attrs(m.clone(), HashSet::new()))),
            schema().ok(),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        for ((_, subject), resource) in page.members.iter().zip(&members) {
            let context = Context::from_pairs([
                ("installed".to_string(), RestrictedExpression::new_bool(f.installed)),
                ("installed_since".to_string(), RestrictedExpression::new_long(f.installed_since)),
                ("subject_is_member".to_string(), RestrictedExpression::new_bool(subject.is_member)),
                (
                    "subject_role".to_string(),
                    RestrictedExpression::new_string(subject.role.map_or("none", Role::as_str).to_string()),
                ),
                (
                    "subject_consented_profile".to_string(),
                    RestrictedExpression::new_bool(subject.consented_profile),
                ),
            ])
            .unwrap_or_else(|e| unreachable!("{e}"));
            for action in &self.actions {
                let request =
                    Request::new(principal.clone(), action.clone(), resource.clone(), context.clone(), None)
                        .unwrap_or_else(|e| unreachable!("{e}"));
                let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
                out.push(response.decision() == Decision::Allow);
            }
        }
    }
}

fn naive_page(policy: &CompiledPolicy, page: &Page, out: &mut Vec<bool>) {
    for (member, facts) in &page.members {
        for field in FIELDS {
            out.push(
                naive_decide(policy, &page.facts, field, Some((member, *facts)))
                    .unwrap_or_else(|e| unreachable!("{e}")),
            );
        }
    }
}

fn engine_page(engine: &Engine, policy: &CompiledPolicy, page: &Page, out: &mut Vec<bool>) {
    // A fresh page decider per page, as serving makes one per request.
    let mut decider = engine.page(policy, page.facts.clone());
    for (_, facts) in &page.members {
        for field in FIELDS {
            out.push(black_box(decider.allows(field, *facts).unwrap_or_else(|e| unreachable!("{e}"))));
        }
    }
}

/// One pass over every page: the decisions and the seconds it took.
fn pass(pages: &[Page], decide: &mut dyn FnMut(usize, &Page, &mut Vec<bool>)) -> (Vec<bool>, f64) {
    let mut out = Vec::with_capacity(pages.iter().map(|p| p.members.len() * FIELDS.len()).sum());
    let started = WallClock::now();
    for (i, page) in pages.iter().enumerate() {
        decide(i, page, &mut out);
    }
    (out, started.elapsed().as_secs_f64())
}

/// An untimed warm-up pass, then the median of `rounds` timed passes; every pass must decide
/// as `reference` does (or becomes the reference).
fn measure(
    pages: &[Page],
    rounds: usize,
    reference: &mut Option<Vec<bool>>,
    side: &str,
    decide: &mut dyn FnMut(usize, &Page, &mut Vec<bool>),
) -> f64 {
    let (warm, _) = pass(pages, decide);
    let expected = reference.get_or_insert(warm.clone());
    assert!(warm == *expected, "{side} decides differently from the other sides");
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (decisions, secs) = pass(pages, decide);
        assert!(decisions == *expected, "{side} decides differently from the other sides");
        times.push(secs);
    }
    times.sort_by(f64::total_cmp);
    let decisions = expected.len() as f64;
    decisions / times[times.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (params, count, size, rounds) =
        if full { (WorldParams::benchmark(SEED), 200, 500, 3) } else { (WorldParams::small(SEED), 6, 50, 1) };
    let world = World::generate(&params).unwrap_or_else(|e| unreachable!("{e}"));
    let pages = pages(&world, count, size);
    assert_eq!(pages.len(), count, "the world has too few large groups read for {count} pages of {size}");
    let subjects = pages.iter().map(|p| p.members.len()).sum::<usize>();
    let opted = pages.iter().flat_map(|p| &p.members).filter(|(_, s)| s.consented_profile).count();
    let admins = pages.iter().flat_map(|p| &p.members).filter(|(_, s)| s.role == Some(Role::Admin)).count();
    let mut by_year: BTreeMap<String, usize> = BTreeMap::new();
    for page in &pages {
        let since = consentry_types::Instant::from_secs(page.facts.installed_since).to_string();
        *by_year.entry(since.get(..4).unwrap_or_default().to_string()).or_default() += 1;
    }
    let distinct = |f: &dyn Fn(&Page) -> String| pages.iter().map(f).collect::<HashSet<_>>().len();
    let active = pages.iter().all(|p| p.facts.app_status == AppStatus::Active);
    assert!(active, "pages come from reads, made only by active apps");
    println!(
        "field decisions: {count} pages of {size} members (fields name,picture) read by the world's apps:"
    );
    println!("  {params}");
    println!(
        "  pages: {} apps, {} groups, {} installation instants; installed since {}; {:.1}% of the members opted in to the app reading, {:.1}% admins",
        distinct(&|p| p.facts.app.to_string()),
        distinct(&|p| p.facts.group.to_string()),
        distinct(&|p| p.facts.installed_since.to_string()),
        by_year.iter().map(|(y, n)| format!("{y}: {n} pages")).collect::<Vec<_>>().join(", "),
        opted as f64 * 100.0 / subjects as f64,
        admins as f64 * 100.0 / subjects as f64,
    );
    println!(
        "  timing: every side decides all {count} pages once untimed (warm-up), then the median of {rounds} timed passes over all {count} pages; one thread"
    );
    for shipped in ShippedPolicy::ALL {
        let policy = compile(1, shipped.text()).unwrap_or_else(|e| unreachable!("{e}"));
        let plain = PlainCedar::new(shipped.text());
        let mut reference = None;
        let naive = measure(&pages, rounds, &mut reference, "naive Cedar", &mut |_, p, out| {
            naive_page(&policy, p, out)
        });
        let best = measure(&pages, rounds, &mut reference, "plain Cedar", &mut |_, p, out| {
            plain.decide_page(p, out)
        });
        let engine = Engine::new();
        let warm = measure(&pages, rounds, &mut reference, "the engine", &mut |_, p, out| {
            engine_page(&engine, &policy, p, out)
        });
        let memo = engine.cache().len();
        let mut fresh_engine = Engine::new();
        let fresh = measure(&pages, rounds, &mut reference, "a fresh engine", &mut |i, p, out| {
            // A new engine for every pass: nothing remembered from earlier passes.
            if i == 0 {
                fresh_engine = Engine::new();
            }
            engine_page(&fresh_engine, &policy, p, out)
        });
        let decisions = reference.unwrap_or_default();
        let permitted = decisions.iter().filter(|d| **d).count();
        // Legacy shows every member; the 2018 rules hide those who did not opt in.
        let all = permitted == decisions.len();
        assert!(permitted > 0 && all == (shipped == ShippedPolicy::Legacy2017), "{permitted} permitted");
        println!("policy {}:", shipped.name());
        println!("  (a) naive Cedar (entities and a validated request per field): {naive:>12.0} decisions/s");
        println!(
            "  (b) plain Cedar (entities once per page, requests unvalidated): {best:>10.0} decisions/s"
        );
        println!(
            "  consentry engine (memo shared across pages, as serving shares it): {warm:>7.0} decisions/s"
        );
        println!(
            "  consentry engine (memo new at every pass):                       {fresh:>8.0} decisions/s"
        );
        println!(
            "  engine / (a): {:.0}x; engine / (b): {:.0}x (target >= 100x); new-memo engine / (b): {:.0}x; {memo} memoized decisions; decisions identical on every side ({permitted} of {} permitted)",
            warm / naive,
            warm / best,
            fresh / best,
            decisions.len()
        );
    }
}
