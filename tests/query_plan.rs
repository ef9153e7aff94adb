//! Query plans are exact: for every principal, action, resource type and context, the
//! resources a plan's filter selects are exactly the ones Cedar allows one by one.
//! Checked on the shipped portal model with its demo data and with a generated, larger
//! portal (accounts owned by non-members, references to accounts that do not exist),
//! and on policies a plan cannot express, which must come back `unsupported`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::str::FromStr;

use common::TestServer;
use http::StatusCode;

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, Request};
use portcullis::model::{compile, Snapshot, SourceFile, Sources};
use portcullis::plan::{plan, Plan, PlanKind, PlanRequest};
use serde_json::{json, Value};

/// The portal's request contexts: no second factor, and a session with and without.
fn portal_contexts() -> [Value; 3] {
    [
        json!({}),
        json!({"secondFactor": true}),
        json!({"secondFactor": false}),
    ]
}

fn portal() -> Snapshot {
    compile(&Sources::embedded()).unwrap()
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

/// The resources of `resource_type` in the data the plan selects.
fn selected(plan: &Plan, resources: &[(EntityUid, Value)]) -> BTreeSet<EntityUid> {
    resources
        .iter()
        .filter(|(_, json)| match plan.kind {
            PlanKind::AlwaysAllow => true,
            PlanKind::AlwaysDeny => false,
            PlanKind::Conditional => plan.filter.as_ref().unwrap().matches(json),
            PlanKind::Unsupported => panic!("unsupported: {:?}", plan.reason),
        })
        .map(|(u, _)| u.clone())
        .collect()
}

/// Every (principal, action, resource type, context) of the schema over `entities`:
/// the plan's selection equals Cedar's per-resource decisions. Returns how many plans
/// of each kind were checked.
fn differential(snapshot: &Snapshot, entities: &Entities, contexts: &[Value]) -> Vec<PlanKind> {
    let schema = &snapshot.schema;
    let mut kinds = Vec::new();
    let mut actions: Vec<&EntityUid> = snapshot.actions.iter().collect();
    actions.sort_by_key(|a| a.to_string());
    for action in actions {
        let principal_types: Vec<_> = schema.principals_for_action(action).unwrap().collect();
        let resource_types: Vec<_> = schema.resources_for_action(action).unwrap().collect();
        let mut principals: Vec<EntityUid> = entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| principal_types.contains(&u.type_name()))
            .collect();
        for ty in &principal_types {
            principals.push(uid(&format!("{ty}::\"nobody\"")));
        }
        for resource_type in &resource_types {
            let resources: Vec<(EntityUid, Value)> = entities
                .iter()
                .filter(|e| e.uid().type_name() == *resource_type)
                .map(|e| (e.uid(), e.to_json_value().unwrap()))
                .collect();
            for principal in &principals {
                for context in contexts {
                    let request = PlanRequest {
                        principal: principal.clone(),
                        action: action.clone(),
                        resource_type: (*resource_type).clone(),
                        context: context.clone(),
                    };
                    let plan = plan(snapshot, entities, &request).unwrap();
                    let cedar_context =
                        Context::from_json_value(context.clone(), Some((schema, action))).unwrap();
                    let allowed: BTreeSet<EntityUid> = resources
                        .iter()
                        .filter(|(r, _)| {
                            let req = Request::new(
                                principal.clone(),
                                action.clone(),
                                r.clone(),
                                cedar_context.clone(),
                                None,
                            )
                            .unwrap();
                            Authorizer::new()
                                .is_authorized(&req, &snapshot.policies, entities)
                                .decision()
                                == Decision::Allow
                        })
                        .map(|(u, _)| u.clone())
                        .collect();
                    assert_eq!(
                        selected(&plan, &resources),
                        allowed,
                        "{principal} {action} {resource_type} {context}: plan {}",
                        serde_json::to_string(&plan).unwrap()
                    );
                    kinds.push(plan.kind);
                }
            }
        }
    }
    kinds
}

#[test]
fn plans_select_exactly_what_the_portal_allows_on_the_demo_data() {
    let snapshot = portal();
    let entities = snapshot
        .entities
        .as_ref()
        .unwrap()
        .whole(&snapshot.schema)
        .unwrap()
        .as_ref()
        .clone();
    let kinds = differential(&snapshot, &entities, &portal_contexts());
    // The table is not trivially all-deny: both kinds of answer the portal's isolation
    // allows occur (no user may act on every resource of a type).
    for kind in [PlanKind::AlwaysDeny, PlanKind::Conditional] {
        assert!(
            kinds.contains(&kind),
            "no {kind:?} plan among {}",
            kinds.len()
        );
    }
}

