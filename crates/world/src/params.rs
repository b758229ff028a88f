//! What a world is made of: every parameter of the generator, two presets, and the one-paragraph
//! description (`Display`) printed beside every figure measured on a world.

use std::fmt;

use consentry_types::{Field, FieldSet, Instant};

use crate::WorldError;

/// A policy consentry ships in `policies/`, as a world's history activates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShippedPolicy {
    /// Before April 2018: an installed app reads every member's name and picture.
    Legacy2017,
    /// April 2018 as it shipped: consent needed, except for installations made before the change.
    Groups2018Grandfathered,
    /// April 2018 as intended: a member's profile only with that member's opt-in.
    Groups2018,
}

impl ShippedPolicy {
    pub const ALL: [ShippedPolicy; 3] =
        [ShippedPolicy::Legacy2017, ShippedPolicy::Groups2018Grandfathered, ShippedPolicy::Groups2018];

    /// The file's name without `.cedar`.
    pub fn name(self) -> &'static str {
        match self {
            ShippedPolicy::Legacy2017 => "legacy-2017",
            ShippedPolicy::Groups2018Grandfathered => "groups-2018-grandfathered",
            ShippedPolicy::Groups2018 => "groups-2018",
        }
    }

    /// The policy text, as shipped.
    pub fn text(self) -> &'static str {
        match self {
            ShippedPolicy::Legacy2017 => include_str!("../../../policies/legacy-2017.cedar"),
            ShippedPolicy::Groups2018Grandfathered => {
                include_str!("../../../policies/groups-2018-grandfathered.cedar")
            }
            ShippedPolicy::Groups2018 => include_str!("../../../policies/groups-2018.cedar"),
        }
    }
}

/// Groups: how many, their sizes, and how their memberships change.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupParams {
    pub count: usize,
    /// Sizes follow Zipf's law by rank: the group of rank r starts with about
    /// `largest / r^exponent` members (±10%), never fewer than `smallest`.
    pub largest: usize,
    pub smallest: usize,
    pub exponent: f64,
    /// Admins each group starts with (at least one, always kept).
    pub admins: (usize, usize),
    /// Posts written over the window, per group.
    pub posts: (usize, usize),
    /// Share of a group's starting members who leave over the window; as many others join.
    pub leaving: f64,
    /// Role changes (promotions to admin, demotions) over the window, per starting member.
    pub role_changes: f64,
}

/// Installations: how many per app, when, and whether they are removed.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallationParams {
    /// Groups each app is installed in at some point.
    pub per_app: (usize, usize),
    /// The app's first installation is made within this many days of its launch
    /// (otherwise, like the others, at any time before the window ends).
    pub first_within_days: Option<i64>,
    /// The app's first installation is never removed.
    pub first_kept: bool,
    /// Share of the other installations removed later.
    pub removed: f64,
    /// Share of removed installations made again later (a new installation instant).
    pub reinstalled: f64,
}

/// Members' opt-ins to apps.
#[derive(Debug, Clone, PartialEq)]
pub struct OptInParams {
    /// Each app draws its rate uniformly from this range: the share of the members it could
    /// see (in a group while it was installed there) who opt in to it at some point.
    pub rate: (f64, f64),
    /// Share of opt-ins withdrawn later.
    pub withdrawn: f64,
}

/// Suspensions and bans of apps by the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct AppStatusParams {
    /// Share of apps suspended once, then reinstated.
    pub suspended: f64,
    pub suspension_days: (i64, i64),
    /// Share of apps banned (a banned app stays banned: no reinstatement, no new installation).
    pub banned: f64,
    /// Suspensions and bans happen within this span.
    pub between: (Instant, Instant),
}

/// What apps read: every `every_days`, each active app reads each group it is installed in.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficParams {
    pub first_after_days: i64,
    pub every_days: i64,
    /// An app reading members asks for these fields, `limit` members a page, and follows the
    /// cursor to the end of the list.
    pub member_fields: FieldSet,
    pub limit: usize,
    /// An app that no longer reads members reads these fields of the group.
    pub group_fields: FieldSet,
    /// The apps of this many developers read members to the end of the window; the other apps
    /// stop reading members at an instant drawn from `stop_reading_between`.
    pub keep_reading_developers: usize,
    pub stop_reading_between: (Instant, Instant),
}

