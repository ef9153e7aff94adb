#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! Differential test of the policy index: for many generated policy sets, entity
//! data and requests, a decision through `PolicyIndex::is_authorized` must equal
//! `Authorizer::is_authorized` over the whole set (decision, determining policies,
//! errors in order), and the index's candidates must be exactly the policies whose
//! scope Cedar finds satisfied.
//!
//! The generator is hand-rolled over a fixed seed, so every run checks the same
//! cases and a failure names the case to reproduce. It draws scopes of every form
//! (`==`, `in`, `is`, `is .. in`, action lists) over a small universe, so that they
//! often match; hierarchies several levels deep, with entities missing from the data
//! and action groups present or not; templates with linked slots; `when`/`unless`
//! conditions, some of which error (missing attributes, missing entities, overflow,
//! type errors, a missing context field); permits and forbids interleaved with links.
//!
//! The last tests break the index on purpose, through its public seams, and check
//! that this harness notices.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, Response, SlotId, Template,
};
use portcullis::model::entity_table::{EntityTable, Lookup, TypeCanon};
use portcullis::model::index::{PolicyIndex, PolicyIndexOptions};

/// Cases (policy set + entity data) per run, and requests per case.
const CASES: usize = 2000;
const REQUESTS_PER_CASE: usize = 10;
const SEED: u64 = 0x5eed_cafe_f00d_0014;

/// SplitMix64: small, fast and good enough to draw test cases from a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const ORG_USERS: [&str; 2] = ["u0", "u1"];
const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
const DOCS: [&str; 5] = ["d0", "d1", "d2", "d3", "d4"];
const FOLDERS: [&str; 4] = ["f0", "f1", "f2", "f3"];
const LEAF_ACTIONS: [&str; 4] = ["view", "edit", "delete", "share"];
const ALL_ACTIONS: [&str; 7] = ["view", "edit", "delete", "share", "read", "write", "all"];
const TYPES: [&str; 5] = ["User", "Org::User", "Group", "Doc", "Folder"];

/// An entity reference as policy text: `Type::"id"`.
fn uid_text(ty: &str, id: &str) -> String {
    format!("{ty}::\"{id}\"")
}

/// Any entity of the universe, weighted towards the given types.
fn some_entity(rng: &mut Rng, types: &[&str]) -> String {
    let ty = rng.pick(types);
    let id = match ty {
        "User" => rng.pick(&USERS),
        "Org::User" => rng.pick(&ORG_USERS),
        "Group" => rng.pick(&GROUPS),
        "Doc" => rng.pick(&DOCS),
        _ => rng.pick(&FOLDERS),
    };
    uid_text(ty, id)
}

fn some_principal(rng: &mut Rng) -> String {
    // Mostly users, sometimes anything: a scope may name any entity.
    if rng.chance(80) {
        some_entity(rng, &["User", "User", "Org::User", "Group"])
    } else {
        some_entity(rng, &TYPES)
    }
}

fn some_resource(rng: &mut Rng) -> String {
    if rng.chance(80) {
        some_entity(rng, &["Doc", "Doc", "Folder"])
    } else {
        some_entity(rng, &TYPES)
    }
}

fn some_action(rng: &mut Rng) -> String {
    uid_text("Action", rng.pick(&ALL_ACTIONS))
}

/// A principal or resource scope. `slot` is `Some("?principal")` for a template
/// slot that the scope must use.
fn entity_scope(rng: &mut Rng, var: &str, slot: Option<&str>, entity: &str) -> String {
    let ty = rng.pick(&TYPES);
    match slot {
        Some(slot) => match rng.below(3) {
            0 => format!("{var} == {slot}"),
            1 => format!("{var} in {slot}"),
            _ => format!("{var} is {ty} in {slot}"),
        },
        None => match rng.below(8) {
            0 | 1 => var.to_string(),
            2 | 3 => format!("{var} == {entity}"),
            4 | 5 => format!("{var} in {entity}"),
            6 => format!("{var} is {ty}"),
            _ => format!("{var} is {ty} in {entity}"),
        },
    }
}