/// A fixed-seed generator (SplitMix64), so every run checks the same data.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn entity(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": format!("Portal::{ty}"), "id": id}})
}

/// A portal of 8 accounts and 12 users. Some accounts are owned by users who are not
/// their members; some users belong to, and some resources point at, accounts that do
/// not exist (`ghost-N`); permissions vary per membership.
fn generated_portal() -> Value {
    const ACCOUNTS: usize = 8;
    const USERS: usize = 12;
    const KEYS: &[&str] = &[
        "invoices",
        "quotes",
        "tickets",
        "products",
        "domains",
        "profile",
        "contacts",
        "manageproducts",
        "managedomains",
        "productsso",
        "affiliate",
        "emailhistory",
        "orders",
        "payment",
    ];
    let mut rng = Rng(7);
    let account_id = |rng: &mut Rng| {
        if rng.chance(15) {
            format!("ghost-{}", rng.below(3))
        } else {
            format!("a{}", rng.below(ACCOUNTS))
        }
    };
    let mut out = Vec::new();
    for a in 0..ACCOUNTS {
        let mut attrs = json!({
            "id": format!("a{a}"), "name": format!("Account {a}"),
            "owner": entity("User", &format!("u{}", rng.below(USERS + 2))),
        });
        if rng.chance(50) {
            attrs["billingContact"] = entity("Contact", &format!("c{}", rng.below(6)));
        }
        out.push(
            json!({"uid": {"type": "Portal::Account", "id": format!("a{a}")},
                        "attrs": attrs, "parents": []}),
        );
    }
    for u in 0..USERS {
        let mut parents = Vec::new();
        let mut tags = serde_json::Map::new();
        for _ in 0..rng.below(4) {
            let acct = account_id(&mut rng);
            parents.push(json!({"type": "Portal::Account", "id": acct}));
            // Some memberships carry no tag at all.
            if rng.chance(80) {
                let permissions: Vec<&str> =
                    KEYS.iter().copied().filter(|_| rng.chance(40)).collect();
                let categories: Vec<&str> = ["invoice", "support", "news"]
                    .into_iter()
                    .filter(|_| rng.chance(50))
                    .collect();
                tags.insert(
                    acct,
                    json!({"permissions": permissions, "emailCategories": categories}),
                );
            }
        }
        out.push(
            json!({"uid": {"type": "Portal::User", "id": format!("u{u}")},
            "attrs": {"email": format!("u{u}@example.test"), "disabled": rng.chance(10),
                      "twoFactorEnrolled": rng.chance(60)},
            "parents": parents, "tags": tags}),
        );
    }
    for c in 0..6 {
        let categories: Vec<&str> = ["invoice", "support"]
            .into_iter()
            .filter(|_| rng.chance(60))
            .collect();
        out.push(
            json!({"uid": {"type": "Portal::Contact", "id": format!("c{c}")},
            "attrs": {"account": entity("Account", &account_id(&mut rng)),
                      "email": format!("c{c}@example.test"),
                      "emailCategories": categories},
            "parents": []}),
        );
    }
    for i in 0..30 {
        let acct = entity("Account", &account_id(&mut rng));
        out.push(
            json!({"uid": {"type": "Portal::Invoice", "id": format!("i{i}")},
            "attrs": {"account": acct, "total": rng.below(1000)}, "parents": []}),
        );
        let acct = entity("Account", &account_id(&mut rng));
        out.push(
            json!({"uid": {"type": "Portal::Quote", "id": format!("q{i}")},
            "attrs": {"account": acct}, "parents": []}),
        );
        let acct = entity("Account", &account_id(&mut rng));
        out.push(
            json!({"uid": {"type": "Portal::Service", "id": format!("s{i}")},
            "attrs": {"account": acct, "name": format!("service {i}")}, "parents": []}),
        );
        let acct = entity("Account", &account_id(&mut rng));
        out.push(
            json!({"uid": {"type": "Portal::Domain", "id": format!("d{i}")},
            "attrs": {"account": acct}, "parents": []}),
        );
        let mut ticket = json!({"account": entity("Account", &account_id(&mut rng)),
                                "subject": format!("ticket {i}")});
        if rng.chance(40) {
            ticket["contact"] = entity("Contact", &format!("c{}", rng.below(7)));
        }
        if rng.chance(40) {
            ticket["openedBy"] = entity("User", &format!("u{}", rng.below(USERS)));
        }
        out.push(
            json!({"uid": {"type": "Portal::Ticket", "id": format!("t{i}")},
            "attrs": ticket, "parents": []}),
        );
        let category = ["invoice", "support", "news"][rng.below(3)];
        let mut email = json!({"account": entity("Account", &account_id(&mut rng)),
            "category": category});
        if rng.chance(50) {
            email["ticket"] = entity("Ticket", &format!("t{}", rng.below(32)));
        }
        out.push(
            json!({"uid": {"type": "Portal::EmailMessage", "id": format!("e{i}")},
            "attrs": email, "parents": []}),
        );
    }
    Value::Array(out)
}

