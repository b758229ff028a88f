//! The data directory: the SQLite file, the server key and the bootstrap operator key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use consentry_service::ServerKey;
use consentry_store_sqlite::SqliteStore;

/// A directory consentry owns.
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Opens the directory, creating it if needed.
    pub fn open(path: &Path) -> Result<DataDir> {
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
        Ok(DataDir { path: path.to_path_buf() })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn store(&self) -> Result<SqliteStore> {
        let file = self.file("consentry.db");
        SqliteStore::open(&file).with_context(|| format!("cannot open the store {}", file.display()))
    }

    /// The disclosure ledger's directory.
    pub fn ledger_dir(&self) -> PathBuf {
        self.file("ledger")
    }

    /// Opens the ledger, recovering from a crash if there was one.
    pub fn ledger(&self) -> Result<consentry_ledger::Ledger> {
        let dir = self.ledger_dir();
        consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
            .with_context(|| format!("cannot open the ledger in {}", dir.display()))
    }

    /// The server's key (app-scoped ids, cursors), created on first use.
    pub fn server_key(&self) -> Result<ServerKey> {
        let file = self.file("server.key");
        if file.exists() {
            let text =
                fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let text = text.trim();
            let mut bytes = [0u8; 32];
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{} is corrupted: expected 64 hexadecimal characters", file.display());
            }
            for (i, byte) in bytes.iter_mut().enumerate() {
                let pair = text.get(i * 2..i * 2 + 2).unwrap_or("00");
                *byte = u8::from_str_radix(pair, 16)
                    .with_context(|| format!("{} is corrupted", file.display()))?;
            }
            return Ok(ServerKey::from_bytes(bytes));
        }
        let key = ServerKey::generate();
        let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        self.write_secret("server.key", &format!("{hex}\n"))?;
        Ok(key)
    }

    /// Writes a file only its owner can read (mode 0600 on Unix).
    pub fn write_secret(&self, name: &str, content: &str) -> Result<PathBuf> {
        let file = self.file(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut handle = options.open(&file).with_context(|| format!("cannot write {}", file.display()))?;
        handle.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", file.display()))?;
        handle.sync_all().with_context(|| format!("cannot sync {}", file.display()))?;
        Ok(file)
    }
}
