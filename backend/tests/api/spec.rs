//! The OpenAPI document: valid, complete, and the seed design's routes.

use serde_json::Value;

use crate::helpers::TestStack;

const OPERATIONS: [(&str, &str); 30] = [
    ("/api/models", "get"),
    ("/health", "get"),
    ("/ready", "get"),
    ("/api/auth/session", "post"),
    ("/api/auth/session", "delete"),
    ("/api/auth/me", "get"),
    ("/api/auth/code", "post"),
    ("/api/sessions", "post"),
    ("/api/sessions", "get"),
    ("/api/sessions/events", "get"),
    ("/api/sessions/{session_id}", "get"),
    ("/api/sessions/{session_id}", "delete"),
    ("/api/sessions/{session_id}/prompt", "post"),
    ("/api/sessions/{session_id}/runs", "get"),
    ("/api/runs/{run_id}", "get"),
    ("/api/runs/{run_id}/cancel", "post"),
    ("/api/runs/{run_id}/approvals/{approval_id}", "post"),
    ("/api/runs/{run_id}/steer", "post"),
    ("/api/runs/{run_id}/interrupt", "post"),
    ("/api/runs/{run_id}/events", "get"),
    ("/api/sessions/{session_id}/files", "get"),
    ("/api/sessions/{session_id}/files/{path}", "get"),
    ("/api/sessions/{session_id}/diff", "get"),
    ("/api/sessions/{session_id}/preview", "post"),
    ("/api/sessions/{session_id}/patch", "get"),
    ("/api/runs/{run_id}/patch", "get"),
    ("/api/sessions/{session_id}/git", "get"),
    ("/api/sessions/{session_id}/commits", "post"),
    ("/api/sessions/{session_id}/push", "post"),
    ("/api/sessions/{session_id}/pull-requests", "post"),
];

/// Every error status the backend can answer an `/api/` operation with,
/// those raised before the operation runs (401, 403 CORS or CSRF, 405,
/// 414, 415, 421, 431) too.
const ERROR_STATUSES: [&str; 15] = [
    "400", "401", "403", "404", "405", "409", "413", "414", "415", "421", "422", "429", "431",
    "500", "503",
];

/// Operations anyone may call; every other one declares the token and the
/// cookie.
const PUBLIC: [&str; 5] = [
    "health",
    "ready",
    "sign_in",
    "sign_out",
    "inspect_signin_code",
];

#[tokio::test]
async fn the_spec_is_valid_openapi_3_and_lists_every_route() {
    let stack = TestStack::start().await;
    let text = stack.get("/api/openapi.json").await.text().await.unwrap();
    let parsed: openapiv3::OpenAPI =
        serde_json::from_str(&text).expect("a valid OpenAPI 3 document");
    assert!(parsed.openapi.starts_with("3."));
    let spec: Value = serde_json::from_str(&text).unwrap();

    let mut listed = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            listed += 1;
            assert!(
                OPERATIONS.contains(&(path.as_str(), method.as_str())),
                "{method} {path} is not expected"
            );
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            let public = PUBLIC.contains(&operation["operationId"].as_str().unwrap());
            let security = operation.get("security").unwrap_or(&spec["security"]);
            let expected = if public {
                serde_json::json!([])
            } else {
                serde_json::json!([{"bearerAuth": []}, {"cookieAuth": []}])
            };
            assert_eq!(security, &expected, "{method} {path}");
            assert!(
                !operation["tags"].as_array().unwrap().is_empty(),
                "{method} {path} has no tag"
            );
            if path.starts_with("/api/") {
                for status in ERROR_STATUSES {
                    let error = &operation["responses"][status]["content"]
                        ["application/json; charset=utf-8"]["schema"]["$ref"];
                    assert_eq!(
                        error, "#/components/schemas/ErrorBody",
                        "{method} {path} lacks {status}"
                    );
                }
                // Header names are case-insensitive; poem-openapi writes
                // them in capitals.
                let allow = operation["responses"]["405"]["headers"]
                    .as_object()
                    .and_then(|headers| {
                        headers
                            .iter()
                            .find(|(name, _)| name.eq_ignore_ascii_case("allow"))
                    })
                    .map(|(_, header)| header);
                assert_eq!(
                    allow.map(|h| &h["schema"]["type"]),
                    Some(&Value::from("string")),
                    "{method} {path}: the 405 declares Allow"
                );
            }
        }
    }
    assert_eq!(listed, OPERATIONS.len());
    let events = &spec["paths"]["/api/runs/{run_id}/events"]["get"]["responses"]["200"]["content"];
    assert!(
        events["text/event-stream"].is_object(),
        "the stream is declared as text/event-stream"
    );
    let error = &spec["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        error["required"],
        serde_json::json!(["error", "message", "code"])
    );
    let mut properties: Vec<&String> = error["properties"].as_object().unwrap().keys().collect();
    properties.sort();
    assert_eq!(
        properties,
        ["code", "error", "message"],
        "the error body has nothing that is never filled"
    );

    assert_eq!(
        spec["components"]["securitySchemes"],
        serde_json::json!({
            "bearerAuth": {"type": "http", "scheme": "bearer",
                "description": "An API token, `rr_…` (`backend admin token create USER`)"},
            "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "rr_session",
                "description": "A browser's sign-in (`POST /api/auth/session`); named `__Host-rr_session` behind TLS"}
        })
    );

    // Swagger UI shows the same document, schemes included (its Authorize
    // button takes a token).
    let docs = stack.get("/docs").await;
    assert_eq!(docs.status(), 200);
    let docs = docs.text().await.unwrap();
    assert!(docs.contains("swagger"));
    assert!(
        docs.contains("\"securitySchemes\""),
        "Swagger UI has the schemes"
    );
    assert_eq!(stack.get_json("/health").await["status"], "ok");
    let ready = stack.get_json("/ready").await;
    assert_eq!(ready["database"], true);
    assert_eq!(ready["runner"], true);
}

