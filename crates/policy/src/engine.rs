//! The decision engine: Cedar's answers memoized by (policy, exact facts presented).
//!
//! A memoized decision is a pure function of the compiled policy and the attributes Cedar
//! was shown, so it can never go stale: a write changes the facts presented, hence the key.

use std::collections::HashMap;
use std::sync::RwLock;

use cedar_policy::{Authorizer, Decision};
use consentry_types::Field;

use crate::compile::{CompiledPolicy, PolicyError};
use crate::request::{cedar_input, PageFacts, SubjectFacts};

/// The resource id presented for a member subject. Policies cannot name members, so the
/// real id is never needed to decide.
const SUBJECT_PLACEHOLDER: &str = "subject";

fn placeholder_app() -> consentry_types::AppId {
    consentry_types::AppId::parse("app").unwrap_or_else(|_| unreachable!("a valid id"))
}

fn placeholder_group() -> consentry_types::GroupId {
    consentry_types::GroupId::parse("group").unwrap_or_else(|_| unreachable!("a valid id"))
}

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
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine { cache: DecisionCache::with_capacity(1 << 16) }
    }

    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// A decider for one page: all its decisions share `page`.
    pub fn page<'a>(&'a self, policy: &'a CompiledPolicy, mut page: PageFacts) -> PageDecider<'a> {
        // Identities no rule names cannot change a decision: present placeholders, so that
        // memoized decisions are shared across apps and groups.
        if !policy.names_apps {
            page.app = placeholder_app();
        }
        if !policy.names_groups {
            page.group = placeholder_group();
        }
        if !policy.reads_installed_since {
            page.installed_since = 0;
        }
        if !policy.reads_category {
            page.app_category.clear();
        }
        PageDecider { engine: self, policy, page, local: HashMap::new() }
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
        let (request, entities) = cedar_input(policy, page, field, subject, SUBJECT_PLACEHOLDER)?;
        let allow = Authorizer::new().is_authorized(&request, &policy.policies, &entities).decision()
            == Decision::Allow;
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
}

impl PageDecider<'_> {
    /// Whether the app may read `field` of a resource whose subject has these facts.
    /// Fields without a member subject ignore `subject`.
    pub fn allows(&mut self, field: Field, subject: SubjectFacts) -> Result<bool, PolicyError> {
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
