//! The release fence: orders changes of access facts against the reading of pages when the
//! changes and the requests may come from different processes on one database.
//!
//! A request reads its facts and takes its release instant (the instant its disclosure record
//! carries) inside [`crate::Store::read_page`]; a change of an access fact (a token, an app's
//! status, an installation, a consent, a membership, a policy activation) holds a
//! [`FencedChange`] from before it takes its instant until its write is committed. The two
//! exclude each other for overlapping scopes, so every change falls wholly before a request's
//! read (which then sees it, and is released no earlier than the change's instant) or wholly
//! after it (and takes an instant strictly later than the request's release). Both instants
//! come from one clock, the database's, so the order means the same on every node.
//!
//! A backend with one process making every change (SQLite) has no fence: the service's
//! in-process gate orders changes and requests there.

use consentry_types::{AppId, GroupId, Instant};

use crate::StoreResult;

/// Which requests a change must be ordered against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FenceScope {
    /// Every request (a policy activation, a sweep over many apps).
    Everything,
    /// Requests by one app (its status, tokens, installations, consents given to it).
    App(AppId),
    /// Requests about one group (its memberships).
    Group(GroupId),
}

/// A change of facts in progress: commit the write with `at` before dropping this, which lets
/// the requests it held back read again.
pub struct FencedChange {
    pub at: Instant,
    /// What keeps requests out until dropped (a database connection holding a lock).
    pub held: Box<dyn Send>,
}

impl std::fmt::Debug for FencedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedChange").field("at", &self.at).finish_non_exhaustive()
    }
}

/// See the module documentation.
pub trait ReleaseFence: Send + Sync {
    /// Waits until no request in `scope` is reading its page, keeps new ones out until the
    /// returned change is dropped, and gives the change's instant: strictly after the release
    /// instant of every request that read before, and no later than that of any that reads after.
    fn change(&self, scope: &FenceScope) -> StoreResult<FencedChange>;
}
