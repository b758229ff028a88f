//! Differential test: the memoizing engine decides exactly as `Authorizer::is_authorized` on
//! the same input, over random well-typed policies spanning Cedar's expression language over
//! the schema, and over every shipped policy exhaustively.
//!
//! Two engines are compared with plain Cedar ([`naive_decide`], real ids and real values): one
//! shared by every case, as serving shares one, and a fresh one per policy, as the audit makes
//! its own (`consentry-audit` decides with an `Engine` of its own and nothing else).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::OnceLock;

use consentry_policy::{compile, naive_decide, CompiledPolicy, Engine, PageFacts, SubjectFacts};
use consentry_types::{AppId, AppStatus, Field, GroupId, MemberId, Role};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The engine serving shares across every request (and here across every case).
fn serving() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::new)
}

/// Writes past the test harness's capture, so that `cargo test` shows it.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// Ids include the engine's own placeholders ("app", "group", "subject"): a real id equal to a
// placeholder must not confuse it.
const APPS: [&str; 4] = ["app-a", "app-b", "app-c", "app"];
const GROUPS: [&str; 3] = ["g1", "g2", "group"];
const MEMBERS: [&str; 3] = ["m1", "subject", "m-999"];
/// Categories policies name; they include the strings the engine may show for "no named one".
const CATEGORIES: [&str; 6] =
    ["social_media_management", "video_streaming", "analytics", "", "~other~", "\u{0}"];
/// Categories apps have besides those: some match the patterns below, some nothing.
const OTHER_CATEGORIES: [&str; 6] = ["social", "games", "videoing", "a_b", "~", "soc*"];
const PATTERNS: [&str; 8] = ["*", "soc*", "*_*", "video*ing", "", "*a*a*", "~*~", "soc\\*"];
const ROLES: [&str; 3] = ["admin", "member", "none"];
const STATUSES: [&str; 3] = ["active", "suspended", "banned"];
/// The Long constants policies compare `installed_since` with: adjacent ones (no value
/// between), and two a value apart (exactly one between: a representative off by one lands
/// on a constant).
const CONSTANTS: [i64; 12] = [
    i64::MIN,
    i64::MIN + 1,
    -1_522_800_000,
    -1,
    0,
    1,
    1_522_799_999,
    1_522_800_000,
    1_522_800_002,
    1_600_000_000,
    i64::MAX - 1,
    i64::MAX,
];

/// `context.installed_since`, spelled in each way Cedar allows.
fn since() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "context.installed_since",
        "context[\"installed_since\"]",
        "context[\"installed\\u{5f}since\"]",
        "context[\"\\u{69}nstalled_since\"]",
    ])
}

fn category() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "principal.category",
        "principal[\"category\"]",
        "principal[\"c\\u{61}tegory\"]",
    ])
}

fn status() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["principal.status", "principal[\"status\"]"])
}

fn role() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["context.subject_role", "context[\"subject_role\"]"])
}

/// A Long constant, written as a literal, a negated literal or in parentheses.
fn constant() -> impl Strategy<Value = String> {
    (prop::sample::select(CONSTANTS.to_vec()), 0..4u8).prop_map(|(n, form)| match (n, form) {
        (n, 1) if n > i64::MIN => format!("-({})", -n),
        (n, 2) => format!("({n})"),
        (n, 3) if n > i64::MIN && n < 0 => format!("-{}", -n),
        (n, _) => n.to_string(),
    })
}

fn quoted(s: &str) -> String {
    format!("{s:?}").replace("\\0", "\\u{0}")
}

fn string_set(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", "))
}

fn comparison() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="])
}

/// A Long-valued expression.
fn long_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => since().prop_map(String::from),
        2 => constant(),
        1 => (since(), constant()).prop_map(|(s, c)| format!("({s} + {c})")),
        1 => (since(), constant()).prop_map(|(s, c)| format!("({s} - {c})")),
        1 => since().prop_map(|s| format!("({s} * 2)")),
        1 => (constant(), constant()).prop_map(|(a, b)| format!("(if context.installed then {a} else {b})")),
    ]
}

