//! `verify`: re-reads every byte and reports OK or the first bad segment and record.

use std::fmt;
use std::path::Path;
use std::time::Instant as WallClock;

use consentry_types::{Instant, NodeId};

use crate::chain::{Chain, Step};
use crate::checkpoints::REPAIRS_FILE;
use crate::codec::{inspect, merkle_root, Dictionary, Inspected};
use crate::seal::{read_verifying_key, Checkpoint, Seal};
use crate::segment::seal_path;
use crate::streams::{streams, Stream};
use crate::LedgerError;

/// Where verification found the first problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: u64,
    /// The last good record's sequence number before the problem (0: none).
    pub after_record: u64,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {}, after record {}: {}", self.segment, self.after_record, self.reason)
    }
}

/// What `verify` read and found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: u64,
    pub records: u64,
    pub disclosures: u64,
    pub bytes: u64,
    pub checkpoints: u64,
    /// Bytes of a torn tail in the active segment (reported as a problem: a crash left them,
    /// and the next open cuts them, or they were altered).
    pub torn_bytes: u64,
    pub seconds: f64,
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verifies the ledger in `dir`: the hash chain frame by frame, record numbering, every
/// sealed segment against its signed seal (frame count, length, head, Merkle root), the
/// chaining of segments, and every signed checkpoint, plus any `extra_checkpoints` an
/// outside auditor kept.
pub fn verify(dir: &Path, extra_checkpoints: &[String]) -> Result<VerifyReport, LedgerError> {
    verify_stream(dir, Names::Any, extra_checkpoints)
}

/// Which node the checkpoints kept in a stream must name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Names<'a> {
    /// Not checked (a directory verified on its own).
    Any,
    /// This node's (lines without a node, from before it adopted a single-node ledger, too).
    Node(&'a NodeId),
    /// None: a single-node ledger not adopted yet.
    Unnamed,
}

pub(crate) fn verify_stream(
    dir: &Path,
    names: Names<'_>,
    extra_checkpoints: &[String],
) -> Result<VerifyReport, LedgerError> {
    let started = WallClock::now();
    let key = read_verifying_key(dir)?;
    let mut report = VerifyReport::default();
    let mut dictionary = Dictionary::default();
    let (mut head, mut next_seq, mut last_at) = ([0u8; 32], 1u64, Instant::from_millis(0));
    // The chain head after each record, for checkpoints.
    let mut heads_at: std::collections::HashMap<u64, [u8; 32]> = std::collections::HashMap::new();
    let wanted = match wanted_checkpoints(dir, &key, names, extra_checkpoints)? {
        Ok(wanted) => wanted,
        Err(problem) => {
            report.problem = Some(problem);
            return Ok(report);
        }
    };
    let needed: std::collections::HashSet<u64> = wanted.iter().map(|(_, c)| c.seq).collect();
    let fail = |report: &mut VerifyReport, segment: u64, after: u64, reason: String| {
        report.problem = Some(Problem { segment, after_record: after, reason });
    };
    let mut chain = Chain::open(dir)?;
    let (mut hashes, mut first_seq, mut last_seq) = (Vec::new(), 0u64, 0u64);
    loop {
        let step = match chain.step() {
            Ok(step) => step,
            Err(LedgerError::Damaged { segment, offset, reason, .. }) => {
                let reason = match offset {
                    Some(offset) => format!("at byte {offset}: {reason}"),
                    None => reason,
                };
                fail(&mut report, segment, next_seq - 1, reason);
                return Ok(finish(report, started));
            }
            Err(e) => return Err(e),
        };
        match step {
            Step::Frame(frame) => {
                let number = chain.segment();
                head = frame.stored_hash;
                match inspect(&frame.payload, &mut dictionary, last_at) {
                    Ok(Inspected::Names) => {}
                    Ok(Inspected::Disclosure { seq, at, disclosures }) => {
                        if seq != next_seq {
                            let reason =
                                format!("at byte {}: record {seq} where {next_seq} was due", frame.offset);
                            fail(&mut report, number, next_seq - 1, reason);
                            return Ok(finish(report, started));
                        }
                        next_seq += 1;
                        last_at = at;
                        first_seq = if first_seq == 0 { seq } else { first_seq };
                        last_seq = seq;
                        report.records += 1;
                        report.disclosures += disclosures;
                        if needed.contains(&seq) {
                            heads_at.insert(seq, head);
                        }
                    }
                    Err(e) => {
                        fail(&mut report, number, next_seq - 1, format!("at byte {}: {e}", frame.offset));
                        return Ok(finish(report, started));
                    }
                }
                hashes.push(frame.stored_hash);
            }
            Step::SegmentEnd(end) => {
                report.segments += 1;
                report.bytes += end.length + end.torn;
                if end.torn > 0 {
                    report.torn_bytes = end.torn;
                    let reason = format!(
                        "the last {} bytes (from byte {}) are not a whole record: a crash left them (opening the ledger cuts them) or they were altered",
                        end.torn, end.length
                    );
                    fail(&mut report, end.number, next_seq - 1, reason);
                    return Ok(finish(report, started));
                }
                if end.sealed {
                    let expected = Seal {
                        segment: end.number,
                        frames: hashes.len() as u64,
                        first_seq,
                        last_seq,
                        bytes: end.length,
                        previous: end.previous,
                        head,
                        merkle: merkle_root(&hashes),
                    };
                    if let Err(reason) = Seal::check(&seal_path(dir, end.number), Some(&key), &expected) {
                        fail(&mut report, end.number, next_seq - 1, reason);
                        return Ok(finish(report, started));
                    }
                }
                hashes.clear();
                first_seq = 0;
                last_seq = 0;
            }
            Step::End => break,
        }
    }
    match_checkpoints(dir, &wanted, &heads_at, next_seq - 1, &mut report);
    Ok(finish(report, started))
}

