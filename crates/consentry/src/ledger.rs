//! `consentry ledger verify|show|export|checkpoint|repair`: the ledger from the command line,
//! every stream of the ledger root (each node writes its own) read and checked as one ledger.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_ledger::{
    diagnose, repair, streams, verify_all, Diagnosis, Entries, Ledger, LedgerError, LedgerOptions,
    RepairPlan, Stream, StreamReport,
};
use consentry_types::{AppId, Instant, MemberId, Subject};

use crate::data_dir::DataDir;

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Check every stream's records, seals and checkpoints; prints OK or, per stream, the first
    /// bad segment and record.
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
    /// Sign a checkpoint of each stream as it is now and print it, for an outside auditor (a
    /// stream a running node writes: the last checkpoint it kept).
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
        /// The node whose stream to repair (needed when the ledger has several streams).
        #[arg(long)]
        node: Option<String>,
    },
}

fn instant(text: Option<String>) -> Result<Option<Instant>> {
    text.map(|t| Instant::parse(&t).map_err(|e| anyhow::anyhow!("{e}"))).transpose()
}

/// The ledger root of the data directory (or `--ledger-root`), with its streams.
fn existing_ledger(data_dir: &std::path::Path) -> Result<(PathBuf, Vec<Stream>)> {
    let root = DataDir::open(data_dir)?.ledger_dir();
    let streams = streams(&root).with_context(|| format!("cannot read {}", root.display()))?;
    if streams.is_empty() {
        bail!("no ledger in {}", root.display());
    }
    Ok((root, streams))
}

/// The one stream a command that writes acts on: the node's, or the only one.
fn one_stream(streams: Vec<Stream>, node: Option<&str>) -> Result<Stream> {
    match node {
        Some(name) => streams
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| anyhow::anyhow!("the ledger has no stream of node {name}")),
        None => {
            let names: Vec<String> = streams.iter().map(|s| s.name()).collect();
            match <[Stream; 1]>::try_from(streams) {
                Ok([only]) => Ok(only),
                Err(_) => {
                    bail!("the ledger has several streams ({}): say which with --node", names.join(", "))
                }
            }
        }
    }
}

pub fn run(command: LedgerCommand) -> Result<()> {
    match command {
        LedgerCommand::Verify { data_dir, checkpoint } => {
            let (root, _) = existing_ledger(&data_dir)?;
            let report = verify_all(&root, &checkpoint)
                .with_context(|| format!("cannot verify {}", root.display()))?;
            let mut failed = Vec::new();
            for StreamReport { stream, report } in &report.streams {
                match &report.problem {
                    None => println!(
                        "OK: stream {}: {} segments, {} records, {} disclosures, {} bytes, {} checkpoints; {:.3} s ({:.2} GB/s)",
                        stream.name(),
                        report.segments,
                        report.records,
                        report.disclosures,
                        report.bytes,
                        report.checkpoints,
                        report.seconds,
                        report.bytes as f64 / report.seconds.max(1e-9) / 1e9
                    ),
                    Some(problem) => {
                        println!("FAILED: stream {} ({}): {problem}", stream.name(), stream.dir.display());
                        failed.push(format!("stream {}: {problem}", stream.name()));
                    }
                }
            }
            for unmatched in &report.unmatched {
                println!("FAILED: {unmatched}");
                failed.push(unmatched.clone());
            }
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("ledger verification failed: {}", failed.join("; "))
            }
        }
        LedgerCommand::Show { data_dir, app, member, from, to } => {
            let (dir, streams) = existing_ledger(&data_dir)?;
            let several = streams.len() > 1;
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
                // With several streams a record is NODE:SEQ (numbers count within a stream).
                let position = match (&entry.node, several) {
                    (Some(node), true) => format!("{node}:{}", entry.seq),
                    (None, true) => format!("single-node:{}", entry.seq),
                    _ => entry.seq.to_string(),
                };
                let line = format!(
                    "{} {} request={} app={} developer={} group={} token={} policy=v{} {} {}",
                    position,
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
            let (dir, _) = existing_ledger(&data_dir)?;
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
            let (root, streams) = existing_ledger(&data_dir)?;
            for stream in streams {
                let opened = match &stream.node {
                    Some(node) => Ledger::open_stream(&root, node, LedgerOptions::default()),
                    None => Ledger::open(&stream.dir, LedgerOptions::default()),
                };
                match opened {
                    Ok(ledger) => println!("{}", ledger.checkpoint()?.to_line()),
                    Err(LedgerError::Locked(why)) => {
                        let kept =
                            std::fs::read_to_string(stream.dir.join("checkpoints")).unwrap_or_default();
                        match kept.lines().last() {
                            Some(line) => {
                                println!("{line}");
                                eprintln!(
                                    "stream {}: {why}; its last kept checkpoint is printed",
                                    stream.name()
                                );
                            }
                            None => bail!("stream {}: {why}, and it kept no checkpoint yet", stream.name()),
                        }
                    }
                    Err(e) => return Err(e).context(format!("cannot open stream {}", stream.name())),
                }
            }
            Ok(())
        }
        LedgerCommand::Repair { data_dir, yes, node } => {
            let (_, streams) = existing_ledger(&data_dir)?;
            repair_ledger(&one_stream(streams, node.as_deref())?.dir, yes)
        }
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
