//! Walking the ledger's segments in order, frame by frame, checking the hash chain across them
//! and telling a torn tail from damage: what every reader (open, verify, entries) shares, so
//! that they all draw the line in the same place.

use std::path::{Path, PathBuf};

use crate::segment::{
    classify_tail, continues, seal_path, segment_files, segment_path, Frame, FrameReader, Read, Tail,
};
use crate::LedgerError;

/// One step of the walk.
pub(crate) enum Step {
    /// A frame that continues the chain.
    Frame(Frame),
    /// The segment just walked ended.
    SegmentEnd(SegmentEnd),
    /// No more segments.
    End,
}

/// How a segment ended.
pub(crate) struct SegmentEnd {
    pub number: u64,
    /// Bytes of whole frames that continue the chain.
    pub length: u64,
    /// Bytes after them that a crash left (only ever in the last segment, when unsealed).
    pub torn: u64,
    pub sealed: bool,
    /// The chain head before the segment's first frame.
    pub previous: [u8; 32],
}

struct Current {
    number: u64,
    path: PathBuf,
    reader: FrameReader,
    sealed: bool,
    last: bool,
    previous: [u8; 32],
}

/// The walk over every segment of a ledger directory.
pub(crate) struct Chain {
    dir: PathBuf,
    files: Vec<(u64, PathBuf)>,
    next: usize,
    current: Option<Current>,
    head: [u8; 32],
}

impl Chain {
    pub(crate) fn open(dir: &Path) -> Result<Chain, LedgerError> {
        Ok(Chain {
            dir: dir.to_path_buf(),
            files: segment_files(dir)?,
            next: 0,
            current: None,
            head: [0; 32],
        })
    }

    /// The walk of one segment alone, the one at `position` of `files` (every segment of the
    /// directory, in order), from the chain head `head` its first frame continues; it ends
    /// after that segment's [`Step::SegmentEnd`].
    pub(crate) fn one_segment(
        dir: &Path,
        files: Vec<(u64, PathBuf)>,
        position: usize,
        head: [u8; 32],
    ) -> Chain {
        Chain { dir: dir.to_path_buf(), files, next: position, current: None, head }
    }

    /// The hash of the last frame walked (all zeros before the first).
    pub(crate) fn head(&self) -> [u8; 32] {
        self.head
    }

    /// The number of the segment being walked (or about to be).
    pub(crate) fn segment(&self) -> u64 {
        self.current.as_ref().map_or(self.next as u64 + 1, |c| c.number)
    }

    /// Whether every segment was walked.
    pub(crate) fn finished(&self) -> bool {
        self.current.is_none() && self.next >= self.files.len()
    }

    fn damaged(number: u64, path: &Path, offset: Option<u64>, reason: String) -> LedgerError {
        LedgerError::Damaged { segment: number, path: path.to_path_buf(), offset, reason }
    }

    pub(crate) fn step(&mut self) -> Result<Step, LedgerError> {
        let current = match self.current.as_mut() {
            Some(current) => current,
            None => {
                let Some((number, path)) = self.files.get(self.next).cloned() else { return Ok(Step::End) };
                self.next += 1;
                let expected = self.next as u64;
                if number != expected {
                    let missing = segment_path(&self.dir, expected);
                    return Err(Self::damaged(expected, &missing, None, "the segment is missing".into()));
                }
                let last = self.next == self.files.len();
                let sealed = seal_path(&self.dir, number).exists();
                if !last && !sealed {
                    let reason = "a closed segment has no seal".to_string();
                    return Err(Self::damaged(number, &path, None, reason));
                }
                let reader = FrameReader::open(&path)?;
                self.current.insert(Current { number, path, reader, sealed, last, previous: self.head })
            }
        };
        let offset = match current.reader.next_frame()? {
            Read::Frame(frame) if continues(&frame, &self.head) => {
                self.head = frame.stored_hash;
                return Ok(Step::Frame(frame));
            }
            Read::Frame(frame) => frame.offset,
            Read::Irregular { offset } => offset,
            Read::End => {
                let length = current.reader.size();
                return Ok(self.end(length, 0));
            }
        };
        let (number, path) = (current.number, current.path.clone());
        match classify_tail(&path, offset, current.reader.size(), &self.head)? {
            Tail::Torn { bytes } if current.last && !current.sealed => Ok(self.end(offset, bytes)),
            Tail::Torn { bytes } => {
                let reason = format!(
                    "the segment is {} but its last {bytes} bytes are not a whole frame: it was cut short or altered",
                    if current.sealed { "sealed" } else { "closed" }
                );
                Err(Self::damaged(number, &path, Some(offset), reason))
            }
            Tail::Damaged { reason } => Err(Self::damaged(number, &path, Some(offset), reason)),
        }
    }

    fn end(&mut self, length: u64, torn: u64) -> Step {
        match self.current.take() {
            Some(c) => Step::SegmentEnd(SegmentEnd {
                number: c.number,
                length,
                torn,
                sealed: c.sealed,
                previous: c.previous,
            }),
            None => Step::End,
        }
    }
}