/// A record of the context's type: its other attributes copied from the context (so that
/// comparing it with the whole context turns on `installed_since`) or literals.
fn context_record() -> impl Strategy<Value = String> {
    (constant(), any::<bool>(), prop::sample::select(ROLES.to_vec()), prop::bool::weighted(0.8)).prop_map(
        |(c, b, r, copied)| {
            let (installed, member, role, consented) = if copied {
                (
                    "context.installed".to_string(),
                    "context.subject_is_member".to_string(),
                    "context.subject_role".to_string(),
                    "context.subject_consented_profile".to_string(),
                )
            } else {
                (b.to_string(), b.to_string(), quoted(r), b.to_string())
            };
            format!(
                "{{installed: {installed}, installed_since: {c}, subject_is_member: {member}, subject_role: {role}, subject_consented_profile: {consented}}}"
            )
        },
    )
}

/// `installed_since` used other than compared with a constant: arithmetic, comparison with
/// another expression, `containsAny`/`containsAll`, through the whole context.
fn since_read_exactly() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => (prop::collection::vec(constant(), 1..3), since(), constant())
            .prop_map(|(cs, s, c)| format!("[{}].containsAny([{s}, {c}])", cs.join(", "))),
        1 => (prop::collection::vec(constant(), 1..3), since())
            .prop_map(|(cs, s)| format!("[{}].containsAll([{s}])", cs.join(", "))),
        3 => (long_expr(), comparison(), long_expr()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        1 => (since(), comparison(), constant())
            .prop_map(|(s, op, c)| format!("{{a: context}}.a{} {op} {c}", s.trim_start_matches("context"))),
        1 => (comparison(), constant())
            .prop_map(|(op, c)| format!("(if context.installed then context else context).installed_since {op} {c}")),
        1 => context_record().prop_map(|r| format!("context == {r}")),
        1 => context_record().prop_map(|r| format!("context != {r}")),
    ]
}

/// The category used other than compared with a literal or matched with a pattern.
fn category_read_exactly() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::subsequence(CATEGORIES.to_vec(), 1..3), category())
            .prop_map(|(cs, s)| format!("{}.containsAny([{s}, \"games\"])", string_set(&cs))),
        (category(), status()).prop_map(|(c, s)| format!("{c} == {s}")),
        prop::sample::select(CATEGORIES.to_vec()).prop_map(|c| format!(
            "(if context.installed then principal else principal).category == {}",
            quoted(c)
        )),
    ]
}

