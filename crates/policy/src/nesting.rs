//! How deeply policy text nests, bounded before Cedar sees it: Cedar's parser, validator and
//! evaluator recurse once per level, and text nested too deeply overflows a thread's stack,
//! which aborts the whole process.
//!
//! The scanner skips strings and comments and bounds, per rule:
//! - brackets (`(`, `[`, `{`) open at once: at most [`MAX_BRACKETS`];
//! - the depth of the rule's expression tree, from above: at most [`MAX_DEPTH`]. Within a
//!   bracket group, a path from the root down passes through at most one chain of operators
//!   of each precedence level (`||`, `&&`, relations, `+`/`-`, `*`, then unary and member
//!   access), because a looser operator starts a new operand: the bound adds the longest
//!   chain of each level, every `if`, `when` and `unless` (they wrap everything after them),
//!   and one more than the deepest group inside. Operators Cedar expands into two nodes
//!   (`!=` into `!(==)`, `has a.b` into `has a && ….a has b`) count twice; a rule adds four
//!   levels for the conjunction of its scope and conditions.
//!
//! Both bounds keep every accepted policy shallow enough for Cedar to parse on the compiler's
//! thread and to evaluate on an ordinary 2 MiB thread (a serving worker) with room to spare.

/// Brackets open at once in one rule.
pub const MAX_BRACKETS: usize = 64;

/// The bound on the depth of one rule's expression tree.
pub const MAX_DEPTH: usize = 200;

/// Why the text was refused: the byte offset it points at and what is wrong.
pub(crate) type TooDeep = (usize, String);

/// Precedence levels, loosest first.
const OR: usize = 0;
const AND: usize = 1;
const RELATION: usize = 2;
const SUM: usize = 3;
const PRODUCT: usize = 4;
const UNARY: usize = 5;
const LEVELS: usize = 6;

/// Levels a rule adds around its conditions: the conjunction of its three scope constraints
/// and its conditions, and the `!` of an `unless`.
const RULE_LEVELS: usize = 4;

/// One bracket group being scanned.
#[derive(Default)]
struct Group {
    /// Per level: operators in the chain of the current operand, and the longest chain so far.
    chain: [usize; LEVELS],
    longest: [usize; LEVELS],
    /// `if`, `when` and `unless`: each is one more level around all that follows it.
    wrapping: usize,
    /// The depth bound of the deepest group closed inside this one.
    deepest: usize,
}

impl Group {
    /// An operator of `level`. A binary one ends the operands of every tighter level (they are
    /// its siblings, not its descendants); a unary one continues them.
    fn operator(&mut self, level: usize, count: usize, binary: bool) {
        if binary {
            self.end_chains(level + 1);
        }
        if let Some(chain) = self.chain.get_mut(level) {
            *chain += count;
        }
    }

    /// Ends the chains of `from` and every tighter level.
    fn end_chains(&mut self, from: usize) {
        for (chain, longest) in self.chain.iter_mut().zip(self.longest.iter_mut()).skip(from) {
            *longest = (*longest).max(*chain);
            *chain = 0;
        }
    }

    /// The bound on the depth of this group's expression.
    fn depth(&self) -> usize {
        let chains: usize = self.chain.iter().zip(self.longest.iter()).map(|(c, l)| *c.max(l)).sum();
        chains + self.wrapping + self.deepest
    }
}

/// Checks both bounds over every rule of `text`. Text that is not valid Cedar is left for
/// the parser to refuse: the scanner only bounds what the parser would have to recurse over.
pub(crate) fn check(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut groups: Vec<Group> = vec![Group::default()];
    let mut rule_start: Option<usize> = None;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        // (level, how many nodes, binary) of an operator found here, and its width.
        let mut operator: Option<(usize, usize, bool)> = None;
        let mut width = 1;
        match byte {
            b'/' if next == Some(b'/') => {
                while bytes.get(i).is_some_and(|b| *b != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                // A string: skip to its closing quote; `\` escapes the next character.
                rule_start.get_or_insert(i);
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Ok(()),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'(' | b'[' | b'{' => {
                rule_start.get_or_insert(i);
                groups.push(Group::default());
                if groups.len() - 1 > MAX_BRACKETS {
                    return Err((
                        i,
                        format!("nested too deeply: more than {MAX_BRACKETS} brackets open at once"),
                    ));
                }
            }
            b')' | b']' | b'}' => close(&mut groups),
            b';' if groups.len() == 1 => finish_rule(&mut groups, &mut rule_start)?,
            // Elements of a set, a record, an argument list or a scope are siblings.
            b',' => {
                if let Some(group) = groups.last_mut() {
                    group.end_chains(OR);
                }
            }
            b'|' if next == Some(b'|') => (operator, width) = (Some((OR, 1, true)), 2),
            b'&' if next == Some(b'&') => (operator, width) = (Some((AND, 1, true)), 2),
            b'=' if next == Some(b'=') => (operator, width) = (Some((RELATION, 1, true)), 2),
            b'!' if next == Some(b'=') => (operator, width) = (Some((RELATION, 2, true)), 2),
            b'<' | b'>' => {
                operator = Some((RELATION, 1, true));
                width = if next == Some(b'=') { 2 } else { 1 };
            }
            b'+' => operator = Some((SUM, 1, true)),
            // Binary or unary: counted at the looser level, ending no chain.
            b'-' => operator = Some((SUM, 1, false)),
            b'*' => operator = Some((PRODUCT, 1, true)),
            b'!' | b'.' => operator = Some((UNARY, 1, false)),
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                    i += 1;
                }
                rule_start.get_or_insert(start);
                let found = match text.get(start..i).unwrap_or_default() {
                    "in" | "is" | "like" => Some((RELATION, 1, true)),
                    "has" => Some((RELATION, 2, true)),
                    "if" | "when" | "unless" => {
                        if let Some(group) = groups.last_mut() {
                            group.wrapping += 1;
                        }
                        None
                    }
                    _ => None,
                };
                if let (Some((level, count, binary)), Some(group)) = (found, groups.last_mut()) {
                    group.operator(level, count, binary);
                }
                continue;
            }
            _ => {}
        }
        if let (Some((level, count, binary)), Some(group)) = (operator, groups.last_mut()) {
            rule_start.get_or_insert(i);
            group.operator(level, count, binary);
        }
        i += width;
    }
    // The last rule may lack its `;` (the parser says so); brackets left open count as closed.
    while groups.len() > 1 {
        close(&mut groups);
    }
    finish_rule(&mut groups, &mut rule_start)
}

