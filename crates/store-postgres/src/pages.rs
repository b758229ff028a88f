//! Pages: everything one request decides on (its token, app, installation, group, the active
//! policy and a page of members or posts with each subject's role and consent), read in ONE
//! round trip by `consentry_read_page` (migrations/V4__page_in_one_row.sql) under the shared
//! side of the release fence, with the release instant from the database's clock, as one row
//! whose lists are arrays. A listed member's profile comes only if the query names its kind.

use std::collections::HashMap;

use consentry_store::{
    ListedMember, ListedPost, PageList, PageQuery, PageSnapshot, ProfileKinds, TokenRecord,
};
use consentry_types::{App, Group, Installation, Instant, Member, MemberId, Post, PostId, Role};
use postgres::Row;

use crate::facts::limit_of;
use crate::fence::page_keys;
use crate::sql::{corrupt, instant, optional_instant, parsed, role_of, status_of, Db, DbResult};

/// Reads the page, or `None` if a change in one of its scopes holds the fence right now (the
/// caller lets go of its connection, waits a little and asks again).
pub(crate) fn read_page(db: &mut dyn Db, query: &PageQuery) -> DbResult<Option<PageSnapshot>> {
    let no_kinds = ProfileKinds::default();
    let (list, after, limit, count, kinds) = match &query.list {
        PageList::Group { member_count } => ("group", String::new(), 0, *member_count, &no_kinds),
        PageList::Members { after, limit, profiles_of } => (
            "members",
            after.as_ref().map_or("", MemberId::as_str).to_string(),
            limit_of(*limit),
            false,
            profiles_of,
        ),
        PageList::Posts { after, limit } => (
            "posts",
            after.as_ref().map_or("", PostId::as_str).to_string(),
            limit_of(*limit),
            false,
            &no_kinds,
        ),
    };
    let roles = |roles: &[Role]| roles.iter().map(|r| r.as_str()).collect::<Vec<&str>>();
    let (consenting, not_consenting) = (roles(&kinds.consenting), roles(&kinds.not_consenting));
    let at_most = limit_of(kinds.at_most);
    let keys = page_keys(query);
    let rows = db.query(
        "SELECT * FROM consentry_read_page($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &query.token_hash,
            &query.app.as_str(),
            &query.group.as_str(),
            &list,
            &after,
            &limit,
            &count,
            &keys.as_slice(),
            &consenting,
            &not_consenting,
            &at_most,
        ],
    )?;
    let Some(row) = rows.first() else { return Err(corrupt("page", "without its row")) };
    if row.try_get::<_, bool>(0)? {
        return Ok(None);
    }
    let mut snapshot = PageSnapshot::default();
    context(row, query, &mut snapshot)?;
    let ids: Vec<&str> = array(row, 16)?;
    let roles: Vec<&str> = array(row, 17)?;
    let consents: Vec<bool> = array(row, 18)?;
    same_length("members", ids.len(), &[roles.len(), consents.len()])?;
    let profile_ids: Vec<&str> = array(row, 19)?;
    let names: Vec<Option<&str>> = array(row, 20)?;
    let pictures: Vec<Option<&str>> = array(row, 21)?;
    same_length("profiles", profile_ids.len(), &[names.len(), pictures.len()])?;
    let mut profiles: HashMap<&str, (&str, &str)> = HashMap::with_capacity(profile_ids.len());
    for ((id, name), picture) in profile_ids.into_iter().zip(names).zip(pictures) {
        // A membership without a member has no profile to bring.
        if let (Some(name), Some(picture)) = (name, picture) {
            profiles.insert(id, (name, picture));
        }
    }
    snapshot.members.reserve(ids.len());
    for ((id, role), consented_profile) in ids.into_iter().zip(roles).zip(consents) {
        let member_id = MemberId::parse(id).map_err(|_| corrupt("member id", id))?;
        snapshot.members.push(ListedMember {
            profile: profiles.get(id).map(|(name, picture)| Member {
                id: member_id.clone(),
                name: (*name).to_string(),
                picture_url: (*picture).to_string(),
            }),
            id: member_id,
            role: role_of(role).map_err(|()| corrupt("role", role))?,
            consented_profile,
        });
    }
    let ids: Vec<String> = array(row, 22)?;
    let contents: Vec<String> = array(row, 23)?;
    let created: Vec<i64> = array(row, 24)?;
    let authors: Vec<String> = array(row, 25)?;
    let names: Vec<String> = array(row, 26)?;
    let pictures: Vec<String> = array(row, 27)?;
    let roles: Vec<Option<String>> = array(row, 28)?;
    let consents: Vec<bool> = array(row, 29)?;
    let lengths = [
        contents.len(),
        created.len(),
        authors.len(),
        names.len(),
        pictures.len(),
        roles.len(),
        consents.len(),
    ];
    same_length("posts", ids.len(), &lengths)?;
    for (i, id) in ids.iter().enumerate() {
        let at = |what: &str| corrupt(what, &format!("post {id} without it"));
        let author = authors.get(i).ok_or_else(|| at("author"))?;
        let author = MemberId::parse(author).map_err(|_| corrupt("member id", author))?;
        snapshot.posts.push(ListedPost {
            post: Post {
                id: PostId::parse(id).map_err(|_| corrupt("post id", id))?,
                group: query.group.clone(),
                author: author.clone(),
                content: contents.get(i).ok_or_else(|| at("content"))?.clone(),
                created_at: Instant::from_millis(*created.get(i).ok_or_else(|| at("time"))?),
            },
            author: Member {
                id: author,
                name: names.get(i).ok_or_else(|| at("author name"))?.clone(),
                picture_url: pictures.get(i).ok_or_else(|| at("author picture"))?.clone(),
            },
            author_role: match roles.get(i).ok_or_else(|| at("author role"))? {
                Some(text) => Some(role_of(text).map_err(|()| corrupt("role", text))?),
                None => None::<Role>,
            },
            author_consented_profile: *consents.get(i).ok_or_else(|| at("author consent"))?,
        });
    }
    // Each list was read in order of its ids; the arrays keep the order they were built in,
    // which SQL does not promise, so it is put back here (byte order, as the columns' "C"
    // collation compares them).
    snapshot.members.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    snapshot.posts.sort_by(|a, b| a.post.id.as_str().cmp(b.post.id.as_str()));
    Ok(Some(snapshot))
}

