//! Apps and developers: each app's status, category, last certification and installations;
//! one app's installations and what its developer was told of its standing; suspend,
//! reinstate and revoke with a reason (a banned app stays banned; a suspended app comes back
//! only once its case is closed), and revoking every app of a developer.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use consentry_service::STANDING_ROLES;
use consentry_types::{AppId, AppStatus, DeveloperId};

use super::session::{done, Signed};
use super::view::{self, count, Chrome, ConsoleError, READERS};
use crate::extract::blocking;
use crate::problem::ApiError;
use crate::ApiState;

fn map(error: consentry_store::StoreError) -> ApiError {
    ApiError::from(consentry_service::ServiceError::from(error))
}

pub(crate) struct AppLine {
    pub id: String,
    pub name: String,
    pub developer: String,
    pub developer_name: String,
    pub category: String,
    pub status: &'static str,
    pub certified: String,
    pub certified_sort: i64,
    pub installations: u64,
}

pub(crate) struct DeveloperLine {
    pub id: String,
    pub name: String,
    pub contact: String,
    pub webhook: String,
    pub apps: usize,
}

#[derive(Template)]
#[template(path = "console/apps.html")]
struct AppsPage {
    chrome: Chrome,
    apps: Vec<AppLine>,
    developers: Vec<DeveloperLine>,
    installations: String,
}

/// `GET /console/apps`.
pub(crate) async fn list(
    State(state): State<ApiState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let (apps, developers, total) = blocking(&state.service, |s| {
        let store = s.store();
        let apps = store.apps().map_err(map)?;
        let facts = store.facts_as_of(s.now()).map_err(map)?;
        let mut installed: HashMap<&AppId, u64> = HashMap::new();
        for (app, _) in facts.installations.keys() {
            *installed.entry(app).or_default() += 1;
        }
        let mut developers: Vec<DeveloperLine> = Vec::new();
        let mut names: HashMap<DeveloperId, String> = HashMap::new();
        for app in &apps {
            if names.contains_key(&app.developer) {
                continue;
            }
            let found = store.developer(&app.developer).map_err(map)?;
            let name = found.as_ref().map(|d| d.name.clone()).unwrap_or_default();
            names.insert(app.developer.clone(), name.clone());
            developers.push(DeveloperLine {
                id: app.developer.to_string(),
                name,
                contact: found.as_ref().map(|d| d.contact_email.clone()).unwrap_or_default(),
                webhook: found.map(|d| d.webhook_url).unwrap_or_default(),
                apps: apps.iter().filter(|a| a.developer == app.developer).count(),
            });
        }
        let mut lines = Vec::new();
        for app in &apps {
            let certified = store.last_certified(&app.id).map_err(map)?;
            lines.push(AppLine {
                id: app.id.to_string(),
                name: app.name.clone(),
                developer: app.developer.to_string(),
                developer_name: names.get(&app.developer).cloned().unwrap_or_default(),
                category: app.category.clone(),
                status: app.status.as_str(),
                certified: certified.map(view::day).unwrap_or_else(|| "never".into()),
                certified_sort: certified.map(|t| t.millis()).unwrap_or(0),
                installations: installed.get(&app.id).copied().unwrap_or(0),
            });
        }
        developers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((lines, developers, facts.installations.len() as u64))
    })
    .await?;
    let mut chrome = signed.chrome("/console/apps", "Apps and developers");
    chrome.notice = view::notice(&params);
    Ok(view::html(&AppsPage { chrome, apps, developers, installations: count(total) }))
}

pub(crate) struct Told {
    pub at: String,
    pub event: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "console/app.html")]
struct AppPage {
    chrome: Chrome,
    id: String,
    name: String,
    category: String,
    status: &'static str,
    client_id: String,
    certified: String,
    developer: String,
    developer_name: String,
    developer_contact: String,
    installations: Vec<(String, String, String)>,
    told: Vec<Told>,
    may_act: bool,
    may_suspend: bool,
    may_reinstate: bool,
    may_revoke: bool,
}

fn app_of(path: Result<Path<String>, PathRejection>) -> Result<AppId, ConsoleError> {
    let Path(raw) = path.map_err(|_| ConsoleError::bad_request("bad path"))?;
    AppId::parse(&raw).map_err(|e| ConsoleError::bad_request(e.to_string()))
}

