//! Segment files: reading them frame by frame, and telling a torn tail (what a crash can leave
//! after the last whole frame) from damage to frames that were acknowledged.
//!
//! An append is `write_all` of a batch of whole frames, then `fdatasync`; only then are its
//! records acknowledged. A crash before the sync can leave, after the last synced frame, any
//! prefix of the batch, and on some file systems zeros in place of its end (blocks allocated
//! but never written). That is a torn tail, and it is the only thing opening may cut. Its
//! exact shape, from the end `p` of the last frame that continues the chain:
//!
//! 1. all zeros; or
//! 2. a frame at `p` whose declared length runs past the end of the file, with no frame that
//!    continues the chain anywhere after `p` (no whole frame at `p` for any length, and no
//!    frame at any later offset `o` that chains from the 32 bytes stored just before `o`);
//!    or
//! 3. a whole frame at `p` with a wrong hash whose bytes end in zeros through to the end of
//!    the file, where the part of its stored hash that is not zero (if any) equals the hash
//!    computed over its payload (a zero fill that began inside the frame).
//!
//! Anything else is damage: a length of 0 or above the maximum followed by non-zero bytes, a
//! whole frame whose hash does not match and does not end in such a fill, or a frame that
//! continues the chain after the bytes that do not. A bit flipped in an acknowledged frame's
//! length or hash is always one of these (a flipped hash, or a flipped length that makes a
//! whole frame or runs past a frame that chains), so it is never cut. For rule 3 to cut a
//! damaged frame, 32 hash bytes would have to match zeros or the computed hash by chance.
//!
//! A crash cannot leave a zero-filled hole followed by bytes that were written after it in the
//! same batch on the file systems we run on; if one did, opening refuses, which is safe.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec::{chain, MAX_PAYLOAD, PAYLOAD_KINDS};
use crate::LedgerError;

/// Bytes of a frame besides its payload: the length before it and the hash after it.
pub(crate) const FRAMING: u64 = 4 + 32;

/// Bytes of hashing (or a tenth as many hash finalizations) the search for frames after a
/// damaged one may spend before it gives up and calls the tail damaged, which is safe.
const SEARCH_BUDGET: u64 = 1 << 30;

/// One frame as read from disk.
pub(crate) struct Frame {
    pub offset: u64,
    pub payload: Vec<u8>,
    pub stored_hash: [u8; 32],
}

impl Frame {
    /// The offset just after the frame.
    pub(crate) fn end(&self) -> u64 {
        self.offset + FRAMING + self.payload.len() as u64
    }
}

/// What is at the reader's position.
pub(crate) enum Read {
    /// A whole frame with a possible length (its hash is not checked here).
    Frame(Frame),
    /// The end of the file, exactly after a frame.
    End,
    /// Bytes from `offset` that are not a whole frame with a possible length.
    Irregular { offset: u64 },
}

/// Reads frames sequentially, up to the length the file had when it was opened.
pub(crate) struct FrameReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    size: u64,
}

impl FrameReader {
    pub(crate) fn open(path: &Path) -> Result<FrameReader, LedgerError> {
        let file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
        let size = file.metadata().map_err(|e| LedgerError::io(path, e))?.len();
        Ok(FrameReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            offset: 0,
            size,
        })
    }

    /// Reads from `offset` (the end of a frame read earlier) up to the file's length now.
    pub(crate) fn open_at(path: &Path, offset: u64) -> Result<FrameReader, LedgerError> {
        let mut file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
        let size = file.metadata().map_err(|e| LedgerError::io(path, e))?.len();
        file.seek(SeekFrom::Start(offset)).map_err(|e| LedgerError::io(path, e))?;
        Ok(FrameReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, file),
            offset,
            size,
        })
    }

    /// The file's length when it was opened; later appends are not read.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn fill(&mut self, buffer: &mut [u8]) -> Result<bool, LedgerError> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.reader.read(buffer.get_mut(filled..).unwrap_or_default()) {
                Ok(0) => return Ok(false),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(LedgerError::io(&self.path, e)),
            }
        }
        Ok(true)
    }

    /// The next frame. After `Irregular` the reader's position is undefined.
    pub(crate) fn next_frame(&mut self) -> Result<Read, LedgerError> {
        let start = self.offset;
        if start >= self.size {
            return Ok(Read::End);
        }
        let irregular = Ok(Read::Irregular { offset: start });
        if self.size - start < FRAMING + 1 {
            return irregular;
        }
        let mut length = [0u8; 4];
        if !self.fill(&mut length)? {
            return irregular;
        }
        let length = u64::from(u32::from_le_bytes(length));
        if length == 0 || length > MAX_PAYLOAD as u64 || start + FRAMING + length > self.size {
            return irregular;
        }
        let mut payload = vec![0u8; length as usize];
        let mut stored_hash = [0u8; 32];
        if !self.fill(&mut payload)? || !self.fill(&mut stored_hash)? {
            return irregular;
        }
        self.offset = start + FRAMING + length;
        Ok(Read::Frame(Frame { offset: start, payload, stored_hash }))
    }
}

