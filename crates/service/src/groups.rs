//! The Groups API's serving path: load the page and its facts, decide every (field, subject),
//! redact what is denied, and say exactly what was disclosed and at which instant.
//!
//! Each request runs in the revocation gate's read section (`crate::gate`): its token, its
//! app's status and its installation are checked, its facts read and its fields decided, and
//! its release instant taken, with no change of an access fact in between. Everything a page
//! decides on is read in one call, `Store::read_page`: one snapshot of the store, enough rows
//! for the whole scan of a page (see `rows_to_read`).

use std::sync::Arc;

use consentry_policy::{CompiledPolicy, PageFacts, SubjectFacts};
use consentry_store::{ListedMember, PageList, PageQuery, PageSnapshot, ProfileKinds};
use consentry_types::{
    Disclosure, Field, FieldSet, GroupId, Instant, MemberId, PostId, ResourceKind, Role, Subject,
};

use crate::auth::AppSession;
use crate::gate::Serving;
use crate::{Service, ServiceError, ServiceResult};

/// A response body together with the record of what it discloses.
#[derive(Debug, Clone)]
pub struct Served<T> {
    pub body: T,
    pub disclosures: Vec<Disclosure>,
    /// The policy version every decision of this response was made under (0: none active).
    pub policy_version: u32,
    /// The instant the response was released at: the facts every decision was made from are
    /// the facts in force at this instant (see `crate::gate`). The disclosure record carries it.
    pub released_at: Instant,
    /// The group the request was about.
    pub group: GroupId,
    /// The developer of the app that asked.
    pub developer: consentry_types::DeveloperId,
}

/// One page of a list and the cursor for the next, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What the app asked for: an opaque cursor and a page size.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub id: GroupId,
    pub name: Option<String>,
    pub member_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorView {
    /// App-scoped member id.
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostView {
    /// App-scoped post id: the same post has a different id for every app.
    pub id: String,
    pub content: Option<String>,
    pub created_time: Option<Instant>,
    pub author: Option<AuthorView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// App-scoped member id.
    pub id: String,
    pub name: Option<String>,
    pub picture: Option<String>,
}

/// Parses a Graph-API style `fields=` list for one resource kind; `None` gives the defaults
/// (every field of the kind). Unknown or repeated names are errors.
pub fn parse_fields(kind: ResourceKind, text: Option<&str>) -> ServiceResult<FieldSet> {
    let Some(text) = text else {
        return Ok(consentry_types::Field::ALL.into_iter().filter(|f| f.resource() == kind).collect());
    };
    let mut set = FieldSet::EMPTY;
    for name in text.split(',').map(str::trim) {
        let field = consentry_types::Field::parse_short(kind, name).map_err(|_| {
            let known: Vec<&str> = consentry_types::Field::ALL
                .into_iter()
                .filter(|f| f.resource() == kind)
                .map(|f| f.short_name())
                .collect();
            ServiceError::InvalidInput(format!(
                "unknown field {:?} for a {}; known fields: {}",
                name.chars().take(40).collect::<String>(),
                kind.as_str(),
                known.join(", ")
            ))
        })?;
        if set.contains(field) {
            return Err(ServiceError::InvalidInput(format!("field {name:?} is listed twice")));
        }
        set.insert(field);
    }
    Ok(set)
}

/// Everything a page's decisions share, read fresh for this request.
struct PageContext {
    developer: consentry_types::DeveloperId,
    policy: Option<Arc<CompiledPolicy>>,
    facts: PageFacts,
    /// When the request's token expires; checked against the release instant.
    token_expires_at: Instant,
    /// The release instant the store's fence gave with the facts (several processes on one
    /// database); `None`: this process's gate gives it.
    released_at: Option<Instant>,
}

/// How many members (or posts) a single request may scan to fill one page of visible ones.
const SCAN_FACTOR: usize = 8;

/// How many rows a page of `limit` reads at once: the most the scan below consumes (it
/// scans in batches until `limit` are shown or `limit * SCAN_FACTOR` were scanned, never
/// past that), so that the whole scan is one read of the store, hence one snapshot.
fn rows_to_read(limit: usize) -> usize {
    limit.saturating_mul(SCAN_FACTOR)
}

/// How many rows the next batch takes: enough to fill the page, within the scan's budget.
fn batch_size(limit: usize, filled: usize, scanned: usize) -> usize {
    (limit - filled.min(limit)).min(rows_to_read(limit).saturating_sub(scanned))
}

/// The next batch of a scan over rows read at once: `want` rows from `next` on.
fn batch<'a, T>(rows: &'a [T], next: &mut usize, want: usize) -> &'a [T] {
    let start = (*next).min(rows.len());
    let end = start.saturating_add(want).min(rows.len());
    *next = end;
    rows.get(start..end).unwrap_or(&[])
}

