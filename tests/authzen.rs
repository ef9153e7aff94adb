//! The AuthZEN Authorization API 1.0 through real HTTP: the portal personas, batch
//! semantics, search with pagination, discovery, spec error handling, a non-portal
//! schema served with configuration only, and HTTPS with and without client
//! certificates.
// Test helpers outside `#[test]` functions unwrap and index like the tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::TestServer;
use http::Method;
use portcullis::authzen::token::PageTokenKey;
use portcullis::config::{RequireEntities, ServeArgs};
use portcullis::entities::SourceGate;
use portcullis::model::reload::{ReloadOutcome, Trigger};
use serde_json::{json, Value};

const EVALUATION: &str = "/access/v1/evaluation";
const EVALUATIONS: &str = "/access/v1/evaluations";

fn user(id: &str) -> Value {
    json!({"type": "user", "id": id})
}

fn invoice(id: &str) -> Value {
    json!({"type": "invoice", "id": id})
}

fn action(name: &str) -> Value {
    json!({"name": name})
}

fn eval(subject: Value, name: &str, resource: Value) -> Value {
    json!({"subject": subject, "action": action(name), "resource": resource})
}

fn decisions(reply: &Value) -> Vec<bool> {
    reply["evaluations"]
        .as_array()
        .expect("an evaluations array")
        .iter()
        .map(|d| d["decision"].as_bool().expect("a boolean decision"))
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn the_portal_personas_decide_through_authzen() {
    let server = TestServer::portal().await;
    // (who, action, resource, expected)
    let cases = [
        ("bea", "PayInvoice", invoice("inv-1001"), true),
        ("walt", "PayInvoice", invoice("inv-1001"), false),
        ("olivia", "ViewInvoice", invoice("inv-1001"), true),
        ("walt", "ViewInvoice", invoice("inv-1001"), false),
        ("bea", "ViewInvoice", invoice("inv-9001"), false),
        (
            "walt",
            "OpenTicket",
            json!({"type": "account", "id": "acme"}),
            true,
        ),
        (
            "dev",
            "ManageDomain",
            json!({"type": "domain", "id": "globex.example"}),
            true,
        ),
        (
            "dev",
            "ManageDomain",
            json!({"type": "domain", "id": "acme.example"}),
            false,
        ),
        ("dora", "ViewInvoice", invoice("inv-1001"), false),
    ];
    for (who, name, resource, expected) in cases {
        let reply = server
            .post(EVALUATION, &eval(user(who), name, resource.clone()))
            .await;
        assert_eq!(reply.status, 200, "{who} {name}: {}", reply.text);
        assert_eq!(
            reply.json,
            json!({"decision": expected}),
            "{who} {name} {resource}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn explain_puts_the_determining_policies_in_the_decision_context() {
    let server = TestServer::portal().await;
    let mut body = eval(user("bea"), "PayInvoice", invoice("inv-1001"));
    body["context"] = json!({"portcullis": {"explain": true}});
    let reply = server.post(EVALUATION, &body).await;
    assert_eq!(
        reply.json,
        json!({"decision": true, "context": {"policies": ["member-invoices"]}})
    );

    // The header asks for the same on every decision of the request.
    let body = eval(user("dora"), "ViewInvoice", invoice("inv-1001"));
    let reply = server
        .send(
            Method::POST,
            EVALUATION,
            &[
                ("content-type", "application/json"),
                ("x-portcullis-explain", "true"),
            ],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.json["decision"], false);
    assert_eq!(
        reply.json["context"]["policies"],
        json!(["disabled-user-denied"])
    );
    server.stop().await;
}

#[tokio::test]
async fn context_values_are_converted_by_the_schema() {
    let server = TestServer::portal().await;
    // The owner may change the payment method only after a second factor; the
    // context's string "true" and IP string are converted to Bool and ipaddr.
    let mut body = eval(
        user("olivia"),
        "UpdatePaymentMethod",
        json!({"type": "account", "id": "acme"}),
    );
    let cases = [
        (json!({}), true, false),
        (
            json!({"secondFactor": "true", "clientIp": "10.1.2.3"}),
            true,
            true,
        ),
        (
            json!({"secondFactor": true, "unknownToTheSchema": {"x": 1}}),
            true,
            true,
        ),
        (json!({"secondFactor": "yes"}), false, false),
        (json!({"clientIp": "not-an-ip"}), false, false),
    ];
    for (context, ok, expected) in cases {
        body["context"] = context.clone();
        let reply = server.post(EVALUATION, &body).await;
        if ok {
            assert_eq!(reply.status, 200, "{context}: {}", reply.text);
            assert_eq!(reply.json["decision"], expected, "{context}");
        } else {
            assert_eq!(reply.status, 400, "{context}: {}", reply.text);
            assert!(
                reply.json["message"].as_str().unwrap().contains("context"),
                "{}",
                reply.text
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_caller_cannot_raise_its_privileges_with_properties_by_default() {
    let server = TestServer::portal().await;
    // dora is disabled in the store; claiming otherwise changes nothing.
    let mut body = eval(user("dora"), "ViewInvoice", invoice("inv-1001"));
    body["subject"]["properties"] = json!({"disabled": false});
    let reply = server.post(EVALUATION, &body).await;
    assert_eq!(reply.json, json!({"decision": false}), "{}", reply.text);
    server.stop().await;
}

#[tokio::test]
async fn on_the_portal_a_users_attributes_follow_the_precedence_of_their_type() {
    // dora is disabled in the store and claims otherwise: only a precedence that lets
    // users' properties replace stored attributes lets her in.
    let mut body = eval(user("dora"), "ViewInvoice", invoice("inv-1001"));
    body["subject"]["properties"] = json!({"disabled": false});
    let cases = [
        ("request", true),
        ("{default: store, types: {user: request}}", true),
        ("{default: request, types: {user: store}}", false),
        ("{default: request, types: {Portal::User: store}}", false),
    ];
    for (precedence, allowed) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mapping = dir.path().join("authzen.yaml");
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/portal/authzen.yaml"),
        )
        .unwrap()
        .replace(
            "properties_precedence: store\n",
            &format!("properties_precedence: {precedence}\n"),
        );
        std::fs::write(&mapping, text).unwrap();
        let mut args = ServeArgs::default();
        args.model.authzen_mapping = Some(mapping);
        let server = TestServer::start(args).await;
        let reply = server.post(EVALUATION, &body).await;
        assert_eq!(
            reply.json["decision"], allowed,
            "{precedence}: {}",
            reply.text
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn evaluations_merge_top_level_defaults_and_keep_order() {
    let server = TestServer::portal().await;
    let body = json!({
        "subject": user("bea"),
        "action": action("ViewInvoice"),
        "context": {"secondFactor": false},
        "evaluations": [
            {"resource": invoice("inv-1001")},
            {"resource": invoice("inv-9001")},
            {"action": action("PayInvoice"), "resource": invoice("inv-1001")},
            {"subject": user("walt"), "resource": invoice("inv-1001")},
        ]
    });
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(decisions(&reply.json), vec![true, false, true, false]);
    assert!(reply.json.get("decision").is_none());

    // Without an `evaluations` array the request is a single evaluation.
    let single = server
        .post(
            EVALUATIONS,
            &eval(user("bea"), "PayInvoice", invoice("inv-1001")),
        )
        .await;
    assert_eq!(single.json, json!({"decision": true}));
    server.stop().await;
}

#[tokio::test]
async fn a_batch_default_is_read_only_by_the_items_that_use_it() {
    let server = TestServer::portal().await;
    let items = json!([
        {"resource": invoice("inv-1001")},
        {"resource": invoice("inv-9001")},
    ]);
    // (what, top-level resource default)
    let unused_defaults = [
        ("an empty object", json!({})),
        ("a null", Value::Null),
        ("a default without an id", json!({"type": "invoice"})),
        ("a default of the wrong shape", json!({"type": 7})),
        ("a default that is not an object", json!("inv-1001")),
    ];
    for (what, default) in unused_defaults {
        let body = json!({
            "subject": user("bea"),
            "action": action("ViewInvoice"),
            "resource": default,
            "evaluations": items,
        });
        let reply = server.post(EVALUATIONS, &body).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
        assert_eq!(
            decisions(&reply.json),
            vec![true, false],
            "{what}: {}",
            reply.text
        );
    }

    // Used, a malformed default is the error of the items that use it, and an empty
    // object is no default at all.
    let body = json!({
        "subject": user("bea"),
        "action": action("ViewInvoice"),
        "resource": {"type": "invoice"},
        "evaluations": [{"resource": invoice("inv-1001")}, {}],
    });
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(decisions(&reply.json), vec![true, false]);
    let error = &reply.json["evaluations"][1]["context"]["error"];
    assert_eq!(error["code"], "missing_field", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("`resource.id`") && message.contains("`evaluations[1]`"),
        "{message}"
    );
    let body = json!({
        "subject": user("bea"),
        "action": action("ViewInvoice"),
        "resource": {},
        "evaluations": [{"resource": invoice("inv-1001")}, {}],
    });
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(decisions(&reply.json), vec![true, false], "{}", reply.text);
    let error = &reply.json["evaluations"][1]["context"]["error"];
    assert_eq!(error["code"], "missing_field", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`evaluations[1].resource` is required"),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_three_evaluation_semantics() {
    let server = TestServer::portal().await;
    let batch = |semantic: Option<&str>| {
        let mut body = json!({
            "subject": user("bea"),
            "action": action("ViewInvoice"),
            "evaluations": [
                {"resource": invoice("inv-1001")},
                {"resource": invoice("inv-9001")},
                {"resource": invoice("inv-1001")},
            ]
        });
        if let Some(s) = semantic {
            body["options"] = json!({"evaluations_semantic": s, "another_option": "ignored"});
        }
        body
    };
    // (semantic, expected decisions)
    let cases = [
        (None, vec![true, false, true]),
        (Some("execute_all"), vec![true, false, true]),
        (Some("deny_on_first_deny"), vec![true, false]),
        (Some("permit_on_first_permit"), vec![true]),
    ];
    for (semantic, expected) in cases {
        let reply = server.post(EVALUATIONS, &batch(semantic)).await;
        assert_eq!(reply.status, 200, "{semantic:?}: {}", reply.text);
        assert_eq!(decisions(&reply.json), expected, "{semantic:?}");
    }
    let denied = server
        .post(EVALUATIONS, &batch(Some("deny_on_first_deny")))
        .await;
    assert_eq!(
        denied.json["evaluations"][1]["context"]["reason"],
        "deny_on_first_deny"
    );

    // Permit on first permit goes on through denies until a permit.
    let mut body = batch(Some("permit_on_first_permit"));
    body["evaluations"] = json!([
        {"resource": invoice("inv-9001")},
        {"resource": invoice("inv-5001")},
        {"resource": invoice("inv-1001")},
        {"resource": invoice("inv-9001")},
    ]);
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(decisions(&reply.json), vec![false, false, true]);

    let bad = server.post(EVALUATIONS, &batch(Some("first_wins"))).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("evaluations_semantic"), "{}", bad.text);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let server = TestServer::start(ServeArgs {
        batch_limit: 2,
        ..ServeArgs::default()
    })
    .await;
    let item = json!({"resource": invoice("inv-1001")});
    let body = json!({
        "subject": user("bea"),
        "action": action("ViewInvoice"),
        "evaluations": [item, item, item],
    });
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json["error"], "batch_too_large");
    server.stop().await;
}

#[tokio::test]
async fn an_evaluation_in_error_does_not_fail_the_batch() {
    let server = TestServer::portal().await;
    let body = json!({
        "subject": user("bea"),
        "evaluations": [
            {"action": action("PayInvoice"), "resource": invoice("inv-1001")},
            {"action": action("PayInvoice"), "resource": {"type": "spaceship", "id": "x"}},
            {"action": action("FlyToTheMoon"), "resource": invoice("inv-1001")},
            {"action": action("PayInvoice")},
            {"action": action("ViewInvoice"), "resource": invoice("inv-1001")},
        ]
    });
    let reply = server.post(EVALUATIONS, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        decisions(&reply.json),
        vec![true, false, false, false, true]
    );
    // An action the PDP does not know is a deny, not an error.
    let unknown = &reply.json["evaluations"][2]["context"];
    assert!(unknown.get("error").is_none(), "{unknown}");
    assert!(
        unknown["reason"].as_str().unwrap().contains("FlyToTheMoon"),
        "{unknown}"
    );
    for (i, needle) in [(1, "spaceship"), (3, "evaluations[3].resource")] {
        let error = &reply.json["evaluations"][i]["context"]["error"];
        assert_eq!(error["status"], 400, "{i}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{i}: {error}"
        );
    }
    server.stop().await;
}

/// A server on the portal whose mapping answers unknown action names as it says.
async fn portal_with_unknown_actions(dir: &std::path::Path, unknown_actions: &str) -> TestServer {
    let mapping = dir.join("authzen.yaml");
    let mut text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/portal/authzen.yaml"),
    )
    .unwrap();
    text.push_str(&format!("unknown_actions: {unknown_actions}\n"));
    std::fs::write(&mapping, text).unwrap();
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(mapping);
    TestServer::start(args).await
}

#[tokio::test]
async fn an_unknown_action_is_a_deny_unless_the_mapping_asks_for_an_error() {
    let fly = eval(user("bea"), "FlyToTheMoon", invoice("inv-1001"));
    let batch = json!({
        "subject": user("bea"),
        "resource": invoice("inv-1001"),
        "evaluations": [{"action": action("FlyToTheMoon")}, {"action": action("PayInvoice")}],
    });
    let readers = json!({
        "subject": {"type": "user"},
        "action": action("FlyToTheMoon"),
        "resource": invoice("inv-1001"),
    });
    let invoices = json!({
        "subject": user("bea"),
        "action": action("FlyToTheMoon"),
        "resource": {"type": "invoice"},
    });

    // The default: a deny with the reason, an empty search.
    let server = TestServer::portal().await;
    let reply = server.post(EVALUATION, &fly).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["decision"], false);
    assert!(
        reply.json["context"]["reason"]
            .as_str()
            .unwrap()
            .contains("`FlyToTheMoon`"),
        "{}",
        reply.text
    );
    let reply = server.post(EVALUATIONS, &batch).await;
    assert_eq!(decisions(&reply.json), vec![false, true], "{}", reply.text);
    for (path, body) in [
        ("/access/v1/search/subject", &readers),
        ("/access/v1/search/resource", &invoices),
    ] {
        let reply = server.post(path, body).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.json["results"], json!([]), "{path}");
    }
    // The deny is recorded like a decision; the Cedar-native API stays strict.
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains(r#"portcullis_errors_total{kind="undecidable"} 2"#),
        "{metrics}"
    );
    let cedar = server
        .post(
            "/v1/is_authorized",
            &common::request(
                &common::uid("User", "bea"),
                "FlyToTheMoon",
                &common::uid("Invoice", "inv-1001"),
            ),
        )
        .await;
    assert_eq!(cedar.status, 400, "{}", cedar.text);
    assert_eq!(cedar.json["error"], "unknown_action");
    server.stop().await;

    // `unknown_actions: reject`: a 400 naming the action, everywhere.
    let dir = tempfile::tempdir().unwrap();
    let server = portal_with_unknown_actions(dir.path(), "reject").await;
    for (path, body) in [
        (EVALUATION, &fly),
        ("/access/v1/search/subject", &readers),
        ("/access/v1/search/resource", &invoices),
    ] {
        let reply = server.post(path, body).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        assert_eq!(reply.json["error"], "unknown_action", "{path}");
        assert!(
            reply.json["message"]
                .as_str()
                .unwrap()
                .contains("FlyToTheMoon"),
            "{path}: {}",
            reply.text
        );
    }
    let reply = server.post(EVALUATIONS, &batch).await;
    assert_eq!(decisions(&reply.json), vec![false, true], "{}", reply.text);
    assert_eq!(
        reply.json["evaluations"][0]["context"]["error"]["code"],
        "unknown_action"
    );
    server.stop().await;

    // Written out, `deny` is the default.
    let server = portal_with_unknown_actions(dir.path(), "deny").await;
    assert_eq!(server.post(EVALUATION, &fly).await.json["decision"], false);
    server.stop().await;
}

/// Every result of a subject or resource search, page by page.
async fn search_all(server: &TestServer, path: &str, mut body: Value) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let reply = server.post(path, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        pages += 1;
        let results = reply.json["results"].as_array().unwrap();
        for r in results {
            ids.push(r["id"].as_str().or(r["name"].as_str()).unwrap().to_string());
        }
        // Without a `page` in the request, a whole answer carries none.
        let Some(page) = reply.json.get("page") else {
            assert!(body.get("page").is_none(), "{body}: {}", reply.text);
            return (ids, pages);
        };
        assert_eq!(page["count"], results.len());
        if let Some(limit) = body["page"]["limit"].as_u64() {
            assert!(results.len() as u64 <= limit);
        }
        let next = page["next_token"].as_str().unwrap().to_string();
        if next.is_empty() {
            return (ids, pages);
        }
        assert!(pages < 50, "pagination does not end");
        body["page"]["token"] = json!(next);
    }
}

#[tokio::test]
async fn subject_search_finds_who_may_view_acmes_invoice_across_pages() {
    let server = TestServer::portal().await;
    let query = json!({
        "subject": {"type": "user"},
        "action": action("ViewInvoice"),
        "resource": invoice("inv-1001"),
    });
    let whole = server.post("/access/v1/search/subject", &query).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    assert_eq!(
        whole.json,
        json!({
            "results": [{"type": "user", "id": "bea"}, {"type": "user", "id": "olivia"}]
        })
    );

    let mut paged = query.clone();
    paged["page"] = json!({"limit": 1});
    let (ids, pages) = search_all(&server, "/access/v1/search/subject", paged).await;
    assert_eq!(ids, vec!["bea", "olivia"]);
    assert!(pages >= 2, "{pages} pages");
    server.stop().await;
}

#[tokio::test]
async fn resource_search_lists_the_invoices_a_user_may_view() {
    let server = TestServer::portal().await;
    let query = |who: &str| {
        json!({
            "subject": user(who),
            "action": action("ViewInvoice"),
            "resource": {"type": "invoice", "id": "ignored"},
            "page": {"limit": 1},
        })
    };
    let cases = [
        ("bea", vec!["inv-1001"]),
        ("olivia", vec!["inv-1001", "inv-5001"]),
        ("gina", vec!["inv-9001"]),
        ("walt", vec![]),
    ];
    for (who, expected) in cases {
        let (ids, _) = search_all(&server, "/access/v1/search/resource", query(who)).await;
        assert_eq!(ids, expected, "{who}");
    }
    server.stop().await;
}

#[tokio::test]
async fn action_search_lists_exactly_the_bookkeepers_actions_on_the_invoice() {
    let server = TestServer::portal().await;
    let query = |who: &str| {
        json!({
            "subject": user(who),
            "resource": invoice("inv-1001"),
            "context": {"secondFactor": true},
        })
    };
    let reply = server.post("/access/v1/search/action", &query("bea")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let names: BTreeSet<&str> = reply.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["PayInvoice", "ViewInvoice"]));
    assert!(reply.json.get("page").is_none(), "{}", reply.text);

    let walt = server
        .post("/access/v1/search/action", &query("walt"))
        .await;
    assert_eq!(walt.json["results"], json!([]));

    // Paged one at a time, the same two names.
    let mut paged = query("bea");
    paged["page"] = json!({"limit": 1});
    let (ids, pages) = search_all(&server, "/access/v1/search/action", paged).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(pages, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_search_answers_with_a_page_only_when_it_means_something() {
    let server = TestServer::portal().await;
    let dir = tempfile::tempdir().unwrap();
    let bounded = paging_server(dir.path(), None).await;
    let viewers = who_may_view_acmes_invoice();
    let invoices = json!({
        "subject": user("olivia"),
        "action": action("ViewInvoice"),
        "resource": {"type": "invoice"},
    });
    let actions = json!({"subject": user("bea"), "resource": invoice("inv-1001")});
    let nothing = json!({"subject": user("walt"), "resource": invoice("inv-1001")});
    let with_page = |body: &Value, page: Value| {
        let mut body = body.clone();
        body["page"] = page;
        body
    };
    // (what, server, endpoint, request, expected page: None when left out)
    let cases = [
        (
            "whole subjects, unasked",
            &server,
            "/access/v1/search/subject",
            viewers.clone(),
            None,
        ),
        (
            "whole resources, unasked",
            &server,
            "/access/v1/search/resource",
            invoices.clone(),
            None,
        ),
        (
            "whole actions, unasked",
            &server,
            "/access/v1/search/action",
            actions.clone(),
            None,
        ),
        (
            "nothing found, unasked",
            &server,
            "/access/v1/search/action",
            nothing.clone(),
            None,
        ),
        (
            "an empty page asked for",
            &server,
            "/access/v1/search/subject",
            with_page(&viewers, json!({})),
            Some(json!({"next_token": "", "count": 2})),
        ),
        (
            "a limit the results fit in",
            &server,
            "/access/v1/search/resource",
            with_page(&invoices, json!({"limit": 10})),
            Some(json!({"next_token": "", "count": 2})),
        ),
        (
            "nothing found, a page asked for",
            &server,
            "/access/v1/search/action",
            with_page(&nothing, json!({"limit": 10})),
            Some(json!({"next_token": "", "count": 0})),
        ),
    ];
    for (what, server, path, body, expected) in cases {
        let reply = server.post(path, &body).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
        assert_eq!(
            reply.json.get("page"),
            expected.as_ref(),
            "{what}: {}",
            reply.text
        );
    }
    // A partial answer always says so, asked or not.
    let partial = bounded.post("/access/v1/search/subject", &viewers).await;
    assert_eq!(partial.status, 200, "{}", partial.text);
    let next = partial.json["page"]["next_token"].as_str().unwrap();
    assert!(!next.is_empty(), "{}", partial.text);
    server.stop().await;
    bounded.stop().await;
}

#[tokio::test]
async fn search_work_per_call_is_bounded_and_tokens_are_bound_to_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(common::search_mapping(dir.path(), 2, 3));
    let server = TestServer::start(args).await;

    let query = who_may_view_acmes_invoice();
    // Seven users, two examined per call: at least four calls, same answer.
    let (ids, pages) = search_all(&server, "/access/v1/search/subject", query.clone()).await;
    assert_eq!(ids, vec!["bea", "olivia"]);
    assert!(pages >= 4, "{pages} pages");
    // Every user was evaluated exactly once across those calls.
    let metrics = server.admin_get("/metrics").await.text;
    assert!(
        metrics.contains(r#"portcullis_authzen_search_candidates_total{search="subject"} 7"#),
        "{metrics}"
    );

    let first = server.post("/access/v1/search/subject", &query).await;
    let token = first.json["page"]["next_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!token.is_empty());
    let mut changed = query.clone();
    changed["action"] = action("PayInvoice");
    changed["page"] = json!({"token": token});
    let refused = server.post("/access/v1/search/subject", &changed).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json["error"], "invalid_page_token");

    // As in the spec's example, a follow-up may carry only the token: the first
    // request's limit holds. A different limit is refused.
    let mut limited = query.clone();
    limited["page"] = json!({"limit": 1});
    let first = server.post("/access/v1/search/subject", &limited).await;
    let token = first.json["page"]["next_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut follow_up = query.clone();
    follow_up["page"] = json!({"token": token});
    let second = server.post("/access/v1/search/subject", &follow_up).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(second.json["results"].as_array().unwrap().len() <= 1);
    follow_up["page"]["limit"] = json!(5);
    let refused = server.post("/access/v1/search/subject", &follow_up).await;
    assert_eq!(refused.status, 400, "{}", refused.text);

    let mut forged = query.clone();
    forged["page"] = json!({"token": "not-a-token"});
    let refused = server.post("/access/v1/search/subject", &forged).await;
    assert_eq!(refused.status, 400);

    // Every candidate of the paged search was evaluated once, plus two by the first
    // call above: the metric counts exactly that.

    server.stop().await;
}

/// A page token key file holding `key`.
fn key_file(dir: &std::path::Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path
}

/// A server on the small-limits mapping, its page tokens signed with `key` (a random
/// per-process key when `None`).
async fn paging_server(dir: &std::path::Path, key: Option<PathBuf>) -> TestServer {
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(common::search_mapping(dir, 2, 3));
    args.authzen.page_token_key_file = key;
    TestServer::start(args).await
}

/// Who may view acme's invoice, the invoice described by properties (as stored): no
/// plan narrows the subjects then, so the search pages through every user.
fn who_may_view_acmes_invoice() -> Value {
    let mut resource = invoice("inv-1001");
    resource["properties"] = json!({"total": 12000});
    json!({
        "subject": {"type": "user"},
        "action": action("ViewInvoice"),
        "resource": resource,
    })
}

/// The payload of a page token as the server writes it: JSON, in hex, before the dot
/// that precedes the tag.
fn token_payload(token: &str) -> Value {
    let (payload, _tag) = token.split_once('.').expect("a sealed token");
    let bytes: Vec<u8> = (0..payload.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&payload[i..i + 2], 16).unwrap())
        .collect();
    serde_json::from_slice(&bytes).unwrap()
}

fn candidates_evaluated(metrics: &str) -> f64 {
    common::metric(
        metrics,
        r#"portcullis_authzen_search_candidates_total{search="subject"}"#,
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_forged_altered_or_truncated_page_token_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "the-page-token-key-of-this-test-0123456789";
    let key = key_file(dir.path(), "page-token.key", secret);
    let server = paging_server(dir.path(), Some(key.clone())).await;
    let query = who_may_view_acmes_invoice();

    // A genuine token pages through to the end.
    let (ids, pages) = search_all(&server, "/access/v1/search/subject", query.clone()).await;
    assert_eq!(ids, vec!["bea", "olivia"]);
    assert!(pages >= 4, "{pages} pages");

    let first = server.post("/access/v1/search/subject", &query).await;
    let token = first.json["page"]["next_token"]
        .as_str()
        .unwrap()
        .to_string();
    let payload = token_payload(&token);
    assert_eq!(payload["n"], 3, "{payload}");

    let ours = PageTokenKey::from_file(&key).unwrap();
    let wrong = PageTokenKey::from_file(&key_file(
        dir.path(),
        "wrong.key",
        "not-the-key-this-server-was-given-0123456789",
    ))
    .unwrap();
    let mut huge_chunk = payload.clone();
    huge_chunk["n"] = json!(1_000_000_000u64);
    let huge_chunk = serde_json::to_vec(&huge_chunk).unwrap();
    let mut max_chunk = payload.clone();
    max_chunk["n"] = json!(u64::MAX);
    let max_chunk = serde_json::to_vec(&max_chunk).unwrap();
    // Within every limit, so that only the tag can tell.
    let mut rewound = payload.clone();
    rewound["s"] = json!(if payload["s"] == 0 { 1 } else { 0 });
    let rewound = serde_json::to_vec(&rewound).unwrap();
    let (_, genuine_tag) = token.split_once('.').unwrap();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();

    let mut flipped = token.clone().into_bytes();
    flipped[4] = if flipped[4] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    // (what the token is, the token)
    let cases = [
        ("one byte flipped", flipped),
        ("truncated", token[..token.len() - 2].to_string()),
        (
            "without its tag",
            token.split_once('.').unwrap().0.to_string(),
        ),
        ("re-signed with the wrong key", wrong.seal(&rewound)),
        (
            "rewound under the genuine tag",
            format!("{}.{genuine_tag}", hex(&rewound)),
        ),
        (
            "a huge chunk size, signed with the wrong key",
            wrong.seal(&huge_chunk),
        ),
        (
            "a huge chunk size under the genuine tag",
            format!("{}.{genuine_tag}", hex(&huge_chunk)),
        ),
        ("a huge chunk size, unsigned", hex(&huge_chunk)),
        // Even under the right key, every field is bounded by the configured limits.
        (
            "a huge chunk size under the right key",
            ours.seal(&huge_chunk),
        ),
        (
            "the largest integer under the right key",
            ours.seal(&max_chunk),
        ),
    ];
    let before = candidates_evaluated(&server.admin_get("/metrics").await.text);
    for (what, forged) in cases {
        let mut body = query.clone();
        body["page"] = json!({"token": forged});
        let reply = server.post("/access/v1/search/subject", &body).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert_eq!(reply.json["error"], "invalid_page_token", "{what}");
        assert!(
            reply.json["message"]
                .as_str()
                .unwrap()
                .contains("`page.token`"),
            "{what}: {}",
            reply.text
        );
    }
    // Refused before a single candidate was listed or evaluated.
    let metrics = server.admin_get("/metrics").await.text;
    assert_eq!(candidates_evaluated(&metrics), before, "{metrics}");
    assert!(
        !metrics.contains("entity_store_unavailable"),
        "no store error is counted: {metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_one_key_file_two_servers_accept_each_others_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(
        dir.path(),
        "page-token.key",
        "a-key-shared-by-every-replica-0123456789",
    );
    let a = paging_server(dir.path(), Some(key.clone())).await;
    let b = paging_server(dir.path(), Some(key)).await;
    let own_key = paging_server(dir.path(), None).await;
    let mut body = who_may_view_acmes_invoice();
    let mut ids = Vec::new();
    let mut calls = 0;
    loop {
        // The calls alternate between the two replicas.
        let server = if calls % 2 == 0 { &a } else { &b };
        calls += 1;
        let reply = server.post("/access/v1/search/subject", &body).await;
        assert_eq!(reply.status, 200, "call {calls}: {}", reply.text);
        for r in reply.json["results"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        let next = reply.json["page"]["next_token"].as_str().unwrap_or("");
        if next.is_empty() {
            break;
        }
        // A replica with a key of its own does not accept another's token.
        body["page"] = json!({"token": next});
        let refused = own_key.post("/access/v1/search/subject", &body).await;
        assert_eq!(refused.status, 400, "{}", refused.text);
        assert_eq!(refused.json["error"], "invalid_page_token");
        assert!(calls < 50, "pagination does not end");
    }
    assert_eq!(ids, vec!["bea", "olivia"]);
    assert!(calls >= 4, "{calls} calls");
    a.stop().await;
    b.stop().await;
    own_key.stop().await;
}

#[test]
fn a_page_token_key_file_that_is_missing_or_short_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let short = key_file(dir.path(), "short.key", "only-sixteen-chr");
    // (key file, text the refusal must contain)
    let cases = [
        (dir.path().join("absent.key"), "absent.key"),
        (short, "at least 32 bytes, found 16"),
    ];
    for (path, needle) in cases {
        let mut args = ServeArgs::default();
        args.authzen.page_token_key_file = Some(path);
        let err = portcullis::http::App::build(&args).err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("`--page-token-key-file`"), "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

#[tokio::test]
async fn a_token_issued_before_a_reload_is_refused_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = paging_server(dir.path(), None).await;
    let query = who_may_view_acmes_invoice();
    let first = server.post("/access/v1/search/subject", &query).await;
    let mut follow_up = query.clone();
    follow_up["page"] = json!({"token": first.json["page"]["next_token"]});
    assert_eq!(
        server
            .post("/access/v1/search/subject", &follow_up)
            .await
            .status,
        200
    );

    // The mapping changes (its limits stay): the model is a new one.
    let mapping = dir.path().join("authzen.yaml");
    let mut text = std::fs::read_to_string(&mapping).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&mapping, text).unwrap();
    let gate = SourceGate(server.app.entities.clone());
    let outcome = server.app.model.reload(Trigger::Manual, &gate).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );

    let refused = server.post("/access/v1/search/subject", &follow_up).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json["error"], "invalid_page_token");
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("reloaded"),
        "{}",
        refused.text
    );
    server.stop().await;
}

#[tokio::test]
async fn discovery_advertises_every_endpoint_under_the_public_base_url() {
    let mut args = ServeArgs::default();
    args.authzen.public_base_url = Some("https://pdp.example.com/".to_string());
    let server = TestServer::start(args).await;
    let reply = server.get("/.well-known/authzen-configuration").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json,
        json!({
            "policy_decision_point": "https://pdp.example.com",
            "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations",
            "search_subject_endpoint": "https://pdp.example.com/access/v1/search/subject",
            "search_resource_endpoint": "https://pdp.example.com/access/v1/search/resource",
            "search_action_endpoint": "https://pdp.example.com/access/v1/search/action",
        })
    );
    assert_eq!(reply.header("cache-control"), Some("max-age=300"));
    server.stop().await;

    // Without one, the address the request came to.
    let server = TestServer::portal().await;
    let reply = server.get("/.well-known/authzen-configuration").await;
    assert_eq!(
        reply.json["access_evaluation_endpoint"],
        format!("http://{}/access/v1/evaluation", server.addr)
    );
    // A client-chosen `Host` shapes that document, so no cache may keep it for others.
    let forged = server
        .send(
            Method::GET,
            "/.well-known/authzen-configuration",
            &[("host", "evil.example")],
            Vec::new(),
        )
        .await;
    assert_eq!(
        forged.json["access_evaluation_endpoint"],
        "http://evil.example/access/v1/evaluation"
    );
    assert_eq!(forged.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    server.stop().await;
}

/// A body, its headers, the expected error code and text the message must contain.
type BadRequestCase<'a> = (Vec<u8>, &'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test]
async fn malformed_requests_get_400_with_a_message_naming_the_field() {
    let server = TestServer::portal().await;
    let good = eval(user("bea"), "PayInvoice", invoice("inv-1001"));
    let json_ct = [("content-type", "application/json")];
    // (body, headers, expected code, text in the message)
    let cases: Vec<BadRequestCase> = vec![
        (b"{not json".to_vec(), &json_ct, "malformed_json", "JSON"),
        (good.to_string().into_bytes(), &[("content-type", "text/plain")], "unsupported_media_type", "Content-Type"),
        (b"[1, 2]".to_vec(), &json_ct, "invalid_field", "request body"),
        (json!({"action": action("PayInvoice"), "resource": invoice("inv-1001")}).to_string().into_bytes(), &json_ct, "missing_field", "`subject`"),
        (json!({"subject": {"type": 7, "id": "bea"}, "action": action("PayInvoice"), "resource": invoice("inv-1001")}).to_string().into_bytes(), &json_ct, "invalid_field", "`subject.type`"),
        (json!({"subject": {"type": "user"}, "action": action("PayInvoice"), "resource": invoice("inv-1001")}).to_string().into_bytes(), &json_ct, "missing_field", "`subject.id`"),
        (json!({"subject": user("bea"), "action": {}, "resource": invoice("inv-1001")}).to_string().into_bytes(), &json_ct, "missing_field", "`action.name`"),
        (json!({"subject": user("bea"), "action": action("PayInvoice"), "resource": invoice("inv-1001"), "context": "now"}).to_string().into_bytes(), &json_ct, "invalid_field", "`context`"),
        (eval(json!({"type": "robot", "id": "r2"}), "PayInvoice", invoice("inv-1001")).to_string().into_bytes(), &json_ct, "unknown_entity_type", "`subject.type`"),
        (eval(user("bea"), "PayInvoice", json!({"type": "account", "id": "acme"})).to_string().into_bytes(), &json_ct, "request_not_in_schema", "resource"),
    ];
    for (body, headers, code, needle) in cases {
        let reply = server
            .send(Method::POST, EVALUATION, headers, body.clone())
            .await;
        let shown = String::from_utf8_lossy(&body).to_string();
        assert_eq!(reply.status, 400, "{shown}: {}", reply.text);
        assert_eq!(reply.json["error"], code, "{shown}: {}", reply.text);
        assert!(
            reply.json["message"].as_str().unwrap().contains(needle),
            "{shown}: {}",
            reply.text
        );
    }

    // Unknown fields are ignored, as the spec requires.
    let mut extra = good.clone();
    extra["future"] = json!({"anything": true});
    extra["subject"]["nickname"] = json!("b");
    assert_eq!(
        server.post(EVALUATION, &extra).await.json,
        json!({"decision": true})
    );

    let wrong_method = server.get(EVALUATION).await;
    assert_eq!(wrong_method.status, 405);
    server.stop().await;
}

#[tokio::test]
async fn the_request_id_is_echoed() {
    let server = TestServer::portal().await;
    let rid = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716";
    for body in [
        eval(user("bea"), "PayInvoice", invoice("inv-1001")).to_string(),
        "{broken".to_string(),
    ] {
        let reply = server
            .send(
                Method::POST,
                EVALUATION,
                &[("content-type", "application/json"), ("x-request-id", rid)],
                body.into_bytes(),
            )
            .await;
        assert_eq!(reply.header("x-request-id"), Some(rid));
    }
    server.stop().await;
}

async fn library(precedence: Option<&str>) -> (TestServer, tempfile::TempDir) {
    library_with(precedence, RequireEntities::default()).await
}

async fn library_with(
    precedence: Option<&str>,
    require: RequireEntities,
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut mapping = std::fs::read_to_string(fixture("library/authzen.yaml")).unwrap();
    if let Some(p) = precedence {
        mapping.push_str(&format!("properties_precedence: {p}\n"));
    }
    let mapping_path = dir.path().join("authzen.yaml");
    std::fs::write(&mapping_path, mapping).unwrap();
    let mut args = ServeArgs::default();
    args.model.schema = Some(fixture("library/library.cedarschema"));
    args.model.policies = Some(fixture("library/policies"));
    args.entity.entities = Some(fixture("library/entities.json"));
    args.model.authzen_mapping = Some(mapping_path);
    args.entity.require_entities = require;
    (TestServer::start(args).await, dir)
}

fn member(id: &str) -> Value {
    json!({"type": "Library::Member", "id": id})
}

fn book(id: &str) -> Value {
    json!({"type": "book", "id": id})
}

#[tokio::test]
async fn a_non_portal_schema_is_served_with_configuration_only() {
    let (server, _dir) = library(None).await;
    let two_weeks = json!({"name": "borrow", "properties": {"period": "2W"}});
    let with_action = |subject: Value, action: Value, resource: Value, context: Value| json!({"subject": subject, "action": action, "resource": resource, "context": context});
    // (request, expected decision)
    let cases = [
        (eval(member("alice"), "can_read", book("b1")), true),
        (eval(member("bob"), "can_read", book("b1")), false),
        (eval(member("bob"), "read", book("b2")), true),
        // Action properties reach the policy as `context.actionProperties`.
        (
            with_action(member("alice"), two_weeks.clone(), book("b2"), json!({})),
            true,
        ),
        (
            with_action(
                member("alice"),
                json!({"name": "borrow", "properties": {"period": "1Y"}}),
                book("b2"),
                json!({}),
            ),
            false,
        ),
        (
            with_action(member("bob"), two_weeks.clone(), book("b2"), json!({})),
            false,
        ),
        // The context's IP string becomes an ipaddr.
        (
            with_action(
                member("alice"),
                two_weeks.clone(),
                book("b2"),
                json!({"ip": "192.168.4.2"}),
            ),
            true,
        ),
        (
            with_action(
                member("alice"),
                two_weeks.clone(),
                book("b2"),
                json!({"ip": "10.0.0.1"}),
            ),
            false,
        ),
        // A member the store does not hold, described by properties (the level as a
        // string is converted to Long; the undeclared `nickname` is ignored).
        (
            with_action(
                json!({"type": "Library::Member", "id": "carol", "properties": {"department": "art", "level": "4", "nickname": "c"}}),
                two_weeks.clone(),
                book("b2"),
                json!({}),
            ),
            true,
        ),
    ];
    for (request, expected) in cases {
        let reply = server.post(EVALUATION, &request).await;
        assert_eq!(reply.status, 200, "{request}: {}", reply.text);
        assert_eq!(reply.json["decision"], expected, "{request}");
    }

    // Stored attributes win by default: bob cannot claim a higher level.
    let mut bob_claims = with_action(member("bob"), two_weeks.clone(), book("b2"), json!({}));
    bob_claims["subject"]["properties"] = json!({"level": 9});
    assert_eq!(
        server.post(EVALUATION, &bob_claims).await.json["decision"],
        false
    );

    // Searches work on the same configuration.
    let (readers, _) = search_all(
        &server,
        "/access/v1/search/subject",
        json!({"subject": {"type": "Library::Member"}, "action": action("read"), "resource": book("b3")}),
    )
    .await;
    assert_eq!(readers, vec!["alice"]);
    let (books, _) = search_all(
        &server,
        "/access/v1/search/resource",
        json!({"subject": member("bob"), "action": action("can_read"), "resource": {"type": "book"}}),
    )
    .await;
    assert_eq!(books, vec!["b2"]);
    let actions = server
        .post(
            "/access/v1/search/action",
            &json!({"subject": member("alice"), "resource": book("b1")}),
        )
        .await;
    assert_eq!(actions.json["results"], json!([{"name": "can_read"}]));
    server.stop().await;

    // With request precedence the PEP's attributes replace the stored ones.
    let (server, _dir) = library(Some("request")).await;
    assert_eq!(
        server.post(EVALUATION, &bob_claims).await.json["decision"],
        true
    );
    server.stop().await;

    // With `ignore`, properties never count, not even for a member the store lacks.
    let (server, _dir) = library(Some("ignore")).await;
    let carol = with_action(
        json!({"type": "Library::Member", "id": "carol", "properties": {"department": "art", "level": 4}}),
        two_weeks.clone(),
        book("b2"),
        json!({}),
    );
    assert_eq!(
        server.post(EVALUATION, &carol).await.json["decision"],
        false
    );
    server.stop().await;
}

#[tokio::test]
async fn precedence_per_type_takes_a_books_owner_from_the_request_but_never_a_members_level() {
    // The PEP is the authority on books (it says who owns one); members' levels come
    // only from the store, so a member cannot claim a higher one.
    let bob_reads_b1_as_owner = {
        let mut r = eval(member("bob"), "read", book("b1"));
        r["resource"]["properties"] = json!({"owner": {"type": "Library::Member", "id": "bob"}});
        r
    };
    let bob_claims_level_9 = {
        let mut r = json!({
            "subject": member("bob"),
            "action": {"name": "borrow", "properties": {"period": "2W"}},
            "resource": book("b2"),
        });
        r["subject"]["properties"] = json!({"level": 9});
        r
    };
    // (precedence, bob reads b1 as its owner, bob borrows with level 9)
    let cases = [
        (None, false, false),
        (Some("request"), true, true),
        (
            Some("{default: store, types: {book: request}}"),
            true,
            false,
        ),
        (
            Some("{default: request, types: {Library::Member: store}}"),
            true,
            false,
        ),
        (Some("{types: {book: ignore}}"), false, false),
    ];
    for (precedence, owner_claim, level_claim) in cases {
        let (server, _dir) = library(precedence).await;
        let owner = server.post(EVALUATION, &bob_reads_b1_as_owner).await;
        assert_eq!(owner.status, 200, "{precedence:?}: {}", owner.text);
        assert_eq!(owner.json["decision"], owner_claim, "{precedence:?}: owner");
        let level = server.post(EVALUATION, &bob_claims_level_9).await;
        assert_eq!(level.json["decision"], level_claim, "{precedence:?}: level");
        server.stop().await;
    }
}

#[tokio::test]
async fn a_search_about_what_the_pdp_does_not_know_finds_nothing() {
    // Plain Cedar semantics for decisions: `read-open-or-own` then allows anyone,
    // held or not, to read an open book. A search still finds only what exists.
    let (server, _dir) = library_with(None, RequireEntities::None).await;
    let read = action("read");
    let nobody = member("zed");
    // (what, endpoint, request)
    let cases = [
        (
            "actions of a member nobody holds",
            "/access/v1/search/action",
            json!({"subject": nobody, "resource": book("b2")}),
        ),
        (
            "actions on a book nobody holds",
            "/access/v1/search/action",
            json!({"subject": member("alice"), "resource": book("b404")}),
        ),
        (
            "actions of a type the PDP does not know",
            "/access/v1/search/action",
            json!({"subject": {"type": "robot", "id": "r2"}, "resource": book("b1")}),
        ),
        (
            "readers of a book nobody holds",
            "/access/v1/search/subject",
            json!({"subject": {"type": "Library::Member"}, "action": read, "resource": book("b404")}),
        ),
        (
            "readers of a type the PDP does not know",
            "/access/v1/search/subject",
            json!({"subject": {"type": "robot"}, "action": read, "resource": book("b1")}),
        ),
        (
            "books a member nobody holds may read",
            "/access/v1/search/resource",
            json!({"subject": nobody, "action": read, "resource": {"type": "book"}}),
        ),
        (
            "things of a type the PDP does not know",
            "/access/v1/search/resource",
            json!({"subject": member("alice"), "action": read, "resource": {"type": "spaceship"}}),
        ),
        (
            "books of a member of a type the PDP does not know",
            "/access/v1/search/resource",
            json!({"subject": {"type": "robot", "id": "r2"}, "action": read, "resource": {"type": "book"}}),
        ),
    ];
    for (what, path, request) in cases {
        let reply = server.post(path, &request).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
        assert_eq!(reply.json["results"], json!([]), "{what}: {}", reply.text);
    }

    // The same searches about entities that exist find them.
    let reply = server
        .post(
            "/access/v1/search/action",
            &json!({"subject": member("alice"), "resource": book("b1")}),
        )
        .await;
    assert_eq!(reply.json["results"], json!([{"name": "can_read"}]));
    // A member the store lacks but the request describes is searched for (b2 is open).
    let described = json!({"type": "Library::Member", "id": "carol", "properties": {"department": "art", "level": 4}});
    let reply = server
        .post(
            "/access/v1/search/action",
            &json!({"subject": described, "resource": book("b2")}),
        )
        .await;
    assert_eq!(
        reply.json["results"],
        json!([{"name": "can_read"}]),
        "{}",
        reply.text
    );
    server.stop().await;
}

#[tokio::test]
async fn a_mapping_naming_undeclared_types_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authzen.yaml");
    std::fs::write(&path, "entity_types:\n  robot: Portal::Robot\n").unwrap();
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(path);
    let err = portcullis::http::App::build(&args).err().expect("refused");
    assert!(err.to_string().contains("Portal::Robot"), "{err}");
}

