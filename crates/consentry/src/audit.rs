//! `consentry audit`: the retroactive audit from the command line, as a table, JSON, CSV or
//! one self-contained HTML file, with a deletion manifest per developer.

use std::collections::BTreeMap;
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
}

/// Runs an audit of the store and ledger in `dir` (used by the CLI and by the demo).
pub fn run_audit(
    service: &Service,
    ledger_dir: &Path,
    policy_text: Option<(&str, String)>,
    version: Option<u32>,
    window: (Instant, Instant),
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
    let report =
        consentry_audit::run(store.as_ref(), ledger_dir, &policy, &label, window, &scoped, &mut |records| {
            if let Some(bar) = &bar {
                bar.set_message(format!("{records} records audited"));
            }
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

pub fn run(args: AuditArgs) -> Result<()> {
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
    let report = run_audit(&service, &dir.ledger_dir(), draft, args.version, window)?;
    let rendered = match args.format.as_str() {
        "table" => table(&report),
        "json" => serde_json::to_string_pretty(&consentry_api::report_json(&report))? + "\n",
        "csv" => csv(&report),
        "html" => html(&report),
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
    for (developer, apps) in &report.did.manifests {
        let json = serde_json::json!({
            "developer": developer.as_str(),
            "policy": report.policy,
            "from": report.from.to_string(),
            "to": report.to.to_string(),
            "apps": apps.iter().map(|(app, pairs)| (app.to_string(), pairs.iter().map(|(m, f)| serde_json::json!({"member": m, "field": f.as_str()})).collect::<Vec<_>>().into())).collect::<serde_json::Map<String, serde_json::Value>>(),
        });
        let path = dir.join(format!("{developer}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut csv = String::from("app,member,field\n");
        for (app, pairs) in apps {
            for (member, field) in pairs {
                let _ = writeln!(csv, "{app},{member},{field}");
            }
        }
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

fn csv(report: &AuditReport) -> String {
    let mut out = String::from("answer,app,developer,category,field,count,members,first,last\n");
    for (app, f) in &report.did.by_app {
        for (field, n) in &f.by_field {
            let developer = f.developer.as_ref().map_or("", |d| d.as_str());
            let _ = writeln!(
                out,
                "did,{app},{developer},{},{},{n},{},{},{}",
                f.category,
                field.as_str(),
                f.members.len(),
                instant(f.first),
                instant(f.last)
            );
        }
    }
    for (app, e) in &report.could.by_app {
        for field in &e.fields {
            let developer = e.developer.as_ref().map_or("", |d| d.as_str());
            let _ = writeln!(
                out,
                "could,{app},{developer},{},{},{},{},{},{}",
                e.category,
                field.as_str(),
                e.member_seconds,
                e.members.len(),
                instant(e.first),
                instant(e.last)
            );
        }
    }
    out
}

fn instant(t: Option<Instant>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A stacked bar chart of violating disclosures per day, one colour per app (top 8, then "others").
fn chart(report: &AuditReport) -> String {
    let colours =
        ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, app), n) in &report.did.by_day {
        *totals.entry(app.as_str()).or_default() += n;
    }
    let mut top: Vec<(&str, u64)> = totals.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let named: Vec<&str> = top.iter().take(8).map(|(a, _)| *a).collect();
    let mut days: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((day, app), n) in &report.did.by_day {
        let slot = named.iter().position(|a| *a == app.as_str()).unwrap_or(named.len());
        let bars = days.entry(day.as_str()).or_insert_with(|| vec![0; named.len() + 1]);
        if let Some(bar) = bars.get_mut(slot) {
            *bar += n;
        }
    }
    let (width, height, left, bottom) = (900.0f64, 320.0f64, 50.0f64, 40.0f64);
    let max = days.values().map(|b| b.iter().sum::<u64>()).max().unwrap_or(1).max(1) as f64;
    let step = (width - left - 10.0) / days.len().max(1) as f64;
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"violating disclosures per day per app\">");
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{width}\" y2=\"{}\" stroke=\"#888\"/>",
        height - bottom,
        height - bottom
    );
    let _ = write!(svg, "<text x=\"4\" y=\"14\" font-size=\"11\">{}</text>", max as u64);
    for (i, (day, bars)) in days.iter().enumerate() {
        let x = left + i as f64 * step;
        let mut y = height - bottom;
        for (slot, n) in bars.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = *n as f64 / max * (height - bottom - 20.0);
            y -= h;
            let colour = colours.get(slot).unwrap_or(&"#999");
            let who = named.get(slot).copied().unwrap_or("others");
            let _ = write!(svg, "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{day} {}: {n}</title></rect>", (step - 1.0).max(1.0), escape(who));
        }
        if i % (days.len() / 8).max(1) == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\">{day}</text>",
                height - bottom + 14.0
            );
        }
    }
    svg.push_str("</svg>");
    let mut legend = String::new();
    for (slot, app) in named.iter().chain(std::iter::once(&"others")).enumerate() {
        let _ = write!(
            legend,
            "<span><i style=\"background:{}\"></i>{}</span> ",
            colours.get(slot).unwrap_or(&"#999"),
            escape(app)
        );
    }
    format!("{svg}<p class=\"legend\">{legend}</p>")
}

pub fn html(report: &AuditReport) -> String {
    let could = report.could.developers();
    let did = report.did.developers();
    let mut rows = String::new();
    for (app, f) in &report.did.by_app {
        let fields: Vec<String> =
            f.by_field.iter().map(|(field, n)| format!("{}: {n}", field.as_str())).collect();
        let _ = write!(rows, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", escape(app.as_str()), escape(f.developer.as_ref().map_or("-", |d| d.as_str())), escape(&f.category), f.violations, f.members.len(), when(f.first), when(f.last), escape(&fields.join(", ")));
    }
    let mut exposure = String::new();
    for (app, e) in &report.could.by_app {
        let used = if report.did.by_app.contains_key(app) { "yes" } else { "no" };
        let _ = write!(
            exposure,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{used}</td></tr>",
            escape(app.as_str()),
            escape(e.developer.as_ref().map_or("-", |d| d.as_str())),
            escape(&e.category),
            e.groups.len(),
            e.members.len(),
            e.member_seconds as f64 / 86_400.0
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>consentry audit {from} to {to}</title><style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
.big{{font-size:28px;font-weight:600}} .cards{{display:flex;gap:2em}} .legend i{{display:inline-block;width:10px;height:10px;margin-right:4px}}
</style></head><body>
<h1>Audit: {from} to {to}</h1><p>Against policy <b>{policy}</b>. {records} records and {disclosures} disclosures re-decided with the facts as they were, in {seconds:.2} s.</p>
<div class=\"cards\"><div><div class=\"big\">{could_n}</div>developers <b>could</b> see what this policy denies</div><div><div class=\"big\">{did_n}</div>developers <b>did</b>: {violations} disclosures of {members} members</div><div><div class=\"big\">{gap}</div>could but did not</div></div>
<h2>Violating disclosures per day</h2>{chart}
<h2>Did</h2><table><tr><th>app</th><th>developer</th><th>category</th><th>disclosures</th><th>members</th><th>first</th><th>last</th><th>fields</th></tr>{rows}</table>
<h2>Could</h2><table><tr><th>app</th><th>developer</th><th>category</th><th>groups</th><th>members</th><th>member-days</th><th>used</th></tr>{exposure}</table>
</body></html>\n",
        from = report.from,
        to = report.to,
        policy = escape(&report.policy),
        records = report.did.records_checked,
        disclosures = report.did.disclosures_checked,
        seconds = report.seconds,
        could_n = could.len(),
        did_n = did.len(),
        violations = report.did.violations,
        members = members_affected(&report.did),
        gap = could.difference(&did).count(),
        chart = chart(report),
    )
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
