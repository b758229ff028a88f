//! `Replay`: the world's facts at any instant, folded from its events in memory (pure, no
//! store). What a store that applied the same events must reconstruct with `facts_as_of`, and
//! what benchmarks read pages from without a store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use consentry_types::{AppId, AppStatus, GroupId, Instant, MemberId, Role};

use crate::event::{Event, StatusChange, Timed};
use crate::generate::World;
use crate::params::ShippedPolicy;

/// The facts of a world as of the last event applied.
#[derive(Debug, Clone)]
pub struct Replay<'w> {
    world: &'w World,
    next: usize,
    memberships: HashMap<GroupId, BTreeMap<MemberId, Role>>,
    installations: BTreeMap<(AppId, GroupId), (MemberId, Instant)>,
    consents: BTreeSet<(MemberId, AppId)>,
    statuses: BTreeMap<AppId, AppStatus>,
    policies: u32,
    active_policy: Option<(u32, ShippedPolicy)>,
}

impl<'w> Replay<'w> {
    /// The world before its first event.
    pub fn new(world: &'w World) -> Replay<'w> {
        Replay {
            world,
            next: 0,
            memberships: HashMap::new(),
            installations: BTreeMap::new(),
            consents: BTreeSet::new(),
            statuses: BTreeMap::new(),
            policies: 0,
            active_policy: None,
        }
    }

    /// Applies the next event and returns it (`None` at the end of the history).
    pub fn step(&mut self) -> Option<&'w Timed> {
        let world: &'w World = self.world;
        let timed = world.events.get(self.next)?;
        self.next += 1;
        self.fold(&timed.event, timed.at);
        Some(timed)
    }

    /// Applies every event up to and including instant `t`.
    pub fn advance_to(&mut self, t: Instant) {
        while self.world.events.get(self.next).is_some_and(|e| e.at <= t) {
            self.step();
        }
    }

    /// How many events were applied.
    pub fn applied(&self) -> usize {
        self.next
    }

    fn fold(&mut self, event: &Event, at: Instant) {
        match event {
            Event::Join { group, member, role } | Event::ChangeRole { group, member, role } => {
                self.memberships.entry(group.clone()).or_default().insert(member.clone(), *role);
            }
            Event::Leave { group, member } => {
                if let Some(members) = self.memberships.get_mut(group) {
                    members.remove(member);
                }
            }
            Event::App { app, .. } => {
                self.statuses.insert(app.clone(), AppStatus::Active);
            }
            Event::Install { app, group, by } => {
                // As the store does: a standing installation keeps its instant.
                self.installations.entry((app.clone(), group.clone())).or_insert((by.clone(), at));
            }
            Event::Uninstall { app, group } => {
                self.installations.remove(&(app.clone(), group.clone()));
            }
            Event::OptIn { member, app } => {
                self.consents.insert((member.clone(), app.clone()));
            }
            Event::Withdraw { member, app } => {
                self.consents.remove(&(member.clone(), app.clone()));
            }
            Event::Status { app, change } => {
                let status = match change {
                    StatusChange::Suspend => AppStatus::Suspended,
                    StatusChange::Reinstate => AppStatus::Active,
                    StatusChange::Ban => AppStatus::Banned,
                };
                self.statuses.insert(app.clone(), status);
            }
            Event::Policy { policy } => {
                self.policies += 1;
                self.active_policy = Some((self.policies, *policy));
            }
            Event::Member { .. }
            | Event::Group { .. }
            | Event::Developer { .. }
            | Event::Post { .. }
            | Event::Read { .. } => {}
        }
    }

    /// The group's members with their roles, in member id order (the order the Groups API
    /// pages them in).
    pub fn members(&self, group: &GroupId) -> impl Iterator<Item = (&MemberId, Role)> + '_ {
        self.memberships.get(group).into_iter().flatten().map(|(m, r)| (m, *r))
    }

    pub fn member_count(&self, group: &GroupId) -> usize {
        self.memberships.get(group).map_or(0, BTreeMap::len)
    }

    pub fn role(&self, group: &GroupId, member: &MemberId) -> Option<Role> {
        self.memberships.get(group).and_then(|m| m.get(member)).copied()
    }

    /// Every membership, by (group, member).
    pub fn memberships(&self) -> BTreeMap<(GroupId, MemberId), Role> {
        self.memberships
            .iter()
            .flat_map(|(g, members)| members.iter().map(move |(m, r)| ((g.clone(), m.clone()), *r)))
            .collect()
    }

    /// Who authorized the app's standing installation in the group, and since when.
    pub fn installation(&self, app: &AppId, group: &GroupId) -> Option<&(MemberId, Instant)> {
        self.installations.get(&(app.clone(), group.clone()))
    }

    /// Every standing installation: (app, group) → (authorized by, since).
    pub fn installations(&self) -> &BTreeMap<(AppId, GroupId), (MemberId, Instant)> {
        &self.installations
    }

    pub fn consented(&self, member: &MemberId, app: &AppId) -> bool {
        self.consents.contains(&(member.clone(), app.clone()))
    }

    /// Every (member, app) with a standing opt-in.
    pub fn consents(&self) -> &BTreeSet<(MemberId, AppId)> {
        &self.consents
    }

    pub fn status(&self, app: &AppId) -> Option<AppStatus> {
        self.statuses.get(app).copied()
    }

    pub fn statuses(&self) -> &BTreeMap<AppId, AppStatus> {
        &self.statuses
    }

    /// The active policy: its version (counting the world's policy events from 1, as a store
    /// that held no version before numbers them) and which shipped policy it is.
    pub fn active_policy(&self) -> Option<(u32, ShippedPolicy)> {
        self.active_policy
    }
}
