//! Which kinds of member (role, consent) each app's members pages in each group showed last,
//! so that the next page reads their profiles with its snapshot, in the same round trip
//! (`consentry_store::ProfileKinds`).
//!
//! Only a guess: what a page shows is decided afresh on every request from the facts its
//! snapshot read, never from this. A stale guess (the policy, or the app's facts, changed
//! since) costs one profile read too many, or one read by id afterwards.

use std::collections::HashMap;
use std::sync::Mutex;

use consentry_store::ProfileKinds;
use consentry_types::{AppId, FieldSet, GroupId};

/// Pages remembered at most; past that all are forgotten (a miss costs one more read).
const CAPACITY: usize = 100_000;

/// (app, group, fields asked for) → the kinds of member such a page showed last.
#[derive(Default)]
pub(crate) struct ShownKinds {
    last: Mutex<HashMap<(AppId, GroupId, FieldSet), ProfileKinds>>,
}

impl ShownKinds {
    /// The kinds a page of `app` about `group` asking for `fields` showed last (none if never).
    pub(crate) fn expected(&self, app: &AppId, group: &GroupId, fields: FieldSet) -> ProfileKinds {
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.get(&(app.clone(), group.clone(), fields)).cloned().unwrap_or_default()
    }

    /// Remembers the kinds such a page shows now.
    pub(crate) fn remember(&self, app: &AppId, group: &GroupId, fields: FieldSet, kinds: ProfileKinds) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (app.clone(), group.clone(), fields);
        if last.get(&key) == Some(&kinds) {
            return;
        }
        if last.len() >= CAPACITY {
            last.clear();
        }
        last.insert(key, kinds);
    }
}
