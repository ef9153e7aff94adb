//! Templates and links in the shipped portal model, and `GET /v1/policies` on it.

#![allow(clippy::indexing_slicing)]

mod common;

use common::{request, uid, TestServer};

/// What the shipped `resource-grant-view` link (the owner shares quote q-4001 with
/// the bookkeeper) allows, and what it leaves denied.
#[tokio::test]
async fn the_shipped_grant_lets_the_bookkeeper_view_one_quote_and_nothing_more() {
    let server = TestServer::portal().await;
    let user = |id| uid("User", id);
    let cases = [
        // The link: bea holds no `quotes` key, yet may view this one quote.
        (user("bea"), "ViewQuote", uid("Quote", "q-4001"), true),
        // Viewing is all the grant gives: accepting the quote stays the owner's.
        (user("bea"), "AcceptQuote", uid("Quote", "q-4001"), false),
        // The grant names bea alone: the webmaster still sees no quote.
        (user("walt"), "ViewQuote", uid("Quote", "q-4001"), false),
        // The owner sees it anyway.
        (user("olivia"), "ViewQuote", uid("Quote", "q-4001"), true),
        // The domain's expected decisions stay as they were.
        (
            user("walt"),
            "ViewInvoice",
            uid("Invoice", "inv-1001"),
            false,
        ),
        (user("bea"), "PayInvoice", uid("Invoice", "inv-1001"), true),
        (
            user("bea"),
            "ViewInvoice",
            uid("Invoice", "inv-9001"),
            false,
        ),
    ];
    for (principal, action, resource, allowed) in cases {
        let reply = server
            .post("/v1/is_authorized", &request(&principal, action, &resource))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let expected = if allowed { "Allow" } else { "Deny" };
        assert_eq!(
            reply.json["decision"], expected,
            "{principal} {action} {resource}: {}",
            reply.text
        );
    }
    let reply = server
        .post(
            "/v1/is_authorized",
            &request(&user("bea"), "ViewQuote", &uid("Quote", "q-4001")),
        )
        .await;
    assert_eq!(
        reply.json["diagnostics"]["reason"],
        serde_json::json!(["bea-views-quote-q-4001"])
    );
    server.stop().await;
}

#[tokio::test]
async fn policies_lists_policies_templates_and_links_with_their_files_and_hashes() {
    let server = TestServer::portal().await;
    let reply = server.admin_get("/v1/policies").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = &reply.json;

    let hex64 = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    assert!(hex64(&body["hash"]), "{}", body["hash"]);
    assert!(hex64(&body["schema_hash"]));
    assert!(body["loaded_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let policies = body["policies"].as_array().cloned().unwrap_or_default();
    let login = policies
        .iter()
        .find(|p| p["id"] == "member-login")
        .cloned()
        .unwrap_or_default();
    assert_eq!(login["file"], "policies/members.cedar");
    assert!(login["line"].as_u64().is_some_and(|l| l > 1));
    assert!(hex64(&login["hash"]));

    assert_eq!(
        body["templates"],
        serde_json::json!([{
            "id": "resource-grant-view",
            "file": "policies/grants.cedar",
            "line": body["templates"][0]["line"],
            "hash": body["templates"][0]["hash"],
        }])
    );
    let links = body["links"].as_array().cloned().unwrap_or_default();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["id"], "bea-views-quote-q-4001");
    assert_eq!(links[0]["template_id"], "resource-grant-view");
    assert_eq!(links[0]["file"], "policies/links.json");
    assert_eq!(links[0]["args"]["?principal"], uid("User", "bea"));
    assert_eq!(links[0]["args"]["?resource"], uid("Quote", "q-4001"));
    assert_eq!(
        body["active_policies"].as_u64(),
        Some(policies.len() as u64 + 1)
    );

    // The shipped model is compiled in: nothing to watch, nothing reloaded yet.
    assert_eq!(body["reload"]["watching"], false);
    assert!(body["reload"]["last_error"].is_null());
    assert!(body["reload"]["last_result"].is_null());

    let wrong = common::send(
        server.admin_addr,
        http::Method::POST,
        "/v1/policies",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json["error"], "method_not_allowed");
    server.stop().await;
}
