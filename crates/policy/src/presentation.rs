//! What a policy reads, found in Cedar's parsed form of it (never in its text), and how the
//! engine presents facts in consequence.
//!
//! The engine memoizes decisions by the attributes it shows Cedar. It shows a fact as it is,
//! unless this analysis proves that no rule can tell it apart from a representative: then it
//! shows the representative, and every fact in the same class shares one memoized decision.
//! - app and group ids: Cedar can only compare an entity with another entity. The App
//!   principal and a Group or Member resource are of different types and have no parents, so
//!   an id matters only when some rule names an entity of its type (or uses `principal` or
//!   `resource` as a value, which is not worth proving more about): otherwise a placeholder.
//! - `installed_since`: when every use compares it (`==`, `!=`, `<`, `<=`, `>`, `>=`, or a set
//!   literal's `contains`) with a Long constant, each comparison's outcome depends only on
//!   which interval between those constants the value falls in (or which constant it equals),
//!   so one member of that interval stands for all of it.
//! - the app's `category`: when every use compares it (`==`, `!=`, a set literal's `contains`)
//!   with a string literal or matches it with `like`, a category equal to no literal and
//!   matching no pattern is shown as one fixed string that also equals none and matches none.
//!
//! Anything the analysis does not recognise (an unknown operator, a template slot, the whole
//! `context` used as a value, arithmetic on `installed_since`, …) makes the facts it could
//! reach shown as they are: the analysis may only lose sharing, never change a decision.

use std::collections::BTreeSet;

use consentry_types::{AppId, GroupId};
use serde_json::{Map, Value};

use crate::request::PageFacts;

/// How `installed_since` is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinceView {
    Exact,
    /// Every use compares it with one of these constants (sorted, distinct; empty when no rule
    /// reads it): shown as a fixed member of its class.
    Intervals(Vec<i64>),
}

/// How the app's category is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CategoryView {
    Exact,
    /// Every use compares it with one of `names` or matches it with one of `patterns`; a
    /// category that equals no name and matches no pattern is shown as `other`, which does
    /// neither either.
    Classes {
        names: BTreeSet<String>,
        patterns: Vec<Pattern>,
        other: String,
    },
}

/// What the engine shows Cedar for one compiled policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// Show the real app id (else a placeholder).
    pub(crate) app: bool,
    /// Show the real group id (else a placeholder).
    pub(crate) group: bool,
    pub(crate) installed_since: SinceView,
    pub(crate) category: CategoryView,
}

/// The app id shown when no rule can tell apps apart.
fn placeholder_app() -> AppId {
    AppId::parse("app").unwrap_or_else(|_| unreachable!("a valid id"))
}

/// The group id shown when no rule can tell groups apart.
fn placeholder_group() -> GroupId {
    GroupId::parse("group").unwrap_or_else(|_| unreachable!("a valid id"))
}

impl Presentation {
    /// Whether Cedar is shown the real app id (else a placeholder: no rule can tell apps apart).
    pub fn shows_app_id(&self) -> bool {
        self.app
    }

    /// Whether Cedar is shown the real group id (else a placeholder).
    pub fn shows_group_id(&self) -> bool {
        self.group
    }

    /// The constants the rules compare `installed_since` with, when it is shown as the
    /// representative of its interval between them (none: no rule reads it); `None` when it
    /// is shown as it is.
    pub fn installed_since_constants(&self) -> Option<&[i64]> {
        match &self.installed_since {
            SinceView::Exact => None,
            SinceView::Intervals(constants) => Some(constants),
        }
    }

    /// How many category names and `like` patterns the rules use, when a category that equals
    /// none and matches none is shown as one fixed string; `None` when it is shown as it is.
    pub fn category_classes(&self) -> Option<(usize, usize)> {
        match &self.category {
            CategoryView::Exact => None,
            CategoryView::Classes { names, patterns, .. } => Some((names.len(), patterns.len())),
        }
    }

    /// Everything shown as it is: what the engine does with a policy it does not understand.
    pub(crate) const EXACT: Presentation = Presentation {
        app: true,
        group: true,
        installed_since: SinceView::Exact,
        category: CategoryView::Exact,
    };

