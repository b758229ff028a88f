//! The member index: a member's history answered without reading the whole ledger.
//!
//! Each sealed segment of each stream gets a sidecar file, `NNNNNNNN.members`, built from the
//! segment (checked frame by frame against its signed seal while it is built) when the segment
//! is sealed, or by the first reader that finds it missing. It holds, sorted and fixed-width
//! where it is searched: where each names entry of the segment is and the first number it gives;
//! the members the segment numbers, by a hash of their id; each record's offset and instant; and,
//! per member number, the records (their ordinals in the segment, delta-coded) that disclosed
//! the member's fields, in blocks of 32 members found by a table of fences. A BLAKE3 checksum closes the file, and its header repeats the seal it
//! was built from and what the segment starts from (the chain head, the dictionary's size and
//! the instant before it, as the previous segment's index ends).
//!
//! The index is derived data and is never trusted over the frames:
//! - a file that is missing, short, altered (checksum), or does not match its seal or the
//!   previous segment's index is rebuilt from the segment (or, when it cannot be written, kept
//!   in memory);
//! - every record found through it is read from the segment and checked there: its frame must
//!   continue the hash chain from the 32 bytes stored before it, its number must be the one
//!   the index gives, and it must name the member; every identity in an answer is read from the
//!   names entry that numbered it, checked the same way. When a check fails the segment's index
//!   is rebuilt and the lookup runs again; a segment that does not match its seal is an error,
//!   as it is for a scan.
//!
//! The open (last, unsealed) segment is indexed in memory, reading only what was appended since
//! the previous lookup; its torn tail (a write in progress) is not read yet, and any other
//! damage is an error, as for a scan.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use consentry_types::{AppId, DeveloperId, FieldSet, GroupId, Instant, MemberId};
use ed25519_dalek::VerifyingKey;

use crate::codec::{
    chain, decode_raw, is_names, merkle_root, put_varint, read_names, Dictionary, NameKind, RawRecord,
    MAX_PAYLOAD,
};
use crate::history::{merge, MemberDisclosure, MemberHistory, MemberQuery};
use crate::seal::{read_verifying_key, Seal};
use crate::segment::{
    classify_tail, continues, seal_path, segment_files, segment_path, FrameReader, Read, Tail,
};
use crate::streams::streams;
use crate::LedgerError;

const MAGIC: &[u8; 8] = b"CSMIDX01";
/// magic, 5 numbers, 2 hashes, 4 numbers, 5 counts.
const HEADER: usize = 8 + 5 * 8 + 2 * 32 + 4 * 8 + 5 * 8;
const CHECKSUM: usize = 32;
/// Names read from sealed segments kept for later lookups, at most.
const NAMES_CACHED: usize = 100_000;
/// Members a block of the index holds.
const BLOCK: usize = 32;

/// The index file of a segment.
pub(crate) fn index_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.members"))
}

/// The key members are found by in an index: the first 8 bytes of a BLAKE3 of their id.
fn member_key(name: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"consentry member index v1\0");
    hasher.update(name.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(bytes.as_bytes().get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

/// What a segment starts from: where the segments before it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Start {
    head: [u8; 32],
    /// The stream's dictionary size before the segment.
    names: u64,
    /// The instant of the record before the segment.
    at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    segment: u64,
    bytes: u64,
    frames: u64,
    first_seq: u64,
    last_seq: u64,
    previous: [u8; 32],
    head: [u8; 32],
    at_before: Instant,
    name_base: u64,
    name_count: u64,
    last_at: Instant,
    name_frames: u64,
    introduced: u64,
    records: u64,
    members: u64,
    postings: u64,
}

impl Header {
    fn end(&self) -> Start {
        Start { head: self.head, names: self.name_base + self.name_count, at: self.last_at }
    }

    fn start(&self) -> Start {
        Start { head: self.previous, names: self.name_base, at: self.at_before }
    }

    fn name_frames_at(&self) -> u64 {
        HEADER as u64
    }
    fn introduced_at(&self) -> u64 {
        self.name_frames_at() + 16 * self.name_frames
    }
    fn records_at(&self) -> u64 {
        self.introduced_at() + 16 * self.introduced
    }
    fn members_at(&self) -> u64 {
        self.records_at() + 16 * self.records
    }
    fn postings_at(&self) -> u64 {
        self.members_at() + 16 * self.members
    }
    /// The file's whole length, checksum included (`None` when it overflows).
    fn file_len(&self) -> Option<u64> {
        let tables = 16u64
            .checked_mul(self.name_frames)?
            .checked_add(16u64.checked_mul(self.introduced)?)?
            .checked_add(16u64.checked_mul(self.records)?)?
            .checked_add(16u64.checked_mul(self.members)?)?;
        tables.checked_add(self.postings)?.checked_add((HEADER + CHECKSUM) as u64)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        for n in [self.segment, self.bytes, self.frames, self.first_seq, self.last_seq] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.previous);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.at_before.millis().to_le_bytes());
        out.extend_from_slice(&self.name_base.to_le_bytes());
        out.extend_from_slice(&self.name_count.to_le_bytes());
        out.extend_from_slice(&self.last_at.millis().to_le_bytes());
        for n in [self.name_frames, self.introduced, self.records, self.members, self.postings] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Option<Header> {
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            let at = 8 + 8 * i;
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let hash = |at: usize| -> Option<[u8; 32]> { bytes.get(at..at + 32)?.try_into().ok() };
        let after_hashes = |i: usize| -> Option<u64> {
            let at = 8 + 5 * 8 + 64 + 8 * i;
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Header {
            segment: word(0)?,
            bytes: word(1)?,
            frames: word(2)?,
            first_seq: word(3)?,
            last_seq: word(4)?,
            previous: hash(48)?,
            head: hash(80)?,
            at_before: Instant::from_millis(after_hashes(0)? as i64),
            name_base: after_hashes(1)?,
            name_count: after_hashes(2)?,
            last_at: Instant::from_millis(after_hashes(3)? as i64),
            name_frames: after_hashes(4)?,
            introduced: after_hashes(5)?,
            records: after_hashes(6)?,
            members: after_hashes(7)?,
            postings: after_hashes(8)?,
        })
    }

    fn matches_seal(&self, seal: &Seal) -> bool {
        (self.segment, self.bytes, self.frames, self.first_seq, self.last_seq, self.previous, self.head)
            == (
                seal.segment,
                seal.bytes,
                seal.frames,
                seal.first_seq,
                seal.last_seq,
                seal.previous,
                seal.head,
            )
    }
}