impl Service {
    /// Reads what every decision of a request about `group` needs, as one snapshot of the
    /// store (`Store::read_page`), in the gate's read section: the token is re-checked (it may
    /// have been revoked since the request was authenticated), the app must still be active,
    /// the installation must still exist. A group the app is not installed in answers exactly
    /// like a group that does not exist.
    fn read_page(
        &self,
        session: &AppSession,
        group: &GroupId,
        list: PageList,
    ) -> ServiceResult<(PageContext, PageSnapshot)> {
        // A refused token is forgotten, so its next use is refused before any snapshot.
        let refused = |why: &str| {
            self.token_owners.forget(&session.token_hash);
            ServiceError::Unauthenticated(why.to_string())
        };
        let not_found = || ServiceError::NotFound(format!("group {:?}", group.as_str()));
        let mut snapshot = self.store.read_page(&PageQuery {
            token_hash: session.token_hash.clone(),
            app: session.app.clone(),
            group: group.clone(),
            list,
        })?;
        let token = snapshot.token.take().ok_or_else(|| refused("the access token is unknown"))?;
        if token.revoked_at.is_some() {
            return Err(refused("the access token was revoked"));
        }
        if token.app != session.app {
            return Err(refused("the access token is unknown"));
        }
        let app = snapshot.app.take().ok_or_else(|| refused("the app no longer exists"))?;
        if app.status != consentry_types::AppStatus::Active {
            return Err(refused(&format!("the app is {}", app.status.as_str())));
        }
        let Some(installation) = snapshot.installation.take() else { return Err(not_found()) };
        if snapshot.group.is_none() {
            return Err(not_found());
        }
        let developer = app.developer.clone();
        let facts = PageFacts {
            app: app.id,
            app_status: app.status,
            app_category: app.category,
            group: group.clone(),
            installed: true,
            installed_since: installation.installed_at.secs(),
        };
        let policy = match snapshot.active_policy {
            Some(version) => Some(self.compiled_policy(version)?),
            None => None,
        };
        let context = PageContext {
            developer,
            policy,
            facts,
            token_expires_at: token.expires_at,
            released_at: snapshot.released_at,
        };
        Ok((context, snapshot))
    }

    fn page_limit(&self, page: &PageRequest) -> ServiceResult<usize> {
        match page.limit {
            None => Ok(self.config.default_page_size),
            Some(0) => Err(ServiceError::InvalidInput("limit must be at least 1".into())),
            Some(n) if n > self.config.max_page_size => Err(ServiceError::InvalidInput(format!(
                "limit must be at most {}",
                self.config.max_page_size
            ))),
            Some(n) => Ok(n),
        }
    }

    fn open_cursor(&self, scope: &str, after: Option<&str>) -> ServiceResult<Option<String>> {
        match after {
            None => Ok(None),
            Some(cursor) => {
                let opened = self.server_key().open_cursor(scope, cursor).or_else(|| {
                    // Sealed by a node that rotated the cursor key since this one loaded it?
                    self.reload_server_key_soon();
                    self.server_key().open_cursor(scope, cursor)
                });
                opened
                    .map(Some)
                    .ok_or_else(|| ServiceError::InvalidInput("the cursor is not valid for this list".into()))
            }
        }
    }