/// A Bool-valued expression that reads one fact (or names one entity) in one way.
fn atom() -> impl Strategy<Value = String> {
    let fields: Vec<&'static str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    prop_oneof![
        // Bool attributes.
        1 => prop::sample::select(vec![
            "context.installed",
            "context[\"installed\"]",
            "context.subject_is_member",
            "context[\"subject\\u{5f}is_member\"]",
            "context.subject_consented_profile",
            "true",
            "false",
        ])
        .prop_map(String::from),
        // installed_since against constants, both ways round.
        6 => (since(), comparison(), constant(), any::<bool>())
            .prop_map(|(s, op, c, flip)| if flip { format!("{c} {op} {s}") } else { format!("{s} {op} {c}") }),
        2 => (prop::collection::vec(constant(), 1..4), since())
            .prop_map(|(cs, s)| format!("[{}].contains({s})", cs.join(", "))),
        // installed_since in ways the engine must show it exactly.
        2 => since_read_exactly(),
        // The app's status and category.
        1 => (status(), prop::sample::select(vec!["==", "!="]), prop::sample::select(STATUSES.to_vec()))
            .prop_map(|(s, op, v)| format!("{s} {op} {}", quoted(v))),
        1 => status().prop_map(|s| format!("{s} like \"act*\"")),
        4 => (category(), prop::sample::select(vec!["==", "!="]), prop::sample::select(CATEGORIES.to_vec()), any::<bool>())
            .prop_map(|(s, op, v, flip)| if flip { format!("{} {op} {s}", quoted(v)) } else { format!("{s} {op} {}", quoted(v)) }),
        3 => (category(), prop::sample::select(PATTERNS.to_vec())).prop_map(|(s, p)| format!("{s} like \"{p}\"")),
        2 => (prop::sample::subsequence(CATEGORIES.to_vec(), 1..4), category())
            .prop_map(|(cs, s)| format!("{}.contains({s})", string_set(&cs))),
        1 => category_read_exactly(),
        // The subject's role.
        1 => (role(), prop::sample::select(vec!["==", "!="]), prop::sample::select(ROLES.to_vec()))
            .prop_map(|(r, op, v)| format!("{r} {op} {}", quoted(v))),
        1 => role().prop_map(|r| format!("[\"admin\", \"member\"].contains({r})")),
        1 => role().prop_map(|r| format!("{r} like \"*m*\"")),
        // has.
        1 => prop::sample::select(vec![
            "context has installed_since",
            "context has \"installed\\u{5f}since\"",
            "context has subject_role",
            "principal has category",
            "principal has status",
        ])
        .prop_map(String::from),
        // Entities: apps, groups, types, actions.
        2 => (prop::sample::select(APPS.to_vec()), prop::sample::select(vec!["==", "!=", "in"]))
            .prop_map(|(a, op)| format!("principal {op} Consentry::App::\"{a}\"")),
        1 => prop::sample::subsequence(APPS.to_vec(), 1..3).prop_map(|apps| format!(
            "principal in [{}]",
            apps.iter().map(|a| format!("Consentry::App::\"{a}\"")).collect::<Vec<_>>().join(", ")
        )),
        2 => (prop::sample::select(GROUPS.to_vec()), prop::sample::select(vec!["==", "!=", "in"]))
            .prop_map(|(g, op)| format!("resource {op} Consentry::Group::\"{g}\"")),
        1 => prop::sample::select(GROUPS.to_vec()).prop_map(|g| format!("resource is Consentry::Group in Consentry::Group::\"{g}\"")),
        1 => prop::sample::select(vec![
            "resource is Consentry::Member",
            "resource is Consentry::Group",
            "principal is Consentry::App",
            "principal == principal",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(fields.clone()).prop_map(|f| format!("action == Consentry::Action::\"{f}\"")),
        1 => prop::sample::select(vec!["group_data", "post_data", "profile"])
            .prop_map(|g| format!("action in Consentry::Action::\"{g}\"")),
        1 => (prop::sample::select(fields), prop::sample::select(vec!["group_data", "post_data", "profile"]))
            .prop_map(|(f, g)| format!("action in [Consentry::Action::\"{f}\", Consentry::Action::\"{g}\"]")),
    ]
}

/// A Bool-valued expression: atoms under `&&`, `||`, `!` and `if … then … else`.
fn bool_expr() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), inner.clone(), inner).prop_map(|(c, a, b)| format!("(if {c} then {a} else {b})")),
        ]
    })
}

fn scope() -> impl Strategy<Value = String> {
    let fields: Vec<&'static str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    let principal = prop_oneof![
        3 => Just("principal".to_string()),
        1 => prop::sample::select(APPS.to_vec()).prop_map(|a| format!("principal == Consentry::App::\"{a}\"")),
        1 => prop::sample::select(APPS.to_vec()).prop_map(|a| format!("principal in Consentry::App::\"{a}\"")),
        1 => Just("principal is Consentry::App".to_string()),
    ];
    let action = prop_oneof![
        2 => Just("action".to_string()),
        1 => prop::sample::select(fields.clone()).prop_map(|f| format!("action == Consentry::Action::\"{f}\"")),
        1 => prop::sample::select(vec!["group_data", "post_data", "profile"])
            .prop_map(|g| format!("action in Consentry::Action::\"{g}\"")),
        1 => (prop::sample::select(fields), prop::sample::select(vec!["group_data", "post_data", "profile"]))
            .prop_map(|(f, g)| format!("action in [Consentry::Action::\"{f}\", Consentry::Action::\"{g}\"]")),
    ];
    let resource = prop_oneof![
        3 => Just("resource".to_string()),
        1 => Just("resource is Consentry::Member".to_string()),
        1 => Just("resource is Consentry::Group".to_string()),
        1 => prop::sample::select(GROUPS.to_vec()).prop_map(|g| format!("resource in Consentry::Group::\"{g}\"")),
    ];
    (principal, action, resource).prop_map(|(p, a, r)| format!("({p}, {a}, {r})"))
}