fn action_scope(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 | 1 => "action".to_string(),
        2 | 3 => format!("action == {}", some_action(rng)),
        4 => format!("action in {}", some_action(rng)),
        _ => {
            let n = rng.below(4); // `action in []` is legal and never matches
            let list: Vec<String> = (0..n).map(|_| some_action(rng)).collect();
            format!("action in [{}]", list.join(", "))
        }
    }
}

/// Conditions, some of which error on some data.
const CONDITIONS: [&str; 43] = [
    "true",
    "false",
    "principal.level > 2",
    "resource.owner == principal",
    "resource.owner.level >= 1",
    "principal has level && principal.level < 3",
    "context.flag",
    "context has flag && context.flag",
    "principal in resource.owner",
    "resource in principal",
    "principal.tags.contains(\"a\")",
    "resource.public",
    "principal.manager in Group::\"g1\"",
    "principal.level + 9223372036854775807 > 0",
    "principal == resource.owner || resource.public",
    "if principal has level then principal.level > 1 else context.flag",
    "resource.owner.manager == principal",
    "action in Action::\"read\"",
    "principal is User && principal.level == 1",
    "principal.level.contains(1)",
    "resource has owner && resource.owner in principal",
    "principal in Group::\"g2\"",
    "resource.level < principal.level",
    "!(resource has public) || resource.public",
    // Below: what the compiled conditions evaluate (`model::condition`), errors
    // included, and a few forms they leave to Cedar.
    "principal.tags.containsAny([\"a\", \"c\"]) && principal.tags.containsAll([\"a\"])",
    "principal.tags.isEmpty() || principal.tags == [\"b\", \"a\", \"b\"]",
    "principal has manager.level",
    "principal.level != resource.level",
    "-principal.level < -1 && principal.level * 2 >= 6 && principal.level - 1 != 0",
    "principal in [Group::\"g0\", resource.owner]",
    "principal in [Group::\"g3\", principal.level]",
    "resource is Doc in Folder::\"f2\"",
    "{\"a\": principal.level, \"b\": [1, 1]}.a == 2 && {\"b\": [1]} has b",
    "principal.hasTag(\"d0\") && principal.getTag(\"d0\").level > 0",
    "principal.getTag(\"d1\").cats.contains(\"a\")",
    "principal.getTag(\"d1\") != {\"level\": 1}",
    "resource.owner.hasTag(\"d0\")",
    "principal.getTag(resource.level).level == 1",
    "principal.level == 1 || context.flag",
    "!(context has flag)",
    "context == {\"flag\": true}",
    "principal.name like \"u*\"",
    "if context.flag then resource.owner else principal.manager == principal",
];

fn conditions(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(3) {
        let kind = if rng.chance(70) { "when" } else { "unless" };
        let _ = write!(out, " {kind} {{ {} }}", rng.pick(&CONDITIONS));
    }
    out
}

/// A static policy of the pool: its text, the parsed policy and its scope-only twin
/// (same scope, `permit`, no conditions).
struct PooledPolicy {
    text: String,
    policy: Policy,
    twin: Policy,
}

/// A template of the pool, with the slots it has.
struct PooledTemplate {
    text: String,
    template: Template,
    twin: Template,
    principal_slot: bool,
    resource_slot: bool,
}

/// Entity data of the pool, as JSON (to print and to alter) and parsed.
struct PooledEntities {
    json: serde_json::Value,
    entities: Entities,
}

/// Parsing is by far the slowest step in a debug build, so cases draw their
/// policies, templates and entity data from pools parsed once. A case is a random
/// selection, order and linking of those, with its own ids.
struct Pools {
    policies: Vec<PooledPolicy>,
    templates: Vec<PooledTemplate>,
    entities: Vec<PooledEntities>,
}

const POOLED_POLICIES: usize = 400;
const POOLED_TEMPLATES: usize = 80;
const POOLED_ENTITIES: usize = 200;

