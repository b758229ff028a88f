//! An audit report as files to download or keep: CSV, one self-contained HTML file with an SVG
//! chart, and each developer's deletion manifest (JSON and CSV). The command line writes
//! these; the console serves them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use consentry_audit::{members_affected, AuditReport};
use consentry_types::{DeveloperId, Instant};
use serde_json::{json, Value};

/// The deletion manifest of one developer with findings: every (app, app-scoped member,
/// field) it received in violation. `None` if it has none.
pub fn manifest_json(report: &AuditReport, developer: &DeveloperId) -> Option<Value> {
    let apps = report.did.manifests.get(developer)?;
    Some(json!({
        "developer": developer.as_str(),
        "policy": report.policy,
        "from": report.from.to_string(),
        "to": report.to.to_string(),
        "apps": apps
            .iter()
            .map(|(app, pairs)| {
                let pairs: Vec<Value> =
                    pairs.iter().map(|(m, f)| json!({"member": m, "field": f.as_str()})).collect();
                (app.to_string(), Value::Array(pairs))
            })
            .collect::<serde_json::Map<String, Value>>(),
    }))
}

/// The same manifest as CSV (`app,member,field`).
pub fn manifest_csv(report: &AuditReport, developer: &DeveloperId) -> Option<String> {
    let apps = report.did.manifests.get(developer)?;
    let mut csv = String::from("app,member,field\n");
    for (app, pairs) in apps {
        for (member, field) in pairs {
            let _ = writeln!(csv, "{app},{member},{field}");
        }
    }
    Some(csv)
}

fn when(t: Option<Instant>) -> String {
    t.map(|t| t.to_string().get(..10).unwrap_or_default().to_string()).unwrap_or_else(|| "-".into())
}

/// The audit as CSV: one line per (answer, app, field).
pub fn report_csv(report: &AuditReport) -> String {
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

/// The audit as one self-contained HTML file with an SVG chart (no script).
pub fn report_html(report: &AuditReport) -> String {
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