/// The names of `RunEventType` in the spec's `schemas`.
fn event_names(schemas: &serde_json::Value) -> Vec<&str> {
    schemas["RunEventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

/// The spec's names of run events are the protocol's, exactly: a name in
/// `runner_protocol::EventName` (which the SDK, the runner and the relay
/// use) and not in the spec, or the other way round, fails here; and every
/// one has a payload schema (`codex.error` carries `type: error`).
#[tokio::test]
async fn the_specs_event_names_are_the_protocols() {
    use runner_protocol::EventName;
    let stack = TestStack::start().await;
    let spec: serde_json::Value = stack.get("/api/openapi.json").await.json().await.unwrap();
    let schemas = &spec["components"]["schemas"];
    let names = event_names(schemas);
    let protocol: Vec<&str> = EventName::ALL.iter().map(|n| n.as_str()).collect();
    assert_eq!(names, protocol);
    let mapping = schemas["RunStreamEvent"]["discriminator"]["mapping"]
        .as_object()
        .unwrap();
    let mut payload_types: Vec<&str> = mapping.keys().map(String::as_str).collect();
    payload_types.sort_unstable();
    let mut expected: Vec<&str> = EventName::ALL.iter().map(|name| name.json_type()).collect();
    expected.sort_unstable();
    assert_eq!(payload_types, expected);
}

/// A generated client knows every event of a run's stream: the names as an
/// enum, and one payload schema per name, chosen by `type`.
#[tokio::test]
async fn every_run_event_has_a_name_and_a_payload_schema() {
    let stack = TestStack::start().await;
    let spec: serde_json::Value = stack.get("/api/openapi.json").await.json().await.unwrap();
    let schemas = &spec["components"]["schemas"];
    let names = event_names(schemas);
    let mapping = schemas["RunStreamEvent"]["discriminator"]["mapping"]
        .as_object()
        .unwrap();
    assert_eq!(
        schemas["RunStreamEvent"]["discriminator"]["propertyName"],
        "type"
    );
    for name in [
        "thread.started",
        "turn.started",
        "turn.completed",
        "turn.failed",
        "item.started",
        "item.updated",
        "item.completed",
        "item.delta",
        "approval.requested",
        "approval.resolved",
        "plan.updated",
        "diff.updated",
        "usage.updated",
        "run.completed",
        "run.failed",
        "run.cancelled",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
        assert!(mapping.contains_key(name), "{name} has no payload schema");
    }
    assert!(names.contains(&"codex.error") && mapping.contains_key("error"));
    // Distinct payloads: one schema per name.
    let targets: std::collections::HashSet<_> = mapping.values().collect();
    assert_eq!(targets.len(), mapping.len());
    let delta = mapping["item.delta"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let kinds = serde_json::to_string(&schemas[delta]).unwrap();
    assert!(
        kinds.contains("itemId") || kinds.contains("ItemDeltaEvent"),
        "{kinds}"
    );
}
