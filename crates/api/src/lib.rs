//! consentry's HTTP surfaces: OAuth 2.0 for apps, the Groups API, the platform API and the
//! OpenAPI document. The only crate that knows HTTP; it maps every error to problem+json.

mod audits;
mod cases;
pub mod console;
mod extract;
mod groups;
mod keys;
mod listener;
mod oauth;
mod openapi;
mod operations;
mod platform;
mod problem;
mod proofs;
mod recorder;
mod report;
mod transparency;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use consentry_service::{DisclosureRecord, DisclosureSink, Service};

pub use audits::{parse_since, report_json, window};
pub use listener::{serve, ProblemIo, ProblemListener};
pub use openapi::ApiDoc;
pub use operations::{metrics_app, Metrics, Readiness};
pub use problem::{ApiError, Problem};
pub use proofs::{prove_version, review_json, standing_json, Proofs};
pub use recorder::{COMMIT_WAIT, MOST_PER_SYNC};
pub use report::{manifest_csv, manifest_json, report_csv, report_html};
pub use transparency::LedgerSink;

/// Largest JSON body the platform API accepts.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// Largest policy text accepted.
pub const POLICY_BODY_LIMIT: usize = 1024 * 1024;
/// How long a throttled authentication waits before its 429 or 503 leaves (see
/// [`pause_refusals`]).
pub const REFUSAL_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
/// How many refusals may be pausing at once; beyond, they leave at once.
pub const REFUSALS_PAUSING: usize = 4096;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<Service>,
    /// Where disclosure records go before a response leaves; `None` records nothing.
    pub disclosures: Option<Arc<dyn DisclosureSink>>,
    /// The ledger root (every node's stream), for member transparency reads.
    pub ledger_dir: Option<std::path::PathBuf>,
    /// The prover policy versions are proven with; `None`: this server proves nothing.
    pub proofs: Option<Arc<Proofs>>,
    /// Places for refusals pausing before they leave.
    refusals_pausing: Arc<tokio::sync::Semaphore>,
    /// This node's ledger stream, when it records disclosures (for readiness, metrics and the
    /// console's progress bars).
    pub ledger: Option<Arc<consentry_ledger::Ledger>>,
    /// The privacy team's console: its sessions and jobs.
    pub console: Arc<console::Console>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The writer thread records go through (group commit), when there is a sink.
    recorder: Option<Arc<recorder::Recorder>>,
    /// How long the writer waits, at most, for records of requests being decided.
    commit_wait: std::time::Duration,
}

impl ApiState {
    pub fn new(service: Arc<Service>) -> ApiState {
        ApiState {
            service,
            disclosures: None,
            ledger_dir: None,
            proofs: None,
            refusals_pausing: Arc::new(tokio::sync::Semaphore::new(REFUSALS_PAUSING)),
            ledger: None,
            console: Arc::default(),
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
            recorder: None,
            commit_wait: COMMIT_WAIT,
        }
    }

    /// Starts the writer thread for the sink (replacing any earlier one). If no thread can be
    /// started, records are written from the blocking pool instead, one sync each at worst.
    fn start_recorder(mut self) -> ApiState {
        self.recorder = None;
        if let Some(sink) = self.disclosures.clone() {
            match recorder::Recorder::start(sink, self.commit_wait) {
                Ok(recorder) => self.recorder = Some(Arc::new(recorder)),
                Err(e) => tracing::warn!(
                    "cannot start the ledger writer thread ({e}); recording from the blocking pool"
                ),
            }
        }
        self
    }

    /// The longest the ledger writer waits for records of requests being decided before it
    /// syncs ([`COMMIT_WAIT`] by default; zero syncs as soon as the writer is free).
    pub fn with_commit_wait(mut self, wait: std::time::Duration) -> ApiState {
        self.commit_wait = wait;
        self.start_recorder()
    }

    /// Announces a Groups API request whose record will follow, so that the ledger writer
    /// waits for it (a bounded moment) and its record shares a sync with others.
    pub(crate) fn coming(&self) -> recorder::Coming {
        self.recorder.as_ref().map_or_else(recorder::Coming::none, |r| r.coming())
    }

    /// Records every disclosure in `ledger` before responding, and serves member transparency
    /// from every stream of its ledger root.
    pub fn with_ledger(mut self, ledger: Arc<consentry_ledger::Ledger>) -> ApiState {
        self.ledger_dir = Some(ledger.root().to_path_buf());
        let metrics = self.metrics.clone();
        ledger.observe_syncs(Arc::new(move |took| metrics.observe_sync(took.as_secs_f64())));
        self.ledger = Some(ledger.clone());
        self.disclosures = Some(Arc::new(LedgerSink(ledger)));
        self.start_recorder()
    }

    /// Answers `/readyz` as `readiness` says (draining, the schema check).
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> ApiState {
        self.readiness = readiness;
        self
    }

    /// Proves policy versions with `proofs` (and approvals run them when none are kept).
    pub fn with_proofs(mut self, proofs: Proofs) -> ApiState {
        self.proofs = Some(Arc::new(proofs));
        self
    }

    /// The console with these session limits (tests: short expiries, few sessions).
    pub fn with_console(mut self, console: console::Console) -> ApiState {
        self.console = Arc::new(console);
        self
    }

    pub fn with_disclosures(mut self, sink: Arc<dyn DisclosureSink>) -> ApiState {
        self.disclosures = Some(sink);
        self.start_recorder()
    }