    /// The facts to show Cedar in place of `page`: equal to `page` wherever a rule could
    /// tell the difference.
    pub(crate) fn present(&self, mut page: PageFacts) -> PageFacts {
        if !self.app {
            page.app = placeholder_app();
        }
        if !self.group {
            page.group = placeholder_group();
        }
        if let SinceView::Intervals(constants) = &self.installed_since {
            page.installed_since = representative(constants, page.installed_since);
        }
        if let CategoryView::Classes { names, patterns, other } = &self.category {
            let named =
                names.contains(&page.app_category) || patterns.iter().any(|p| p.matches(&page.app_category));
            if !named {
                page.app_category.clone_from(other);
            }
        }
        page
    }
}

/// The member of `value`'s class that stands for it: the constant itself when `value` equals
/// one, else a fixed member of the open interval between the constants around it.
fn representative(constants: &[i64], value: i64) -> i64 {
    match constants.binary_search(&value) {
        Ok(_) => value,
        // Below the first constant: the one just below it (`value` < it, so no overflow).
        Err(0) => constants.first().map_or(0, |first| first.checked_sub(1).unwrap_or(value)),
        // Above constant i-1 (and below constant i, if any): the one just above constant i-1.
        Err(i) => constants.get(i - 1).and_then(|below| below.checked_add(1)).unwrap_or(value),
    }
}

/// One element of a `like` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternElement {
    Char(char),
    Wildcard,
}

/// A `like` pattern: `*` matches any sequence of characters, anything else itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern(Vec<PatternElement>);

impl Pattern {
    /// From the pattern of Cedar's JSON form: `"Wildcard"` or `{"Literal": "text"}`.
    fn from_json(elements: &[Value]) -> Option<Pattern> {
        let mut pattern = Vec::new();
        for element in elements {
            match element {
                Value::String(w) if w == "Wildcard" => pattern.push(PatternElement::Wildcard),
                Value::Object(literal) if literal.len() == 1 => {
                    let text = literal.get("Literal")?.as_str()?;
                    pattern.extend(text.chars().map(PatternElement::Char));
                }
                _ => return None,
            }
        }
        Some(Pattern(pattern))
    }

    /// Whether `text` matches, as Cedar's `like` decides it (over characters).
    pub(crate) fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        // The last wildcard seen, and the text position it was tried up to.
        let mut retry: Option<(usize, usize)> = None;
        while t < text.len() {
            match (self.0.get(p), text.get(t)) {
                (Some(PatternElement::Wildcard), _) => {
                    retry = Some((p, t));
                    p += 1;
                }
                (Some(PatternElement::Char(c)), Some(x)) if c == x => {
                    p += 1;
                    t += 1;
                }
                _ => match retry {
                    Some((star, tried)) => {
                        // Let the wildcard swallow one more character and try again.
                        retry = Some((star, tried + 1));
                        p = star + 1;
                        t = tried + 1;
                    }
                    None => return false,
                },
            }
        }
        self.0.get(p..).is_some_and(|rest| rest.iter().all(|e| *e == PatternElement::Wildcard))
    }
}

/// What the walk over every rule found.
#[derive(Debug, Default)]
struct Reads {
    /// Something the walk does not recognise: show every fact as it is.
    unknown: bool,
    app: bool,
    group: bool,
    since_exact: bool,
    since_constants: BTreeSet<i64>,
    category_exact: bool,
    category_names: BTreeSet<String>,
    category_patterns: Vec<Pattern>,
}

/// Deeper than the nesting bound allows: never reached for text that `compile` accepted.
const WALK_LIMIT: usize = 4_096;

/// Strings tried as the category shown for "none of the named ones".
const OTHER_CATEGORIES: [&str; 4] = ["", "\u{0}", "~other~", "\u{10FFFF}"];

/// Analyses the JSON form (`Policy::to_json`) of every rule of a policy set.
pub(crate) fn analyse<'a>(rules: impl IntoIterator<Item = &'a Value>) -> Presentation {
    let mut reads = Reads::default();
    for rule in rules {
        reads.rule(rule);
    }
    reads.presentation()
}

