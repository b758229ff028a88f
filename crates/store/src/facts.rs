//! `Facts`: the access facts true at one instant, as reconstructed from history.

use std::collections::{BTreeMap, BTreeSet};

use consentry_types::{AppId, AppStatus, GroupId, Instant, MemberId, PolicyActivation, Role};

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

/// One change of one access fact: `value` holds from `at` until the key's next change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<K, V> {
    pub at: Instant,
    pub key: K,
    pub value: V,
}

/// An installation's state: who authorized it and since when, or `None` when removed.
pub type Installed = Option<(MemberId, Instant)>;

/// Every change of every access fact, each list in the order the changes took effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactHistory {
    /// `None`: the membership ended.
    pub memberships: Vec<Change<(GroupId, MemberId), Option<Role>>>,
    /// `Some((authorized_by, installed_at))`, or `None`: the installation was removed.
    pub installations: Vec<Change<(AppId, GroupId), Installed>>,
    /// `true`: profile consent granted; `false`: withdrawn.
    pub profile_consents: Vec<Change<(MemberId, AppId), bool>>,
    pub app_statuses: Vec<Change<AppId, AppStatus>>,
    pub activations: Vec<PolicyActivation>,
}