    /// Decides `fields` for each subject and returns the permitted subset per subject, in order.
    fn decide(
        &self,
        context: &PageContext,
        requests: &[(FieldSet, SubjectFacts)],
    ) -> ServiceResult<Vec<FieldSet>> {
        if self.enforcement_bypassed() {
            return Ok(requests.iter().map(|(fields, _)| *fields).collect());
        }
        let Some(policy) = &context.policy else {
            // Deny by default: with no active policy nothing is disclosed.
            return Ok(vec![FieldSet::EMPTY; requests.len()]);
        };
        let mut decider = self.engine.page(policy, context.facts.clone());
        requests
            .iter()
            .map(|(fields, subject)| {
                let mut allowed = FieldSet::EMPTY;
                for field in fields.iter() {
                    if decider.allows(field, *subject).map_err(ServiceError::Policy)? {
                        allowed.insert(field);
                    }
                }
                Ok(allowed)
            })
            .collect()
    }

    /// The facts of members as subjects of this app's request about this group: (member,
    /// role in the group, profile consent to the app), as the snapshot read them.
    fn subject_facts(&self, members: &[(MemberId, Option<Role>, bool)]) -> Vec<SubjectFacts> {
        if self.enforcement_bypassed() {
            return vec![SubjectFacts::NONE; members.len()];
        }
        members
            .iter()
            .map(|(_, role, consented)| SubjectFacts {
                is_member: role.is_some(),
                role: *role,
                consented_profile: *consented,
            })
            .collect()
    }

    /// The kinds of member (role, consent) a members page asking for `fields` shows, decided
    /// with this request's facts (the engine's memo answers these after the first page).
    fn kinds_shown(&self, context: &PageContext, fields: FieldSet) -> ServiceResult<ProfileKinds> {
        let kinds: Vec<(Role, bool)> =
            Role::ALL.into_iter().flat_map(|role| [(role, true), (role, false)]).collect();
        let requests: Vec<(FieldSet, SubjectFacts)> = kinds
            .iter()
            .map(|(role, consented)| {
                (fields, SubjectFacts { is_member: true, role: Some(*role), consented_profile: *consented })
            })
            .collect();
        let mut shown = ProfileKinds::default();
        for ((role, consented), allowed) in kinds.into_iter().zip(self.decide(context, &requests)?) {
            if !allowed.is_empty() {
                shown.insert(role, consented);
            }
        }
        Ok(shown)
    }

    /// Takes the release instant, still in the read section, and refuses a token that expired
    /// by then.
    fn served<T>(
        &self,
        serving: &Serving<'_>,
        context: &PageContext,
        body: T,
        disclosures: Vec<Disclosure>,
    ) -> ServiceResult<Served<T>> {
        let released_at = match context.released_at {
            Some(at) => at,
            None => serving.release_instant(self.clock.as_ref()),
        };
        if context.token_expires_at <= released_at {
            return Err(ServiceError::Unauthenticated("the access token expired".into()));
        }
        Ok(Served {
            body,
            disclosures,
            policy_version: context.policy.as_ref().map_or(0, |p| p.version()),
            released_at,
            group: context.facts.group.clone(),
            developer: context.developer.clone(),
        })
    }

    fn seal(&self, scope: &str, payload: &str) -> ServiceResult<String> {
        self.server_key()
            .seal_cursor(scope, payload)
            .ok_or_else(|| ServiceError::Internal("cannot seal a cursor".into()))
    }

    /// `GET /v1/groups/{id}`.
    pub fn read_group(
        &self,
        session: &AppSession,
        group: &GroupId,
        fields: FieldSet,
    ) -> ServiceResult<Served<GroupView>> {
        let serving = self.serve();
        let list = PageList::Group { member_count: fields.contains(Field::GroupMemberCount) };
        let (context, snapshot) = self.read_page(session, group, list)?;
        let allowed =
            self.decide(&context, &[(fields, SubjectFacts::NONE)])?.first().copied().unwrap_or_default();
        let name = if allowed.contains(Field::GroupName) { snapshot.group.map(|g| g.name) } else { None };
        let member_count =
            if allowed.contains(Field::GroupMemberCount) { snapshot.member_count } else { None };
        let disclosures = if allowed.is_empty() {
            Vec::new()
        } else {
            vec![Disclosure { subject: Subject::Group(group.clone()), fields: allowed }]
        };
        self.served(&serving, &context, GroupView { id: group.clone(), name, member_count }, disclosures)
    }

