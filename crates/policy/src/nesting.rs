//! How deeply policy text nests, bounded before Cedar sees it: Cedar's parser, validator and
//! evaluator recurse once per level, and text nested too deeply overflows a thread's stack,
//! which aborts the whole process.
//!
//! The scanner skips strings and comments and counts, per rule, two things:
//! - brackets (`(`, `[`, `{`) open at once: at most [`MAX_BRACKETS`];
//! - an upper bound on the depth of the rule's expression tree: a bracket group is one level
//!   more than the deepest group inside it plus every operator at its own level (`&&`, `||`,
//!   comparisons, `+`, `-`, `*`, `!`, `.`, `if`, `has`, `like`, `is`, `in`, `when`, `unless`
//!   each add at most one node on any path). At most [`MAX_DEPTH`].
//!
//! Both bounds keep every accepted policy shallow enough for Cedar to parse on the compiler's
//! thread and to evaluate on an ordinary 2 MiB thread (a serving worker) with room to spare.

/// Brackets open at once in one rule.
pub const MAX_BRACKETS: usize = 64;

/// The bound on one rule's expression depth (operators on a path, plus brackets).
pub const MAX_DEPTH: usize = 200;

/// Why the text was refused: the byte offset it points at and what is wrong.
pub(crate) type TooDeep = (usize, String);

/// One bracket group being scanned.
#[derive(Default)]
struct Group {
    /// Operators at this group's own level.
    operators: usize,
    /// The depth bound of the deepest group closed inside this one.
    deepest: usize,
}

const OPERATOR_WORDS: [&str; 7] = ["if", "has", "like", "is", "in", "when", "unless"];

/// Checks both bounds over every rule of `text`. Text that is not valid Cedar is left for
/// the parser to refuse: the scanner only bounds what the parser would have to recurse over.
pub(crate) fn check(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut groups: Vec<Group> = vec![Group::default()];
    let mut rule_start: Option<usize> = None;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        let mut operator = false;
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
            b';' if groups.len() == 1 => {
                finish_rule(&mut groups, &mut rule_start)?;
            }
            b'&' | b'|' | b'=' if next == Some(byte) => {
                operator = true;
                width = 2;
            }
            b'!' | b'<' | b'>' => {
                operator = true;
                width = if next == Some(b'=') { 2 } else { 1 };
            }
            b'+' | b'-' | b'*' | b'.' => operator = true,
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
                    i += 1;
                }
                let word = text.get(start..i).unwrap_or_default();
                rule_start.get_or_insert(start);
                if OPERATOR_WORDS.contains(&word) {
                    if let Some(group) = groups.last_mut() {
                        group.operators += 1;
                    }
                }
                continue;
            }
            _ => {}
        }
        if operator {
            rule_start.get_or_insert(i);
            if let Some(group) = groups.last_mut() {
                group.operators += 1;
            }
        }
        i += width;
    }
    // The last rule may lack its `;` (the parser says so); brackets left open count as closed.
    while groups.len() > 1 {
        close(&mut groups);
    }
    finish_rule(&mut groups, &mut rule_start)
}

/// Closes the innermost bracket group (a stray closing bracket closes nothing): its depth
/// bound becomes a candidate for its parent's deepest group.
fn close(groups: &mut Vec<Group>) {
    if groups.len() < 2 {
        return;
    }
    if let Some(closed) = groups.pop() {
        let depth = closed.operators + closed.deepest + 1;
        if let Some(parent) = groups.last_mut() {
            parent.deepest = parent.deepest.max(depth);
        }
    }
}

/// Ends a rule at its `;`: checks its depth bound and starts the next rule afresh.
fn finish_rule(groups: &mut [Group], rule_start: &mut Option<usize>) -> Result<(), TooDeep> {
    if let Some(top) = groups.first_mut() {
        let depth = top.operators + top.deepest;
        if depth > MAX_DEPTH {
            return Err((
                rule_start.unwrap_or(0),
                format!(
                    "nested too deeply: this rule's expression is up to {depth} levels deep, at most \
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
        let ok = format!("// first\n{}", rule(&vec!["true"; 150].join(" && ")));
        assert_eq!(check(&ok), Ok(()));
        let long = format!("{ok}\n{}", rule(&vec!["true"; 250].join(" || ")));
        let (offset, message) = check(&long).err().unwrap_or_default();
        assert_eq!(long.get(offset..).map(|r| r.starts_with("permit")), Some(true));
        assert_eq!(long.get(..offset).map(|b| b.matches('\n').count()), Some(2));
        assert!(message.contains("251 levels deep, at most 200"), "{message}");
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
