//! What one Groups API request decides on, read as one consistent snapshot of the store.
//!
//! A request re-checks its token, its app's status and its installation, reads the group, the
//! active policy and a page of members or posts with the facts each subject is decided on
//! (role, profile consent). Read in separate transactions, a change could fall between two of
//! those reads, and the request would decide on facts that were never in force together.
//! [`crate::Store::read_page`] reads all of it at once: one read transaction on SQLite, one
//! statement under the release fence on PostgreSQL. A members page reads a listed member's
//! profile (name, picture) only if the request names the member's kind (role, consent) among
//! those it expects to show ([`ProfileKinds`]); the service reads by id, afterwards, the
//! profiles of members it shows that the snapshot did not bring ([`crate::Store::members_by_id`]).

use consentry_types::{
    App, AppId, Group, GroupId, Installation, Instant, Member, MemberId, Post, PostId, Role,
};

use std::collections::HashMap;

use crate::{Store, StoreResult, TokenRecord};

/// Which list a page reads, after the request's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageList {
    /// The group itself; its member count only when asked (counting costs a scan).
    Group { member_count: bool },
    /// Members of the group ordered by member id, after `after`, at most `limit`, with the
    /// profiles of those of the kinds in `profiles_of`.
    Members { after: Option<MemberId>, limit: usize, profiles_of: ProfileKinds },
    /// Posts of the group ordered by post id, after `after`, at most `limit`.
    Posts { after: Option<PostId>, limit: usize },
}

/// The kinds of member, as subjects of the request's app (their role in the group, and whether
/// they consent to the app seeing their profile), whose profiles a members page reads with its
/// snapshot, and how many at most: the kinds the request expects to show, and its page size.
/// Decisions depend on nothing else about a member, and a page shows the first members it
/// scans whose decisions are not empty, so with the right kinds a page reads the profiles of
/// exactly the members it shows, in the same round trip. A wrong guess costs a profile read
/// that is not shown, or one more read by id afterwards; it never changes what is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProfileKinds {
    /// Roles whose members' profiles are read when they consent.
    pub consenting: Vec<Role>,
    /// Roles whose members' profiles are read when they do not.
    pub not_consenting: Vec<Role>,
    /// Profiles read at most: those of the first listed members (by id) of these kinds.
    pub at_most: usize,
}

impl ProfileKinds {
    /// Whether a member of `role` who consents (or not) is of these kinds.
    pub fn includes(&self, role: Role, consented: bool) -> bool {
        if consented { &self.consenting } else { &self.not_consenting }.contains(&role)
    }

    /// Adds a kind.
    pub fn insert(&mut self, role: Role, consented: bool) {
        let roles = if consented { &mut self.consenting } else { &mut self.not_consenting };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
}

/// A request's page: who asks (by token hash and app), about which group, and which list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub token_hash: String,
    pub app: AppId,
    pub group: GroupId,
    pub list: PageList,
}

/// A member on a page, with the facts it is decided on as a subject of the request's app, and
/// its profile (name, picture) only if it is among the first of the kinds the request named
/// ([`PageList::Members`]): so, with a right guess, only the profiles shown are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: MemberId,
    pub role: Role,
    /// The member consents now to the app seeing their profile.
    pub consented_profile: bool,
    /// The profile, read with the snapshot: only for the first members of the kinds named
    /// (`ProfileKinds`), never for others.
    pub profile: Option<Member>,
}

/// A post on a page, with its author and the facts the author is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPost {
    pub post: Post,
    pub author: Member,
    /// The author's role in the group now (`None`: no longer a member).
    pub author_role: Option<Role>,
    pub author_consented_profile: bool,
}

/// Everything a page's decisions are made from, as it was at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSnapshot {
    pub token: Option<TokenRecord>,
    pub app: Option<App>,
    pub installation: Option<Installation>,
    pub group: Option<Group>,
    /// The active policy's version.
    pub active_policy: Option<u32>,
    /// Only for `PageList::Group { member_count: true }`.
    pub member_count: Option<u64>,
    pub members: Vec<ListedMember>,
    pub posts: Vec<ListedPost>,
    /// Where changes may come from other processes (PostgreSQL, several nodes): the instant at
    /// which exactly these facts were in force, taken from the database's clock under the
    /// release fence (see [`crate::ReleaseFence`]); the response is released at it. `None`
    /// where one process makes every change (SQLite): its in-process gate gives the instant.
    pub released_at: Option<Instant>,
}

/// Reads a page with one call of the store per fact. Each call is its own transaction, so
/// this is a consistent snapshot only if nothing changes meanwhile: it is what
/// [`Store::read_page`] does for stores that do not read it in one transaction (test doubles
/// that wrap a real store), and the reference the backends' own reads are tested against.
pub fn read_page_call_by_call(store: &(impl Store + ?Sized), query: &PageQuery) -> StoreResult<PageSnapshot> {
    let mut snapshot = PageSnapshot {
        token: store.token(&query.token_hash)?,
        app: store.app(&query.app)?,
        installation: store.installation(&query.app, &query.group)?,
        group: store.group(&query.group)?,
        active_policy: store.active_policy()?.map(|p| p.version),
        ..PageSnapshot::default()
    };
    match &query.list {
        PageList::Group { member_count } => {
            if *member_count {
                snapshot.member_count = Some(store.member_count(&query.group)?);
            }
        }
        PageList::Members { after, limit, profiles_of } => {
            let page = store.member_roles_page(&query.group, after.as_ref(), *limit)?;
            let ids: Vec<MemberId> = page.iter().map(|(id, _)| id.clone()).collect();
            let consents = store.profile_consents(&query.app, &ids)?;
            let wanted: Vec<MemberId> = page
                .iter()
                .filter(|(id, role)| profiles_of.includes(*role, consents.contains(id)))
                .take(profiles_of.at_most)
                .map(|(id, _)| id.clone())
                .collect();
            let mut profiles =
                if wanted.is_empty() { HashMap::new() } else { store.members_by_id(&wanted)? };
            snapshot.members = page
                .into_iter()
                .map(|(id, role)| ListedMember {
                    consented_profile: consents.contains(&id),
                    profile: profiles.remove(&id),
                    id,
                    role,
                })
                .collect();
        }
        PageList::Posts { after, limit } => {
            let posts = store.posts_page(&query.group, after.as_ref(), *limit)?;
            let mut authors: Vec<MemberId> = posts.iter().map(|p| p.author.clone()).collect();
            authors.sort();
            authors.dedup();
            let consents = store.profile_consents(&query.app, &authors)?;
            for post in posts {
                let Some(author) = store.member(&post.author)? else {
                    return Err(crate::StoreError::NotFound(format!("author of post {}", post.id.as_str())));
                };
                snapshot.posts.push(ListedPost {
                    author_role: store.membership(&query.group, &post.author)?,
                    author_consented_profile: consents.contains(&post.author),
                    author,
                    post,
                });
            }
        }
    }
    Ok(snapshot)
}
