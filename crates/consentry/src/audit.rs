//! `consentry audit`: the retroactive audit from the command line, as a table, JSON, CSV or
//! one self-contained HTML file, with a deletion manifest per developer.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use consentry_audit::{members_affected, AuditReport};
use consentry_policy::compile;
use consentry_service::{Service, ServiceConfig, SystemClock};
use consentry_store::Store;
use consentry_types::Instant;

use crate::data_dir::DataDir;

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Audit against this draft policy file.
    #[arg(long, conflicts_with = "version")]
    pub policy: Option<PathBuf>,
    /// Audit against this stored policy version (default: the active one).
    #[arg(long)]
    pub version: Option<u32>,
    /// Window start (RFC 3339 or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Window end, exclusive (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// The window ending at --to (or now), e.g. 60d.
    #[arg(long)]
    pub since: Option<String>,
    /// table, json, csv or html.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one deletion manifest per developer (JSON and CSV) into this directory.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Threads that re-decide the ledger (default: every core available).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs an audit of the store and ledger in `dir` on every core (used by the demo).
pub fn run_audit(
    service: &Service,
    ledger_dir: &Path,
    policy_text: Option<(&str, String)>,
    version: Option<u32>,
    window: (Instant, Instant),
) -> Result<AuditReport> {
    run_audit_with_threads(
        service,
        ledger_dir,
        policy_text,
        version,
        window,
        consentry_audit::default_threads(),
    )
}

