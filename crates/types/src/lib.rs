//! The domain's nouns shared by every crate: ids, instants, fields, roles and facts.
//!
//! Nothing here does I/O or knows about HTTP, SQL or Cedar.

mod disclosure;
mod field;
mod ids;
mod instant;
mod node;

pub use disclosure::{Disclosure, DisclosureRecord, Subject};
pub use field::{Field, FieldSet, ResourceKind, UnknownField};
pub use ids::{AppId, DeveloperId, GroupId, InvalidId, MemberId, PostId};
pub use instant::{Instant, InvalidInstant};
pub use node::{InvalidNodeId, NodeId, MAX_NODE_ID};

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 2] = [Role::Member, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Whether an app may call the API at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppStatus {
    Active,
    Suspended,
    Banned,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Active => "active",
            AppStatus::Suspended => "suspended",
            AppStatus::Banned => "banned",
        }
    }
    pub fn parse(text: &str) -> Option<AppStatus> {
        match text {
            "active" => Some(AppStatus::Active),
            "suspended" => Some(AppStatus::Suspended),
            "banned" => Some(AppStatus::Banned),
            _ => None,
        }
    }
}

/// What a member consents to share with one app. Only `profile` (name, picture) exists today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Profile,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Profile => "profile",
        }
    }
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "profile" => Some(Scope::Profile),
            _ => None,
        }
    }
}

/// Operator roles for the platform API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorRole {
    /// Runs the platform: ingest, apps, installations, policy drafts.
    Operator,
    /// Approves and activates policies, runs audits.
    PrivacyOfficer,
    /// Reads everything, changes nothing.
    Auditor,
}

impl OperatorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Operator => "operator",
            OperatorRole::PrivacyOfficer => "privacy_officer",
            OperatorRole::Auditor => "auditor",
        }
    }
    pub fn parse(text: &str) -> Option<OperatorRole> {
        match text {
            "operator" => Some(OperatorRole::Operator),
            "privacy_officer" => Some(OperatorRole::PrivacyOfficer),
            "auditor" => Some(OperatorRole::Auditor),
            _ => None,
        }
    }
}

/// A person on the platform; the subject whose data may be disclosed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub name: String,
    pub picture_url: String,
}

/// A group: it has a name, members, admins and posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
}

/// A post in a group, written by a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub id: PostId,
    pub group: GroupId,
    pub author: MemberId,
    pub content: String,
    pub created_at: Instant,
}

/// A company that owns apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Developer {
    pub id: DeveloperId,
    pub name: String,
    pub contact_email: String,
    pub webhook_url: String,
}

/// A third-party client of the Groups API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: AppId,
    pub developer: DeveloperId,
    pub name: String,
    pub category: String,
    pub status: AppStatus,
    pub client_id: String,
}

/// A group admin authorized an app for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub app: AppId,
    pub group: GroupId,
    pub authorized_by: MemberId,
    /// When this installation (the current, uninterrupted one) began.
    pub installed_at: Instant,
}

/// One version of the policy text, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: u32,
    pub text: String,
    pub author: String,
    pub created_at: Instant,
}

/// A policy version became the active one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyActivation {
    pub version: u32,
    pub author: String,
    pub reason: String,
    pub at: Instant,
}