/// What walking a segment's frames gathers; the open segment's index keeps growing one.
#[derive(Debug, Default)]
struct Gathered {
    /// (first number, offset) of each names entry.
    name_frames: Vec<(u64, u64)>,
    /// Every name the segment numbers, in order.
    names: Vec<(NameKind, String)>,
    /// (offset, instant) of each record, by ordinal.
    records: Vec<(u64, Instant)>,
    /// Member number → ordinals of the records that name it.
    postings: HashMap<u64, Vec<u32>>,
    first_seq: u64,
    last_seq: u64,
    hashes: Vec<[u8; 32]>,
    head: [u8; 32],
    next_name: u64,
    last_at: Instant,
}

impl Gathered {
    fn new(start: Start) -> Gathered {
        Gathered { head: start.head, next_name: start.names, last_at: start.at, ..Gathered::default() }
    }

    /// Takes in one frame that continues the chain.
    fn take(
        &mut self,
        offset: u64,
        payload: &[u8],
        stored_hash: [u8; 32],
        raw: &mut RawRecord,
    ) -> Result<(), String> {
        self.hashes.push(stored_hash);
        self.head = stored_hash;
        if is_names(payload) {
            let before = self.names.len();
            read_names(payload, &mut self.names).map_err(|e| e.to_string())?;
            self.name_frames.push((self.next_name, offset));
            self.next_name += (self.names.len() - before) as u64;
            return Ok(());
        }
        let mut unused = Dictionary::default();
        decode_raw(payload, &mut unused, self.last_at, raw).map_err(|e| e.to_string())?;
        let due = if self.first_seq == 0 { raw.seq } else { self.last_seq + 1 };
        if raw.seq != due || raw.seq == 0 {
            return Err(format!("record {} where {due} was due", raw.seq));
        }
        let ordinal = u32::try_from(self.records.len()).map_err(|_| "too many records".to_string())?;
        if self.first_seq == 0 {
            self.first_seq = raw.seq;
        }
        self.last_seq = raw.seq;
        self.last_at = raw.at;
        self.records.push((offset, raw.at));
        for (member, _) in &raw.members {
            let list = self.postings.entry(*member).or_default();
            if list.last() != Some(&ordinal) {
                list.push(ordinal);
            }
        }
        Ok(())
    }

    /// The member numbers this segment gives to members, by key.
    fn introduced(&self, base: u64) -> Vec<(u64, u64)> {
        let mut introduced: Vec<(u64, u64)> = self
            .names
            .iter()
            .enumerate()
            .filter(|(_, (kind, _))| *kind == NameKind::Member)
            .map(|(i, (_, name))| (member_key(name), base + i as u64))
            .collect();
        introduced.sort_unstable();
        introduced
    }
}

fn damaged(dir: &Path, number: u64, offset: Option<u64>, reason: String) -> LedgerError {
    LedgerError::Damaged { segment: number, path: segment_path(dir, number), offset, reason }
}

