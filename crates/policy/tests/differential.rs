//! Differential test: the memoizing engine decides exactly as `Authorizer::is_authorized`
//! on the same input, over random policies and random facts.

use std::sync::OnceLock;

use consentry_policy::{compile, naive_decide, Engine, PageFacts, SubjectFacts};
use consentry_types::{AppId, AppStatus, Field, GroupId, MemberId, Role};
use proptest::prelude::*;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::new)
}

const APPS: [&str; 3] = ["app-a", "app-b", "app-c"];
const GROUPS: [&str; 2] = ["g1", "g2"];
const CATEGORIES: [&str; 3] = ["social_media_management", "video_streaming", "analytics"];
const SINCE: [i64; 4] = [0, 1_522_799_999, 1_522_800_000, 1_600_000_000];

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["active", "suspended", "banned"])
            .prop_map(|s| format!("principal.status == \"{s}\"")),
        prop::sample::select(CATEGORIES.to_vec()).prop_map(|c| format!("principal.category == \"{c}\"")),
        Just("context.installed".to_string()),
        Just("!context.installed".to_string()),
        prop::sample::select(SINCE.to_vec()).prop_map(|n| format!("context.installed_since < {n}")),
        Just("context.subject_is_member".to_string()),
        prop::sample::select(vec!["admin", "member", "none"])
            .prop_map(|r| format!("context.subject_role == \"{r}\"")),
        Just("context.subject_consented_profile".to_string()),
        Just("!context.subject_consented_profile".to_string()),
        prop::sample::select(APPS.to_vec()).prop_map(|a| format!("principal == Consentry::App::\"{a}\"")),
        prop::sample::select(GROUPS.to_vec()).prop_map(|g| format!("resource == Consentry::Group::\"{g}\"")),
        Just("resource is Consentry::Member".to_string()),
    ]
}

fn action_scope() -> impl Strategy<Value = String> {
    let fields: Vec<&'static str> = Field::ALL.iter().map(|f| f.as_str()).collect();
    prop_oneof![
        Just("action".to_string()),
        prop::sample::select(fields).prop_map(|f| format!("action == Consentry::Action::\"{f}\"")),
        prop::sample::select(vec!["group_data", "post_data", "profile"])
            .prop_map(|g| format!("action in Consentry::Action::\"{g}\"")),
    ]
}

fn policy_text() -> impl Strategy<Value = String> {
    let one = (any::<bool>(), action_scope(), prop::collection::vec(atom(), 0..4)).prop_map(
        |(permit, scope, atoms)| {
            let effect = if permit { "permit" } else { "forbid" };
            let when =
                if atoms.is_empty() { String::new() } else { format!(" when {{ {} }}", atoms.join(" && ")) };
            format!("{effect} (principal, {scope}, resource){when};")
        },
    );
    prop::collection::vec(one, 1..4).prop_map(|p| p.join("\n"))
}

fn page_facts() -> impl Strategy<Value = PageFacts> {
    (
        prop::sample::select(APPS.to_vec()),
        prop::sample::select(vec![AppStatus::Active, AppStatus::Suspended, AppStatus::Banned]),
        prop::sample::select(CATEGORIES.to_vec()),
        prop::sample::select(GROUPS.to_vec()),
        any::<bool>(),
        prop::sample::select(SINCE.to_vec()),
    )
        .prop_map(|(app, app_status, category, group, installed, since)| PageFacts {
            app: AppId::parse(app).unwrap_or_else(|e| unreachable!("{e}")),
            app_status,
            app_category: category.to_string(),
            group: GroupId::parse(group).unwrap_or_else(|e| unreachable!("{e}")),
            installed,
            installed_since: since,
        })
}

fn decision_input() -> impl Strategy<Value = (PageFacts, Field, MemberId, SubjectFacts)> {
    (
        page_facts(),
        prop::sample::select(Field::ALL.to_vec()),
        prop::sample::select(vec!["m1", "m2", "subject", "m-999"]),
        any::<bool>(),
        prop::sample::select(vec![None, Some(Role::Member), Some(Role::Admin)]),
        any::<bool>(),
    )
        .prop_map(|(page, field, member, is_member, role, consented)| {
            let member = MemberId::parse(member).unwrap_or_else(|e| unreachable!("{e}"));
            (page, field, member, SubjectFacts { is_member, role, consented_profile: consented })
        })
}