/// Everything the generator needs; the same parameters and seed give the same world.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldParams {
    pub seed: u64,
    /// The window the history covers.
    pub start: Instant,
    pub end: Instant,
    pub members: usize,
    pub groups: GroupParams,
    pub developers: usize,
    /// Every n-th developer has a second app (0: none has).
    pub second_app_every: usize,
    /// Apps are registered at instants drawn from this span.
    pub apps_launch: (Instant, Instant),
    pub installations: InstallationParams,
    pub opt_in: OptInParams,
    pub app_status: AppStatusParams,
    /// Which shipped policy becomes active when (each is submitted, reviewed, approved by an
    /// independent privacy officer and activated at that instant).
    pub policies: Vec<(Instant, ShippedPolicy)>,
    pub traffic: TrafficParams,
}

fn at(text: &str) -> Instant {
    Instant::parse(text).unwrap_or_default()
}

fn fields(list: &[Field]) -> FieldSet {
    list.iter().copied().collect()
}

impl WorldParams {
    /// The world the benchmarks run on: four years (2016 to 2019) of 60,000 members in 1,500
    /// groups, 150 developers, the three shipped policies in turn.
    pub fn benchmark(seed: u64) -> WorldParams {
        WorldParams {
            seed,
            start: at("2016-01-01"),
            end: at("2019-12-31"),
            members: 60_000,
            groups: GroupParams {
                count: 1_500,
                largest: 6_000,
                smallest: 5,
                exponent: 0.9,
                admins: (1, 3),
                posts: (0, 6),
                leaving: 0.2,
                role_changes: 0.02,
            },
            developers: 150,
            second_app_every: 5,
            apps_launch: (at("2016-01-01"), at("2019-06-30")),
            installations: InstallationParams {
                per_app: (2, 12),
                first_within_days: Some(60),
                first_kept: false,
                removed: 0.25,
                reinstalled: 0.3,
            },
            opt_in: OptInParams { rate: (0.03, 0.15), withdrawn: 0.2 },
            app_status: AppStatusParams {
                suspended: 0.08,
                suspension_days: (3, 45),
                banned: 0.03,
                between: (at("2016-06-01"), at("2019-12-01")),
            },
            policies: vec![
                (at("2016-01-01"), ShippedPolicy::Legacy2017),
                (at("2018-04-04"), ShippedPolicy::Groups2018Grandfathered),
                (at("2019-11-05T12:00:00Z"), ShippedPolicy::Groups2018),
            ],
            traffic: TrafficParams {
                first_after_days: 7,
                every_days: 14,
                member_fields: fields(&[Field::MemberName, Field::MemberPicture]),
                limit: 100,
                group_fields: fields(&[Field::GroupName, Field::GroupMemberCount]),
                keep_reading_developers: 30,
                stop_reading_between: (at("2018-05-01"), at("2019-08-31")),
            },
        }
    }

    /// The benchmark world shrunk for tests and `cargo test` runs of the benchmarks: the
    /// same shape (Zipf sizes, churn, opt-in rates, suspensions, bans, three policies) in
    /// 2,000 members and 80 groups.
    pub fn small(seed: u64) -> WorldParams {
        let mut params = WorldParams::benchmark(seed);
        params.members = 2_000;
        params.groups.count = 80;
        params.groups.largest = 600;
        params.groups.smallest = 3;
        params.developers = 12;
        params.installations.per_app = (2, 6);
        params.app_status.suspended = 0.25;
        params.app_status.banned = 0.1;
        params.traffic.every_days = 60;
        params.traffic.keep_reading_developers = 3;
        params
    }

