//! `consentry server-key rotate`: a new generation of the cursor or webhook key, kept in the
//! store every node shares; the one before stays accepted for the overlap.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Subcommand, ValueEnum};
use consentry_store::SecretPurpose;

use crate::data_dir::DataDir;

#[derive(Subcommand)]
pub enum ServerKeyCommand {
    /// Make a new cursor or webhook key current. The previous one stays accepted for the
    /// overlap (cursors it sealed still open; webhooks are signed with both secrets), then
    /// only the new one. Every serving node picks it up within 10 s. The identity key (behind
    /// app-scoped ids) never rotates.
    Rotate {
        /// Which key: `cursor` (paging cursors) or `webhook` (webhook signatures).
        #[arg(long)]
        purpose: Purpose,
        /// How long the previous key stays accepted, in seconds (0 to 90 days).
        #[arg(long, default_value_t = 7 * 86_400, allow_negative_numbers = true)]
        overlap_secs: i64,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

/// The keys that may be named on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum Purpose {
    Cursor,
    Webhook,
    /// Named so that the refusal says why, not just "invalid value".
    Identity,
}

impl From<Purpose> for SecretPurpose {
    fn from(purpose: Purpose) -> SecretPurpose {
        match purpose {
            Purpose::Cursor => SecretPurpose::Cursor,
            Purpose::Webhook => SecretPurpose::Webhook,
            Purpose::Identity => SecretPurpose::Identity,
        }
    }
}

pub fn run(command: ServerKeyCommand) -> Result<()> {
    match command {
        ServerKeyCommand::Rotate { purpose, overlap_secs, data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let service = crate::keys::service(&dir)?;
            let purpose = SecretPurpose::from(purpose);
            let generation = service
                .rotate_server_key(purpose, overlap_secs)
                .map_err(|e| anyhow!("cannot rotate the {} key: {e}", purpose.as_str()))?;
            let until = service
                .store()
                .server_secrets()?
                .into_iter()
                .find(|s| s.purpose == purpose && s.generation == generation)
                .map(|s| s.previous_until.to_string())
                .unwrap_or_default();
            println!(
                "the {} key is now generation {generation}; generation {} stays accepted until {until}; every serving node picks it up within 10 s",
                purpose.as_str(),
                generation - 1
            );
            Ok(())
        }
    }
}
