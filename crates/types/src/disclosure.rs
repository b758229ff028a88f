//! Disclosures: which fields of whom went to which app, as identities only (invariant 4).

use crate::{AppId, DeveloperId, FieldSet, GroupId, Instant, MemberId};

/// Whose datum a disclosure is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Group(GroupId),
    Member(MemberId),
}

/// The fields of one subject sent in one response. Never the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    pub subject: Subject,
    pub fields: FieldSet,
}

/// Everything one app response disclosed, as it must be recorded before the response leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureRecord {
    pub at: Instant,
    pub request_id: String,
    pub app: AppId,
    pub developer: DeveloperId,
    /// The group of the installation the app used.
    pub group: GroupId,
    /// Hash of the access token used (never the token).
    pub token_hash: String,
    pub policy_version: u32,
    /// e.g. `GET /v1/groups/{id}/members`.
    pub route: String,
    pub disclosures: Vec<Disclosure>,
}
