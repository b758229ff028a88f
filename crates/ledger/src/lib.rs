//! The disclosure ledger: every app response's disclosures, recorded durably before the
//! response leaves, as identities only, hash-chained, in sealed and signed segments.
//!
//! Appends from many threads share one `fdatasync` (group commit). A write failure stops the
//! ledger (every later append fails) rather than risk a gap; reopening recovers. On open, a
//! torn tail (a frame a crash left half-written, never acknowledged) is cut.

mod codec;
mod reader;
mod seal;
mod segment;
mod verify;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use consentry_types::{DisclosureRecord, Instant};
use ed25519_dalek::SigningKey;

use codec::{decode, encode_record, frame, merkle_root, Dictionary, Entry};
use segment::{continues, seal_path, segment_files, segment_path, FrameReader, Stop};

pub use codec::RawRecord;
pub use reader::{Entries, LedgerEntry, RawEntries};
pub use seal::{read_verifying_key, Checkpoint};
pub use verify::{verify, Problem, VerifyReport};

/// What went wrong with the ledger. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ledger is corrupt: {0}")]
    Corrupt(String),
    #[error("ledger stopped after a write failure ({0}); restart to recover")]
    Stopped(String),
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
}

/// The segment appends go to, as found on open.
struct ActiveSegment {
    number: u64,
    length: u64,
    first_seq: u64,
    last_seq: u64,
    hashes: Vec<[u8; 32]>,
    previous: [u8; 32],
}

struct State {
    file: Arc<File>,
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

/// An open ledger directory.
pub struct Ledger {
    dir: PathBuf,
    key: SigningKey,
    options: LedgerOptions,
    state: Mutex<State>,
    durable: Condvar,
}

fn open_segment(dir: &Path, number: u64) -> Result<File, LedgerError> {
    let path = segment_path(dir, number);
    let file =
        OpenOptions::new().create(true).append(true).open(&path).map_err(|e| LedgerError::io(&path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LedgerError::io(dir, e))?;
    Ok(file)
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`, recovering from a crash: a torn last frame
    /// is cut; anything else wrong is an error, never silently dropped.
    pub fn open(dir: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::io(dir, e))?;
        let key = seal::load_or_create_key(dir)?;
        let files = segment_files(dir)?;
        let mut dictionary = Dictionary::default();
        let (mut head, mut next_seq, mut last_at) = ([0u8; 32], 1u64, Instant::from_millis(0));
        let mut stats = LedgerStats::default();
        let mut active: Option<ActiveSegment> = None;
        for (index, (number, path)) in files.iter().enumerate() {
            let is_last = index + 1 == files.len();
            let sealed = seal_path(dir, *number).exists();
            if !is_last && !sealed {
                return Err(LedgerError::Corrupt(format!(
                    "segment {number} is not sealed but is not the last"
                )));
            }
            let segment_previous = head;
            let mut reader = FrameReader::open(path)?;
            let (mut hashes, mut first_seq, mut last_seq, mut length) = (Vec::new(), 0u64, 0u64, 0u64);
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => {
                        if !continues(&frame, &head) {
                            return Err(LedgerError::Corrupt(format!(
                                "segment {number} at byte {}: the hash chain is broken (run `consentry ledger verify`)",
                                frame.offset
                            )));
                        }
                        head = frame.stored_hash;
                        length = frame.offset + 4 + frame.payload.len() as u64 + 32;
                        if let Entry::Disclosure { seq, record } =
                            decode(&frame.payload, &mut dictionary, last_at)?
                        {
                            if seq != next_seq {
                                return Err(LedgerError::Corrupt(format!(
                                    "segment {number}: record {seq} where {next_seq} was due"
                                )));
                            }
                            next_seq += 1;
                            last_at = record.at;
                            if first_seq == 0 {
                                first_seq = seq;
                            }
                            last_seq = seq;
                            stats.records += 1;
                            stats.disclosures += field_pairs(&record);
                        }
                        hashes.push(frame.stored_hash);
                    }
                    Ok(None) => break,
                    Err(Stop::Torn { offset }) if is_last && !sealed => {
                        let file = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(|e| LedgerError::io(path, e))?;
                        file.set_len(offset)
                            .and_then(|_| file.sync_all())
                            .map_err(|e| LedgerError::io(path, e))?;
                        length = offset;
                        break;
                    }
                    Err(Stop::Torn { offset }) => {
                        return Err(LedgerError::Corrupt(format!(
                            "segment {number} is cut short at byte {offset}"
                        )));
                    }
                    Err(Stop::Io(e)) => return Err(LedgerError::io(path, e)),
                }
            }
            stats.bytes += length;
            stats.segments += 1;
            if is_last && !sealed {
                active = Some(ActiveSegment {
                    number: *number,
                    length,
                    first_seq,
                    last_seq,
                    hashes,
                    previous: segment_previous,
                });
            } else if is_last {
                // The last segment was sealed just before a crash: start the next one.
                active = Some(ActiveSegment {
                    number: number + 1,
                    length: 0,
                    first_seq: 0,
                    last_seq: 0,
                    hashes: Vec::new(),
                    previous: head,
                });
            }
        }
        let ActiveSegment {
            number: segment,
            length: segment_len,
            first_seq: segment_first_seq,
            last_seq: segment_last_seq,
            hashes: segment_hashes,
            previous: segment_previous,
        } = active.unwrap_or(ActiveSegment {
            number: 1,
            length: 0,
            first_seq: 0,
            last_seq: 0,
            hashes: Vec::new(),
            previous: head,
        });
        let file = Arc::new(open_segment(dir, segment)?);
        let state = State {
            file,
            segment,
            segment_len,
            segment_first_seq,
            segment_last_seq,
            segment_hashes,
            segment_previous,
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
        Ok(Ledger { dir: dir.to_path_buf(), key, options, state: Mutex::new(state), durable: Condvar::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        #[cfg(feature = "fault-injection")]
        let injected = std::mem::take(&mut state.fail_next_write);
        drop(state);
        #[cfg(feature = "fault-injection")]
        let written = if injected {
            Err(std::io::Error::other("injected failure: no space left on device"))
        } else {
            (&*file).write_all(&batch).and_then(|_| file.sync_data())
        };
        #[cfg(not(feature = "fault-injection"))]
        let written = (&*file).write_all(&batch).and_then(|_| file.sync_data());
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
        seal.write(&seal_path(&self.dir, state.segment), &self.key)?;
        self.write_checkpoint(state.durable_seq, state.durable_head)?;
        state.segment += 1;
        state.file = Arc::new(open_segment(&self.dir, state.segment)?);
        state.segment_len = 0;
        state.segment_first_seq = 0;
        state.segment_hashes.clear();
        state.segment_previous = state.durable_head;
        state.stats.segments += 1;
        Ok(())
    }

    fn write_checkpoint(&self, seq: u64, head: [u8; 32]) -> Result<Checkpoint, LedgerError> {
        let checkpoint = Checkpoint::sign(seq, head, Instant::now().millis(), &self.key);
        let path = self.dir.join("checkpoints");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        file.write_all(format!("{}\n", checkpoint.to_line()).as_bytes())
            .and_then(|_| file.sync_data())
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
