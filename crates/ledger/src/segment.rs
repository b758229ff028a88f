//! Reading segment files frame by frame, and where a torn tail begins.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::codec::{chain, MAX_PAYLOAD};
use crate::LedgerError;

/// One frame as read from disk.
pub(crate) struct Frame {
    pub offset: u64,
    pub payload: Vec<u8>,
    pub stored_hash: [u8; 32],
}

/// What ended a scan early.
pub(crate) enum Stop {
    /// The file ends inside a frame: a write that never completed.
    Torn {
        offset: u64,
    },
    Io(std::io::Error),
}

/// Reads frames sequentially.
pub(crate) struct FrameReader {
    reader: BufReader<File>,
    offset: u64,
}

impl FrameReader {
    pub(crate) fn open(path: &Path) -> Result<FrameReader, LedgerError> {
        let file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
        Ok(FrameReader { reader: BufReader::with_capacity(1 << 20, file), offset: 0 })
    }

    fn fill(&mut self, buffer: &mut [u8]) -> Result<usize, std::io::Error> {
        let mut filled = 0;
        while filled < buffer.len() {
            match self.reader.read(buffer.get_mut(filled..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    /// The next frame, `Ok(None)` at a clean end, or why it stopped.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, Stop> {
        let start = self.offset;
        let mut length = [0u8; 4];
        match self.fill(&mut length) {
            Ok(0) => return Ok(None),
            Ok(4) => {}
            Ok(_) => return Err(Stop::Torn { offset: start }),
            Err(e) => return Err(Stop::Io(e)),
        }
        let length = u32::from_le_bytes(length) as usize;
        if length == 0 || length > MAX_PAYLOAD {
            // A zeroed or garbage length: what a torn write leaves behind.
            return Err(Stop::Torn { offset: start });
        }
        let mut payload = vec![0u8; length];
        match self.fill(&mut payload) {
            Ok(n) if n == length => {}
            Ok(_) => return Err(Stop::Torn { offset: start }),
            Err(e) => return Err(Stop::Io(e)),
        }
        let mut stored_hash = [0u8; 32];
        match self.fill(&mut stored_hash) {
            Ok(32) => {}
            Ok(_) => return Err(Stop::Torn { offset: start }),
            Err(e) => return Err(Stop::Io(e)),
        }
        self.offset = start + 4 + length as u64 + 32;
        Ok(Some(Frame { offset: start, payload, stored_hash }))
    }
}

/// Whether a frame continues the chain from `previous`.
pub(crate) fn continues(frame: &Frame, previous: &[u8; 32]) -> bool {
    chain(previous, &frame.payload) == frame.stored_hash
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
