//! Proofs about consentry policies: a draft stays within each invariant, never errors, and
//! differs from the active version in exactly the situations listed, each with a witness.
//!
//! Cedar's symbolic compiler (`cedar-policy-symcc`) turns each question into SMT queries over
//! every request the schema allows; an SMT solver (cvc5 or z3, run as a process) answers them.
//! Every query is limited to the facts consentry can present ([`witness::REAL_FACTS`]), every
//! counterexample is replayed through plain Cedar and consentry's engine before it is reported,
//! and a query the solver cannot settle in time is "unknown", never "proven".

mod invariants;
mod solver;
mod witness;

use std::str::FromStr;
use std::time::{Duration, Instant as Clock};

use cedar_policy::{Authorizer, Policy, PolicySet, RequestEnv};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy as SymPolicy, CompiledPolicySet, Env};
use consentry_policy::{compile, naive_decide, CompiledPolicy, Engine, PolicyError};
use consentry_types::Field;

pub use invariants::Invariant;
pub use solver::{SolverCommand, SolverKind, INSTALL_HINT};
pub use witness::Witness;

/// Why a review could not be made. Messages are one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError {
    #[error("{0}")]
    NoSolver(String),
    #[error("solver failed: {0}")]
    Solver(String),
    #[error("{0}")]
    Policy(PolicyError),
    #[error("invariant {name}: {error}")]
    Invariant { name: String, error: String },
    /// A counterexample that plain Cedar does not confirm: a bug, never reported as a result.
    #[error("the solver's counterexample does not replay through Cedar: {0}")]
    Inconsistent(String),
}

/// What a proof found for one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Proven,
    /// A situation that breaks the claim, replayed through Cedar and the engine.
    Violated(Box<Witness>),
    /// The solver could not settle it (timeout or unknown); never read as proven.
    Unknown(String),
}

impl Outcome {
    pub fn is_proven(&self) -> bool {
        matches!(self, Outcome::Proven)
    }
}

/// One field's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOutcome {
    pub field: Field,
    pub outcome: Outcome,
    /// Whether the app's category matters to the witness (so it is worth printing).
    pub category_matters: bool,
}

/// A draft against one invariant, field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantReport {
    pub name: String,
    pub fields: Vec<FieldOutcome>,
}

impl InvariantReport {
    pub fn proven(&self) -> bool {
        self.fields.iter().all(|f| f.outcome.is_proven())
    }
}

/// A situation in which the draft and the version it is compared with decide differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub witness: Witness,
    pub category_matters: bool,
}

/// Everything the draft newly allows and newly denies against another version, one entry per
/// class of situation (app status, installed, subject's membership, role and consent), each
/// with a witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub against: String,
    pub newly_allowed: Vec<Difference>,
    pub newly_denied: Vec<Difference>,
    /// Fields the solver could not settle, with why.
    pub unknown: Vec<(Field, String)>,
}

/// The whole review of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub draft: String,
    pub solver: String,
    pub invariants: Vec<InvariantReport>,
    /// Per field: the draft never errors (proven), or a situation in which a rule errors.
    pub never_errors: Vec<FieldOutcome>,
    pub comparison: Option<Comparison>,
    pub elapsed: Duration,
}

impl Review {
    /// Every invariant proven for every field and the draft never errors.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(InvariantReport::proven)
            && self.never_errors.iter().all(|f| f.outcome.is_proven())
    }
}

/// A policy to review: a label a person reads (`draft.cedar`, `version 3`) and its text.
#[derive(Debug, Clone)]
pub struct PolicyText<'a> {
    pub label: String,
    pub text: &'a str,
}

/// Runs reviews with one solver and one time limit per query.
#[derive(Debug, Clone)]
pub struct Prover {
    solver: SolverCommand,
    timeout: Duration,
}

/// The most classes one comparison lists per field and direction; the finite facts allow 36.
const MAX_CLASSES: usize = 64;

fn policy_set(text: &str) -> Result<PolicySet, ProveError> {
    PolicySet::from_str(text).map_err(|e| ProveError::Solver(format!("policy text does not parse: {e}")))
}

/// The policy set limited to the facts consentry can present, optionally with further
/// situations excluded (one `forbid` per condition).
fn limited(text: &str, excluded: &[String]) -> Result<PolicySet, ProveError> {
    let mut full = format!("{text}\n{}", witness::REAL_FACTS);
    for condition in excluded {
        full.push_str(&format!("\nforbid (principal, action, resource) when {{ {condition} }};"));
    }
    policy_set(&full)
}

