//! The `consentry` command: serve the APIs, play the demo, validate and activate policies.

mod audit;
mod cases;
mod data_dir;
mod demo;
mod installations;
mod keys;
mod ledger;
mod node;
mod policy_tests;
mod prove;
mod serve;
mod server_keys;
mod store_copy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use consentry_service::{Service, ServiceConfig, SystemClock};
use data_dir::DataDir;

#[derive(Parser)]
#[command(
    name = "consentry",
    version,
    about = "The data-access layer between members' data and third-party apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The store: a PostgreSQL database (`postgres://user:password@host:port/database`) shared
    /// by several nodes; without it, SQLite in --data-dir.
    #[arg(long, global = true, env = "CONSENTRY_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Connections to PostgreSQL this process keeps at most (with --store).
    #[arg(long, global = true, env = "CONSENTRY_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pool_size: u32,
    /// The ledger root, where every node writes its own stream (`<root>/<node>/`) and every
    /// reader reads all of them; may be storage the nodes share. Default: `ledger/` in the
    /// data directory.
    #[arg(long, global = true, env = "CONSENTRY_LEDGER_ROOT")]
    ledger_root: Option<PathBuf>,
    /// Logs on stderr: `text`, or `json` (one JSON object a line, with a line for every
    /// request carrying the request id its ledger record has).
    #[arg(long, global = true, env = "CONSENTRY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app API and the platform API over HTTP.
    Serve {
        /// Where the store and keys live.
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "CONSENTRY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Lifetime of access tokens, in seconds.
        #[arg(long, env = "CONSENTRY_TOKEN_TTL", default_value_t = 3600)]
        token_ttl: i64,
        /// Also accept webhook endpoints on loopback and plain http (local development only).
        #[arg(long, env = "CONSENTRY_ALLOW_LOCAL_WEBHOOKS", action = clap::ArgAction::SetTrue,
              value_parser = clap::builder::BoolishValueParser::new())]
        allow_local_webhooks: bool,
        /// The SMT solver policy proofs run on: `cvc5`, `z3` or a path; default: the first on
        /// PATH. Without one, approvals need a privacy officer's waiver.
        #[arg(long, env = "CONSENTRY_SOLVER")]
        solver: Option<String>,
        /// A directory of invariant files (`*.cedar`); default: the shipped invariants.
        #[arg(long, env = "CONSENTRY_INVARIANTS")]
        invariants: Option<PathBuf>,
        /// This node's id (a-z 0-9 _ -): names its ledger stream and the leases it takes;
        /// default: derived from the host name. Give each node its own.
        #[arg(long, env = "CONSENTRY_NODE")]
        node: Option<String>,
        /// Serve `/metrics` (Prometheus text format) on this address, for the operators'
        /// network only; default: not served.
        #[arg(long, env = "CONSENTRY_METRICS_LISTEN")]
        metrics_listen: Option<String>,
        /// On SIGTERM, answer `/readyz` 503 for this many seconds while still serving, so the
        /// load balancer moves away before the listener closes.
        #[arg(long, env = "CONSENTRY_DRAIN_SECS", default_value_t = 5)]
        drain_secs: u64,
        /// Group commit: how long, at most, the ledger writer waits for the records of requests
        /// being decided before it syncs, in microseconds (0 to 100000; 0: sync at once).
        #[arg(long, env = "CONSENTRY_COMMIT_WAIT_US", default_value_t = consentry_api::COMMIT_WAIT.as_micros() as u64,
              value_parser = clap::value_parser!(u64).range(0..=100_000))]
        commit_wait_us: u64,
    },
    /// Play the 2017–2019 Groups API story on a seeded world, then serve it.
    Demo {
        /// Where the demo's world is written (replaced on every run).
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        #[arg(long, env = "CONSENTRY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Seed of the simulated world.
        #[arg(long, default_value_t = 2019)]
        seed: u64,
        /// `full` (thousands of members) or `small` (for quick checks).
        #[arg(long, default_value = "full")]
        scale: String,
        /// Stop after the story instead of serving it.
        #[arg(long)]
        no_serve: bool,
    },
    /// Work with Cedar policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Which apps could and did see what a policy forbids, over a window.
    Audit(audit::AuditArgs),
    /// Remediation cases: open from an audit, list, show.
    Case {
        #[command(subcommand)]
        command: cases::CaseCommand,
    },
    /// Installations: expire those no app request used for a while.
    Installations {
        #[command(subcommand)]
        command: installations::InstallationCommand,
    },
    /// Read and check the disclosure ledger.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Operator keys, on the server: create (the first privacy-officer key too), list, revoke.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The server's keys, kept in the store every node shares: rotate the cursor or webhook key.
    ServerKey {
        #[command(subcommand)]
        command: server_keys::ServerKeyCommand,
    },
    /// The store itself: copy an embedded installation's store to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: store_copy::StoreCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file against the schema; errors give line and column.
    Validate { file: PathBuf },
    /// Run policy test files (request, facts, expected decision); default `policies/tests`.
    Test {
        #[arg(default_value = "policies/tests")]
        paths: Vec<PathBuf>,
    },
    /// What a draft would change over recent history, against the active policy.
    Preview {
        draft: PathBuf,
        /// The window ending now, e.g. 30d.
        #[arg(long, default_value = "30d")]
        since: String,
        /// End of the window (default: now).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Prove a draft within the invariants, never erroring, and compare it with the active
    /// version (needs an SMT solver: cvc5 or z3).
    Prove(prove::ProveArgs),
    /// Store a policy file as a new version, written by the holder of the operator key.
    Submit {
        file: PathBuf,
        /// A file holding your operator key (or set CONSENTRY_KEY to the key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Approve a stored version with a privacy officer's key outside its author's lineage; its
    /// proofs must have passed or been waived (they are run first when none are kept).
    Approve {
        version: u32,
        /// A file holding your privacy-officer key (or set CONSENTRY_KEY to the key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The SMT solver to prove with when no proofs are kept: `cvc5`, `z3` or a path.
        #[arg(long, env = "CONSENTRY_SOLVER")]
        solver: Option<String>,
        /// A directory of invariant files (`*.cedar`); default: the shipped invariants.
        #[arg(long, env = "CONSENTRY_INVARIANTS")]
        invariants: Option<PathBuf>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// As a privacy officer, let a version be approved although its proofs did not pass (or
    /// could not be run); the reason is kept and shown with the version.
    Waive {
        version: u32,
        /// Why (at least 10 characters; kept with the version).
        #[arg(long)]
        reason: String,
        /// A file holding your privacy-officer key (or set CONSENTRY_KEY to the key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
    /// Make an approved version the active policy now.
    Activate {
        version: u32,
        /// Why this policy becomes active (kept with the activation).
        #[arg(long)]
        reason: String,
        /// A file holding your operator key (or set CONSENTRY_KEY to the key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // In text, a line per request would drown the console: only JSON logs them by default.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| match cli.log_format {
            LogFormat::Json => "consentry=info,warn".into(),
            LogFormat::Text => "consentry=info,consentry::request=warn,warn".into(),
        });
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => logs.init(),
    }
    // The demo plays in a directory of its own, ledger included.
    if !matches!(cli.command, Command::Demo { .. }) {
        let _ = data_dir::LEDGER_ROOT.set(cli.ledger_root.clone());
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one readable line.
fn one_line(error: &anyhow::Error) -> String {
    error.chain().map(|e| e.to_string().replace('\n', " ")).collect::<Vec<_>>().join(": ")
}

fn run(cli: Cli) -> Result<()> {
    data_dir::use_store(data_dir::StoreLocation::parse(cli.store.as_deref(), cli.pool_size)?);
    match cli.command {
        Command::Serve {
            data_dir,
            listen,
            token_ttl,
            allow_local_webhooks,
            solver,
            invariants,
            node,
            metrics_listen,
            drain_secs,
            commit_wait_us,
        } => {
            let node = node::node_id(node.as_deref())?;
            let dir = DataDir::open(&data_dir)?;
            let store = dir.store()?;
            println!("store: {}", data_dir::describe_store(&dir));
            let server_key = dir.server_key(store.as_ref())?;
            let config =
                ServiceConfig { token_ttl_secs: token_ttl.clamp(60, 86_400), ..ServiceConfig::default() };
            let service = Arc::new(
                Service::new(store, Arc::new(SystemClock::default()), server_key, config)
                    .with_webhook_targets(serve::webhook_targets(allow_local_webhooks)),
            );
            serve::announce_bootstrap_key(&service, &dir, "consentry serve (first start)")?;
            let ledger = Arc::new(dir.ledger(&node)?);
            let proofs = prove::server_proofs(solver.as_deref(), invariants.as_ref())?;
            let commit_wait = std::time::Duration::from_micros(commit_wait_us);
            let operation = serve::Operation { metrics_listen, drain_secs, commit_wait };
            serve::run(service, ledger, dir, &listen, proofs, None, operation)
        }
        Command::Demo { data_dir, listen, seed, scale, no_serve } => {
            if cli.store.is_some() {
                anyhow::bail!("the demo plays on its own SQLite store in --data-dir; run it without --store")
            }
            let scale = demo::Scale::parse(&scale)?;
            let story = demo::play(&data_dir, seed, scale)?;
            if no_serve {
                return Ok(());
            }
            let after = story.after_story.clone();
            serve::run(
                story.service,
                story.ledger,
                story.dir,
                &listen,
                story.proofs,
                Some(Box::new(move |addr| after(addr))),
                serve::Operation::default(),
            )
        }
        Command::Policy { command: PolicyCommand::Validate { file } } => validate(&file),
        Command::Policy { command: PolicyCommand::Test { paths } } => policy_tests::run(&paths),
        Command::Policy { command: PolicyCommand::Prove(args) } => prove::run(args),
        Command::Policy { command: PolicyCommand::Preview { draft, since, to, data_dir } } => {
            audit::preview(&draft, &since, to.as_deref(), &data_dir)
        }
        Command::Ledger { command } => ledger::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Case { command } => cases::run(command),
        Command::Installations { command } => installations::run(command),
        Command::Keys { command } => keys::run(command),
        Command::ServerKey { command } => server_keys::run(command),
        Command::Store { command } => store_copy::run(command),
        Command::Policy { command: PolicyCommand::Submit { file, key_file, data_dir } } => {
            let text = read_policy(&file)?;
            let dir = DataDir::open(&data_dir)?;
            let service = keys::service(&dir)?;
            let author = keys::sign_in(&service, key_file.as_deref())?;
            let version = service.submit_policy(&text, &author).map_err(|e| policy_error(&file, e))?;
            println!(
                "submitted {} as policy version {version} with {}; a privacy officer outside its lineage must approve it",
                file.display(),
                keys::describe(&author)
            );
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Approve { version, key_file, solver, invariants, data_dir },
        } => {
            let dir = DataDir::open(&data_dir)?;
            let service = keys::service(&dir)?;
            let officer = keys::sign_in(&service, key_file.as_deref())?;
            officer
                .require(&[consentry_types::OperatorRole::PrivacyOfficer])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            prove::before_approval(&service, version, &officer, solver.as_deref(), invariants.as_ref())?;
            service.approve_policy(version, &officer).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("approved policy version {version} with {}", keys::describe(&officer));
            Ok(())
        }
        Command::Policy { command: PolicyCommand::Waive { version, reason, key_file, data_dir } } => {
            let dir = DataDir::open(&data_dir)?;
            let service = keys::service(&dir)?;
            let officer = keys::sign_in(&service, key_file.as_deref())?;
            let waiver =
                service.waive_proofs(version, &officer, &reason).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "waived the proofs of policy version {version} with {} at {}: {}",
                keys::describe(&officer),
                waiver.at,
                waiver.reason
            );
            Ok(())
        }
        Command::Policy { command: PolicyCommand::Activate { version, reason, key_file, data_dir } } => {
            let dir = DataDir::open(&data_dir)?;
            let service = keys::service(&dir)?;
            let by = keys::sign_in(&service, key_file.as_deref())?;
            let activation =
                service.activate_policy(version, &by, &reason).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("activated policy version {version} at {} with {}", activation.at, keys::describe(&by));
            Ok(())
        }
    }
}

fn read_policy(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

fn policy_error(file: &Path, error: consentry_service::ServiceError) -> anyhow::Error {
    match error {
        consentry_service::ServiceError::Policy(policy) => {
            let lines: Vec<String> =
                policy.diagnostics().iter().map(|d| format!("{}:{d}", file.display())).collect();
            anyhow::anyhow!("{}", lines.join("; "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

fn validate(file: &Path) -> Result<()> {
    let text = read_policy(file)?;
    match consentry_policy::compile(0, &text) {
        Ok(policy) => {
            let count = policy.rule_count();
            println!("ok: {} is valid against the consentry schema ({count} rules)", file.display());
            Ok(())
        }
        Err(error) => {
            for diagnostic in error.diagnostics() {
                eprintln!("{}:{diagnostic}", file.display());
            }
            anyhow::bail!("{} is not a valid policy", file.display())
        }
    }
}