/// Checks every wanted checkpoint against the chain heads the walk kept (`last_seq`: the
/// last record walked).
pub(crate) fn match_checkpoints(
    dir: &Path,
    wanted: &[(String, Checkpoint)],
    heads_at: &std::collections::HashMap<u64, [u8; 32]>,
    last_seq: u64,
    report: &mut VerifyReport,
) {
    let repaired = dir.join(REPAIRS_FILE).exists();
    let note = if repaired {
        format!(" (the ledger was repaired since: see {})", dir.join(REPAIRS_FILE).display())
    } else {
        String::new()
    };
    for (origin, checkpoint) in wanted {
        report.checkpoints += 1;
        match heads_at.get(&checkpoint.seq) {
            Some(h) if *h == checkpoint.head => {}
            Some(_) => {
                let reason = format!(
                    "{origin} for record {} does not match: history was rewritten{note}",
                    checkpoint.seq
                );
                report.problem = Some(Problem { segment: 0, after_record: checkpoint.seq, reason });
                break;
            }
            None if checkpoint.seq == 0 => {}
            None => {
                let reason = format!(
                    "{origin} covers record {}, which the ledger no longer has{note}",
                    checkpoint.seq
                );
                report.problem = Some(Problem { segment: 0, after_record: last_seq, reason });
                break;
            }
        }
    }
}

/// The checkpoints a stream must still contain: those kept in it and those given, each
/// checked for its form and signature and for naming the stream's node.
pub(crate) fn wanted_checkpoints(
    dir: &Path,
    key: &ed25519_dalek::VerifyingKey,
    names: Names<'_>,
    extra_checkpoints: &[String],
) -> Result<Result<Vec<(String, Checkpoint)>, Problem>, LedgerError> {
    let mut wanted: Vec<(String, Checkpoint)> = Vec::new();
    let checkpoints_file = dir.join(crate::checkpoints::CHECKPOINTS_FILE);
    let kept = match std::fs::read(&checkpoints_file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                let reason = "the checkpoints file is not text: it was altered".to_string();
                return Ok(Err(Problem { segment: 0, after_record: 0, reason }));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LedgerError::io(&checkpoints_file, e)),
    };
    if !kept.is_empty() && (!kept.ends_with('\n') || kept.contains('\r')) {
        let reason = "the checkpoints file's last line is not whole: a crash left it (opening the ledger cuts it) or it was altered".to_string();
        return Ok(Err(Problem { segment: 0, after_record: 0, reason }));
    }
    for (origin, line) in kept
        .lines()
        .map(|l| ("checkpoints file", l))
        .chain(extra_checkpoints.iter().map(|l| ("given checkpoint", l.trim())))
    {
        if line.is_empty() && origin == "given checkpoint" {
            continue;
        }
        match Checkpoint::parse(line, key) {
            Ok(checkpoint) => {
                let named = checkpoint.node.as_ref();
                let wrong = match names {
                    Names::Any => None,
                    Names::Node(node) => named.filter(|n| *n != node),
                    Names::Unnamed => named,
                };
                if let Some(other) = wrong {
                    let reason = format!(
                        "{origin}: a checkpoint of node {other} is in the stream of {}: streams were swapped or renamed",
                        match names {
                            Names::Node(node) => node.to_string(),
                            _ => "the single-node ledger".to_string(),
                        }
                    );
                    return Ok(Err(Problem { segment: 0, after_record: 0, reason }));
                }
                wanted.push((origin.to_string(), checkpoint))
            }
            Err(reason) => {
                return Ok(Err(Problem {
                    segment: 0,
                    after_record: 0,
                    reason: format!("{origin}: {reason}"),
                }));
            }
        }
    }
    Ok(Ok(wanted))
}