#[test]
fn plans_select_exactly_what_the_portal_allows_on_generated_data_with_dangling_references() {
    let snapshot = portal();
    let entities = Entities::from_json_value(generated_portal(), Some(&snapshot.schema)).unwrap();
    let kinds = differential(&snapshot, &entities, &portal_contexts());
    assert!(kinds.contains(&PlanKind::Conditional));
}

/// The portal's Invoice plan for bea is the account filter the issue describes.
#[test]
fn a_member_gets_an_account_filter_and_an_outsider_always_deny() {
    let snapshot = portal();
    let entities = snapshot
        .entities
        .as_ref()
        .unwrap()
        .whole(&snapshot.schema)
        .unwrap()
        .as_ref()
        .clone();
    let ask = |who: &str| {
        plan(
            &snapshot,
            &entities,
            &PlanRequest {
                principal: uid(&format!("Portal::User::\"{who}\"")),
                action: uid("Portal::Action::\"ViewInvoice\""),
                resource_type: "Portal::Invoice".parse().unwrap(),
                context: json!({}),
            },
        )
        .unwrap()
    };
    let bea = serde_json::to_value(ask("bea")).unwrap();
    assert_eq!(bea["kind"], "conditional", "{bea}");
    assert_eq!(
        bea["filter"],
        json!({"in": [["account"], [{"__entity": {"type": "Portal::Account", "id": "acme"}}]]}),
        "{bea}"
    );
    assert_eq!(bea["policies"], json!(snapshot.hash));
    let walt = serde_json::to_value(ask("walt")).unwrap();
    assert_eq!(walt["kind"], "always_deny", "{walt}");
}

/// A model of the given policies over a small invoice schema, with its data.
fn small(policies: &str) -> (Snapshot, Entities) {
    let schema = r#"
namespace Shop {
  entity Account = { id: String, owner: User };
  entity User in [Account] tags Set<String>;
  entity Invoice = { account: Account, total: Long, note: String } tags String;
  action View appliesTo { principal: [User], resource: [Invoice] };
}"#;
    let data = json!([
        {"uid": {"type": "Shop::Account", "id": "a"}, "attrs": {"id": "a",
          "owner": {"__entity": {"type": "Shop::User", "id": "u"}}}, "parents": []},
        {"uid": {"type": "Shop::User", "id": "u"}, "attrs": {},
          "parents": [{"type": "Shop::Account", "id": "a"}], "tags": {"a": ["view"]}},
        {"uid": {"type": "Shop::Invoice", "id": "i1"}, "attrs": {"total": 5, "note": "urgent!",
          "account": {"__entity": {"type": "Shop::Account", "id": "a"}}}, "parents": [],
          "tags": {"level": "high"}},
        {"uid": {"type": "Shop::Invoice", "id": "i2"}, "attrs": {"total": 500, "note": "later",
          "account": {"__entity": {"type": "Shop::Account", "id": "b"}}}, "parents": []}
    ]);
    let mut sources = Sources::embedded();
    sources.schema = SourceFile::new("shop.cedarschema", schema);
    sources.policies = vec![SourceFile::new("shop.cedar", policies)];
    sources.links = None;
    sources.routes = None;
    sources.entities = Some(SourceFile::new("shop.json", data.to_string()));
    let snapshot = compile(&sources).unwrap_or_else(|e| panic!("{e:?}"));
    let entities = snapshot
        .entities
        .as_ref()
        .unwrap()
        .whole(&snapshot.schema)
        .unwrap()
        .as_ref()
        .clone();
    (snapshot, entities)
}

