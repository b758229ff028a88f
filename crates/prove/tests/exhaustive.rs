//! Proofs agree with exhaustive evaluation: for policies using every construct of the
//! expression language, "proven" means no situation in the finite fact space breaks the
//! invariant, and a situation that breaks it is always found by the solver.
#![allow(clippy::unwrap_used, clippy::panic)] // a failed step is a failed test

mod support;

use std::collections::BTreeSet;

use consentry_policy::{compile, naive_decide, CompiledPolicy, PageFacts, SubjectFacts};
use consentry_prove::{Invariant, Outcome, PolicyText};
use consentry_types::{AppId, AppStatus, Field, GroupId, MemberId, Role};

/// Drafts written with every construct the differential test generates.
const DRAFTS: [&str; 10] = [
    // escaped and quoted attribute names, `<`
    r#"permit (principal, action in Consentry::Action::"profile", resource)
       when { principal["status"] == "active" && context["installed\u{5f}since"] < 1522800000 };"#,
    // `has`, `like`, `||`, `!`
    r#"permit (principal, action, resource)
       when { context has installed && context.installed && (principal.category like "social*" || !context.subject_consented_profile) };"#,
    // `unless`, `if … then … else`, `<=`, `>=`, `!=`
    r#"permit (principal, action in [Consentry::Action::"member.name", Consentry::Action::"group.name"], resource)
       when { if context.installed_since <= 1500000000 then context.subject_role != "none" else context.installed_since >= 1600000000 }
       unless { principal.status == "banned" };"#,
    // set literals with contains / containsAny / containsAll
    r#"permit (principal, action, resource)
       when { ["member", "admin"].contains(context.subject_role) && [principal.status, "x"].containsAny(["active"]) && ["active", "suspended"].containsAll([principal.status]) };"#,
    // several permits and forbids, action groups with `in`
    r#"permit (principal, action in Consentry::Action::"group_data", resource) when { context.installed };
       permit (principal, action in Consentry::Action::"profile", resource) when { context.subject_consented_profile };
       forbid (principal, action, resource) when { principal.status == "suspended" };
       forbid (principal, action == Consentry::Action::"member.picture", resource) unless { context.subject_role == "admin" };"#,
    // entity literals for apps and groups, `is`
    r#"permit (principal == Consentry::App::"app-a", action, resource) when { principal.status == "active" };
       permit (principal, action, resource is Consentry::Group) when { resource == Consentry::Group::"g1" && context.installed };"#,
    // Long equality and `>` at the boundary
    r#"permit (principal, action in Consentry::Action::"profile", resource)
       when { principal.status == "active" && context.installed && (context.installed_since == 1522800000 || context.installed_since > 1700000000) };"#,
    // the intended 2018 rules written differently: consent required for every profile field
    r#"permit (principal, action, resource)
       when { principal.status == "active" && context.installed && (resource is Consentry::Group || context.subject_consented_profile) };"#,
    // a category that matters
    r#"permit (principal, action, resource)
       when { principal.status == "active" && context.installed && principal.category == "analytics" };"#,
    // a draft that allows everything
    r#"permit (principal, action, resource);"#,
];

/// Every integer written in the texts, with its neighbours, and a few fixed points.
fn instants(texts: &[&str]) -> BTreeSet<i64> {
    let mut points = BTreeSet::from([0, 1, 1_000_000_000, 4_000_000_000]);
    for text in texts {
        for word in text.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()) {
            if let Ok(n) = word.parse::<i64>() {
                points.extend([n.saturating_sub(1), n, n.saturating_add(1)]);
            }
        }
    }
    points.into_iter().filter(|n| *n >= 0).collect()
}

/// Every situation in the finite fact space consentry can present, for one field.
fn situations(field: Field, texts: &[&str]) -> Vec<(PageFacts, SubjectFacts)> {
    let mut out = Vec::new();
    let subjects: Vec<SubjectFacts> = if field.has_member_subject() {
        let mut s = Vec::new();
        for (is_member, role) in [(true, Some(Role::Member)), (true, Some(Role::Admin)), (false, None)] {
            for consented_profile in [false, true] {
                s.push(SubjectFacts { is_member, role, consented_profile });
            }
        }
        s
    } else {
        vec![SubjectFacts::NONE]
    };
    let since = instants(texts);
    for app in ["app-a", "app-b"] {
        for group in ["g1", "g2"] {
            for status in [AppStatus::Active, AppStatus::Suspended, AppStatus::Banned] {
                for category in ["analytics", "social_media_management", "other"] {
                    for installed in [false, true] {
                        let points: Vec<i64> =
                            if installed { since.iter().copied().collect() } else { vec![0] };
                        for installed_since in points {
                            let page = PageFacts {
                                app: AppId::parse(app).unwrap(),
                                app_status: status,
                                app_category: category.to_string(),
                                group: GroupId::parse(group).unwrap(),
                                installed,
                                installed_since,
                            };
                            for subject in &subjects {
                                out.push((page.clone(), *subject));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn allows(policy: &CompiledPolicy, field: Field, page: &PageFacts, subject: SubjectFacts) -> bool {
    let member = MemberId::parse("m1").unwrap();
    naive_decide(policy, page, field, Some((&member, subject))).unwrap()
}

#[test]
fn proofs_agree_with_exhaustive_evaluation() {
    let Some(prover) = support::prover() else { return };
    let invariants = Invariant::shipped();
    let mut checked = 0usize;
    let mut violated = 0usize;
    for (index, draft) in DRAFTS.iter().enumerate() {
        let draft_policy = compile(1, draft).unwrap_or_else(|e| panic!("draft {index}: {e}"));
        let review = prover
            .review(&PolicyText { label: format!("draft {index}"), text: draft }, &invariants, None)
            .unwrap_or_else(|e| panic!("draft {index}: {e}"));
        for (invariant, report) in invariants.iter().zip(&review.invariants) {
            let invariant_policy = compile(2, &invariant.text).unwrap();
            for outcome in &report.fields {
                let field = outcome.field;
                let breaks =
                    situations(field, &[draft, &invariant.text]).into_iter().find(|(page, subject)| {
                        allows(&draft_policy, field, page, *subject)
                            && !allows(&invariant_policy, field, page, *subject)
                    });
                match (&outcome.outcome, &breaks) {
                    (Outcome::Proven, None) => {}
                    (Outcome::Violated(witness), _) => {
                        assert!(allows(&draft_policy, field, &witness.page, witness.subject), "draft {index} {field}");
                        assert!(!allows(&invariant_policy, field, &witness.page, witness.subject), "draft {index} {field}");
                        violated += 1;
                    }
                    (other, found) => panic!(
                        "draft {index} against {}: {field}: the prover says {other:?}, exhaustive evaluation finds {found:?}",
                        report.name
                    ),
                }
                checked += 1;
            }
        }
    }
    println!(
        "{checked} (draft, invariant, field) proofs agree with exhaustive evaluation; {violated} violated"
    );
    assert_eq!(checked, DRAFTS.len() * invariants.len() * Field::ALL.len());
    assert!(violated > 0 && violated < checked, "{violated} of {checked}: both outcomes occur");
}