/// One rule: permit or forbid, a scope and up to three `when`/`unless` conditions.
fn rule() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["permit", "permit", "forbid"]),
        scope(),
        prop::collection::vec((any::<bool>(), bool_expr()), 0..3),
    )
        .prop_map(|(effect, scope, conditions)| {
            let conditions: String = conditions
                .into_iter()
                .map(|(when, c)| format!("\n  {} {{ {c} }}", if when { "when" } else { "unless" }))
                .collect();
            format!("{effect} {scope}{conditions};")
        })
}

fn policy_text() -> impl Strategy<Value = String> {
    prop::collection::vec(rule(), 1..5).prop_map(|rules| rules.join("\n"))
}

/// An installation date: a constant, one either side of it, anything, or an extreme.
fn installed_since() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => (prop::sample::select(CONSTANTS.to_vec()), prop::sample::select(vec![-1i64, 0, 0, 1]))
            .prop_map(|(c, d)| c.checked_add(d).unwrap_or(c)),
        2 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, 0, 1_500_000_000]),
    ]
}

fn page_facts() -> impl Strategy<Value = PageFacts> {
    let categories: Vec<&'static str> = CATEGORIES.iter().chain(OTHER_CATEGORIES.iter()).copied().collect();
    (
        prop::sample::select(APPS.to_vec()),
        prop::sample::select(vec![
            AppStatus::Active,
            AppStatus::Active,
            AppStatus::Suspended,
            AppStatus::Banned,
        ]),
        prop::sample::select(categories),
        prop::sample::select(GROUPS.to_vec()),
        prop::bool::weighted(0.8),
        installed_since(),
    )
        .prop_map(|(app, app_status, category, group, installed, since)| PageFacts {
            app: AppId::parse(app).unwrap_or_else(|e| unreachable!("{e}")),
            app_status,
            app_category: category.to_string(),
            group: GroupId::parse(group).unwrap_or_else(|e| unreachable!("{e}")),
            installed,
            installed_since: since,
        })
}

fn subject() -> impl Strategy<Value = (Field, MemberId, SubjectFacts)> {
    (
        prop::sample::select(Field::ALL.to_vec()),
        prop::sample::select(MEMBERS.to_vec()),
        any::<bool>(),
        prop::sample::select(vec![None, Some(Role::Member), Some(Role::Admin)]),
        any::<bool>(),
    )
        .prop_map(|(field, member, is_member, role, consented)| {
            let member = MemberId::parse(member).unwrap_or_else(|e| unreachable!("{e}"));
            (field, member, SubjectFacts { is_member, role, consented_profile: consented })
        })
}

/// Pages, each with the (field, subject) pairs decided on it.
type Pages = Vec<(PageFacts, Vec<(Field, MemberId, SubjectFacts)>)>;

const PAGES_PER_POLICY: usize = 6;
const DECISIONS_PER_PAGE: usize = 4;

fn pages() -> impl Strategy<Value = Pages> {
    prop::collection::vec(
        (page_facts(), prop::collection::vec(subject(), DECISIONS_PER_PAGE)),
        PAGES_PER_POLICY,
    )
}

/// Decides every pair of `pages` with Cedar, the serving engine and a fresh engine (as an
/// audit does, deciding in another order); all three must agree. Returns how many were.
fn compare(policy: &CompiledPolicy, text: &str, pages: &Pages) -> Result<usize, TestCaseError> {
    let audit = Engine::new();
    let mut compared = 0;
    for (page, decisions) in pages {
        let mut served = serving().page(policy, page.clone());
        let mut audited = audit.page(policy, page.clone());
        let mut cedar = Vec::new();
        for (field, member, subject) in decisions {
            let reference = naive_decide(policy, page, *field, Some((member, *subject)));
            prop_assert!(reference.is_ok(), "{reference:?}");
            let fast = served.allows(*field, *subject);
            prop_assert_eq!(
                fast.as_ref().ok(),
                reference.as_ref().ok(),
                "serving engine\n{}\n{:?} {:?} {:?}",
                text,
                page,
                field,
                subject
            );
            cedar.push(reference.ok());
        }
        for ((field, _, subject), reference) in decisions.iter().zip(cedar).rev() {
            let audit_decision = audited.allows(*field, *subject).ok();
            prop_assert_eq!(
                audit_decision,
                reference,
                "audit engine\n{}\n{:?} {:?} {:?}",
                text,
                page,
                field,
                subject
            );
            compared += 1;
        }
    }
    Ok(compared)
}