fn shop_plan(policies: &str) -> Plan {
    let (snapshot, entities) = small(policies);
    plan(
        &snapshot,
        &entities,
        &PlanRequest {
            principal: uid("Shop::User::\"u\""),
            action: uid("Shop::Action::\"View\""),
            resource_type: "Shop::Invoice".parse().unwrap(),
            context: json!({}),
        },
    )
    .unwrap()
}

#[test]
fn like_arithmetic_and_resource_tags_are_unsupported_not_approximated() {
    for (policy, construct) in [
        (
            r#"permit (principal, action, resource) when { resource.note like "*!" };"#,
            "like",
        ),
        (
            r#"permit (principal, action, resource) when { resource.total + 1 > 10 };"#,
            "arithmetic",
        ),
        (
            r#"permit (principal, action, resource) when { resource.hasTag("level") };"#,
            "tags",
        ),
        (
            r#"permit (principal, action, resource) when { principal in resource.account };
               forbid (principal, action, resource) when { resource.note like "later" };"#,
            "like",
        ),
    ] {
        let p = shop_plan(policy);
        assert_eq!(p.kind, PlanKind::Unsupported, "{policy}: {p:?}");
        let reason = p.reason.unwrap_or_default();
        assert!(reason.contains(construct), "{policy}: reason `{reason}`");
    }
}

#[test]
fn comparisons_and_negations_on_resource_attributes_are_exact() {
    for policy in [
        r#"permit (principal, action, resource) when { resource.total > 10 };"#,
        r#"permit (principal, action, resource) when { 10 >= resource.total };"#,
        r#"permit (principal, action, resource) unless { resource.note == "later" };"#,
        r#"permit (principal, action, resource) when { resource.account.owner == principal };"#,
        r#"permit (principal, action, resource);
           forbid (principal, action, resource) when { !(principal in resource.account) };"#,
        r#"permit (principal, action, resource) when {
             principal.hasTag(resource.account.id) &&
             principal.getTag(resource.account.id).contains("view") };"#,
    ] {
        let (snapshot, entities) = small(policy);
        let kinds = differential(&snapshot, &entities, &[json!({})]);
        assert!(
            !kinds.contains(&PlanKind::Unsupported),
            "{policy}: {kinds:?}"
        );
    }
}

/// The endpoint answers the plan the library computes, on the served snapshot.
#[tokio::test]
async fn the_endpoint_answers_the_plan_and_names_a_bad_field() {
    let server = TestServer::portal().await;
    let reply = server
        .post(
            "/v1/query_plan",
            &json!({"principal": "Portal::User::\"bea\"",
                    "action": "Portal::Action::\"ViewInvoice\"",
                    "resource_type": "Portal::Invoice", "context": {}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["kind"], "conditional", "{}", reply.text);
    assert_eq!(
        reply.json["filter"],
        json!({"in": [["account"], [{"__entity": {"type": "Portal::Account", "id": "acme"}}]]})
    );
    let reply = server
        .post(
            "/v1/query_plan",
            &json!({"principal": "Portal::User::bea",
                    "action": "Portal::Action::\"ViewInvoice\"",
                    "resource_type": "Portal::Invoice"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json["error"], "invalid_request");
    assert!(reply.text.contains("`principal`"), "{}", reply.text);
    let reply = server
        .post(
            "/v1/query_plan",
            &json!({"principal": "Portal::User::\"bea\"",
                    "action": "Portal::Action::\"ViewInvoice\"",
                    "resource_type": "Portal::Nothing"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    server.stop().await;
}

#[test]
fn the_cli_prints_the_plan() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "plan",
            "--principal",
            "Portal::User::\"walt\"",
            "--action",
            "Portal::Action::\"ViewInvoice\"",
            "--resource-type",
            "Portal::Invoice",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["kind"], "always_deny", "{plan}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "plan",
            "--principal",
            "Portal::User::\"walt\"",
            "--action",
            "Portal::Action::\"ViewInvoice\"",
            "--resource-type",
            "Portal::Invoice",
            "--context",
            "{",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--context"));
}