    /// `GET /v1/groups/{id}/posts`. Post content and time are the group's data; the author
    /// field is the author's, decided with the author's facts. Post ids are scoped to the app;
    /// a post none of whose requested fields is permitted is left out and leaves no trace.
    pub fn read_posts(
        &self,
        session: &AppSession,
        group: &GroupId,
        fields: FieldSet,
        page: &PageRequest,
    ) -> ServiceResult<Served<Page<PostView>>> {
        let limit = self.page_limit(page)?;
        let scope = format!("{}/{}/posts", session.app, group);
        let mut after = self
            .open_cursor(&scope, page.after.as_deref())?
            .map(|a| PostId::parse(&a))
            .transpose()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let list = PageList::Posts { after: after.clone(), limit: rows_to_read(limit) };
        let serving = self.serve();
        let (context, snapshot) = self.read_page(session, group, list)?;
        let mut next_row = 0;
        let group_fields: FieldSet = fields.iter().filter(|f| !f.has_member_subject()).collect();
        let author_fields: FieldSet = fields.iter().filter(|f| f.has_member_subject()).collect();
        let group_allowed = self
            .decide(&context, &[(group_fields, SubjectFacts::NONE)])?
            .first()
            .copied()
            .unwrap_or_default();
        // What every post shows of the group's data, and records against the post's author.
        let shown: FieldSet = [Field::PostContent, Field::PostCreatedTime]
            .into_iter()
            .filter(|f| group_allowed.contains(*f))
            .collect();
        let mut disclosures = Vec::new();
        let mut items = Vec::with_capacity(limit);
        let mut scanned = 0;
        let mut exhausted = false;
        while items.len() < limit && scanned < rows_to_read(limit) {
            let want = batch_size(limit, items.len(), scanned);
            let posts = batch(&snapshot.posts, &mut next_row, want);
            scanned += posts.len();
            if posts.len() < want {
                exhausted = true;
            }
            let mut authors: Vec<(MemberId, Option<Role>, bool)> = Vec::new();
            if !author_fields.is_empty() {
                for listed in posts {
                    if !authors.iter().any(|(m, _, _)| m == &listed.post.author) {
                        authors.push((
                            listed.post.author.clone(),
                            listed.author_role,
                            listed.author_consented_profile,
                        ));
                    }
                }
            }
            let author_facts = self.subject_facts(&authors);
            let requests: Vec<(FieldSet, SubjectFacts)> =
                author_facts.iter().map(|f| (author_fields, *f)).collect();
            let author_allowed = self.decide(&context, &requests)?;
            for listed in posts {
                let post = &listed.post;
                let author_ok = authors
                    .iter()
                    .position(|(m, _, _)| m == &post.author)
                    .and_then(|i| author_allowed.get(i))
                    .is_some_and(|a| a.contains(Field::PostAuthor));
                if shown.is_empty() && !author_ok {
                    // Nothing of this post may be shown: no id, no trace.
                    continue;
                }
                let author = if author_ok {
                    let name = listed.author.name.clone();
                    Some(AuthorView {
                        id: self.server_key().scoped_member_id(&session.app, &post.author),
                        name,
                    })
                } else {
                    None
                };
                // Post content is the author's words: record it against the author.
                let mut fields_of_author = shown;
                if author.is_some() {
                    fields_of_author.insert(Field::PostAuthor);
                }
                merge(&mut disclosures, Subject::Member(post.author.clone()), fields_of_author);
                items.push(PostView {
                    id: self.server_key().scoped_post_id(&session.app, &post.id),
                    content: shown.contains(Field::PostContent).then(|| post.content.clone()),
                    created_time: shown.contains(Field::PostCreatedTime).then_some(post.created_at),
                    author,
                });
            }
            after = posts.last().map(|p| p.post.id.clone()).or(after);
            if exhausted {
                break;
            }
        }
        let next = match after {
            Some(last) if !exhausted => Some(self.seal(&scope, last.as_str())?),
            _ => None,
        };
        self.served(&serving, &context, Page { items, next }, disclosures)
    }

