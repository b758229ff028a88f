//! The facts presented to Cedar for one decision, and the plain per-field Cedar call.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    EvaluationError, Request, Response, RestrictedExpression,
};
use consentry_types::{AppId, AppStatus, Field, GroupId, MemberId, Role};

use crate::compile::{CompiledPolicy, PolicyError};

/// Facts shared by every decision of one page: who asks, about which group, installed or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageFacts {
    pub app: AppId,
    pub app_status: AppStatus,
    pub app_category: String,
    pub group: GroupId,
    pub installed: bool,
    /// Seconds since the epoch when the current installation began; 0 when not installed.
    pub installed_since: i64,
}

/// The facts of the member a field belongs to (the subject), as Cedar sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectFacts {
    pub is_member: bool,
    pub role: Option<Role>,
    pub consented_profile: bool,
}

impl SubjectFacts {
    /// What Cedar is told for fields that have no member subject.
    pub const NONE: SubjectFacts = SubjectFacts { is_member: false, role: None, consented_profile: false };
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let type_name =
        EntityTypeName::from_str(type_name).map_err(|e| PolicyError::Evaluation(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(type_name, EntityId::new(id)))
}

fn evaluation(error: impl std::fmt::Display) -> PolicyError {
    PolicyError::Evaluation(error.to_string())
}

/// Builds the Cedar request and entities for one field decision.
///
/// `subject_uid` is the member id presented as the resource of member fields. The engine
/// presents a fixed placeholder; [`naive_decide`] presents the real id. Policies may not
/// name members (see `compile`), so both give the same decision.
pub(crate) fn cedar_input(
    policy: &CompiledPolicy,
    page: &PageFacts,
    field: Field,
    subject: SubjectFacts,
    subject_uid: &str,
) -> Result<(Request, Entities), PolicyError> {
    let schema = policy.schema()?;
    let principal = uid("Consentry::App", page.app.as_str())?;
    let app = Entity::new(
        principal.clone(),
        HashMap::from([
            ("status".to_string(), RestrictedExpression::new_string(page.app_status.as_str().to_string())),
            ("category".to_string(), RestrictedExpression::new_string(page.app_category.clone())),
        ]),
        HashSet::new(),
    )
    .map_err(evaluation)?;
    let resource = if field.has_member_subject() {
        uid("Consentry::Member", subject_uid)?
    } else {
        uid("Consentry::Group", page.group.as_str())?
    };
    let resource_entity = Entity::new_no_attrs(resource.clone(), HashSet::new());
    // With the schema, Cedar checks the entities conform and adds the action hierarchy.
    let entities = Entities::from_entities([app, resource_entity], Some(schema)).map_err(evaluation)?;
    let subject = if field.has_member_subject() { subject } else { SubjectFacts::NONE };
    let context = Context::from_pairs([
        ("installed".to_string(), RestrictedExpression::new_bool(page.installed)),
        ("installed_since".to_string(), RestrictedExpression::new_long(page.installed_since)),
        ("subject_is_member".to_string(), RestrictedExpression::new_bool(subject.is_member)),
        (
            "subject_role".to_string(),
            RestrictedExpression::new_string(subject.role.map_or("none", Role::as_str).to_string()),
        ),
        ("subject_consented_profile".to_string(), RestrictedExpression::new_bool(subject.consented_profile)),
    ])
    .map_err(evaluation)?;
    let action = uid("Consentry::Action", field.as_str())?;
    let request = Request::new(principal, action, resource, context, Some(schema)).map_err(evaluation)?;
    Ok((request, entities))
}

/// Decides one field the plain way: build entities, call `Authorizer::is_authorized`.
///
/// This is the reference the engine is tested and benchmarked against; serving uses [`crate::Engine`].
pub fn naive_decide(
    policy: &CompiledPolicy,
    page: &PageFacts,
    field: Field,
    subject: Option<(&MemberId, SubjectFacts)>,
) -> Result<bool, PolicyError> {
    let (subject_uid, facts) = match subject {
        Some((member, facts)) => (member.as_str(), facts),
        None => ("", SubjectFacts::NONE),
    };
    let (request, entities) = cedar_input(policy, page, field, facts, subject_uid)?;
    allowed(&Authorizer::new().is_authorized(&request, &policy.policies, &entities))
}

/// Cedar's decision, unless a rule could not be evaluated for lack of stack: then the
/// decision would depend on the thread that asked, so it is an error (and nothing is
/// disclosed). The nesting bounds of `compile` keep this from happening on any ordinary thread.
pub(crate) fn allowed(response: &Response) -> Result<bool, PolicyError> {
    let exhausted = response.diagnostics().errors().any(|error| match error {
        AuthorizationError::PolicyEvaluationError(e) => {
            matches!(e.inner(), EvaluationError::RecursionLimit(_))
        }
    });
    if exhausted {
        return Err(PolicyError::Evaluation("a rule is nested too deeply to evaluate on this thread".into()));
    }
    Ok(response.decision() == Decision::Allow)
}
