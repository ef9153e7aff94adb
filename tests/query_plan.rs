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

use std::time::Duration;

use common::redis::{cli, RedisServer};
use common::TestServer;
use http::StatusCode;
use portcullis::config::{RedisArgs, ServeArgs};
use portcullis::entities::{FileSource, RedisSource};

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, Request};
use portcullis::model::{
    compile, condition_literals, lean_entity_data, Snapshot, SourceFile, Sources,
};
use portcullis::plan::subject::{self, Subjects};
use portcullis::plan::{plan, plan_from_source, Plan, PlanData, PlanKind, PlanRequest};
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
    let data = PlanData::new(snapshot, std::sync::Arc::new(entities.clone())).unwrap();
    differential_with(snapshot, entities, contexts, false, |request| {
        plan(snapshot, &data, request).unwrap()
    })
}

/// [`differential`] with the plans made by `plan_of`; with `refusals`, an
/// `unsupported` plan is counted rather than failed.
fn differential_with(
    snapshot: &Snapshot,
    entities: &Entities,
    contexts: &[Value],
    refusals: bool,
    mut plan_of: impl FnMut(&PlanRequest) -> Plan,
) -> Vec<PlanKind> {
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
                    let plan = plan_of(&request);
                    if refusals && plan.kind == PlanKind::Unsupported {
                        kinds.push(plan.kind);
                        continue;
                    }
                    let cedar_context =
                        Context::from_json_value(context.clone(), Some((schema, action))).unwrap();
                    let allowed: BTreeSet<EntityUid> = resources
                        .iter()
                        .filter(|(r, _)| {
                            cedar_allows(snapshot, entities, principal, action, r, &cedar_context)
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

/// `data` as the model's own entity data, served lean as data over 1 MiB is: each
/// entity kept as JSON, Cedar entities built per request.
fn served_lean(data: &Value) -> Snapshot {
    let mut sources = Sources::embedded();
    sources.entities = Some(SourceFile::new("portal.json", data.to_string()));
    let mut snapshot = compile(&sources).unwrap();
    let file = sources.entities.as_ref().unwrap();
    let mut lean = lean_entity_data(file, &snapshot.schema, &snapshot.types).unwrap();
    lean.literals = condition_literals(&snapshot.policies, &lean);
    assert!(lean.served_whole().is_none());
    snapshot.entities = Some(std::sync::Arc::new(lean));
    snapshot
}

/// Whether Cedar's authorizer, over the whole policy set, allows the request.
fn cedar_allows(
    snapshot: &Snapshot,
    entities: &Entities,
    principal: &EntityUid,
    action: &EntityUid,
    resource: &EntityUid,
    context: &Context,
) -> bool {
    let req = Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context.clone(),
        None,
    )
    .unwrap();
    Authorizer::new()
        .is_authorized(&req, &snapshot.policies, entities)
        .decision()
        == Decision::Allow
}

/// The subjects among `users` Cedar allows to do `action` on `resource` over
/// `entities`, after checking that the symmetric plan's candidates include them all
/// (and name nobody when none is allowed); with the number of candidates, `None`
/// when the plan names nobody.
fn subjects_cover_the_allowed(
    rt: &tokio::runtime::Runtime,
    snapshot: &Snapshot,
    entities: &Entities,
    users: &[EntityUid],
    action: &EntityUid,
    resource: &EntityUid,
) -> (BTreeSet<EntityUid>, Option<usize>) {
    let answer = rt
        .block_on(subject::subjects(
            snapshot,
            &FileSource,
            users[0].type_name(),
            action,
            resource,
            &json!({}),
        ))
        .unwrap();
    let allowed: BTreeSet<EntityUid> = users
        .iter()
        .filter(|u| cedar_allows(snapshot, entities, u, action, resource, &Context::empty()))
        .cloned()
        .collect();
    match answer {
        Subjects::Nobody => {
            assert!(allowed.is_empty(), "{action} {resource}: {allowed:?}");
            (allowed, None)
        }
        Subjects::Only(candidates) => {
            let count = candidates.len();
            let candidates: BTreeSet<EntityUid> = candidates.into_iter().collect();
            assert!(
                allowed.is_subset(&candidates),
                "{action} {resource}: allowed {allowed:?}, candidates {candidates:?}"
            );
            (allowed, Some(count))
        }
        Subjects::Every(reason) => panic!("{action} {resource}: {reason}"),
    }
}

/// On lean data, plans come from the request's neighbourhood and the data's links
/// (never from the whole set, which would cost tens of times the file): each is exact
/// or `unsupported`, and the subjects a subject search would decide include every
/// subject Cedar allows. The whole set is never built.
#[test]
fn plans_and_subject_candidates_on_lean_data_are_exact_without_the_whole_set() {
    let data = generated_portal();
    let snapshot = served_lean(&data);
    let entities = Entities::from_json_value(data, Some(&snapshot.schema)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kinds = differential_with(&snapshot, &entities, &portal_contexts(), true, |request| {
        rt.block_on(plan_from_source(&snapshot, &FileSource, request))
            .unwrap()
    });
    let count = |k: PlanKind| kinds.iter().filter(|x| **x == k).count();
    assert!(count(PlanKind::Conditional) > 100, "{kinds:?}");

    let users: Vec<EntityUid> = entities
        .iter()
        .map(|e| e.uid())
        .filter(|u| u.type_name().to_string() == "Portal::User")
        .collect();
    let mut narrowed = 0;
    for resource in entities.iter().map(|e| e.uid()) {
        let action = match resource.type_name().to_string().as_str() {
            "Portal::Invoice" => "ViewInvoice",
            "Portal::Ticket" => "ViewTicket",
            "Portal::Service" => "ViewService",
            "Portal::Domain" => "ViewDomain",
            _ => continue,
        };
        let action = uid(&format!("Portal::Action::\"{action}\""));
        let (_, candidates) =
            subjects_cover_the_allowed(&rt, &snapshot, &entities, &users, &action, &resource);
        narrowed += usize::from(candidates.is_some_and(|c| c < users.len()));
    }
    assert!(narrowed > 50, "{narrowed} searches narrowed");
    let data = snapshot.entities.as_ref().unwrap();
    assert!(!data.whole_built(), "a plan built the whole set");
}

/// With many template links (each sharing one invoice with one user), the symmetric
/// plan evaluates only the policies whose scope can match the invoice asked about, and
/// its candidates still include every user Cedar allows: the owner, and the users the
/// links name for that invoice (which no other permit would name).
#[test]
fn subject_candidates_with_many_links_include_everyone_allowed() {
    let policies = r#"
permit (principal, action, resource) when { resource.account.owner == principal };
@id("share")
permit (principal == ?principal, action, resource == ?resource);
"#;
    let links: Vec<Value> = (0..400)
        .map(|i| {
            json!({"template_id": "share", "link_id": format!("share-{i}"),
                   "args": {"?principal": format!("Shop::User::\"x{i}\""),
                            "?resource": format!("Shop::Invoice::\"i{}\"", i % 7)}})
        })
        .collect();
    let (snapshot, entities) =
        small_with_links(policies, Some(serde_json::to_string(&links).unwrap()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut users: Vec<EntityUid> = (0..400)
        .map(|x| uid(&format!("Shop::User::\"x{x}\"")))
        .collect();
    users.push(uid(r#"Shop::User::"u""#));
    let action = uid(r#"Shop::Action::"View""#);
    let mut shared = 0;
    for i in 0..8 {
        let invoice = uid(&format!("Shop::Invoice::\"i{i}\""));
        let (allowed, candidates) =
            subjects_cover_the_allowed(&rt, &snapshot, &entities, &users, &action, &invoice);
        if let Some(count) = candidates {
            assert!(count < users.len(), "{invoice}: {count} candidates");
        }
        shared += allowed
            .iter()
            .filter(|u| u.id().unescaped().starts_with('x'))
            .count();
    }
    assert!(shared > 0, "no user was allowed by a link");
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
    let data = PlanData::new(&snapshot, std::sync::Arc::new(entities)).unwrap();
    let ask = |who: &str| {
        plan(
            &snapshot,
            &data,
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
    small_with_links(policies, None)
}

/// [`small`] with template links (the cedar CLI's `--template-linked` JSON).
fn small_with_links(policies: &str, links: Option<String>) -> (Snapshot, Entities) {
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
    sources.links = links.map(|l| SourceFile::new("links.json", l));
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
        &PlanData::new(&snapshot, std::sync::Arc::new(entities)).unwrap(),
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

/// The portal model with its entity data left out, as `serve --redis-url` runs it.
fn portal_without_data() -> Snapshot {
    let mut sources = Sources::embedded();
    sources.entities = None;
    compile(&sources).unwrap()
}

/// Runs `portcullis entities --redis-url URL <args>` (the real binary) and returns
/// stdout.
fn entities_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["entities", "--redis-url", &redis.url()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "portcullis entities {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Imports `data` (a JSON array of entities) through `portcullis entities import`.
fn import(redis: &RedisServer, data: &Value) {
    let file = redis.dir().join("import.json");
    std::fs::write(&file, data.to_string()).unwrap();
    let out = entities_cli(redis, &["import", file.to_str().unwrap()]);
    assert!(out.contains("wrote"), "{out}");
}

/// A Redis source on `redis`, connected, in `rt`.
fn redis_source(rt: &tokio::runtime::Runtime, redis: &RedisServer) -> RedisSource {
    let _guard = rt.enter();
    let args = RedisArgs {
        redis_url: Some(redis.url()),
        ..RedisArgs::default()
    };
    let source = RedisSource::open(&args, None).unwrap();
    rt.block_on(source.wait_connected(Duration::from_secs(10)));
    source
}

/// With the generated portal in Redis, plans fetched from the store select exactly
/// what Cedar allows over the whole data, for every principal, action, resource type
/// and context; those the store cannot serve exactly are `unsupported`, never wrong.
/// The ones the portal's list pages ask for (a member's or an owner's invoices,
/// tickets, services) are not refused.
#[test]
fn plans_from_redis_select_exactly_what_the_portal_allows() {
    let redis = RedisServer::start();
    let mut data = generated_portal();
    // An owner whom nothing but the owned account relates to: only the index set of
    // the accounts it owns finds that account.
    data.as_array_mut().unwrap().extend([
        json!({"uid": {"type": "Portal::User", "id": "hermit"},
               "attrs": {"email": "h@example.test", "disabled": false, "twoFactorEnrolled": true},
               "parents": []}),
        json!({"uid": {"type": "Portal::Account", "id": "lonely"},
               "attrs": {"id": "lonely", "name": "Lonely", "owner": entity("User", "hermit")},
               "parents": []}),
        json!({"uid": {"type": "Portal::Invoice", "id": "li1"},
               "attrs": {"account": entity("Account", "lonely"), "total": 1}, "parents": []}),
    ]);
    import(&redis, &data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = redis_source(&rt, &redis);
    let snapshot = portal_without_data();
    let entities = Entities::from_json_value(data, Some(&snapshot.schema)).unwrap();
    let mut refused = BTreeSet::new();
    let kinds = differential_with(&snapshot, &entities, &portal_contexts(), true, |request| {
        let p = rt
            .block_on(plan_from_source(&snapshot, &source, request))
            .unwrap();
        if p.kind == PlanKind::Unsupported {
            refused.insert(format!(
                "{} {}: {}",
                request.action,
                request.resource_type,
                p.reason.clone().unwrap_or_default()
            ));
        }
        p
    });
    let count = |k: PlanKind| kinds.iter().filter(|x| **x == k).count();
    assert!(count(PlanKind::Conditional) > 100, "{kinds:?}");
    // The one refusal: an email about a ticket, where a permit reads
    // `resource.ticket` without requiring the ticket to be related to the request.
    assert!(
        refused
            .iter()
            .all(|r| r.contains("ReceiveEmail") && r.contains("resource.ticket")),
        "{refused:#?}"
    );
    for page in ["ViewInvoice", "ViewTicket", "ViewService", "ViewDomain"] {
        assert!(
            !refused.iter().any(|r| r.contains(&format!("\"{page}\""))),
            "{page} refused: {refused:#?}"
        );
    }
}

/// The demo data imported into `redis` through the CLI, and a server reading it.
async fn demo_server(redis: &RedisServer) -> TestServer {
    let demo: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/portal/entities.json"
        ))
        .unwrap(),
    )
    .unwrap();
    import(redis, &demo);
    let mut args = ServeArgs::default();
    args.entity.redis = RedisArgs {
        redis_url: Some(redis.url()),
        ..RedisArgs::default()
    };
    let server = TestServer::start(args).await;
    server
}

/// Bea's invoices from Redis: the account filter, after reading the index set of the
/// accounts she owns (none); the owner's plan lists the accounts the index names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_plans_from_redis_instead_of_refusing() {
    let mut redis = RedisServer::start();
    let server = demo_server(&redis).await;
    let ask = |who: &'static str| {
        json!({"principal": format!("Portal::User::\"{who}\""),
               "action": "Portal::Action::\"ViewInvoice\"",
               "resource_type": "Portal::Invoice"})
    };
    let reply = server.post("/v1/query_plan", &ask("bea")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["kind"], "conditional", "{}", reply.text);
    assert_eq!(
        reply.json["filter"],
        json!({"in": [["account"], [{"__entity": {"type": "Portal::Account", "id": "acme"}}]]}),
        "{}",
        reply.text
    );
    // Bea owns no account: her plan read the (empty) index set of the accounts she
    // owns, and says it relies on it.
    let relied = reply.json["assumptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| {
            a.as_str()
                .unwrap()
                .contains(r#"index set of `Portal::Account.owner` for `Portal::User::"bea"`"#)
        });
    assert!(relied, "{}", reply.text);
    let reply = server.post("/v1/query_plan", &ask("walt")).await;
    assert_eq!(reply.json["kind"], "always_deny", "{}", reply.text);
    // The CLI plans from the same store.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["plan", "--redis-url", &redis.url()])
        .args(["--principal", "Portal::User::\"olivia\""])
        .args(["--action", "Portal::Action::\"ViewInvoice\""])
        .args(["--resource-type", "Portal::Invoice"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["kind"], "conditional", "{cli}");
    redis.stop();
    let reply = server.post("/v1/query_plan", &ask("bea")).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.json["error"], "entity_store_unavailable");
    // Searches that would plan say the same rather than answer from what they could
    // not read.
    for (path, body) in [
        (
            "/access/v1/search/subject",
            json!({"subject": {"type": "user"}, "action": {"name": "ViewInvoice"},
                   "resource": {"type": "invoice", "id": "inv-1001"}}),
        ),
        (
            "/access/v1/search/resource",
            json!({"subject": {"type": "user", "id": "bea"}, "action": {"name": "ViewInvoice"},
                   "resource": {"type": "invoice"}}),
        ),
    ] {
        let reply = server.post(path, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            reply.text
        );
    }
    server.stop().await;
}

/// An account with more members than a plan takes as candidates (10,000): subject
/// search reads at most that many of its member set, then enumerates the users, and
/// still answers exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_set_over_the_bound_is_enumerated_not_cut() {
    let redis = RedisServer::start();
    let crowd: Vec<Value> = (0..10_001)
        .map(|n| {
            json!({"uid": {"type": "Portal::User", "id": format!("crowd-{n:05}")},
                   "attrs": {"email": "c@example.test", "disabled": false, "twoFactorEnrolled": false},
                   "parents": [{"type": "Portal::Account", "id": "acme"}]})
        })
        .collect();
    import(&redis, &Value::Array(crowd));
    let server = demo_server(&redis).await;
    let users = index_set(&redis, "portcullis:t:Portal::User").len();
    assert_eq!(users, 10_008);
    let who = json!({"subject": {"type": "user"}, "action": {"name": "ViewInvoice"},
                     "resource": {"type": "invoice", "id": "inv-1001"}, "page": {"limit": 10}});
    assert_eq!(search_subjects(&server, who).await, ["bea", "olivia"]);
    assert_eq!(subjects_decided(&server).await, users as f64);
    server.stop().await;
}

/// The members of one index set, sorted.
fn index_set(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut members: Vec<String> = cli(redis.port, &["ZRANGE", key, "0", "-1"])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    members.sort();
    members
}

fn invoice(id: &str, account: &str) -> String {
    json!({"uid": {"type": "Portal::Invoice", "id": id},
           "attrs": {"account": entity("Account", account), "total": 10}, "parents": []})
    .to_string()
}

/// Every write keeps the index sets exact: an import files each invoice under its
/// account, moving one to another account takes it out of the first set, and a delete
/// takes it out of every set.
#[test]
fn index_sets_follow_every_write() {
    let redis = RedisServer::start();
    let acme = r#"portcullis:r:Portal::Invoice.account:Portal::Account::"acme""#;
    let globex = r#"portcullis:r:Portal::Invoice.account:Portal::Account::"globex""#;
    let olivia = r#"portcullis:r:Portal::Account.owner:Portal::User::"olivia""#;
    import(
        &redis,
        &json!([
            serde_json::from_str::<Value>(&invoice("i1", "acme")).unwrap(),
            serde_json::from_str::<Value>(&invoice("i2", "acme")).unwrap(),
            serde_json::from_str::<Value>(&invoice("i3", "globex")).unwrap(),
            {"uid": {"type": "Portal::Account", "id": "acme"},
             "attrs": {"id": "acme", "name": "Acme", "owner": entity("User", "olivia")},
             "parents": []},
        ]),
    );
    assert_eq!(index_set(&redis, acme), ["i1", "i2"]);
    assert_eq!(index_set(&redis, globex), ["i3"]);
    assert_eq!(index_set(&redis, olivia), ["acme"]);

    // i2 moves to globex: out of acme's set, into globex's.
    entities_cli(&redis, &["put", &invoice("i2", "globex")]);
    assert_eq!(index_set(&redis, acme), ["i1"]);
    assert_eq!(index_set(&redis, globex), ["i2", "i3"]);
    // Written again unchanged: still once.
    entities_cli(&redis, &["put", &invoice("i2", "globex")]);
    assert_eq!(index_set(&redis, globex), ["i2", "i3"]);

    entities_cli(&redis, &["delete", r#"Portal::Invoice::"i3""#]);
    assert_eq!(index_set(&redis, globex), ["i2"]);
    entities_cli(&redis, &["delete", r#"Portal::Account::"acme""#]);
    assert!(index_set(&redis, olivia).is_empty());
    // Deleting what is absent changes nothing.
    entities_cli(&redis, &["delete", r#"Portal::Invoice::"i9""#]);
    assert_eq!(index_set(&redis, acme), ["i1"]);
    // The ledgers name every entity the writer indexed, and no deleted one.
    assert_eq!(
        index_set(&redis, "portcullis:x:Portal::Invoice.account"),
        ["i1", "i2"]
    );
    assert!(index_set(&redis, "portcullis:x:Portal::Account.owner").is_empty());
}

/// Every write keeps the member sets (a parent's children, for subject search) exact:
/// an import files each user under its accounts, a write that drops a parent takes it
/// out of that set, and a delete out of every set and the ledger.
#[test]
fn member_sets_follow_every_write() {
    let redis = RedisServer::start();
    let acme = r#"portcullis:m:Portal::User:Portal::Account::"acme""#;
    let globex = r#"portcullis:m:Portal::User:Portal::Account::"globex""#;
    let user = |id: &str, accounts: &[&str]| {
        json!({"uid": {"type": "Portal::User", "id": id},
               "attrs": {"email": "u@example.test", "disabled": false, "twoFactorEnrolled": true},
               "parents": accounts.iter().map(|a| json!({"type": "Portal::Account", "id": a}))
                   .collect::<Vec<_>>()})
    };
    import(
        &redis,
        &json!([user("u1", &["acme", "globex"]), user("u2", &["acme"])]),
    );
    assert_eq!(index_set(&redis, acme), ["u1", "u2"]);
    assert_eq!(index_set(&redis, globex), ["u1"]);
    entities_cli(&redis, &["put", &user("u1", &["globex"]).to_string()]);
    assert_eq!(index_set(&redis, acme), ["u2"]);
    assert_eq!(index_set(&redis, globex), ["u1"]);
    entities_cli(&redis, &["delete", r#"Portal::User::"u1""#]);
    assert!(index_set(&redis, globex).is_empty());
    assert_eq!(index_set(&redis, "portcullis:x:Portal::User"), ["u2"]);
}

/// Entities written around `portcullis entities` (a backend's own `SET` and `ZADD`,
/// or data from before the index sets existed) are missing from the sets, and the
/// ledgers show it: a search then enumerates and still finds them, an owner's plan is
/// `unsupported` instead of short; writing them again through the CLI makes the sets
/// trusted again, and a writer of its own that deletes a ledger (the documented
/// contract) turns them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_written_around_the_cli_are_never_left_out() {
    let redis = RedisServer::start();
    let server = demo_server(&redis).await;
    let bea = json!({"subject": {"type": "user", "id": "bea"},
                     "action": {"name": "ViewInvoice"}, "resource": {"type": "invoice"}});
    let olivia = json!({"principal": "Portal::User::\"olivia\"",
                        "action": "Portal::Action::\"ViewInvoice\"",
                        "resource_type": "Portal::Invoice"});
    let invoices = |redis: &RedisServer| {
        cli(redis.port, &["ZCARD", "portcullis:t:Portal::Invoice"])
            .trim()
            .parse::<f64>()
            .unwrap()
    };

    let mut decided = searched(&server).await;
    assert_eq!(search_all(&server, bea.clone()).await, ["inv-1001"]);
    let step = searched(&server).await - decided;
    assert!(step < invoices(&redis), "{step} candidates decided");

    // The portal's backend writes an invoice of acme and an account of olivia's on
    // its own, as the key layout says, without the index sets.
    let sneak = invoice("inv-sneak", "acme");
    cli(
        redis.port,
        &[
            "SET",
            r#"portcullis:e:Portal::Invoice::"inv-sneak""#,
            &sneak,
        ],
    );
    cli(
        redis.port,
        &["ZADD", "portcullis:t:Portal::Invoice", "0", "inv-sneak"],
    );
    let account = json!({"uid": {"type": "Portal::Account", "id": "sneakco"},
        "attrs": {"id": "sneakco", "name": "Sneak Co", "owner": entity("User", "olivia")},
        "parents": []})
    .to_string();
    cli(
        redis.port,
        &[
            "SET",
            r#"portcullis:e:Portal::Account::"sneakco""#,
            &account,
        ],
    );
    cli(
        redis.port,
        &["ZADD", "portcullis:t:Portal::Account", "0", "sneakco"],
    );

    decided = searched(&server).await;
    assert_eq!(
        search_all(&server, bea.clone()).await,
        ["inv-1001", "inv-sneak"]
    );
    // Every invoice was a candidate: the sets were not trusted.
    assert_eq!(searched(&server).await - decided, invoices(&redis));
    let plan = server.post("/v1/query_plan", &olivia).await;
    assert_eq!(plan.json["kind"], "unsupported", "{}", plan.text);
    assert!(
        plan.json["reason"]
            .as_str()
            .unwrap()
            .contains("`Portal::Account.owner` in Redis are not known to be exact"),
        "{}",
        plan.text
    );

    // Written again through the CLI, the sets are whole and trusted again.
    entities_cli(&redis, &["put", &sneak]);
    entities_cli(&redis, &["put", &account]);
    decided = searched(&server).await;
    assert_eq!(
        search_all(&server, bea.clone()).await,
        ["inv-1001", "inv-sneak"]
    );
    let step = searched(&server).await - decided;
    assert!(step < invoices(&redis), "{step} candidates decided");
    let plan = server.post("/v1/query_plan", &olivia).await;
    assert_eq!(plan.json["kind"], "conditional", "{}", plan.text);
    assert!(plan.text.contains("sneakco"), "{}", plan.text);

    // A member of acme written around the CLI: her invoices' subject search
    // enumerates the users (the member sets' ledger is short) and finds her.
    let sam = json!({"uid": {"type": "Portal::User", "id": "sam"},
        "attrs": {"email": "sam@example.test", "disabled": false, "twoFactorEnrolled": true},
        "parents": [{"type": "Portal::Account", "id": "acme"}],
        "tags": {"acme": {"permissions": ["invoices"], "emailCategories": []}}})
    .to_string();
    cli(
        redis.port,
        &["SET", r#"portcullis:e:Portal::User::"sam""#, &sam],
    );
    cli(
        redis.port,
        &["ZADD", "portcullis:t:Portal::User", "0", "sam"],
    );
    let users: Vec<String> = index_set(&redis, "portcullis:t:Portal::User");
    let who = json!({"subject": {"type": "user"}, "action": {"name": "ViewInvoice"},
                     "resource": {"type": "invoice", "id": "inv-1001"}});
    let resource = json!({"type": "invoice", "id": "inv-1001"});
    let allowed = evaluated_subjects(&server, "user", &users, "ViewInvoice", &resource).await;
    assert!(allowed.contains(&"sam".to_string()), "{allowed:?}");
    decided = subjects_decided(&server).await;
    assert_eq!(search_subjects(&server, who.clone()).await, allowed);
    assert_eq!(
        subjects_decided(&server).await - decided,
        users.len() as f64
    );
    // Written again through the CLI: the member sets are trusted again.
    entities_cli(&redis, &["put", &sam]);
    decided = subjects_decided(&server).await;
    assert_eq!(search_subjects(&server, who).await, allowed);
    let step = subjects_decided(&server).await - decided;
    assert!(step < users.len() as f64, "{step} subjects decided");

    // A writer of its own that cannot keep the sets deletes the ledger.
    cli(redis.port, &["DEL", "portcullis:x:Portal::Invoice.account"]);
    decided = searched(&server).await;
    assert_eq!(search_all(&server, bea).await, ["inv-1001", "inv-sneak"]);
    assert_eq!(searched(&server).await - decided, invoices(&redis));
    server.stop().await;
}

/// Every result of an AuthZEN resource search, page by page.
async fn search_all(server: &TestServer, body: Value) -> Vec<String> {
    search_pages(server, "/access/v1/search/resource", body).await
}

/// Every result of an AuthZEN search at `path`, page by page.
async fn search_pages(server: &TestServer, path: &str, mut body: Value) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..200 {
        let reply = server.post(path, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        for r in reply.json["results"].as_array().unwrap() {
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        let next = reply.json["page"]["next_token"]
            .as_str()
            .unwrap_or_default();
        if next.is_empty() {
            return ids;
        }
        body["page"]["token"] = json!(next);
    }
    panic!("pagination does not end: {body}");
}

/// Candidates the server's resource searches decided so far.
async fn searched(server: &TestServer) -> f64 {
    let metrics = server.admin_get("/metrics").await.text;
    common::metric(
        &metrics,
        r#"portcullis_authzen_search_candidates_total{search="resource"}"#,
    )
    .unwrap_or(0.0)
}

/// Resource search from Redis takes its candidates from the plan (an account's
/// invoices from the index set; nothing for a user the plan always denies) and
/// returns exactly, page by page, what a server enumerating every resource of the
/// type returns over the same data, while deciding fewer candidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_search_from_the_plan_returns_exactly_what_enumeration_returns() {
    let redis = RedisServer::start();
    let mut data = generated_portal();
    data.as_array_mut().unwrap().extend([
        json!({"uid": {"type": "Portal::User", "id": "hermit"},
               "attrs": {"email": "h@example.test", "disabled": false, "twoFactorEnrolled": true},
               "parents": []}),
        json!({"uid": {"type": "Portal::Account", "id": "lonely"},
               "attrs": {"id": "lonely", "name": "Lonely", "owner": entity("User", "hermit")},
               "parents": []}),
        json!({"uid": {"type": "Portal::Invoice", "id": "li1"},
               "attrs": {"account": entity("Account", "lonely"), "total": 1}, "parents": []}),
    ]);
    import(&redis, &data);
    let file = redis.dir().join("import.json");
    // Small chunks and call budgets, so that pages resume from cursors inside the
    // index sets and the type's listing alike.
    let mapping = common::search_mapping(redis.dir(), 4, 3);

    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(mapping.clone());
    args.entity.redis = RedisArgs {
        redis_url: Some(redis.url()),
        ..RedisArgs::default()
    };
    let from_plan = TestServer::start(args).await;
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(mapping);
    args.entity.entities = Some(file);
    let file_plan = TestServer::start(args.clone()).await;
    // Asked with the subject described by a property (the stored user still wins), a
    // search skips the plan and enumerates the type.
    let enumerating = TestServer::start(args).await;

    let mut users: Vec<String> = (0..12).map(|u| format!("u{u}")).collect();
    users.push("hermit".to_string());
    let mut found = 0;
    for (action, ty) in [
        ("ViewInvoice", "invoice"),
        ("ViewTicket", "ticket"),
        ("ViewService", "service"),
        ("ViewDomain", "domain"),
        ("ViewQuote", "quote"),
    ] {
        for user in &users {
            let query = json!({
                "subject": {"type": "user", "id": user},
                "action": {"name": action},
                "resource": {"type": ty},
                "page": {"limit": 2},
            });
            let planned = search_all(&from_plan, query.clone()).await;
            let from_file = search_all(&file_plan, query.clone()).await;
            let mut described = query;
            described["subject"]["properties"] = json!({"email": "any@example.test"});
            let enumerated = search_all(&enumerating, described).await;
            assert_eq!(planned, enumerated, "{user} {action}");
            assert_eq!(from_file, enumerated, "{user} {action}");
            found += planned.len();
        }
    }
    assert!(found > 20, "{found} results");
    let enumerated = searched(&enumerating).await;
    for planned in [searched(&from_plan).await, searched(&file_plan).await] {
        assert!(
            planned * 2.0 < enumerated,
            "candidates decided: {planned} from the plan, {enumerated} enumerating"
        );
    }
    from_plan.stop().await;
    file_plan.stop().await;
    enumerating.stop().await;
}

/// Every subject of an AuthZEN subject search, page by page.
async fn search_subjects(server: &TestServer, body: Value) -> Vec<String> {
    search_pages(server, "/access/v1/search/subject", body).await
}

/// Candidates the server's subject searches decided so far.
async fn subjects_decided(server: &TestServer) -> f64 {
    let metrics = server.admin_get("/metrics").await.text;
    common::metric(
        &metrics,
        r#"portcullis_authzen_search_candidates_total{search="subject"}"#,
    )
    .unwrap_or(0.0)
}

/// The subjects of `ty` one AuthZEN evaluation each allows, in id order.
async fn evaluated_subjects(
    server: &TestServer,
    ty: &str,
    ids: &[String],
    action: &str,
    resource: &Value,
) -> Vec<String> {
    let mut allowed = Vec::new();
    for id in ids {
        let body = json!({"subject": {"type": ty, "id": id}, "action": {"name": action},
                          "resource": resource});
        let reply = server.post("/access/v1/evaluation", &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        if reply.json["decision"] == json!(true) {
            allowed.push(id.clone());
        }
    }
    allowed
}

/// Subject search takes its candidates from the symmetric plan (the members of the
/// resource's account, its owner, the users a grant names) and returns, page by page,
/// exactly the subjects that one evaluation each allows: from Redis (member sets) and
/// from the file (the whole data), over the generated portal with its dangling
/// references, while deciding far fewer candidates than there are subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_search_from_the_plan_returns_exactly_what_evaluation_allows() {
    let redis = RedisServer::start();
    let data = generated_portal();
    import(&redis, &data);
    let file = redis.dir().join("import.json");
    let ids_of = |ty: &str| -> Vec<String> {
        let mut ids: Vec<String> = data
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["uid"]["type"] == ty)
            .map(|e| e["uid"]["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let users = ids_of("Portal::User");
    let contacts = ids_of("Portal::Contact");
    // Small call budgets: pages resume inside the plan's candidate list.
    let mapping = common::search_mapping(redis.dir(), 4, 3);
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(mapping.clone());
    args.entity.redis = RedisArgs {
        redis_url: Some(redis.url()),
        ..RedisArgs::default()
    };
    let from_redis = TestServer::start(args).await;
    let mut args = ServeArgs::default();
    args.model.authzen_mapping = Some(mapping);
    args.entity.entities = Some(file);
    let from_file = TestServer::start(args).await;

    let mut searches = 0;
    let mut found = 0;
    for server in [&from_redis, &from_file] {
        for (action, ty, cedar) in [
            ("ViewInvoice", "invoice", "Portal::Invoice"),
            ("PayInvoice", "invoice", "Portal::Invoice"),
            ("ViewTicket", "ticket", "Portal::Ticket"),
            ("ViewService", "service", "Portal::Service"),
            ("ViewDomain", "domain", "Portal::Domain"),
            ("ViewQuote", "quote", "Portal::Quote"),
            ("ReceiveEmail", "email_message", "Portal::EmailMessage"),
        ] {
            for id in ids_of(cedar).iter().take(8) {
                let resource = json!({"type": ty, "id": id});
                for (subject, all) in [("user", &users), ("contact", &contacts)] {
                    if subject == "contact" && action != "ReceiveEmail" {
                        continue;
                    }
                    let query = json!({"subject": {"type": subject},
                                       "action": {"name": action},
                                       "resource": resource, "page": {"limit": 2}});
                    let searched = search_subjects(server, query).await;
                    let expected =
                        evaluated_subjects(server, subject, all, action, &resource).await;
                    assert_eq!(searched, expected, "{subject}s who may {action} {ty} {id}");
                    searches += all.len();
                    found += searched.len();
                }
            }
        }
    }
    assert!(found > 30, "{found} subjects found");
    // Every search would decide every subject by enumeration.
    for server in [&from_redis, &from_file] {
        let decided = subjects_decided(server).await;
        assert!(
            decided * 2.0 < (searches / 2) as f64,
            "{decided} candidates decided for {} subjects searched",
            searches / 2
        );
    }
    from_redis.stop().await;
    from_file.stop().await;
}

/// The AuthZEN form of the plan: a resource search's body, answered with the plan.
#[tokio::test]
async fn the_authzen_resource_plan_answers_in_authzen_terms() {
    let server = TestServer::portal().await;
    let ask = |who: &str| {
        json!({"subject": {"type": "user", "id": who}, "action": {"name": "ViewInvoice"},
               "resource": {"type": "invoice"}})
    };
    let path = "/access/v1/search/resource/plan";
    let reply = server.post(path, &ask("bea")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["kind"], "conditional", "{}", reply.text);
    assert_eq!(
        reply.json["filter"],
        json!({"in": [["account"], [{"__entity": {"type": "Portal::Account", "id": "acme"}}]]})
    );
    let reply = server.post(path, &ask("walt")).await;
    assert_eq!(reply.json["kind"], "always_deny", "{}", reply.text);

    let mut described = ask("bea");
    described["subject"]["properties"] = json!({"email": "x@example.test"});
    let reply = server.post(path, &described).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("subject.properties"), "{}", reply.text);
    let mut unknown = ask("bea");
    unknown["resource"]["type"] = json!("spaceship");
    let reply = server.post(path, &unknown).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    server.stop().await;
}