/// Runs an audit of the store and ledger in `dir` on `threads` threads.
pub fn run_audit_with_threads(
    service: &Service,
    ledger_dir: &Path,
    policy_text: Option<(&str, String)>,
    version: Option<u32>,
    window: (Instant, Instant),
    threads: usize,
) -> Result<AuditReport> {
    let store = service.store();
    let (policy, label) = match policy_text {
        Some((text, label)) => (compile(0, text).map_err(|e| anyhow::anyhow!("{label}: {e}"))?, label),
        None => {
            let stored = match version {
                Some(v) => {
                    store.policy_version(v)?.with_context(|| format!("there is no policy version {v}"))?
                }
                None => store.active_policy()?.context("no policy is active; give --version or --policy")?,
            };
            (compile(stored.version, &stored.text)?, format!("version {}", stored.version))
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("auditing the ledger");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let scoped = |app: &consentry_types::AppId, member: &consentry_types::MemberId| {
        service.scoped_member_id(app, member)
    };
    let report = consentry_audit::run_with_threads(
        store.as_ref(),
        ledger_dir,
        &policy,
        &label,
        window,
        threads,
        &scoped,
        &mut |records| {
            if let Some(bar) = &bar {
                bar.set_message(format!("{records} records audited"));
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

pub fn run(args: AuditArgs) -> Result<()> {
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => consentry_audit::default_threads(),
    };
    let dir = DataDir::open(&args.data_dir)?;
    let store: Arc<dyn Store> = dir.store()?;
    let server_key = dir.server_key(store.as_ref())?;
    let service = Service::new(store, Arc::new(SystemClock::default()), server_key, ServiceConfig::default());
    let window = consentry_api::window(
        args.from.as_deref(),
        args.to.as_deref(),
        args.since.as_deref(),
        Instant::now(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = match &args.policy {
        Some(file) => Some((
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
            file,
        )),
        None => None,
    };
    let draft = text.as_ref().map(|(t, file)| (t.as_str(), format!("draft {}", file.display())));
    let report = run_audit_with_threads(&service, &dir.ledger_dir(), draft, args.version, window, threads)?;
    let rendered = match args.format.as_str() {
        "table" => table(&report),
        "json" => serde_json::to_string_pretty(&consentry_api::report_json(&report))? + "\n",
        "csv" => consentry_api::report_csv(&report),
        "html" => consentry_api::report_html(&report),
        other => bail!("unknown format {other:?}: use table, json, csv or html"),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, rendered).with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => print!("{rendered}"),
    }
    if let Some(out) = &args.manifests {
        let written = write_manifests(&report, out)?;
        println!("wrote {written} deletion manifests into {}", out.display());
    }
    Ok(())
}

/// One JSON and one CSV manifest per developer with findings.
pub fn write_manifests(report: &AuditReport, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for developer in report.did.manifests.keys() {
        let json = consentry_api::manifest_json(report, developer).unwrap_or_default();
        let path = dir.join(format!("{developer}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        let csv = consentry_api::manifest_csv(report, developer).unwrap_or_default();
        let path = dir.join(format!("{developer}.csv"));
        std::fs::write(&path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report.did.manifests.len())
}

fn when(t: Option<Instant>) -> String {
    t.map(|t| t.to_string().get(..10).unwrap_or_default().to_string()).unwrap_or_else(|| "-".into())
}

pub fn table(report: &AuditReport) -> String {
    let mut out = String::new();
    let could = report.could.developers();
    let did = report.did.developers();
    let _ = writeln!(out, "Audit of {} to {} against policy {}", report.from, report.to, report.policy);
    let _ = writeln!(
        out,
        "  COULD: {} developers ({} apps) held access this policy denies",
        could.len(),
        report.could.by_app.len()
    );
    let _ = writeln!(
        out,
        "  DID:   {} developers ({} apps) used it: {} disclosures of {} members",
        did.len(),
        report.did.by_app.len(),
        report.did.violations,
        members_affected(&report.did)
    );
    let _ = writeln!(out, "  could but did not: {} developers", could.difference(&did).count());
    let _ = writeln!(
        out,
        "  checked {} records, {} disclosures in {:.2} s",
        report.did.records_checked, report.did.disclosures_checked, report.seconds
    );
    if !report.did.by_app.is_empty() {
        let _ = writeln!(out, "\nDID: disclosures the policy denies, by app");
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:<24} {:>10} {:>8}  {:<10} {:<10}  fields",
            "app", "developer", "category", "disclosed", "members", "first", "last"
        );
        let mut apps: Vec<_> = report.did.by_app.iter().collect();
        apps.sort_by(|a, b| b.1.violations.cmp(&a.1.violations).then(a.0.cmp(b.0)));
        for (app, f) in apps {
            let fields: Vec<String> =
                f.by_field.iter().map(|(field, n)| format!("{}={n}", field.as_str())).collect();
            let developer = f.developer.as_ref().map_or("-", |d| d.as_str());
            let _ = writeln!(
                out,
                "  {:<22} {:<12} {:<24} {:>10} {:>8}  {:<10} {:<10}  {}",
                app.as_str(),
                developer,
                f.category,
                f.violations,
                f.members.len(),
                when(f.first),
                when(f.last),
                fields.join(" ")
            );
        }
    }
    if !report.could.by_app.is_empty() {
        let _ = writeln!(out, "\nCOULD: access the policy denies, by app (whether used or not)");
        let _ = writeln!(
            out,
            "  {:<22} {:<12} {:<24} {:>7} {:>8} {:>12}  used",
            "app", "developer", "category", "groups", "members", "member-days"
        );
        for (app, e) in &report.could.by_app {
            let used = if report.did.by_app.contains_key(app) { "yes" } else { "no" };
            let developer = e.developer.as_ref().map_or("-", |d| d.as_str());
            let _ = writeln!(
                out,
                "  {:<22} {:<12} {:<24} {:>7} {:>8} {:>12.1}  {used}",
                app.as_str(),
                developer,
                e.category,
                e.groups.len(),
                e.members.len(),
                e.member_seconds as f64 / 86_400.0
            );
        }
    }
    out
}

/// `consentry policy preview`: what a draft would change, replayed over recent history.
pub fn preview(draft: &Path, since: &str, to: Option<&str>, data_dir: &Path) -> Result<()> {
    let dir = DataDir::open(data_dir)?;
    let store: Arc<dyn Store> = dir.store()?;
    let server_key = dir.server_key(store.as_ref())?;
    let service =
        Service::new(store.clone(), Arc::new(SystemClock::default()), server_key, ServiceConfig::default());
    let window =
        consentry_api::window(None, to, Some(since), Instant::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = std::fs::read_to_string(draft).with_context(|| format!("cannot read {}", draft.display()))?;
    let draft_policy = compile(0, &text).map_err(|e| anyhow::anyhow!("{}: {e}", draft.display()))?;
    let active =
        store.active_policy()?.context("no policy is active: there is nothing to compare the draft with")?;
    let active_policy = compile(active.version, &active.text)?;
    let scoped = |app: &consentry_types::AppId, member: &consentry_types::MemberId| {
        service.scoped_member_id(app, member)
    };
    let preview = consentry_audit::preview(
        store.as_ref(),
        &dir.ledger_dir(),
        &draft_policy,
        &active_policy,
        window,
        &scoped,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (loses, gains) = (preview.loses, preview.gains);
    println!(
        "Preview of {} against the active policy v{}, {} to {}:",
        draft.display(),
        active.version,
        window.0,
        window.1
    );
    let line = |app: &consentry_types::AppId,
                fields: &std::collections::BTreeSet<consentry_types::Field>,
                members: usize| {
        let fields: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
        println!("    {:<24} {:>8} members  {}", app.as_str(), members, fields.join(", "));
    };
    println!(
        "  loses: {} apps would lose access they have now; {} disclosures in the window would have been denied",
        loses.could.by_app.len(),
        loses.did.violations
    );
    for (app, exposure) in &loses.could.by_app {
        line(app, &exposure.fields, exposure.members.len());
    }
    println!("  gains: {} apps would gain access they do not have now", gains.by_app.len());
    for (app, exposure) in &gains.by_app {
        line(app, &exposure.fields, exposure.members.len());
    }
    Ok(())
}