/// Random policy sets over the whole expression language, each decided on random real facts
/// by Cedar and both engines: at least 100,000 decisions compared, most policies valid.
#[test]
fn engine_decides_as_cedar_does_over_the_expression_language() {
    let started = std::time::Instant::now();
    let compared = std::cell::Cell::new(0usize);
    let (validated, refused) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    // How often each way of showing a fact occurred: every one must be exercised.
    let shown: std::cell::RefCell<std::collections::BTreeMap<&str, usize>> = Default::default();
    let mut runner = TestRunner::new(Config { cases: 4_300, failure_persistence: None, ..Config::default() });
    let result = runner.run(&(policy_text(), pages()), |(text, pages)| {
        let Ok(policy) = compile(1, &text) else {
            refused.set(refused.get() + 1);
            return Ok(());
        };
        validated.set(validated.get() + 1);
        let presentation = policy.presentation();
        let since = presentation.installed_since_constants();
        let category = presentation.category_classes();
        for (way, happened) in [
            ("app id placeholder", !presentation.shows_app_id()),
            ("app id exact", presentation.shows_app_id()),
            ("group id placeholder", !presentation.shows_group_id()),
            ("installed_since intervals", since.is_some_and(|c| !c.is_empty())),
            ("installed_since exact", since.is_none()),
            ("category classes with patterns", category.is_some_and(|(_, patterns)| patterns > 0)),
            ("category classes with names", category.is_some_and(|(names, _)| names > 0)),
            ("category exact", category.is_none()),
        ] {
            *shown.borrow_mut().entry(way).or_default() += usize::from(happened);
        }
        compared.set(compared.get() + compare(&policy, &text, &pages)?);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    report(&format!(
        "differential: {} decisions compared, serving engine and audit engine against Cedar; {} random policy sets validated, {} refused ({:.1} s)",
        compared.get(),
        validated.get(),
        refused.get(),
        started.elapsed().as_secs_f64()
    ));
    report(&format!("differential: facts shown per validated policy set: {:?}", shown.borrow()));
    assert!(compared.get() >= 100_000, "only {} decisions compared", compared.get());
    for (way, count) in shown.borrow().iter() {
        assert!(*count * 20 >= validated.get(), "{way}: only {count} of {} policy sets", validated.get());
    }
    assert!(validated.get() >= 9 * refused.get(), "{} validated, {} refused", validated.get(), refused.get());
}

/// A policy's text without its comments.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut in_string = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_string = !in_string,
            '\\' if in_string => {
                code.push(c);
                if let Some(escaped) = chars.next() {
                    code.push(escaped);
                }
                continue;
            }
            '/' if !in_string && chars.peek() == Some(&'/') => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
                continue;
            }
            _ => {}
        }
        code.push(c);
    }
    code
}

/// The integer literals in a policy's code, each with its negation (it may follow a `-`).
fn integers_in(code: &str) -> BTreeSet<i64> {
    let mut found = BTreeSet::new();
    for run in code.split(|c: char| !c.is_ascii_digit()).filter(|r| !r.is_empty()) {
        if let Ok(n) = run.parse::<i64>() {
            found.extend([n, -n]);
        }
    }
    found
}

/// The string literals in a policy's code that are neither entity ids nor annotations.
fn strings_in(code: &str) -> BTreeSet<String> {
    let pieces: Vec<&str> = code.split('"').collect();
    pieces
        .iter()
        .enumerate()
        .skip(1)
        .step_by(2)
        .filter(|(i, _)| {
            let before = pieces.get(i - 1).map_or("", |b| b.trim_end());
            !before.ends_with("::") && !before.ends_with('(')
        })
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The ids of the entities of `type_name` a policy's code names.
fn entities_in(code: &str, type_name: &str) -> BTreeSet<String> {
    let prefix = format!("Consentry::{type_name}::\"");
    code.split(&prefix).skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string).collect()
}

