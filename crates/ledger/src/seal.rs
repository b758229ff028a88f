//! Seals (a closed segment's Merkle root and chain head, signed) and checkpoints (signed
//! heads of the whole chain, like Certificate Transparency's signed tree heads).

use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;

use crate::codec::{hex, unhex};
use crate::LedgerError;

/// The ledger's signing key, kept in the ledger directory (mode 0600); its public half is
/// written beside it for outside auditors.
pub(crate) fn load_or_create_key(dir: &Path) -> Result<SigningKey, LedgerError> {
    let path = dir.join("signing.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| LedgerError::io(&path, e))?;
        let bytes = unhex::<32>(text.trim()).ok_or_else(|| {
            LedgerError::Corrupt(format!("{} is not a 64-character hex key", path.display()))
        })?;
        return Ok(SigningKey::from_bytes(&bytes));
    }
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    write_private(&path, &format!("{}\n", hex(&secret)))?;
    let public = dir.join("signing.pub");
    std::fs::write(&public, format!("{}\n", hex(key.verifying_key().as_bytes())))
        .map_err(|e| LedgerError::io(&public, e))?;
    Ok(key)
}

/// Reads the public key an auditor checks signatures with.
pub fn read_verifying_key(dir: &Path) -> Result<VerifyingKey, LedgerError> {
    let path = dir.join("signing.pub");
    let text = std::fs::read_to_string(&path).map_err(|e| LedgerError::io(&path, e))?;
    let bytes = unhex::<32>(text.trim())
        .ok_or_else(|| LedgerError::Corrupt(format!("{} is not a hex key", path.display())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| LedgerError::Corrupt(format!("{}: {e}", path.display())))
}

fn write_private(path: &Path, content: &str) -> Result<(), LedgerError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| LedgerError::io(path, e))?;
    file.write_all(content.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| LedgerError::io(path, e))
}

/// What a closed segment held, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seal {
    pub segment: u64,
    pub frames: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    pub previous: [u8; 32],
    pub head: [u8; 32],
    pub merkle: [u8; 32],
}

impl Seal {
    fn body(&self) -> String {
        format!(
            "consentry-ledger-seal v1\nsegment {}\nframes {}\nfirst_seq {}\nlast_seq {}\nbytes {}\nprevious {}\nhead {}\nmerkle {}\n",
            self.segment,
            self.frames,
            self.first_seq,
            self.last_seq,
            self.bytes,
            hex(&self.previous),
            hex(&self.head),
            hex(&self.merkle)
        )
    }

    pub(crate) fn write(&self, path: &Path, key: &SigningKey) -> Result<(), LedgerError> {
        let body = self.body();
        let signature = key.sign(body.as_bytes());
        let text = format!("{body}signature {}\n", hex(&signature.to_bytes()));
        let temporary = path.with_extension("seal.tmp");
        write_private(&temporary, &text)?;
        std::fs::rename(&temporary, path).map_err(|e| LedgerError::io(path, e))
    }

    /// Reads a seal and checks its signature.
    pub(crate) fn read(path: &Path, key: &VerifyingKey) -> Result<Seal, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the seal: {e}"))?;
        let (body, signature) = text.rsplit_once("signature ").ok_or("the seal has no signature")?;
        let signature = unhex::<64>(signature.trim()).ok_or("the seal's signature is malformed")?;
        key.verify(body.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| "the seal's signature does not match the ledger's key".to_string())?;
        let field = |name: &str| -> Result<&str, String> {
            body.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .ok_or_else(|| format!("the seal has no {name}"))
        };
        let number = |name: &str| -> Result<u64, String> {
            field(name)?.parse().map_err(|_| format!("the seal's {name} is not a number"))
        };
        let hash = |name: &str| -> Result<[u8; 32], String> {
            unhex::<32>(field(name)?).ok_or_else(|| format!("the seal's {name} is malformed"))
        };
        let seal = Seal {
            segment: number("segment")?,
            frames: number("frames")?,
            first_seq: number("first_seq")?,
            last_seq: number("last_seq")?,
            bytes: number("bytes")?,
            previous: hash("previous")?,
            head: hash("head")?,
            merkle: hash("merkle")?,
        };
        // Only the exact text a seal is written as is accepted.
        if seal.body() != body || text != format!("{body}signature {}\n", hex(&signature)) {
            return Err("the seal's text was altered".to_string());
        }
        Ok(seal)
    }
}

/// A signed statement that the chain had `seq` records ending in `head` at `at_millis`.
/// An auditor who keeps one can later check that the ledger only grew after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub head: [u8; 32],
    pub at_millis: i64,
    pub signature: [u8; 64],
}

impl Checkpoint {
    fn body(seq: u64, head: &[u8; 32], at_millis: i64) -> String {
        format!("checkpoint v1 seq={seq} head={} at={at_millis}", hex(head))
    }

    pub(crate) fn sign(seq: u64, head: [u8; 32], at_millis: i64, key: &SigningKey) -> Checkpoint {
        let signature = key.sign(Checkpoint::body(seq, &head, at_millis).as_bytes()).to_bytes();
        Checkpoint { seq, head, at_millis, signature }
    }

    /// The one-line form kept in `checkpoints` and handed to auditors.
    pub fn to_line(&self) -> String {
        format!("{} sig={}", Checkpoint::body(self.seq, &self.head, self.at_millis), hex(&self.signature))
    }

    /// Parses a line and checks its signature.
    pub fn parse(line: &str, key: &VerifyingKey) -> Result<Checkpoint, String> {
        let (body, signature) = line.rsplit_once(" sig=").ok_or("the checkpoint has no signature")?;
        let signature = unhex::<64>(signature).ok_or("the checkpoint's signature is malformed")?;
        key.verify(body.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| "the checkpoint's signature does not match the ledger's key".to_string())?;
        let value = |name: &str| {
            body.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .ok_or_else(|| format!("the checkpoint has no {name}"))
        };
        let checkpoint = Checkpoint {
            seq: value("seq=")?.parse().map_err(|_| "bad seq")?,
            head: unhex::<32>(value("head=")?).ok_or("bad head")?,
            at_millis: value("at=")?.parse().map_err(|_| "bad instant")?,
            signature,
        };
        if checkpoint.to_line() != line {
            return Err("the checkpoint's text was altered".to_string());
        }
        Ok(checkpoint)
    }
}
