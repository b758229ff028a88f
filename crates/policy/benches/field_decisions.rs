//! Benchmark: field decisions per second for a 1,000-member page, the engine against naive
//! per-field Cedar (build `Entities` + `is_authorized` for every field), in the same run.
//!
//! `cargo bench -p consentry-policy --bench field_decisions` prints the figures; under
//! `cargo test` it runs at a small size and only checks that both agree.

use std::hint::black_box;
use std::time::Instant;

use consentry_policy::{compile, naive_decide, Engine, PageFacts, SubjectFacts};
use consentry_types::{AppId, AppStatus, Field, GroupId, MemberId, Role};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (members, engine_pages) = if full { (1_000, 2_000) } else { (50, 3) };
    let policy = compile(2, GROUPS_2018).unwrap_or_else(|e| unreachable!("{e}"));
    let page = PageFacts {
        app: AppId::parse("app_bench").unwrap_or_else(|e| unreachable!("{e}")),
        app_status: AppStatus::Active,
        app_category: "social_media_management".into(),
        group: GroupId::parse("g-bench").unwrap_or_else(|e| unreachable!("{e}")),
        installed: true,
        installed_since: 1_500_000_000,
    };
    // A realistic page: one or two admins, one member in ten opted in.
    let subjects: Vec<(MemberId, SubjectFacts)> = (0..members)
        .map(|i| {
            let id = MemberId::parse(&format!("m-{i:05}")).unwrap_or_else(|e| unreachable!("{e}"));
            let role = if i < 2 { Role::Admin } else { Role::Member };
            (id, SubjectFacts { is_member: true, role: Some(role), consented_profile: i % 10 == 3 })
        })
        .collect();
    let fields = [Field::MemberName, Field::MemberPicture];
    let decisions_per_page = (subjects.len() * fields.len()) as f64;

    // Naive: one full Cedar call per field, over one page.
    let started = Instant::now();
    let mut naive = Vec::with_capacity(subjects.len() * fields.len());
    for (member, facts) in &subjects {
        for field in fields {
            naive.push(
                naive_decide(&policy, &page, field, Some((member, *facts)))
                    .unwrap_or_else(|e| unreachable!("{e}")),
            );
        }
    }
    let naive_secs = started.elapsed().as_secs_f64();
    let naive_rate = decisions_per_page / naive_secs;

    // Engine: a fresh page decider per page, as serving does, over many pages.
    let engine = Engine::new();
    let started = Instant::now();
    let mut last = Vec::new();
    for _ in 0..engine_pages {
        let mut decider = engine.page(&policy, page.clone());
        last.clear();
        for (_, facts) in &subjects {
            for field in fields {
                last.push(black_box(decider.allows(field, *facts).unwrap_or_else(|e| unreachable!("{e}"))));
            }
        }
    }
    let engine_secs = started.elapsed().as_secs_f64();
    let engine_rate = decisions_per_page * engine_pages as f64 / engine_secs;

    let identical = last == naive;
    assert!(identical, "the engine and naive Cedar disagree");
    let permitted = naive.iter().filter(|d| **d).count();
    assert!(permitted > 0 && permitted < naive.len(), "both outcomes occur");
    println!("field decisions, {members}-member page x {} fields, groups-2018:", fields.len());
    println!("  naive Cedar (Entities + is_authorized per field): {:>14.0} decisions/s", naive_rate);
    println!("  consentry engine (memoized by exact facts):       {:>14.0} decisions/s", engine_rate);
    println!(
        "  ratio: {:.0}x (target >= 100x); decisions identical: {identical} ({permitted} of {} permitted)",
        engine_rate / naive_rate,
        naive.len()
    );
}
