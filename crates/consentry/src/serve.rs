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

/// Serves until Ctrl-C, recording every disclosure in `ledger` before it leaves.
pub fn run(
    service: Arc<Service>,
    ledger: Arc<Ledger>,
    data_dir: DataDir,
    listen: &str,
    proofs: Option<consentry_api::Proofs>,
    commit_wait: std::time::Duration,
    after_bind: Option<AfterBind>,
) -> Result<()> {
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
        // Webhooks from the durable outbox, in the background.
        consentry_notify::Deliverer::new(service.clone(), consentry_notify::DeliveryOptions::default())
            .spawn(std::time::Duration::from_secs(5));
        // Cases past their deadline become overdue (and the developer is told); once a day,
        // installations unused for 90 days expire.
        let housekeeping = service.clone();
        let ledger_dir = ledger.dir().to_path_buf();
        std::thread::spawn(move || {
            let mut minutes = 0u64;
            loop {
                if let Err(e) = housekeeping.check_case_deadlines() {
                    eprintln!("checking case deadlines failed: {e}");
                }
                // Hourly: a case whose developer received anything after it opened fails.
                if minutes > 0 && minutes.is_multiple_of(60) {
                    if let Err(e) = crate::cases::fail_cases_with_disclosures(&housekeeping, &data_dir) {
                        eprintln!("checking cases for disclosures failed: {e}");
                    }
                }
                // Daily, starting a day after start-up (a freshly served demo world is not swept at once).
                if minutes > 0 && minutes.is_multiple_of(24 * 60) {
                    if let Err(e) = crate::installations::expire(&housekeeping, &ledger_dir, 90) {
                        eprintln!("expiring unused installations failed: {e}");
                    }
                    // The annual data-use checkup: uncertified for a year, suspended.
                    if let Err(e) = housekeeping.suspend_lapsed_certifications(365) {
                        eprintln!("suspending lapsed certifications failed: {e}");
                    }
                }
                minutes += 1;
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        });
        let mut state = ApiState::new(service).with_commit_wait(commit_wait).with_ledger(ledger.clone());
        if let Some(proofs) = proofs {
            state = state.with_proofs(proofs);
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
        // per address as well as per client id.
        let served = axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal())
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