/// Every combination of facts under every shipped policy (and the CLI's escaped-attribute
/// fixture): each field, app status, installation, installation date at and around each
/// constant in the text, category named in the text or not, app and group named or not, and
/// every subject. Both engines agree with Cedar on each.
#[test]
fn shipped_policies_agree_exhaustively() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("policies"))
        .unwrap_or_else(|e| unreachable!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let shipped = files.len();
    assert!(shipped >= 3, "{files:?}");
    files.push(root.join("crates/consentry/tests/fixtures/escaped-attribute/grandfathered-escaped.cedar"));
    let member = MemberId::parse("m1").unwrap_or_else(|e| unreachable!("{e}"));
    let (mut checked, mut permitted) = (0usize, 0usize);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| unreachable!("{e}"));
        let policy = compile(1, &text).unwrap_or_else(|e| unreachable!("{}: {e}", file.display()));
        let code = code_of(&text);
        let audit = Engine::new();
        let mut dates: BTreeSet<i64> = [i64::MIN, 0, 1_500_000_000, i64::MAX].into();
        for n in integers_in(&code) {
            dates.extend([n.checked_sub(1), Some(n), n.checked_add(1)].into_iter().flatten());
        }
        let mut categories = strings_in(&code);
        categories.extend(["analytics".to_string(), String::new()]);
        let mut apps = entities_in(&code, "App");
        apps.insert("app-a".into());
        let mut groups = entities_in(&code, "Group");
        groups.insert("g1".into());
        for app in &apps {
            for group in &groups {
                for status in [AppStatus::Active, AppStatus::Suspended, AppStatus::Banned] {
                    for installed in [false, true] {
                        for &installed_since in &dates {
                            for category in &categories {
                                let page = PageFacts {
                                    app: AppId::parse(app).unwrap_or_else(|e| unreachable!("{e}")),
                                    app_status: status,
                                    app_category: category.clone(),
                                    group: GroupId::parse(group).unwrap_or_else(|e| unreachable!("{e}")),
                                    installed,
                                    installed_since,
                                };
                                let mut served = serving().page(&policy, page.clone());
                                let mut audited = audit.page(&policy, page.clone());
                                for field in Field::ALL {
                                    let subjects: Vec<SubjectFacts> = if field.has_member_subject() {
                                        let mut all = Vec::new();
                                        for is_member in [false, true] {
                                            for role in [None, Some(Role::Member), Some(Role::Admin)] {
                                                for consented_profile in [false, true] {
                                                    all.push(SubjectFacts {
                                                        is_member,
                                                        role,
                                                        consented_profile,
                                                    });
                                                }
                                            }
                                        }
                                        all
                                    } else {
                                        vec![SubjectFacts::NONE]
                                    };
                                    for subject in subjects {
                                        let reference =
                                            naive_decide(&policy, &page, field, Some((&member, subject)))
                                                .ok();
                                        let context =
                                            format!("{} {field} {page:?} {subject:?}", file.display());
                                        assert_eq!(
                                            served.allows(field, subject).ok(),
                                            reference,
                                            "{context}"
                                        );
                                        assert_eq!(
                                            audited.allows(field, subject).ok(),
                                            reference,
                                            "{context}"
                                        );
                                        checked += 1;
                                        permitted += usize::from(reference == Some(true));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    report(&format!(
        "differential: {checked} decisions over {shipped} shipped policies and 1 fixture checked exhaustively"
    ));
    // Both allow and deny occur, so the comparison is not vacuous.
    assert!(permitted > 0 && permitted < checked, "{permitted} of {checked}");
}

/// Conditions that each exercise one corner of what the engine shows: facts reached through
/// the whole context, arithmetic and overflow, set operations, extreme constants, escaped
/// names, patterns that match everything or nothing, ids equal to the engine's placeholders.
const TRICKY_CONDITIONS: [&str; 34] = [
    // Long comparisons spelled every way round, negated, in a conditional, beside other facts.
    "!(context.installed_since <= 1522799999) && 1522800002 > context.installed_since",
    "if principal.status == \"active\" then 1522800000 <= context[\"installed_since\"] else !(context.installed_since != -1) || context.subject_role == \"member\"",
    "context == {installed: context.installed, installed_since: 1522800000, subject_is_member: context.subject_is_member, subject_role: context.subject_role, subject_consented_profile: context.subject_consented_profile}",
    "context != {installed: true, installed_since: 0, subject_is_member: true, subject_role: \"member\", subject_consented_profile: false}",
    "{a: context}.a.installed_since < 1522800000",
    "(if context.installed then context else context)[\"installed_since\"] >= 0",
    "context.installed_since + 1 > 1522800000",
    "context.installed_since - 1522800000 < 0",
    "context.installed_since * 2 == 0",
    "context.installed_since == context.installed_since",
    "[1522800000, -1].containsAny([context.installed_since])",
    "[context.installed_since].contains(1522800000)",
    "[1522800000, 0].containsAll([context.installed_since, 0])",
    "context.installed_since < -(-(5)) && context.installed_since > -(5)",
    "-9223372036854775808 < context.installed_since && context.installed_since < 9223372036854775807",
    "context.installed_since <= -9223372036854775808 || context.installed_since >= 9223372036854775807",
    "[-1, 0, 1].contains(context[\"installed\\u{5f}since\"])",
    "context has installed_since && context[\"\\u{69}nstalled_since\"] > 0",
    "if context.installed_since == 1 then context.installed_since != 2 else context.installed_since > 1522799999",
    "principal.category like \"*\"",
    "principal.category like \"\"",
    "principal[\"category\"] == \"\"",
    "principal.category != \"~other~\" && principal.category like \"soc*\"",
    "principal.category like \"soc\\*\"",
    "principal.category == principal.status",
    "[\"analytics\", \"\"].containsAny([principal.category])",
    "(if context.installed then principal else principal).category == \"analytics\"",
    "principal.category like \"*\\u{0}*\" || principal[\"c\\u{61}tegory\"] == \"\\u{0}\"",
    "principal == Consentry::App::\"app\"",
    "resource == Consentry::Group::\"group\"",
    "principal in [Consentry::App::\"app-a\", Consentry::App::\"app\"]",
    "resource is Consentry::Group in Consentry::Group::\"g1\"",
    "principal == principal && resource == resource",
    "principal.status like \"act*\" && context.subject_role like \"*m*\" && action in [Consentry::Action::\"member.name\", Consentry::Action::\"group_data\"]",
];

/// Each tricky condition, in a permit and in a forbid, over every installation date at and
/// around every constant, every category and every app and group (placeholders included).
#[test]
fn tricky_conditions_agree_on_every_fact_they_turn_on() {
    let categories: Vec<&str> = CATEGORIES.iter().chain(OTHER_CATEGORIES.iter()).copied().collect();
    let mut dates: BTreeSet<i64> = [5, -5, 2, 1_522_799_999].into();
    for c in CONSTANTS {
        dates.extend([c.checked_sub(1), Some(c), c.checked_add(1)].into_iter().flatten());
    }
    let member = MemberId::parse("m1").unwrap_or_else(|e| unreachable!("{e}"));
    let subject = SubjectFacts { is_member: true, role: Some(Role::Member), consented_profile: false };
    let mut checked = 0usize;
    for condition in TRICKY_CONDITIONS {
        let mut outcomes = BTreeSet::new();
        for text in [
            format!("permit (principal, action, resource) when {{ context.installed && ({condition}) }};"),
            format!(
                "permit (principal, action, resource);\nforbid (principal, action in Consentry::Action::\"profile\", resource)\n  unless {{ {condition} }};"
            ),
        ] {
            let policy = compile(1, &text).unwrap_or_else(|e| unreachable!("{text}\n{e}"));
            let audit = Engine::with_capacity(50);
            let mut i = 0usize;
            for &installed_since in &dates {
                for category in &categories {
                    i += 1;
                    let page = PageFacts {
                        app: AppId::parse(APPS[i % APPS.len()]).unwrap_or_else(|e| unreachable!("{e}")),
                        app_status: [AppStatus::Active, AppStatus::Banned][i / 7 % 2],
                        app_category: category.to_string(),
                        group: GroupId::parse(GROUPS[i % GROUPS.len()]).unwrap_or_else(|e| unreachable!("{e}")),
                        installed: !i.is_multiple_of(5),
                        installed_since,
                    };
                    for field in [Field::GroupName, Field::MemberName] {
                        let reference = naive_decide(&policy, &page, field, Some((&member, subject))).ok();
                        let context = format!("{text}\n{field} {page:?}");
                        assert_eq!(serving().page(&policy, page.clone()).allows(field, subject).ok(), reference, "{context}");
                        assert_eq!(audit.page(&policy, page.clone()).allows(field, subject).ok(), reference, "{context}");
                        outcomes.insert(reference);
                        checked += 1;
                    }
                }
            }
        }
        // Each condition is decided both ways somewhere, so none is compared vacuously.
        assert!(
            outcomes.contains(&Some(true)) && outcomes.contains(&Some(false)),
            "{condition}: {outcomes:?}"
        );
    }
    report(&format!("differential: {checked} decisions over {} tricky conditions", TRICKY_CONDITIONS.len()));
}

/// Issue 8: `context["installed\u{5f}since"]` is `context.installed_since` to Cedar.
#[test]
fn an_escaped_attribute_name_is_read_like_the_plain_one() {
    let text = include_str!("../../../policies/groups-2018-grandfathered.cedar")
        .replace("context.installed_since", r#"context["installed\u{5f}since"]"#);
    let policy = compile(1, &text).unwrap_or_else(|e| unreachable!("{e}"));
    let member = MemberId::parse("m1").unwrap_or_else(|e| unreachable!("{e}"));
    let subject = SubjectFacts { is_member: true, role: Some(Role::Member), consented_profile: false };
    for since in [1_500_000_000, 1_522_799_999, 1_522_800_000, 1_525_132_800] {
        let page = PageFacts {
            app: AppId::parse("app-a").unwrap_or_else(|e| unreachable!("{e}")),
            app_status: AppStatus::Active,
            app_category: "analytics".into(),
            group: GroupId::parse("g1").unwrap_or_else(|e| unreachable!("{e}")),
            installed: true,
            installed_since: since,
        };
        let cedar = naive_decide(&policy, &page, Field::MemberName, Some((&member, subject))).ok();
        assert_eq!(cedar, Some(since < 1_522_800_000), "{since}");
        let served = Engine::new().page(&policy, page.clone()).allows(Field::MemberName, subject).ok();
        assert_eq!(
            served, cedar,
            "installed since {since}: the engine says {served:?}, Cedar says {cedar:?}"
        );
    }
}

/// Issue 12's premise: under the grandfathered policy, installations on the same side of the
/// change share memoized decisions instead of each date being its own key.
#[test]
fn installations_on_the_same_side_of_a_constant_share_memoized_decisions() {
    let policy = compile(1, include_str!("../../../policies/groups-2018-grandfathered.cedar"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let engine = Engine::new();
    let subject = SubjectFacts { is_member: true, role: Some(Role::Member), consented_profile: false };
    let mut decisions = BTreeSet::new();
    for i in 0..1_000i64 {
        let page = PageFacts {
            app: AppId::parse(&format!("app-{i}")).unwrap_or_else(|e| unreachable!("{e}")),
            app_status: AppStatus::Active,
            app_category: format!("category-{}", i % 7),
            group: GroupId::parse(&format!("g-{i}")).unwrap_or_else(|e| unreachable!("{e}")),
            installed: true,
            // Half before the change, half after, every date distinct.
            installed_since: 1_522_800_000 + if i % 2 == 0 { -1 - i * 3_600 } else { i * 3_600 },
        };
        let allow = engine.page(&policy, page.clone()).allows(Field::MemberName, subject).ok();
        decisions.insert((page.installed_since < 1_522_800_000, allow));
    }
    // Two classes (before, and at or after the change), one memoized decision each.
    assert_eq!(engine.cache().len(), 2);
    assert_eq!(decisions, [(false, Some(false)), (true, Some(true))].into());
}