impl Reads {
    fn presentation(self) -> Presentation {
        if self.unknown {
            return Presentation::EXACT;
        }
        let installed_since = if self.since_exact {
            SinceView::Exact
        } else {
            SinceView::Intervals(self.since_constants.into_iter().collect())
        };
        let category = if self.category_exact {
            CategoryView::Exact
        } else {
            let other = OTHER_CATEGORIES.iter().find(|c| {
                !self.category_names.contains(**c) && !self.category_patterns.iter().any(|p| p.matches(c))
            });
            match other {
                Some(other) => CategoryView::Classes {
                    names: self.category_names,
                    patterns: self.category_patterns,
                    other: (*other).to_string(),
                },
                None => CategoryView::Exact,
            }
        };
        Presentation { app: self.app, group: self.group, installed_since, category }
    }

    /// One rule: `{"effect", "principal", "action", "resource", "conditions", "annotations"}`.
    fn rule(&mut self, rule: &Value) {
        let Some(rule) = rule.as_object() else { return self.unknown = true };
        for (key, value) in rule {
            match key.as_str() {
                "effect" | "annotations" => {}
                "principal" | "action" | "resource" => self.scope(value),
                "conditions" => {
                    let Some(conditions) = value.as_array() else { return self.unknown = true };
                    for condition in conditions {
                        match condition.as_object().and_then(|c| only(c, &["kind", "body"])) {
                            Some(c) => match c.get("body") {
                                Some(body) => self.expr(body, 0),
                                None => self.unknown = true,
                            },
                            None => self.unknown = true,
                        }
                    }
                }
                _ => self.unknown = true,
            }
        }
    }

