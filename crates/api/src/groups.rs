//! The Groups API for apps under `/v1`: fields decided per request, lists paged by cursor.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Extension;
use axum::Json;
use consentry_service::{GroupView, MemberView, Page, PageRequest, PostView};
use consentry_types::{GroupId, ResourceKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::{blocking, AppAuth, Params};
use crate::problem::ApiError;
use crate::{ApiState, RequestId};

/// A group, with only the fields the app asked for and may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupBody {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u64>,
}

/// A post's author, present only where the author allows this app to see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorBody {
    /// App-scoped member id.
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostBody {
    /// App-scoped post id: the same post has a different id for every app.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<AuthorBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberBody {
    /// App-scoped member id: the same member has a different id for every app.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Paging {
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostList {
    pub data: Vec<PostBody>,
    pub paging: Paging,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub data: Vec<MemberBody>,
    pub paging: Paging,
}

pub(crate) fn group_id(path: Result<Path<String>, PathRejection>) -> Result<GroupId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::bad_request(format!("bad path: {e}")))?;
    GroupId::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn page_request(params: &Params) -> Result<PageRequest, ApiError> {
    Ok(PageRequest { after: params.get("after").map(str::to_string), limit: params.usize("limit")? })
}

impl From<GroupView> for GroupBody {
    fn from(view: GroupView) -> GroupBody {
        GroupBody { id: view.id.to_string(), name: view.name, member_count: view.member_count }
    }
}

impl From<PostView> for PostBody {
    fn from(view: PostView) -> PostBody {
        PostBody {
            id: view.id,
            content: view.content,
            created_time: view.created_time.map(|t| t.to_string()),
            author: view.author.map(|a| AuthorBody { id: a.id, name: a.name }),
        }
    }
}

impl From<MemberView> for MemberBody {
    fn from(view: MemberView) -> MemberBody {
        MemberBody { id: view.id, name: view.name, picture: view.picture }
    }
}

fn list<V, B: From<V>>(page: Page<V>) -> (Vec<B>, Paging) {
    (page.items.into_iter().map(B::from).collect(), Paging { after: page.next })
}

/// Reads a group the app is installed in.
#[utoipa::path(
    get, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "group id"), ("fields" = Option<String>, Query, description = "comma-separated: name, member_count")),
    responses((status = 200, description = "the group, with the fields the app asked for and may see", body = GroupBody), (status = 404, body = crate::problem::Problem, description = "no such group, or the app is not installed in it"), (status = 503, body = crate::problem::Problem, description = "the disclosure could not be recorded, so nothing was sent")),
    security(("app_token" = []))
)]
pub async fn read_group(
    State(state): State<ApiState>,
    AppAuth(session): AppAuth,
    Extension(request_id): Extension<RequestId>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<GroupBody>, ApiError> {
    let group = group_id(path)?;
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["fields"])?;
    let fields = consentry_service::parse_fields(ResourceKind::Group, params.get("fields"))?;
    // Announced before deciding, so that the ledger writer waits for this record.
    let coming = state.coming();
    let asker = session.clone();
    let served =
        blocking(&state.service, move |s| s.read_group(&asker, &group, fields).map_err(Into::into)).await?;
    state.record(served.record(&request_id.0, "GET /v1/groups/{id}", &session), coming).await?;
    Ok(Json(served.body.into()))
}

/// Lists a group's posts, under ids scoped to the app; a post none of whose requested fields
/// the app may see is left out.
#[utoipa::path(
    get, path = "/v1/groups/{id}/posts", tag = "groups",
    params(
        ("id" = String, Path, description = "group id"),
        ("fields" = Option<String>, Query, description = "comma-separated: content, created_time, author"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "page size, 1 to 500, default 25"),
        ("after" = Option<String>, Query, description = "cursor from the previous page"),
    ),
    responses((status = 200, description = "a page of posts", body = PostList), (status = 404, body = crate::problem::Problem, description = "no such group, or the app is not installed in it"), (status = 503, body = crate::problem::Problem, description = "the disclosure could not be recorded, so nothing was sent")),
    security(("app_token" = []))
)]
pub async fn read_posts(
    State(state): State<ApiState>,
    AppAuth(session): AppAuth,
    Extension(request_id): Extension<RequestId>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<PostList>, ApiError> {
    let group = group_id(path)?;
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["fields", "limit", "after"])?;
    let fields = consentry_service::parse_fields(ResourceKind::Post, params.get("fields"))?;
    let page = page_request(&params)?;
    // Announced before deciding, so that the ledger writer waits for this record.
    let coming = state.coming();
    let asker = session.clone();
    let served =
        blocking(&state.service, move |s| s.read_posts(&asker, &group, fields, &page).map_err(Into::into))
            .await?;
    state.record(served.record(&request_id.0, "GET /v1/groups/{id}/posts", &session), coming).await?;
    let (data, paging) = list(served.body);
    Ok(Json(PostList { data, paging }))
}

/// Lists the members of a group this app may see; others leave no trace but the count.
#[utoipa::path(
    get, path = "/v1/groups/{id}/members", tag = "groups",
    params(
        ("id" = String, Path, description = "group id"),
        ("fields" = Option<String>, Query, description = "comma-separated: name, picture"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "page size, 1 to 500, default 25"),
        ("after" = Option<String>, Query, description = "cursor from the previous page"),
    ),
    responses((status = 200, description = "a page of members", body = MemberList), (status = 404, body = crate::problem::Problem, description = "no such group, or the app is not installed in it"), (status = 503, body = crate::problem::Problem, description = "the disclosure could not be recorded, so nothing was sent")),
    security(("app_token" = []))
)]
pub async fn read_members(
    State(state): State<ApiState>,
    AppAuth(session): AppAuth,
    Extension(request_id): Extension<RequestId>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<MemberList>, ApiError> {
    let group = group_id(path)?;
    let params = Params::parse(query.unwrap_or_default().as_bytes(), &["fields", "limit", "after"])?;
    let fields = consentry_service::parse_fields(ResourceKind::Member, params.get("fields"))?;
    let page = page_request(&params)?;
    // Announced before deciding, so that the ledger writer waits for this record.
    let coming = state.coming();
    let asker = session.clone();
    let served =
        blocking(&state.service, move |s| s.read_members(&asker, &group, fields, &page).map_err(Into::into))
            .await?;
    state.record(served.record(&request_id.0, "GET /v1/groups/{id}/members", &session), coming).await?;
    let (data, paging) = list(served.body);
    Ok(Json(MemberList { data, paging }))
}
