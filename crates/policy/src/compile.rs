//! Loading policy text: parse, strict validation against the schema, and consentry's own rules.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use crate::nesting;
use crate::presentation::{self, Presentation};

/// The schema text every policy is validated against.
pub const SCHEMA_TEXT: &str = include_str!("consentry.cedarschema");

/// The Cedar schema of the Groups API, loaded once.
pub fn schema() -> Result<&'static Schema, PolicyError> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    let loaded = SCHEMA.get_or_init(|| {
        Schema::from_cedarschema_str(SCHEMA_TEXT).map(|(schema, _warnings)| schema).map_err(|e| e.to_string())
    });
    loaded.as_ref().map_err(|e| PolicyError::Schema(e.clone()))
}

/// One problem in policy text, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiagnostic {
    /// 1-based line, 0 when the problem has no place in the text.
    pub line: usize,
    /// 1-based column, 0 when the problem has no place in the text.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

/// Why policy text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy does not parse: {}", join(.0))]
    Parse(Vec<PolicyDiagnostic>),
    #[error("policy does not validate against the schema: {}", join(.0))]
    Invalid(Vec<PolicyDiagnostic>),
    #[error("policy is empty: it would deny every field")]
    Empty,
    #[error("the built-in schema does not load: {0}")]
    Schema(String),
    #[error("cedar could not evaluate a request: {0}")]
    Evaluation(String),
    #[error("policy does not parse: {0}")]
    TooDeep(PolicyDiagnostic),
    #[error("policy could not be compiled: {0}")]
    Unavailable(String),
}

impl PolicyError {
    /// Every diagnostic, each with line and column where known.
    pub fn diagnostics(&self) -> Vec<PolicyDiagnostic> {
        match self {
            PolicyError::Parse(d) | PolicyError::Invalid(d) => d.clone(),
            PolicyError::TooDeep(d) => vec![d.clone()],
            other => vec![PolicyDiagnostic { line: 0, column: 0, message: other.to_string() }],
        }
    }
}

fn join(diagnostics: &[PolicyDiagnostic]) -> String {
    diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; ")
}

/// Turns a byte offset into 1-based (line, column).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn diagnostic(text: &str, error: &dyn Diagnostic) -> PolicyDiagnostic {
    let offset = error.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
    let mut message = error.to_string();
    if let Some(help) = error.help() {
        message = format!("{message} ({help})");
    }
    match offset {
        Some(offset) => {
            let (line, column) = line_column(text, offset);
            PolicyDiagnostic { line, column, message }
        }
        None => PolicyDiagnostic { line: 0, column: 0, message },
    }
}

/// A policy version, parsed and validated, ready to decide.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Unique to this compilation, so that decisions memoized under it are a pure function
    /// of this exact text, even if a draft and a stored version share a number.
    pub(crate) id: u64,
    pub(crate) version: u32,
    pub(crate) policies: Arc<PolicySet>,
    /// What the engine shows Cedar for these rules: each fact as it is, or a representative
    /// no rule can tell apart from it (see `presentation`).
    pub(crate) presentation: Presentation,
}

impl CompiledPolicy {
    pub fn version(&self) -> u32 {
        self.version
    }
    /// How many permit and forbid rules the text holds.
    pub fn rule_count(&self) -> usize {
        self.policies.policies().count()
    }
    /// What the engine shows Cedar when it decides under this policy.
    pub fn presentation(&self) -> &Presentation {
        &self.presentation
    }
    pub(crate) fn schema(&self) -> Result<&'static Schema, PolicyError> {
        schema()
    }
}

/// The stack of the thread that parses and validates: ample for any text within the nesting
/// bounds (`nesting`), whatever thread calls `compile`.
const COMPILER_STACK_BYTES: usize = 32 << 20;