/// A policy that applies only where the facts are ones consentry can present, so that
/// "never errors" is asked of situations that can occur.
fn limited_policy(policy: &Policy) -> Result<Policy, ProveError> {
    let mut json = policy.to_json().map_err(|e| ProveError::Solver(e.to_string()))?;
    let real = policy_set(witness::REAL_FACTS)?;
    let guard = real
        .policies()
        .next()
        .and_then(|p| p.to_json().ok())
        .and_then(|g| g.get("conditions").and_then(|c| c.get(0)).and_then(|c| c.get("body")).cloned())
        .ok_or_else(|| ProveError::Solver("the fact limits do not load".into()))?;
    let when = cedar_policy_json_condition(guard);
    if let Some(conditions) = json.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        conditions.insert(0, when);
    }
    Policy::from_json(None, json).map_err(|e| ProveError::Solver(e.to_string()))
}

fn cedar_policy_json_condition(body: serde_json::Value) -> serde_json::Value {
    // REAL_FACTS is `forbid … unless { R }`: its body is R; as a `when` it keeps only real facts.
    serde_json::json!({ "kind": "when", "body": body })
}

fn field_of(env: &RequestEnv) -> Option<Field> {
    Field::parse(env.action().id().unescaped()).ok()
}

/// The request environments of the schema, one per field, in the order of [`Field::ALL`].
fn environments() -> Result<Vec<(Field, RequestEnv)>, ProveError> {
    let schema = consentry_policy::schema().map_err(ProveError::Policy)?;
    let mut envs: Vec<(Field, RequestEnv)> =
        schema.request_envs().filter_map(|env| field_of(&env).map(|f| (f, env))).collect();
    envs.sort_by_key(|(field, _)| *field);
    Ok(envs)
}

fn decide(policy: &CompiledPolicy, witness: &Witness) -> Result<(bool, bool), ProveError> {
    let cedar = naive_decide(policy, &witness.page, witness.field, Some((&witness.member, witness.subject)))
        .map_err(ProveError::Policy)?;
    let engine = Engine::new()
        .page(policy, witness.page.clone())
        .allows(witness.field, witness.subject)
        .map_err(ProveError::Policy)?;
    Ok((cedar, engine))
}

/// Checks that plain Cedar and the engine both decide `witness` as claimed under both policies.
fn replay(
    witness: &Witness,
    allowed_by: &CompiledPolicy,
    denied_by: &CompiledPolicy,
    what: &str,
) -> Result<(), ProveError> {
    let allowed = decide(allowed_by, witness)?;
    let denied = decide(denied_by, witness)?;
    if allowed != (true, true) || denied != (false, false) {
        return Err(ProveError::Inconsistent(format!(
            "{what}: {} {}: (cedar, engine) allow {allowed:?} and {denied:?}",
            witness.situation(true),
            witness.field
        )));
    }
    Ok(())
}

/// Whether the category of the app changes the claim the witness makes.
fn category_matters(witness: &Witness, allowed_by: &CompiledPolicy, denied_by: &CompiledPolicy) -> bool {
    let mut other = witness.clone();
    other.page.app_category = format!("{}-other", witness.page.app_category);
    let claim = |w: &Witness| {
        (
            naive_decide(allowed_by, &w.page, w.field, Some((&w.member, w.subject))).ok(),
            naive_decide(denied_by, &w.page, w.field, Some((&w.member, w.subject))).ok(),
        )
    };
    claim(witness) != claim(&other)
}

/// One solver session: restarted after a query that ran out of time.
struct Session {
    command: SolverCommand,
    timeout: Duration,
    compiler: Option<CedarSymCompiler<LocalSolver>>,
}

enum Answer<T> {
    Holds,
    Fails(T),
    Unknown(String),
}

impl Session {
    fn compiler(&mut self) -> Result<&mut CedarSymCompiler<LocalSolver>, ProveError> {
        if self.compiler.is_none() {
            let solver = self.command.start(self.timeout)?;
            let compiler = CedarSymCompiler::new(solver).map_err(|e| ProveError::Solver(e.to_string()))?;
            self.compiler = Some(compiler);
        }
        self.compiler.as_mut().ok_or_else(|| ProveError::Solver("no solver".into()))
    }

    /// Settles one query's result: `Unknown` on timeout or an undecided answer; the solver
    /// process is started afresh after anything but a clean answer.
    fn settle(
        &mut self,
        outcome: Result<Result<Option<Env>, cedar_policy_symcc::err::Error>, tokio::time::error::Elapsed>,
    ) -> Result<Answer<Env>, ProveError> {
        match outcome {
            Ok(Ok(None)) => Ok(Answer::Holds),
            Ok(Ok(Some(env))) => Ok(Answer::Fails(env)),
            Ok(Err(cedar_policy_symcc::err::Error::SolverUnknown)) => {
                self.compiler = None;
                Ok(Answer::Unknown(format!(
                    "the solver answered unknown (it may have run out of its {} ms)",
                    self.timeout.as_millis()
                )))
            }
            Ok(Err(error)) => {
                self.compiler = None;
                let text = error.to_string();
                if text.contains("set.empty") {
                    return Err(ProveError::Solver(format!(
                        "{text} (this solver cannot read Cedar sets: use cvc5)"
                    )));
                }
                Err(ProveError::Solver(text))
            }
            Err(_) => {
                self.compiler = None;
                Ok(Answer::Unknown(format!("no answer within {} ms", self.timeout.as_millis())))
            }
        }
    }
}

