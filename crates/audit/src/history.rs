//! The facts as they were at any instant, indexed from the store's full history.

use std::collections::HashMap;
use std::hash::Hash;

use consentry_store::{Change, FactHistory, Installed};
use consentry_types::{AppId, AppStatus, GroupId, Instant, MemberId, Role};

/// The values a key took, in time order.
#[derive(Debug, Clone)]
pub(crate) struct Timeline<V> {
    points: Vec<(Instant, V)>,
}

impl<V> Timeline<V> {
    /// The value in force at `t` (the last change at or before it).
    pub(crate) fn at(&self, t: Instant) -> Option<&V> {
        let after = self.points.partition_point(|(when, _)| *when <= t);
        after.checked_sub(1).and_then(|i| self.points.get(i)).map(|(_, v)| v)
    }

    pub(crate) fn points(&self) -> &[(Instant, V)] {
        &self.points
    }
}

fn index<K: Hash + Eq + Clone, V: Clone>(changes: &[Change<K, V>]) -> HashMap<K, Timeline<V>> {
    let mut timelines: HashMap<K, Timeline<V>> = HashMap::new();
    for change in changes {
        timelines
            .entry(change.key.clone())
            .or_insert_with(|| Timeline { points: Vec::new() })
            .points
            .push((change.at, change.value.clone()));
    }
    timelines
}

/// Every access fact as a timeline, so that the facts at any instant are a lookup away.
#[derive(Debug, Clone)]
pub struct History {
    pub(crate) memberships: HashMap<(GroupId, MemberId), Timeline<Option<Role>>>,
    pub(crate) installations: HashMap<(AppId, GroupId), Timeline<Installed>>,
    pub(crate) consents: HashMap<(MemberId, AppId), Timeline<bool>>,
    pub(crate) statuses: HashMap<AppId, Timeline<AppStatus>>,
    pub(crate) activations: Timeline<u32>,
    /// Membership changes per group, in time order (to sweep a group's members).
    pub(crate) group_changes: HashMap<GroupId, Vec<(Instant, MemberId, Option<Role>)>>,
    /// Consent changes per app, in time order, with whose consent changed.
    pub(crate) app_consent_changes: HashMap<AppId, Vec<(Instant, MemberId)>>,
}

impl History {
    pub fn new(history: &FactHistory) -> History {
        let mut group_changes: HashMap<GroupId, Vec<(Instant, MemberId, Option<Role>)>> = HashMap::new();
        for change in &history.memberships {
            group_changes.entry(change.key.0.clone()).or_default().push((
                change.at,
                change.key.1.clone(),
                change.value,
            ));
        }
        let mut app_consent_changes: HashMap<AppId, Vec<(Instant, MemberId)>> = HashMap::new();
        for change in &history.profile_consents {
            app_consent_changes
                .entry(change.key.1.clone())
                .or_default()
                .push((change.at, change.key.0.clone()));
        }
        History {
            memberships: index(&history.memberships),
            installations: index(&history.installations),
            consents: index(&history.profile_consents),
            statuses: index(&history.app_statuses),
            activations: Timeline { points: history.activations.iter().map(|a| (a.at, a.version)).collect() },
            group_changes,
            app_consent_changes,
        }
    }

    pub fn role(&self, group: &GroupId, member: &MemberId, t: Instant) -> Option<Role> {
        self.memberships.get(&(group.clone(), member.clone())).and_then(|l| l.at(t)).copied().flatten()
    }

    /// When the installation in force at `t` began, if the app was installed then.
    pub fn installed_since(&self, app: &AppId, group: &GroupId, t: Instant) -> Option<Instant> {
        self.installations
            .get(&(app.clone(), group.clone()))
            .and_then(|l| l.at(t))
            .and_then(|v| v.as_ref())
            .map(|(_, since)| *since)
    }

    pub fn consented(&self, member: &MemberId, app: &AppId, t: Instant) -> bool {
        self.consents.get(&(member.clone(), app.clone())).and_then(|l| l.at(t)).copied().unwrap_or(false)
    }

    pub fn app_status(&self, app: &AppId, t: Instant) -> Option<AppStatus> {
        self.statuses.get(app).and_then(|l| l.at(t)).copied()
    }

    /// The policy version enforcement used at `t`.
    pub fn active_version(&self, t: Instant) -> Option<u32> {
        self.activations.at(t).copied()
    }
}
