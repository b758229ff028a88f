//! Proofs in the privacy review over HTTP: kept with the version, deciding the approval, and
//! waived only by an independent privacy officer with a reason.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use consentry_api::Proofs;
use consentry_prove::{Invariant, Prover, SolverCommand};
use serde_json::json;

use super::{is_problem, server_key, Harness, GROUPS_2018};

const GRANDFATHERED: &str = include_str!("../../../../policies/groups-2018-grandfathered.cedar");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_solver_proofs_are_a_503_and_approval_needs_an_independent_waiver() {
    let h = Harness::new();
    h.world().await;
    assert_eq!(h.policy(GRANDFATHERED).await.status, StatusCode::CREATED);
    let officer = h.officer.clone();
    let auditor = server_key(&h.service, "aud", consentry_types::OperatorRole::Auditor);
    // Asking for proofs: 401 without a key, 403 for an auditor, 503 (no solver) otherwise.
    let uri = "/platform/v1/policies/2/proofs";
    assert_eq!(h.call(Method::POST, uri, None, Some(json!({}))).await.status, StatusCode::UNAUTHORIZED);
    assert!(is_problem(
        &h.call(Method::POST, uri, Some(&auditor), Some(json!({}))).await,
        StatusCode::FORBIDDEN
    ));
    let unavailable = h.op(Method::POST, uri, Some(json!({}))).await;
    assert!(is_problem(&unavailable, StatusCode::SERVICE_UNAVAILABLE), "{}", unavailable.body);
    assert!(unavailable.body["detail"].as_str().is_some_and(|d| d.contains("install cvc5")));
    assert!(is_problem(&h.op(Method::POST, uri, Some(json!({"bogus": 1}))).await, StatusCode::BAD_REQUEST));
    // Nothing kept: the standing is missing and the approval is refused.
    let listed = h.call(Method::GET, uri, Some(&auditor), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["standing"]["standing"], "missing");
    let refused = h.call(Method::POST, "/platform/v1/policies/2/approve", Some(&officer), None).await;
    assert!(is_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY), "{}", refused.body);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("has no proofs")), "{}", refused.body);
    // Waivers: only privacy officers, with a reason of substance, outside the author's lineage.
    let waivers = "/platform/v1/policies/2/waivers";
    let reason = json!({"reason": "reviewed by hand against the 2018 rules"});
    assert_eq!(
        h.call(Method::POST, waivers, None, Some(reason.clone())).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(is_problem(&h.op(Method::POST, waivers, Some(reason.clone())).await, StatusCode::FORBIDDEN));
    assert!(is_problem(
        &h.call(Method::POST, waivers, Some(&officer), Some(json!({"reason": "ok"}))).await,
        StatusCode::BAD_REQUEST
    ));
    let waived = h.call(Method::POST, waivers, Some(&officer), Some(reason)).await;
    assert_eq!(waived.status, StatusCode::CREATED, "{}", waived.body);
    // The version list shows the waiver with its reason; the approval goes through and says so.
    let versions = h.op(Method::GET, "/platform/v1/policies", None).await;
    assert_eq!(versions.body[1]["proofs"]["standing"]["standing"], "waived", "{}", versions.body);
    assert_eq!(
        versions.body[1]["proofs"]["standing"]["waiver"]["reason"],
        "reviewed by hand against the 2018 rules"
    );
    let approved = h.call(Method::POST, "/platform/v1/policies/2/approve", Some(&officer), None).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["proofs"]["standing"]["standing"], "waived");
    assert_eq!(
        h.call(
            Method::POST,
            "/platform/v1/policies/99/waivers",
            Some(&officer),
            Some(json!({"reason": "no such version"}))
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

/// With a solver (CONSENTRY_SOLVER, which CI sets): the grandfathered draft's proofs fail with
/// a witness and block its approval; the intended rules are proven when approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_proofs_block_the_approval_and_passing_ones_are_run_by_it() {
    let Ok(choice) = std::env::var("CONSENTRY_SOLVER") else {
        eprintln!("CONSENTRY_SOLVER is not set: skipping (CI sets it)");
        return;
    };
    let solver = SolverCommand::find(Some(&choice)).unwrap_or_else(|e| unreachable!("{e}"));
    let h = Harness::new_with(|state| {
        state.with_proofs(Proofs {
            prover: Prover::new(solver, Duration::from_secs(20)),
            invariants: Invariant::shipped(),
        })
    });
    h.world().await;
    let officer = h.officer.clone();
    assert_eq!(h.policy(GRANDFATHERED).await.status, StatusCode::CREATED);
    let proved = h.op(Method::POST, "/platform/v1/policies/2/proofs", Some(json!({}))).await;
    assert_eq!(proved.status, StatusCode::CREATED, "{}", proved.body);
    assert_eq!(proved.body["passed"], false);
    let consent = &proved.body["invariants"][0];
    assert_eq!(consent["name"], "consent-2018");
    let name =
        consent["fields"].as_array().and_then(|f| f.iter().find(|f| f["field"] == "member.name")).cloned();
    let name = name.unwrap_or_default();
    assert_eq!(name["outcome"], "violated", "{}", proved.body);
    assert_eq!(name["witness"]["facts"]["subject"]["consented_profile"], false);
    assert!(name["witness"]["situation"].as_str().is_some_and(|s| s.contains("did not consent")));
    // Against the active groups-2018 it newly allows profiles without consent, newly denies nothing.
    assert_eq!(proved.body["comparison"]["against"], "version 1 (active)");
    assert!(proved.body["comparison"]["newly_allows"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(proved.body["comparison"]["newly_denies"], json!([]));
    let refused = h.call(Method::POST, "/platform/v1/policies/2/approve", Some(&officer), None).await;
    assert!(is_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY), "{}", refused.body);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("did not pass")));
    // The intended rules, submitted again, are proven by the approval itself.
    assert_eq!(h.policy(GROUPS_2018).await.status, StatusCode::CREATED);
    let approved = h.call(Method::POST, "/platform/v1/policies/3/approve", Some(&officer), None).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["proofs"]["standing"]["standing"], "passed");
    assert_eq!(approved.body["proofs"]["latest"]["review"]["comparison"]["newly_allows"], json!([]));
    let kept = h.op(Method::GET, "/platform/v1/policies/2/proofs", None).await;
    assert_eq!(kept.body["proofs"].as_array().map(Vec::len), Some(1));
    assert_eq!(kept.body["standing"]["standing"], "failed");
}
