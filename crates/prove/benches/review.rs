//! Time to review each shipped policy: each invariant alone, never-errors, the comparison with
//! groups-2018, and the whole review; target under 5 s per draft. Runs once per figure under
//! `cargo test`, five times under `cargo bench`; needs a solver (CONSENTRY_SOLVER or PATH).

use std::time::{Duration, Instant};

use consentry_prove::{Invariant, PolicyText, Prover, SolverCommand};

const POLICIES: [(&str, &str); 3] = [
    ("legacy-2017", include_str!("../../../policies/legacy-2017.cedar")),
    ("groups-2018", include_str!("../../../policies/groups-2018.cedar")),
    ("groups-2018-grandfathered", include_str!("../../../policies/groups-2018-grandfathered.cedar")),
];

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let repeat = if full { 5 } else { 1 };
    let solver = match SolverCommand::find(std::env::var("CONSENTRY_SOLVER").ok().as_deref()) {
        Ok(solver) => solver,
        Err(e) => {
            println!("review bench skipped: {e}");
            return;
        }
    };
    println!("review bench: solver {}, median of {repeat} run(s), per-query limit 20 s", solver.describe());
    let prover = Prover::new(solver, Duration::from_secs(20));
    let baseline = PolicyText { label: "groups-2018".into(), text: POLICIES[1].1 };
    let time = |draft: &PolicyText<'_>, invariants: &[Invariant], against: Option<&PolicyText<'_>>| {
        let runs: Vec<Duration> = (0..repeat)
            .map(|_| {
                let started = Instant::now();
                let review = prover.review(draft, invariants, against);
                assert!(review.is_ok(), "{:?}", review.err());
                started.elapsed()
            })
            .collect();
        median(runs)
    };
    let mut slowest = Duration::ZERO;
    for (name, text) in POLICIES {
        let draft = PolicyText { label: name.into(), text };
        for invariant in Invariant::shipped() {
            let took = time(&draft, std::slice::from_ref(&invariant), None);
            println!("  {name:<26} within {:<22} {:>8.1} ms", invariant.name, took.as_secs_f64() * 1e3);
        }
        let against = time(&draft, &[], Some(&baseline));
        println!("  {name:<26} never errors + against groups-2018 {:>8.1} ms", against.as_secs_f64() * 1e3);
        let whole = time(&draft, &Invariant::shipped(), Some(&baseline));
        println!(
            "  {name:<26} whole review                    {:>8.1} ms (target < 5000 ms)",
            whole.as_secs_f64() * 1e3
        );
        slowest = slowest.max(whole);
    }
    println!(
        "slowest whole review: {:.1} ms, {:.1}x under the 5 s target",
        slowest.as_secs_f64() * 1e3,
        5.0 / slowest.as_secs_f64()
    );
}