/// Whether a frame continues the chain from `previous`.
pub(crate) fn continues(frame: &Frame, previous: &[u8; 32]) -> bool {
    chain(previous, &frame.payload) == frame.stored_hash
}

/// What follows the last frame of a segment that continues the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Bytes a crash can leave from an append that was never acknowledged.
    Torn { bytes: u64 },
    /// Bytes of acknowledged frames were altered.
    Damaged { reason: String },
}

/// Classifies the bytes of `path` from `offset` (where its last frame that continues the
/// chain, with hash `head`, ends) up to `size`.
pub(crate) fn classify_tail(
    path: &Path,
    offset: u64,
    size: u64,
    head: &[u8; 32],
) -> Result<Tail, LedgerError> {
    let base = offset.saturating_sub(32);
    let mut file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
    file.seek(SeekFrom::Start(base)).map_err(|e| LedgerError::io(path, e))?;
    let mut window = Vec::new();
    file.take(size.saturating_sub(base)).read_to_end(&mut window).map_err(|e| LedgerError::io(path, e))?;
    Ok(classify(&window, (offset - base) as usize, offset, head))
}

fn length_at(bytes: &[u8], at: usize) -> Option<usize> {
    let field: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(field)).ok()
}

/// The classification itself: `window` holds the file from up to 32 bytes before `offset`
/// (which is at index `at`) to its end.
pub(crate) fn classify(window: &[u8], at: usize, offset: u64, head: &[u8; 32]) -> Tail {
    let rest = window.get(at..).unwrap_or_default();
    let bytes = rest.len() as u64;
    // Where the zeros that run to the end of the file begin.
    let zeros_from = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if zeros_from == 0 {
        return Tail::Torn { bytes };
    }
    if let Some(length) = length_at(rest, 0) {
        if length == 0 || length > MAX_PAYLOAD {
            return Tail::Damaged {
                reason: format!(
                    "the frame's length field reads {length}, which no frame has, and non-zero bytes follow: it was altered"
                ),
            };
        }
        let hash_start = 4 + length;
        if let (Some(payload), Some(stored)) =
            (rest.get(4..hash_start), rest.get(hash_start..hash_start + 32))
        {
            if zeros_from < hash_start + 32 {
                // A zero fill that began inside this frame: torn, if what is left of the
                // stored hash is the real one.
                let real = zeros_from.saturating_sub(hash_start);
                if real == 0 || chain(head, payload).get(..real) == stored.get(..real) {
                    return Tail::Torn { bytes };
                }
            }
            return Tail::Damaged {
                reason: "the frame does not continue the hash chain: its length, bytes or hash were altered"
                    .to_string(),
            };
        }
    }
    // The frame at `offset` runs past the end of the file: a torn write, unless frames that
    // continue the chain are there.
    let mut budget = SEARCH_BUDGET;
    match frame_after(window, at, &mut budget) {
        Some(Ok(found)) => {
            return Tail::Damaged {
                reason: format!(
                    "a whole frame follows at byte {}, so the bytes before it were altered, not cut short by a crash",
                    offset + (found - at) as u64
                ),
            }
        }
        Some(Err(())) => return too_much(bytes),
        None => {}
    }
    match whole_frame_here(rest, head, &mut budget) {
        Some(Ok(length)) => Tail::Damaged {
            reason: format!(
                "the frame's length field says {} bytes, but a whole frame of {length} bytes that continues the chain is there: its length was altered",
                length_at(rest, 0).unwrap_or(0)
            ),
        },
        Some(Err(())) => too_much(bytes),
        None => Tail::Torn { bytes },
    }
}

fn too_much(bytes: u64) -> Tail {
    Tail::Damaged {
        reason: format!(
            "the {bytes} bytes from here are not whole frames and are too many to tell from a torn write"
        ),
    }
}

