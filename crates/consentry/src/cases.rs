//! `consentry case open|list|show`: remediation cases from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_service::{Service, ServiceConfig, SystemClock};
use consentry_store::Store;
use consentry_types::Instant;

use crate::data_dir::DataDir;

#[derive(Subcommand)]
pub enum CaseCommand {
    /// Audit a window and open one case per developer with findings: revoke its apps,
    /// request deletion of exactly its manifest, notify it.
    Open {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Audit against this policy file (default: the active policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, default_value = "60d")]
        since: String,
        /// End of the audited window (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Days the developer has to attest the deletion.
        #[arg(long, default_value_t = 30)]
        deadline_days: i64,
    },
    /// The follow-up of a case: a disclosure to the developer since it opened fails it; an
    /// attested case with none closes.
    FollowUp {
        id: u64,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Every case, one line each.
    List {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// One case with its manifest and history.
    Show {
        id: u64,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

fn service(dir: &DataDir) -> Result<Service> {
    let store: Arc<dyn Store> = dir.store()?;
    let server_key = dir.server_key(store.as_ref())?;
    Ok(Service::new(store, Arc::new(SystemClock::default()), server_key, ServiceConfig::default()))
}

pub fn run(command: CaseCommand) -> Result<()> {
    match command {
        CaseCommand::Open { data_dir, policy, since, to, deadline_days } => {
            let dir = DataDir::open(&data_dir)?;
            let service = service(&dir)?;
            let window = consentry_api::window(None, to.as_deref(), Some(&since), Instant::now())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let text = match &policy {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                ),
                None => None,
            };
            let draft =
                text.as_deref().zip(policy.as_ref()).map(|(t, f)| (t, format!("draft {}", f.display())));
            let report = crate::audit::run_audit(&service, &dir.ledger_dir(), draft, None, window)?;
            let json = consentry_api::report_json(&report);
            let mut opened = 0;
            for (developer, apps) in &report.did.manifests {
                let manifest = json
                    .get("deletion_manifests")
                    .and_then(|m| m.get(developer.as_str()))
                    .map(serde_json::to_string)
                    .transpose()?
                    .unwrap_or_else(|| "{}".to_string());
                let id = service
                    .open_case(developer, &manifest, deadline_days)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "case {id}: {developer}, {} apps revoked, deletion of {} items requested",
                    apps.len(),
                    apps.values().map(|p| p.len()).sum::<usize>()
                );
                opened += 1;
            }
            println!("{opened} cases opened");
            Ok(())
        }
        CaseCommand::FollowUp { id, data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let service = service(&dir)?;
            let state = follow_up(&service, &dir.ledger_dir(), id)?;
            println!("case {id}: {}", state.as_str());
            Ok(())
        }
        CaseCommand::List { data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            for case in dir.store()?.cases()? {
                println!(
                    "{:>5}  {:<20} {:<20} deadline {}",
                    case.id,
                    case.developer,
                    case.state.as_str(),
                    case.deadline
                );
            }
            Ok(())
        }
        CaseCommand::Show { id, data_dir } => {
            let dir = DataDir::open(&data_dir)?;
            let store = dir.store()?;
            let Some(case) = store.case(id)? else { bail!("there is no case {id}") };
            println!(
                "case {} for {}: {} (deadline {})",
                case.id,
                case.developer,
                case.state.as_str(),
                case.deadline
            );
            for event in store.case_events(id)? {
                println!("  {}  {:<20} {}", event.at, event.state.as_str(), event.note);
            }
            println!("manifest: {}", case.manifest);
            Ok(())
        }
    }
}

/// Fails every open case whose developer the ledger shows received data after the case
/// opened (run by `serve` every hour). Returns how many failed.
pub fn fail_cases_with_disclosures(service: &Service, ledger_root: &std::path::Path) -> Result<u32> {
    use consentry_store::CaseState;
    let open: Vec<_> = service
        .store()
        .cases()?
        .into_iter()
        .filter(|c| {
            matches!(c.state, CaseState::DeletionRequested | CaseState::Attested | CaseState::Overdue)
        })
        .collect();
    if open.is_empty() {
        return Ok(0);
    }
    let mut failed = std::collections::BTreeSet::new();
    // Every node's stream: a disclosure after the case opened, on any node, fails it.
    for entry in consentry_ledger::Entries::open(ledger_root)? {
        let record = entry?.record;
        if record.disclosures.is_empty() {
            continue;
        }
        for case in open.iter().filter(|c| c.developer == record.developer && record.at >= c.opened_at) {
            failed.insert(case.id);
        }
    }
    for id in &failed {
        service.follow_up_case(*id, true).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(failed.len() as u32)
}

/// Reads the ledger for disclosures to the case's developer since it opened, then follows up.
pub fn follow_up(
    service: &Service,
    ledger_root: &std::path::Path,
    id: u64,
) -> Result<consentry_store::CaseState> {
    let Some(case) = service.store().case(id)? else { bail!("there is no case {id}") };
    let mut disclosed = false;
    // Every node's stream: a disclosure after the case opened, on any node, fails it.
    for entry in consentry_ledger::Entries::open(ledger_root)? {
        let record = entry?.record;
        if record.developer == case.developer && record.at >= case.opened_at && !record.disclosures.is_empty()
        {
            disclosed = true;
            break;
        }
    }
    service.follow_up_case(id, disclosed).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the message

    use super::*;
    use consentry_ledger::{Ledger, LedgerOptions};
    use consentry_service::{Clock, ServerKey, SimulatedClock};
    use consentry_store::CaseState;
    use consentry_types::{
        AppId, DeveloperId, Disclosure, DisclosureRecord, Field, GroupId, MemberId, NodeId, Subject,
    };

    /// A response to `developer`'s app at `at`, as a node records it.
    pub(crate) fn served(developer: &str, app: &str, group: &str, at: Instant) -> DisclosureRecord {
        DisclosureRecord {
            at,
            request_id: format!("{}", at.millis()),
            app: AppId::parse(app).unwrap(),
            developer: DeveloperId::parse(developer).unwrap(),
            group: GroupId::parse(group).unwrap(),
            token_hash: "00".repeat(32),
            policy_version: 1,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures: vec![Disclosure {
                subject: Subject::Member(MemberId::parse("bob").unwrap()),
                fields: [Field::MemberName].into_iter().collect(),
            }],
        }
    }

    /// Two nodes' streams under one fresh ledger root.
    pub(crate) fn two_streams(name: &str) -> (std::path::PathBuf, Ledger, Ledger) {
        let root = std::env::temp_dir().join(format!("consentry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let open = |node: &str| {
            Ledger::open_stream(&root, &NodeId::parse(node).unwrap(), LedgerOptions::default()).unwrap()
        };
        let (a, b) = (open("web-a"), open("web-b"));
        (root, a, b)
    }

    #[test]
    fn a_disclosure_after_the_case_opened_on_any_nodes_stream_fails_it() {
        let clock = Arc::new(SimulatedClock::starting_at(Instant::from_secs(1_700_000_000)));
        let store: Arc<dyn Store> = Arc::new(consentry_store_sqlite::SqliteStore::in_memory().unwrap());
        let service = Service::new(store, clock.clone(), ServerKey::generate(), ServiceConfig::default());
        let developer = DeveloperId::parse("acme").unwrap();
        service.put_developer(&developer, "Acme", "p@acme.example", "https://acme.example/h").unwrap();
        let (root, a, b) = two_streams("case-follow-up");
        // Before the case: node a served acme.
        a.append(&served("acme", "app-1", "hikers", clock.now())).unwrap();
        clock.advance_secs(60);
        let case = service.open_case(&developer, "{}", 30).unwrap();
        clock.advance_secs(60);
        // Node a keeps to the revocation; other developers are served on b.
        b.append(&served("other", "app-2", "hikers", clock.now())).unwrap();
        assert_eq!(follow_up(&service, &root, case).unwrap(), CaseState::DeletionRequested);
        assert_eq!(fail_cases_with_disclosures(&service, &root).unwrap(), 0);
        // Node b still served acme after the case opened: the case fails, whichever node did it.
        b.append(&served("acme", "app-1", "hikers", clock.now())).unwrap();
        a.append(&served("other", "app-2", "hikers", clock.now())).unwrap();
        assert_eq!(fail_cases_with_disclosures(&service, &root).unwrap(), 1);
        assert_eq!(service.store().case(case).unwrap().map(|c| c.state), Some(CaseState::Failed));
        let _ = std::fs::remove_dir_all(&root);
    }
}
