//! The data directory: the SQLite file, the ledger root (unless `--ledger-root` puts it
//! elsewhere), the server key of earlier versions and the bootstrap operator key; and where
//! the store is (`--store`: SQLite in the data directory, or PostgreSQL).
//!
//! The directory is created mode 0700. Key files are created mode 0600 and only ever as new
//! files (`create_new`, never through a symbolic link: `O_NOFOLLOW`); a key file is read only
//! if it is a regular file, not a link, that neither group nor others may read or write.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use consentry_service::ServerKey;
use consentry_store::Store;
use consentry_store_postgres::{redacted, PgOptions, PgStore};
use consentry_store_sqlite::SqliteStore;

/// The ledger root given on the command line (`--ledger-root`), set once at start.
pub static LEDGER_ROOT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The largest key file read; a key is a line of text.
const MAX_SECRET_FILE: u64 = 4096;

/// Where the store is, for every command that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `consentry.db` in the data directory (the embedded default).
    DataDir,
    /// A PostgreSQL database that several nodes share.
    Postgres { url: String, pool_size: u32 },
}

impl StoreLocation {
    /// From `--store` (or `CONSENTRY_STORE`): a `postgres://` address, or nothing for SQLite.
    pub fn parse(store: Option<&str>, pool_size: u32) -> Result<StoreLocation> {
        match store.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(StoreLocation::DataDir),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres { url: url.to_string(), pool_size })
            }
            Some(other) => bail!(
                "--store takes a postgres://… address, not {:?}; without --store the store is SQLite in --data-dir",
                redacted(other)
            ),
        }
    }
}

static STORE_LOCATION: OnceLock<StoreLocation> = OnceLock::new();

/// Sets where every command's store is (once, from the command line).
pub fn use_store(location: StoreLocation) {
    let _ = STORE_LOCATION.set(location);
}

/// Where the store is, in words for the operator (no password).
pub fn describe_store(data_dir: &DataDir) -> String {
    match STORE_LOCATION.get().unwrap_or(&StoreLocation::DataDir) {
        StoreLocation::DataDir => format!("SQLite in {}", data_dir.file("consentry.db").display()),
        StoreLocation::Postgres { url, pool_size } => {
            format!("PostgreSQL at {} (up to {pool_size} connections)", redacted(url))
        }
    }
}

/// Opens the store at `location`, with `data_dir` for SQLite.
pub fn open_store(location: &StoreLocation, data_dir: &DataDir) -> Result<Arc<dyn Store>> {
    match location {
        StoreLocation::DataDir => Ok(Arc::new(data_dir.sqlite_store()?)),
        StoreLocation::Postgres { url, pool_size } => {
            let store = PgStore::open(url, &PgOptions { pool_size: *pool_size })
                .with_context(|| format!("cannot open the store {}", redacted(url)))?;
            Ok(Arc::new(store))
        }
    }
}

