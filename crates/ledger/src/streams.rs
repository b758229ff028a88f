//! A ledger of several streams: under a ledger root (which may be shared storage), each
//! serving node writes its own stream, `<root>/<node>/`, chained, sealed, signed and
//! checkpointed on its own (its own key, its own record numbers). Readers treat the ledger as
//! all of its streams (see `merge.rs`).
//!
//! Two processes never write one stream: opening a stream for appends takes an exclusive lock
//! on its `writer.lock` (`flock`, released by the kernel when the process ends, so a killed
//! node leaves no stale lock) and refuses, naming the holder, when another has it.
//!
//! A ledger from before streams (segments directly in the root) is the stream of the node that
//! wrote it: the first node to open a stream under that root adopts it. Adopting renames the
//! files, unchanged, into `<root>/<node>/` (first into `<root>/.adopting-<node>/`, then that
//! directory into place), so its chain, seals, checkpoints and key keep their meaning; the
//! node goes on appending to it. The caller is told what moved and says so. A single-node
//! ledger that would not open (damage) is not moved: opening refuses as it always did. A crash halfway
//! leaves the staging directory, and the next open finishes the same adoption. Until then
//! readers see the files that have not moved yet as the single-node stream.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};

use consentry_types::NodeId;

use crate::files::sync_dir;
use crate::LedgerError;

/// The lock file in a stream's directory.
pub(crate) const WRITER_LOCK: &str = "writer.lock";
/// The lock file in a ledger root, held while a single-node ledger is adopted.
const ROOT_LOCK: &str = "root.lock";
/// Where a single-node ledger's files are gathered before the directory takes its node's name.
const ADOPTING: &str = ".adopting-";

/// One stream of a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The node that writes it; `None` for a single-node ledger not adopted yet (its files
    /// directly in the root).
    pub node: Option<NodeId>,
    pub dir: PathBuf,
}

impl Stream {
    /// How the stream is named in messages: its node, or `single-node`.
    pub fn name(&self) -> String {
        match &self.node {
            Some(node) => node.to_string(),
            None => "single-node".to_string(),
        }
    }
}

/// Whether a file name belongs to a stream (what a single-node ledger has in its root).
fn is_stream_file(name: &str) -> bool {
    name.ends_with(".seg")
        || name.ends_with(".seal")
        || name.ends_with(".tmp")
        || matches!(name, "checkpoints" | "repairs" | "signing.key" | "signing.pub" | crate::DAMAGED_DIR)
}

/// Whether `dir` holds anything of a stream (segments, seals, keys, checkpoints, repairs).
fn holds_a_stream(dir: &Path) -> Result<bool, LedgerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LedgerError::io(dir, e)),
    };
    for entry in entries {
        let name = entry.map_err(|e| LedgerError::io(dir, e))?.file_name();
        if is_stream_file(&name.to_string_lossy()) && name != crate::DAMAGED_DIR {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every stream under `root`, the single-node one (if any) first, then by node id. A root
/// that does not exist has none. `root` may also be one stream's own directory: it is then
/// that stream, single.
pub fn streams(root: &Path) -> Result<Vec<Stream>, LedgerError> {
    let mut found = Vec::new();
    if holds_a_stream(root)? {
        found.push(Stream { node: None, dir: root.to_path_buf() });
    }
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(LedgerError::io(root, e)),
    };
    let mut nodes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LedgerError::io(root, e))?;
        let Ok(node) = NodeId::parse(&entry.file_name().to_string_lossy()) else { continue };
        let is_dir = entry.file_type().map_err(|e| LedgerError::io(&entry.path(), e))?.is_dir();
        if is_dir && holds_a_stream(&entry.path())? {
            nodes.push(Stream { node: Some(node), dir: entry.path() });
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    found.extend(nodes);
    Ok(found)
}

/// An exclusive lock on a file, held until dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path` (created if missing, mode 0600) without waiting; when another
    /// holds it, refuses with who wrote that they hold it.
    pub(crate) fn try_take(path: &Path, what: &str) -> Result<FileLock, LedgerError> {
        let mut file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(200).read_to_string(&mut holder);
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                return Err(LedgerError::Locked(format!(
                    "{what} is being written by {holder} (lock held on {}); two processes never write one stream: give each node its own --node",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LedgerError::io(path, e)),
        }
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        );
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(format!("{holder}\n").as_bytes()));
        written.map_err(|e| LedgerError::io(path, e))?;
        Ok(FileLock { _file: file })
    }

    /// Takes the lock on `path`, waiting for its holder to let go.
    fn take(path: &Path) -> Result<FileLock, LedgerError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(|e| LedgerError::io(path, e))?;
        Ok(FileLock { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File, LedgerError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    crate::files::no_follow(&mut options).open(path).map_err(|e| LedgerError::io(path, e))
}

/// What adopting a single-node ledger moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub node: NodeId,
    /// The stream's directory now.
    pub dir: PathBuf,
    /// The names moved, unchanged, from the root into `dir`.
    pub moved: Vec<String>,
}

