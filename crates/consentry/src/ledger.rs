//! `consentry ledger verify|show|export|checkpoint|repair`: the ledger from the command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_ledger::{diagnose, repair, verify, Diagnosis, Entries, RepairPlan};
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
    /// Say what can be kept of a ledger that refuses to open; with --yes, keep it: the damaged
    /// segment moves to ledger/damaged/ (never deleted) and what chains before the damage
    /// becomes the active segment.
    Repair {
        #[arg(long, env = "CONSENTRY_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Repair (without it, only say what would be done).
        #[arg(long)]
        yes: bool,
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
        LedgerCommand::Repair { data_dir, yes } => repair_ledger(&existing_ledger(&data_dir)?, yes),
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Says what repairing would do, in the words an operator needs to decide.
fn describe(dir: &std::path::Path, plan: &RepairPlan) {
    let segment = file_name(&plan.path);
    println!("{}", plan.damage);
    let records = match plan.kept_records {
        0 => "no records".to_string(),
        n => format!("{n} records, the last numbered {}", plan.last_kept_record),
    };
    println!(
        "repair keeps bytes 0 to {} of {segment}: {} whole frames ({records}) that continue the hash chain",
        plan.keep_bytes, plan.kept_frames
    );
    if plan.lost_bytes > 0 {
        println!("{} bytes after them are not recoverable", plan.lost_bytes);
        println!(
            "{segment} moves to {}/{segment}.<time> as it is (kept, never deleted); the {} bytes kept become the active segment",
            dir.join(consentry_ledger::DAMAGED_DIR).display(),
            plan.keep_bytes
        );
    }
    if plan.sealed {
        println!("its seal moves there too, and the segment takes appends again");
    }
    if let Some(seq) = plan.checkpoint_beyond {
        println!(
            "checkpoints already given out cover records up to {seq}: after the repair `consentry ledger verify` reports them as no longer held, as it must"
        );
    }
}

fn repair_ledger(dir: &std::path::Path, yes: bool) -> Result<()> {
    let plan = match diagnose(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        Diagnosis::Opens { path, torn_at, torn_bytes } => {
            match path.filter(|_| torn_bytes > 0) {
                Some(path) => println!(
                    "nothing to repair: the ledger opens as it is (opening cuts the last {torn_bytes} bytes of {}, from byte {torn_at}: a crash left them and they were never acknowledged)",
                    file_name(&path)
                ),
                None => println!("nothing to repair: the ledger opens as it is"),
            }
            return Ok(());
        }
        Diagnosis::Unrepairable(why) => bail!("cannot repair: {why}"),
        Diagnosis::Repairable(plan) => plan,
    };
    describe(dir, &plan);
    if !yes {
        println!("nothing was changed; run again with --yes to repair");
        return Ok(());
    }
    let done = repair(dir, &plan, Instant::now()).context("repair failed")?;
    for moved in &done.moved {
        println!("kept {}", moved.display());
    }
    println!("repaired; recorded in {}: {}", dir.join("repairs").display(), done.record);
    Ok(())
}
