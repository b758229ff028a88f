//! The disclosure ledger: every app response's disclosures, recorded durably before the
//! response leaves, as identities only, hash-chained, in sealed and signed segments.
//!
//! Appends from many threads share one `fdatasync` (group commit). A write failure stops the
//! ledger (every later append fails) rather than risk a gap; reopening recovers. On open, only
//! a torn tail (what a crash leaves of an append that was never acknowledged, see
//! `segment.rs`) is cut; any other damage refuses to open and changes no file, and
//! [`repair`] says what can be kept.

mod chain;
mod checkpoints;
mod codec;
mod files;
mod keys;
mod merge;
mod reader;
mod recovery;
mod repair;
mod seal;
mod segment;
mod streams;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use consentry_types::{DisclosureRecord, Instant, NodeId};
use ed25519_dalek::SigningKey;

use codec::{encode_record, frame, merkle_root, Dictionary};
use recovery::Scanner;
use segment::{seal_path, segment_path};

pub use checkpoints::last_checkpoint;
pub use codec::RawRecord;
#[cfg(feature = "fault-injection")]
pub use files::LossyDisk;
pub use files::{AppendFile, FileLayer, RealFiles};
pub use merge::{Entries, LedgerEntry, RawEntries};
pub use repair::{diagnose, repair, Diagnosis, RepairPlan, Repaired, DAMAGED_DIR};
pub use seal::{read_verifying_key, Checkpoint};
pub use streams::{adopt_single_node_ledger, streams, Adoption, Stream};
pub use verify::{verify, verify_all, LedgerReport, Problem, StreamReport, VerifyReport};

/// What went wrong with the ledger. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ledger is corrupt: {0}")]
    Corrupt(String),
    /// Bytes of a segment (or of its seal, or of the checkpoints file) are not what was
    /// written: opening refuses and changes nothing.
    #[error("{}", damage_message(path, *offset, reason))]
    Damaged {
        /// The segment's number (0: the checkpoints file).
        segment: u64,
        path: PathBuf,
        /// Where in the file, when the damage is at a byte.
        offset: Option<u64>,
        reason: String,
    },
    #[error("ledger stopped after a write failure ({0}); restart to recover")]
    Stopped(String),
    /// Another process writes this stream.
    #[error("{0}")]
    Locked(String),
}

fn damage_message(path: &Path, offset: Option<u64>, reason: &str) -> String {
    match offset {
        Some(offset) => format!("{} is damaged at byte {offset}: {reason}", path.display()),
        None => format!("{} is damaged: {reason}", path.display()),
    }
}

impl LedgerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> LedgerError {
        LedgerError::Io { path: path.to_path_buf(), source }
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
}

impl Default for LedgerOptions {
    fn default() -> LedgerOptions {
        LedgerOptions { segment_bytes: 64 << 20 }
    }
}

/// Counts since the ledger was opened (and of what it held then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    pub records: u64,
    /// (subject, field) pairs disclosed.
    pub disclosures: u64,
    pub bytes: u64,
    pub segments: u64,
    /// `fdatasync`s of segment appends (each makes a group of appends durable).
    pub syncs: u64,
}

struct State {
    file: Arc<dyn AppendFile>,
    segment: u64,
    /// Durable bytes in the active segment.
    segment_len: u64,
    segment_first_seq: u64,
    segment_last_seq: u64,
    segment_hashes: Vec<[u8; 32]>,
    segment_previous: [u8; 32],
    /// Chain head including pending frames.
    head: [u8; 32],
    durable_head: [u8; 32],
    next_seq: u64,
    durable_seq: u64,
    last_at: Instant,
    dictionary: Dictionary,
    pending: Vec<u8>,
    pending_hashes: Vec<[u8; 32]>,
    pending_disclosures: u64,
    flushing: bool,
    failed: Option<String>,
    stats: LedgerStats,
    #[cfg(feature = "fault-injection")]
    fail_next_write: bool,
}

