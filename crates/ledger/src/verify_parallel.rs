//! `verify` on several threads: every segment of every stream is checked on its own (the hash
//! chain from the head its previous segment's seal gives, its frames, its records' numbers,
//! its seal), segments spread over the threads; then, per stream and in order, what one segment
//! cannot tell alone: that the record numbers run on from the previous segment's, that every
//! name a record refers to was numbered before it with the right kind, that no name is
//! numbered twice, and the checkpoints.
//!
//! Its verdict is the one-thread verdict: when everything passes, it checked what one thread
//! checks; when anything fails, the stream is verified again on one thread, so that the
//! problem it names is exactly the one a one-thread `verify` names.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use consentry_types::Instant;
use ed25519_dalek::VerifyingKey;

use crate::chain::{Chain, Step};
use crate::codec::{inspect_disclosure, is_names, merkle_root, read_names, Inspected, NameKind};
use crate::seal::{read_verifying_key, Checkpoint, Seal};
use crate::segment::{seal_path, segment_files};
use crate::streams::Stream;
use crate::verify::{
    match_checkpoints, verify_stream, wanted_checkpoints, Names, StreamReport, VerifyReport,
};
use crate::LedgerError;

/// Name numbers below this are tracked in a table (a byte each), above in a map.
const DENSE: usize = 1 << 26;

/// What checking one segment alone found.
#[derive(Default)]
struct SegmentCheck {
    /// Nothing wrong within the segment.
    sound: bool,
    /// The names the segment numbers, in order.
    names: Vec<(NameKind, String)>,
    /// Every number a record refers to, with the kind it refers to it as (`kind as u8`; 0:
    /// none), by number up to `DENSE`, and in a map beyond.
    refs: Vec<u8>,
    far_refs: HashMap<u64, NameKind>,
    /// How many names the stream must have numbered before the segment for every reference
    /// to be to a name numbered before it.
    needs_names: u64,
    first_seq: u64,
    last_seq: u64,
    records: u64,
    disclosures: u64,
    bytes: u64,
    /// The chain head after each record a checkpoint names.
    heads_at: Vec<(u64, [u8; 32])>,
}

fn check_segment(
    dir: &Path,
    files: &[(u64, PathBuf)],
    position: usize,
    key: &VerifyingKey,
    needed: &HashSet<u64>,
) -> SegmentCheck {
    let unsound = SegmentCheck::default;
    let head = match position.checked_sub(1).and_then(|p| files.get(p)) {
        None => [0u8; 32],
        Some((number, _)) => match Seal::read(&seal_path(dir, *number), Some(key)) {
            Ok(seal) => seal.head,
            Err(_) => return unsound(),
        },
    };
    let mut chain = Chain::one_segment(dir, files.to_vec(), position, head);
    let mut check = SegmentCheck { sound: true, ..SegmentCheck::default() };
    let mut hashes = Vec::new();
    let mut last_at = Instant::from_millis(0);
    loop {
        match chain.step() {
            Ok(Step::Frame(frame)) => {
                if is_names(&frame.payload) {
                    if read_names(&frame.payload, &mut check.names).is_err() {
                        return unsound();
                    }
                } else {
                    let local = check.names.len() as u64;
                    let (refs, far_refs, needs) =
                        (&mut check.refs, &mut check.far_refs, &mut check.needs_names);
                    let mut conflict = false;
                    let inspected = inspect_disclosure(&frame.payload, last_at, &mut |kind, number| {
                        match usize::try_from(number).ok().filter(|n| *n < DENSE) {
                            Some(n) => {
                                if refs.len() <= n {
                                    refs.resize(n + 1, 0);
                                }
                                if let Some(slot) = refs.get_mut(n) {
                                    conflict |= *slot != 0 && *slot != kind as u8;
                                    *slot = kind as u8;
                                }
                            }
                            None => conflict |= *far_refs.entry(number).or_insert(kind) != kind,
                        }
                        *needs = (*needs).max(number.saturating_add(1).saturating_sub(local));
                        Ok(())
                    });
                    let Ok(Inspected::Disclosure { seq, at, disclosures }) = inspected else {
                        return unsound();
                    };
                    let due = if check.records == 0 { seq } else { check.last_seq + 1 };
                    if conflict || seq == 0 || seq != due {
                        return unsound();
                    }
                    if check.records == 0 {
                        check.first_seq = seq;
                    }
                    check.last_seq = seq;
                    check.records += 1;
                    check.disclosures += disclosures;
                    last_at = at;
                    if needed.contains(&seq) {
                        check.heads_at.push((seq, frame.stored_hash));
                    }
                }
                hashes.push(frame.stored_hash);
            }
            Ok(Step::SegmentEnd(end)) => {
                if end.torn > 0 {
                    return unsound();
                }
                check.bytes = end.length;
                if end.sealed {
                    let expected = Seal {
                        segment: end.number,
                        frames: hashes.len() as u64,
                        first_seq: check.first_seq,
                        last_seq: check.last_seq,
                        bytes: end.length,
                        previous: end.previous,
                        head: chain.head(),
                        merkle: merkle_root(&hashes),
                    };
                    if Seal::check(&seal_path(dir, end.number), Some(key), &expected).is_err() {
                        return unsound();
                    }
                }
                return check;
            }
            Ok(Step::End) | Err(_) => return unsound(),
        }
    }
}