/// At least 10,000 decisions on validated random policies, each compared with Cedar.
#[test]
fn engine_decides_as_cedar_does() {
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::Cell;
    let compared = Cell::new(0usize);
    let refused = Cell::new(0usize);
    let mut runner = TestRunner::new(Config { cases: 6_000, failure_persistence: None, ..Config::default() });
    let strategy = (policy_text(), prop::collection::vec(decision_input(), 1..6));
    let result = runner.run(&strategy, |(text, inputs)| {
        // Random text can fail strict validation (e.g. an impossible `resource ==` for a
        // field's resource type): then there is nothing to compare, but it is counted.
        let Ok(policy) = compile(1, &text) else {
            refused.set(refused.get() + 1);
            return Ok(());
        };
        for (page, field, member, subject) in inputs {
            let reference = naive_decide(&policy, &page, field, Some((&member, subject)));
            prop_assert!(reference.is_ok(), "{:?}", reference);
            let fast = engine().page(&policy, page.clone()).allows(field, subject);
            prop_assert_eq!(fast.ok(), reference.ok(), "{}\n{:?} {:?} {:?}", text, page, field, subject);
            compared.set(compared.get() + 1);
        }
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    assert!(
        compared.get() >= 10_000,
        "only {} decisions compared ({} policies refused)",
        compared.get(),
        refused.get()
    );
}

/// Every combination of facts under both shipped policies: the engine agrees with Cedar.
#[test]
fn shipped_policies_agree_exhaustively() {
    let texts = [
        include_str!("../../../policies/legacy-2017.cedar"),
        include_str!("../../../policies/groups-2018.cedar"),
    ];
    let member = MemberId::parse("m1").unwrap_or_else(|e| unreachable!("{e}"));
    let mut checked = 0;
    let mut permitted = 0;
    for (version, text) in texts.iter().enumerate() {
        let policy = compile(version as u32 + 1, text).unwrap_or_else(|e| unreachable!("{e}"));
        for status in [AppStatus::Active, AppStatus::Suspended, AppStatus::Banned] {
            for installed in [false, true] {
                let page = PageFacts {
                    app: AppId::parse("app-a").unwrap_or_else(|e| unreachable!("{e}")),
                    app_status: status,
                    app_category: "video_streaming".into(),
                    group: GroupId::parse("g1").unwrap_or_else(|e| unreachable!("{e}")),
                    installed,
                    installed_since: if installed { 1_500_000_000 } else { 0 },
                };
                let mut decider = engine().page(&policy, page.clone());
                for field in Field::ALL {
                    for is_member in [false, true] {
                        for role in [None, Some(Role::Member), Some(Role::Admin)] {
                            for consented_profile in [false, true] {
                                let subject = SubjectFacts { is_member, role, consented_profile };
                                let reference =
                                    naive_decide(&policy, &page, field, Some((&member, subject))).ok();
                                let fast = decider.allows(field, subject).ok();
                                assert_eq!(fast, reference, "{field} {page:?} {subject:?}");
                                checked += 1;
                                permitted += usize::from(fast == Some(true));
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 3 * 2 * 7 * 2 * 3 * 2);
    // Both allow and deny occur, so the comparison is not vacuous.
    assert!(permitted > 0 && permitted < checked, "{permitted} of {checked}");
}

/// Issue 8: `context["installed\u{5f}since"]` is `context.installed_since` to Cedar.
#[test]
fn an_escaped_attribute_name_is_read_like_the_plain_one() {
    let text = include_str!("../../../policies/groups-2018-grandfathered.cedar")
        .replace("context.installed_since", r#"context["installed\u{5f}since"]"#);
    let policy = compile(1, &text).unwrap_or_else(|e| unreachable!("{e}"));
    let member = MemberId::parse("m1").unwrap_or_else(|e| unreachable!("{e}"));
    let subject = SubjectFacts { is_member: true, role: Some(Role::Member), consented_profile: false };
    for since in [1_500_000_000, 1_522_799_999, 1_522_800_000, 1_525_132_800] {
        let page = PageFacts {
            app: AppId::parse("app-a").unwrap_or_else(|e| unreachable!("{e}")),
            app_status: AppStatus::Active,
            app_category: "analytics".into(),
            group: GroupId::parse("g1").unwrap_or_else(|e| unreachable!("{e}")),
            installed: true,
            installed_since: since,
        };
        let cedar = naive_decide(&policy, &page, Field::MemberName, Some((&member, subject))).ok();
        assert_eq!(cedar, Some(since < 1_522_800_000), "{since}");
        let served = Engine::new().page(&policy, page.clone()).allows(Field::MemberName, subject).ok();
        assert_eq!(
            served, cedar,
            "installed since {since}: the engine says {served:?}, Cedar says {cedar:?}"
        );
    }
}