impl Pools {
    fn new(rng: &mut Rng) -> Self {
        let mut policies = Vec::new();
        for _ in 0..POOLED_POLICIES {
            let effect = if rng.chance(70) { "permit" } else { "forbid" };
            let p_entity = some_principal(rng);
            let r_entity = some_resource(rng);
            let p = entity_scope(rng, "principal", None, &p_entity);
            let a = action_scope(rng);
            let r = entity_scope(rng, "resource", None, &r_entity);
            let text = format!("{effect} ({p}, {a}, {r}){};", conditions(rng));
            let twin = format!("permit ({p}, {a}, {r});");
            policies.push(PooledPolicy {
                policy: Policy::parse(None, &text).unwrap(),
                twin: Policy::parse(None, &twin).unwrap(),
                text,
            });
        }
        let mut templates = Vec::new();
        for _ in 0..POOLED_TEMPLATES {
            let effect = if rng.chance(70) { "permit" } else { "forbid" };
            let (ps, rs) = match rng.below(3) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            let p_entity = some_principal(rng);
            let r_entity = some_resource(rng);
            let p = entity_scope(rng, "principal", ps.then_some("?principal"), &p_entity);
            let a = action_scope(rng);
            let r = entity_scope(rng, "resource", rs.then_some("?resource"), &r_entity);
            let text = format!("{effect} ({p}, {a}, {r}){};", conditions(rng));
            let twin = format!("permit ({p}, {a}, {r});");
            templates.push(PooledTemplate {
                template: Template::parse(None, &text).unwrap(),
                twin: Template::parse(None, &twin).unwrap(),
                text,
                principal_slot: ps,
                resource_slot: rs,
            });
        }
        let entities = (0..POOLED_ENTITIES)
            .map(|_| {
                let json = gen_entities(rng);
                PooledEntities {
                    entities: Entities::from_json_value(json.clone(), None).unwrap(),
                    json,
                }
            })
            .collect();
        Self {
            policies,
            templates,
            entities,
        }
    }
}

/// One policy, template or link of a case, in the order it is added to the set.
enum Item {
    Static {
        id: String,
        pooled: usize,
    },
    Template {
        id: String,
        pooled: usize,
    },
    Link {
        id: String,
        template: String,
        values: HashMap<SlotId, EntityUid>,
    },
}

struct Case {
    items: Vec<Item>,
    /// Position of the entity data in the pool.
    entities: usize,
}

fn attr_entity(ty: &str, id: &str) -> serde_json::Value {
    serde_json::json!({ "__entity": { "type": ty, "id": id } })
}

const TAGS: &str = "__tags";

