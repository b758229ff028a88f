//! `consentry installations expire`: the inactivity cutoff, from the ledger's record of use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use consentry_service::{Service, ServiceConfig, SystemClock};
use consentry_store::Store;
use consentry_types::{AppId, GroupId, Instant};

use crate::data_dir::DataDir;

#[derive(Subcommand)]
pub enum InstallationCommand {
    /// Remove installations that no app request used for this many days, and tell developers.
    Expire {
        #[arg(long, default_value_t = 90)]
        inactive_days: i64,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

/// When each (app, group) was last served, as the ledger records it.
pub fn last_use(ledger_dir: &Path) -> Result<HashMap<(AppId, GroupId), Instant>> {
    let mut last = HashMap::new();
    if !ledger_dir.join("signing.pub").exists() {
        return Ok(last);
    }
    for entry in consentry_ledger::Entries::open(ledger_dir)? {
        let record = entry?.record;
        let at = last.entry((record.app, record.group)).or_insert(record.at);
        *at = (*at).max(record.at);
    }
    Ok(last)
}

/// Expires unused installations; used by the command and by `serve` once a day.
pub fn expire(service: &Service, ledger_dir: &Path, inactive_days: i64) -> Result<Vec<(AppId, GroupId)>> {
    let last = last_use(ledger_dir)?;
    service.expire_inactive_installations(&last, inactive_days).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(command: InstallationCommand) -> Result<()> {
    match command {
        InstallationCommand::Expire { inactive_days, data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let store: Arc<dyn Store> = dir.store()?;
            let service = Service::new(
                store,
                Arc::new(SystemClock::default()),
                dir.server_key()?,
                ServiceConfig::default(),
            );
            let expired = expire(&service, &dir.ledger_dir(), inactive_days)?;
            for (app, group) in &expired {
                println!("expired: {app} in {group}");
            }
            println!("{} installations unused for {inactive_days} days removed", expired.len());
            Ok(())
        }
    }
}