/// One stream being verified on several threads.
struct Candidate {
    dir: PathBuf,
    key: VerifyingKey,
    files: Vec<(u64, PathBuf)>,
    wanted: Vec<(String, Checkpoint)>,
    needed: HashSet<u64>,
}

/// Puts the segments' checks together in order; `None` when the stream must be verified on
/// one thread (something is wrong, and one thread names it exactly).
fn combine(candidate: &Candidate, checks: Vec<SegmentCheck>, seconds: f64) -> Option<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut kinds: Vec<NameKind> = Vec::new();
    let mut numbered: HashSet<(NameKind, String)> = HashSet::new();
    let mut heads_at = HashMap::new();
    let mut next_seq = 1u64;
    for check in checks {
        if !check.sound || check.needs_names > kinds.len() as u64 {
            return None;
        }
        for (kind, name) in check.names {
            kinds.push(kind);
            if !numbered.insert((kind, name)) {
                return None;
            }
        }
        let wrong = |n: usize, kind: u8| kinds.get(n).map(|k| *k as u8) != Some(kind);
        if check.refs.iter().enumerate().any(|(n, kind)| *kind != 0 && wrong(n, *kind))
            || check
                .far_refs
                .iter()
                .any(|(n, kind)| usize::try_from(*n).map_or(true, |n| wrong(n, *kind as u8)))
        {
            return None;
        }
        if check.records > 0 {
            if check.first_seq != next_seq {
                return None;
            }
            next_seq = check.last_seq + 1;
        }
        report.segments += 1;
        report.records += check.records;
        report.disclosures += check.disclosures;
        report.bytes += check.bytes;
        heads_at.extend(check.heads_at);
    }
    match_checkpoints(&candidate.dir, &candidate.wanted, &heads_at, next_seq - 1, &mut report);
    report.seconds = seconds;
    Some(report)
}

/// Verifies `streams` (with the checkpoints given for each) on `threads` threads; the reports
/// are in the streams' order.
pub(crate) fn verify_streams(
    streams: Vec<Stream>,
    given: Vec<Vec<String>>,
    threads: usize,
) -> Result<Vec<StreamReport>, LedgerError> {
    let started = std::time::Instant::now();
    let mut candidates: Vec<Option<Candidate>> = Vec::with_capacity(streams.len());
    for (stream, lines) in streams.iter().zip(&given) {
        let names = names_of(stream);
        let key = read_verifying_key(&stream.dir)?;
        candidates.push(match wanted_checkpoints(&stream.dir, &key, names, lines)? {
            Ok(wanted) => Some(Candidate {
                dir: stream.dir.clone(),
                key,
                files: segment_files(&stream.dir)?,
                needed: wanted.iter().map(|(_, c)| c.seq).collect(),
                wanted,
            }),
            Err(_) => None,
        });
    }
    let jobs: Vec<(usize, usize)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(s, c)| c.as_ref().map(|c| (s, c.files.len())))
        .flat_map(|(s, count)| (0..count).map(move |position| (s, position)))
        .collect();
    let results: Vec<Mutex<Option<SegmentCheck>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                let (Some((stream, position)), Some(slot)) = (jobs.get(job), results.get(job)) else { break };
                let Some(Some(candidate)) = candidates.get(*stream) else { continue };
                let check = check_segment(
                    &candidate.dir,
                    &candidate.files,
                    *position,
                    &candidate.key,
                    &candidate.needed,
                );
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(check);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut per_stream: Vec<Vec<SegmentCheck>> = (0..streams.len()).map(|_| Vec::new()).collect();
    for ((stream, _), slot) in jobs.iter().zip(results) {
        let check = slot.into_inner().ok().flatten().unwrap_or_default();
        if let Some(checks) = per_stream.get_mut(*stream) {
            checks.push(check);
        }
    }
    let mut reports = Vec::with_capacity(streams.len());
    for (((stream, lines), candidate), checks) in
        streams.into_iter().zip(given).zip(candidates).zip(per_stream)
    {
        let combined = candidate.as_ref().and_then(|c| combine(c, checks, seconds));
        let report = match combined {
            Some(report) => report,
            None => verify_stream(&stream.dir, names_of(&stream), &lines)?,
        };
        reports.push(StreamReport { stream, report });
    }
    Ok(reports)
}

/// The names a stream's checkpoints carry: its node's, or none for a single-node ledger.
pub(crate) fn names_of(stream: &Stream) -> Names<'_> {
    match &stream.node {
        Some(node) => Names::Node(node),
        None => Names::Unnamed,
    }
}