fn gen_entities(rng: &mut Rng) -> serde_json::Value {
    let mut out = Vec::new();
    let mut entity = |ty: &str,
                      id: &str,
                      parents: Vec<serde_json::Value>,
                      mut attrs: serde_json::Map<String, serde_json::Value>| {
        // Tags travel in `attrs` under a key no policy reads.
        let tags = attrs.remove(TAGS).unwrap_or_else(|| serde_json::json!({}));
        out.push(serde_json::json!({
            "uid": { "type": ty, "id": id },
            "attrs": attrs,
            "parents": parents,
            "tags": tags,
        }));
    };
    let parent = |ty: &str, id: &str| serde_json::json!({ "type": ty, "id": id });

    for (ty, ids) in [("User", &USERS[..]), ("Org::User", &ORG_USERS[..])] {
        for id in ids {
            if !rng.chance(85) {
                continue; // missing from the data
            }
            let mut parents = Vec::new();
            for g in GROUPS {
                if rng.chance(30) {
                    parents.push(parent("Group", g));
                }
            }
            if rng.chance(10) {
                parents.push(parent("Folder", rng.pick(&FOLDERS)));
            }
            let mut attrs = serde_json::Map::new();
            if rng.chance(70) {
                attrs.insert("level".into(), (rng.below(5) as i64).into());
            }
            if rng.chance(50) {
                let tags: Vec<&str> = ["a", "b"].into_iter().filter(|_| rng.chance(50)).collect();
                attrs.insert("tags".into(), tags.into());
            }
            if rng.chance(30) {
                attrs.insert("manager".into(), attr_entity("User", rng.pick(&USERS)));
            }
            if rng.chance(30) {
                attrs.insert("name".into(), format!("{ty}{id}").into());
            }
            let mut tags = serde_json::Map::new();
            for key in ["d0", "d1"] {
                if rng.chance(40) {
                    let mut tag = serde_json::Map::new();
                    if rng.chance(80) {
                        tag.insert("level".into(), (rng.below(3) as i64).into());
                    }
                    if rng.chance(60) {
                        let cats: Vec<&str> =
                            ["a", "b"].into_iter().filter(|_| rng.chance(50)).collect();
                        tag.insert("cats".into(), cats.into());
                    }
                    tags.insert(key.into(), tag.into());
                }
            }
            attrs.insert(TAGS.into(), tags.into());
            entity(ty, id, parents, attrs);
        }
    }
    // Groups and folders form chains and diamonds: a parent always has a higher
    // number, so there is no cycle, and a path can be three levels deep.
    for (ty, ids) in [("Group", &GROUPS[..]), ("Folder", &FOLDERS[..])] {
        for (i, id) in ids.iter().enumerate() {
            if !rng.chance(85) {
                continue;
            }
            let parents = ids[i + 1..]
                .iter()
                .filter(|_| rng.chance(40))
                .map(|p| parent(ty, p))
                .collect();
            let mut attrs = serde_json::Map::new();
            if rng.chance(50) {
                attrs.insert("level".into(), (rng.below(5) as i64).into());
            }
            if rng.chance(40) {
                attrs.insert("owner".into(), attr_entity("User", rng.pick(&USERS)));
            }
            entity(ty, id, parents, attrs);
        }
    }
    for id in DOCS {
        if !rng.chance(85) {
            continue;
        }
        let parents = FOLDERS
            .iter()
            .filter(|_| rng.chance(35))
            .map(|f| parent("Folder", f))
            .collect();
        let mut attrs = serde_json::Map::new();
        if rng.chance(70) {
            attrs.insert("owner".into(), attr_entity("User", rng.pick(&USERS)));
        }
        if rng.chance(50) {
            attrs.insert("public".into(), rng.chance(50).into());
        }
        if rng.chance(50) {
            attrs.insert("level".into(), (rng.below(5) as i64).into());
        }
        entity("Doc", id, parents, attrs);
    }
    // Action groups: leaves in `read` and/or `write`, those in `all`. Sometimes the
    // data holds no action entities at all, and Cedar then sees no action groups.
    if rng.chance(80) {
        for a in LEAF_ACTIONS {
            let parents = ["read", "write"]
                .into_iter()
                .filter(|_| rng.chance(50))
                .map(|g| parent("Action", g))
                .collect();
            entity("Action", a, parents, serde_json::Map::new());
        }
        for g in ["read", "write"] {
            let parents = if rng.chance(60) {
                vec![parent("Action", "all")]
            } else {
                vec![]
            };
            entity("Action", g, parents, serde_json::Map::new());
        }
        entity("Action", "all", vec![], serde_json::Map::new());
    }
    serde_json::Value::Array(out)
}

fn gen_case(rng: &mut Rng, pools: &Pools) -> Case {
    let mut items = Vec::new();
    // Templates added so far: id and pool position.
    let mut templates: Vec<(String, usize)> = Vec::new();
    let mut next_id = 0;
    for _ in 0..rng.below(26) {
        let id = format!("p{next_id}");
        next_id += 1;
        let roll = rng.below(10);
        if roll < 2 {
            let pooled = rng.below(pools.templates.len());
            items.push(Item::Template {
                id: id.clone(),
                pooled,
            });
            templates.push((id, pooled));
        } else if roll < 5 && !templates.is_empty() {
            // A few links to a template added before.
            let (template, pooled) = templates[rng.below(templates.len())].clone();
            let t = &pools.templates[pooled];
            for _ in 0..1 + rng.below(4) {
                let mut values = HashMap::new();
                if t.principal_slot {
                    let e = some_principal(rng);
                    values.insert(SlotId::principal(), EntityUid::from_str(&e).unwrap());
                }
                if t.resource_slot {
                    let e = some_resource(rng);
                    values.insert(SlotId::resource(), EntityUid::from_str(&e).unwrap());
                }
                items.push(Item::Link {
                    id: format!("link{next_id}"),
                    template: template.clone(),
                    values,
                });
                next_id += 1;
            }
        } else {
            items.push(Item::Static {
                id,
                pooled: rng.below(pools.policies.len()),
            });
        }
    }
    Case {
        items,
        entities: rng.below(pools.entities.len()),
    }
}