/// Asks one query of the session's solver within its time limit.
macro_rules! ask {
    ($session:expr, |$c:ident| $query:expr) => {{
        let limit = $session.timeout + $session.timeout.min(Duration::from_secs(1));
        let $c = $session.compiler()?;
        let outcome = tokio::time::timeout(limit, $query).await;
        $session.settle(outcome)
    }};
}

impl Prover {
    pub fn new(solver: SolverCommand, timeout: Duration) -> Prover {
        Prover { solver, timeout }
    }

    pub fn solver(&self) -> &SolverCommand {
        &self.solver
    }

    /// Reviews `draft`: each invariant, never-errors, and (with `against`) every difference.
    ///
    /// Blocks on its own single-threaded runtime: call it from a blocking context.
    pub fn review(
        &self,
        draft: &PolicyText<'_>,
        invariants: &[Invariant],
        against: Option<&PolicyText<'_>>,
    ) -> Result<Review, ProveError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ProveError::Solver(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(self.review_async(draft, invariants, against))
    }

    async fn review_async(
        &self,
        draft: &PolicyText<'_>,
        invariants: &[Invariant],
        against: Option<&PolicyText<'_>>,
    ) -> Result<Review, ProveError> {
        let started = Clock::now();
        let schema = consentry_policy::schema().map_err(ProveError::Policy)?;
        let draft_compiled = compile(0, draft.text).map_err(ProveError::Policy)?;
        let draft_limited = limited(draft.text, &[])?;
        let mut session = Session { command: self.solver.clone(), timeout: self.timeout, compiler: None };
        let envs = environments()?;

        let mut reports = Vec::with_capacity(invariants.len());
        for invariant in invariants {
            let compiled = invariant.compiled()?;
            let set = policy_set(&invariant.text)?;
            let mut fields = Vec::with_capacity(envs.len());
            for (field, env) in &envs {
                let left = CompiledPolicySet::compile(&draft_limited, env, schema).map_err(sym)?;
                let right = CompiledPolicySet::compile(&set, env, schema).map_err(sym)?;
                let answer = ask!(session, |c| c.check_implies_with_counterexample_opt(&left, &right))?;
                fields.push(self.outcome(answer, *field, &draft_compiled, &compiled, &invariant.name)?);
            }
            reports.push(InvariantReport { name: invariant.name.clone(), fields });
        }

        let never_errors = self.never_errors(&mut session, draft, &envs).await?;

        let comparison = match against {
            None => None,
            Some(other) => Some(self.compare(&mut session, draft, &draft_compiled, other, &envs).await?),
        };

        Ok(Review {
            draft: draft.label.clone(),
            solver: self.solver.describe(),
            invariants: reports,
            never_errors,
            comparison,
            elapsed: started.elapsed(),
        })
    }

    fn outcome(
        &self,
        answer: Answer<Env>,
        field: Field,
        draft: &CompiledPolicy,
        invariant: &CompiledPolicy,
        name: &str,
    ) -> Result<FieldOutcome, ProveError> {
        Ok(match answer {
            Answer::Holds => FieldOutcome { field, outcome: Outcome::Proven, category_matters: false },
            Answer::Unknown(why) => {
                FieldOutcome { field, outcome: Outcome::Unknown(why), category_matters: false }
            }
            Answer::Fails(env) => {
                let witness = Witness::from_env(&env).ok_or_else(|| {
                    ProveError::Inconsistent(format!(
                        "a counterexample outside the facts consentry presents: {env:?}"
                    ))
                })?;
                replay(&witness, draft, invariant, &format!("invariant {name}"))?;
                let category_matters = category_matters(&witness, draft, invariant);
                FieldOutcome { field, outcome: Outcome::Violated(Box::new(witness)), category_matters }
            }
        })
    }

