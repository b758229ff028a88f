//! The facts a proof ranges over, and witnesses: the solver's counterexamples turned into the
//! facts consentry presents, replayed through Cedar and the engine, and told as a person reads them.

use cedar_policy::{Context, EntityUid, EvalResult};
use cedar_policy_symcc::Env;
use consentry_policy::{PageFacts, SubjectFacts};
use consentry_types::{AppId, AppStatus, Field, GroupId, Instant, MemberId, Role};

/// Limits a policy set to the facts consentry can present: statuses and roles it knows, a
/// subject who is a member exactly when it has a role, an installation instant only when
/// installed, and no subject facts for fields that are the group's. Added to the left side of
/// every comparison so that a counterexample is always a situation that can occur. Written
/// without sets, which not every solver version reads.
pub(crate) const REAL_FACTS: &str = r#"
@id("consentry: only facts consentry can present")
forbid (principal, action, resource)
unless {
  (principal.status == "active" || principal.status == "suspended" || principal.status == "banned") &&
  (context.subject_role == "member" || context.subject_role == "admin" || context.subject_role == "none") &&
  context.subject_is_member == (context.subject_role != "none") &&
  context.installed_since >= 0 &&
  (context.installed || context.installed_since == 0) &&
  (resource is Consentry::Member ||
    (!context.subject_is_member && context.subject_role == "none" && !context.subject_consented_profile))
};
"#;

/// One situation: a field asked by an app in a group about a subject, with every fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub field: Field,
    pub page: PageFacts,
    /// For fields whose subject is a member; [`SubjectFacts::NONE`] otherwise.
    pub subject: SubjectFacts,
    /// The member presented as the resource (policies cannot name members, so any id does).
    pub member: MemberId,
}

fn long(value: Option<EvalResult>) -> Option<i64> {
    match value? {
        EvalResult::Long(n) => Some(n),
        _ => None,
    }
}

fn boolean(value: Option<EvalResult>) -> Option<bool> {
    match value? {
        EvalResult::Bool(b) => Some(b),
        _ => None,
    }
}

fn string(value: Option<EvalResult>) -> Option<String> {
    match value? {
        EvalResult::String(s) => Some(s),
        _ => None,
    }
}

fn id_or<T>(uid: Option<&EntityUid>, parse: impl Fn(&str) -> Option<T>, fallback: &str) -> Option<T> {
    uid.and_then(|u| parse(u.id().unescaped())).or_else(|| parse(fallback))
}

impl Witness {
    /// The witness a counterexample describes, or `None` when it lies outside the facts
    /// consentry can present (only possible for queries not limited by [`REAL_FACTS`]).
    pub(crate) fn from_env(env: &Env) -> Option<Witness> {
        let request = &env.request;
        let field = Field::parse(request.action()?.id().unescaped()).ok()?;
        let context: &Context = request.context()?;
        let principal = request.principal();
        let app_entity = principal.and_then(|p| env.entities.get(p));
        let attr = |name: &str| app_entity.and_then(|e| e.attr(name)).and_then(Result::ok);
        let status = AppStatus::parse(&string(attr("status"))?)?;
        let category = string(attr("category"))?;
        let role = match string(context.get("subject_role"))?.as_str() {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "none" => None,
            _ => return None,
        };
        let resource = request.resource();
        let group_uid = (!field.has_member_subject()).then_some(resource).flatten();
        let member_uid = field.has_member_subject().then_some(resource).flatten();
        let page = PageFacts {
            app: id_or(principal, |t| AppId::parse(t).ok(), "witness-app")?,
            app_status: status,
            app_category: category,
            group: id_or(group_uid, |t| GroupId::parse(t).ok(), "witness-group")?,
            installed: boolean(context.get("installed"))?,
            installed_since: long(context.get("installed_since"))?,
        };
        let subject = if field.has_member_subject() {
            SubjectFacts {
                is_member: boolean(context.get("subject_is_member"))?,
                role,
                consented_profile: boolean(context.get("subject_consented_profile"))?,
            }
        } else {
            SubjectFacts::NONE
        };
        let member = id_or(member_uid, |t| MemberId::parse(t).ok(), "witness-member")?;
        Some(Witness { field, page, subject, member })
    }

    /// The situation as a person reads it, e.g. "app active, installed since 2018-01-15,
    /// subject a member who did not consent". `with_category` adds the app's category.
    pub fn situation(&self, with_category: bool) -> String {
        let page = &self.page;
        let mut parts = vec![format!("app {}", page.app_status.as_str())];
        if with_category {
            parts.push(format!("category {:?}", page.app_category));
        }
        if page.installed {
            let since = Instant::from_secs(page.installed_since);
            parts.push(format!("installed since {}", since));
        } else {
            parts.push("not installed".to_string());
        }
        if self.field.has_member_subject() {
            let who = match self.subject.role {
                Some(Role::Admin) => "subject an admin of the group",
                Some(Role::Member) => "subject a member",
                None => "subject not in the group",
            };
            let consent =
                if self.subject.consented_profile { "who consented" } else { "who did not consent" };
            parts.push(format!("{who} {consent}"));
        }
        parts.join(", ")
    }

    /// The facts that define this witness's class when differences are listed: everything
    /// but the installation instant and the category.
    pub(crate) fn class_condition(&self) -> String {
        let page = &self.page;
        let mut condition = format!(
            "principal.status == \"{}\" && context.installed == {}",
            page.app_status.as_str(),
            page.installed
        );
        if self.field.has_member_subject() {
            condition.push_str(&format!(
                " && context.subject_is_member == {} && context.subject_role == \"{}\" && context.subject_consented_profile == {}",
                self.subject.is_member,
                self.subject.role.map_or("none", Role::as_str),
                self.subject.consented_profile
            ));
        }
        condition
    }
}
