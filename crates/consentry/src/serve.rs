//! Serving: bind, announce, and run the HTTP application until interrupted.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use consentry_api::{app, ApiState};
use consentry_ledger::Ledger;
use consentry_service::Service;

use crate::data_dir::DataDir;
use crate::keys::{os_user, retire_bootstrap_key_file, BOOTSTRAP_KEY_FILE};

/// On an empty store, creates the first operator key and writes it where only the owner can
/// read; on every later start, removes that file once it is no longer needed (see
/// [`retire_bootstrap_key_file`]). `command` is recorded as the key's maker. The file is
/// created first: if it cannot be (a file or a link is already there), no key is created that
/// nobody could use.
pub fn announce_bootstrap_key(service: &Service, dir: &DataDir, command: &str) -> Result<()> {
    if service.store().operator_key_count().context("cannot count the operator keys")? > 0 {
        return retire_bootstrap_key_file(service, dir);
    }
    let (path, file) = dir.create_secret(BOOTSTRAP_KEY_FILE)?;
    match service.bootstrap_operator_key(command, &os_user()) {
        Ok(Some(key)) => {
            crate::data_dir::fill_secret(&path, file, &format!("{}\n", key.key))?;
            println!(
                "created the first operator key (role operator) in {} (mode 0600); keep it secret",
                path.display()
            );
            Ok(())
        }
        outcome => {
            drop(file);
            let _ = std::fs::remove_file(&path);
            outcome.map(|_| ()).context("cannot create the bootstrap operator key")
        }
    }
}

/// Where developers' webhooks may point: public https endpoints, names resolved by the system
/// resolver at registration and at each delivery; with `allow_local` (local development, the
/// demo), also loopback and plain http.
pub fn webhook_targets(allow_local: bool) -> consentry_service::WebhookTargets {
    consentry_service::WebhookTargets::strict()
        .allow_local(allow_local)
        .with_resolver(Arc::new(consentry_notify::SystemResolver))
}

/// Most threads running blocking work at once (tokio's default is 512).
pub const BLOCKING_THREADS: usize = 32;

/// Called once the listener is bound, with its address.
pub type AfterBind = Box<dyn FnOnce(SocketAddr) + Send>;

/// How a node is operated behind a load balancer.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Where `/metrics` is served (the operators' network); `None`: not served.
    pub metrics_listen: Option<String>,
    /// On SIGTERM, how long `/readyz` answers 503 while requests are still served, so the load
    /// balancer stops sending new ones before the listener closes.
    pub drain_secs: u64,
    /// Group commit: the longest the ledger writer waits for records of requests being decided.
    pub commit_wait: std::time::Duration,
}

impl Default for Operation {
    fn default() -> Operation {
        Operation { metrics_listen: None, drain_secs: 0, commit_wait: consentry_api::COMMIT_WAIT }
    }
}

/// Periodic jobs: every node tries them; a lease in the store lets one run each period.
fn jobs(service: &Service, node: &str, ledger_root: &std::path::Path) {
    use consentry_service::JobSchedule;
    let every = |every_secs: i64, lease_secs: i64, first_after_secs: i64| JobSchedule {
        every_secs,
        lease_secs,
        first_after_secs,
    };
    let report =
        |job: &str, outcome: consentry_service::ServiceResult<Option<Result<(), String>>>| match outcome {
            Ok(Some(Err(e))) => eprintln!("{job} failed: {e}"),
            Err(e) => eprintln!("{job}: cannot take the job's lease: {e}"),
            _ => {}
        };
    // Cases past their deadline become overdue (and the developer is told).
    let outcome = service.run_job("case-deadlines", node, every(60, 600, 0), || {
        service.check_case_deadlines().map(|_| ()).map_err(|e| e.to_string())
    });
    report("checking case deadlines", outcome);
    // Hourly: a case whose developer received anything after it opened, on any node, fails.
    let outcome = service.run_job("case-follow-up", node, every(3_600, 1_800, 3_600), || {
        crate::cases::fail_cases_with_disclosures(service, ledger_root).map(|_| ()).map_err(|e| e.to_string())
    });
    report("checking cases for disclosures", outcome);
    // Daily, first a day after the store first saw the job (a freshly served demo world is
    // not swept at once): unused installations expire; uncertified apps are suspended.
    let outcome = service.run_job("installation-expiry", node, every(86_400, 3_600, 86_400), || {
        crate::installations::expire(service, ledger_root, 90).map(|_| ()).map_err(|e| e.to_string())
    });
    report("expiring unused installations", outcome);
    let outcome = service.run_job("certification-lapses", node, every(86_400, 3_600, 86_400), || {
        service.suspend_lapsed_certifications(365).map(|_| ()).map_err(|e| e.to_string())
    });
    report("suspending lapsed certifications", outcome);
}

