//! `repair`: the explicit, separate step after opening refused. It keeps the whole frames of
//! the last segment that continue the chain, moves the damaged segment (and its seal) aside
//! into `damaged/` (kept, never deleted), writes what it kept as the active segment, and
//! records the repair in `repairs`, so the ledger opens again. Checkpoints written before the
//! repair may cover records it could not keep: opening stops holding the ledger to them, and
//! `verify` still reports them, honestly.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use consentry_types::Instant;

use crate::checkpoints::{self, REPAIRS_FILE};
use crate::files::{create_private, no_follow, sync_dir, temporary};
use crate::keys;
use crate::recovery::{check, Scanner};
use crate::segment::{seal_path, segment_files};
use crate::LedgerError;

/// The directory, inside the ledger's, where repaired segments are kept as they were.
pub const DAMAGED_DIR: &str = "damaged";

/// What repairing would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairPlan {
    /// The damage, as opening reports it.
    pub damage: String,
    pub segment: u64,
    pub path: PathBuf,
    /// The segment's length on disk.
    pub size: u64,
    /// Bytes kept from the start of the segment: its whole frames that continue the chain.
    pub keep_bytes: u64,
    pub kept_frames: u64,
    /// Disclosure records among the kept frames, and the last record number kept (0: none).
    pub kept_records: u64,
    pub last_kept_record: u64,
    /// Bytes after the kept ones, which cannot be recovered (they stay in the moved file).
    pub lost_bytes: u64,
    /// The segment was sealed: its seal is moved aside too, and it takes appends again.
    pub sealed: bool,
    /// The highest record a kept checkpoint covers, when it is beyond what is kept: `verify`
    /// will report those checkpoints after the repair.
    pub checkpoint_beyond: Option<u64>,
}

/// What opening the ledger would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// It opens as it is; `torn_bytes` of a torn tail at `torn_at` of `path` are cut then.
    Opens { path: Option<PathBuf>, torn_at: u64, torn_bytes: u64 },
    /// It refuses, and repairing can make it open.
    Repairable(RepairPlan),
    /// It refuses, and cutting the last segment would not help (why).
    Unrepairable(String),
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Where the damaged segment and its seal were moved (none when nothing was cut).
    pub moved: Vec<PathBuf>,
    /// The line appended to `repairs`.
    pub record: String,
}

/// Looks at the ledger in `dir` as opening would, changing nothing.
pub fn diagnose(dir: &Path) -> Result<Diagnosis, LedgerError> {
    let mut scanner = Scanner::new();
    let refusal = match check(dir, &mut scanner) {
        Ok(_) => {
            let segment = &scanner.segment;
            let path = (segment.number > 0).then(|| segment.path.clone());
            return Ok(Diagnosis::Opens { path, torn_at: segment.length, torn_bytes: segment.torn });
        }
        Err(refusal) => refusal,
    };
    let LedgerError::Damaged { segment, path, .. } = &refusal else {
        return Ok(Diagnosis::Unrepairable(refusal.to_string()));
    };
    let last = segment_files(dir)?.last().map_or(0, |(n, _)| *n);
    if *segment == 0 {
        return Ok(Diagnosis::Unrepairable(format!(
            "{refusal}; repair only cuts the last segment: restore {} from a copy",
            path.display()
        )));
    }
    if *segment != last || scanner.segment.number != last {
        return Ok(Diagnosis::Unrepairable(format!(
            "{refusal}; repair only cuts the last segment, and {} later segments chain from this one: restore it from a copy",
            last.saturating_sub(*segment)
        )));
    }
    let kept = &scanner.segment;
    let size = std::fs::metadata(&kept.path).map_err(|e| LedgerError::io(&kept.path, e))?.len();
    let key = keys::read_key(dir)?.map(|k| k.verifying_key());
    let highest = match &key {
        Some(key) => checkpoints::read(dir)?.highest_from(1, key).ok().flatten().map(|(_, c)| c.seq),
        None => None,
    };
    let last_kept_record = scanner.next_seq - 1;
    Ok(Diagnosis::Repairable(RepairPlan {
        damage: refusal.to_string(),
        segment: kept.number,
        path: kept.path.clone(),
        size,
        keep_bytes: kept.length,
        kept_frames: kept.hashes.len() as u64,
        kept_records: kept.records,
        last_kept_record,
        lost_bytes: size.saturating_sub(kept.length),
        sealed: kept.sealed,
        checkpoint_beyond: highest.filter(|seq| *seq > last_kept_record),
    }))
}