/// The case's policy set, or its scope-only twin: the same ids, scopes and links,
/// every policy a `permit` without conditions, so that Cedar's determining
/// policies are exactly the policies whose scope matches.
fn policy_set(pools: &Pools, case: &Case, twin: bool) -> PolicySet {
    let mut set = PolicySet::new();
    for item in &case.items {
        match item {
            Item::Static { id, pooled } => {
                let p = &pools.policies[*pooled];
                let p = if twin { &p.twin } else { &p.policy };
                set.add(p.new_id(PolicyId::new(id))).unwrap();
            }
            Item::Template { id, pooled } => {
                let t = &pools.templates[*pooled];
                let t = if twin { &t.twin } else { &t.template };
                set.add_template(t.new_id(PolicyId::new(id))).unwrap();
            }
            Item::Link {
                id,
                template,
                values,
            } => set
                .link(PolicyId::new(template), PolicyId::new(id), values.clone())
                .unwrap(),
        }
    }
    set
}

fn describe(pools: &Pools, case: &Case) -> String {
    let mut out = String::new();
    for item in &case.items {
        match item {
            Item::Static { id, pooled } => {
                let _ = writeln!(out, "static {id}: {}", pools.policies[*pooled].text);
            }
            Item::Template { id, pooled } => {
                let _ = writeln!(out, "template {id}: {}", pools.templates[*pooled].text);
            }
            Item::Link {
                id,
                template,
                values,
            } => {
                let _ = writeln!(out, "link {id} of {template}: {values:?}");
            }
        }
    }
    let _ = writeln!(out, "entities: {}", pools.entities[case.entities].json);
    out
}

fn gen_request(rng: &mut Rng) -> Request {
    let p = some_principal(rng);
    let a = some_action(rng);
    let r = some_resource(rng);
    let context = if rng.chance(70) {
        Context::from_json_value(serde_json::json!({ "flag": rng.chance(50) }), None).unwrap()
    } else {
        Context::empty()
    };
    Request::new(
        EntityUid::from_str(&p).unwrap(),
        EntityUid::from_str(&a).unwrap(),
        EntityUid::from_str(&r).unwrap(),
        context,
        None,
    )
    .unwrap()
}

/// Where two responses differ, if they do. Errors are compared as values (policy,
/// error kind, message, source location) and, separately, by policy id, message and
/// the chain of causes, in order.
fn compare(expected: &Response, actual: &Response) -> Option<String> {
    if expected.decision() != actual.decision() {
        return Some(format!(
            "decision: full {:?}, indexed {:?}",
            expected.decision(),
            actual.decision()
        ));
    }
    let reasons = |r: &Response| -> BTreeSet<String> {
        r.diagnostics().reason().map(ToString::to_string).collect()
    };
    if reasons(expected) != reasons(actual) {
        return Some(format!(
            "reasons: full {:?}, indexed {:?}",
            reasons(expected),
            reasons(actual)
        ));
    }
    let messages = |r: &Response| -> Vec<(String, String)> {
        r.diagnostics()
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(inner) = e;
                let mut chain = e.to_string();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    let _ = write!(chain, ": {c}");
                    cause = c.source();
                }
                (inner.policy_id().to_string(), chain)
            })
            .collect()
    };
    if messages(expected) != messages(actual) {
        return Some(format!(
            "errors: full {:?}, indexed {:?}",
            messages(expected),
            messages(actual)
        ));
    }
    let errors = |r: &Response| r.diagnostics().errors().cloned().collect::<Vec<_>>();
    if errors(expected) != errors(actual) {
        return Some("errors differ as values (source locations?)".into());
    }
    None
}

/// The pools, parsed once for all the tests of this file.
fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| Pools::new(&mut Rng(SEED)))
}

/// What the generated requests exercised, to keep the generator honest.
#[derive(Default, Debug)]
struct Coverage {
    cases: usize,
    requests: usize,
    allows: usize,
    with_errors: usize,
    forbid_reasons: usize,
    link_candidates: usize,
    /// Candidates that match through `in` on an ancestor, not by equality.
    ancestor_matches: usize,
    /// Requests with fewer candidates than policies.
    pruned: usize,
    /// Requests the compiled conditions decided without Cedar.
    compiled: usize,
}

