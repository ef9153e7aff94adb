#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! Every kind of bad input gets a 4xx with `{"error": code, "message": ...}` naming the
//! problem, and the service keeps serving.

mod common;

use common::{request, uid, TestServer};
use http::Method;
use portcullis::config::ServeArgs;
use serde_json::json;

struct Bad {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// A piece of text the message must contain (the field or input it names).
    names: &'static str,
}

fn post(
    what: &'static str,
    body: serde_json::Value,
    status: u16,
    code: &'static str,
    names: &'static str,
) -> Bad {
    Bad {
        what,
        method: Method::POST,
        path: "/v1/is_authorized",
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        code,
        names,
    }
}

fn bea_pays(action: &str, resource: &str) -> serde_json::Value {
    request(&uid("User", "bea"), action, resource)
}

#[tokio::test]
async fn bad_requests_get_named_4xx_errors_and_the_service_keeps_serving() {
    let server = TestServer::start(ServeArgs {
        max_body_bytes: 4096,
        batch_limit: 3,
        ..ServeArgs::default()
    })
    .await;
    let invoice = uid("Invoice", "inv-1001");
    let good = bea_pays("PayInvoice", &invoice);
    let cases = vec![
        Bad {
            what: "malformed JSON",
            method: Method::POST,
            path: "/v1/is_authorized",
            content_type: Some("application/json"),
            body: br#"{"principal": "Portal::User::\"bea\"","#.to_vec(),
            status: 400,
            code: "malformed_json",
            names: "not valid JSON",
        },
        Bad {
            what: "wrong content type",
            method: Method::POST,
            path: "/v1/is_authorized",
            content_type: Some("text/plain"),
            body: good.to_string().into_bytes(),
            status: 415,
            code: "unsupported_media_type",
            names: "Content-Type",
        },
        Bad {
            what: "no content type",
            method: Method::POST,
            path: "/v1/is_authorized",
            content_type: None,
            body: good.to_string().into_bytes(),
            status: 415,
            code: "unsupported_media_type",
            names: "application/json",
        },
        Bad {
            what: "body over the limit",
            method: Method::POST,
            path: "/v1/is_authorized",
            content_type: Some("application/json"),
            body: json!({"principal": "x".repeat(5000), "action": "a", "resource": "r"})
                .to_string()
                .into_bytes(),
            status: 413,
            code: "body_too_large",
            names: "4096 bytes",
        },
        post(
            "missing field",
            json!({"principal": uid("User", "bea"), "action": "Portal::Action::\"PayInvoice\""}),
            400,
            "invalid_request",
            "resource",
        ),
        post(
            "field of the wrong type",
            json!({"principal": 7, "action": "a", "resource": "r"}),
            400,
            "invalid_request",
            "expected a string",
        ),
        post(
            "request-supplied entities",
            json!({"principal": uid("User", "bea"), "action": "Portal::Action::\"PayInvoice\"", "resource": invoice, "entities": []}),
            400,
            "invalid_request",
            "entities",
        ),
        post(
            "uid syntax error",
            json!({"principal": "Portal::User::bea", "action": "Portal::Action::\"PayInvoice\"", "resource": invoice}),
            400,
            "invalid_uid",
            "`principal`",
        ),
        post(
            "uid with text after its quoted id",
            json!({"principal": "Portal::User::\"bea\"::\"x\"", "action": "Portal::Action::\"PayInvoice\"", "resource": invoice}),
            400,
            "invalid_uid",
            "`principal`",
        ),
        post(
            "uid with a raw tab in its id (Cedar wants it escaped)",
            json!({"principal": "Portal::User::\"be\ta\"", "action": "Portal::Action::\"PayInvoice\"", "resource": invoice}),
            400,
            "invalid_uid",
            "`principal`",
        ),
        post(
            "uid with a needless escape in its id",
            json!({"principal": "Portal::User::\"b\\u{65}a\"", "action": "Portal::Action::\"PayInvoice\"", "resource": invoice}),
            400,
            "invalid_uid",
            "`principal`",
        ),
        post(
            "uid whose id is not closed",
            json!({"principal": "Portal::User::\"bea", "action": "Portal::Action::\"PayInvoice\"", "resource": invoice}),
            400,
            "invalid_uid",
            "`principal`",
        ),
        post(
            "resource uid syntax error",
            bea_pays("PayInvoice", "inv-1001"),
            400,
            "invalid_uid",
            "`resource`",
        ),
        post(
            "unknown principal type",
            request(&uid("Admin", "root"), "PayInvoice", &invoice),
            400,
            "unknown_entity_type",
            "Portal::Admin",
        ),
        post(
            "unknown resource type",
            bea_pays("PayInvoice", &uid("Printer", "p1")),
            400,
            "unknown_entity_type",
            "Portal::Printer",
        ),
        post(
            "unknown action",
            bea_pays("StealInvoice", &invoice),
            400,
            "unknown_action",
            "StealInvoice",
        ),
        post(
            "action on the wrong resource type",
            bea_pays("PayInvoice", &uid("Ticket", "t-2001")),
            400,
            "request_not_in_schema",
            "`resource`",
        ),
        post(
            "principal type the action does not apply to",
            request(&uid("Contact", "carl"), "PayInvoice", &invoice),
            400,
            "request_not_in_schema",
            "`principal`",
        ),
        post(
            "context of the wrong type",
            json!({"principal": uid("User", "bea"), "action": "Portal::Action::\"UpdatePaymentMethod\"", "resource": uid("Account", "acme"), "context": {"secondFactor": "yes"}}),
            400,
            "invalid_context",
            "`context`",
        ),
        post(
            "context attribute the schema does not declare",
            json!({"principal": uid("User", "bea"), "action": "Portal::Action::\"PayInvoice\"", "resource": invoice, "context": {"isAdmin": true}}),
            400,
            "invalid_context",
            "`context`",
        ),
        post(
            "context that is not an object",
            json!({"principal": uid("User", "bea"), "action": "Portal::Action::\"PayInvoice\"", "resource": invoice, "context": [1]}),
            400,
            "invalid_context",
            "`context`",
        ),
        Bad {
            what: "batch over the limit",
            method: Method::POST,
            path: "/v1/batch_is_authorized",
            content_type: Some("application/json"),
            body: json!({"requests": [good, good, good, good]})
                .to_string()
                .into_bytes(),
            status: 400,
            code: "batch_too_large",
            names: "limit is 3",
        },
        Bad {
            what: "batch with one bad request",
            method: Method::POST,
            path: "/v1/batch_is_authorized",
            content_type: Some("application/json"),
            body: json!({"requests": [good, bea_pays("StealInvoice", &invoice)]})
                .to_string()
                .into_bytes(),
            status: 400,
            code: "unknown_action",
            names: "requests[1]",
        },
        Bad {
            what: "batch item naming a field twice (refused as the single endpoint does)",
            method: Method::POST,
            path: "/v1/batch_is_authorized",
            content_type: Some("application/json"),
            body: format!(
                r#"{{"requests": [{good}, {{"principal": "Portal::User::\"bea\"", "principal": "Portal::User::\"dora\"", "action": "Portal::Action::\"PayInvoice\"", "resource": "Portal::Invoice::\"inv-1001\""}}]}}"#
            )
            .into_bytes(),
            status: 400,
            code: "invalid_request",
            names: "`requests[1]`: duplicate field `principal`",
        },
        Bad {
            what: "wrong method",
            method: Method::GET,
            path: "/v1/is_authorized",
            content_type: None,
            body: Vec::new(),
            status: 405,
            code: "method_not_allowed",
            names: "GET",
        },
        Bad {
            what: "unknown path",
            method: Method::GET,
            path: "/v2/nothing",
            content_type: None,
            body: Vec::new(),
            status: 404,
            code: "not_found",
            names: "/v2/nothing",
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c
            .content_type
            .iter()
            .map(|t| ("content-type", *t))
            .collect();
        let reply = server
            .send(c.method.clone(), c.path, &headers, c.body.clone())
            .await;
        let message = reply.json["message"].as_str().unwrap_or_default();
        if reply.status.as_u16() != c.status
            || reply.json["error"] != c.code
            || !message.contains(c.names)
        {
            failures.push(format!(
                "{}: expected {} `{}` naming `{}`, got {} {}",
                c.what, c.status, c.code, c.names, reply.status, reply.text
            ));
        }
        if reply.header("content-type") != Some("application/json") {
            failures.push(format!("{}: error body is not JSON", c.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Still serving, and the errors were counted by kind.
    let after = server.post("/v1/is_authorized", &good).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json["decision"], "Allow");
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains(r#"portcullis_errors_total{kind="unknown_action"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_errors_total{kind="body_too_large"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_batch_answers_in_order() {
    let server = TestServer::portal().await;
    let reqs = json!({"requests": [
        request(&uid("User", "bea"), "PayInvoice", &uid("Invoice", "inv-1001")),
        request(&uid("User", "walt"), "PayInvoice", &uid("Invoice", "inv-1001")),
        request(&uid("User", "dev"), "ManageDomain", &uid("Domain", "globex.example")),
        request(&uid("Contact", "carl"), "Login", &uid("Account", "acme")),
    ]});
    let reply = server.post("/v1/batch_is_authorized", &reqs).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let decisions: Vec<&str> = reply.json["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["Allow", "Deny", "Allow", "Deny"]);
    assert_eq!(
        reply.json["responses"][0]["diagnostics"]["reason"],
        json!(["member-invoices"])
    );
    assert_eq!(
        reply.json["responses"][3]["diagnostics"]["reason"],
        json!(["contact-only-receives-email"])
    );
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let server = TestServer::portal().await;
    let body = request(
        &uid("User", "bea"),
        "PayInvoice",
        &uid("Invoice", "inv-1001"),
    )
    .to_string();
    let given = server
        .send(
            Method::POST,
            "/v1/is_authorized",
            &[
                ("content-type", "application/json"),
                ("x-request-id", "req-42"),
            ],
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(given.header("x-request-id"), Some("req-42"));
    let generated = server
        .send(
            Method::POST,
            "/v1/is_authorized",
            &[("content-type", "application/json")],
            body.into_bytes(),
        )
        .await;
    let id = generated.header("x-request-id").unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID is generated: `{id}`");
    let errored = server.get("/nowhere").await;
    assert!(
        errored.header("x-request-id").is_some(),
        "errors carry a request id too"
    );
}

/// A generated request id is a UUID (version 8: a random prefix drawn when the service
/// starts, then a counter, so no request asks the system for randomness), and no two
/// are alike: not within one run, not across restarts (each run draws its own prefix).
#[tokio::test]
async fn generated_request_ids_are_uuids_unique_across_requests_and_restarts() {
    let mut seen = std::collections::HashSet::new();
    for run in 0..2 {
        let server = TestServer::portal().await;
        for _ in 0..3 {
            let reply = server.get("/healthz").await;
            let id = reply.header("x-request-id").unwrap_or_default().to_string();
            let parsed = uuid::Uuid::parse_str(&id)
                .unwrap_or_else(|e| panic!("run {run}: `{id}` is not a UUID: {e}"));
            assert_eq!(parsed.get_version_num(), 8, "run {run}: `{id}`");
            assert_eq!(
                parsed.get_variant(),
                uuid::Variant::RFC4122,
                "run {run}: `{id}`"
            );
            assert!(
                seen.insert(id.clone()),
                "run {run}: `{id}` was handed out before"
            );
        }
        server.stop().await;
    }
}

/// A uid whose id needs an escape is read by Cedar's parser, as the plain form is read
/// through the schema's type names: both decide.
#[tokio::test]
async fn uids_decide_alike_in_every_cedar_spelling() {
    let server = TestServer::portal().await;
    let invoice = uid("Invoice", "inv-1001");
    let plain = server
        .post(
            "/v1/is_authorized",
            &request(&uid("User", "bea"), "PayInvoice", &invoice),
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    assert_eq!(plain.json["decision"], "Allow", "{}", plain.text);
    // An escaped quote is part of the id: another user, who does not exist.
    let quoted = server
        .post(
            "/v1/is_authorized",
            &request("Portal::User::\"be\\\"a\"", "PayInvoice", &invoice),
        )
        .await;
    assert_eq!(quoted.status, 200, "{}", quoted.text);
    assert_eq!(quoted.json["decision"], "Deny", "{}", quoted.text);
}

#[tokio::test]
async fn metrics_count_decisions_by_decision_and_action_without_ids() {
    let server = TestServer::portal().await;
    server
        .post(
            "/v1/is_authorized",
            &request(
                &uid("User", "bea"),
                "PayInvoice",
                &uid("Invoice", "inv-1001"),
            ),
        )
        .await;
    server
        .post(
            "/v1/is_authorized",
            &request(
                &uid("User", "walt"),
                "PayInvoice",
                &uid("Invoice", "inv-1001"),
            ),
        )
        .await;
    let metrics = server.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text;
    assert!(
        text.contains(r#"portcullis_decisions_total{action="PayInvoice",decision="allow"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_decisions_total{action="PayInvoice",decision="deny"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("portcullis_request_duration_seconds_bucket{endpoint=\"is_authorized\""),
        "{text}"
    );
    let active = server.app.model.load().active_policy_count();
    assert!(active > 0);
    assert!(
        text.contains(&format!("portcullis_policies_loaded {active}\n")),
        "{text}"
    );
    for id in ["bea", "walt", "inv-1001"] {
        assert!(!text.contains(id), "metrics carry the id `{id}`");
    }
}