/// Called with how long each sync of appends took (for metrics).
pub type SyncObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// An open ledger directory: one stream, written by this process alone (it holds the
/// stream's `writer.lock` while open).
pub struct Ledger {
    dir: PathBuf,
    /// The node whose stream this is; its checkpoints name it.
    node: Option<NodeId>,
    adopted: Option<Adoption>,
    sync_observer: Mutex<Option<SyncObserver>>,
    _lock: streams::FileLock,
    key: SigningKey,
    files: Arc<dyn FileLayer>,
    options: LedgerOptions,
    state: Mutex<State>,
    durable: Condvar,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir` on the real file system, recovering from a
    /// crash: a torn tail is cut; any other damage refuses to open and changes no file.
    pub fn open(dir: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        Ledger::open_on(dir, options, Arc::new(RealFiles))
    }

    /// Opens the ledger with every change going through `files`.
    pub fn open_on(
        dir: &Path,
        options: LedgerOptions,
        files: Arc<dyn FileLayer>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_locked(dir, None, options, files)
    }

    /// Opens (or creates) the stream of `node` under the ledger root `root`, `<root>/<node>/`,
    /// first adopting a single-node ledger found in `root` as this node's stream (see
    /// [`Ledger::adopted`]). Refuses while another process writes that stream.
    pub fn open_stream(root: &Path, node: &NodeId, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        Ledger::open_stream_on(root, node, options, Arc::new(RealFiles))
    }

    /// [`Ledger::open_stream`] with every change going through `files`.
    pub fn open_stream_on(
        root: &Path,
        node: &NodeId,
        options: LedgerOptions,
        files: Arc<dyn FileLayer>,
    ) -> Result<Ledger, LedgerError> {
        let adopted = adopt_single_node_ledger(root, node)?;
        let mut ledger = Ledger::open_locked(&root.join(node.as_str()), Some(node.clone()), options, files)?;
        ledger.adopted = adopted;
        Ok(ledger)
    }

    fn open_locked(
        dir: &Path,
        node: Option<NodeId>,
        options: LedgerOptions,
        files: Arc<dyn FileLayer>,
    ) -> Result<Ledger, LedgerError> {
        streams::create_private_dir(dir)?;
        let what = match &node {
            Some(node) => format!("the ledger stream of node {node} ({})", dir.display()),
            None => format!("the ledger in {}", dir.display()),
        };
        let lock = streams::FileLock::try_take(&dir.join(streams::WRITER_LOCK), &what)?;
        let mut scanner = Scanner::new();
        let checked = recovery::check(dir, &mut scanner)?;
        let (key, file, segment) = checked.apply(&scanner, files.as_ref())?;
        let Scanner { dictionary, head, next_seq, last_at, stats, segment: last, .. } = scanner;
        let fresh = segment != last.number;
        let state = State {
            file: Arc::from(file),
            segment,
            segment_len: if fresh { 0 } else { last.length },
            segment_first_seq: if fresh { 0 } else { last.first_seq },
            segment_last_seq: if fresh { 0 } else { last.last_seq },
            segment_hashes: if fresh { Vec::new() } else { last.hashes },
            segment_previous: if fresh { head } else { last.previous },
            head,
            durable_head: head,
            next_seq,
            durable_seq: next_seq - 1,
            last_at,
            dictionary,
            pending: Vec::new(),
            pending_hashes: Vec::new(),
            pending_disclosures: 0,
            flushing: false,
            failed: None,
            stats,
            #[cfg(feature = "fault-injection")]
            fail_next_write: false,
        };
        Ok(Ledger {
            dir: dir.to_path_buf(),
            node,
            adopted: None,
            sync_observer: Mutex::new(None),
            _lock: lock,
            key,
            files,
            options,
            state: Mutex::new(state),
            durable: Condvar::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ledger root this stream is in (for a ledger opened as one directory: that directory).
    pub fn root(&self) -> &Path {
        match (&self.node, self.dir.parent()) {
            (Some(_), Some(root)) => root,
            _ => &self.dir,
        }
    }

    /// The node whose stream this is (`None`: a ledger opened as one directory).
    pub fn node(&self) -> Option<&NodeId> {
        self.node.as_ref()
    }

    /// The single-node ledger this stream adopted when it was opened, if it did.
    pub fn adopted(&self) -> Option<&Adoption> {
        self.adopted.as_ref()
    }

    /// Calls `observer` with the duration of every sync from now on.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        if let Ok(mut slot) = self.sync_observer.lock() {
            *slot = Some(observer);
        }
    }

    /// Whether the ledger takes appends: `Err` once a write failed (it stopped).
    pub fn health(&self) -> Result<(), LedgerError> {
        let state = self.lock()?;
        match &state.failed {
            Some(failure) => Err(LedgerError::Stopped(failure.clone())),
            None => Ok(()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LedgerError> {
        self.state.lock().map_err(|_| LedgerError::Stopped("a writer panicked".into()))
    }

    /// Appends one record and returns its sequence number once it is durable.
    pub fn append(&self, record: &DisclosureRecord) -> Result<u64, LedgerError> {
        self.append_all(std::slice::from_ref(record)).map(|seqs| seqs.last().copied().unwrap_or(0))
    }

    /// Appends records in order and returns their sequence numbers once all are durable.
    pub fn append_all(&self, records: &[DisclosureRecord]) -> Result<Vec<u64>, LedgerError> {
        let mut state = self.lock()?;
        if let Some(failure) = &state.failed {
            return Err(LedgerError::Stopped(failure.clone()));
        }
        let mut seqs = Vec::with_capacity(records.len());
        let mut names = Vec::new();
        for record in records {
            let seq = state.next_seq;
            let last_at = state.last_at;
            names.clear();
            let payload = encode_record(record, seq, last_at, &mut state.dictionary, &mut names);
            let State { pending, pending_hashes, head, .. } = &mut *state;
            if !names.is_empty() {
                *head = frame(pending, head, &names);
                pending_hashes.push(*head);
            }
            *head = frame(pending, head, &payload);
            pending_hashes.push(*head);
            state.next_seq += 1;
            state.last_at = record.at;
            state.pending_disclosures += field_pairs(record);
            seqs.push(seq);
        }
        let wanted = state.next_seq - 1;
        loop {
            if let Some(failure) = &state.failed {
                return Err(LedgerError::Stopped(failure.clone()));
            }
            if state.durable_seq >= wanted {
                return Ok(seqs);
            }
            if state.flushing {
                state =
                    self.durable.wait(state).map_err(|_| LedgerError::Stopped("a writer panicked".into()))?;
                continue;
            }
            state = self.flush(state)?;
        }
    }

    /// Writes and syncs everything pending as the group's leader; others wait meanwhile.
    fn flush<'a>(&'a self, mut state: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, LedgerError> {
        state.flushing = true;
        let batch = std::mem::take(&mut state.pending);
        let hashes = std::mem::take(&mut state.pending_hashes);
        let disclosures = std::mem::take(&mut state.pending_disclosures);
        let (upto, upto_head) = (state.next_seq - 1, state.head);
        let file = state.file.clone();
        let started = std::time::Instant::now();
        #[cfg(feature = "fault-injection")]
        let injected = std::mem::take(&mut state.fail_next_write);
        drop(state);
        #[cfg(feature = "fault-injection")]
        let written = if injected {
            Err(std::io::Error::other("injected failure: no space left on device"))
        } else {
            file.append(&batch).and_then(|_| file.sync())
        };
        #[cfg(not(feature = "fault-injection"))]
        let written = file.append(&batch).and_then(|_| file.sync());
        if let Some(observer) = self.sync_observer.lock().ok().and_then(|o| o.clone()) {
            observer(started.elapsed());
        }
        let mut state = self.lock()?;
        state.flushing = false;
        match written {
            Ok(()) => {
                state.durable_seq = upto;
                state.durable_head = upto_head;
                state.segment_len += batch.len() as u64;
                state.segment_hashes.extend(hashes);
                let records = upto.saturating_sub(state.segment_last_seq);
                if state.segment_first_seq == 0 && records > 0 {
                    state.segment_first_seq = state.segment_last_seq + 1;
                }
                state.segment_last_seq = upto;
                state.stats.records += records;
                state.stats.disclosures += disclosures;
                state.stats.bytes += batch.len() as u64;
                state.stats.syncs += 1;
                if state.segment_len >= self.options.segment_bytes {
                    if let Err(e) = self.rotate(&mut state) {
                        state.failed = Some(e.to_string());
                    }
                }
            }
            Err(error) => {
                // Fail-stop: what was written may be partial; reopening cuts it.
                state.failed = Some(error.to_string());
                tracing_free_log(&error);
            }
        }
        self.durable.notify_all();
        Ok(state)
    }

    /// Seals the active segment, writes a checkpoint, and starts the next segment.
    fn rotate(&self, state: &mut State) -> Result<(), LedgerError> {
        let seal = seal::Seal {
            segment: state.segment,
            frames: state.segment_hashes.len() as u64,
            first_seq: state.segment_first_seq,
            last_seq: state.segment_last_seq,
            bytes: state.segment_len,
            previous: state.segment_previous,
            head: state.durable_head,
            merkle: merkle_root(&state.segment_hashes),
        };
        seal.write(&seal_path(&self.dir, state.segment), &self.key, self.files.as_ref())?;
        self.write_checkpoint(state.durable_seq, state.durable_head)?;
        state.segment += 1;
        let path = segment_path(&self.dir, state.segment);
        state.file = Arc::from(self.files.open_append(&path).map_err(|e| LedgerError::io(&path, e))?);
        state.segment_len = 0;
        state.segment_first_seq = 0;
        state.segment_hashes.clear();
        state.segment_previous = state.durable_head;
        state.stats.segments += 1;
        Ok(())
    }

    fn write_checkpoint(&self, seq: u64, head: [u8; 32]) -> Result<Checkpoint, LedgerError> {
        let checkpoint = Checkpoint::sign(self.node.as_ref(), seq, head, Instant::now().millis(), &self.key);
        let path = self.dir.join(checkpoints::CHECKPOINTS_FILE);
        self.files
            .open_append(&path)
            .and_then(|file| {
                file.append(format!("{}\n", checkpoint.to_line()).as_bytes()).and_then(|_| file.sync())
            })
            .map_err(|e| LedgerError::io(&path, e))?;
        Ok(checkpoint)
    }

    /// Signs and keeps a checkpoint of everything durable now.
    pub fn checkpoint(&self) -> Result<Checkpoint, LedgerError> {
        let state = self.lock()?;
        if let Some(failure) = &state.failed {
            return Err(LedgerError::Stopped(failure.clone()));
        }
        self.write_checkpoint(state.durable_seq, state.durable_head)
    }

    pub fn stats(&self) -> LedgerStats {
        self.state.lock().map(|s| s.stats).unwrap_or_default()
    }

    /// Tests only: the next write fails as a full disk would.
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_write(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.fail_next_write = true;
        }
    }
}

/// How many (subject, field) pairs a record discloses.
pub fn field_pairs(record: &DisclosureRecord) -> u64 {
    record.disclosures.iter().map(|d| u64::from(d.fields.bits().count_ones())).sum()
}

fn tracing_free_log(error: &std::io::Error) {
    eprintln!("consentry ledger: write failed, ledger stopped: {error}");
}