/// Runs the differential check over the fixed cases, deciding with `decide`;
/// returns the mismatches found (at most `stop_after`) and the coverage.
fn run(
    cases: usize,
    stop_after: usize,
    decide: &dyn Fn(&PolicySet, &PolicyIndex, &Request, &Entities, &serde_json::Value) -> Response,
) -> (Vec<String>, Coverage) {
    let pools = pools();
    // The cases draw from their own stream, so that they stay the same whatever
    // the pools consumed.
    let mut rng = Rng(SEED ^ 0xca5e);
    let authorizer = Authorizer::new();
    let mut failures = Vec::new();
    let mut cov = Coverage::default();
    for case_no in 0..cases {
        let case = gen_case(&mut rng, pools);
        cov.cases += 1;
        let set = policy_set(pools, &case, false);
        let twin = policy_set(pools, &case, true);
        let pooled = &pools.entities[case.entities];
        let entities = &pooled.entities;
        // The compiled conditions read entities from Cedar's store, or from the
        // table a source serving whole data keeps: both must answer alike.
        // The index and the table share the data's type names, as the snapshot's
        // share the schema's (requests still bring their own).
        let names: Vec<EntityTypeName> = entities
            .iter()
            .map(|e| e.uid().type_name().clone())
            .collect();
        let types = Arc::new(TypeCanon::new(&names));
        let table = EntityTable::of(entities, &types).unwrap();
        // Alternate the cache: off, tiny (cleared often) and the default.
        let capacity = [0, 2, 4096][case_no % 3];
        let index = PolicyIndex::build_with_types(
            &set,
            PolicyIndexOptions {
                cache_capacity: capacity,
                compiled: true,
            },
            types,
        )
        .unwrap();
        assert_eq!(index.len(), set.num_of_policies());
        for req_no in 0..REQUESTS_PER_CASE {
            let request = gen_request(&mut rng);
            cov.requests += 1;
            let full = authorizer.is_authorized(&request, &set, entities);
            let indexed = decide(&set, &index, &request, entities, &pooled.json);
            let mut problem = compare(&full, &indexed);
            // When the compiled conditions decide, they must answer as Cedar does.
            let from_store = index.decide_compiled(&request, entities);
            let from_table = index.decide_compiled(&request, Lookup::new(entities, Some(&table)));
            if from_store.is_some() != from_table.is_some() && problem.is_none() {
                problem = Some(format!(
                    "decided by the compiled conditions from the store: {}, from the table: {}",
                    from_store.is_some(),
                    from_table.is_some()
                ));
            }
            for (from, compiled) in [("store", from_store), ("table", from_table)] {
                if let Some(compiled) = compiled {
                    cov.compiled += usize::from(from == "store");
                    if problem.is_none() {
                        problem = compare(&full, &compiled)
                            .map(|p| format!("compiled, entities from the {from}: {p}"));
                    }
                }
            }

            // The candidates must be exactly the policies whose scope matches.
            let scope_matches: BTreeSet<String> = authorizer
                .is_authorized(&request, &twin, entities)
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect();
            let candidates = index.candidates(&request, entities).unwrap();
            let candidate_set: BTreeSet<String> =
                candidates.iter().map(ToString::to_string).collect();
            if problem.is_none() && candidate_set != scope_matches {
                problem = Some(format!(
                    "candidates {candidate_set:?}, scope matches {scope_matches:?}"
                ));
            }
            let order: Vec<&PolicyId> = set
                .policies()
                .map(Policy::id)
                .filter(|id| candidates.contains(id))
                .collect();
            if problem.is_none() && order != candidates.iter().collect::<Vec<_>>() {
                problem = Some(format!("candidates out of order: {candidates:?}"));
            }
            if let Some(problem) = problem {
                failures.push(format!(
                    "case {case_no}, request {req_no} ({}, {}, {}): {problem}\n{}",
                    request.principal().unwrap(),
                    request.action().unwrap(),
                    request.resource().unwrap(),
                    describe(pools, &case)
                ));
                if failures.len() >= stop_after {
                    return (failures, cov);
                }
            }

            if full.decision() == cedar_policy::Decision::Allow {
                cov.allows += 1;
            } else if full.diagnostics().reason().next().is_some() {
                cov.forbid_reasons += 1;
            }
            if full.diagnostics().errors().next().is_some() {
                cov.with_errors += 1;
            }
            if candidates.len() < set.num_of_policies() {
                cov.pruned += 1;
            }
            for id in &candidates {
                let policy = set.policy(id).unwrap();
                if policy.template_id().is_some() {
                    cov.link_candidates += 1;
                }
                if matches_through_ancestor(policy, &request) {
                    cov.ancestor_matches += 1;
                }
            }
        }
    }
    (failures, cov)
}