/// Serves until Ctrl-C, recording every disclosure in `ledger` before it leaves.
pub fn run(
    service: Arc<Service>,
    ledger: Arc<Ledger>,
    data_dir: DataDir,
    listen: &str,
    proofs: Option<consentry_api::Proofs>,
    after_bind: Option<AfterBind>,
    operation: Operation,
) -> Result<()> {
    let node = ledger.node().map_or_else(|| "local".to_string(), |n| n.to_string());
    // Blocking work (service calls, audits, transparency reads) runs on at most
    // BLOCKING_THREADS threads and queues beyond; responses waiting for their ledger sync
    // hold none (one writer thread syncs for all of them).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        if service.webhook_targets().allows_local() {
            println!(
                "local webhooks allowed: loopback and http:// endpoints are accepted (development only)"
            );
        }
        println!("consentry listening on http://{addr}  (Ctrl-C or SIGTERM stops it)");
        if let Some(after_bind) = after_bind {
            after_bind(addr);
        }
        // Webhooks from the durable outbox, in the background, by leases every node shares.
        consentry_notify::Deliverer::new(service.clone(), consentry_notify::DeliveryOptions::default())
            .with_node(&node)
            .spawn(std::time::Duration::from_secs(5));
        // Every 10 s: the server keys again (another node may have rotated them), and the
        // periodic jobs this node may run.
        let housekeeping = service.clone();
        let ledger_root = data_dir.ledger_dir();
        let job_node = node.clone();
        std::thread::spawn(move || loop {
            if let Err(e) = housekeeping.reload_server_key() {
                eprintln!("reloading the server key failed: {e}");
            }
            jobs(&housekeeping, &job_node, &ledger_root);
            std::thread::sleep(std::time::Duration::from_secs(10));
        });
        let readiness = Arc::new(consentry_api::Readiness::default());
        let mut state = ApiState::new(service)
            .with_commit_wait(operation.commit_wait)
            .with_ledger(ledger.clone())
            .with_readiness(readiness.clone());
        if let Some(proofs) = proofs {
            state = state.with_proofs(proofs);
        }
        if let Some(metrics_listen) = &operation.metrics_listen {
            let metrics = tokio::net::TcpListener::bind(metrics_listen)
                .await
                .with_context(|| format!("cannot listen on {metrics_listen} for metrics"))?;
            let at = metrics.local_addr().context("cannot read the metrics address")?;
            println!("metrics on http://{at}/metrics");
            let router = consentry_api::metrics_app(state.clone());
            tokio::spawn(async move {
                let _ = axum::serve(metrics, router).await;
            });
        }
        // Every few minutes, a signed checkpoint of what was served, so that an outside
        // auditor's copy is never far behind.
        let periodic = ledger.clone();
        tokio::spawn(async move {
            let mut last = periodic.stats().records;
            let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
            every.tick().await;
            loop {
                every.tick().await;
                let records = periodic.stats().records;
                if records != last {
                    let ledger = periodic.clone();
                    let _ = tokio::task::spawn_blocking(move || ledger.checkpoint()).await;
                    last = records;
                }
            }
        });
        // The peer address goes with each request, so failed authentication is throttled
        // per address as well as per client id; hyper's own answers leave as problem+json.
        let served = consentry_api::serve(listener, app(state), drain(readiness, operation.drain_secs))
            .await
            .context("the server stopped with an error");
        // A signed checkpoint of everything served, for outside auditors.
        match ledger.checkpoint() {
            Ok(checkpoint) => println!("ledger checkpoint: {}", checkpoint.to_line()),
            Err(e) => eprintln!("could not write a ledger checkpoint: {e}"),
        }
        served
    })
}

/// Waits for Ctrl-C or SIGTERM, then drains: `/readyz` answers 503 at once while requests
/// are still served for `drain_secs` (the load balancer sees it and sends no more), then the
/// listener closes and the requests in flight finish.
async fn drain(readiness: Arc<consentry_api::Readiness>, drain_secs: u64) {
    shutdown_signal().await;
    readiness.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    println!("stopping: not ready; serving for {drain_secs} s more, then finishing what is in flight");
    tokio::time::sleep(std::time::Duration::from_secs(drain_secs)).await;
}

/// Ctrl-C, or SIGTERM as service managers send it.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