/// `GET /console/apps/{id}`.
pub(crate) async fn show(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    signed.require(READERS)?;
    let params = view::query(query, &["done", "n"])?;
    let id = app_of(path)?;
    let mut chrome = signed.chrome("/console/apps", format!("App {id}"));
    chrome.notice = view::notice(&params);
    let may_act = STANDING_ROLES.contains(&signed.operator.role);
    let page = blocking(&state.service, move |s| {
        let store = s.store();
        let app = store.app(&id).map_err(map)?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not-found", format!("there is no app {id}"))
        })?;
        let developer = store.developer(&app.developer).map_err(map)?;
        let facts = store.facts_as_of(s.now()).map_err(map)?;
        let installations = facts
            .installations
            .iter()
            .filter(|((a, _), _)| *a == id)
            .map(|((_, group), (by, since))| (group.to_string(), by.to_string(), view::when(*since)))
            .collect();
        let quoted = format!("\"app\":\"{id}\"");
        let told = store
            .notifications(&app.developer)
            .map_err(map)?
            .into_iter()
            .filter(|n| matches!(n.event.as_str(), "app.suspended" | "app.reinstated" | "access.revoked"))
            .filter(|n| n.payload.contains(&quoted))
            .map(|n| Told {
                at: view::when(n.created_at),
                event: n.event,
                reason: serde_json::from_str::<serde_json::Value>(&n.payload)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect();
        let certified =
            store.last_certified(&id).map_err(map)?.map(view::day).unwrap_or_else(|| "never".into());
        Ok(AppPage {
            chrome,
            id: app.id.to_string(),
            name: app.name,
            category: app.category,
            status: app.status.as_str(),
            client_id: app.client_id,
            certified,
            developer: app.developer.to_string(),
            developer_name: developer.as_ref().map(|d| d.name.clone()).unwrap_or_default(),
            developer_contact: developer.map(|d| d.contact_email).unwrap_or_default(),
            installations,
            told,
            may_act,
            may_suspend: may_act && app.status == AppStatus::Active,
            may_reinstate: may_act && app.status == AppStatus::Suspended,
            may_revoke: may_act && app.status != AppStatus::Banned,
        })
    })
    .await?;
    Ok(view::html(&page))
}

/// `POST /console/apps/{id}/suspend|reinstate|revoke` with a `reason`.
pub(crate) async fn act(
    State(state): State<ApiState>,
    signed: Signed,
    paths: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let Path((raw, action)) = paths.map_err(|_| ConsoleError::bad_request("bad path"))?;
    let app = AppId::parse(&raw).map_err(|e| ConsoleError::bad_request(e.to_string()))?;
    if !matches!(action.as_str(), "suspend" | "reinstate" | "revoke") {
        return Err(ConsoleError::new(
            StatusCode::NOT_FOUND,
            "an app can be suspended, reinstated or revoked",
        ));
    }
    signed.require(STANDING_ROLES)?;
    let form = signed.form(&headers, &body, &["reason"])?;
    let reason = form.get("reason").unwrap_or_default().to_string();
    let operator = signed.operator.clone();
    let target = app.clone();
    let (what, n) = blocking(&state.service, move |s| {
        match action.as_str() {
            "suspend" => s.suspend_app_because(&operator, &target, &reason).map(|()| ("suspended", None)),
            "reinstate" => {
                s.reinstate_app_because(&operator, &target, &reason).map(|()| ("reinstated", None))
            }
            _ => s.revoke_app_by(&operator, &target, &reason).map(|tokens| ("revoked", Some(tokens))),
        }
        .map_err(ApiError::from)
    })
    .await?;
    Ok(done(&format!("/console/apps/{app}"), what, n))
}

/// `POST /console/developers/{id}/revoke` with a `reason`: every app of the developer.
pub(crate) async fn revoke_developer(
    State(state): State<ApiState>,
    signed: Signed,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let Path(raw) = path.map_err(|_| ConsoleError::bad_request("bad path"))?;
    let developer = DeveloperId::parse(&raw).map_err(|e| ConsoleError::bad_request(e.to_string()))?;
    signed.require(STANDING_ROLES)?;
    let form = signed.form(&headers, &body, &["reason"])?;
    let reason = form.get("reason").unwrap_or_default().to_string();
    let operator = signed.operator.clone();
    let (apps, _) = blocking(&state.service, move |s| {
        s.revoke_developer_by(&operator, &developer, &reason).map_err(ApiError::from)
    })
    .await?;
    Ok(done("/console/apps", "developer-revoked", Some(apps)))
}