    /// `GET /v1/groups/{id}/members`: lists only members the policy lets this app see; the
    /// others leave no trace but the group's member count.
    pub fn read_members(
        &self,
        session: &AppSession,
        group: &GroupId,
        fields: FieldSet,
        page: &PageRequest,
    ) -> ServiceResult<Served<Page<MemberView>>> {
        let limit = self.page_limit(page)?;
        let scope = format!("{}/{}/members", session.app, group);
        let mut after = self
            .open_cursor(&scope, page.after.as_deref())?
            .map(|a| MemberId::parse(&a))
            .transpose()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        // The snapshot brings the profiles of the kinds of member such a page showed last: a
        // guess, which decides nothing shown (see `shown_kinds`).
        let mut profiles_of = self.shown_kinds.expected(&session.app, group, fields);
        profiles_of.at_most = limit;
        let list = PageList::Members { after: after.clone(), limit: rows_to_read(limit), profiles_of };
        let serving = self.serve();
        let (context, snapshot) = self.read_page(session, group, list)?;
        let mut next_row = 0;
        let mut items = Vec::with_capacity(limit);
        let mut disclosures = Vec::with_capacity(limit);
        let mut scanned = 0;
        let mut exhausted = false;
        // Decide on the snapshot's ids, roles and consents; the profiles of the members shown
        // are those the snapshot brought, and any it did not are read by id in one call: a
        // hidden member's name and picture are read only when the guess was wrong, and every
        // member shown is a row of the snapshot.
        let mut shown: Vec<(&ListedMember, FieldSet)> = Vec::with_capacity(limit);
        while shown.len() < limit && scanned < rows_to_read(limit) {
            let want = batch_size(limit, shown.len(), scanned);
            let batch = batch(&snapshot.members, &mut next_row, want);
            scanned += batch.len();
            if batch.len() < want {
                exhausted = true;
            }
            let subjects: Vec<(MemberId, Option<Role>, bool)> =
                batch.iter().map(|m| (m.id.clone(), Some(m.role), m.consented_profile)).collect();
            let facts = self.subject_facts(&subjects);
            let requests: Vec<(FieldSet, SubjectFacts)> = facts.iter().map(|f| (fields, *f)).collect();
            let allowed = self.decide(&context, &requests)?;
            shown.extend(batch.iter().zip(allowed).filter(|(_, allowed)| !allowed.is_empty()));
            after = batch.last().map(|m| m.id.clone()).or(after);
            if exhausted {
                break;
            }
        }
        let unread: Vec<MemberId> =
            shown.iter().filter(|(m, _)| m.profile.is_none()).map(|(m, _)| m.id.clone()).collect();
        let read_now =
            if unread.is_empty() { Default::default() } else { self.store.members_by_id(&unread)? };
        for (listed, allowed) in shown {
            // A membership without a member (never made by the service) is no one to show.
            let Some(member) = listed.profile.as_ref().or_else(|| read_now.get(&listed.id)) else { continue };
            items.push(MemberView {
                id: self.server_key().scoped_member_id(&session.app, &listed.id),
                name: allowed.contains(Field::MemberName).then(|| member.name.clone()),
                picture: allowed.contains(Field::MemberPicture).then(|| member.picture_url.clone()),
            });
            disclosures.push(Disclosure { subject: Subject::Member(listed.id.clone()), fields: allowed });
        }
        // Best effort: a guess that cannot be made costs the next page a read, never this one.
        if let Ok(kinds) = self.kinds_shown(&context, fields) {
            self.shown_kinds.remember(&session.app, group, fields, kinds);
        }
        let next = match after {
            Some(last) if !exhausted => Some(self.seal(&scope, last.as_str())?),
            _ => None,
        };
        self.served(&serving, &context, Page { items, next }, disclosures)
    }
}

fn merge(disclosures: &mut Vec<Disclosure>, subject: Subject, fields: FieldSet) {
    match disclosures.iter_mut().find(|d| d.subject == subject) {
        Some(existing) => existing.fields = existing.fields.iter().chain(fields.iter()).collect(),
        None => disclosures.push(Disclosure { subject, fields }),
    }
}
