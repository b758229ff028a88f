//! Operating a node behind a load balancer: `/healthz` (the process answers), `/readyz`
//! (it can serve: store reachable, ledger taking appends, schema current, not draining), and
//! `/metrics` in the Prometheus text format (prometheus-client), served on its own listener
//! (`metrics_app`), never on the public one: it shows the shape of the traffic, so it is for
//! the operators' network only, like the store's port. Every request is counted by route and
//! status, timed, and logged with the request id its ledger record carries.
//!
//! None of these routes is part of the app or platform API document: they are for the load
//! balancer and the monitoring, not for apps or operators' tools.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::{ApiState, RequestId};

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// What a node counts.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    decisions: Counter,
    memo_hits: Counter,
    ledger_appends: Counter,
    ledger_syncs: Counter,
    sync_latency: Histogram,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    open_cases: Gauge,
    /// What the counters fed from totals last saw: (decisions, memo hits, records, syncs).
    seen: Mutex<Option<(u64, u64, u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("consentry");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let (decisions, memo_hits, ledger_appends, ledger_syncs) =
            (Counter::default(), Counter::default(), Counter::default(), Counter::default());
        let sync_latency = latency_histogram();
        let (outbox_pending, outbox_dead, open_cases) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        registry.register("http_request_duration_seconds", "Time to answer, by route", latency.clone());
        registry.register("decisions", "Field decisions made while serving", decisions.clone());
        registry.register(
            "decision_memo_hits",
            "Field decisions answered from memory, not by Cedar",
            memo_hits.clone(),
        );
        registry.register(
            "ledger_appends",
            "Disclosure records appended to this node's ledger stream",
            ledger_appends.clone(),
        );
        registry.register(
            "ledger_syncs",
            "fdatasyncs of this node's ledger stream (each makes a group of appends durable)",
            ledger_syncs.clone(),
        );
        registry.register("ledger_sync_duration_seconds", "Time of each ledger sync", sync_latency.clone());
        registry.register(
            "webhook_outbox_pending",
            "Webhook events waiting to be delivered",
            outbox_pending.clone(),
        );
        registry.register(
            "webhook_outbox_dead",
            "Webhook events given up on (dead letters)",
            outbox_dead.clone(),
        );
        registry.register("cases_open", "Remediation cases not closed or failed", open_cases.clone());
        Metrics {
            registry,
            requests,
            latency,
            decisions,
            memo_hits,
            ledger_appends,
            ledger_syncs,
            sync_latency,
            outbox_pending,
            outbox_dead,
            open_cases,
            seen: Mutex::new(None),
        }
    }

    /// The duration of one ledger sync.
    pub fn observe_sync(&self, seconds: f64) {
        self.sync_latency.observe(seconds);
    }

    /// Reads what is counted elsewhere (decisions, the ledger, the store) and renders the
    /// text exposition.
    fn render(&self, state: &ApiState) -> Result<String, String> {
        let decided = state.service.decision_stats();
        let ledger = state.ledger.as_ref().map(|l| l.stats()).unwrap_or_default();
        if let Ok(mut seen) = self.seen.lock() {
            let now = (decided.decisions, decided.memo_hits, ledger.records, ledger.syncs);
            // The first scrape starts the counters from what the node had done by then.
            let before = seen.unwrap_or((0, 0, ledger.records, ledger.syncs));
            self.decisions.inc_by(now.0.saturating_sub(before.0));
            self.memo_hits.inc_by(now.1.saturating_sub(before.1));
            self.ledger_appends.inc_by(now.2.saturating_sub(before.2));
            self.ledger_syncs.inc_by(now.3.saturating_sub(before.3));
            *seen = Some(now);
        }
        let store = state.service.store();
        let depth = store.outbox_depth().map_err(|e| e.to_string())?;
        self.outbox_pending.set(i64::try_from(depth.pending).unwrap_or(i64::MAX));
        self.outbox_dead.set(i64::try_from(depth.dead).unwrap_or(i64::MAX));
        let open = store
            .cases()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|c| {
                !matches!(c.state, consentry_store::CaseState::Closed | consentry_store::CaseState::Failed)
            })
            .count();
        self.open_cases.set(i64::try_from(open).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).map_err(|e| e.to_string())?;
        Ok(text)
    }
}

/// Whether the node can serve, with the reason when it cannot.
#[derive(Default)]
pub struct Readiness {
    /// Set when the node is told to stop: it answers not ready while it finishes.
    pub draining: AtomicBool,
}

impl Readiness {
    fn check(&self, state: &ApiState) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining: the node is stopping".into());
        }
        // Read afresh each time: a newer consentry on another node may have migrated the
        // database since this one opened it, and this one would misread what it now holds.
        let schema =
            state.service.store().schema_versions().map_err(|e| format!("store unreachable: {e}"))?;
        if !schema.is_current() {
            return Err(format!(
                "schema: the database is at version {}, this consentry knows version {}",
                schema.applied, schema.known
            ));
        }
        if let Some(ledger) = &state.ledger {
            ledger.health().map_err(|e| format!("ledger: {e}"))?;
            if !ledger.dir().is_dir() {
                return Err(format!("ledger: {} is gone", ledger.dir().display()));
            }
        }
        Ok(())
    }
}

pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let checked = state.clone();
    let outcome = tokio::task::spawn_blocking(move || checked.readiness.check(&checked)).await;
    match outcome {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the check failed").into_response(),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let scraped = state.clone();
    match tokio::task::spawn_blocking(move || scraped.metrics.render(&scraped)).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Ok(Err(detail)) => {
            tracing::error!(detail, "metrics could not be read");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/metrics` alone, for a listener of its own on the operators' network.
pub fn metrics_app(state: ApiState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// Counts and times every request by route (the route's pattern, so ids do not make new
/// series) and status, and logs one line for it with the request id the ledger records.
pub(crate) async fn track(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let metrics = &state.metrics;
    metrics
        .requests
        .get_or_create(&vec![
            ("method", method.clone()),
            ("route", route.clone()),
            ("status", status.to_string()),
        ])
        .inc();
    metrics.latency.get_or_create(&vec![("route", route.clone())]).observe(seconds);
    tracing::info!(
        target: "consentry::request",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        millis = seconds * 1_000.0,
        "request"
    );
    response
}
