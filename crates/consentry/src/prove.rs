//! `consentry policy prove`: a draft proven within the invariants, never erroring, and compared
//! with the active (or a stored) version, printed as a person reads it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use consentry_prove::{FieldOutcome, Invariant, Outcome, PolicyText, Prover, Review, SolverCommand};

use crate::data_dir::DataDir;

#[derive(clap::Args)]
pub struct ProveArgs {
    /// The draft policy file.
    draft: PathBuf,
    /// Compare with this stored version instead of the active one.
    #[arg(long)]
    against: Option<u32>,
    /// A directory of invariant files (`*.cedar`); default: the shipped invariants.
    #[arg(long)]
    invariants: Option<PathBuf>,
    /// The SMT solver: `cvc5`, `z3`, or a path to one; default: the first on PATH.
    #[arg(long, env = "CONSENTRY_SOLVER")]
    solver: Option<String>,
    /// Time limit per solver query, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// Where the stored versions are (only read, and only if it holds a store).
    #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

/// Parses `10s`, `500ms` or `2m` into a duration between 1 ms and 10 minutes.
pub fn parse_timeout(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("the timeout must look like 10s, 500ms or 2m, not {text:?}"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        _ => bail!("the timeout must look like 10s, 500ms or 2m, not {text:?}"),
    };
    if duration > Duration::from_secs(600) {
        bail!("the timeout must be at most 10m");
    }
    Ok(duration)
}

/// The invariants a review checks: a directory's, or the shipped ones.
pub fn invariants(dir: Option<&PathBuf>) -> Result<Vec<Invariant>> {
    match dir {
        Some(dir) => Ok(Invariant::load_dir(dir)?),
        None => Ok(Invariant::shipped()),
    }
}

/// The prover `serve` proves policy versions with, or `None` (said once) when there is no
/// solver: then approvals need a privacy officer's waiver. A named solver that is missing, or
/// invariants that do not load, stop the server from starting.
pub fn server_proofs(solver: Option<&str>, dir: Option<&PathBuf>) -> Result<Option<consentry_api::Proofs>> {
    let invariants = invariants(dir)?;
    let found = match SolverCommand::find(solver) {
        Ok(found) => found,
        Err(e) if solver.is_none() => {
            println!("policy proofs unavailable: {e}; approvals then need a privacy officer's waiver");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let names: Vec<&str> = invariants.iter().map(|i| i.name.as_str()).collect();
    println!("policy proofs with {} within {}", found.describe(), names.join(", "));
    Ok(Some(consentry_api::Proofs { prover: Prover::new(found, Duration::from_secs(10)), invariants }))
}

/// Before `policy approve`: when the version has no proofs kept, proves it now (if a solver is
/// found), prints the review and keeps it, so that the approval is decided on it.
pub fn before_approval(
    service: &consentry_service::Service,
    version: u32,
    officer: &consentry_service::OperatorSession,
    solver: Option<&str>,
    dir: Option<&PathBuf>,
) -> Result<()> {
    if service.proof_standing(version)? != consentry_service::ProofStanding::Missing {
        return Ok(());
    }
    let solver = match SolverCommand::find(solver) {
        Ok(solver) => solver,
        Err(e) => {
            println!("no proofs are kept for policy version {version} and none can be run: {e}");
            return Ok(());
        }
    };
    let proofs = consentry_api::Proofs {
        prover: Prover::new(solver, Duration::from_secs(10)),
        invariants: invariants(dir)?,
    };
    let (review, _) = consentry_api::prove_version(service, &proofs, version, None, officer)
        .map_err(|e| anyhow::anyhow!("{}", e.problem.detail))?;
    print!("{}", render(&review));
    Ok(())
}

pub fn run(args: ProveArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.draft)
        .with_context(|| format!("cannot read {}", args.draft.display()))?;
    if let Err(error) = consentry_policy::compile(0, &text) {
        for diagnostic in error.diagnostics() {
            eprintln!("{}:{diagnostic}", args.draft.display());
        }
        bail!("{} is not a valid policy", args.draft.display());
    }
    let timeout = parse_timeout(&args.timeout)?;
    let invariants = invariants(args.invariants.as_ref())?;
    let solver = SolverCommand::find(args.solver.as_deref())?;
    let baseline = baseline(&args)?;
    let prover = Prover::new(solver, timeout);
    let draft = PolicyText { label: args.draft.display().to_string(), text: &text };
    let against = baseline.as_ref().map(|(label, text)| PolicyText { label: label.clone(), text });
    if baseline.is_none() {
        println!("(no active policy in {}: nothing to compare with)", args.data_dir.display());
    }
    let review = prover.review(&draft, &invariants, against.as_ref())?;
    print!("{}", render(&review));
    if review.passed() {
        Ok(())
    } else {
        bail!("{}", verdict(&review))
    }
}

/// The version to compare with: `--against`, or the active one, if the data directory has a store.
fn baseline(args: &ProveArgs) -> Result<Option<(String, String)>> {
    let has_store = args.data_dir.join("consentry.db").exists();
    if !has_store {
        if let Some(version) = args.against {
            bail!("no store in {}: cannot read policy version {version}", args.data_dir.display());
        }
        return Ok(None);
    }
    let dir = DataDir::open(&args.data_dir)?;
    let store = dir.store()?;
    let stored = match args.against {
        Some(version) => Some(
            store
                .policy_version(version)?
                .with_context(|| format!("there is no policy version {version}"))?,
        ),
        None => store.active_policy()?,
    };
    Ok(stored.map(|v| {
        let how = if args.against.is_some() { "" } else { " (active)" };
        (format!("version {}{how}", v.version), v.text)
    }))
}

fn outcome_line(outcome: &FieldOutcome) -> String {
    match &outcome.outcome {
        Outcome::Proven => "proven".to_string(),
        Outcome::Violated(witness) => {
            format!("VIOLATED: {}: {} allowed", witness.situation(outcome.category_matters), witness.field)
        }
        Outcome::Unknown(why) => format!("UNKNOWN ({why})"),
    }
}

/// The review as a person reads it.
pub fn render(review: &Review) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "proofs for {} with {}", review.draft, review.solver);
    for report in &review.invariants {
        let _ = writeln!(out, "invariant {}:", report.name);
        for field in &report.fields {
            let _ = writeln!(out, "  {:<20} {}", field.field.as_str(), outcome_line(field));
        }
    }
    if review.never_errors.iter().all(|f| f.outcome.is_proven()) {
        let _ = writeln!(out, "never errors: proven for every field");
    } else {
        let _ = writeln!(out, "never errors:");
        for field in &review.never_errors {
            let line = match &field.outcome {
                Outcome::Proven => "proven".to_string(),
                Outcome::Violated(w) => format!("ERRORS: {}", w.situation(true)),
                Outcome::Unknown(why) => format!("UNKNOWN ({why})"),
            };
            let _ = writeln!(out, "  {:<20} {line}", field.field.as_str());
        }
    }
    if let Some(comparison) = &review.comparison {
        let _ = writeln!(out, "against {}:", comparison.against);
        for (what, list) in
            [("newly allows", &comparison.newly_allowed), ("newly denies", &comparison.newly_denied)]
        {
            if list.is_empty() {
                let _ = writeln!(out, "  {what} nothing");
            }
            for d in list.iter() {
                let _ = writeln!(
                    out,
                    "  {what} {}: {}",
                    d.witness.field,
                    d.witness.situation(d.category_matters)
                );
            }
        }
        for (field, why) in &comparison.unknown {
            let _ = writeln!(out, "  {field}: UNKNOWN ({why})");
        }
    }
    let _ = writeln!(out, "proofs took {:.2} s", review.elapsed.as_secs_f64());
    out
}

/// One line saying why a review did not pass.
pub fn verdict(review: &Review) -> String {
    let mut problems = Vec::new();
    for report in &review.invariants {
        let failed: Vec<&str> =
            report.fields.iter().filter(|f| !f.outcome.is_proven()).map(|f| f.field.as_str()).collect();
        if !failed.is_empty() {
            problems.push(format!("invariant {} is not proven for {}", report.name, failed.join(", ")));
        }
    }
    let erring: Vec<&str> =
        review.never_errors.iter().filter(|f| !f.outcome.is_proven()).map(|f| f.field.as_str()).collect();
    if !erring.is_empty() {
        problems.push(format!("the draft is not proven never to error for {}", erring.join(", ")));
    }
    if problems.is_empty() {
        "every invariant is proven and the draft never errors".to_string()
    } else {
        format!("{}: it cannot be approved without a waiver", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_timeout("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("7").ok(), Some(Duration::from_secs(7)));
        for bad in ["", "0s", "-1s", "1h", "é", "99999999999999999999s", "11m"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }
}