/// A directory consentry owns.
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Opens the directory, creating it (and any missing parent) mode 0700 if needed.
    pub fn open(path: &Path) -> Result<DataDir> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(path).with_context(|| format!("cannot create data directory {}", path.display()))?;
        Ok(DataDir { path: path.to_path_buf() })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The store: where `--store` says, SQLite in this directory without it.
    pub fn store(&self) -> Result<Arc<dyn Store>> {
        open_store(STORE_LOCATION.get().unwrap_or(&StoreLocation::DataDir), self)
    }

    /// The SQLite store in this directory, whatever `--store` says (the demo's world, a copy's
    /// source), its file created mode 0600 (it holds the server keys; SQLite gives its `-wal`
    /// and `-shm` files the same mode).
    pub fn sqlite_store(&self) -> Result<SqliteStore> {
        let file = self.file("consentry.db");
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let created = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&file);
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create the store {}", file.display()))
                }
            }
        }
        SqliteStore::open(&file).with_context(|| format!("cannot open the store {}", file.display()))
    }

    /// The ledger root: `--ledger-root` (or `CONSENTRY_LEDGER_ROOT`) when given, which may be
    /// storage every node shares, else `ledger/` in the data directory. Each node's stream is
    /// a directory in it; readers read every stream.
    pub fn ledger_dir(&self) -> PathBuf {
        LEDGER_ROOT.get().cloned().flatten().unwrap_or_else(|| self.file("ledger"))
    }

    /// Opens this node's ledger stream, recovering from a crash if there was one; a
    /// single-node ledger in the root becomes this node's stream first (said on stdout).
    pub fn ledger(&self, node: &consentry_types::NodeId) -> Result<consentry_ledger::Ledger> {
        let root = self.ledger_dir();
        let ledger =
            consentry_ledger::Ledger::open_stream(&root, node, consentry_ledger::LedgerOptions::default())
                .with_context(|| {
                    format!("cannot open the ledger stream of node {node} in {}", root.display())
                })?;
        if let Some(adopted) = ledger.adopted() {
            println!(
                "the single-node ledger in {} is now the stream of node {}: moved {} files unchanged into {} ({})",
                root.display(),
                adopted.node,
                adopted.moved.len(),
                adopted.dir.display(),
                adopted.moved.join(", ")
            );
        }
        Ok(ledger)
    }

    /// The server's keys (app-scoped ids, cursors, webhook secrets), kept in the store so that
    /// every node has the same. On a store without them, a `server.key` of an earlier version
    /// in this directory becomes them (so ids, cursors and secrets keep their meaning), else
    /// new ones are made; a `server.key` that differs from the store's is refused.
    pub fn server_key(&self, store: &dyn consentry_store::Store) -> Result<ServerKey> {
        let legacy = self.legacy_server_key()?;
        let (key, origin) =
            consentry_service::load_server_key(store, legacy.as_ref(), consentry_types::Instant::now())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("cannot load the server key")?;
        if origin == consentry_service::KeyOrigin::Imported {
            println!(
                "the server key in {} is now kept in the store, shared by every node (the file is no longer needed)",
                self.file("server.key").display()
            );
        }
        Ok(key)
    }

    /// The `server.key` file of an earlier version, if there is one.
    fn legacy_server_key(&self) -> Result<Option<ServerKey>> {
        let Some(text) = self.read_secret("server.key")? else { return Ok(None) };
        let file = self.file("server.key");
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{} is corrupted: expected 64 hexadecimal characters", file.display());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(i * 2..i * 2 + 2).unwrap_or("00");
            *byte =
                u8::from_str_radix(pair, 16).with_context(|| format!("{} is corrupted", file.display()))?;
        }
        Ok(Some(ServerKey::from_bytes(bytes)))
    }

    /// Reads a key file, or `None` if there is none. Refuses a symbolic link (never followed),
    /// anything but a regular file, and a file that group or others may read or write.
    pub fn read_secret(&self, name: &str) -> Result<Option<String>> {
        let file = self.file(name);
        let mut options = fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // O_NONBLOCK: a FIFO planted there must not hang the open (it is refused below).
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        }
        let handle = match options.open(&file) {
            Ok(handle) => handle,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
                "{} is a symbolic link; a key file must be a regular file: remove the link",
                file.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        // The checks are made on the file opened, not on the name, so nothing can be swapped in between.
        let metadata = handle.metadata().with_context(|| format!("cannot read {}", file.display()))?;
        if !metadata.is_file() {
            bail!("{} is not a regular file", file.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} can be read or written by others (mode {mode:04o}); make it private with: chmod 600 {}",
                    file.display(),
                    file.display()
                );
            }
        }
        let mut text = String::new();
        handle
            .take(MAX_SECRET_FILE)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(Some(text))
    }

    /// Writes a new file only its owner can read (mode 0600 on Unix). Never replaces a file
    /// and never writes through a symbolic link: whatever is already at that name, the write
    /// is refused.
    pub fn write_secret(&self, name: &str, content: &str) -> Result<PathBuf> {
        let (path, file) = self.create_secret(name)?;
        fill_secret(&path, file, content)?;
        Ok(path)
    }

    /// Creates a new, empty key file only its owner can read, to be filled with
    /// [`fill_secret`]; refused as [`DataDir::write_secret`] is. Creating the file before the
    /// secret exists means no secret is made that could not be handed over.
    pub fn create_secret(&self, name: &str) -> Result<(PathBuf, fs::File)> {
        let path = self.file(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        match options.open(&path) {
            Ok(file) => Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} already exists (a file or a link); refusing to write a key over it: move it away",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
}

/// Writes `content` into a key file made by [`DataDir::create_secret`] and syncs it.
pub fn fill_secret(path: &Path, mut file: fs::File, content: &str) -> Result<()> {
    file.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))
}
