//! The generator: a pure function from [`WorldParams`] to a [`World`], its cast and every event
//! of its history in time order. No I/O; the same parameters and seed give the same world.
//!
//! Every event respects the platform's rules at its instant, as the generator's own bookkeeping
//! sees them: an installer is an admin of the group then, a post's author a member, a group
//! keeps at least one admin, only a suspended app is reinstated, a banned app stays banned (no
//! reinstatement, no installation, no opt-in, no read after its ban), an app reads only groups
//! it is installed in while it is active. Events at the same instant keep the order in which
//! they were generated, and instants are then made strictly increasing (a millisecond apart at
//! least), so a store applying them gives every change exactly the instant it has here.

use std::collections::{BTreeMap, HashMap, HashSet};

use consentry_types::{AppId, DeveloperId, GroupId, Instant, MemberId, PostId, Role};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::event::{Event, Read, StatusChange, Timed};
use crate::params::WorldParams;
use crate::WorldError;

const HOUR_MS: i64 = 3_600_000;

/// The categories apps are registered in (developer `d`'s apps have category `d % 5`).
pub const CATEGORIES: [&str; 5] =
    ["social_media_management", "video_streaming", "analytics", "event_planning", "community_moderation"];
const FIRST: [&str; 16] = [
    "Ada", "Bao", "Chiara", "Dmitri", "Esi", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemi", "Lars",
    "Mei", "Nia", "Omar", "Priya",
];
const LAST: [&str; 12] = [
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Moreau",
    "Silva",
    "Novak",
    "Haddad",
    "Kowalski",
    "Nguyen",
    "Ibarra",
    "Berg",
    "Costa",
];
const TOPICS: [&str; 12] = [
    "Hikers",
    "Sourdough",
    "Chess",
    "Parents",
    "Cyclists",
    "Gardeners",
    "Photographers",
    "Runners",
    "Birdwatchers",
    "Makers",
    "Readers",
    "Climbers",
];
const PLACES: [&str; 10] =
    ["Lisbon", "Osaka", "Lagos", "Oslo", "Austin", "Pune", "Lyon", "Cusco", "Leeds", "Perth"];

/// One app of the world and what the generator decided about it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPlan {
    pub id: AppId,
    pub developer: DeveloperId,
    pub category: &'static str,
    pub launched: Instant,
    /// The share of the members it could see who opt in to it (drawn from the opt-in range).
    pub opt_in_rate: f64,
    /// Members it could see at some point (in a group while it was installed there, before any
    /// ban), and how many of them opted in.
    pub could_see: usize,
    pub opted_in: usize,
    /// It reads members while the instant is before this (`Instant::MAX`: to the end).
    pub reads_members_until: Instant,
    /// When it was suspended and (if before the end) reinstated.
    pub suspended: Option<(Instant, Option<Instant>)>,
    pub banned: Option<Instant>,
}

/// A generated world: its cast and its history.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub params: WorldParams,
    pub members: Vec<MemberId>,
    pub groups: Vec<GroupId>,
    /// Each group's members when the window opens (index as in `groups`).
    pub starting_sizes: Vec<usize>,
    pub developers: Vec<DeveloperId>,
    pub apps: Vec<AppPlan>,
    /// Every event, instants strictly increasing.
    pub events: Vec<Timed>,
}

impl World {
    /// Generates the world `params` describe.
    pub fn generate(params: &WorldParams) -> Result<World, WorldError> {
        params.check()?;
        Generator::new(params).run()
    }

    /// How many events of each kind the history holds.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for timed in &self.events {
            *counts.entry(timed.event.kind()).or_default() += 1;
        }
        counts
    }

    /// The plan of an app, by id.
    pub fn app(&self, id: &AppId) -> Option<&AppPlan> {
        self.apps.iter().find(|a| &a.id == id)
    }
}

/// A member's (or an admin's) stay in a group: from `from` until before `to`.
#[derive(Debug, Clone, Copy)]
struct Span {
    member: u32,
    from: Instant,
    to: Instant,
}

/// What the generator remembers of a group's life to place installations and opt-ins.
#[derive(Debug, Default)]
struct GroupLife {
    presence: Vec<Span>,
    admins: Vec<Span>,
}

