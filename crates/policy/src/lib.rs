//! Cedar policies for consentry and the engine that decides every (field, subject) of a page.
//!
//! This crate does no I/O: it takes policy text and facts, and returns decisions.

mod compile;
mod engine;
mod nesting;
mod presentation;
mod request;

pub use compile::{compile, schema, CompiledPolicy, PolicyDiagnostic, PolicyError};
pub use engine::{DecisionCache, DecisionStats, Engine};
pub use nesting::{MAX_BRACKETS, MAX_DEPTH};
pub use presentation::Presentation;
pub use request::{naive_decide, PageFacts, SubjectFacts};