/// Creates `dir` (and parents) readable by its owner only, if missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| LedgerError::io(dir, e))
}

/// Makes a single-node ledger in `root` (segments directly in it) the stream of `node`, or
/// finishes an adoption a crash interrupted (for the node it was started for). `None` when
/// there is nothing to adopt. Refuses, changing nothing, while a process writes the
/// single-node ledger, or when `node` already has a stream (two chains cannot become one).
pub fn adopt_single_node_ledger(root: &Path, node: &NodeId) -> Result<Option<Adoption>, LedgerError> {
    if !root.is_dir() {
        return Ok(None);
    }
    let _root = FileLock::take(&root.join(ROOT_LOCK))?;
    let mut staging = None;
    for entry in std::fs::read_dir(root).map_err(|e| LedgerError::io(root, e))? {
        let entry = entry.map_err(|e| LedgerError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(started_for) = name.strip_prefix(ADOPTING) {
            let started_for = NodeId::parse(started_for)
                .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", entry.path().display())))?;
            staging = Some((started_for, entry.path()));
        }
    }
    if staging.is_none() && !holds_a_stream(root)? {
        return Ok(None);
    }
    let (node, staging) = match staging {
        Some(found) => found,
        None => {
            let target = root.join(node.as_str());
            if holds_a_stream(&target)? {
                return Err(LedgerError::Corrupt(format!(
                    "{} holds a single-node ledger and {} already holds the stream of node {node}: two chains cannot become one; move the single-node ledger's files into a directory named after the node that wrote it",
                    root.display(),
                    target.display()
                )));
            }
            (node.clone(), root.join(format!("{ADOPTING}{node}")))
        }
    };
    // Nobody may be appending to the single-node ledger while its files move.
    let writer = root.join(WRITER_LOCK);
    let held = FileLock::try_take(&writer, &format!("the single-node ledger in {}", root.display()))?;
    // A ledger that would not open is not moved: the refusal changes nothing, and repair
    // works on it where it is.
    if !staging.exists() {
        crate::recovery::check(root, &mut crate::recovery::Scanner::new())?;
    }
    create_private_dir(&staging)?;
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| LedgerError::io(root, e))? {
        let entry = entry.map_err(|e| LedgerError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_stream_file(&name) {
            continue;
        }
        let to = staging.join(&name);
        std::fs::rename(entry.path(), &to).map_err(|e| LedgerError::io(&entry.path(), e))?;
        moved.push(name);
    }
    sync_dir(&staging).and_then(|_| sync_dir(root)).map_err(|e| LedgerError::io(root, e))?;
    let dir = root.join(node.as_str());
    std::fs::rename(&staging, &dir).map_err(|e| LedgerError::io(&staging, e))?;
    sync_dir(root).map_err(|e| LedgerError::io(root, e))?;
    drop(held);
    let _ = std::fs::remove_file(&writer);
    moved.sort();
    Ok(Some(Adoption { node, dir, moved }))
}
