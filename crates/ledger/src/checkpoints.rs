//! The `checkpoints` file the ledger keeps (one signed line per checkpoint, appended and
//! synced) and the `repairs` file `repair` appends to: reading them on open and in `repair`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::seal::Checkpoint;
use crate::LedgerError;

pub(crate) const CHECKPOINTS_FILE: &str = "checkpoints";
pub(crate) const REPAIRS_FILE: &str = "repairs";

/// One whole line of the checkpoints file.
pub(crate) struct KeptLine {
    /// 1-based.
    pub number: usize,
    pub offset: u64,
    pub checkpoint: Result<Checkpoint, String>,
}

/// How the checkpoints file ends when its last line has no newline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// A prefix of a line a crash left while it was written (never handed out): cut on open.
    Torn { offset: u64 },
    /// A whole checkpoint without its newline (the crash hit just before it): completed on open.
    Unterminated,
    /// A whole checkpoint followed by a byte other than a newline: altered.
    Damaged { offset: u64 },
}

pub(crate) struct KeptCheckpoints {
    pub path: PathBuf,
    pub lines: Vec<KeptLine>,
    pub unfinished: Option<Unfinished>,
}

impl KeptCheckpoints {
    /// The first line that is not a valid signed checkpoint.
    pub(crate) fn first_bad(&self) -> Option<(&KeptLine, &str)> {
        self.lines.iter().find_map(|l| l.checkpoint.as_ref().err().map(|e| (l, e.as_str())))
    }

    /// The checkpoint covering the most records among lines from `first_line` (1-based) on
    /// whose signature is the ledger's; a line that claims more but is not signed by `key` is
    /// returned as an error (it was altered).
    pub(crate) fn highest_from(
        &self,
        first_line: usize,
        key: &VerifyingKey,
    ) -> Result<Option<(usize, &Checkpoint)>, (&KeptLine, String)> {
        let mut candidates: Vec<(&KeptLine, &Checkpoint)> = self
            .lines
            .iter()
            .filter(|l| l.number >= first_line)
            .filter_map(|l| l.checkpoint.as_ref().ok().map(|c| (l, c)))
            .collect();
        candidates.sort_by_key(|(_, c)| std::cmp::Reverse(c.seq));
        match candidates.first() {
            Some((line, checkpoint)) => match checkpoint.check_signature(key) {
                Ok(()) => Ok(Some((line.number, checkpoint))),
                Err(reason) => Err((line, reason)),
            },
            None => Ok(None),
        }
    }
}

/// Reads the checkpoints file in `dir` (empty if there is none). Lines are checked for form
/// only: signatures cost ~50 µs each and the file grows for ever, so opening checks the
/// signature only of a line that would make it refuse (`verify` checks every one).
pub(crate) fn read(dir: &Path) -> Result<KeptCheckpoints, LedgerError> {
    let path = dir.join(CHECKPOINTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(LedgerError::io(&path, e)),
    };
    let parse = |line: &[u8]| -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(line).map_err(|_| "the line is not text".to_string())?;
        Checkpoint::parse_form(text)
    };
    let mut lines = Vec::new();
    let mut unfinished = None;
    let mut offset = 0usize;
    let mut rest: &[u8] = &bytes;
    while !rest.is_empty() {
        match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let line = rest.get(..end).unwrap_or_default();
                lines.push(KeptLine {
                    number: lines.len() + 1,
                    offset: offset as u64,
                    checkpoint: parse(line),
                });
                offset += end + 1;
                rest = rest.get(end + 1..).unwrap_or_default();
            }
            None => {
                let without_last = rest.get(..rest.len() - 1).unwrap_or_default();
                unfinished = Some(if parse(rest).is_ok() {
                    Unfinished::Unterminated
                } else if !without_last.is_empty() && parse(without_last).is_ok() {
                    Unfinished::Damaged { offset: offset as u64 }
                } else {
                    Unfinished::Torn { offset: offset as u64 }
                });
                if unfinished == Some(Unfinished::Unterminated) {
                    lines.push(KeptLine {
                        number: lines.len() + 1,
                        offset: offset as u64,
                        checkpoint: parse(rest),
                    });
                }
                break;
            }
        }
    }
    Ok(KeptCheckpoints { path, lines, unfinished })
}

/// How many checkpoint lines the last repair left behind it: checkpoints on those lines may
/// cover records the repair could not keep, so opening no longer holds the ledger to them
/// (`verify` still does). 0 when the ledger was never repaired.
pub(crate) fn lines_before_last_repair(dir: &Path) -> Result<usize, LedgerError> {
    let path = dir.join(REPAIRS_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LedgerError::io(&path, e)),
    };
    // A line that does not read as a repair counts for nothing: the stricter rule applies.
    Ok(text
        .lines()
        .filter(|l| l.starts_with("repair v1 "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("checkpoints=")))
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or(0))
}

/// The most recent checkpoint kept in `dir` whose line is well formed and signed by the
/// ledger's key (`None` if there is none), for a health view. Reads the whole file.
pub fn last_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, LedgerError> {
    let key = crate::seal::read_verifying_key(dir)?;
    let kept = read(dir)?;
    Ok(kept
        .lines
        .into_iter()
        .rev()
        .filter_map(|line| line.checkpoint.ok())
        .find(|checkpoint| checkpoint.check_signature(&key).is_ok()))
}
