//! `Facts`: the access facts true at one instant, as reconstructed from history.

use std::collections::{BTreeMap, BTreeSet};

use consentry_types::{AppId, AppStatus, GroupId, Instant, MemberId, Role};

/// The access facts at one instant. Plain data, comparable in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub memberships: BTreeMap<(GroupId, MemberId), Role>,
    /// (app, group) → (authorized_by, installed_at).
    pub installations: BTreeMap<(AppId, GroupId), (MemberId, Instant)>,
    /// (member, app) pairs with `profile` consent.
    pub profile_consents: BTreeSet<(MemberId, AppId)>,
    pub app_statuses: BTreeMap<AppId, AppStatus>,
    pub active_policy: Option<u32>,
}
