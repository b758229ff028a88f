//! A seeded, realistic world and its history, shared by the benchmarks, the tests and the demo.
//!
//! - [`World::generate`] is a pure function of [`WorldParams`] (types only, no I/O): members;
//!   groups whose sizes follow Zipf's law, whose members join, leave and change role; developers
//!   and apps launched over the window, installed and removed by group admins, suspended,
//!   reinstated and banned; opt-ins at 3–15% per app, some withdrawn; the shipped policies
//!   activated in turn (the grandfathered one included); and traffic: every few days each
//!   active app reads each group it is installed in.
//! - [`Replay`] folds the events in memory: the facts at any instant, without a store.
//! - `Applier` (feature `apply`) plays the events through a `consentry_service::Service` with a
//!   `SimulatedClock`: every change through the platform's own rules, every read served from
//!   the store as it is at that instant, following the cursor page after page.
//!
//! `WorldParams` prints (`Display`) every parameter and the seed: print it with every figure.

#[cfg(feature = "apply")]
mod apply;
mod event;
mod generate;
mod params;
mod replay;

#[cfg(feature = "apply")]
pub use apply::{Applied, Applier, ApplyError, WAIVER_REASON};
pub use event::{Event, Read, StatusChange, Timed};
pub use generate::{AppPlan, World, CATEGORIES};
pub use params::{
    AppStatusParams, GroupParams, InstallationParams, OptInParams, ShippedPolicy, TrafficParams, WorldParams,
};
pub use replay::Replay;

/// Why no world could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    #[error("invalid world parameters: {0}")]
    Params(String),
    #[error(transparent)]
    Id(#[from] consentry_types::InvalidId),
}