    /// A scope constraint: `{"op": "All" | "==" | "in" | "is", "entity", "entities",
    /// "entity_type", "in"}`; every entity it names counts as named.
    fn scope(&mut self, scope: &Value) {
        match scope {
            Value::Object(object) => {
                if let (Some(Value::String(type_name)), Some(Value::String(_))) =
                    (object.get("type"), object.get("id"))
                {
                    if object.len() == 2 {
                        return self.entity(type_name);
                    }
                }
                for (key, value) in object {
                    match key.as_str() {
                        "op" | "entity_type" => {}
                        "entity" | "entities" | "in" => self.scope(value),
                        _ => self.unknown = true,
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.scope(i)),
            _ => self.unknown = true,
        }
    }

    /// An entity named by a rule.
    fn entity(&mut self, type_name: &str) {
        match type_name {
            "Consentry::App" => self.app = true,
            "Consentry::Group" => self.group = true,
            "Consentry::Action" => {}
            // Members are refused by `compile`; any other type fails validation.
            _ => self.unknown = true,
        }
    }

    /// A literal value (`{"Value": …}`): entities anywhere inside it count as named.
    fn literal(&mut self, value: &Value) {
        match value {
            Value::Object(object) => {
                if let Some(entity) = object.get("__entity") {
                    match entity.get("type").and_then(Value::as_str) {
                        Some(type_name) => self.entity(type_name),
                        None => self.unknown = true,
                    }
                } else if object.contains_key("__extn") {
                    // An extension value (a decimal, an address): no entity inside.
                } else if let Some(Value::String(type_name)) = object.get("type") {
                    // The implicit form of an entity reference, `{"type", "id"}`.
                    self.entity(type_name);
                } else {
                    object.values().for_each(|v| self.literal(v));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.literal(v)),
            _ => {}
        }
    }

    /// An expression whose value may flow anywhere: every fact it reads is read exactly,
    /// unless it is one of the recognised comparisons.
    fn expr(&mut self, expr: &Value, depth: usize) {
        if depth > WALK_LIMIT {
            return self.unknown = true;
        }
        let depth = depth + 1;
        let Some((op, body)) = single(expr) else { return self.unknown = true };
        match op {
            "Value" => self.literal(body),
            "Var" => match body.as_str() {
                // The whole principal or resource as a value: its id may be compared.
                Some("principal") => self.app = true,
                Some("resource") => self.group = true,
                // The whole context as a value: `installed_since` goes with it.
                Some("context") => self.since_exact = true,
                Some("action") => {}
                _ => self.unknown = true,
            },
            "!" | "neg" | "isEmpty" => match operands(body, &["arg"]) {
                Some([arg]) => self.expr(arg, depth),
                _ => self.unknown = true,
            },
            "==" | "!=" | "<" | "<=" | ">" | ">=" => match operands(body, &["left", "right"]) {
                Some([left, right]) => self.comparison(op, left, right, depth),
                _ => self.unknown = true,
            },
            "contains" => match operands(body, &["left", "right"]) {
                Some([left, right]) => self.contains(left, right, depth),
                _ => self.unknown = true,
            },
            "in" | "&&" | "||" | "+" | "-" | "*" | "containsAll" | "containsAny" | "getTag" | "hasTag" => {
                match operands(body, &["left", "right"]) {
                    Some([left, right]) => {
                        self.expr(left, depth);
                        self.expr(right, depth);
                    }
                    _ => self.unknown = true,
                }
            }
            "." => match (operands(body, &["left", "attr"]), body.get("attr").and_then(Value::as_str)) {
                (Some([left, _]), Some(attr)) => self.attribute(left, &[attr], depth),
                _ => self.unknown = true,
            },
            "has" => {
                let path: Option<Vec<&str>> = match body.get("attr") {
                    Some(Value::String(attr)) => Some(vec![attr.as_str()]),
                    Some(Value::Array(attrs)) => attrs.iter().map(Value::as_str).collect(),
                    _ => None,
                };
                match (operands(body, &["left", "attr"]), path) {
                    // `has` on the first attribute never reads a value: records and entities
                    // have the same attributes whatever the facts. Further steps read the
                    // value of every attribute but the last.
                    (Some([left, _]), Some(path)) => {
                        let read = path.len().saturating_sub(1);
                        self.attribute(left, path.get(..read).unwrap_or_default(), depth);
                    }
                    _ => self.unknown = true,
                }
            }
            "like" => {
                let pattern =
                    body.get("pattern").and_then(Value::as_array).and_then(|p| Pattern::from_json(p));
                match (operands(body, &["left", "pattern"]), pattern) {
                    (Some([left, _]), Some(pattern)) if is_category(left) => {
                        self.category_patterns.push(pattern)
                    }
                    (Some([left, _]), Some(_)) => self.expr(left, depth),
                    _ => self.unknown = true,
                }
            }
            "is" => {
                let Some(object) = body.as_object().and_then(|o| only(o, &["left", "entity_type", "in"]))
                else {
                    return self.unknown = true;
                };
                let Some(left) = object.get("left") else { return self.unknown = true };
                match object.get("in") {
                    // `is` alone reads only the type of a variable.
                    None if single(left).is_some_and(|(op, _)| op == "Var") => {}
                    None => self.expr(left, depth),
                    Some(within) => {
                        self.expr(left, depth);
                        self.expr(within, depth);
                    }
                }
            }
            "if-then-else" => match operands(body, &["if", "then", "else"]) {
                Some([condition, then, otherwise]) => {
                    self.expr(condition, depth);
                    self.expr(then, depth);
                    self.expr(otherwise, depth);
                }
                _ => self.unknown = true,
            },
            "Set" => match body.as_array() {
                Some(items) => items.iter().for_each(|i| self.expr(i, depth)),
                None => self.unknown = true,
            },
            "Record" => match body.as_object() {
                Some(fields) => fields.values().for_each(|v| self.expr(v, depth)),
                None => self.unknown = true,
            },
            // An extension function: its name, then its arguments.
            _ => match body.as_array() {
                Some(arguments) => arguments.iter().for_each(|a| self.expr(a, depth)),
                None => self.unknown = true,
            },
        }
    }

    /// `left.a.b…` read along `path` (empty: `left` itself is only tested with `has`).
    fn attribute(&mut self, left: &Value, path: &[&str], depth: usize) {
        match (single(left), path.first()) {
            (_, None) if is_variable(left) => {}
            (Some(("Var", Value::String(var))), Some(first)) => match (var.as_str(), *first) {
                ("context", "installed_since") => self.since_exact = true,
                ("principal", "category") => self.category_exact = true,
                ("context" | "principal" | "resource" | "action", _) => {}
                _ => self.unknown = true,
            },
            _ => {
                // Anything else: whatever `left` reads flows on; by name, the attributes
                // read might be these two facts.
                self.expr(left, depth);
                if path.contains(&"installed_since") {
                    self.since_exact = true;
                }
                if path.contains(&"category") {
                    self.category_exact = true;
                }
            }
        }
    }

    /// `left op right` for a comparison operator.
    fn comparison(&mut self, op: &str, left: &Value, right: &Value, depth: usize) {
        for (fact, other) in [(left, right), (right, left)] {
            if is_installed_since(fact) {
                if let Some(constant) = long_constant(other) {
                    self.since_constants.insert(constant);
                    return;
                }
            }
            if is_category(fact) && (op == "==" || op == "!=") {
                if let Some(name) = string_literal(other) {
                    self.category_names.insert(name.to_string());
                    return;
                }
            }
        }
        self.expr(left, depth);
        self.expr(right, depth);
    }

    /// `left.contains(right)`: a set literal of constants holding a fact is `==` each of them.
    fn contains(&mut self, left: &Value, right: &Value, depth: usize) {
        if is_installed_since(right) {
            if let Some(constants) = set_of(left, long_constant) {
                self.since_constants.extend(constants);
                return;
            }
        }
        if is_category(right) {
            if let Some(names) = set_of(left, |e| string_literal(e).map(str::to_string)) {
                self.category_names.extend(names);
                return;
            }
        }
        self.expr(left, depth);
        self.expr(right, depth);
    }
}

/// The only key of a JSON object and its value: every expression has this form.
fn single(expr: &Value) -> Option<(&str, &Value)> {
    let object = expr.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// `object`, if it has no keys but `allowed`.
fn only<'a>(object: &'a Map<String, Value>, allowed: &[&str]) -> Option<&'a Map<String, Value>> {
    object.keys().all(|k| allowed.contains(&k.as_str())).then_some(object)
}

/// The values of exactly these keys, in order.
fn operands<'a, const N: usize>(body: &'a Value, keys: &[&str; N]) -> Option<[&'a Value; N]> {
    let object = body.as_object()?;
    if object.len() != N {
        return None;
    }
    let found: Vec<&Value> = keys.iter().map(|k| object.get(*k)).collect::<Option<_>>()?;
    found.try_into().ok()
}

fn is_variable(expr: &Value) -> bool {
    single(expr).is_some_and(|(op, _)| op == "Var")
}

/// `var.attr`, exactly.
fn is_attribute_of(expr: &Value, var: &str, attr: &str) -> bool {
    match single(expr) {
        Some((".", body)) => operands(body, &["left", "attr"]).is_some_and(|[left, name]| {
            name.as_str() == Some(attr) && single(left).is_some_and(|(op, v)| op == "Var" && v == var)
        }),
        _ => false,
    }
}

fn is_installed_since(expr: &Value) -> bool {
    is_attribute_of(expr, "context", "installed_since")
}

fn is_category(expr: &Value) -> bool {
    is_attribute_of(expr, "principal", "category")
}

/// A Long constant: a literal, or a literal negated any number of times (within i64).
fn long_constant(expr: &Value) -> Option<i64> {
    match single(expr)? {
        ("Value", value) => value.as_i64(),
        ("neg", body) => {
            let [arg] = operands(body, &["arg"])?;
            long_constant(arg)?.checked_neg()
        }
        _ => None,
    }
}

fn string_literal(expr: &Value) -> Option<&str> {
    match single(expr)? {
        ("Value", Value::String(s)) => Some(s),
        _ => None,
    }
}

/// The elements of a set literal, if every one is what `element` recognises.
fn set_of<T>(expr: &Value, element: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    match single(expr)? {
        ("Set", Value::Array(items)) => items.iter().map(element).collect(),
        // A set of plain values: wrap each as the literal expression it stands for.
        ("Value", Value::Array(items)) => items
            .iter()
            .map(|v| element(&Value::Object(Map::from_iter([("Value".to_string(), v.clone())]))))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representatives_stay_in_their_class() {
        let constants = [i64::MIN, -5, 0, 1_522_800_000, i64::MAX];
        for (value, expected) in [
            (i64::MIN, i64::MIN),
            (i64::MIN + 1, i64::MIN + 1),
            (-6, i64::MIN + 1),
            (-5, -5),
            (-4, -4),
            (-1, -4),
            (0, 0),
            (1, 1),
            (1_522_799_999, 1),
            (1_522_800_000, 1_522_800_000),
            (1_522_800_001, 1_522_800_001),
            (i64::MAX - 1, 1_522_800_001),
            (i64::MAX, i64::MAX),
        ] {
            assert_eq!(representative(&constants, value), expected, "{value}");
        }
        assert_eq!(representative(&[10], i64::MIN), 9);
        assert_eq!(representative(&[10], 11), 11);
        assert_eq!(representative(&[10], i64::MAX), 11);
        assert_eq!(representative(&[], 1_600_000_000), 0);
        assert_eq!(representative(&[], i64::MIN), 0);
    }

    fn shown(condition: &str) -> Presentation {
        let text = format!("permit (principal, action, resource) when {{ {condition} }};");
        crate::compile(1, &text).unwrap_or_else(|e| unreachable!("{text}: {e}")).presentation
    }

    #[test]
    fn the_grandfathered_policy_reads_one_date_and_no_identity_however_it_is_spelled() {
        let shipped = include_str!("../../../policies/groups-2018-grandfathered.cedar");
        for text in [
            shipped.to_string(),
            shipped.replace("context.installed_since", r#"context["installed\u{5f}since"]"#),
        ] {
            let shown = crate::compile(1, &text).unwrap_or_else(|e| unreachable!("{e}")).presentation;
            assert_eq!(shown.installed_since_constants(), Some(&[1_522_800_000][..]));
            assert_eq!(shown.category_classes(), Some((0, 0)));
            assert!(!shown.shows_app_id() && !shown.shows_group_id());
        }
    }

    #[test]
    fn comparisons_with_constants_are_classified_and_other_uses_are_not() {
        let since = |c: &str| shown(c).installed_since_constants().map(<[i64]>::to_vec);
        assert_eq!(
            since("context.installed_since >= -(-5) && 7 != context.installed_since"),
            Some(vec![5, 7])
        );
        assert_eq!(
            since("[3, -9223372036854775808].contains(context.installed_since)"),
            Some(vec![i64::MIN, 3])
        );
        assert_eq!(since("context has installed_since"), Some(vec![]));
        for exact in [
            "context.installed_since + 1 > 5",
            "context.installed_since < context.installed_since",
            "[5].containsAny([context.installed_since])",
            "context == context",
            "{a: context}.a.installed_since == 5",
            "context.installed_since == -(-9223372036854775808)",
        ] {
            assert_eq!(since(exact), None, "{exact}");
        }
        let category = |c: &str| shown(c).category_classes();
        assert_eq!(
            category("principal.category == \"a\" || principal[\"category\"] like \"b*\""),
            Some((1, 1))
        );
        assert_eq!(category("[\"a\", \"b\"].contains(principal.category)"), Some((2, 0)));
        assert_eq!(category("principal.category == principal.status"), None);
        // Every string matches `*`: no category can stand for the unnamed ones.
        assert_eq!(category("principal.category like \"*\""), None);
    }

    #[test]
    fn named_or_compared_entities_are_shown_as_they_are() {
        assert!(shown("principal == Consentry::App::\"a\"").shows_app_id());
        assert!(!shown("principal == Consentry::App::\"a\"").shows_group_id());
        assert!(shown("resource in Consentry::Group::\"g\"").shows_group_id());
        assert!(shown("[principal].contains(principal)").shows_app_id());
        assert!(!shown("resource is Consentry::Member && principal is Consentry::App").shows_app_id());
    }

    fn pattern(text: &str) -> Pattern {
        Pattern(
            text.chars()
                .map(|c| if c == '*' { PatternElement::Wildcard } else { PatternElement::Char(c) })
                .collect(),
        )
    }

    #[test]
    fn patterns_match_like_cedar_globs() {
        for (p, text, expected) in [
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*", "ba", false),
            ("*a", "ba", true),
            ("*a*b", "xxaxxb", true),
            ("*a*b", "xxaxxbx", false),
            ("a**b", "ab", true),
            ("*ab*ab", "abab", true),
            ("*ab*ab", "aab", false),
            ("soc*_*ment", "social_media_management", true),
            ("é*", "ecole", false),
            ("é*", "école", true),
            ("*\u{0}", "a\u{0}", true),
        ] {
            assert_eq!(pattern(p).matches(text), expected, "{p:?} like {text:?}");
        }
    }
}