fn finish(mut report: VerifyReport, started: WallClock) -> VerifyReport {
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// One stream's verification.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub stream: Stream,
    pub report: VerifyReport,
}

/// What verifying every stream of a ledger found.
#[derive(Debug, Clone, Default)]
pub struct LedgerReport {
    pub streams: Vec<StreamReport>,
    /// Given checkpoints that belong to no stream, and why.
    pub unmatched: Vec<String>,
    /// Wall-clock seconds the whole verification took.
    pub seconds: f64,
    /// Threads it ran on.
    pub threads: usize,
}

impl LedgerReport {
    pub fn ok(&self) -> bool {
        self.unmatched.is_empty() && self.streams.iter().all(|s| s.report.ok())
    }

    /// Bytes of segments read, every stream's.
    pub fn bytes(&self) -> u64 {
        self.streams.iter().map(|s| s.report.bytes).sum()
    }
}

/// Verifies every stream under the ledger root `root` as [`verify`] does one, each stream's
/// kept checkpoints naming its node. Each checkpoint an outside auditor kept goes to the
/// stream it names (`v2`) or, for one that names none (`v1`), to the stream whose key signed
/// it; one that fits no stream is reported.
pub fn verify_all(root: &Path, extra_checkpoints: &[String]) -> Result<LedgerReport, LedgerError> {
    verify_all_with(root, extra_checkpoints, 1)
}

/// [`verify_all`] on `threads` threads, segments checked in parallel (see
/// `verify_parallel.rs`): the same verdict, the same problem named.
pub fn verify_all_with(
    root: &Path,
    extra_checkpoints: &[String],
    threads: usize,
) -> Result<LedgerReport, LedgerError> {
    let started = WallClock::now();
    let found = streams(root)?;
    let mut given: Vec<Vec<String>> = vec![Vec::new(); found.len()];
    let mut unmatched = Vec::new();
    for line in extra_checkpoints.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let checkpoint = match Checkpoint::parse_form(line) {
            Ok(checkpoint) => checkpoint,
            Err(reason) => {
                unmatched.push(format!("given checkpoint: {reason}"));
                continue;
            }
        };
        let index = match &checkpoint.node {
            Some(node) => found.iter().position(|s| s.node.as_ref() == Some(node)),
            None => found.iter().position(|s| {
                read_verifying_key(&s.dir).is_ok_and(|key| checkpoint.check_signature(&key).is_ok())
            }),
        };
        match (index.and_then(|i| given.get_mut(i)), &checkpoint.node) {
            (Some(lines), _) => lines.push(line.to_string()),
            (None, Some(node)) => unmatched.push(format!(
                "given checkpoint of node {node} (record {}): the ledger has no stream of node {node}",
                checkpoint.seq
            )),
            (None, None) => unmatched
                .push(format!("given checkpoint of record {}: no stream's key signed it", checkpoint.seq)),
        }
    }
    let reports = if threads > 1 {
        crate::verify_parallel::verify_streams(found, given, threads)?
    } else {
        let mut reports = Vec::with_capacity(found.len());
        for (stream, lines) in found.into_iter().zip(given) {
            let report = verify_stream(&stream.dir, crate::verify_parallel::names_of(&stream), &lines)?;
            reports.push(StreamReport { stream, report });
        }
        reports
    };
    Ok(LedgerReport {
        streams: reports,
        unmatched,
        seconds: started.elapsed().as_secs_f64(),
        threads: threads.max(1),
    })
}