/// The first index after `at` where a frame starts that continues the chain from the 32 bytes
/// stored just before it; `Some(Err)` when the budget ran out first.
fn frame_after(window: &[u8], at: usize, budget: &mut u64) -> Option<Result<usize, ()>> {
    let first = (at + 1).max(32);
    for start in first..window.len() {
        let Some(length) = length_at(window, start) else { break };
        if length == 0 || length > MAX_PAYLOAD {
            continue;
        }
        let hash_start = start + 4 + length;
        let (Some(payload), Some(stored), Some(previous)) = (
            window.get(start + 4..hash_start),
            window.get(hash_start..hash_start + 32),
            window.get(start - 32..start),
        ) else {
            continue;
        };
        if !payload.first().is_some_and(|kind| PAYLOAD_KINDS.contains(kind)) {
            continue;
        }
        *budget = match budget.checked_sub(length as u64) {
            Some(left) => left,
            None => return Some(Err(())),
        };
        let previous: [u8; 32] = previous.try_into().unwrap_or([0; 32]);
        if chain(&previous, payload).as_slice() == stored {
            return Some(Ok(start));
        }
    }
    None
}

/// Whether the bytes at the start of `rest` hold a whole frame that continues the chain from
/// `head` for some length other than the one its length field declares (which runs past the
/// end of the file); returns that length.
fn whole_frame_here(rest: &[u8], head: &[u8; 32], budget: &mut u64) -> Option<Result<usize, ()>> {
    let payloads = rest.get(4..)?;
    if !payloads.first().is_some_and(|kind| PAYLOAD_KINDS.contains(kind)) {
        return None;
    }
    let longest = payloads.len().checked_sub(32)?.min(MAX_PAYLOAD);
    let mut hasher = blake3::Hasher::new();
    hasher.update(head);
    for length in 1..=longest {
        hasher.update(payloads.get(length - 1..length)?);
        *budget = match budget.checked_sub(10) {
            Some(left) => left,
            None => return Some(Err(())),
        };
        if Some(hasher.finalize().as_bytes().as_slice()) == payloads.get(length..length + 32) {
            return Some(Ok(length));
        }
    }
    None
}

/// The segment files in order, with their numbers.
pub(crate) fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(LedgerError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LedgerError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(number) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
            files.push((number, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.seg"))
}

pub(crate) fn seal_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.seal"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame;

    /// Three frames chained from zero; returns the bytes and each frame's end.
    fn three_frames() -> (Vec<u8>, Vec<usize>, Vec<[u8; 32]>) {
        let mut bytes = Vec::new();
        let mut head = [0u8; 32];
        let (mut ends, mut heads) = (Vec::new(), Vec::new());
        for n in 0..3u8 {
            let payload: Vec<u8> = std::iter::once(2).chain((0..40 + n * 10).map(|i| i ^ n)).collect();
            head = frame(&mut bytes, &head, &payload);
            ends.push(bytes.len());
            heads.push(head);
        }
        (bytes, ends, heads)
    }

    fn tail_after_first(bytes: &[u8], first_end: usize, head: &[u8; 32]) -> Tail {
        let base = first_end.saturating_sub(32);
        classify(bytes.get(base..).unwrap_or_default(), first_end - base, first_end as u64, head)
    }

    #[test]
    fn every_prefix_of_a_frame_and_every_zero_fill_is_torn() {
        let (bytes, ends, heads) = three_frames();
        let (first, second) = (ends[0], ends[1]);
        for cut in first + 1..second {
            let torn = tail_after_first(&bytes[..cut], first, &heads[0]);
            assert_eq!(torn, Tail::Torn { bytes: (cut - first) as u64 }, "prefix of {cut}");
            let mut filled = bytes[..cut].to_vec();
            filled.resize(second + 100, 0);
            let torn = tail_after_first(&filled, first, &heads[0]);
            assert!(matches!(torn, Tail::Torn { .. }), "zero fill after {cut}: {torn:?}");
        }
    }

    #[test]
    fn a_flipped_length_or_hash_bit_is_damage() {
        let (bytes, ends, heads) = three_frames();
        let first = ends[0];
        for at in (first..first + 4).chain(ends[1] - 32..ends[1]) {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                let tail = tail_after_first(&damaged, first, &heads[0]);
                assert!(matches!(tail, Tail::Damaged { .. }), "bit {bit} of byte {at}: {tail:?}");
            }
        }
    }

    #[test]
    fn the_last_frame_with_a_longer_length_is_damage_not_a_torn_write() {
        let (bytes, ends, heads) = three_frames();
        let mut damaged = bytes.clone();
        damaged[ends[1] + 1] ^= 0x01; // +256: runs past the end of the file
        let tail = tail_after_first(&damaged, ends[1], &heads[1]);
        assert!(
            matches!(&tail, Tail::Damaged { reason } if reason.contains("length was altered")),
            "{tail:?}"
        );
    }
}
