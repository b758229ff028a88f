//! Finding and starting the SMT solver the proofs are checked by (cvc5 or z3, as a process).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cedar_policy_symcc::solver::LocalSolver;

use crate::ProveError;

/// Which solver dialect a program speaks; both read SMT-LIB on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverKind {
    Cvc5,
    Z3,
}

/// How to start the solver: a program and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolverCommand {
    pub program: PathBuf,
    pub kind: SolverKind,
}

/// What to tell someone who has no solver.
pub const INSTALL_HINT: &str =
    "no SMT solver found: install cvc5 or z3 (Debian: apt-get install cvc5), or name one with --solver PATH or CONSENTRY_SOLVER";

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn kind_of(program: &Path) -> Option<SolverKind> {
    let name = program.file_name()?.to_string_lossy().to_lowercase();
    if name.starts_with("cvc5") {
        Some(SolverKind::Cvc5)
    } else if name.starts_with("z3") {
        Some(SolverKind::Z3)
    } else {
        None
    }
}

impl SolverCommand {
    /// The solver named by `choice` (a program name such as `cvc5` or `z3`, or a path), or
    /// when there is none, the first of cvc5 and z3 found on `PATH`.
    pub fn find(choice: Option<&str>) -> Result<SolverCommand, ProveError> {
        let Some(choice) = choice.filter(|c| !c.trim().is_empty()) else {
            return ["cvc5", "z3"]
                .into_iter()
                .find_map(|name| on_path(name).map(|program| (program, name)))
                .and_then(|(program, _)| kind_of(&program).map(|kind| SolverCommand { program, kind }))
                .ok_or_else(|| ProveError::NoSolver(INSTALL_HINT.to_string()));
        };
        let program =
            if choice.contains('/') { PathBuf::from(choice) } else { on_path(choice).unwrap_or_default() };
        if !is_executable(&program) {
            return Err(ProveError::NoSolver(format!(
                "the solver {choice:?} is not an executable program; {INSTALL_HINT}"
            )));
        }
        let kind = kind_of(&program).ok_or_else(|| {
            ProveError::NoSolver(format!("{choice:?} is neither cvc5 nor z3; name a cvc5 or z3 program"))
        })?;
        Ok(SolverCommand { program, kind })
    }

    /// A human name, e.g. `cvc5 (/usr/bin/cvc5)`.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            SolverKind::Cvc5 => "cvc5",
            SolverKind::Z3 => "z3",
        };
        format!("{name} ({})", self.program.display())
    }

    /// Starts a solver process limited to `timeout` per query; killed when dropped.
    pub(crate) fn start(&self, timeout: Duration) -> Result<LocalSolver, ProveError> {
        let millis = timeout.as_millis().max(1).to_string();
        let mut command = tokio::process::Command::new(&self.program);
        match self.kind {
            SolverKind::Cvc5 => command.args(["--lang", "smt"]).arg(format!("--tlimit-per={millis}")),
            SolverKind::Z3 => command.args(["-in", "-smt2"]).arg(format!("-t:{millis}")),
        };
        command.kill_on_drop(true);
        LocalSolver::from_command(&mut command)
            .map_err(|e| ProveError::Solver(format!("cannot start {}: {e}", self.describe())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_is_not_there_is_a_clear_error() {
        let err = SolverCommand::find(Some("/nonexistent/cvc5")).err();
        assert!(matches!(&err, Some(ProveError::NoSolver(m)) if m.contains("install cvc5 or z3")), "{err:?}");
    }

    #[test]
    fn a_program_that_is_no_solver_is_refused() {
        let err = SolverCommand::find(Some("/bin/sh")).err();
        assert!(
            matches!(&err, Some(ProveError::NoSolver(m)) if m.contains("neither cvc5 nor z3")),
            "{err:?}"
        );
    }
}
