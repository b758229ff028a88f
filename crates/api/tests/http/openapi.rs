//! The OpenAPI document against what the server does: the checker every HTTP test goes
//! through refuses what the document does not declare, and the document itself names only
//! what it defines and declares errors as problem+json.

use axum::routing::put;

use super::conformance::{self, document};
use super::openapi_check::Exchange;
use super::*;

fn exchange<'a>(
    method: &'a str,
    path: &'a str,
    status: u16,
    content_type: &'a str,
    body: &'a str,
) -> Exchange<'a> {
    let writes_a_group = method == "PUT";
    Exchange {
        method,
        path,
        query: None,
        request_content_type: writes_a_group.then_some("application/json"),
        request_body: if writes_a_group { br#"{"name":"G"}"# } else { b"" },
        status,
        content_type: Some(content_type).filter(|c| !c.is_empty()),
        headers: vec!["www-authenticate".into(), "retry-after".into()],
        body: body.as_bytes(),
    }
}

const PROBLEM_401: &str =
    r#"{"type":"urn:consentry:problem:unauthenticated","title":"Unauthorized","status":401,"detail":"no"}"#;

#[test]
fn the_checker_refuses_what_the_document_does_not_declare() {
    let doc = document();
    let accepted = |e: &Exchange<'_>| doc.check(e).map(|_| ()).map_err(|e| e.to_string());
    // What the document declares passes...
    assert_eq!(accepted(&exchange("PUT", "/platform/v1/groups/g", 204, "", "")), Ok(()));
    assert_eq!(
        accepted(&exchange("GET", "/v1/groups/g", 401, "application/problem+json", PROBLEM_401)),
        Ok(())
    );
    assert_eq!(
        accepted(&exchange("GET", "/v1/groups/g", 200, "application/json", r#"{"id":"g","member_count":3}"#)),
        Ok(())
    );
    let mut wrong_method = exchange("DELETE", "/v1/groups/g", 405, "application/problem+json", "");
    let problem_405 = r#"{"type":"urn:consentry:problem:method-not-allowed","title":"Method Not Allowed","status":405,"detail":"no"}"#;
    wrong_method.body = problem_405.as_bytes();
    assert_eq!(accepted(&wrong_method), Ok(()));

    // ...and each of these is refused.
    let refused = [
        ("an undeclared status", exchange("PUT", "/platform/v1/groups/g", 200, "", "")),
        ("a body where none is declared", exchange("PUT", "/platform/v1/groups/g", 204, "text/plain", "ok")),
        (
            "problem+json declared, JSON served",
            exchange("GET", "/v1/groups/g", 401, "application/json", PROBLEM_401),
        ),
        (
            "a problem whose status differs",
            exchange("GET", "/v1/groups/g", 404, "application/problem+json", PROBLEM_401),
        ),
        (
            "a required property missing",
            exchange("GET", "/v1/groups/g", 200, "application/json", r#"{"name":"x"}"#),
        ),
        (
            "a property the document does not name",
            exchange("GET", "/v1/groups/g", 200, "application/json", r#"{"id":"g","secret":1}"#),
        ),
        (
            "a property of the wrong type",
            exchange("GET", "/v1/groups/g", 200, "application/json", r#"{"id":"g","member_count":"3"}"#),
        ),
        (
            "a negative count",
            exchange("GET", "/v1/groups/g", 200, "application/json", r#"{"id":"g","member_count":-1}"#),
        ),
        ("a body that is not JSON", exchange("GET", "/v1/groups/g", 200, "application/json", "{")),
        ("an unknown route answered 200", exchange("GET", "/v1/nowhere", 200, "text/plain", "ok")),
        ("an unknown route answered in text", exchange("GET", "/v1/nowhere", 404, "text/plain", "not found")),
        (
            "a wrong method answered 404",
            exchange("DELETE", "/v1/groups/g", 404, "application/problem+json", PROBLEM_401),
        ),
    ];
    for (what, e) in &refused {
        assert!(accepted(e).is_err(), "{what} passed the checker");
    }
    // A declared header must be there.
    let mut without_retry = exchange("GET", "/platform/v1/policies", 429, "application/problem+json", "");
    let problem_429 = r#"{"type":"urn:consentry:problem:too-many-attempts","title":"Too Many Requests","status":429,"detail":"no"}"#;
    without_retry.body = problem_429.as_bytes();
    assert_eq!(accepted(&without_retry), Ok(()));
    without_retry.headers = vec![];
    assert!(accepted(&without_retry).is_err(), "a 429 without Retry-After passed");

    // What a client sent, when the server accepted it, must be what the document allows.
    let posts = r#"{"data":[],"paging":{}}"#;
    let mut page = exchange("GET", "/v1/groups/g/posts", 200, "application/json", posts);
    for (query, fine) in [
        ("limit=5&after=abc", true),
        ("colour=red", false),
        ("limit=abc", false),
        ("limit=0", false),
        ("limit=501", false),
    ] {
        page.query = Some(query);
        assert_eq!(accepted(&page).is_ok(), fine, "{query}: {:?}", accepted(&page));
    }
    let created = r#"{"id":"k1","key":"csk_x","name":"n","role":"auditor","expires_at":null}"#;
    let mut key = exchange("POST", "/platform/v1/keys", 201, "application/json", created);
    key.request_content_type = Some("application/json");
    for (sent, fine) in [
        (r#"{"name":"n","role":"auditor"}"#, true),
        (r#"{"name":"n","role":"auditor","admin":true}"#, false),
        (r#"{"role":"auditor"}"#, false),
        (r#"{"name":1,"role":"auditor"}"#, false),
        ("", false),
    ] {
        key.request_body = sent.as_bytes();
        assert_eq!(accepted(&key).is_ok(), fine, "{sent}: {:?}", accepted(&key));
    }
    let mut version = exchange(
        "GET",
        "/platform/v1/policies/x/proofs",
        200,
        "application/json",
        r#"{"version":1,"standing":{},"proofs":[],"waivers":[]}"#,
    );
    assert!(accepted(&version).is_err(), "an accepted non-numeric version passed");
    version.path = "/platform/v1/policies/1/proofs";
    assert_eq!(accepted(&version), Ok(()));

    // A schema keyword the validator does not implement fails, never passes.
    let unknown = json!({"type": "string", "pattern": "^a"});
    assert!(doc.validate(&unknown, &json!("b"), "x", true).is_err());
}

/// A stand-in for a handler gone wrong, behind the same checking layer as every HTTP test:
/// the test that sees its answer fails.
#[tokio::test]
async fn a_handler_answering_what_the_document_does_not_declare_fails_its_test() {
    let wrong = Router::new().route(
        "/platform/v1/groups/{id}",
        put(|| async { (StatusCode::OK, axum::Json(json!({"stored": true}))) }),
    );
    let router = conformance::checked(wrong);
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/platform/v1/groups/g")
        .header(conformance::EXPECTED_VIOLATION, "yes")
        .body(Body::empty())
        .unwrap_or_default();
    let outcome = tokio::spawn(router.oneshot(request)).await;
    let panic = outcome.err().filter(|e| e.is_panic()).map(|e| e.into_panic());
    let message = panic.as_ref().and_then(|p| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    assert!(message.contains("status 200 is not declared for PUT /platform/v1/groups/{id}"), "{message:?}");
}

#[test]
fn the_document_names_only_schemes_it_defines_and_declares_errors_as_problem_json() {
    let doc = &document().value;
    let schemes = doc["components"]["securitySchemes"].as_object().cloned().unwrap_or_default();
    assert_eq!(schemes["client_basic"]["scheme"], "basic", "{schemes:?}");
    let mut problem_json = 0;
    for operation in document().operations() {
        let name = operation.name();
        let security = operation.security();
        for scheme in &security {
            assert!(schemes.contains_key(scheme), "{name} names the undefined scheme {scheme}");
        }
        let statuses = operation.statuses();
        if !security.is_empty() {
            assert!(statuses.iter().any(|s| s == "401"), "{name} authenticates but declares no 401");
        }
        let takes_json = operation.request_media().iter().any(|(media, _)| media == "application/json");
        for status in ["400", "413", "415"] {
            assert!(
                !takes_json || statuses.iter().any(|s| s == status),
                "{name} takes JSON, declares no {status}"
            );
        }
        for status in &statuses {
            let response = document()
                .resolve(&operation.value["responses"][status.as_str()])
                .cloned()
                .unwrap_or_default();
            for (media, content) in response["content"].as_object().into_iter().flatten() {
                if content["schema"]["$ref"] == "#/components/schemas/Problem" {
                    assert_eq!(media, "application/problem+json", "{name} {status}");
                    problem_json += 1;
                }
            }
            let error = status.starts_with('4') || status.starts_with('5');
            let oauth = operation.template.starts_with("/oauth/");
            assert!(
                !error || oauth || response["content"]["application/problem+json"].is_object(),
                "{name} {status}"
            );
        }
    }
    assert!(problem_json > 100, "{problem_json} problem+json answers");
}