    async fn never_errors(
        &self,
        session: &mut Session,
        draft: &PolicyText<'_>,
        envs: &[(Field, RequestEnv)],
    ) -> Result<Vec<FieldOutcome>, ProveError> {
        let schema = consentry_policy::schema().map_err(ProveError::Policy)?;
        let set = policy_set(draft.text)?;
        let policies: Vec<Policy> = set.policies().map(limited_policy).collect::<Result<_, _>>()?;
        let mut outcomes = Vec::with_capacity(envs.len());
        for (field, env) in envs {
            let mut outcome = Outcome::Proven;
            for policy in &policies {
                let compiled = SymPolicy::compile(policy, env, schema).map_err(sym)?;
                let answer = ask!(session, |c| c.check_never_errors_with_counterexample_opt(&compiled))?;
                match answer {
                    Answer::Holds => {}
                    Answer::Unknown(why) => {
                        outcome = Outcome::Unknown(why);
                        break;
                    }
                    Answer::Fails(env) => {
                        let single = PolicySet::from_policies([policy.clone()])
                            .map_err(|e| ProveError::Solver(e.to_string()))?;
                        let response = Authorizer::new().is_authorized(&env.request, &single, &env.entities);
                        if response.diagnostics().errors().next().is_none() {
                            return Err(ProveError::Inconsistent(format!(
                                "rule {} was said to error, but Cedar evaluates it without error",
                                policy.id()
                            )));
                        }
                        let witness = Witness::from_env(&env).ok_or_else(|| {
                            ProveError::Inconsistent(
                                "an erroring request outside the facts consentry presents".into(),
                            )
                        })?;
                        outcome = Outcome::Violated(Box::new(witness));
                        break;
                    }
                }
            }
            outcomes.push(FieldOutcome { field: *field, outcome, category_matters: true });
        }
        Ok(outcomes)
    }

    async fn compare(
        &self,
        session: &mut Session,
        draft: &PolicyText<'_>,
        draft_compiled: &CompiledPolicy,
        other: &PolicyText<'_>,
        envs: &[(Field, RequestEnv)],
    ) -> Result<Comparison, ProveError> {
        let other_compiled = compile(0, other.text).map_err(ProveError::Policy)?;
        let mut comparison = Comparison {
            against: other.label.clone(),
            newly_allowed: Vec::new(),
            newly_denied: Vec::new(),
            unknown: Vec::new(),
        };
        for (field, env) in envs {
            for newly_allowed in [true, false] {
                let (left_text, right_text, allowed_by, denied_by) = if newly_allowed {
                    (draft.text, other.text, draft_compiled, &other_compiled)
                } else {
                    (other.text, draft.text, &other_compiled, draft_compiled)
                };
                let mut excluded: Vec<String> = Vec::new();
                loop {
                    if excluded.len() >= MAX_CLASSES {
                        comparison
                            .unknown
                            .push((*field, format!("more than {MAX_CLASSES} kinds of situation")));
                        break;
                    }
                    match self.difference(session, left_text, right_text, &excluded, env).await? {
                        Answer::Holds => break,
                        Answer::Unknown(why) => {
                            comparison.unknown.push((*field, why));
                            break;
                        }
                        Answer::Fails(env) => {
                            let witness = Witness::from_env(&env).ok_or_else(|| {
                                ProveError::Inconsistent(format!(
                                    "a counterexample outside the facts consentry presents: {env:?}"
                                ))
                            })?;
                            let what = if newly_allowed { "newly allowed" } else { "newly denied" };
                            replay(&witness, allowed_by, denied_by, what)?;
                            excluded.push(witness.class_condition());
                            let category_matters = category_matters(&witness, allowed_by, denied_by);
                            let difference = Difference { witness, category_matters };
                            if newly_allowed {
                                comparison.newly_allowed.push(difference);
                            } else {
                                comparison.newly_denied.push(difference);
                            }
                        }
                    }
                }
            }
        }
        Ok(comparison)
    }

    async fn difference(
        &self,
        session: &mut Session,
        left: &str,
        right: &str,
        excluded: &[String],
        env: &RequestEnv,
    ) -> Result<Answer<Env>, ProveError> {
        let schema = consentry_policy::schema().map_err(ProveError::Policy)?;
        let left = CompiledPolicySet::compile(&limited(left, excluded)?, env, schema).map_err(sym)?;
        let right = CompiledPolicySet::compile(&policy_set(right)?, env, schema).map_err(sym)?;
        ask!(session, |c| c.check_implies_with_counterexample_opt(&left, &right))
    }
}

fn sym(error: cedar_policy_symcc::err::Error) -> ProveError {
    ProveError::Solver(error.to_string())
}

/// Whether plain Cedar (`Authorizer::is_authorized`, real ids) allows the witness's request
/// under `policy`: how a reader checks a witness independently of the prover.
pub fn cedar_allows(policy: &CompiledPolicy, witness: &Witness) -> Result<bool, PolicyError> {
    naive_decide(policy, &witness.page, witness.field, Some((&witness.member, witness.subject)))
}
