//! `consentry ledger verify|show|checkpoint`: the ledger from the command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_ledger::{verify, Entries};
use consentry_types::{AppId, Instant, MemberId, Subject};

use crate::data_dir::DataDir;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Check every record, seal and checkpoint; prints OK or the first bad segment and record.
    Verify {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// A checkpoint line kept by an outside auditor; the ledger must still contain it.
        #[arg(long)]
        checkpoint: Vec<String>,
    },
    /// Print disclosure records, one line each, streaming.
    Show {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Only records of this app.
        #[arg(long)]
        app: Option<String>,
        /// Only records that disclosed this member's fields.
        #[arg(long)]
        member: Option<String>,
        /// From this instant (RFC 3339 or a date), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Until this instant, exclusive.
        #[arg(long)]
        to: Option<String>,
    },
    /// Export one row per disclosure to Parquet, partitioned by day (`day=YYYY-MM-DD/`).
    Export {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// The directory to write the day partitions into.
        #[arg(long)]
        parquet: PathBuf,
    },
    /// Sign a checkpoint of the ledger as it is now and print it, for an outside auditor.
    Checkpoint {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
    },
}

fn instant(text: Option<String>) -> Result<Option<Instant>> {
    text.map(|t| Instant::parse(&t).map_err(|e| anyhow::anyhow!("{e}"))).transpose()
}

fn existing_ledger(data_dir: &std::path::Path) -> Result<PathBuf> {
    let dir = data_dir.join("ledger");
    if !dir.join("signing.pub").exists() {
        bail!("no ledger in {}", data_dir.display());
    }
    Ok(dir)
}

pub fn run(command: LedgerCommand) -> Result<()> {
    match command {
        LedgerCommand::Verify { data_dir, checkpoint } => {
            let dir = existing_ledger(&data_dir)?;
            let report =
                verify(&dir, &checkpoint).with_context(|| format!("cannot verify {}", dir.display()))?;
            match report.problem {
                None => {
                    println!(
                        "OK: {} segments, {} records, {} disclosures, {} bytes, {} checkpoints; {:.3} s ({:.2} GB/s)",
                        report.segments,
                        report.records,
                        report.disclosures,
                        report.bytes,
                        report.checkpoints,
                        report.seconds,
                        report.bytes as f64 / report.seconds.max(1e-9) / 1e9
                    );
                    Ok(())
                }
                Some(problem) => bail!("ledger verification failed: {problem}"),
            }
        }
        LedgerCommand::Show { data_dir, app, member, from, to } => {
            let dir = existing_ledger(&data_dir)?;
            let app = app.map(|a| AppId::parse(&a).map_err(|e| anyhow::anyhow!("{e}"))).transpose()?;
            let member =
                member.map(|m| MemberId::parse(&m).map_err(|e| anyhow::anyhow!("{e}"))).transpose()?;
            let (from, to) = (instant(from)?, instant(to)?);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for entry in Entries::open(&dir)? {
                let entry = entry?;
                let r = &entry.record;
                if app.as_ref().is_some_and(|a| a != &r.app)
                    || from.is_some_and(|f| r.at < f)
                    || to.is_some_and(|t| r.at >= t)
                {
                    continue;
                }
                let subjects: Vec<String> = r
                    .disclosures
                    .iter()
                    .filter(|d| member.as_ref().is_none_or(|m| d.subject == Subject::Member(m.clone())))
                    .map(|d| {
                        let who = match &d.subject {
                            Subject::Member(m) => m.to_string(),
                            Subject::Group(g) => format!("group:{g}"),
                        };
                        let fields: Vec<&str> = d.fields.iter().map(|f| f.short_name()).collect();
                        format!("{who}[{}]", fields.join(","))
                    })
                    .collect();
                if member.is_some() && subjects.is_empty() {
                    continue;
                }
                let line = format!(
                    "{} {} request={} app={} developer={} group={} token={} policy=v{} {} {}",
                    entry.seq,
                    r.at,
                    r.request_id,
                    r.app,
                    r.developer,
                    r.group,
                    r.token_hash,
                    r.policy_version,
                    r.route.replace(' ', "_"),
                    subjects.join(" ")
                );
                if writeln!(out, "{line}").is_err() {
                    return Ok(()); // the reader went away (e.g. `| head`)
                }
            }
            Ok(())
        }
        LedgerCommand::Export { data_dir, parquet } => {
            let dir = existing_ledger(&data_dir)?;
            let summary = consentry_export::export_parquet(&dir, &parquet)
                .with_context(|| format!("cannot export to {}", parquet.display()))?;
            println!(
                "exported {} records as {} disclosure rows into {} files under {}",
                summary.records,
                summary.rows,
                summary.files.len(),
                parquet.display()
            );
            Ok(())
        }
        LedgerCommand::Checkpoint { data_dir } => {
            existing_ledger(&data_dir)?;
            let ledger = DataDir::open(&data_dir)?.ledger()?;
            println!("{}", ledger.checkpoint()?.to_line());
            Ok(())
        }
    }
}