/// Parses and strictly validates policy text.
///
/// Besides Cedar's own checks, a policy may not name a member: decisions depend on a
/// subject's facts, never on who the subject is (so decisions can be memoized per facts).
/// Text nested too deeply is refused before Cedar sees it, and Cedar parses on a thread of
/// its own with a known stack, so no text can overflow the caller's stack.
pub fn compile(version: u32, text: &str) -> Result<CompiledPolicy, PolicyError> {
    nesting::check(text).map_err(|(offset, message)| {
        let (line, column) = line_column(text, offset);
        PolicyError::TooDeep(PolicyDiagnostic { line, column, message })
    })?;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("policy-compiler".into())
            .stack_size(COMPILER_STACK_BYTES)
            .spawn_scoped(scope, || compile_here(version, text))
            .map_err(|e| PolicyError::Unavailable(format!("cannot start the policy compiler: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(PolicyError::Unavailable("the policy compiler stopped".into())))
    })
}

/// [`compile`]'s work, on the compiler's thread.
fn compile_here(version: u32, text: &str) -> Result<CompiledPolicy, PolicyError> {
    let policies = PolicySet::from_str(text)
        .map_err(|errors| PolicyError::Parse(errors.iter().map(|e| diagnostic(text, e)).collect()))?;
    if policies.policies().next().is_none() {
        return Err(PolicyError::Empty);
    }
    let validator = Validator::new(schema()?.clone());
    let result = validator.validate(&policies, ValidationMode::Strict);
    let mut problems: Vec<PolicyDiagnostic> =
        result.validation_errors().map(|e| diagnostic(text, e)).collect();
    let mut rules = Vec::new();
    let (mut names_apps, mut names_groups) = (false, false);
    for policy in policies.policies() {
        for literal in policy.entity_literals() {
            match literal.type_name().to_string().as_str() {
                "Consentry::App" => names_apps = true,
                "Consentry::Group" => names_groups = true,
                "Consentry::Member" => {
                    let offset = text.find(&literal.to_string()).or_else(|| text.find("Consentry::Member"));
                    let (line, column) = offset.map_or((0, 0), |o| line_column(text, o));
                    problems.push(PolicyDiagnostic {
                        line,
                        column,
                        message: format!(
                            "policy {} names member {}: decide on the subject's facts (context.subject_*), not on its identity",
                            policy.id(),
                            literal
                        ),
                    });
                }
                _ => {}
            }
        }
        // Cedar's JSON form of the rule, where every name is unescaped: what the engine
        // presents is decided from it, never from the text.
        rules.push(
            policy.to_json().map_err(|e| PolicyError::Unavailable(format!("policy {}: {e}", policy.id())))?,
        );
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    let mut presentation = presentation::analyse(&rules);
    // Cedar's own list of the entities each rule names, on top of the walk's.
    presentation.app |= names_apps;
    presentation.group |= names_groups;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Ok(CompiledPolicy { id, version, policies: Arc::new(policies), presentation })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PageFacts, SubjectFacts};
    use consentry_types::Field;

    const LEGACY: &str = include_str!("../../../policies/legacy-2017.cedar");
    const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");

    #[test]
    fn shipped_policies_validate() {
        assert!(compile(1, LEGACY).is_ok(), "{:?}", compile(1, LEGACY).err());
        assert!(compile(2, GROUPS_2018).is_ok(), "{:?}", compile(2, GROUPS_2018).err());
    }

    #[test]
    fn unknown_field_is_a_validation_error_with_its_place() {
        let text = "permit (principal,\n  action == Consentry::Action::\"member.email\", resource);";
        let err = compile(1, text).err();
        let Some(PolicyError::Invalid(diagnostics)) = err else {
            unreachable!("expected a validation error, got {err:?}")
        };
        assert_eq!(diagnostics.first().map(|d| d.line), Some(2), "{diagnostics:?}");
        assert!(diagnostics.iter().any(|d| d.message.contains("member.email")), "{diagnostics:?}");
    }

    #[test]
    fn syntax_error_says_line_and_column() {
        let text = "permit (principal, action, resource)\nwhen { context.installed && };";
        let err = compile(1, text).err();
        let Some(PolicyError::Parse(diagnostics)) = err else {
            unreachable!("expected parse error, got {err:?}")
        };
        assert_eq!(diagnostics.first().map(|d| d.line), Some(2), "{diagnostics:?}");
        assert!(diagnostics.first().is_some_and(|d| d.column > 1));
    }

    #[test]
    fn attribute_of_wrong_type_fails_strict_validation() {
        let text = "permit (principal, action, resource) when { context.installed == \"yes\" };";
        assert!(matches!(compile(1, text), Err(PolicyError::Invalid(_))));
    }

    #[test]
    fn naming_a_member_is_refused() {
        let text = "permit (principal, action == Consentry::Action::\"member.name\", resource == Consentry::Member::\"alice\");";
        let err = compile(1, text).err();
        assert!(
            matches!(&err, Some(PolicyError::Invalid(d)) if d.iter().any(|d| d.message.contains("names member"))),
            "{err:?}"
        );
    }

    /// Policy texts nested `levels` deep in each way Cedar's grammar allows.
    fn nested_texts(levels: usize) -> Vec<(&'static str, String)> {
        let rule = |body: String| format!("permit (principal, action, resource) when {{ {body} }};");
        vec![
            ("parentheses", rule(format!("{}context.installed{}", "(".repeat(levels), ")".repeat(levels)))),
            ("set literals", rule(format!("{}1{}.contains(1)", "[".repeat(levels), "]".repeat(levels)))),
            ("record literals", rule(format!("{}1{} has a", "{a: ".repeat(levels), "}".repeat(levels)))),
            ("negations", rule(format!("{}context.installed{}", "!(".repeat(levels), ")".repeat(levels)))),
            ("minus signs", rule(format!("{}1{} == 0", "-(".repeat(levels), ")".repeat(levels)))),
            ("bare negations", rule(format!("{}context.installed", "!".repeat(levels)))),
            ("if chains", rule(format!("{}true", "if context.installed then true else ".repeat(levels)))),
            (
                "nested ifs",
                rule(format!(
                    "{}true{}",
                    "if context.installed then (".repeat(levels),
                    ") else false".repeat(levels)
                )),
            ),
            ("&& chains", rule(vec!["context.installed"; levels + 1].join(" && "))),
            ("+ chains", rule(format!("{} == 0", vec!["1"; levels + 1].join(" + ")))),
            ("attribute chains", rule(format!("context{} == 1", ".a".repeat(levels)))),
            ("method chains", rule(format!("[1]{}", ".contains(1) == [true]".repeat(levels)))),
            (
                "when clauses",
                format!(
                    "permit (principal, action, resource) when {{ true }}{};",
                    " when { true }".repeat(levels)
                ),
            ),
        ]
    }

    /// Issue 8: 150 nested parentheses overflowed the stack of the thread that parsed them and
    /// aborted the whole server. Any nesting is refused with a clear error or accepted; this
    /// test runs on a test thread's ordinary stack, like a server's worker.
    #[test]
    fn deep_nesting_is_refused_with_its_place_never_a_crash() {
        for levels in [150, 10_000] {
            for (shape, text) in nested_texts(levels) {
                match compile(1, &text) {
                    // 150 levels of a chain are within the bounds; 10,000 of anything are not.
                    Ok(_) => assert!(levels < 10_000, "{shape} x{levels} accepted"),
                    Err(PolicyError::TooDeep(d)) => {
                        assert!(d.line == 1 && d.column > 0, "{shape} x{levels}: {d}");
                        assert!(d.message.contains("deep"), "{shape} x{levels}: {d}");
                    }
                    Err(PolicyError::Parse(_) | PolicyError::Invalid(_)) => {}
                    Err(other) => unreachable!("{shape} x{levels}: {other}"),
                }
            }
        }
    }

    /// The largest `n` for which `shape(n)` passes the nesting bounds, and its policy.
    fn deepest_accepted(shape: &dyn Fn(usize) -> String) -> (usize, Result<CompiledPolicy, PolicyError>) {
        let (mut accepted, mut refused) = (0, 5_000);
        while refused - accepted > 1 {
            let n = (accepted + refused) / 2;
            match compile(1, &shape(n)) {
                Err(PolicyError::TooDeep(_)) => refused = n,
                _ => accepted = n,
            }
        }
        (accepted, compile(1, &shape(accepted)))
    }

    /// Every policy the bounds accept, however close to them, is decided on a thread with a
    /// 1 MiB stack (half a serving worker's) without Cedar running short of stack.
    #[test]
    fn the_deepest_accepted_policies_decide_on_half_a_worker_stack() {
        let rule = |body: String| format!("permit (principal, action, resource) when {{ {body} }};");
        type Shape = Box<dyn Fn(usize) -> String>;
        let shapes: Vec<(&str, Shape)> = vec![
            ("&& chain", Box::new(move |n| rule(vec!["context.installed"; n + 1].join(" && ")))),
            ("|| chain", Box::new(move |n| rule(vec!["principal.status != \"x\""; n + 1].join(" || ")))),
            (
                "if chain",
                Box::new(move |n| {
                    rule(format!("{}true", "if !context.installed then false else ".repeat(n)))
                }),
            ),
            (
                "+ chain",
                Box::new(move |n| {
                    rule(format!("{} > 0", vec!["context.installed_since"; n + 1].join(" + ")))
                }),
            ),
            (
                "parentheses around a chain",
                Box::new(move |n| {
                    rule(format!(
                        "{}{}{}",
                        "(".repeat(60),
                        vec!["context.installed"; n + 1].join(" && "),
                        ")".repeat(60)
                    ))
                }),
            ),
            (
                "nested ifs",
                Box::new(move |n| {
                    rule(format!(
                        "{}true{}",
                        "if context.installed then (".repeat(n),
                        ") else false".repeat(n)
                    ))
                }),
            ),
            (
                "nested sets",
                Box::new(move |n| {
                    rule(format!(
                        "{}1{}.contains({}1{})",
                        "[".repeat(n + 1),
                        "]".repeat(n + 1),
                        "[".repeat(n),
                        "]".repeat(n)
                    ))
                }),
            ),
            (
                "nested records",
                Box::new(move |n| {
                    rule(format!("{}true{}{} ", "{a: ".repeat(n + 1), "}".repeat(n + 1), ".a".repeat(n + 1)))
                }),
            ),
            (
                "when clauses",
                Box::new(move |n| {
                    format!(
                        "permit (principal, action, resource){};",
                        " when { context.installed }".repeat(n + 1)
                    )
                }),
            ),
        ];
        for (name, shape) in shapes {
            let (n, policy) = deepest_accepted(&*shape);
            assert!(n >= 50, "{name}: only {n} levels accepted");
            let policy = policy.unwrap_or_else(|e| unreachable!("{name} x{n}: {e}"));
            let decided = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    let page = PageFacts {
                        app: consentry_types::AppId::parse("a").unwrap_or_else(|e| unreachable!("{e}")),
                        app_status: consentry_types::AppStatus::Active,
                        app_category: String::new(),
                        group: consentry_types::GroupId::parse("g").unwrap_or_else(|e| unreachable!("{e}")),
                        installed: true,
                        installed_since: 5,
                    };
                    let decided = crate::naive_decide(&policy, &page, Field::GroupName, None);
                    let served =
                        crate::Engine::new().page(&policy, page).allows(Field::GroupName, SubjectFacts::NONE);
                    (decided, served)
                })
                .map(|t| t.join());
            let Ok(Ok((decided, served))) = decided else { unreachable!("{name} x{n}: the thread failed") };
            assert!(decided.is_ok() && decided == served, "{name} x{n}: {decided:?} {served:?}");
        }
    }

    #[test]
    fn empty_text_is_refused() {
        assert_eq!(compile(1, "// nothing").err(), Some(PolicyError::Empty));
    }
}
