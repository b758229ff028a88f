//! What the proof tests share: the solver CI names in CONSENTRY_SOLVER.

use std::time::Duration;

use consentry_prove::{Prover, SolverCommand};

/// The solver named by CONSENTRY_SOLVER (`.ci/run` sets it); `None` skips the calling test.
pub fn prover() -> Option<Prover> {
    let Ok(choice) = std::env::var("CONSENTRY_SOLVER") else {
        eprintln!("CONSENTRY_SOLVER is not set: skipping proofs (CI sets it)");
        return None;
    };
    match SolverCommand::find(Some(&choice)) {
        Ok(solver) => Some(Prover::new(solver, Duration::from_secs(20))),
        Err(e) => unreachable!("CONSENTRY_SOLVER={choice}: {e}"),
    }
}
