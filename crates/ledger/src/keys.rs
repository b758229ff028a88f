//! The ledger's Ed25519 signing key: read only from a regular file its owner alone can read,
//! never through a symbolic link; created only for a new ledger, never over an existing one.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;

use crate::codec::{hex, unhex};
use crate::files::{create_private, no_follow, sync_dir};
use crate::LedgerError;

pub(crate) const KEY_FILE: &str = "signing.key";
pub(crate) const PUBLIC_FILE: &str = "signing.pub";

/// The signing key in `dir`, or `None` if there is no key file.
pub(crate) fn read_key(dir: &Path) -> Result<Option<SigningKey>, LedgerError> {
    let path = dir.join(KEY_FILE);
    let file = match no_follow(OpenOptions::new().read(true)).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(LedgerError::Corrupt(format!(
                    "{} is a symbolic link: the ledger reads its key only from a regular file",
                    path.display()
                )));
            }
            return Err(LedgerError::io(&path, e));
        }
    };
    let metadata = file.metadata().map_err(|e| LedgerError::io(&path, e))?;
    if !metadata.is_file() {
        return Err(LedgerError::Corrupt(format!("{} is not a regular file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(LedgerError::Corrupt(format!(
                "{} is open to group or others (mode {mode:o}): make it the owner's only (chmod 600), and replace the ledger's key if it may have leaked",
                path.display()
            )));
        }
    }
    let mut text = String::new();
    file.take(256).read_to_string(&mut text).map_err(|e| LedgerError::io(&path, e))?;
    let bytes = unhex::<32>(text.trim())
        .ok_or_else(|| LedgerError::Corrupt(format!("{} is not a 64-character hex key", path.display())))?;
    Ok(Some(SigningKey::from_bytes(&bytes)))
}

/// Whether `dir` holds anything of a ledger that a key signed or that names a key.
pub(crate) fn has_signed_files(dir: &Path) -> Result<Option<String>, LedgerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LedgerError::io(dir, e)),
    };
    for entry in entries {
        let name = entry.map_err(|e| LedgerError::io(dir, e))?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg")
            || name.ends_with(".seal")
            || name == "checkpoints"
            || name == PUBLIC_FILE
            || name == "repairs"
        {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Checks that `signing.pub`, if present, is the public half of `key`.
pub(crate) fn check_public(dir: &Path, key: &SigningKey) -> Result<bool, LedgerError> {
    let path = dir.join(PUBLIC_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if unhex::<32>(text.trim()).and_then(|b| VerifyingKey::from_bytes(&b).ok())
                != Some(key.verifying_key())
            {
                return Err(LedgerError::Corrupt(format!(
                    "{} is not the public half of {KEY_FILE}: the key was replaced or the file altered",
                    path.display()
                )));
            }
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LedgerError::io(&path, e)),
    }
}

/// Creates a new key for a new ledger (the file must not exist), mode 0600.
pub(crate) fn create_key(dir: &Path) -> Result<SigningKey, LedgerError> {
    let path = dir.join(KEY_FILE);
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    create_private(&path, format!("{}\n", hex(&secret)).as_bytes()).map_err(|e| LedgerError::io(&path, e))?;
    secret.fill(0);
    sync_dir(dir).map_err(|e| LedgerError::io(dir, e))?;
    Ok(key)
}

/// Writes `signing.pub` for auditors (a new file, never through a symbolic link).
pub(crate) fn write_public(dir: &Path, key: &SigningKey) -> Result<(), LedgerError> {
    let path = dir.join(PUBLIC_FILE);
    let text = format!("{}\n", hex(key.verifying_key().as_bytes()));
    let written =
        no_follow(OpenOptions::new().write(true).create_new(true)).open(&path).and_then(|mut file| {
            std::io::Write::write_all(&mut file, text.as_bytes()).and_then(|_| file.sync_all())
        });
    written.and_then(|_| sync_dir(dir)).map_err(|e| LedgerError::io(&path, e))
}