/// Closes the innermost bracket group (a stray closing bracket closes nothing): one level
/// more than its depth bound is a candidate for its parent's deepest group.
fn close(groups: &mut Vec<Group>) {
    if groups.len() < 2 {
        return;
    }
    if let Some(closed) = groups.pop() {
        let depth = closed.depth() + 1;
        if let Some(parent) = groups.last_mut() {
            parent.deepest = parent.deepest.max(depth);
        }
    }
}

/// Ends a rule at its `;`: checks its depth bound and starts the next rule afresh.
fn finish_rule(groups: &mut [Group], rule_start: &mut Option<usize>) -> Result<(), TooDeep> {
    if let Some(top) = groups.first_mut() {
        let depth = top.depth() + RULE_LEVELS;
        if depth > MAX_DEPTH {
            return Err((
                rule_start.unwrap_or(0),
                format!(
                    "nested too deeply: this rule's expression may be {depth} levels deep, at most \
                     {MAX_DEPTH} (split long chains of && or || into separate rules)"
                ),
            ));
        }
        *top = Group::default();
    }
    *rule_start = None;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(body: &str) -> String {
        format!("permit (principal, action, resource) when {{ {body} }};")
    }

    #[test]
    fn shipped_policies_are_far_from_the_bounds() {
        for text in [
            include_str!("../../../policies/legacy-2017.cedar"),
            include_str!("../../../policies/groups-2018.cedar"),
            include_str!("../../../policies/groups-2018-grandfathered.cedar"),
        ] {
            assert_eq!(check(text), Ok(()));
        }
    }

    #[test]
    fn brackets_are_counted_up_to_the_limit_and_refused_beyond() {
        let at_limit = rule(&format!("{}true{}", "(".repeat(MAX_BRACKETS - 1), ")".repeat(MAX_BRACKETS - 1)));
        assert_eq!(check(&at_limit), Ok(()));
        let beyond = rule(&format!("{}true{}", "(".repeat(MAX_BRACKETS), ")".repeat(MAX_BRACKETS)));
        let (offset, message) = check(&beyond).err().unwrap_or_default();
        // The `{` of `when` is the first bracket: the refused one is the 64th `(` after it.
        assert_eq!(beyond.get(offset..offset + 1), Some("("));
        assert_eq!(beyond.get(..offset).map(|b| b.matches('(').count()), Some(MAX_BRACKETS));
        assert!(message.contains("brackets"), "{message}");
    }

    #[test]
    fn a_long_chain_is_refused_at_the_start_of_its_rule() {
        // 150 conditions: a chain of 149 `&&`, one `.` each, `when`, its braces, the rule.
        let ok = format!("// first\n{}", rule(&vec!["context.installed"; 150].join(" && ")));
        assert_eq!(check(&ok), Ok(()));
        let long = format!("{ok}\n{}", rule(&vec!["principal.status != \"x\""; 200].join(" || ")));
        let (offset, message) = check(&long).err().unwrap_or_default();
        assert_eq!(long.get(offset..).map(|r| r.starts_with("permit")), Some(true));
        assert_eq!(long.get(..offset).map(|b| b.matches('\n').count()), Some(2));
        // 199 `||`, then `!=` (two nodes) and `.` in an operand, `when`, braces, the rule.
        assert!(message.contains("may be 208 levels deep, at most 200"), "{message}");
    }

    #[test]
    fn strings_and_comments_do_not_count() {
        let noisy = rule(&format!(
            "principal.category == \"{}\\\"{}\" // {}\n && true",
            "(".repeat(500),
            "&&".repeat(500),
            "[".repeat(500)
        ));
        assert_eq!(check(&noisy), Ok(()));
    }

    #[test]
    fn each_rule_has_its_own_bound() {
        let many = rule(&vec!["true"; 100].join(" && ")).repeat(50);
        assert_eq!(check(&many), Ok(()));
    }

    #[test]
    fn unterminated_text_is_left_to_the_parser() {
        assert_eq!(check("permit (principal, action, resource) when { \"open"), Ok(()));
        assert_eq!(check("permit ((((("), Ok(()));
        assert_eq!(check(")))) permit"), Ok(()));
    }
}
