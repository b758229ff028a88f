//! Load over real sockets: starts a `consentry serve` on a loopback address, builds a world in
//! it through its platform API, and drives it over HTTP/1.1 keep-alive with many app tokens
//! across many groups, one route at a time, bounded in requests and time. Reports requests per
//! second and p50/p99/p99.9 latency per route beside `GET /healthz` (the HTTP stack's
//! ceiling), the ledger's records per sync, and the server's threads.
//!
//! Only loopback addresses are ever connected to ([`client::require_loopback`]).

pub mod client;
pub mod load;
pub mod server;
pub mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

pub use load::{LedgerCounters, LoadOptions, PhaseReport, Route, Target};
pub use server::Server;
pub use world::{World, WorldSize};

/// What went wrong. Messages are one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0} is not a loopback address: this tool sends traffic to this machine only")]
    NotLoopback(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(hyper::Error),
    #[error("cannot build a request: {0}")]
    Request(String),
    #[error("{request} answered {status}: {body}")]
    Refused { request: String, status: u16, body: String },
    #[error("server: {0}")]
    Server(String),
    #[error("setup: {0}")]
    Setup(String),
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `consentry` binary to serve with.
    pub binary: PathBuf,
    /// Where the server's data directory goes (removed afterwards).
    pub work_dir: PathBuf,
    pub listen: SocketAddr,
    pub world: WorldSize,
    pub load: LoadOptions,
    pub routes: Vec<Route>,
    /// More arguments for `consentry serve`.
    pub serve_args: Vec<String>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub world_size: WorldSize,
    pub world: World,
    pub setup_seconds: f64,
    pub phases: Vec<PhaseReport>,
    /// The ledger's counters at the end.
    pub ledger: Option<LedgerCounters>,
    /// The server's threads once the load stopped.
    pub threads_after: Option<u64>,
    pub page: usize,
}

impl RunReport {
    /// The report as printed: world, table, ledger.
    pub fn render(&self) -> String {
        let mut out = format!(
            "world: {}\n  built through the platform API in {:.1} s ({} requests): {} memberships (largest group {}), {} consents, {} installations read through\n",
            self.world_size.describe(),
            self.setup_seconds,
            self.world.platform_requests,
            self.world.memberships,
            self.world.largest_group,
            self.world.consents,
            self.world.readers.len(),
        );
        out.push_str(&format!(
            "load: one route at a time, HTTP/1.1 keep-alive over loopback, members pages of {} following their cursors; client on 1 thread, server as `consentry serve`\n",
            self.page
        ));
        out.push_str(&load::table(&self.phases));
        if let Some(ledger) = self.ledger {
            out.push_str(&format!(
                "ledger: {} records, {} disclosures, {:.2} bytes a disclosure, {} syncs ({:.1} records a sync overall); server threads after the load: {}\n",
                ledger.records,
                ledger.disclosures,
                ledger.bytes as f64 / ledger.disclosures.max(1) as f64,
                ledger.syncs,
                ledger.records as f64 / ledger.syncs.max(1) as f64,
                self.threads_after.map_or("-".to_string(), |t| t.to_string()),
            ));
        }
        out
    }
}

/// Starts the server, builds the world, measures every route, stops the server.
pub async fn run(options: &RunOptions) -> Result<RunReport, LoadError> {
    let server = Server::start(&options.binary, &options.work_dir, options.listen, &options.serve_args)?;
    let started = Instant::now();
    let world =
        world::build(server.address(), &server.operator_key, &server.officer_key, &options.world).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let target =
        Target { address: server.address(), operator: server.operator_key.clone(), pid: Some(server.pid()) };
    let mut phases = Vec::new();
    for route in &options.routes {
        phases.push(load::measure(&target, &world, *route, &options.load).await?);
    }
    let ledger = load::ledger_counters(target.address, &target.operator).await?;
    let threads_after = server.threads();
    drop(server);
    Ok(RunReport {
        world_size: options.world.clone(),
        world,
        setup_seconds,
        phases,
        ledger,
        threads_after,
        page: options.load.page,
    })
}
