//! The decision engine: Cedar's answers memoized by (policy, exact facts presented).
//!
//! A memoized decision is a pure function of the compiled policy and the attributes Cedar
//! was shown, so it can never go stale: a write changes the facts presented, hence the key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use cedar_policy::Authorizer;
use consentry_types::Field;

use crate::compile::{CompiledPolicy, PolicyError};
use crate::request::{allowed, cedar_input, PageFacts, SubjectFacts};

/// The resource id presented for a member subject. Policies cannot name members, so the
/// real id is never needed to decide.
const SUBJECT_PLACEHOLDER: &str = "subject";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    policy: u64,
    page: PageFacts,
    field: Field,
    subject: SubjectFacts,
}

/// Decisions memoized across requests, bounded in size.
#[derive(Debug)]
pub struct DecisionCache {
    decisions: RwLock<HashMap<DecisionKey, bool>>,
    capacity: usize,
}

impl DecisionCache {
    pub fn with_capacity(capacity: usize) -> DecisionCache {
        DecisionCache { decisions: RwLock::new(HashMap::new()), capacity }
    }

    fn get(&self, key: &DecisionKey) -> Option<bool> {
        self.decisions.read().ok().and_then(|d| d.get(key).copied())
    }

    fn put(&self, key: DecisionKey, allow: bool) {
        if let Ok(mut decisions) = self.decisions.write() {
            if decisions.len() >= self.capacity {
                decisions.clear();
            }
            decisions.insert(key, allow);
        }
    }

    /// How many decisions are memoized now.
    pub fn len(&self) -> usize {
        self.decisions.read().map_or(0, |d| d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides fields with Cedar, memoizing each answer by the exact input Cedar saw.
#[derive(Debug)]
pub struct Engine {
    cache: DecisionCache,
    decisions: AtomicU64,
    cedar_calls: AtomicU64,
}

/// What an engine decided since it was made (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionStats {
    /// Field decisions asked for.
    pub decisions: u64,
    /// Of those, answered from memory (the page's or the engine's) without asking Cedar.
    pub memo_hits: u64,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::with_capacity(1 << 16)
    }

    /// An engine that memoizes at most `capacity` decisions (it forgets them all when full).
    pub fn with_capacity(capacity: usize) -> Engine {
        Engine {
            cache: DecisionCache::with_capacity(capacity.max(1)),
            decisions: AtomicU64::new(0),
            cedar_calls: AtomicU64::new(0),
        }
    }

    /// Decisions made and memo hits so far.
    pub fn stats(&self) -> DecisionStats {
        let decisions = self.decisions.load(Ordering::Relaxed);
        DecisionStats {
            decisions,
            memo_hits: decisions.saturating_sub(self.cedar_calls.load(Ordering::Relaxed)),
        }
    }

    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// A decider for one page: all its decisions share `page`.
    ///
    /// Cedar is shown `page` as the policy's analysis allows: a fact no rule can tell apart
    /// from a representative is shown as that representative (an id no rule names, an
    /// installation date within the same interval between the constants the rules compare it
    /// with), so that memoized decisions are shared across apps, groups and installations.
    pub fn page<'a>(&'a self, policy: &'a CompiledPolicy, page: PageFacts) -> PageDecider<'a> {
        let page = policy.presentation.present(page);
        PageDecider { engine: self, policy, page, local: HashMap::new(), asked: 0 }
    }

    fn decide(
        &self,
        policy: &CompiledPolicy,
        page: &PageFacts,
        field: Field,
        subject: SubjectFacts,
    ) -> Result<bool, PolicyError> {
        let subject = if field.has_member_subject() { subject } else { SubjectFacts::NONE };
        let key = DecisionKey { policy: policy.id, page: page.clone(), field, subject };
        if let Some(allow) = self.cache.get(&key) {
            return Ok(allow);
        }
        self.cedar_calls.fetch_add(1, Ordering::Relaxed);
        let (request, entities) = cedar_input(policy, page, field, subject, SUBJECT_PLACEHOLDER)?;
        let allow = allowed(&Authorizer::new().is_authorized(&request, &policy.policies, &entities))?;
        self.cache.put(key, allow);
        Ok(allow)
    }
}

/// Decides the (field, subject) pairs of one page; repeats within the page cost a small lookup.
pub struct PageDecider<'a> {
    engine: &'a Engine,
    policy: &'a CompiledPolicy,
    page: PageFacts,
    local: HashMap<(Field, SubjectFacts), bool>,
    /// Decisions asked of this page, added to the engine's count once, when it is dropped.
    asked: u64,
}

impl Drop for PageDecider<'_> {
    fn drop(&mut self) {
        self.engine.decisions.fetch_add(self.asked, Ordering::Relaxed);
    }
}

impl PageDecider<'_> {
    /// Whether the app may read `field` of a resource whose subject has these facts.
    /// Fields without a member subject ignore `subject`.
    pub fn allows(&mut self, field: Field, subject: SubjectFacts) -> Result<bool, PolicyError> {
        self.asked += 1;
        let subject = if field.has_member_subject() { subject } else { SubjectFacts::NONE };
        if let Some(allow) = self.local.get(&(field, subject)) {
            return Ok(*allow);
        }
        let allow = self.engine.decide(self.policy, &self.page, field, subject)?;
        self.local.insert((field, subject), allow);
        Ok(allow)
    }

    pub fn policy_version(&self) -> u32 {
        self.policy.version
    }
}