/// Walks sealed segment `number` from `start`, checks it against its seal, and returns its
/// index file's bytes.
fn build(
    dir: &Path,
    number: u64,
    start: Start,
    key: &VerifyingKey,
) -> Result<(Header, Vec<u8>), LedgerError> {
    let path = segment_path(dir, number);
    let mut reader = FrameReader::open(&path)?;
    let mut gathered = Gathered::new(start);
    let mut raw = RawRecord::default();
    loop {
        match reader.next_frame()? {
            Read::Frame(frame) if continues(&frame, &gathered.head) => {
                let offset = frame.offset;
                gathered
                    .take(offset, &frame.payload, frame.stored_hash, &mut raw)
                    .map_err(|reason| damaged(dir, number, Some(offset), reason))?;
            }
            Read::Frame(frame) => {
                let reason = "the frame does not continue the hash chain".to_string();
                return Err(damaged(dir, number, Some(frame.offset), reason));
            }
            Read::Irregular { offset } => {
                let reason = "the bytes from here are not a whole frame".to_string();
                return Err(damaged(dir, number, Some(offset), reason));
            }
            Read::End => break,
        }
    }
    let expected = Seal {
        segment: number,
        frames: gathered.hashes.len() as u64,
        first_seq: gathered.first_seq,
        last_seq: gathered.last_seq,
        bytes: reader.size(),
        previous: start.head,
        head: gathered.head,
        merkle: merkle_root(&gathered.hashes),
    };
    let seal_file = seal_path(dir, number);
    Seal::check(&seal_file, Some(key), &expected).map_err(|reason| LedgerError::Damaged {
        segment: number,
        path: seal_file.clone(),
        offset: None,
        reason,
    })?;
    let introduced = gathered.introduced(start.names);
    let mut members: Vec<(u64, Vec<u32>)> = std::mem::take(&mut gathered.postings).into_iter().collect();
    members.sort_unstable_by_key(|(number, _)| *number);
    // Members in blocks of `BLOCK`, each found by a fence (its first number, where it starts):
    // per member, the number's delta within the block, how many records, the ordinals' deltas.
    let mut postings = Vec::new();
    let mut table = Vec::with_capacity(members.len().div_ceil(BLOCK) * 16);
    for block in members.chunks(BLOCK) {
        let Some((first, _)) = block.first() else { continue };
        table.extend_from_slice(&first.to_le_bytes());
        table.extend_from_slice(&(postings.len() as u64).to_le_bytes());
        let mut previous_member = *first;
        for (member, ordinals) in block {
            put_varint(&mut postings, member - previous_member);
            previous_member = *member;
            put_varint(&mut postings, ordinals.len() as u64);
            let mut previous = 0u32;
            for (i, ordinal) in ordinals.iter().enumerate() {
                put_varint(&mut postings, u64::from(if i == 0 { *ordinal } else { ordinal - previous }));
                previous = *ordinal;
            }
        }
    }
    let header = Header {
        segment: number,
        bytes: expected.bytes,
        frames: expected.frames,
        first_seq: expected.first_seq,
        last_seq: expected.last_seq,
        previous: start.head,
        head: expected.head,
        at_before: start.at,
        name_base: start.names,
        name_count: gathered.names.len() as u64,
        last_at: gathered.last_at,
        name_frames: gathered.name_frames.len() as u64,
        introduced: introduced.len() as u64,
        records: gathered.records.len() as u64,
        members: members.len().div_ceil(BLOCK) as u64,
        postings: postings.len() as u64,
    };
    let mut out = Vec::with_capacity(header.file_len().unwrap_or(0) as usize);
    header.encode(&mut out);
    for (first, offset) in &gathered.name_frames {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for (key, number) in &introduced {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&number.to_le_bytes());
    }
    for (offset, at) in &gathered.records {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&at.millis().to_le_bytes());
    }
    out.extend_from_slice(&table);
    out.extend_from_slice(&postings);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    Ok((header, out))
}

/// Writes an index file whole (a temporary file renamed into place); derived data, so it is
/// not synced: a crash leaves it missing or short, and it is rebuilt.
fn write_index(dir: &Path, number: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!("{number:08}.members.{}-{n}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = crate::files::no_follow(&mut options)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|_| std::fs::rename(&temporary, index_path(dir, number)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Reads `len` bytes at `offset`.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; len];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buffer, offset)?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read as _, Seek, SeekFrom};
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut buffer)?;
    }
    Ok(buffer)
}

/// Where a loaded index's tables are read from.
enum Source {
    /// The file, with its length and modification time when it was checked.
    File { file: File, len: u64, modified: Option<SystemTime> },
    /// Built but not written (the directory is read-only).
    Memory(Vec<u8>),
}

impl Source {
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        match self {
            Source::File { file, .. } => {
                read_at(file, offset, len).map_err(|e| format!("cannot read the index: {e}"))
            }
            Source::Memory(bytes) => usize::try_from(offset)
                .ok()
                .and_then(|at| bytes.get(at..at.checked_add(len)?))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "the index is shorter than its tables".to_string()),
        }
    }

    /// Whether the file on disk is still the one that was checked.
    fn unchanged(&self, path: &Path) -> bool {
        match self {
            Source::File { len, modified, .. } => {
                std::fs::metadata(path).is_ok_and(|m| m.len() == *len && m.modified().ok() == *modified)
            }
            Source::Memory(_) => true,
        }
    }
}