    /// Waits until the record is durable; if it cannot be, the response is a 503 and
    /// nothing is disclosed (invariant 3). `coming` is the request's announcement.
    async fn record(&self, record: DisclosureRecord, coming: recorder::Coming) -> Result<(), ApiError> {
        let outcome = match (&self.recorder, &self.disclosures) {
            (Some(recorder), _) => match recorder.submit(record, coming) {
                Ok(answer) => answer.await.map_err(|_| "the ledger writer stopped".to_string()),
                Err(detail) => Ok(Err(detail)),
            },
            (None, Some(sink)) => {
                drop(coming);
                let sink = sink.clone();
                tokio::task::spawn_blocking(move || sink.record(&record)).await.map_err(|e| e.to_string())
            }
            (None, None) => return Ok(()),
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(detail)) => {
                tracing::error!(detail, "disclosure could not be recorded; nothing disclosed");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger-unavailable",
                    "the disclosure could not be recorded, so nothing was sent; try again later",
                ))
            }
            Err(e) => Err(ApiError::internal(&format!("recording failed: {e}"))),
        }
    }
}

/// A request's id, also sent back as `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = consentry_service::request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Marks a response that refuses an authentication attempt for now (429, 503 with
/// `Retry-After`), so that [`pause_refusals`] holds it back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusedForNow;

/// Holds a throttled answer back for [`REFUSAL_PAUSE`] before it leaves. Refusing costs the
/// server almost nothing, but a client that ignores `Retry-After` and asks again at once
/// would otherwise turn the refusals themselves into a flood; paused, each of its connections
/// gets one answer a second. The pause holds no thread and no argon2 place, only the waiting
/// connection, and at most [`REFUSALS_PAUSING`] pause at once (beyond, they leave at once).
async fn pause_refusals(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if response.extensions().get::<RefusedForNow>().is_some() {
        if let Ok(_place) = state.refusals_pausing.try_acquire() {
            tokio::time::sleep(REFUSAL_PAUSE).await;
        }
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method",
    )
}

/// Whether the server answers at all.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "the server answers", content_type = "text/plain", body = String)))]
async fn health() -> &'static str {
    "ok"
}

/// The OpenAPI document `/openapi.json` serves.
pub fn openapi_json() -> serde_json::Value {
    serde_json::to_value(openapi::document()).unwrap_or_default()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "server",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
async fn serve_openapi() -> Response {
    Json(openapi::document()).into_response()
}

/// The whole HTTP application, testable without a socket.
pub fn app(state: ApiState) -> Router {
    let platform = Router::new()
        .route("/members/{id}", put(platform::put_member))
        .route("/groups/{id}", put(platform::put_group))
        .route(
            "/groups/{gid}/members/{mid}",
            put(platform::put_membership).delete(platform::delete_membership),
        )
        .route("/groups/{gid}/posts/{pid}", put(platform::put_post))
        .route("/developers/{id}", put(platform::put_developer))
        .route("/apps", post(platform::create_app).get(platform::list_apps))
        .route("/apps/{id}/suspend", post(platform::suspend_app))
        .route("/apps/{id}/reinstate", post(platform::reinstate_app))
        .route("/apps/{id}/revoke", post(platform::revoke_app))
        .route("/developers/{id}/revoke", post(platform::revoke_developer))
        .route("/developers/{id}/webhook-secret", get(platform::webhook_secret))
        .route("/developers/{id}/notifications", get(platform::list_notifications))
        .route(
            "/groups/{gid}/installations/{app}",
            put(platform::put_installation).delete(platform::delete_installation),
        )
        .route("/groups/{gid}/installations", get(platform::group_installations))
        .route("/members/{mid}/consents/{app}", put(platform::put_consent).delete(platform::delete_consent))
        .route("/members/{id}/disclosures", get(transparency::member_disclosures))
        .route("/ledger/stats", get(transparency::ledger_stats))
        .route("/policies/{version}/activate", post(platform::activate_policy))
        .route("/policies/{version}/approve", post(platform::approve_policy))
        .route("/policies/{version}/proofs", post(proofs::prove).get(proofs::list_proofs))
        .route("/policies/{version}/waivers", post(proofs::waive))
        .route("/policies/preview", post(audits::preview_policy))
        .route("/policies/{version}/preview", post(audits::preview_version))
        .route("/keys", post(keys::create_key).get(keys::list_keys))
        .route("/keys/{id}", get(keys::show_key).delete(keys::revoke_key))
        .route("/audits", post(audits::run_audit))
        .route("/cases", get(cases::all_cases))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(
            Router::new()
                .route("/policies", post(platform::submit_policy).get(platform::list_policies))
                .layer(DefaultBodyLimit::max(POLICY_BODY_LIMIT)),
        );
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/oauth/revoke", post(oauth::revoke))
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/v1/groups/{id}", get(groups::read_group))
        .route("/v1/groups/{id}/posts", get(groups::read_posts))
        .route("/v1/groups/{id}/members", get(groups::read_members))
        .route("/v1/cases", get(cases::my_cases))
        .route("/v1/cases/{id}/attestation", post(cases::attest))
        .route("/v1/apps/{id}/certification", post(cases::certify))
        .route("/openapi.json", get(serve_openapi))
        .route("/healthz", get(health))
        .route("/readyz", get(operations::readyz))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .nest("/platform/v1", platform)
        .nest("/console", console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), operations::track))
        .layer(middleware::from_fn_with_state(state.clone(), pause_refusals))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}
