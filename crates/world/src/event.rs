//! The events a world's history is made of: plain data in the domain's words, one for each
//! call of the platform API that makes it happen.

use consentry_types::{AppId, DeveloperId, FieldSet, GroupId, Instant, MemberId, PostId, Role};

use crate::params::ShippedPolicy;

/// What the platform does to an app's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusChange {
    /// Active to suspended.
    Suspend,
    /// Suspended to active (only a suspended app is ever reinstated).
    Reinstate,
    /// Banned for good (its tokens are revoked; a banned app stays banned).
    Ban,
}

/// What an app asks for in one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `GET /v1/groups/{id}?fields=…`.
    Group { fields: FieldSet },
    /// `GET /v1/groups/{id}/members?fields=…&limit=…`, following the cursor to the last page.
    Members { fields: FieldSet, limit: usize },
}

/// One change of the world (or one read by an app), as the platform API receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Member {
        member: MemberId,
        name: String,
    },
    Group {
        group: GroupId,
        name: String,
    },
    Developer {
        developer: DeveloperId,
        name: String,
        contact_email: String,
    },
    /// An app is registered (and gets its client credentials).
    App {
        app: AppId,
        developer: DeveloperId,
        name: String,
        category: &'static str,
    },
    /// A member of the group writes a post.
    Post {
        group: GroupId,
        post: PostId,
        author: MemberId,
        content: String,
    },
    Join {
        group: GroupId,
        member: MemberId,
        role: Role,
    },
    Leave {
        group: GroupId,
        member: MemberId,
    },
    /// A member's role in a group changes (promoted to admin, or demoted).
    ChangeRole {
        group: GroupId,
        member: MemberId,
        role: Role,
    },
    /// An admin of the group (at that instant) authorizes the app for it.
    Install {
        app: AppId,
        group: GroupId,
        by: MemberId,
    },
    Uninstall {
        app: AppId,
        group: GroupId,
    },
    OptIn {
        member: MemberId,
        app: AppId,
    },
    Withdraw {
        member: MemberId,
        app: AppId,
    },
    Status {
        app: AppId,
        change: StatusChange,
    },
    /// A shipped policy is submitted, approved by a privacy officer independent of its author,
    /// and activated.
    Policy {
        policy: ShippedPolicy,
    },
    /// An app reads a group it is installed in, served from the facts as they are then.
    Read {
        app: AppId,
        group: GroupId,
        read: Read,
    },
}

impl Event {
    /// Whether this is an app's read rather than a change of the world.
    pub fn is_read(&self) -> bool {
        matches!(self, Event::Read { .. })
    }

    /// A short name of the kind of event, for counts and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Member { .. } => "member",
            Event::Group { .. } => "group",
            Event::Developer { .. } => "developer",
            Event::App { .. } => "app",
            Event::Post { .. } => "post",
            Event::Join { .. } => "join",
            Event::Leave { .. } => "leave",
            Event::ChangeRole { .. } => "change-role",
            Event::Install { .. } => "install",
            Event::Uninstall { .. } => "uninstall",
            Event::OptIn { .. } => "opt-in",
            Event::Withdraw { .. } => "withdraw",
            Event::Status { change: StatusChange::Suspend, .. } => "suspend",
            Event::Status { change: StatusChange::Reinstate, .. } => "reinstate",
            Event::Status { change: StatusChange::Ban, .. } => "ban",
            Event::Policy { .. } => "policy",
            Event::Read { .. } => "read",
        }
    }
}

/// An event and the instant it happens at. A world's events have strictly increasing instants.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub at: Instant,
    pub event: Event,
}