mod tls {
    use super::*;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use tokio_rustls::rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
        ClientConfig, RootCertStore,
    };

    /// A CA, a server certificate for `localhost` and a client certificate, all made
    /// here, written as PEM files.
    struct Pki {
        dir: tempfile::TempDir,
        ca_pem: String,
        client_cert_pem: String,
        client_key_pem: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["pep.local".to_string()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    fn args(pki: &Pki, mtls: bool) -> ServeArgs {
        let mut args = ServeArgs::default();
        args.tls.tls_cert = Some(pki.dir.path().join("server.pem"));
        args.tls.tls_key = Some(pki.dir.path().join("server.key"));
        if mtls {
            args.tls.tls_client_ca = Some(pki.dir.path().join("ca.pem"));
        }
        args
    }

    fn client_config(pki: &Pki, with_cert: bool) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        if with_cert {
            builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(pki.client_cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(pki.client_key_pem.as_bytes()).unwrap(),
                )
                .unwrap()
        } else {
            builder.with_no_client_auth()
        }
    }

    /// POSTs an evaluation over HTTPS; the error as text when the connection or the
    /// request fails.
    async fn post_https(
        server: &TestServer,
        config: ClientConfig,
        body: &Value,
    ) -> Result<(u16, Value), String> {
        https(server, config, "POST", EVALUATION, body.to_string()).await
    }

    /// Sends one request over HTTPS; the error as text when the connection or the
    /// request fails.
    async fn https(
        server: &TestServer,
        config: ClientConfig,
        method: &str,
        path: &str,
        body: String,
    ) -> Result<(u16, Value), String> {
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    #[tokio::test]
    async fn https_serves_authzen_and_discovery_says_https() {
        let pki = pki();
        let server = TestServer::start(args(&pki, false)).await;
        let body = eval(user("bea"), "PayInvoice", invoice("inv-1001"));
        let reply = post_https(&server, client_config(&pki, false), &body).await;
        assert_eq!(reply, Ok((200, json!({"decision": true}))));
        let discovery = https(
            &server,
            client_config(&pki, false),
            "GET",
            "/.well-known/authzen-configuration",
            String::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            discovery.1["access_evaluation_endpoint"],
            "https://localhost/access/v1/evaluation"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn mutual_tls_refuses_a_client_without_a_certificate() {
        let pki = pki();
        let server = TestServer::start(args(&pki, true)).await;
        let body = eval(user("bea"), "PayInvoice", invoice("inv-1001"));
        let with_cert = post_https(&server, client_config(&pki, true), &body).await;
        assert_eq!(with_cert, Ok((200, json!({"decision": true}))));
        let without = post_https(&server, client_config(&pki, false), &body).await;
        assert!(
            without.is_err(),
            "served without a client certificate: {without:?}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn plain_http_is_not_answered_on_a_tls_listener() {
        let pki = pki();
        let server = TestServer::start(args(&pki, false)).await;
        let plain = common::try_send(server.addr, http::Method::GET, "/healthz", &[], Vec::new())
            .await
            .map(|r| r.status);
        assert!(plain.is_none(), "{plain:?}");
        server.stop().await;
    }

    #[test]
    fn a_key_that_is_not_pem_is_refused_with_the_file_named() {
        let pki = pki();
        let bad = pki.dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let mut a = args(&pki, false);
        a.tls.tls_key = Some(bad.clone());
        let err = portcullis::http::app::open_tls(&a.tls).expect_err("refused");
        assert!(err.to_string().contains("bad.key"), "{err}");
    }
}
