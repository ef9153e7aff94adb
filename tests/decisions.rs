#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! Cross-account pairs for every permission key, generated, through the real HTTP API.
//! The domain's expected decisions and the seed stories are stated once, in the policy
//! test suites under `policies/tests`, and run through every surface and entity source
//! by `tests/decision_table.rs`.

mod common;

use common::{request, uid, TestServer};
use portcullis::config::{EntityArgs, ServeArgs};
use serde_json::{json, Value};

const ALLOW: bool = true;
const DENY: bool = false;

/// One decision the model must make: who, what, on which resource, with what context.
struct Case {
    what: &'static str,
    principal: String,
    action: &'static str,
    resource: String,
    context: Value,
    allowed: bool,
}

/// Runs every case against the server and reports all mismatches at once.
async fn check(server: &TestServer, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let mut body = request(&c.principal, c.action, &c.resource);
        body["context"] = c.context.clone();
        let reply = server.post("/v1/is_authorized", &body).await;
        if reply.status != 200 {
            failures.push(format!(
                "{}: status {} {}",
                c.what, reply.status, reply.text
            ));
            continue;
        }
        let expected = if c.allowed { "Allow" } else { "Deny" };
        if reply.json["decision"] != expected {
            failures.push(format!(
                "{}: expected {expected}, got {}",
                c.what, reply.text
            ));
        }
        if !reply.json["diagnostics"]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            failures.push(format!("{}: evaluation errors {}", c.what, reply.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The permission keys: for each, the actions it grants on the account's objects.
const KEYS: &[(&str, &[(&str, &str)])] = &[
    (
        "profile",
        &[("ViewProfile", "Account"), ("UpdateProfile", "Account")],
    ),
    (
        "contacts",
        &[("ManageContacts", "Account"), ("ManageContacts", "Contact")],
    ),
    ("products", &[("ViewService", "Service")]),
    ("manageproducts", &[("ManageService", "Service")]),
    ("productsso", &[("ServiceSso", "Service")]),
    ("domains", &[("ViewDomain", "Domain")]),
    ("managedomains", &[("ManageDomain", "Domain")]),
    (
        "invoices",
        &[
            ("ViewInvoice", "Invoice"),
            ("PayInvoice", "Invoice"),
            ("UpdatePaymentMethod", "Account"),
        ],
    ),
    (
        "quotes",
        &[("ViewQuote", "Quote"), ("AcceptQuote", "Quote")],
    ),
    (
        "tickets",
        &[
            ("ViewTicket", "Ticket"),
            ("ReplyTicket", "Ticket"),
            ("OpenTicket", "Account"),
        ],
    ),
    ("affiliates", &[("ManageAffiliate", "Account")]),
    ("emails", &[("ViewEmailHistory", "Account")]),
    ("orders", &[("PlaceOrder", "Account")]),
];

/// One object of each type on acme and on globex.
fn object(ty: &str, account: &str) -> String {
    let id = match (ty, account) {
        ("Account", a) => a,
        ("Contact", "acme") => "carl",
        ("Contact", _) => "gus",
        ("Service", "acme") => "svc-3001",
        ("Service", _) => "svc-9003",
        ("Domain", "acme") => "acme.example",
        ("Domain", _) => "globex.example",
        ("Invoice", "acme") => "inv-1001",
        ("Invoice", _) => "inv-9001",
        ("Quote", "acme") => "q-4001",
        ("Quote", _) => "q-9004",
        ("Ticket", "acme") => "t-2001",
        ("Ticket", _) => "t-9002",
        _ => "unknown",
    };
    uid(ty, id)
}

fn entity(ty: &str, id: &str, attrs: Value, parents: Value, tags: Value) -> Value {
    json!({"uid": {"type": format!("Portal::{ty}"), "id": id}, "attrs": attrs, "parents": parents, "tags": tags})
}

fn globex_ref() -> Value {
    json!({"__entity": {"type": "Portal::Account", "id": "globex"}})
}

/// The demo data plus: one acme member per permission key holding only that key; globex
/// objects of every type; and a user whose tag names acme without being a member.
fn cross_account_data() -> tempfile::NamedTempFile {
    let demo = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/portal/entities.json"
    ))
    .unwrap();
    let mut all: Vec<Value> = serde_json::from_str(&demo).unwrap();
    for (key, _) in KEYS {
        all.push(entity(
            "User",
            &format!("only-{key}"),
            json!({"email": format!("{key}@example.test"), "disabled": false, "twoFactorEnrolled": true}),
            json!([{"type": "Portal::Account", "id": "acme"}]),
            json!({"acme": {"permissions": [key], "emailCategories": []}}),
        ));
    }
    let every: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    // A globex member whose data also carries a tag for acme, as a bad sync might
    // write it: without acme as a parent it must reach nothing on acme.
    all.push(entity(
        "User",
        "forger",
        json!({"email": "forger@example.test", "disabled": false, "twoFactorEnrolled": true}),
        json!([{"type": "Portal::Account", "id": "globex"}]),
        json!({"acme": {"permissions": every, "emailCategories": ["invoice"]}}),
    ));
    all.push(entity(
        "Contact",
        "gus",
        json!({"account": globex_ref(), "email": "gus@globex.example", "emailCategories": []}),
        json!([]),
        json!({}),
    ));
    all.push(entity(
        "Service",
        "svc-9003",
        json!({"account": globex_ref(), "name": "VPS"}),
        json!([]),
        json!({}),
    ));
    all.push(entity(
        "Quote",
        "q-9004",
        json!({"account": globex_ref()}),
        json!([]),
        json!({}),
    ));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_string(&all).unwrap()).unwrap();
    file
}