/// An array column, its text borrowed from the row: empty when the list read no rows
/// (`array_agg` of nothing is NULL).
fn array<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> DbResult<Vec<T>> {
    Ok(row.try_get::<_, Option<Vec<T>>>(index)?.unwrap_or_default())
}

/// The arrays of one list were aggregated together, so they have one length.
fn same_length(list: &str, ids: usize, others: &[usize]) -> DbResult<()> {
    match others.iter().find(|n| **n != ids) {
        Some(n) => Err(corrupt(&format!("{list} snapshot"), &format!("{ids} ids but {n} values"))),
        None => Ok(()),
    }
}

fn context(row: &Row, query: &PageQuery, snapshot: &mut PageSnapshot) -> DbResult<()> {
    if row.try_get::<_, Option<String>>(1)?.is_some() {
        snapshot.token = Some(TokenRecord {
            hash: query.token_hash.clone(),
            app: parsed(row, 1, consentry_types::AppId::parse, "app id")?,
            issued_at: instant(row, 2)?,
            expires_at: instant(row, 3)?,
            revoked_at: optional_instant(row, 4)?,
        });
    }
    if row.try_get::<_, Option<String>>(8)?.is_some() {
        snapshot.app = Some(App {
            id: query.app.clone(),
            developer: parsed(row, 5, consentry_types::DeveloperId::parse, "developer id")?,
            name: row.try_get(6)?,
            category: row.try_get(7)?,
            status: parsed(row, 8, status_of, "app status")?,
            client_id: row.try_get(9)?,
        });
    }
    if row.try_get::<_, Option<String>>(10)?.is_some() {
        snapshot.installation = Some(Installation {
            app: query.app.clone(),
            group: query.group.clone(),
            authorized_by: parsed(row, 10, MemberId::parse, "member id")?,
            installed_at: instant(row, 11)?,
        });
    }
    if let Some(name) = row.try_get::<_, Option<String>>(12)? {
        snapshot.group = Some(Group { id: query.group.clone(), name });
    }
    snapshot.active_policy = match row.try_get::<_, Option<i64>>(13)? {
        Some(version) => {
            Some(u32::try_from(version).map_err(|_| corrupt("policy version", &version.to_string()))?)
        }
        None => None,
    };
    snapshot.member_count = row.try_get::<_, Option<i64>>(14)?.map(i64::unsigned_abs);
    snapshot.released_at = Some(Instant::from_millis(row.try_get(15)?));
    Ok(())
}
