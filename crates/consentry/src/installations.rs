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

/// When each (app, group) was last served, as the ledger (all its streams) records it.
pub fn last_use(ledger_dir: &Path) -> Result<HashMap<(AppId, GroupId), Instant>> {
    let mut last = HashMap::new();
    // Every node's stream: a use recorded by any node counts.
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
            let server_key = dir.server_key(store.as_ref())?;
            let service =
                Service::new(store, Arc::new(SystemClock::default()), server_key, ServiceConfig::default());
            let expired = expire(&service, &dir.ledger_dir(), inactive_days)?;
            for (app, group) in &expired {
                println!("expired: {app} in {group}");
            }
            println!("{} installations unused for {inactive_days} days removed", expired.len());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failure is the message

    use super::*;
    use crate::cases::tests::{served, two_streams};

    #[test]
    fn the_last_use_is_the_latest_on_any_nodes_stream() {
        let (root, a, b) = two_streams("last-use");
        let t = |secs: i64| Instant::from_secs(1_700_000_000 + secs);
        a.append(&served("acme", "app-1", "hikers", t(10))).unwrap();
        b.append(&served("acme", "app-1", "hikers", t(20))).unwrap();
        a.append(&served("acme", "app-1", "hikers", t(30))).unwrap();
        b.append(&served("acme", "app-1", "hikers", t(40))).unwrap();
        b.append(&served("acme", "app-2", "hikers", t(5))).unwrap();
        let last = last_use(&root).unwrap();
        let key = |app: &str| (AppId::parse(app).unwrap(), GroupId::parse("hikers").unwrap());
        assert_eq!(last.get(&key("app-1")), Some(&t(40)));
        assert_eq!(last.get(&key("app-2")), Some(&t(5)));
        assert_eq!(last.len(), 2);
        let _ = std::fs::remove_dir_all(&root);
    }
}
