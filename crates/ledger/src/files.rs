//! How the ledger reaches the disk: a small trait for the files it appends to and replaces,
//! the real file system by default, and (tests only, feature `fault-injection`) a disk that
//! loses everything written since the last sync when it crashes.
//!
//! Every change the ledger makes to its segments, seals and checkpoints goes through a
//! [`FileLayer`]; reads (recovery, verify, entries) use the file system directly, which is
//! what a restarted process would see.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the ledger's appends and replacements go.
pub trait FileLayer: Send + Sync {
    /// Opens `path` for appending, creating it if missing (its directory entry made durable).
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Makes `path` hold exactly `contents`, durably and atomically: a temporary file is
    /// written and synced, then renamed over `path`, and the directory synced. Mode 0600.
    fn replace(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
}

/// A file the ledger appends to.
pub trait AppendFile: Send + Sync {
    /// Appends all of `bytes` (not yet durable).
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn length(&self) -> io::Result<u64>;
    /// Cuts the file to `length` bytes, durably (a torn tail, on open).
    fn truncate(&self, length: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFiles;

/// Opens without following a symbolic link at the last component (Unix).
pub(crate) fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `contents` to a new file at `path` (never an existing one, never through a symbolic
/// link), mode 0600, synced.
pub(crate) fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = no_follow(&mut options).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub(crate) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

impl FileLayer for RealFiles {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let created = !path.exists();
        let file = no_follow(OpenOptions::new().create(true).append(true)).open(path)?;
        if created {
            sync_dir(parent(path))?;
        }
        Ok(Box::new(RealFile(file)))
    }

    fn replace(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let temporary = temporary(path);
        match std::fs::remove_file(&temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        create_private(&temporary, contents)?;
        std::fs::rename(&temporary, path)?;
        sync_dir(parent(path))
    }
}

struct RealFile(File);

impl AppendFile for RealFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn length(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }

    fn truncate(&self, length: u64) -> io::Result<()> {
        self.0.set_len(length)?;
        self.0.sync_all()
    }
}

#[cfg(feature = "fault-injection")]
pub use lossy::LossyDisk;

#[cfg(feature = "fault-injection")]
mod lossy {
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use super::{AppendFile, FileLayer, RealFiles};

    #[derive(Default)]
    struct Disk {
        /// Per file written through this disk: how many of its bytes are durable.
        synced: HashMap<PathBuf, u64>,
        crashed: bool,
        syncs: u64,
    }

    /// Tests only: a disk that keeps only what was synced when it crashes. Writes reach the
    /// real file at once (so readers see them, as they would see the page cache); a sync
    /// records how much of the file is durable; [`LossyDisk::crash`] cuts every file written
    /// through it back to that length, and every later operation fails, as in a process that
    /// lost its power.
    #[derive(Default)]
    pub struct LossyDisk {
        disk: Arc<Mutex<Disk>>,
        sync_delay: Duration,
    }

    fn crashed() -> io::Error {
        io::Error::other("simulated crash: the disk is gone")
    }

    impl LossyDisk {
        pub fn new() -> Arc<LossyDisk> {
            Arc::new(LossyDisk::default())
        }

        /// A disk whose syncs take `delay`, as a real one's do.
        pub fn with_sync_delay(delay: Duration) -> Arc<LossyDisk> {
            Arc::new(LossyDisk { disk: Arc::default(), sync_delay: delay })
        }

        fn lock(&self) -> MutexGuard<'_, Disk> {
            self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Syncs that completed.
        pub fn syncs(&self) -> u64 {
            self.lock().syncs
        }

        /// The power goes out: everything written since each file's last sync is lost.
        /// Returns how many bytes were lost.
        pub fn crash(&self) -> u64 {
            self.crash_leaving(0, 0)
        }

        /// The power goes out, and of each file's unsynced bytes the first `kept` reach the
        /// disk and the next `zeroed` read back as zeros (what some file systems leave).
        /// Returns how many written bytes were lost or zeroed.
        pub fn crash_leaving(&self, kept: u64, zeroed: u64) -> u64 {
            let mut disk = self.lock();
            disk.crashed = true;
            let mut lost = 0;
            for (path, synced) in &disk.synced {
                let Ok(file) = OpenOptions::new().write(true).open(path) else { continue };
                let written = file.metadata().map(|m| m.len()).unwrap_or(*synced);
                let unsynced = written.saturating_sub(*synced);
                let real = kept.min(unsynced);
                let length = *synced + (real + zeroed).min(unsynced);
                // Cutting to the real bytes and growing again leaves zeros after them.
                let _ = file.set_len(*synced + real).and_then(|_| file.set_len(length));
                let _ = file.sync_all();
                lost += written - (*synced + real);
            }
            lost
        }
    }

    impl FileLayer for LossyDisk {
        fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
            let mut disk = self.lock();
            if disk.crashed {
                return Err(crashed());
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let length = file.metadata()?.len();
            let synced = *disk.synced.entry(path.to_path_buf()).or_insert(length);
            // A file opened again keeps what was synced through this disk.
            if synced > length {
                disk.synced.insert(path.to_path_buf(), length);
            }
            Ok(Box::new(LossyFile {
                path: path.to_path_buf(),
                file,
                disk: self.disk.clone(),
                sync_delay: self.sync_delay,
            }))
        }

        fn replace(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
            let disk = self.lock();
            if disk.crashed {
                return Err(crashed());
            }
            RealFiles.replace(path, contents)
        }
    }

    struct LossyFile {
        path: PathBuf,
        file: File,
        disk: Arc<Mutex<Disk>>,
        sync_delay: Duration,
    }

    impl LossyFile {
        fn lock(&self) -> io::Result<MutexGuard<'_, Disk>> {
            let disk = self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if disk.crashed {
                return Err(crashed());
            }
            Ok(disk)
        }
    }

    impl AppendFile for LossyFile {
        fn append(&self, bytes: &[u8]) -> io::Result<()> {
            let _disk = self.lock()?;
            (&self.file).write_all(bytes)
        }

        fn sync(&self) -> io::Result<()> {
            if !self.sync_delay.is_zero() {
                std::thread::sleep(self.sync_delay);
            }
            let mut disk = self.lock()?;
            let length = self.file.metadata()?.len();
            disk.synced.insert(self.path.clone(), length);
            disk.syncs += 1;
            Ok(())
        }

        fn length(&self) -> io::Result<u64> {
            let _disk = self.lock()?;
            self.file.metadata().map(|m| m.len())
        }

        fn truncate(&self, length: u64) -> io::Result<()> {
            let mut disk = self.lock()?;
            self.file.set_len(length)?;
            disk.synced.insert(self.path.clone(), length);
            Ok(())
        }
    }
}
