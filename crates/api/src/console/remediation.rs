//! Remediation: cases by state with their deadlines and history (attestations included), and
//! every webhook delivery to developers (delivered, retrying, dead) with a button that gives a
//! dead one another attempt.

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use consentry_service::RETRY_ROLES;
use consentry_store::DeliveryStatus;
use consentry_types::{DeveloperId, Instant};

use super::session::{done, Signed};
use super::view::{self, Chrome, ConsoleError, READERS};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

/// Delivered notifications listed (the newest); the rest are counted.
const DELIVERED_SHOWN: usize = 50;

pub(crate) struct CaseView {
    pub id: u64,
    pub developer: String,
    pub opened: String,
    pub deadline: String,
    pub due: String,
    pub items: u64,
    pub events: Vec<(String, &'static str, String)>,
}

pub(crate) struct DeliveryView {
    pub id: u64,
    pub developer: String,
    pub event: String,
    pub created: String,
    pub state: &'static str,
    pub attempts: u32,
    pub next: String,
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "console/remediation.html")]
struct RemediationPage {
    chrome: Chrome,
    cases: Vec<(&'static str, Vec<CaseView>)>,
    dead: Vec<DeliveryView>,
    pending: Vec<DeliveryView>,
    delivered: Vec<DeliveryView>,
    delivered_total: usize,
    may_retry: bool,
}

fn due(deadline: Instant, now: Instant, state: &str) -> String {
    if !matches!(state, "deletion_requested" | "overdue") {
        return String::new();
    }
    let days = (deadline.secs() - now.secs()) / 86_400;
    if deadline <= now {
        format!("{} days late", -days)
    } else {
        format!("due in {days} days")
    }
}

/// Items in a manifest (JSON: app → list of (member, field)).
fn items(manifest: &serde_json::Value) -> u64 {
    manifest
        .as_object()
        .map(|apps| apps.values().filter_map(|v| v.as_array()).map(|a| a.len() as u64).sum())
        .unwrap_or(0)
}

/// The state of a delivery as people say it.
fn delivery_state(status: DeliveryStatus, attempts: u32) -> &'static str {
    match status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Dead => "dead",
        DeliveryStatus::Pending if attempts == 0 => "queued",
        DeliveryStatus::Pending => "retrying",
    }
}

/// `GET /console/remediation`.
pub(crate) async fn page(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let (bodies, notifications, now) = blocking(&state.service, |s| {
        let bodies = crate::cases::case_bodies(s)?;
        let map = |e| ApiError::from(consentry_service::ServiceError::from(e));
        let store = s.store();
        // Developers are known through their apps and their cases.
        let mut developers: Vec<DeveloperId> =
            store.apps().map_err(map)?.into_iter().map(|a| a.developer).collect();
        developers.extend(store.cases().map_err(map)?.into_iter().map(|c| c.developer));
        developers.sort();
        developers.dedup();
        let mut notifications = Vec::new();
        for developer in &developers {
            notifications.extend(store.notifications(developer).map_err(map)?);
        }
        Ok((bodies, notifications, s.now()))
    })
    .await?;
    let order = ["overdue", "deletion_requested", "attested", "failed", "closed"];
    let cases = order
        .iter()
        .map(|state| {
            let list = bodies
                .iter()
                .filter(|c| c.state == *state)
                .map(|c| {
                    let deadline = Instant::parse(&c.deadline).unwrap_or(now);
                    CaseView {
                        id: c.id,
                        developer: c.developer.clone(),
                        opened: c.opened_at.get(..10).unwrap_or_default().to_string(),
                        deadline: view::day(deadline),
                        due: due(deadline, now, c.state),
                        items: items(&c.manifest),
                        events: c
                            .events
                            .iter()
                            .map(|e| {
                                (
                                    e.at.get(..16).unwrap_or_default().replace('T', " "),
                                    e.state,
                                    e.note.clone(),
                                )
                            })
                            .collect(),
                    }
                })
                .collect();
            (*state, list)
        })
        .collect();
    let view_of = |n: &consentry_store::Notification| DeliveryView {
        id: n.id,
        developer: n.developer.to_string(),
        event: n.event.clone(),
        created: view::when(n.created_at),
        state: delivery_state(n.status, n.attempts),
        attempts: n.attempts,
        next: if n.status == DeliveryStatus::Pending { view::when(n.next_attempt_at) } else { String::new() },
        last_error: n.last_error.clone().unwrap_or_default(),
    };
    let dead = notifications.iter().filter(|n| n.status == DeliveryStatus::Dead).map(view_of).collect();
    let mut pending: Vec<DeliveryView> =
        notifications.iter().filter(|n| n.status == DeliveryStatus::Pending).map(view_of).collect();
    pending.sort_by_key(|d| d.id);
    let mut delivered: Vec<&consentry_store::Notification> =
        notifications.iter().filter(|n| n.status == DeliveryStatus::Delivered).collect();
    let delivered_total = delivered.len();
    delivered.sort_by_key(|n| std::cmp::Reverse(n.id));
    let delivered = delivered.into_iter().take(DELIVERED_SHOWN).map(view_of).collect();
    let mut chrome = signed.chrome("/console/remediation", "Remediation");
    chrome.notice = view::notice(&params);
    let page = RemediationPage {
        chrome,
        cases,
        dead,
        pending,
        delivered,
        delivered_total,
        may_retry: RETRY_ROLES.contains(&signed.operator.role),
    };
    Ok(view::html(&page))
}

/// `POST /console/deliveries/{id}/retry`: a dead delivery gets another attempt now.
pub(crate) async fn retry(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let id = path
        .ok()
        .and_then(|Path(raw)| raw.parse::<u64>().ok())
        .ok_or_else(|| ConsoleError::bad_request("a delivery id is a whole number"))?;
    signed.require(RETRY_ROLES)?;
    signed.form(&headers, &body, &[])?;
    let operator = signed.operator.clone();
    blocking(&state.service, move |s| s.retry_delivery(&operator, id).map_err(ApiError::from)).await?;
    Ok(done("/console/remediation", "retried", Some(id)))
}
