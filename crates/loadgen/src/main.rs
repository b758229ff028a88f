//! `consentry-load`: starts `consentry serve` on loopback, builds a world through its platform
//! API, and prints requests per second and latency per route beside `/healthz`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use consentry_loadgen::{LoadOptions, Route, RunOptions, WorldSize};

/// Load over real sockets against a `consentry serve` this command starts (loopback only).
#[derive(Parser)]
#[command(name = "consentry-load", version)]
struct Args {
    /// The consentry binary (default: `consentry` beside this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Where the server listens: a loopback address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Keep-alive connections, each an app reading a group it is installed in.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Each route is measured for at most this many seconds (1 to 600)…
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// …and at most this many requests.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Unmeasured seconds before each route (0 to 60).
    #[arg(long, default_value_t = 2.0)]
    warm_up: f64,
    /// Members a members page asks for (1 to 500).
    #[arg(long, default_value_t = 100)]
    page: usize,
    /// Routes, in order, comma-separated: healthz, group, posts, members.
    #[arg(long, default_value = "healthz,group,posts,members", value_delimiter = ',')]
    routes: Vec<String>,
    /// The small world `cargo test` runs (default: the full one).
    #[arg(long)]
    small: bool,
    /// Members in the world (overrides the size's).
    #[arg(long)]
    members: Option<usize>,
    /// Groups in the world (overrides the size's).
    #[arg(long)]
    groups: Option<usize>,
    /// Apps in the world (overrides the size's).
    #[arg(long)]
    apps: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// An argument for `consentry serve` (repeat for more), e.g. --serve-arg=--commit-wait-us=0.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Where the server's data directory goes while it runs (removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn route(name: &str) -> Result<Route> {
    Ok(match name.trim() {
        "healthz" | "health" => Route::Health,
        "group" => Route::Group,
        "posts" => Route::Posts,
        "members" => Route::Members,
        other => bail!("unknown route {other:?}: use healthz, group, posts or members"),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(1..=4096).contains(&args.connections) {
        bail!("--connections must be between 1 and 4096");
    }
    let seconds_ok = args.seconds > 0.0 && args.seconds <= 600.0;
    if !seconds_ok || !(0.0..=60.0).contains(&args.warm_up) {
        bail!("--seconds must be in (0, 600] and --warm-up in [0, 60]");
    }
    if !(1..=500).contains(&args.page) {
        bail!("--page must be between 1 and 500");
    }
    let binary = match args.server {
        Some(binary) => binary,
        None => std::env::current_exe()
            .context("cannot find this program's path")?
            .with_file_name(format!("consentry{}", std::env::consts::EXE_SUFFIX)),
    };
    if !binary.is_file() {
        bail!(
            "{} is not a file: build it (cargo build --release -p consentry) or give --server",
            binary.display()
        );
    }
    let mut world = if args.small { WorldSize::small() } else { WorldSize::full() };
    world.members = args.members.unwrap_or(world.members).max(3);
    world.groups = args.groups.unwrap_or(world.groups).max(1);
    world.apps = args.apps.unwrap_or(world.apps).max(1);
    world.seed = args.seed.unwrap_or(world.seed);
    let options = RunOptions {
        binary,
        work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
        listen: args.listen,
        world,
        load: LoadOptions {
            connections: args.connections,
            seconds: args.seconds,
            max_requests: args.requests.max(1),
            warm_up_seconds: args.warm_up,
            page: args.page,
        },
        routes: args.routes.iter().map(|r| route(r)).collect::<Result<_>>()?,
        serve_args: args.serve_arg,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(consentry_loadgen::run(&options))?;
    print!("{}", report.render());
    let failed: u64 = report.phases.iter().map(|p| p.errors).sum();
    if failed > 0 {
        let first = report.phases.iter().find_map(|p| p.first_error.clone()).unwrap_or_default();
        bail!("{failed} requests failed; the first: {first}");
    }
    Ok(())
}
