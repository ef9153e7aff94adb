#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! The portal model's decisions through the real HTTP API: every expected decision of
//! the domain, each seed story as allow/deny pairs, and cross-account pairs for every
//! permission key.

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

fn case(
    what: &'static str,
    principal: (&str, &str),
    action: &'static str,
    resource: (&str, &str),
    allowed: bool,
) -> Case {
    Case {
        what,
        principal: uid(principal.0, principal.1),
        action,
        resource: uid(resource.0, resource.1),
        context: json!({}),
        allowed,
    }
}

fn with_context(mut c: Case, context: Value) -> Case {
    c.context = context;
    c
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

#[tokio::test]
async fn the_domains_expected_decisions_hold() {
    let server = TestServer::portal().await;
    let mut cases = vec![
        case(
            "olivia may view acme's invoice",
            ("User", "olivia"),
            "ViewInvoice",
            ("Invoice", "inv-1001"),
            ALLOW,
        ),
        case(
            "walt may not view acme's invoice",
            ("User", "walt"),
            "ViewInvoice",
            ("Invoice", "inv-1001"),
            DENY,
        ),
        case(
            "walt may open a ticket on acme",
            ("User", "walt"),
            "OpenTicket",
            ("Account", "acme"),
            ALLOW,
        ),
        case(
            "bea may pay acme's invoice",
            ("User", "bea"),
            "PayInvoice",
            ("Invoice", "inv-1001"),
            ALLOW,
        ),
        case(
            "bea may not view globex's invoice",
            ("User", "bea"),
            "ViewInvoice",
            ("Invoice", "inv-9001"),
            DENY,
        ),
        case(
            "dev may manage globex's domain",
            ("User", "dev"),
            "ManageDomain",
            ("Domain", "globex.example"),
            ALLOW,
        ),
        case(
            "dev may not manage acme's domain",
            ("User", "dev"),
            "ManageDomain",
            ("Domain", "acme.example"),
            DENY,
        ),
        case(
            "carl may not log in",
            ("Contact", "carl"),
            "Login",
            ("Account", "acme"),
            DENY,
        ),
        case(
            "carl receives acme invoice email",
            ("Contact", "carl"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-invoice"),
            ALLOW,
        ),
        case(
            "carl does not receive acme general email",
            ("Contact", "carl"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-general"),
            DENY,
        ),
    ];
    // "dora anything deny": every action dora's membership would otherwise allow.
    for (action, resource) in [
        ("Login", ("Account", "acme")),
        ("ViewProfile", ("Account", "acme")),
        ("ManageContacts", ("Account", "acme")),
        ("ViewService", ("Service", "svc-3001")),
        ("ManageService", ("Service", "svc-3001")),
        ("ServiceSso", ("Service", "svc-3001")),
        ("ViewDomain", ("Domain", "acme.example")),
        ("ManageDomain", ("Domain", "acme.example")),
        ("ViewInvoice", ("Invoice", "inv-1001")),
        ("PayInvoice", ("Invoice", "inv-1001")),
        ("ViewQuote", ("Quote", "q-4001")),
        ("AcceptQuote", ("Quote", "q-4001")),
        ("ViewTicket", ("Ticket", "t-2001")),
        ("ReplyTicket", ("Ticket", "t-2001")),
        ("OpenTicket", ("Account", "acme")),
        ("ManageAffiliate", ("Account", "acme")),
        ("ViewEmailHistory", ("Account", "acme")),
        ("PlaceOrder", ("Account", "acme")),
        ("ReceiveEmail", ("EmailMessage", "msg-acme-general")),
    ] {
        cases.push(case(
            "disabled dora is denied",
            ("User", "dora"),
            action,
            resource,
            DENY,
        ));
    }
    cases.push(with_context(
        case(
            "disabled dora is denied even with a second factor",
            ("User", "dora"),
            "UpdatePaymentMethod",
            ("Account", "acme"),
            DENY,
        ),
        json!({"secondFactor": true}),
    ));
    check(&server, &cases).await;
}

#[tokio::test]
async fn the_seed_stories_hold_as_allow_deny_pairs() {
    let server = TestServer::portal().await;
    let two_factor = json!({"secondFactor": true});
    let cases = vec![
        // 1. Webmaster: tickets and support email, nothing about billing.
        case(
            "the webmaster may view acme's ticket",
            ("User", "walt"),
            "ViewTicket",
            ("Ticket", "t-2001"),
            ALLOW,
        ),
        case(
            "the webmaster may reply to acme's ticket",
            ("User", "walt"),
            "ReplyTicket",
            ("Ticket", "t-2001"),
            ALLOW,
        ),
        case(
            "the webmaster gets support email",
            ("User", "walt"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        case(
            "the webmaster may not pay invoices",
            ("User", "walt"),
            "PayInvoice",
            ("Invoice", "inv-1001"),
            DENY,
        ),
        case(
            "the webmaster gets no invoice email",
            ("User", "walt"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-invoice"),
            DENY,
        ),
        with_context(
            case(
                "the webmaster may not see billing details",
                ("User", "walt"),
                "UpdatePaymentMethod",
                ("Account", "acme"),
                DENY,
            ),
            two_factor.clone(),
        ),
        // 2. Bookkeeper: invoices and billing tickets the owner also sees.
        case(
            "the bookkeeper may view acme's invoice",
            ("User", "bea"),
            "ViewInvoice",
            ("Invoice", "inv-1001"),
            ALLOW,
        ),
        case(
            "the bookkeeper may open a billing ticket",
            ("User", "bea"),
            "OpenTicket",
            ("Account", "acme"),
            ALLOW,
        ),
        case(
            "the owner sees tickets opened by others",
            ("User", "olivia"),
            "ViewTicket",
            ("Ticket", "t-2001"),
            ALLOW,
        ),
        case(
            "the bookkeeper gets invoice email",
            ("User", "bea"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-invoice"),
            ALLOW,
        ),
        case(
            "the bookkeeper gets support email",
            ("User", "bea"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        case(
            "the bookkeeper gets no general email",
            ("User", "bea"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-general"),
            DENY,
        ),
        case(
            "the bookkeeper may not manage services",
            ("User", "bea"),
            "ManageService",
            ("Service", "svc-3001"),
            DENY,
        ),
        case(
            "the bookkeeper may not manage users",
            ("User", "bea"),
            "ManageUsers",
            ("Account", "acme"),
            DENY,
        ),
        // 3. A reseller's customer on the reseller's second account.
        case(
            "the resold customer may view its invoice",
            ("User", "rex"),
            "ViewInvoice",
            ("Invoice", "inv-5001"),
            ALLOW,
        ),
        case(
            "the resold customer may open a billing ticket",
            ("User", "rex"),
            "OpenTicket",
            ("Account", "olivia-resale"),
            ALLOW,
        ),
        case(
            "the resold customer gets invoice email",
            ("User", "rex"),
            "ReceiveEmail",
            ("EmailMessage", "msg-resale-invoice"),
            ALLOW,
        ),
        case(
            "the resold customer may not order",
            ("User", "rex"),
            "PlaceOrder",
            ("Account", "olivia-resale"),
            DENY,
        ),
        case(
            "the resold customer sees nothing of acme",
            ("User", "rex"),
            "ViewInvoice",
            ("Invoice", "inv-1001"),
            DENY,
        ),
        case(
            "the customer's billing contact gets invoice email",
            ("Contact", "rhea"),
            "ReceiveEmail",
            ("EmailMessage", "msg-resale-invoice"),
            ALLOW,
        ),
        case(
            "the customer's billing contact may not log in",
            ("Contact", "rhea"),
            "Login",
            ("Account", "olivia-resale"),
            DENY,
        ),
        case(
            "the reseller owns the second account",
            ("User", "olivia"),
            "ViewInvoice",
            ("Invoice", "inv-5001"),
            ALLOW,
        ),
        // 4. A contact for a second email address.
        case(
            "the second address gets general email",
            ("Contact", "cleo"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-general"),
            ALLOW,
        ),
        case(
            "the second address gets support email",
            ("Contact", "cleo"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        case(
            "the second address gets no invoice email",
            ("Contact", "cleo"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-invoice"),
            DENY,
        ),
        case(
            "the second address cannot log in",
            ("Contact", "cleo"),
            "Login",
            ("Account", "acme"),
            DENY,
        ),
        case(
            "a contact gets no email of another account",
            ("Contact", "carl"),
            "ReceiveEmail",
            ("EmailMessage", "msg-globex-invoice"),
            DENY,
        ),
        case(
            "a contact that opened a ticket gets its replies",
            ("Contact", "carl"),
            "ReceiveEmail",
            ("EmailMessage", "msg-t-2002-reply"),
            ALLOW,
        ),
        case(
            "a contact gets no replies to others' tickets",
            ("Contact", "carl"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            DENY,
        ),
        // 5. A developer on several clients' accounts: one login, a set per account.
        case(
            "the developer logs in to acme",
            ("User", "dev"),
            "Login",
            ("Account", "acme"),
            ALLOW,
        ),
        case(
            "the developer logs in to globex",
            ("User", "dev"),
            "Login",
            ("Account", "globex"),
            ALLOW,
        ),
        case(
            "the developer manages acme's service",
            ("User", "dev"),
            "ManageService",
            ("Service", "svc-3001"),
            ALLOW,
        ),
        case(
            "the developer signs on to acme's service",
            ("User", "dev"),
            "ServiceSso",
            ("Service", "svc-3001"),
            ALLOW,
        ),
        case(
            "the developer views globex's ticket",
            ("User", "dev"),
            "ViewTicket",
            ("Ticket", "t-9002"),
            ALLOW,
        ),
        case(
            "the developer views no acme ticket",
            ("User", "dev"),
            "ViewTicket",
            ("Ticket", "t-2001"),
            DENY,
        ),
        case(
            "the developer sees no globex invoice",
            ("User", "dev"),
            "ViewInvoice",
            ("Invoice", "inv-9001"),
            DENY,
        ),
        case(
            "the developer cannot log in where not invited",
            ("User", "dev"),
            "Login",
            ("Account", "olivia-resale"),
            DENY,
        ),
        // 6. Several users and contacts receive support email, so losing one mailbox
        //    does not lose access to support.
        case(
            "walt receives acme support email",
            ("User", "walt"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        case(
            "cleo receives acme support email",
            ("Contact", "cleo"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        case(
            "olivia receives acme support email",
            ("User", "olivia"),
            "ReceiveEmail",
            ("EmailMessage", "msg-acme-support"),
            ALLOW,
        ),
        // Only the owner manages users; payment method changes need a second factor.
        case(
            "the owner manages users",
            ("User", "olivia"),
            "ManageUsers",
            ("Account", "acme"),
            ALLOW,
        ),
        case(
            "another account's owner does not",
            ("User", "gina"),
            "ManageUsers",
            ("Account", "acme"),
            DENY,
        ),
        case(
            "the owner without a second factor may not change the payment method",
            ("User", "olivia"),
            "UpdatePaymentMethod",
            ("Account", "acme"),
            DENY,
        ),
        with_context(
            case(
                "the owner with a second factor may",
                ("User", "olivia"),
                "UpdatePaymentMethod",
                ("Account", "acme"),
                ALLOW,
            ),
            two_factor.clone(),
        ),
        with_context(
            case(
                "the bookkeeper with a second factor may",
                ("User", "bea"),
                "UpdatePaymentMethod",
                ("Account", "acme"),
                ALLOW,
            ),
            two_factor,
        ),
        with_context(
            case(
                "the bookkeeper whose session had no second factor may not",
                ("User", "bea"),
                "UpdatePaymentMethod",
                ("Account", "acme"),
                DENY,
            ),
            json!({"secondFactor": false}),
        ),
    ];
    check(&server, &cases).await;
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
