//! `consentry keys create|list|revoke`: operator keys made and managed on the server, where
//! the first privacy-officer key comes from; and the operator key other commands sign in with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_service::{parse_key_lifetime, OperatorSession, Service, ServiceConfig, SystemClock};
use consentry_store::KeyOrigin;
use consentry_types::OperatorRole;

use crate::data_dir::DataDir;

/// The file `serve` writes the first operator key to.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-operator.key";

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an operator key on the server (any role; the only way to make the first
    /// privacy-officer key). The key is printed once, or written to --out (mode 0600).
    Create {
        /// operator, privacy_officer or auditor.
        #[arg(long)]
        role: String,
        /// Whose key it is, e.g. the person's name.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 90d or 12h (default: until revoked).
        #[arg(long)]
        expires_in: Option<String>,
        /// Write the key to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Every key: id, role, status, who made it and when, expiry. Never a secret.
    List {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Revoke a key: it fails from its very next request.
    Revoke {
        id: String,
        /// Revoke it even if it is the last live privacy-officer key.
        #[arg(long)]
        force: bool,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

/// The OS user running this command, as recorded with the keys it makes.
pub fn os_user() -> String {
    let name = ["USER", "LOGNAME"].into_iter().find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()));
    match (name, uid()) {
        (Some(name), Some(uid)) => format!("{name} (uid {uid})"),
        (Some(name), None) => name,
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => "unknown".to_string(),
    }
}

#[cfg(unix)]
fn uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn uid() -> Option<u32> {
    None
}

/// A service over the data directory, on the wall clock.
pub fn service(dir: &DataDir) -> Result<Service> {
    let store = dir.store()?;
    let server_key = dir.server_key(store.as_ref())?;
    Ok(Service::new(store, Arc::new(SystemClock::default()), server_key, ServiceConfig::default()))
}

/// Signs in with an operator key: the text of `CONSENTRY_KEY`, or of `key_file`.
pub fn sign_in(service: &Service, key_file: Option<&Path>) -> Result<OperatorSession> {
    let text = match (key_file, std::env::var("CONSENTRY_KEY").ok().filter(|k| !k.trim().is_empty())) {
        (Some(file), _) => read_key_file(file)?,
        (None, Some(key)) => key,
        (None, None) => {
            bail!("this needs an operator key: give --key-file FILE or set CONSENTRY_KEY")
        }
    };
    service.authenticate_operator(text.trim()).map_err(|e| anyhow::anyhow!("cannot sign in: {e}"))
}

fn read_key_file(file: &Path) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} can be read by others (mode {:o}); make it private first: chmod 600 {}",
                file.display(),
                mode & 0o777,
                file.display()
            );
        }
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// A key as one readable line: `ID (NAME, ROLE)`.
pub fn describe(session: &OperatorSession) -> String {
    format!("key {} ({}, {})", session.key_id, session.name, session.role.as_str())
}

pub fn run(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create { role, name, expires_in, out, data_dir } => {
            let role = OperatorRole::parse(&role).with_context(|| {
                format!("--role must be operator, privacy_officer or auditor, not {role:?}")
            })?;
            let lifetime = expires_in
                .as_deref()
                .map(parse_key_lifetime)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let dir = DataDir::open(&data_dir)?;
            let service = service(&dir)?;
            let user = os_user();
            // Refuse an existing --out before a key exists that nobody could use.
            if let Some(out) = &out {
                if out.exists() {
                    bail!("{} already exists; give a new file for the key", out.display());
                }
            }
            let created = service
                .create_key_on_server("consentry keys create", &user, &name, role, lifetime)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let expires = created.expires_at.map_or("never expires".to_string(), |t| format!("expires {t}"));
            println!(
                "created key {} ({}, {}) on the server as {user}; it {expires}",
                created.id,
                created.name,
                role.as_str()
            );
            match out {
                Some(out) => {
                    write_new_secret(&out, &format!("{}\n", created.key))?;
                    println!("wrote it to {} (mode 0600); it is not shown again", out.display());
                }
                None => {
                    println!("the key is shown once; keep it secret:");
                    println!("{}", created.key);
                }
            }
            retire_bootstrap_key_file(&service, &dir)
        }
        KeysCommand::List { data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let service = service(&dir)?;
            let now = service.now();
            let keys = service.operator_keys().map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{:<14} {:<16} {:<8} {:<24} {:<26} {:<24} name",
                "id", "role", "status", "created", "created by", "expires"
            );
            for key in keys {
                let status = if key.revoked_at.is_some() {
                    "revoked"
                } else if key.is_live(now) {
                    "live"
                } else {
                    "expired"
                };
                let by = match &key.created_by {
                    KeyOrigin::Key(id) => format!("key {id}"),
                    KeyOrigin::Server { os_user, .. } => format!("server, {os_user}"),
                };
                println!(
                    "{:<14} {:<16} {:<8} {:<24} {:<26} {:<24} {}",
                    key.id,
                    key.role.as_str(),
                    status,
                    key.created_at.to_string(),
                    by,
                    key.expires_at.map_or("never".to_string(), |t| t.to_string()),
                    key.name
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, force, data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let service = service(&dir)?;
            let revoked = service.revoke_key_on_server(&id, force).map_err(|e| anyhow::anyhow!("{e}"))?;
            if revoked {
                println!("revoked key {id}: it fails from its very next request");
            } else {
                println!("key {id} was already revoked");
            }
            retire_bootstrap_key_file(&service, &dir)
        }
    }
}

/// Writes a secret to a new file only its owner can read; never replaces an existing file.
fn write_new_secret(path: &Path, content: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))
}

/// The bootstrap key file is a live operator secret lying on disk. Once another live operator
/// key exists (its holder no longer needs the file), or the bootstrap key was revoked or
/// expired, the file is removed and the reason said. The key itself stays valid until revoked,
/// so nobody who copied it is cut off mid-session. A file that holds no key of this store is
/// left alone.
pub fn retire_bootstrap_key_file(service: &Service, dir: &DataDir) -> Result<()> {
    let file = dir.file(BOOTSTRAP_KEY_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else { return Ok(()) };
    let why = match service.authenticate_operator(text.trim()) {
        Ok(bootstrap) => {
            let now = service.now();
            let keys = service.operator_keys().map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(other) = keys
                .iter()
                .find(|k| k.role == OperatorRole::Operator && k.id != bootstrap.key_id && k.is_live(now))
            else {
                return Ok(());
            };
            format!(
                "another operator key exists (key {}, {}); the bootstrap key {} stays valid until revoked (`consentry keys revoke {}`)",
                other.id, other.name, bootstrap.key_id, bootstrap.key_id
            )
        }
        Err(consentry_service::ServiceError::Unauthenticated(reason))
            if reason.contains("revoked") || reason.contains("expired") =>
        {
            format!("the bootstrap key it holds {}", reason.trim_start_matches("the API key "))
        }
        Err(_) => return Ok(()),
    };
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    println!("removed {}: {why}", file.display());
    Ok(())
}
