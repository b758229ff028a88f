//! Seals (a closed segment's Merkle root and chain head, signed) and checkpoints (signed
//! heads of the whole chain, like Certificate Transparency's signed tree heads).

use std::path::Path;

use consentry_types::NodeId;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::codec::{hex, unhex};
use crate::files::FileLayer;
use crate::LedgerError;

/// Reads the public key an auditor checks signatures with.
pub fn read_verifying_key(dir: &Path) -> Result<VerifyingKey, LedgerError> {
    let path = dir.join("signing.pub");
    let text = std::fs::read_to_string(&path).map_err(|e| LedgerError::io(&path, e))?;
    let bytes = unhex::<32>(text.trim())
        .ok_or_else(|| LedgerError::Corrupt(format!("{} is not a hex key", path.display())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| LedgerError::Corrupt(format!("{}: {e}", path.display())))
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

    pub(crate) fn write(
        &self,
        path: &Path,
        key: &SigningKey,
        files: &dyn FileLayer,
    ) -> Result<(), LedgerError> {
        let body = self.body();
        let signature = key.sign(body.as_bytes());
        let text = format!("{body}signature {}\n", hex(&signature.to_bytes()));
        files.replace(path, text.as_bytes()).map_err(|e| LedgerError::io(path, e))
    }

    /// Reads a seal and checks its signature (with no key: its form only; opening checks
    /// what the seal says, `verify` also who signed it).
    pub(crate) fn read(path: &Path, key: Option<&VerifyingKey>) -> Result<Seal, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the seal: {e}"))?;
        let (body, signature) = text.rsplit_once("signature ").ok_or("the seal has no signature")?;
        let signature = unhex::<64>(signature.trim()).ok_or("the seal's signature is malformed")?;
        if let Some(key) = key {
            key.verify(body.as_bytes(), &Signature::from_bytes(&signature))
                .map_err(|_| "the seal's signature does not match the ledger's key".to_string())?;
        }
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

impl Seal {
    /// Reads the seal at `path` and compares it with what its segment holds; the reason when
    /// they differ.
    pub(crate) fn check(path: &Path, key: Option<&VerifyingKey>, expected: &Seal) -> Result<(), String> {
        let seal = Seal::read(path, key)?;
        let mismatch = if seal.segment != expected.segment {
            Some("the seal names another segment")
        } else if seal.bytes != expected.bytes {
            Some("the segment's length differs from its seal (truncated or extended)")
        } else if seal.frames != expected.frames {
            Some("the segment's record count differs from its seal")
        } else if seal.previous != expected.previous {
            Some("the segment does not follow the previous one")
        } else if seal.head != expected.head {
            Some("the segment's last hash differs from its seal")
        } else if seal.merkle != expected.merkle {
            Some("the segment's Merkle root differs from its seal")
        } else if (seal.first_seq, seal.last_seq) != (expected.first_seq, expected.last_seq) {
            Some("the segment's record numbers differ from its seal")
        } else {
            None
        };
        mismatch.map_or(Ok(()), |m| Err(m.to_string()))
    }
}

/// A signed statement that the chain had `seq` records ending in `head` at `at_millis`.
/// An auditor who keeps one can later check that the ledger only grew after it. A checkpoint
/// of a node's stream names the node (`checkpoint v2 node=web-1 …`), so it cannot be passed
/// off as another stream's; one without a node (`v1`) is from a ledger of one stream, written
/// before nodes had streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub node: Option<NodeId>,
    pub seq: u64,
    pub head: [u8; 32],
    pub at_millis: i64,
    pub signature: [u8; 64],
}

impl Checkpoint {
    fn body(node: Option<&NodeId>, seq: u64, head: &[u8; 32], at_millis: i64) -> String {
        match node {
            None => format!("checkpoint v1 seq={seq} head={} at={at_millis}", hex(head)),
            Some(node) => format!("checkpoint v2 node={node} seq={seq} head={} at={at_millis}", hex(head)),
        }
    }

    pub(crate) fn sign(
        node: Option<&NodeId>,
        seq: u64,
        head: [u8; 32],
        at_millis: i64,
        key: &SigningKey,
    ) -> Checkpoint {
        let signature = key.sign(Checkpoint::body(node, seq, &head, at_millis).as_bytes()).to_bytes();
        Checkpoint { node: node.cloned(), seq, head, at_millis, signature }
    }

    /// The one-line form kept in `checkpoints` and handed to auditors.
    pub fn to_line(&self) -> String {
        format!(
            "{} sig={}",
            Checkpoint::body(self.node.as_ref(), self.seq, &self.head, self.at_millis),
            hex(&self.signature)
        )
    }

    /// Parses a line and checks its signature.
    pub fn parse(line: &str, key: &VerifyingKey) -> Result<Checkpoint, String> {
        let checkpoint = Checkpoint::parse_form(line)?;
        checkpoint.check_signature(key)?;
        Ok(checkpoint)
    }

    /// Parses a line without checking its signature: only text exactly as a checkpoint is
    /// written is accepted.
    pub fn parse_form(line: &str) -> Result<Checkpoint, String> {
        let (body, signature) = line.rsplit_once(" sig=").ok_or("the checkpoint has no signature")?;
        let signature = unhex::<64>(signature).ok_or("the checkpoint's signature is malformed")?;
        let value = |name: &str| {
            body.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .ok_or_else(|| format!("the checkpoint has no {name}"))
        };
        let node = match body.split_whitespace().find_map(|w| w.strip_prefix("node=")) {
            Some(node) => Some(NodeId::parse(node).map_err(|e| e.to_string())?),
            None => None,
        };
        let checkpoint = Checkpoint {
            node,
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

    /// Checks that the ledger's key signed this checkpoint.
    pub(crate) fn check_signature(&self, key: &VerifyingKey) -> Result<(), String> {
        let body = Checkpoint::body(self.node.as_ref(), self.seq, &self.head, self.at_millis);
        key.verify(body.as_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| "the checkpoint's signature does not match the ledger's key".to_string())
    }
}