/// Whether a matching policy's `in` constraint names an entity other than the
/// request's own, so that it matched through the hierarchy.
fn matches_through_ancestor(policy: &Policy, request: &Request) -> bool {
    let p = request.principal().unwrap();
    let a = request.action().unwrap();
    let r = request.resource().unwrap();
    let through_p = match policy.principal_constraint() {
        PrincipalConstraint::In(e) | PrincipalConstraint::IsIn(_, e) => &e != p,
        _ => false,
    };
    let through_a = match policy.action_constraint() {
        ActionConstraint::In(list) => !list.contains(a),
        _ => false,
    };
    let through_r = match policy.resource_constraint() {
        ResourceConstraint::In(e) | ResourceConstraint::IsIn(_, e) => &e != r,
        _ => false,
    };
    through_p || through_a || through_r
}

#[test]
fn indexed_decisions_equal_full_evaluation() {
    let started = Instant::now();
    let (failures, cov) = run(CASES, 5, &|_, index, request, entities, _| {
        index.is_authorized(request, entities)
    });
    eprintln!("checked in {:.1?}: {cov:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} mismatches, first:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The generator must keep exercising what makes the index subtle.
    let share = |n: usize| n * 100 / cov.requests.max(1);
    assert!(share(cov.allows) >= 10, "too few Allow decisions: {cov:?}");
    assert!(share(cov.forbid_reasons) >= 3, "too few forbids: {cov:?}");
    assert!(share(cov.with_errors) >= 10, "too few errors: {cov:?}");
    assert!(
        cov.link_candidates >= 1000,
        "too few link candidates: {cov:?}"
    );
    assert!(
        cov.ancestor_matches >= 1000,
        "too few matches through ancestors: {cov:?}"
    );
    assert!(
        share(cov.pruned) >= 50,
        "the index pruned too little: {cov:?}"
    );
    // Most requests are decided by the compiled conditions, and the rest (errors,
    // forms left to Cedar) by Cedar: both paths are exercised.
    assert!(
        share(cov.compiled) >= 50,
        "the compiled conditions decided too few requests: {cov:?}"
    );
    assert!(
        cov.requests - cov.compiled >= cov.with_errors,
        "requests with errors were decided without Cedar: {cov:?}"
    );
}

/// A per-request set holding the policies of `ids`, built the way a test can
/// (re-linking links), to simulate a broken index through the public API.
fn subset(set: &PolicySet, ids: &[PolicyId]) -> PolicySet {
    let mut out = PolicySet::new();
    for id in ids {
        let policy = set.policy(id).unwrap();
        match (policy.template_id(), policy.template_links()) {
            (Some(t), Some(values)) => {
                if out.template(t).is_none() {
                    out.add_template(set.template(t).unwrap().clone()).unwrap();
                }
                out.link(t.clone(), id.clone(), values).unwrap();
            }
            _ => out.add(policy.clone()).unwrap(),
        }
    }
    out
}

fn is_general(policy: &Policy) -> bool {
    matches!(policy.principal_constraint(), PrincipalConstraint::Any)
        && matches!(policy.action_constraint(), ActionConstraint::Any)
        && matches!(policy.resource_constraint(), ResourceConstraint::Any)
}

#[test]
fn an_index_without_the_general_bucket_is_caught() {
    let (failures, _) = run(CASES, 1, &|set, index, request, entities, _| {
        let ids: Vec<PolicyId> = index
            .candidates(request, entities)
            .unwrap()
            .into_iter()
            .filter(|id| !is_general(set.policy(id).unwrap()))
            .collect();
        Authorizer::new().is_authorized(request, &subset(set, &ids), entities)
    });
    assert!(
        !failures.is_empty(),
        "dropping the general bucket went unnoticed"
    );
    eprintln!("caught: {}", failures[0].lines().next().unwrap());
}

#[test]
fn an_index_that_ignores_ancestors_is_caught() {
    let (failures, _) = run(CASES, 1, &|set, index, request, entities, json| {
        // Candidates found with the same entities stripped of their parents, as an
        // index that looked up only the request's own entities would find them.
        let mut flat = json.clone();
        for e in flat.as_array_mut().unwrap() {
            e["parents"] = serde_json::json!([]);
        }
        let flat = Entities::from_json_value(flat, None).unwrap();
        let ids = index.candidates(request, &flat).unwrap();
        Authorizer::new().is_authorized(request, &subset(set, &ids), entities)
    });
    assert!(!failures.is_empty(), "ignoring ancestors went unnoticed");
    eprintln!("caught: {}", failures[0].lines().next().unwrap());
}

#[test]
fn an_index_that_drops_links_is_caught() {
    // An index that filed only static policies would lose every template-linked
    // grant.
    let (failures, _) = run(CASES, 1, &|set, index, request, entities, _| {
        let ids: Vec<PolicyId> = index
            .candidates(request, entities)
            .unwrap()
            .into_iter()
            .filter(|id| set.policy(id).unwrap().template_id().is_none())
            .collect();
        Authorizer::new().is_authorized(request, &subset(set, &ids), entities)
    });
    assert!(!failures.is_empty(), "dropping links went unnoticed");
    eprintln!("caught: {}", failures[0].lines().next().unwrap());
}

/// The shipped portal model and its data: every request of each user and contact on
/// each entity, for every action, with and without a second factor, is decided as
/// full evaluation decides it, and nearly all of them by the compiled conditions.
#[test]
fn the_portal_model_is_decided_by_its_compiled_conditions_as_cedar_decides() {
    use portcullis::model::{compile, Sources};
    let snapshot = compile(&Sources::embedded()).unwrap();
    let entities = snapshot
        .entities
        .as_ref()
        .and_then(|d| d.served_whole())
        .expect("the embedded data is served whole");
    // Decisions read the entities through the table the file source hands out.
    let table = snapshot.entities.as_ref().and_then(|d| d.served_table());
    let data = Lookup::new(&entities, Some(table.as_deref().expect("a table")));
    let principals: Vec<EntityUid> = entities
        .iter()
        .map(cedar_policy::Entity::uid)
        .filter(|u| {
            ["Portal::User", "Portal::Contact"].contains(&u.type_name().to_string().as_str())
        })
        .collect();
    let resources: Vec<EntityUid> = entities.iter().map(cedar_policy::Entity::uid).collect();
    let mut actions: Vec<&EntityUid> = snapshot.actions.iter().collect();
    actions.sort_by_key(|a| a.to_string());
    let contexts = [
        Context::empty(),
        Context::from_json_value(serde_json::json!({ "secondFactor": true }), None).unwrap(),
    ];
    let authorizer = Authorizer::new();
    let (mut requests, mut compiled, mut allows) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for p in &principals {
        for a in &actions {
            for r in &resources {
                for context in &contexts {
                    let request =
                        Request::new(p.clone(), (*a).clone(), r.clone(), context.clone(), None)
                            .unwrap();
                    requests += 1;
                    let full = authorizer.is_authorized(&request, &snapshot.policies, &entities);
                    if full.decision() == cedar_policy::Decision::Allow {
                        allows += 1;
                    }
                    let mut problem = compare(&full, &snapshot.index.is_authorized(&request, data));
                    if let Some(c) = snapshot.index.decide_compiled(&request, data) {
                        compiled += 1;
                        problem = problem.or_else(|| compare(&full, &c));
                    }
                    if let Some(problem) = problem {
                        failures.push(format!("{p} {a} {r} {context}: {problem}"));
                    }
                }
            }
        }
    }
    eprintln!("{requests} requests, {allows} allowed, {compiled} decided by compiled conditions");
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        allows * 50 >= requests,
        "too few Allow decisions: {allows} of {requests}"
    );
    assert!(
        compiled * 100 >= requests * 90,
        "the compiled conditions decided only {compiled} of {requests} portal requests"
    );
}