impl GroupLife {
    fn admins_at(&self, t: Instant) -> Vec<u32> {
        self.admins.iter().filter(|s| s.from <= t && t < s.to).map(|s| s.member).collect()
    }
}

/// An app's installation in one group: from `from` until before `to`.
#[derive(Debug, Clone, Copy)]
struct Installed {
    group: usize,
    from: Instant,
    to: Instant,
}

fn width(count: usize, at_least: usize) -> usize {
    count.saturating_sub(1).to_string().len().max(at_least)
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list.choose(rng).copied().unwrap_or_default()
}

struct Generator<'p> {
    params: &'p WorldParams,
    rng: StdRng,
    events: Vec<(Instant, Event)>,
    members: Vec<MemberId>,
    groups: Vec<GroupId>,
    sizes: Vec<usize>,
    lives: Vec<GroupLife>,
    developers: Vec<DeveloperId>,
    apps: Vec<AppPlan>,
    installed: Vec<Vec<Installed>>,
}

impl<'p> Generator<'p> {
    fn new(params: &'p WorldParams) -> Generator<'p> {
        Generator {
            params,
            rng: StdRng::seed_from_u64(params.seed),
            events: Vec::new(),
            members: Vec::new(),
            groups: Vec::new(),
            sizes: Vec::new(),
            lives: Vec::new(),
            developers: Vec::new(),
            apps: Vec::new(),
            installed: Vec::new(),
        }
    }

    /// A uniformly drawn instant in `[from, to)`; `from` when the span is empty.
    fn between(&mut self, from: Instant, to: Instant) -> Instant {
        if to <= from {
            return from;
        }
        Instant::from_millis(self.rng.gen_range(from.millis()..to.millis()))
    }

    fn chance(&mut self, share: f64) -> bool {
        share > 0.0 && self.rng.gen_bool(share.min(1.0))
    }

    fn range(&mut self, (low, high): (usize, usize)) -> usize {
        if high <= low {
            low
        } else {
            self.rng.gen_range(low..=high)
        }
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.events.push((at, event));
    }

    fn run(mut self) -> Result<World, WorldError> {
        self.cast()?;
        for g in 0..self.groups.len() {
            let life = self.live(g)?;
            self.lives.push(life);
        }
        self.apps()?;
        for a in 0..self.apps.len() {
            let installed = self.install(a)?;
            self.installed.push(installed);
        }
        for a in 0..self.apps.len() {
            self.opt_ins(a)?;
        }
        for (when, policy) in self.params.policies.clone() {
            self.push(when, Event::Policy { policy });
        }
        self.traffic()?;
        // Same instant: the order of generation (the bookkeeping above assumed it).
        self.events.sort_by_key(|(at, _)| *at);
        let mut last = Instant::MIN;
        let events = self
            .events
            .into_iter()
            .map(|(at, event)| {
                let at = if at > last { at } else { last.plus_millis(1) };
                last = at;
                Timed { at, event }
            })
            .collect();
        Ok(World {
            params: self.params.clone(),
            members: self.members,
            groups: self.groups,
            starting_sizes: self.sizes,
            developers: self.developers,
            apps: self.apps,
            events,
        })
    }

    /// Members, groups (with their Zipf sizes) and developers, all there when the window opens.
    fn cast(&mut self) -> Result<(), WorldError> {
        let p = self.params;
        let start = p.start;
        let member_width = width(p.members, 5);
        for i in 0..p.members {
            let member = MemberId::parse(&format!("m-{i:0member_width$}"))?;
            let name = format!("{} {}", pick(&mut self.rng, &FIRST), pick(&mut self.rng, &LAST));
            self.push(start, Event::Member { member: member.clone(), name });
            self.members.push(member);
        }
        let groups = p.groups.count;
        let group_width = width(groups, 4);
        let mut ranks: Vec<usize> = (1..=groups).collect();
        ranks.shuffle(&mut self.rng);
        for (g, rank) in ranks.into_iter().enumerate() {
            let group = GroupId::parse(&format!("g-{g:0group_width$}"))?;
            let name = format!("{} of {}", pick(&mut self.rng, &TOPICS), pick(&mut self.rng, &PLACES));
            self.push(start, Event::Group { group: group.clone(), name });
            self.groups.push(group);
            let jitter = self.rng.gen_range(0.9..1.1);
            let ideal = p.groups.largest as f64 / (rank as f64).powf(p.groups.exponent) * jitter;
            let size = (ideal.round() as usize).max(p.groups.smallest).max(1).min(p.members);
            self.sizes.push(size);
        }
        let developer_width = width(p.developers, 3);
        for d in 0..p.developers {
            let developer = DeveloperId::parse(&format!("dev-{d:0developer_width$}"))?;
            self.push(
                start,
                Event::Developer {
                    developer: developer.clone(),
                    name: format!("Developer {d:0developer_width$}"),
                    contact_email: format!("privacy@dev{d:0developer_width$}.example"),
                },
            );
            self.developers.push(developer);
        }
        Ok(())
    }

    /// One group over the window: its starting members and admins, then leaves, joins, role
    /// changes and posts in time order, keeping at least one admin.
    fn live(&mut self, g: usize) -> Result<GroupLife, WorldError> {
        let p = self.params;
        let (start, end) = (p.start, p.end);
        let group = self.groups.get(g).cloned().ok_or_else(|| missing("group"))?;
        let size = self.sizes.get(g).copied().unwrap_or(1);
        let starting: Vec<u32> =
            rand::seq::index::sample(&mut self.rng, p.members, size).into_iter().map(|i| i as u32).collect();
        let admins = self.range(p.groups.admins).clamp(1, starting.len().max(1));
        let mut life = GroupLife::default();
        let mut current: Vec<u32> = Vec::with_capacity(size);
        let mut position: HashMap<u32, usize> = HashMap::with_capacity(size);
        // Open stays: member -> since; admins -> since.
        let mut joined: HashMap<u32, Instant> = HashMap::with_capacity(size);
        let mut admin_since: Vec<(u32, Instant)> = Vec::new();
        for (i, &m) in starting.iter().enumerate() {
            let role = if i < admins { Role::Admin } else { Role::Member };
            self.push(start, Event::Join { group: group.clone(), member: self.member(m)?, role });
            position.insert(m, current.len());
            current.push(m);
            joined.insert(m, start);
            if role == Role::Admin {
                admin_since.push((m, start));
            }
        }
        #[derive(Clone, Copy)]
        enum Change {
            Leave,
            Join,
            Role,
            Post,
        }
        let leaves = (p.groups.leaving * size as f64).round() as usize;
        let roles = (p.groups.role_changes * size as f64).round() as usize;
        let posts = self.range(p.groups.posts);
        let mut plan: Vec<(Instant, Change)> = Vec::with_capacity(2 * leaves + roles + posts);
        let opens = start.plus_millis(HOUR_MS);
        for (count, change) in
            [(leaves, Change::Leave), (leaves, Change::Join), (roles, Change::Role), (posts, Change::Post)]
        {
            for _ in 0..count {
                let at = self.between(opens, end);
                plan.push((at, change));
            }
        }
        plan.sort_by_key(|(at, _)| *at);
        let mut post_number = 0usize;
        for (at, change) in plan {
            match change {
                Change::Leave => {
                    if current.len() < 2 {
                        continue;
                    }
                    let mut chosen = None;
                    for _ in 0..8 {
                        let m = current.get(self.rng.gen_range(0..current.len())).copied().unwrap_or(0);
                        let is_admin = admin_since.iter().any(|(a, _)| *a == m);
                        if !is_admin || admin_since.len() > 1 {
                            chosen = Some(m);
                            break;
                        }
                    }
                    let Some(m) = chosen else { continue };
                    if let Some(i) = admin_since.iter().position(|(a, _)| *a == m) {
                        let (_, since) = admin_since.swap_remove(i);
                        life.admins.push(Span { member: m, from: since, to: at });
                    }
                    if let Some(i) = position.remove(&m) {
                        current.swap_remove(i);
                        if let Some(&moved) = current.get(i) {
                            position.insert(moved, i);
                        }
                    }
                    if let Some(since) = joined.remove(&m) {
                        life.presence.push(Span { member: m, from: since, to: at });
                    }
                    self.push(at, Event::Leave { group: group.clone(), member: self.member(m)? });
                }
                Change::Join => {
                    for _ in 0..16 {
                        let m = self.rng.gen_range(0..p.members) as u32;
                        if position.contains_key(&m) {
                            continue;
                        }
                        position.insert(m, current.len());
                        current.push(m);
                        joined.insert(m, at);
                        self.push(
                            at,
                            Event::Join { group: group.clone(), member: self.member(m)?, role: Role::Member },
                        );
                        break;
                    }
                }
                Change::Role => {
                    if admin_since.len() >= 2 && self.rng.gen_bool(0.5) {
                        let i = self.rng.gen_range(0..admin_since.len());
                        let (m, since) = admin_since.swap_remove(i);
                        life.admins.push(Span { member: m, from: since, to: at });
                        self.push(
                            at,
                            Event::ChangeRole {
                                group: group.clone(),
                                member: self.member(m)?,
                                role: Role::Member,
                            },
                        );
                    } else {
                        for _ in 0..8 {
                            let Some(&m) = current.choose(&mut self.rng) else { break };
                            if admin_since.iter().any(|(a, _)| *a == m) {
                                continue;
                            }
                            admin_since.push((m, at));
                            self.push(
                                at,
                                Event::ChangeRole {
                                    group: group.clone(),
                                    member: self.member(m)?,
                                    role: Role::Admin,
                                },
                            );
                            break;
                        }
                    }
                }
                Change::Post => {
                    let Some(&author) = current.choose(&mut self.rng) else { continue };
                    let post = PostId::parse(&format!("{group}-p{post_number}"))?;
                    post_number += 1;
                    let topic = pick(&mut self.rng, &TOPICS);
                    self.push(
                        at,
                        Event::Post {
                            group: group.clone(),
                            post,
                            author: self.member(author)?,
                            content: format!("{topic} meet-up notes #{post_number}"),
                        },
                    );
                }
            }
        }
        for (m, since) in joined {
            life.presence.push(Span { member: m, from: since, to: Instant::MAX });
        }
        for (m, since) in admin_since {
            life.admins.push(Span { member: m, from: since, to: Instant::MAX });
        }
        // HashMap order is not seeded: sort so that what is drawn from these is deterministic.
        life.presence.sort_by_key(|s| (s.from, s.member));
        life.admins.sort_by_key(|s| (s.from, s.member));
        Ok(life)
    }

    fn member(&self, m: u32) -> Result<MemberId, WorldError> {
        self.members.get(m as usize).cloned().ok_or_else(|| missing("member"))
    }

    /// Apps, their launch, opt-in rate, suspensions and bans, and when they stop reading members.
    fn apps(&mut self) -> Result<(), WorldError> {
        let p = self.params;
        let developer_width = width(p.developers, 3);
        let keep: HashSet<usize> = rand::seq::index::sample(
            &mut self.rng,
            p.developers,
            p.traffic.keep_reading_developers.min(p.developers),
        )
        .into_iter()
        .collect();
        for d in 0..p.developers {
            let developer = self.developers.get(d).cloned().ok_or_else(|| missing("developer"))?;
            let category = CATEGORIES.get(d % CATEGORIES.len()).copied().unwrap_or("analytics");
            for n in 0..p.apps_of_developer(d) {
                let id = AppId::parse(&format!("app-{d:0developer_width$}-{n}"))?;
                let launched = self.between(p.apps_launch.0, p.apps_launch.1).max(p.start);
                self.push(
                    launched,
                    Event::App {
                        app: id.clone(),
                        developer: developer.clone(),
                        name: format!("{category} app {d:0developer_width$}-{n}"),
                        category,
                    },
                );
                let (low, high) = p.opt_in.rate;
                let opt_in_rate = if high > low { self.rng.gen_range(low..high) } else { low };
                let reads_members_until = if keep.contains(&d) {
                    Instant::MAX
                } else {
                    self.between(p.traffic.stop_reading_between.0, p.traffic.stop_reading_between.1)
                };
                let mut plan = AppPlan {
                    id,
                    developer: developer.clone(),
                    category,
                    launched,
                    opt_in_rate,
                    could_see: 0,
                    opted_in: 0,
                    reads_members_until,
                    suspended: None,
                    banned: None,
                };
                self.status(&mut plan);
                self.apps.push(plan);
            }
        }
        Ok(())
    }

    /// At most one suspension (then a reinstatement) and at most one ban, within the span.
    fn status(&mut self, plan: &mut AppPlan) {
        let s = &self.params.app_status;
        let from = s.between.0.max(plan.launched.plus_days(1));
        let to = s.between.1.min(self.params.end);
        if from >= to {
            return;
        }
        let suspended = self.chance(s.suspended);
        let suspension = if suspended {
            let at = self.between(from, to);
            let days = self.rng.gen_range(s.suspension_days.0..=s.suspension_days.1.max(s.suspension_days.0));
            let back = at.plus_days(days).plus_millis(self.rng.gen_range(0..HOUR_MS));
            Some((at, back))
        } else {
            None
        };
        let ban = if self.chance(s.banned) { Some(self.between(from, to)) } else { None };
        let end = self.params.end;
        match (suspension, ban) {
            // Banned before it would have been suspended: the ban is the last word.
            (Some((at, _)), Some(ban)) if ban <= at => {
                plan.banned = Some(ban);
            }
            (Some((at, back)), ban) => {
                plan.suspended = Some((at, None));
                self.push(at, Event::Status { app: plan.id.clone(), change: StatusChange::Suspend });
                // Banned while suspended: never reinstated.
                let reinstated = back < end && ban.is_none_or(|b| b > back);
                if reinstated {
                    plan.suspended = Some((at, Some(back)));
                    self.push(back, Event::Status { app: plan.id.clone(), change: StatusChange::Reinstate });
                }
                plan.banned = ban;
            }
            (None, ban) => plan.banned = ban,
        }
        if let Some(ban) = plan.banned {
            self.push(ban, Event::Status { app: plan.id.clone(), change: StatusChange::Ban });
        }
    }

    /// Installations of one app: groups drawn with weight √size, an admin of the group at that
    /// instant authorizing each, some removed and some of those made again.
    fn install(&mut self, a: usize) -> Result<Vec<Installed>, WorldError> {
        let p = self.params;
        let Some(plan) = self.apps.get(a).cloned() else { return Ok(Vec::new()) };
        let count = self.range(p.installations.per_app).min(self.groups.len());
        let candidates: Vec<usize> = (0..self.groups.len()).collect();
        let sizes = &self.sizes;
        let chosen: Vec<usize> = candidates
            .choose_multiple_weighted(&mut self.rng, count, |g| {
                (sizes.get(*g).copied().unwrap_or(1) as f64).sqrt()
            })
            .map(|picked| picked.copied().collect())
            .unwrap_or_default();
        let latest = plan.banned.unwrap_or(p.end).min(p.end);
        let mut installed = Vec::new();
        for (j, g) in chosen.into_iter().enumerate() {
            let first = j == 0;
            let until = match (first, p.installations.first_within_days) {
                (true, Some(days)) => plan.launched.plus_days(days).min(latest),
                _ => latest,
            };
            // An installation is made while the app is active: draw again if it was suspended.
            let mut at = self.between(plan.launched, until);
            for _ in 0..8 {
                if active(&plan, at) {
                    break;
                }
                at = self.between(plan.launched, until);
            }
            let Some(by) = self.admin(g, at, &plan) else { continue };
            let group = self.groups.get(g).cloned().ok_or_else(|| missing("group"))?;
            self.push(
                at,
                Event::Install { app: plan.id.clone(), group: group.clone(), by: self.member(by)? },
            );
            let kept = first && p.installations.first_kept;
            if kept || !self.chance(p.installations.removed) {
                installed.push(Installed { group: g, from: at, to: Instant::MAX });
                continue;
            }
            let removed = self.between(at.plus_millis(HOUR_MS), p.end);
            if removed >= p.end {
                installed.push(Installed { group: g, from: at, to: Instant::MAX });
                continue;
            }
            self.push(removed, Event::Uninstall { app: plan.id.clone(), group: group.clone() });
            installed.push(Installed { group: g, from: at, to: removed });
            if !self.chance(p.installations.reinstalled) {
                continue;
            }
            let again = self.between(removed.plus_millis(HOUR_MS), latest);
            if again >= latest {
                continue;
            }
            let Some(by) = self.admin(g, again, &plan) else { continue };
            self.push(again, Event::Install { app: plan.id.clone(), group, by: self.member(by)? });
            installed.push(Installed { group: g, from: again, to: Instant::MAX });
        }
        installed.sort_by_key(|i| (i.from, i.group));
        Ok(installed)
    }

    /// An admin of group `g` at `at` who may install the app then (it is active), if any.
    fn admin(&mut self, g: usize, at: Instant, plan: &AppPlan) -> Option<u32> {
        if !active(plan, at) {
            return None;
        }
        let admins = self.lives.get(g)?.admins_at(at);
        admins.choose(&mut self.rng).copied()
    }

    /// Opt-ins to one app among the members it could see, at the app's rate, some withdrawn.
    fn opt_ins(&mut self, a: usize) -> Result<(), WorldError> {
        let p = self.params;
        let Some(plan) = self.apps.get(a).cloned() else { return Ok(()) };
        let installed = self.installed.get(a).cloned().unwrap_or_default();
        let cutoff = plan.banned.unwrap_or(p.end).min(p.end);
        let mut seen: HashSet<u32> = HashSet::new();
        let (mut could_see, mut opted_in) = (0, 0);
        for stay in installed {
            let presence = self.lives.get(stay.group).map(|l| l.presence.clone()).unwrap_or_default();
            for span in presence {
                let from = stay.from.max(span.from);
                let to = stay.to.min(span.to).min(cutoff);
                if from >= to || !seen.insert(span.member) {
                    continue;
                }
                could_see += 1;
                if !self.chance(plan.opt_in_rate) {
                    continue;
                }
                opted_in += 1;
                let at = self.between(from, to);
                let member = self.member(span.member)?;
                self.push(at, Event::OptIn { member: member.clone(), app: plan.id.clone() });
                if self.chance(p.opt_in.withdrawn) {
                    let withdrawn = self.between(at.plus_millis(1_000), p.end);
                    if withdrawn < p.end {
                        self.push(withdrawn, Event::Withdraw { member, app: plan.id.clone() });
                    }
                }
            }
        }
        if let Some(plan) = self.apps.get_mut(a) {
            plan.could_see = could_see;
            plan.opted_in = opted_in;
        }
        Ok(())
    }

    /// Every `every_days`, each active app reads each group it is installed in.
    fn traffic(&mut self) -> Result<(), WorldError> {
        let p = self.params;
        let t = &p.traffic;
        if t.every_days < 1 {
            return Ok(());
        }
        let mut tick = p.start.plus_days(t.first_after_days);
        let mut reads = Vec::new();
        while tick < p.end {
            for (a, plan) in self.apps.iter().enumerate() {
                if tick < plan.launched || !active(plan, tick) {
                    continue;
                }
                let read = if tick < plan.reads_members_until {
                    Read::Members { fields: t.member_fields, limit: t.limit }
                } else {
                    Read::Group { fields: t.group_fields }
                };
                let mut groups: Vec<usize> = self
                    .installed
                    .get(a)
                    .into_iter()
                    .flatten()
                    .filter(|i| i.from <= tick && tick < i.to)
                    .map(|i| i.group)
                    .collect();
                groups.sort_unstable();
                for g in groups {
                    let group = self.groups.get(g).cloned().ok_or_else(|| missing("group"))?;
                    reads.push((tick, Event::Read { app: plan.id.clone(), group, read }));
                }
            }
            tick = tick.plus_days(t.every_days);
        }
        self.events.extend(reads);
        Ok(())
    }
}

/// Whether the app is active at `at`: launched, not suspended then, not banned by then.
fn active(plan: &AppPlan, at: Instant) -> bool {
    if at < plan.launched || plan.banned.is_some_and(|b| at >= b) {
        return false;
    }
    match plan.suspended {
        Some((from, back)) => at < from || back.is_some_and(|b| at >= b),
        None => true,
    }
}

fn missing(what: &str) -> WorldError {
    WorldError::Params(format!("the generator lost track of a {what}"))
}
