//! A line diff of policy text against the active version (longest common subsequence), for
//! reviewers to read what a draft changes.

/// How a line of the diff relates the two texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Same,
    Removed,
    Added,
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffLine {
    pub change: Change,
    pub text: String,
}

impl DiffLine {
    pub(crate) fn marker(&self) -> &'static str {
        match self.change {
            Change::Same => " ",
            Change::Removed => "-",
            Change::Added => "+",
        }
    }

    pub(crate) fn class(&self) -> &'static str {
        match self.change {
            Change::Same => "same",
            Change::Removed => "removed",
            Change::Added => "added",
        }
    }
}

/// Texts whose line counts multiply beyond this are not diffed (the table would be too large).
const MAX_CELLS: usize = 4_000_000;

/// The lines of `old` and `new` in order, each kept, removed or added; `None` if the texts are
/// too long to diff.
pub(crate) fn lines(old: &str, new: &str) -> Option<Vec<DiffLine>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Common head and tail need no table.
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a.iter().skip(head).rev().zip(b.iter().skip(head).rev()).take_while(|(x, y)| x == y).count();
    let a_mid = a.get(head..a.len() - tail).unwrap_or_default();
    let b_mid = b.get(head..b.len() - tail).unwrap_or_default();
    let (n, m) = (a_mid.len(), b_mid.len());
    if (n + 1).saturating_mul(m + 1) > MAX_CELLS {
        return None;
    }
    // lcs[i][j]: the longest common subsequence of a_mid[i..] and b_mid[j..].
    let width = m + 1;
    let mut lcs = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let value = if a_mid.get(i) == b_mid.get(j) {
                lcs.get((i + 1) * width + j + 1).copied().unwrap_or(0) + 1
            } else {
                let down = lcs.get((i + 1) * width + j).copied().unwrap_or(0);
                let right = lcs.get(i * width + j + 1).copied().unwrap_or(0);
                down.max(right)
            };
            if let Some(cell) = lcs.get_mut(i * width + j) {
                *cell = value;
            }
        }
    }
    let line = |change, text: &str| DiffLine { change, text: text.to_string() };
    let mut out: Vec<DiffLine> = a.iter().take(head).map(|t| line(Change::Same, t)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        let (x, y) = (a_mid.get(i), b_mid.get(j));
        if x.is_some() && x == y {
            out.push(line(Change::Same, x.copied().unwrap_or_default()));
            i += 1;
            j += 1;
        } else if i < n
            && (j == m
                || lcs.get((i + 1) * width + j).copied().unwrap_or(0)
                    >= lcs.get(i * width + j + 1).copied().unwrap_or(0))
        {
            // Removals first, so a changed line reads as removed then added.
            out.push(line(Change::Removed, x.copied().unwrap_or_default()));
            i += 1;
        } else {
            out.push(line(Change::Added, y.copied().unwrap_or_default()));
            j += 1;
        }
    }
    out.extend(a.iter().skip(a.len() - tail).map(|t| line(Change::Same, t)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(diff: &[DiffLine]) -> String {
        diff.iter().map(|l| format!("{}{}\n", l.marker(), l.text)).collect()
    }

    #[test]
    fn a_changed_line_is_removed_then_added() {
        let diff = lines("permit\nwhen a\n;\n", "permit\nwhen b\n;\n").unwrap_or_default();
        assert_eq!(render(&diff), " permit\n-when a\n+when b\n ;\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Against a reference: keeping the unchanged and removed lines gives the old text,
        /// the unchanged and added ones the new, and the unchanged lines are a longest common
        /// subsequence (as long as the brute-force one).
        #[test]
        fn the_diff_rebuilds_both_texts_with_a_longest_common_part(
            old in proptest::collection::vec("[abc]", 0..9),
            new in proptest::collection::vec("[abc]", 0..9),
        ) {
            let (old_text, new_text) = (old.join("\n"), new.join("\n"));
            let diff = lines(&old_text, &new_text).unwrap_or_default();
            let side = |keep: Change| diff.iter().filter(|l| l.change == Change::Same || l.change == keep).map(|l| l.text.clone()).collect::<Vec<_>>();
            prop_assert_eq!(side(Change::Removed), old.clone());
            prop_assert_eq!(side(Change::Added), new.clone());
            let same = diff.iter().filter(|l| l.change == Change::Same).count();
            prop_assert_eq!(same, brute_force_lcs(&old, &new));
        }
    }

    fn brute_force_lcs(a: &[String], b: &[String]) -> usize {
        match (a.split_first(), b.split_first()) {
            (Some((x, a_rest)), Some((y, b_rest))) => {
                if x == y {
                    1 + brute_force_lcs(a_rest, b_rest)
                } else {
                    brute_force_lcs(a_rest, b).max(brute_force_lcs(a, b_rest))
                }
            }
            _ => 0,
        }
    }

    #[test]
    fn texts_too_large_are_not_diffed() {
        let old: String = (0..3_000).map(|i| format!("a{i}\n")).collect();
        let new: String = (0..3_000).map(|i| format!("b{i}\n")).collect();
        assert_eq!(lines(&old, &new), None);
        assert!(lines(&old, &old).is_some_and(|d| d.iter().all(|l| l.change == Change::Same)));
    }
}