fn pairs(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let (a, b) = c.split_at(8);
            (
                u64::from_le_bytes(a.try_into().unwrap_or([0; 8])),
                u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            )
        })
        .collect()
}

fn word(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// A checked index of a sealed segment.
struct SealedIndex {
    header: Header,
    source: Source,
    /// (first number, offset) of each names entry.
    name_frames: Vec<(u64, u64)>,
    /// (member key, number), sorted.
    introduced: Vec<(u64, u64)>,
    /// (first member number, where its block starts) of each block of members.
    fences: Vec<(u64, u64)>,
    segment: File,
}

impl SealedIndex {
    /// Checks `bytes` as the index of segment `number` starting from `start` (when known) and
    /// matching its seal.
    fn check(bytes: &[u8], number: u64, start: Option<Start>, seal: &Seal) -> Result<Header, String> {
        let header = Header::decode(bytes).ok_or("the index's header is not one")?;
        if header.file_len() != Some(bytes.len() as u64) {
            return Err("the index's length is not what its header says".into());
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM);
        if blake3::hash(body).as_bytes() != checksum {
            return Err("the index's checksum does not match".into());
        }
        if header.segment != number || !header.matches_seal(seal) {
            return Err("the index was not built from this segment".into());
        }
        if start.is_some_and(|s| s != header.start()) {
            return Err("the index does not follow the previous segment's".into());
        }
        Ok(header)
    }

    fn from_checked(header: Header, bytes: &[u8], source: Source, segment: File) -> SealedIndex {
        let tables = |at: u64, count: u64| {
            let at = at as usize;
            pairs(bytes.get(at..at + 16 * count as usize).unwrap_or_default())
        };
        SealedIndex {
            name_frames: tables(header.name_frames_at(), header.name_frames),
            introduced: tables(header.introduced_at(), header.introduced),
            fences: tables(header.members_at(), header.members),
            header,
            source,
            segment,
        }
    }

    /// The ordinals of the records naming member `number`, increasing.
    fn postings(&self, number: u64) -> Result<Vec<u32>, String> {
        // The last block whose first number is at most `number`.
        let block = self.fences.partition_point(|(first, _)| *first <= number);
        let Some(&(first, begin)) = block.checked_sub(1).and_then(|b| self.fences.get(b)) else {
            return Ok(Vec::new());
        };
        let end = self.fences.get(block).map_or(self.header.postings, |(_, at)| *at);
        if begin > end || end > self.header.postings {
            return Err("a block of the index runs past it".into());
        }
        let bytes = self.source.read(self.header.postings_at() + begin, (end - begin) as usize)?;
        let malformed = || "a block of the index is malformed".to_string();
        let (mut cursor, mut member) = (0usize, first);
        for k in 0..BLOCK {
            if cursor >= bytes.len() {
                break;
            }
            let delta = varint_at(&bytes, &mut cursor).ok_or_else(malformed)?;
            if k > 0 && delta == 0 {
                return Err(malformed());
            }
            member = member.checked_add(delta).ok_or_else(malformed)?;
            let count = varint_at(&bytes, &mut cursor).ok_or_else(malformed)?;
            if count == 0 || count > self.header.records {
                return Err(malformed());
            }
            let mut ordinals = Vec::with_capacity(if member == number { count as usize } else { 0 });
            let mut ordinal = 0u64;
            for i in 0..count {
                let step = varint_at(&bytes, &mut cursor).ok_or_else(malformed)?;
                if i > 0 && step == 0 {
                    return Err(malformed());
                }
                ordinal = ordinal.checked_add(step).ok_or_else(malformed)?;
                if ordinal >= self.header.records {
                    return Err("a posting list names no record".into());
                }
                if member == number {
                    ordinals.push(u32::try_from(ordinal).map_err(|_| malformed())?);
                }
            }
            if member >= number {
                return Ok(ordinals);
            }
        }
        if cursor != bytes.len() {
            return Err(malformed());
        }
        Ok(Vec::new())
    }

    fn record(&self, ordinal: u32) -> Result<(u64, Instant), String> {
        let entry = self.source.read(self.header.records_at() + 16 * u64::from(ordinal), 16)?;
        Ok((word(&entry, 0), Instant::from_millis(word(&entry, 8) as i64)))
    }
}

/// Reads the varint at `*at`, moving past it.
fn varint_at(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The open segment's index, in memory, grown by each lookup from where the last one stopped.
struct OpenIndex {
    number: u64,
    start: Start,
    /// Where reading stopped: the end of the last frame that continues the chain.
    offset: u64,
    gathered: Gathered,
    /// Member id → number, for the members this segment numbers.
    members: HashMap<String, u64>,
    segment: File,
}

impl OpenIndex {
    fn open(dir: &Path, number: u64, start: Start) -> Result<OpenIndex, LedgerError> {
        let path = segment_path(dir, number);
        let segment = File::open(&path).map_err(|e| LedgerError::io(&path, e))?;
        Ok(OpenIndex {
            number,
            start,
            offset: 0,
            gathered: Gathered::new(start),
            members: HashMap::new(),
            segment,
        })
    }

    /// Reads what was appended since the last time.
    fn grow(&mut self, dir: &Path) -> Result<(), LedgerError> {
        let path = segment_path(dir, self.number);
        let mut reader = FrameReader::open_at(&path, self.offset)?;
        let mut raw = RawRecord::default();
        loop {
            let offset = match reader.next_frame()? {
                Read::Frame(frame) if continues(&frame, &self.gathered.head) => {
                    let names_before = self.gathered.names.len();
                    self.gathered
                        .take(frame.offset, &frame.payload, frame.stored_hash, &mut raw)
                        .map_err(|reason| damaged(dir, self.number, Some(frame.offset), reason))?;
                    let base = self.start.names;
                    for (i, (kind, name)) in self.gathered.names.iter().enumerate().skip(names_before) {
                        if *kind == NameKind::Member {
                            self.members.insert(name.clone(), base + i as u64);
                        }
                    }
                    self.offset = frame.end();
                    continue;
                }
                Read::Frame(frame) => frame.offset,
                Read::Irregular { offset } => offset,
                Read::End => return Ok(()),
            };
            return match classify_tail(&path, offset, reader.size(), &self.gathered.head)? {
                // A write in progress (or a crash's torn tail): read it next time.
                Tail::Torn { .. } => Ok(()),
                Tail::Damaged { reason } => Err(damaged(dir, self.number, Some(offset), reason)),
            };
        }
    }
}

/// One stream's indexes.
struct StreamIndex {
    name: String,
    dir: PathBuf,
    key: Option<VerifyingKey>,
    /// Segments 1, 2, … in order, every one sealed.
    sealed: Vec<SealedIndex>,
    open: Option<OpenIndex>,
    /// Names already read (and checked) from sealed segments' names entries.
    names: std::cell::RefCell<HashMap<u64, (NameKind, String)>>,
}

/// What a lookup in one segment found wrong with the index (not with the segment).
struct Suspect(String);

/// A lookup's outcome: found, or the index of the sealed segment at this position is suspect
/// (the outer error: the ledger itself could not be read).
type Lookup<T> = Result<Result<T, (usize, Suspect)>, LedgerError>;

/// Counts of what the index did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Index files read and found sound.
    pub loaded: u64,
    /// Index files built because they were missing.
    pub built: u64,
    /// Index files rebuilt because they were damaged, short or did not match their segment.
    pub rebuilt: u64,
    /// Indexes kept in memory because their file could not be written.
    pub unwritten: u64,
}

impl StreamIndex {
    fn key(&mut self) -> Result<VerifyingKey, LedgerError> {
        match self.key {
            Some(key) => Ok(key),
            None => {
                let key = read_verifying_key(&self.dir)?;
                self.key = Some(key);
                Ok(key)
            }
        }
    }

    fn end_of_sealed(&self) -> Start {
        self.sealed.last().map_or_else(Start::default, |s| s.header.end())
    }

    /// Loads segment `number`'s index, or builds it (and writes it) when it is missing or
    /// unsound.
    fn load(
        &mut self,
        number: u64,
        start: Start,
        force: bool,
        stats: &mut IndexStats,
    ) -> Result<SealedIndex, LedgerError> {
        let key = self.key()?;
        let seal_file = seal_path(&self.dir, number);
        let seal = Seal::read(&seal_file, Some(&key)).map_err(|reason| LedgerError::Damaged {
            segment: number,
            path: seal_file.clone(),
            offset: None,
            reason,
        })?;
        let path = index_path(&self.dir, number);
        let segment_file = segment_path(&self.dir, number);
        let segment = File::open(&segment_file).map_err(|e| LedgerError::io(&segment_file, e))?;
        let missing = !path.exists();
        if !force {
            if let Ok(file) = File::open(&path) {
                let meta = file.metadata().ok();
                let bytes =
                    read_at(&file, 0, meta.as_ref().map_or(0, |m| m.len()) as usize).unwrap_or_default();
                if let Ok(header) = SealedIndex::check(&bytes, number, Some(start), &seal) {
                    stats.loaded += 1;
                    let source = Source::File {
                        file,
                        len: bytes.len() as u64,
                        modified: meta.and_then(|m| m.modified().ok()),
                    };
                    return Ok(SealedIndex::from_checked(header, &bytes, source, segment));
                }
            }
        }
        let (header, bytes) = build(&self.dir, number, start, &key)?;
        if missing {
            stats.built += 1;
        } else {
            stats.rebuilt += 1;
        }
        let source = match write_index(&self.dir, number, &bytes) {
            Ok(()) => File::open(&path).ok().and_then(|file| {
                let meta = file.metadata().ok()?;
                let written = read_at(&file, 0, meta.len() as usize).ok()?;
                (written == bytes).then(|| Source::File {
                    file,
                    len: meta.len(),
                    modified: meta.modified().ok(),
                })
            }),
            Err(_) => None,
        };
        let source = source.unwrap_or_else(|| {
            stats.unwritten += 1;
            Source::Memory(bytes.clone())
        });
        Ok(SealedIndex::from_checked(header, &bytes, source, segment))
    }

    /// Brings the indexes up to the stream's segments now.
    fn refresh(&mut self, stats: &mut IndexStats) -> Result<(), LedgerError> {
        let files = segment_files(&self.dir)?;
        for (position, (number, _)) in files.iter().enumerate() {
            if *number != position as u64 + 1 {
                let expected = position as u64 + 1;
                return Err(damaged(&self.dir, expected, None, "the segment is missing".into()));
            }
        }
        let count = files.len() as u64;
        // Segments went away (a repair moved one): start over.
        if (self.sealed.len() as u64) > count || self.open.as_ref().is_some_and(|o| o.number > count) {
            self.sealed.clear();
            self.open = None;
            self.names.borrow_mut().clear();
        }
        // An index file changed on disk since it was checked: check it again.
        if let Some(changed) =
            self.sealed.iter().position(|s| !s.source.unchanged(&index_path(&self.dir, s.header.segment)))
        {
            self.sealed.truncate(changed);
        }
        while (self.sealed.len() as u64) < count {
            let number = self.sealed.len() as u64 + 1;
            if !seal_path(&self.dir, number).exists() {
                if number < count {
                    return Err(damaged(&self.dir, number, None, "a closed segment has no seal".into()));
                }
                break;
            }
            if self.open.as_ref().is_some_and(|o| o.number == number) {
                self.open = None;
            }
            let index = self.load(number, self.end_of_sealed(), false, stats)?;
            self.sealed.push(index);
        }
        let open_number = self.sealed.len() as u64 + 1;
        if open_number <= count {
            let start = self.end_of_sealed();
            if !self.open.as_ref().is_some_and(|o| o.number == open_number && o.start == start) {
                self.open = Some(OpenIndex::open(&self.dir, open_number, start)?);
            }
            if let Some(open) = self.open.as_mut() {
                open.grow(&self.dir)?;
            }
        } else {
            self.open = None;
        }
        Ok(())
    }

    /// The member's number in this stream, if the stream ever numbered it.
    fn number_of(&self, member: &MemberId) -> Lookup<Option<u64>> {
        let key = member_key(member.as_str());
        for sealed in &self.sealed {
            let from = sealed.introduced.partition_point(|(k, _)| *k < key);
            for (_, number) in sealed.introduced.iter().skip(from).take_while(|(k, _)| *k == key) {
                match self.name(*number) {
                    Ok(Ok((NameKind::Member, name))) if name == member.as_str() => {
                        return Ok(Ok(Some(*number)))
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(suspect)) => return Ok(Err(suspect)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Ok(self.open.as_ref().and_then(|o| o.members.get(member.as_str()).copied())))
    }

    /// The identity a number stands for, read from the names entry that numbered it.
    fn name(&self, number: u64) -> Lookup<(NameKind, String)> {
        let position = self.sealed.partition_point(|s| s.header.name_base + s.header.name_count <= number);
        if let Some(found) = self.names.borrow().get(&number).filter(|_| position < self.sealed.len()) {
            return Ok(Ok(found.clone()));
        }
        if let Some(sealed) = self.sealed.get(position) {
            let fail = |why: &str| Ok(Err((position, Suspect(format!("name {number}: {why}")))));
            let Some((first, offset)) = sealed
                .name_frames
                .get(sealed.name_frames.partition_point(|(f, _)| *f <= number).wrapping_sub(1))
            else {
                return fail("no names entry");
            };
            let payload =
                match read_frame(&sealed.segment, *offset, &sealed.header.previous, sealed.header.bytes) {
                    Ok(payload) => payload,
                    Err(why) => return fail(&why),
                };
            let mut names = Vec::new();
            if read_names(&payload, &mut names).is_err() {
                return fail("not a names entry");
            }
            return match names.into_iter().nth((number - first) as usize) {
                Some(found) => {
                    let mut cache = self.names.borrow_mut();
                    if cache.len() >= NAMES_CACHED {
                        cache.clear();
                    }
                    cache.insert(number, found.clone());
                    Ok(Ok(found))
                }
                None => fail("not in its names entry"),
            };
        }
        let open = self.open.as_ref();
        match open.and_then(|o| o.gathered.names.get(number.checked_sub(o.start.names)? as usize)) {
            Some(found) => Ok(Ok(found.clone())),
            None => Err(LedgerError::Corrupt(format!("a record refers to an unknown name number {number}"))),
        }
    }

    /// The first `limit + 1` disclosures of `number` this stream holds after the query's position.
    fn history(&self, number: u64, query: &MemberQuery) -> Lookup<Vec<MemberDisclosure>> {
        let seen = query.seen(&self.name);
        let mut hits = Vec::new();
        let mut names: HashMap<u64, String> = HashMap::new();
        let segments = self.sealed.len() + usize::from(self.open.is_some());
        for position in 0..segments {
            let (ordinals, first_seq, segment, previous, bytes) = match self.sealed.get(position) {
                Some(sealed) => {
                    if sealed.header.last_seq <= seen {
                        continue;
                    }
                    match sealed.postings(number) {
                        Ok(ordinals) => (
                            ordinals,
                            sealed.header.first_seq,
                            &sealed.segment,
                            sealed.header.previous,
                            sealed.header.bytes,
                        ),
                        Err(why) => return Ok(Err((position, Suspect(why)))),
                    }
                }
                None => match &self.open {
                    Some(open) => (
                        open.gathered.postings.get(&number).cloned().unwrap_or_default(),
                        open.gathered.first_seq,
                        &open.segment,
                        open.start.head,
                        open.offset,
                    ),
                    None => break,
                },
            };
            for ordinal in ordinals {
                let seq = first_seq + u64::from(ordinal);
                if seq <= seen {
                    continue;
                }
                let (offset, at) = match self.sealed.get(position) {
                    Some(sealed) => match sealed.record(ordinal) {
                        Ok(found) => found,
                        Err(why) => return Ok(Err((position, Suspect(why)))),
                    },
                    None => match self.open.as_ref().and_then(|o| o.gathered.records.get(ordinal as usize)) {
                        Some(found) => *found,
                        None => {
                            return Err(LedgerError::Corrupt("the open segment's index lost a record".into()))
                        }
                    },
                };
                if !query.in_window(at) {
                    continue;
                }
                let checked = read_frame(segment, offset, &previous, bytes).and_then(|payload| {
                    let mut raw = RawRecord::default();
                    match decode_raw(&payload, &mut Dictionary::default(), Instant::from_millis(0), &mut raw)
                    {
                        Ok(true) if raw.seq == seq => {}
                        _ => return Err(format!("record {seq} is not at byte {offset}")),
                    }
                    let fields = raw
                        .members
                        .get(raw.members.partition_point(|(m, _)| *m < number))
                        .filter(|(m, _)| *m == number)
                        .map(|(_, fields)| *fields)
                        .ok_or_else(|| format!("record {seq} does not name the member"))?;
                    Ok((raw, fields))
                });
                let (raw, fields) = match checked {
                    Ok(found) => found,
                    Err(why) if position < self.sealed.len() => return Ok(Err((position, Suspect(why)))),
                    Err(why) => return Err(damaged(&self.dir, position as u64 + 1, Some(offset), why)),
                };
                let mut resolve = |number: u64, kind: NameKind| -> Lookup<String> {
                    if let Some(name) = names.get(&number) {
                        return Ok(Ok(name.clone()));
                    }
                    match self.name(number)? {
                        Ok((found, name)) if found == kind => {
                            names.insert(number, name.clone());
                            Ok(Ok(name))
                        }
                        Ok(_) => Err(LedgerError::Corrupt(format!(
                            "a record refers to name {number} of another kind"
                        ))),
                        Err(suspect) => Ok(Err(suspect)),
                    }
                };
                macro_rules! resolved {
                    ($number:expr, $kind:expr) => {
                        match resolve($number, $kind)? {
                            Ok(name) => name,
                            Err(suspect) => return Ok(Err(suspect)),
                        }
                    };
                }
                let id_error = |e: consentry_types::InvalidId| LedgerError::Corrupt(e.to_string());
                hits.push(MemberDisclosure {
                    stream: self.name.clone(),
                    seq,
                    at,
                    app: AppId::parse(&resolved!(raw.app, NameKind::App)).map_err(id_error)?,
                    developer: DeveloperId::parse(&resolved!(raw.developer, NameKind::Developer))
                        .map_err(id_error)?,
                    group: GroupId::parse(&resolved!(raw.group, NameKind::Group)).map_err(id_error)?,
                    route: resolved!(raw.route, NameKind::Route),
                    policy_version: raw.policy_version,
                    fields: FieldSet::from_bits(fields),
                });
                if hits.len() > query.limit {
                    return Ok(Ok(hits));
                }
            }
        }
        Ok(Ok(hits))
    }
}

/// Reads the frame at `offset` of a segment and returns its payload once its hash continues
/// the chain from the 32 bytes stored before it (`previous` at the segment's start).
fn read_frame(segment: &File, offset: u64, previous: &[u8; 32], limit: u64) -> Result<Vec<u8>, String> {
    // One read for most frames: the 32 bytes before, the length, and up to 1 KiB after it.
    let from = offset.saturating_sub(32);
    let window = read_at(segment, from, (limit.saturating_sub(from)).min(32 + 4 + 1024 + 32) as usize)
        .map_err(|e| e.to_string())?;
    let at = (offset - from) as usize;
    let before: [u8; 32] = if offset == 0 {
        *previous
    } else {
        window.get(..32).and_then(|b| b.try_into().ok()).ok_or("a frame offset inside the first frame")?
    };
    let length = window.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let length = u64::from(length.ok_or_else(|| format!("no frame at byte {offset}"))?);
    if length == 0 || length > MAX_PAYLOAD as u64 || offset + 36 + length > limit {
        return Err(format!("no frame at byte {offset}"));
    }
    let (start, end) = (at + 4, at + 4 + length as usize + 32);
    let owned;
    let rest = match window.get(start..end) {
        Some(rest) => rest,
        None => {
            owned = read_at(segment, offset + 4, length as usize + 32).map_err(|e| e.to_string())?;
            owned.as_slice()
        }
    };
    let (payload, stored) = rest.split_at(length as usize);
    if chain(&before, payload).as_slice() != stored {
        return Err(format!("the frame at byte {offset} does not continue the hash chain"));
    }
    Ok(payload.to_vec())
}

/// Member histories of every stream under a ledger root, answered from the member index (see
/// the module's documentation). Keep one open to reuse what it has read; it is brought up to
/// date at each lookup.
pub struct MemberIndex {
    root: PathBuf,
    streams: BTreeMap<PathBuf, StreamIndex>,
    stats: IndexStats,
}

impl MemberIndex {
    pub fn open(root: &Path) -> MemberIndex {
        MemberIndex { root: root.to_path_buf(), streams: BTreeMap::new(), stats: IndexStats::default() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stats(&self) -> IndexStats {
        self.stats
    }

    /// A page of `member`'s history: the same page [`crate::scan_member_history`] reads.
    pub fn history(&mut self, member: &MemberId, query: &MemberQuery) -> Result<MemberHistory, LedgerError> {
        let found = streams(&self.root)?;
        self.streams.retain(|dir, _| found.iter().any(|s| &s.dir == dir));
        let mut pages = Vec::with_capacity(found.len());
        for stream in found {
            let index = self.streams.entry(stream.dir.clone()).or_insert_with(|| StreamIndex {
                name: stream.name(),
                dir: stream.dir.clone(),
                key: None,
                sealed: Vec::new(),
                open: None,
                names: Default::default(),
            });
            index.refresh(&mut self.stats)?;
            // One rebuild per segment whose index a lookup found wrong, then the answer or an error.
            let mut rebuilt = Vec::new();
            let hits = loop {
                let attempt = match index.number_of(member)? {
                    Ok(None) => Ok(Vec::new()),
                    Ok(Some(number)) => index.history(number, query)?,
                    Err(suspect) => Err(suspect),
                };
                match attempt {
                    Ok(hits) => break hits,
                    Err((position, Suspect(why))) => {
                        if rebuilt.contains(&position) {
                            return Err(LedgerError::Corrupt(format!(
                                "segment {} of stream {}: {why}",
                                position + 1,
                                index.name
                            )));
                        }
                        rebuilt.push(position);
                        index.sealed.truncate(position);
                        index.open = None;
                        let number = position as u64 + 1;
                        let rebuilt_index =
                            index.load(number, index.end_of_sealed(), true, &mut self.stats)?;
                        index.sealed.push(rebuilt_index);
                        index.refresh(&mut self.stats)?;
                    }
                }
            };
            pages.push(hits);
        }
        Ok(merge(pages, query.limit))
    }
}

/// Builds (or checks) the index of every sealed segment of the stream in `dir`.
pub fn index_sealed_segments(dir: &Path) -> Result<IndexStats, LedgerError> {
    let mut stream = StreamIndex {
        name: String::new(),
        dir: dir.to_path_buf(),
        key: None,
        sealed: Vec::new(),
        open: None,
        names: Default::default(),
    };
    let mut stats = IndexStats::default();
    for (number, _) in segment_files(dir)? {
        if !seal_path(dir, number).exists() || number != stream.sealed.len() as u64 + 1 {
            break;
        }
        let index = stream.load(number, stream.end_of_sealed(), false, &mut stats)?;
        stream.sealed.push(index);
    }
    Ok(stats)
}

/// What the writer does, on a thread of its own, once it sealed segment `number`: builds its
/// index from where the previous segment's index ends (every sealed segment's, when that one
/// is not sound).
pub(crate) fn index_after_seal(dir: &Path, number: u64) -> Result<IndexStats, LedgerError> {
    let mut stream = StreamIndex {
        name: String::new(),
        dir: dir.to_path_buf(),
        key: None,
        sealed: Vec::new(),
        open: None,
        names: Default::default(),
    };
    let mut stats = IndexStats::default();
    let key = stream.key()?;
    let start = match number.checked_sub(1).filter(|p| *p > 0) {
        None => Start::default(),
        Some(previous) => {
            let end = std::fs::read(index_path(dir, previous)).ok().and_then(|bytes| {
                let seal = Seal::read(&seal_path(dir, previous), Some(&key)).ok()?;
                SealedIndex::check(&bytes, previous, None, &seal).ok().map(|h| h.end())
            });
            match end {
                Some(end) => end,
                None => return index_sealed_segments(dir),
            }
        }
    };
    stream.load(number, start, false, &mut stats)?;
    Ok(stats)
}