/// `2019-11-05T10:00:00.123Z` as `20191105T100000.123Z`, for file names.
fn stamp(at: Instant) -> String {
    at.to_string().chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// A name in `damaged/` that does not exist yet.
fn aside(damaged: &Path, file: &Path, stamp: &str) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut candidate = damaged.join(format!("{name}.{stamp}"));
    let mut n = 1;
    while candidate.exists() || candidate.is_symlink() {
        n += 1;
        candidate = damaged.join(format!("{name}.{stamp}.{n}"));
    }
    candidate
}

/// Moves `file` to `to` without ever deleting it: a hard link first (a copy where links are
/// not supported), made durable, then the old name removed.
fn move_aside(file: &Path, to: &Path) -> Result<(), LedgerError> {
    if std::fs::hard_link(file, to).is_err() {
        let mut bytes = Vec::new();
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| LedgerError::io(file, e))?;
        create_private(to, &bytes).map_err(|e| LedgerError::io(to, e))?;
    }
    let parent = to.parent().unwrap_or(Path::new("."));
    sync_dir(parent).map_err(|e| LedgerError::io(parent, e))
}

/// Carries out `plan` (from [`diagnose`] just before, on the same directory, which must not
/// be open meanwhile) at instant `now`.
pub fn repair(dir: &Path, plan: &RepairPlan, now: Instant) -> Result<Repaired, LedgerError> {
    // Nobody may append while it is repaired.
    let _writer = crate::streams::FileLock::try_take(
        &dir.join(crate::streams::WRITER_LOCK),
        &format!("the ledger stream in {}", dir.display()),
    )?;
    // The ledger must still be as the plan saw it.
    if diagnose(dir)? != Diagnosis::Repairable(plan.clone()) {
        return Err(LedgerError::Corrupt(
            "the ledger changed since the repair was planned; plan it again".into(),
        ));
    }
    let damaged = dir.join(DAMAGED_DIR);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&damaged).map_err(|e| LedgerError::io(&damaged, e))?;
    sync_dir(dir).map_err(|e| LedgerError::io(dir, e))?;
    let stamp = stamp(now);
    let seal = seal_path(dir, plan.segment);
    let mut moved = Vec::new();
    let cut = plan.lost_bytes > 0;
    // 1. Keep the damaged segment (and its seal) under damaged/, as they are.
    if cut {
        let to = aside(&damaged, &plan.path, &stamp);
        move_aside(&plan.path, &to)?;
        moved.push(to);
    }
    if plan.sealed {
        let to = aside(&damaged, &seal, &stamp);
        move_aside(&seal, &to)?;
        moved.push(to);
    }
    // 2. The kept prefix, written beside the segment.
    let prefix = temporary(&plan.path);
    if cut {
        let mut bytes = Vec::new();
        std::fs::File::open(&plan.path)
            .and_then(|f| f.take(plan.keep_bytes).read_to_end(&mut bytes))
            .map_err(|e| LedgerError::io(&plan.path, e))?;
        match std::fs::remove_file(&prefix) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(LedgerError::io(&prefix, e)),
            _ => {}
        }
        create_private(&prefix, &bytes).map_err(|e| LedgerError::io(&prefix, e))?;
    }
    // 3. The record of the repair, before the ledger changes.
    let checkpoint_lines = checkpoints::read(dir)?.lines.len();
    let shown = |p: &PathBuf| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let record = format!(
        "repair v1 at={now} segment={} kept_bytes={} kept_through_record={} lost_bytes={} checkpoints={checkpoint_lines} moved={}",
        plan.segment,
        plan.keep_bytes,
        plan.last_kept_record,
        plan.lost_bytes,
        if moved.is_empty() { "-".to_string() } else { moved.iter().map(shown).collect::<Vec<_>>().join(",") }
    );
    let repairs = dir.join(REPAIRS_FILE);
    no_follow(std::fs::OpenOptions::new().create(true).append(true))
        .open(&repairs)
        .and_then(|mut f| f.write_all(format!("{record}\n").as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|e| LedgerError::io(&repairs, e))?;
    // 4. The ledger changes: the seal goes, the kept prefix takes the segment's name.
    if plan.sealed {
        std::fs::remove_file(&seal).map_err(|e| LedgerError::io(&seal, e))?;
    }
    if cut {
        std::fs::rename(&prefix, &plan.path).map_err(|e| LedgerError::io(&plan.path, e))?;
    }
    sync_dir(dir).map_err(|e| LedgerError::io(dir, e))?;
    Ok(Repaired { moved, record })
}