#[tokio::test]
async fn each_permission_key_grants_its_actions_on_its_account_only() {
    let data = cross_account_data();
    let server = TestServer::start(ServeArgs {
        entity: EntityArgs {
            entities: Some(data.path().to_path_buf()),
            ..EntityArgs::default()
        },
        ..ServeArgs::default()
    })
    .await;
    let two_factor = json!({"secondFactor": true});
    let mut cases = Vec::new();
    for (key, grants) in KEYS {
        let member = uid("User", &format!("only-{key}"));
        for (action, ty) in *grants {
            let on = |account: &str, allowed: bool| Case {
                what: if allowed {
                    "a key grants its action on its own account"
                } else {
                    "a key grants nothing on another account"
                },
                principal: member.clone(),
                action,
                resource: object(ty, account),
                context: two_factor.clone(),
                allowed,
            };
            cases.push(on("acme", ALLOW));
            cases.push(on("globex", DENY));
        }
        // And no other key's actions, on the member's own account.
        for (other, other_grants) in KEYS {
            if other == key {
                continue;
            }
            for (action, ty) in other_grants.iter() {
                if grants.iter().any(|(a, t)| a == action && t == ty) {
                    continue;
                }
                cases.push(Case {
                    what: "a key grants no other key's action",
                    principal: member.clone(),
                    action,
                    resource: object(ty, "acme"),
                    context: two_factor.clone(),
                    allowed: DENY,
                });
            }
        }
        // Only the owner manages users, whatever key a member holds.
        cases.push(Case {
            what: "no key lets a member manage users",
            principal: member.clone(),
            action: "ManageUsers",
            resource: object("Account", "acme"),
            context: json!({}),
            allowed: DENY,
        });
    }
    for (_, grants) in KEYS {
        for (action, ty) in *grants {
            cases.push(Case {
                what: "a tag without membership grants nothing",
                principal: uid("User", "forger"),
                action,
                resource: object(ty, "acme"),
                context: two_factor.clone(),
                allowed: DENY,
            });
        }
    }
    check(&server, &cases).await;
}