    /// Refuses parameters no world can be made of, saying which and why.
    pub fn check(&self) -> Result<(), WorldError> {
        let bad = |why: String| Err(WorldError::Params(why));
        let share = |name: &str, value: f64| -> Result<(), WorldError> {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                bad(format!("{name} must be a share between 0 and 1, not {value}"))
            }
        };
        let g = &self.groups;
        if self.members == 0 || self.members > 10_000_000 {
            return bad(format!("members must be 1 to 10,000,000, not {}", self.members));
        }
        if g.count == 0 || g.count > 1_000_000 {
            return bad(format!("groups must be 1 to 1,000,000, not {}", g.count));
        }
        if self.developers > 100_000 {
            return bad(format!("developers must be at most 100,000, not {}", self.developers));
        }
        if self.start >= self.end {
            return bad(format!("the window must end after it starts ({} to {})", self.start, self.end));
        }
        if g.smallest > g.largest || !g.exponent.is_finite() || g.exponent < 0.0 {
            return bad("group sizes need smallest <= largest and a finite exponent >= 0".into());
        }
        if g.admins.0 == 0 || g.admins.0 > g.admins.1 || g.posts.0 > g.posts.1 {
            return bad("admins (at least 1) and posts must be ranges low..=high".into());
        }
        if self.installations.per_app.0 > self.installations.per_app.1 {
            return bad("installations per app must be a range low..=high".into());
        }
        let (low, high) = self.opt_in.rate;
        if !(0.0..=1.0).contains(&low) || !(low..=1.0).contains(&high) {
            return bad(format!("the opt-in rate must be a range within 0..=1, not {low}..{high}"));
        }
        let days = self.app_status.suspension_days;
        if days.0 < 0 || days.0 > days.1 {
            return bad("suspension days must be a range low..=high of days >= 0".into());
        }
        for (name, value) in [
            ("groups.leaving", g.leaving),
            ("installations.removed", self.installations.removed),
            ("installations.reinstalled", self.installations.reinstalled),
            ("opt_in.withdrawn", self.opt_in.withdrawn),
            ("app_status.suspended", self.app_status.suspended),
            ("app_status.banned", self.app_status.banned),
        ] {
            share(name, value)?;
        }
        if !g.role_changes.is_finite() || g.role_changes < 0.0 || g.leaving * 2.0 + g.role_changes > 50.0 {
            return bad("role changes must be a finite number >= 0 (and churn at most 50 per member)".into());
        }
        if self.apps_launch.0 > self.apps_launch.1 || self.app_status.between.0 > self.app_status.between.1 {
            return bad("spans must start before they end".into());
        }
        if self.traffic.limit == 0 || self.traffic.every_days < 1 {
            return bad("traffic needs a page limit of at least 1 and at least a day between reads".into());
        }
        Ok(())
    }

    /// How many apps the world has.
    pub fn app_count(&self) -> usize {
        (0..self.developers).map(|d| self.apps_of_developer(d)).sum()
    }

    pub(crate) fn apps_of_developer(&self, developer: usize) -> usize {
        if self.second_app_every > 0 && developer.is_multiple_of(self.second_app_every) {
            2
        } else {
            1
        }
    }
}

/// An instant as a date when it is midnight, in full otherwise.
fn day(t: Instant) -> String {
    let text = t.to_string();
    match text.strip_suffix("T00:00:00Z") {
        Some(date) => date.to_string(),
        None => text,
    }
}

fn span(f: &mut fmt::Formatter<'_>, (from, to): (Instant, Instant)) -> fmt::Result {
    if from == to {
        write!(f, "{}", day(from))
    } else {
        write!(f, "{}..{}", day(from), day(to))
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn names(set: FieldSet) -> String {
    set.iter().map(Field::short_name).collect::<Vec<_>>().join(",")
}

impl fmt::Display for WorldParams {
    /// One paragraph: every parameter and the seed, as printed beside a result.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.groups;
        let i = &self.installations;
        let s = &self.app_status;
        let t = &self.traffic;
        write!(f, "world seed {}, ", self.seed)?;
        span(f, (self.start, self.end))?;
        write!(
            f,
            ": {} members; {} groups sized by Zipf's law (exponent {}, largest {}, smallest {}), {}–{} admins, {}–{} posts, {} of members leave and as many join, {} role changes per member; ",
            self.members,
            g.count,
            g.exponent,
            g.largest,
            g.smallest,
            g.admins.0,
            g.admins.1,
            g.posts.0,
            g.posts.1,
            percent(g.leaving),
            g.role_changes
        )?;
        write!(f, "{} developers with {} apps launched ", self.developers, self.app_count())?;
        span(f, self.apps_launch)?;
        write!(f, ", {}–{} installations each", i.per_app.0, i.per_app.1)?;
        if let Some(days) = i.first_within_days {
            write!(f, " (the first within {days} days{})", if i.first_kept { ", kept" } else { "" })?;
        }
        write!(
            f,
            ", {} removed, {} of those made again; opt-in {}–{} per app, {} withdrawn; {} of apps suspended for {}–{} days and {} banned within ",
            percent(i.removed),
            percent(i.reinstalled),
            percent(self.opt_in.rate.0),
            percent(self.opt_in.rate.1),
            percent(self.opt_in.withdrawn),
            percent(s.suspended),
            s.suspension_days.0,
            s.suspension_days.1,
            percent(s.banned),
        )?;
        span(f, s.between)?;
        f.write_str("; policies ")?;
        for (n, (when, policy)) in self.policies.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} from {}", policy.name(), day(*when))?;
        }
        write!(
            f,
            "; every {} days each active app reads each group it is installed in: members ({}, {} a page, every page) while it still reads them, else the group ({}); the apps of {} developers read members to the end, the others stop within ",
            t.every_days,
            names(t.member_fields),
            t.limit,
            names(t.group_fields),
            t.keep_reading_developers
        )?;
        span(f, t.stop_reading_between)
    }
}
