//! `consentry store copy`: moves an embedded installation's store (SQLite in a data directory)
//! into an empty PostgreSQL database, history included, and checks every table's count.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use consentry_store::copy::copy_store;
use consentry_store_postgres::{redacted, PgOptions, PgStore};
use consentry_store_sqlite::SqliteStore;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy every table of an embedded store (history included) into an empty PostgreSQL
    /// database, then check that every table has as many rows in both. Stop every consentry
    /// using the source first. The server keys go with the store; the ledger stays where it is.
    Copy {
        /// The embedded store: `sqlite:DIR`, DIR being a data directory (holding consentry.db).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: `postgres://user:password@host:port/database`.
        #[arg(long)]
        to: String,
    },
}

pub fn run(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Copy { from, to } => copy(&from, &to),
    }
}

fn copy(from: &str, to: &str) -> Result<()> {
    let Some(dir) = from.strip_prefix("sqlite:").filter(|d| !d.is_empty()) else {
        bail!(
            "--from takes sqlite:DIR, DIR being the data directory of an embedded installation, not {from:?}"
        )
    };
    let file = PathBuf::from(dir).join("consentry.db");
    if !file.is_file() {
        bail!("there is no store in {dir}: {} does not exist", file.display());
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to takes a postgres://… address, not {:?}", redacted(to));
    }
    let source =
        SqliteStore::open(&file).with_context(|| format!("cannot open the store {}", file.display()))?;
    let target = PgStore::open(to, &PgOptions { pool_size: 2 })
        .with_context(|| format!("cannot open the store {}", redacted(to)))?;
    let counts = copy_store(&source, &target)
        .with_context(|| format!("cannot copy {} to {}", file.display(), redacted(to)))?;
    let mut rows = 0;
    for (table, count) in &counts {
        println!("{table:<22} {count:>10}");
        rows += count;
    }
    println!(
        "copied {rows} rows in {} tables from {} to {}; every table's count checked in both",
        counts.len(),
        file.display(),
        redacted(to)
    );
    println!(
        "the ledger and the server key stay in {dir}: serve with --data-dir {dir} --store {}",
        redacted(to)
    );
    Ok(())
}
