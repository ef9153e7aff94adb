#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)] // test code
//! The lean file source decides exactly as the whole data set did.
//!
//! The file source keeps each entity's JSON and builds Cedar entities per decision for
//! what the request can reach (its uids, context entities, entities policy conditions
//! name, their ancestors and references). Each case here decides one request twice
//! through the one pipeline: on the file source, and on the whole data set as Cedar
//! reads the file (a memory source over it, which is what the file source handed out
//! before). The outcomes (decision, determining policies, errors) must be equal.
//!
//! Two data sets: the shipped portal demo data, every principal, action, resource and
//! context; and a generated organisation whose groups and folders nest six levels
//! deep, with conditions that read through references two and three entities away,
//! entities named in conditions, entities in the context, references to entities the
//! data does not hold, templates and forbids. The last tests cut the file source on
//! purpose and check that the comparison notices, and check that loading rejects and
//! accepts exactly what Cedar's whole-set reader does, with its messages.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Entities, EntityTypeName, EntityUid};
use serde_json::{json, Value};

use portcullis::decision::{check_uids, decide, Call, Outcome};
use portcullis::entities::{
    reachable, EntitySource, EntitySourceError, Fetched, FileSource, MemorySource, UidPage,
};
use portcullis::model::{
    compile, condition_literals, entity_data, lean_entity_data, EntityData, Snapshot, SourceFile,
    Sources, WHOLE_SET_MAX_BYTES,
};

/// The snapshot with its data served lean, whatever its size (data this small is
/// otherwise served whole).
fn served_lean(mut snapshot: Snapshot, sources: &Sources) -> Snapshot {
    let file = sources
        .entities
        .as_ref()
        .expect("the model holds entity data");
    let mut data = lean_entity_data(file, &snapshot.schema, &snapshot.types).unwrap();
    data.literals = condition_literals(&snapshot.policies, &data);
    assert!(data.served_whole().is_none());
    snapshot.entities = Some(Arc::new(data));
    snapshot
}

fn uid(ty: &str, id: &str) -> EntityUid {
    format!("{ty}::{}", json!(id)).parse().unwrap()
}

/// A request to decide: principal, action, resource, context.
type Case = (EntityUid, EntityUid, EntityUid, Value);

/// Decides every case on `lean` and on the whole data set; returns the cases whose
/// outcomes differ, described, and the number of cases decided.
fn differences(
    snapshot: &Snapshot,
    lean: &dyn EntitySource,
    cases: &[Case],
) -> (Vec<String>, usize) {
    let whole = snapshot
        .entities
        .as_ref()
        .expect("the model holds entity data")
        .whole(&snapshot.schema)
        .unwrap();
    let whole = MemorySource::new(whole);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let call = Call::unrecorded();
    let mut found = Vec::new();
    let mut decided = 0;
    for (principal, action, resource, context) in cases {
        let Ok(checked) = check_uids(
            snapshot,
            principal.clone(),
            action.clone(),
            resource.clone(),
            Some(context.clone()),
        ) else {
            continue;
        };
        decided += 1;
        let (expected, actual): (Outcome, Outcome) = runtime.block_on(async {
            (
                decide(snapshot, &whole, &call, &checked, &[]).await,
                decide(snapshot, lean, &call, &checked, &[]).await,
            )
        });
        if normal(expected.clone()) != normal(actual.clone()) {
            found.push(format!(
                "{principal} {action} {resource} {context}\n  whole: {expected:?}\n  lean:  {actual:?}"
            ));
        }
    }
    (found, decided)
}

/// An outcome with its determining policies in id order: Cedar reports them as a set.
fn normal(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Decided(mut d) => {
            d.reasons.sort();
            Outcome::Decided(d)
        }
        other => other,
    }
}

fn assert_same(snapshot: &Snapshot, cases: &[Case], at_least: usize) {
    let (found, decided) = differences(snapshot, &FileSource, cases);
    assert!(
        found.is_empty(),
        "{} of {decided} decisions differ, the first:\n{}",
        found.len(),
        found.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(decided >= at_least, "only {decided} cases were decidable");
}

fn entities_of(snapshot: &Snapshot, ty: &str) -> Vec<EntityUid> {
    let data = snapshot.entities.as_ref().unwrap();
    let ty: EntityTypeName = ty.parse().unwrap();
    data.of_type(&ty)
        .iter()
        .map(|s| uid(&ty.to_string(), &s.id))
        .collect()
}

#[test]
fn the_portal_decides_the_same_on_lean_and_whole_demo_data() {
    let sources = Sources::embedded();
    let snapshot = served_lean(compile(&sources).unwrap(), &sources);
    let mut principals = entities_of(&snapshot, "Portal::User");
    principals.extend(entities_of(&snapshot, "Portal::Contact"));
    principals.push(uid("Portal::User", "nobody"));
    let mut resources = Vec::new();
    for ty in [
        "Portal::Account",
        "Portal::Contact",
        "Portal::Service",
        "Portal::Domain",
        "Portal::Invoice",
        "Portal::Quote",
        "Portal::Ticket",
        "Portal::EmailMessage",
    ] {
        resources.extend(entities_of(&snapshot, ty));
    }
    resources.push(uid("Portal::Invoice", "inv-missing"));
    let contexts = [
        json!({}),
        json!({"secondFactor": true}),
        json!({"secondFactor": false}),
    ];
    let mut cases = Vec::new();
    for p in &principals {
        for a in snapshot.schema.actions() {
            for r in &resources {
                for c in &contexts {
                    cases.push((p.clone(), a.clone(), r.clone(), c.clone()));
                }
            }
        }
    }
    assert_same(&snapshot, &cases, 1000);
}

/// An organisation whose groups and folders nest, with conditions that read through
/// references, literals and the context.
const ORG_SCHEMA: &str = r#"
namespace Org {
  entity Group in [Group] = { level: Long };
  entity User in [Group] = { level: Long, manager?: User, team?: Group } tags String;
  entity Folder in [Folder] = { owner: User, quota?: decimal, net?: ipaddr };
  entity Doc in [Folder] = { owner: User, folder: Folder, secret: Bool, reviewers: Set<User> };
  entity Config = { open: Bool, admins: Group };
  type Ctx = { delegate?: User, via?: Group };
  action view, edit appliesTo { principal: [User], resource: [Doc, Folder], context: Ctx };
  action share in [edit] appliesTo { principal: [User], resource: [Doc], context: Ctx };
}
"#;

const ORG_POLICIES: &str = r#"
@id("owner or the owner's manager edits")
permit (principal, action in Org::Action::"edit", resource is Org::Doc)
when { resource.owner == principal || (resource.owner has manager && resource.owner.manager == principal) };

@id("the folder owner's team views")
permit (principal, action == Org::Action::"view", resource is Org::Doc)
when { resource.folder.owner has team && principal in resource.folder.owner.team };

@id("the configured admins view, while the config is open")
permit (principal, action == Org::Action::"view", resource)
when { Org::Config::"main".open && principal in Org::Config::"main".admins };

@id("teams under g5 view folders")
permit (principal, action == Org::Action::"view", resource is Org::Folder)
when { principal has team && principal.team in Org::Group::"g5" };

@id("g9 sits in the principal's groups")
permit (principal, action == Org::Action::"view", resource is Org::Folder)
when { Org::Group::"g9" in principal };

@id("a senior delegate of the owner's team")
permit (principal, action == Org::Action::"view", resource is Org::Doc)
when {
  context has delegate && context.delegate.level > 2 &&
  resource.owner has team && context.delegate in resource.owner.team
};

@id("via a group the resource's folder owner is in")
permit (principal, action, resource is Org::Doc)
when { context has via && resource.folder.owner in context.via && principal in context.via };

@id("the owner's manager outranks the principal")
permit (principal, action == Org::Action::"view", resource is Org::Doc)
when { resource.owner has manager && resource.owner.manager.level > principal.level + 2 };

@id("folders above quota on a loopback net")
permit (principal, action == Org::Action::"view", resource is Org::Folder)
when {
  resource has quota && resource.quota.greaterThan(decimal("1.5")) &&
  resource has net && resource.net.isLoopback()
};

@id("reviewers view")
permit (principal, action == Org::Action::"view", resource is Org::Doc)
when { resource.reviewers.contains(principal) };

@id("tags match")
permit (principal, action == Org::Action::"edit", resource is Org::Doc)
when {
  principal.hasTag("edit") && resource.owner.hasTag("edit") &&
  principal.getTag("edit") == resource.owner.getTag("edit")
};

@id("the root group views")
permit (principal in Org::Group::"g0", action == Org::Action::"view", resource is Org::Folder);

@id("secrets above one's level")
forbid (principal, action, resource is Org::Doc)
when { resource.secret && principal.level < resource.owner.level };

@id("juniors do not share")
forbid (principal, action == Org::Action::"share", resource)
unless { principal.level > 1 };

@id("member")
permit (principal in ?principal, action == Org::Action::"view", resource in ?resource)
when { resource has owner || principal.level > 3 };
"#;

/// SplitMix64 over a fixed seed: every run checks the same cases.
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

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const NETS: [&str; 2] = ["127.0.0.1", "10.0.0.1"];
const GROUPS: usize = 63;
const USERS: usize = 120;
const FOLDERS: usize = 63;
const DOCS: usize = 250;

fn r(ty: &str, id: String) -> Value {
    json!({"type": format!("Org::{ty}"), "id": id})
}

/// Groups and folders as binary trees six levels deep (some groups in two parents),
/// users in groups, docs in folders; some references point at entities the data does
/// not hold (`ghost`).
fn org_data(rng: &mut Rng) -> Value {
    let mut out = Vec::new();
    for g in 0..GROUPS {
        let mut parents = Vec::new();
        if g > 0 {
            parents.push(r("Group", format!("g{}", (g - 1) / 2)));
        }
        if g > 2 && rng.chance(20) {
            parents.push(r("Group", format!("g{}", rng.below(g))));
        }
        out.push(json!({"uid": r("Group", format!("g{g}")), "attrs": {"level": rng.below(5)}, "parents": parents}));
    }
    let user = |rng: &mut Rng| {
        if rng.chance(10) {
            "ghost".to_string()
        } else {
            format!("u{}", rng.below(USERS))
        }
    };
    for u in 0..USERS {
        let mut attrs = json!({"level": rng.below(5)});
        if rng.chance(60) {
            attrs["manager"] = r("User", user(rng));
        }
        if rng.chance(70) {
            attrs["team"] = r("Group", format!("g{}", rng.below(GROUPS)));
        }
        let parents: Vec<Value> = (0..rng.below(3))
            .map(|_| r("Group", format!("g{}", rng.below(GROUPS))))
            .collect();
        let mut tags = json!({});
        if rng.chance(50) {
            tags["edit"] = json!(["x", "y"][rng.below(2)]);
        }
        out.push(json!({"uid": r("User", format!("u{u}")), "attrs": attrs, "parents": parents, "tags": tags}));
    }
    for f in 0..FOLDERS {
        let parents = if f > 0 {
            vec![r("Folder", format!("f{}", (f - 1) / 2))]
        } else {
            vec![]
        };
        let mut attrs = json!({"owner": r("User", user(rng))});
        // Extension values in both forms Cedar reads with a schema.
        match rng.below(3) {
            0 => {
                attrs["quota"] =
                    json!({"__extn": {"fn": "decimal", "arg": format!("{}.25", rng.below(4))}})
            }
            1 => attrs["quota"] = json!({"fn": "decimal", "arg": format!("{}.5", rng.below(4))}),
            _ => {}
        }
        if rng.chance(60) {
            attrs["net"] = json!({"__extn": {"fn": "ip", "arg": NETS[rng.below(2)]}});
        }
        out.push(json!({"uid": r("Folder", format!("f{f}")), "attrs": attrs, "parents": parents}));
    }
    for d in 0..DOCS {
        let folder = format!("f{}", rng.below(FOLDERS));
        let reviewers: Vec<Value> = (0..rng.below(3)).map(|_| r("User", user(rng))).collect();
        out.push(json!({
            "uid": r("Doc", format!("d{d}")),
            "attrs": {
                "owner": r("User", user(rng)),
                "folder": r("Folder", folder.clone()),
                "secret": rng.chance(20),
                "reviewers": reviewers,
            },
            "parents": [r("Folder", folder)],
        }));
    }
    out.push(json!({"uid": r("Config", "main".into()), "attrs": {"open": true, "admins": r("Group", "g3".into())}, "parents": []}));
    Value::Array(out)
}

fn org_links(rng: &mut Rng) -> String {
    let links: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "link_id": format!("member-{i}"),
                "template_id": "member",
                "args": {
                    "?principal": format!("Org::Group::\"g{}\"", rng.below(GROUPS)),
                    "?resource": format!("Org::Folder::\"f{}\"", rng.below(FOLDERS)),
                }
            })
        })
        .collect();
    serde_json::to_string(&links).unwrap()
}

fn org_sources(rng: &mut Rng) -> Sources {
    let mut sources = Sources::embedded();
    sources.schema = SourceFile::new("org.cedarschema", ORG_SCHEMA);
    sources.policies = vec![SourceFile::new("org.cedar", ORG_POLICIES)];
    sources.links = Some(SourceFile::new("links.json", org_links(rng)));
    sources.routes = None;
    sources.entities = Some(SourceFile::new(
        "org.json",
        serde_json::to_string_pretty(&org_data(rng)).unwrap(),
    ));
    sources
}

fn org_cases(rng: &mut Rng, n: usize) -> Vec<Case> {
    let actions = ["view", "edit", "share"];
    (0..n)
        .map(|_| {
            let principal = if rng.chance(3) {
                uid("Org::User", "nobody")
            } else {
                uid("Org::User", &format!("u{}", rng.below(USERS)))
            };
            let action = uid("Org::Action", actions[rng.below(actions.len())]);
            let resource = match rng.below(10) {
                0 => uid("Org::Doc", "missing"),
                1..=3 => uid("Org::Folder", &format!("f{}", rng.below(FOLDERS))),
                _ => uid("Org::Doc", &format!("d{}", rng.below(DOCS))),
            };
            let delegate = json!({"__entity": {"type": "Org::User", "id": format!("u{}", rng.below(USERS))}});
            let via = json!({"__entity": {"type": "Org::Group", "id": format!("g{}", rng.below(GROUPS))}});
            let context = match rng.below(4) {
                0 => json!({}),
                1 => json!({"delegate": delegate}),
                2 => json!({"via": via}),
                _ => json!({"delegate": delegate, "via": via}),
            };
            (principal, action, resource, context)
        })
        .collect()
}

fn org() -> (Snapshot, Vec<Case>) {
    let mut rng = Rng(0x1ea0_f11e_0014);
    let sources = org_sources(&mut rng);
    let snapshot = served_lean(
        compile(&sources).unwrap_or_else(|e| panic!("{e:?}")),
        &sources,
    );
    let cases = org_cases(&mut rng, 2500);
    (snapshot, cases)
}

#[test]
fn a_nested_organisation_decides_the_same_on_lean_and_whole_data() {
    let (snapshot, cases) = org();
    let data = snapshot.entities.as_ref().unwrap();
    assert_eq!(data.len(), GROUPS + USERS + FOLDERS + DOCS + 1);
    // The config and the group the conditions name are read by every decision.
    let literals: BTreeSet<String> = data.literals.iter().map(ToString::to_string).collect();
    assert_eq!(
        literals,
        BTreeSet::from([
            r#"Org::Config::"main""#.to_string(),
            r#"Org::Group::"g5""#.to_string(),
            r#"Org::Group::"g9""#.to_string(),
        ])
    );
    assert_same(&snapshot, &cases, 1800);
    // Not trivially equal: both answers occur, and some decisions carry errors.
    let outcomes = decide_all(&snapshot, &cases);
    let allowed = outcomes.iter().filter(|o| o.allowed()).count();
    let with_errors = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Decided(d) if !d.errors.is_empty()))
        .count();
    assert!(
        allowed > 200 && outcomes.len() - allowed > 200,
        "{allowed} allowed of {}",
        outcomes.len()
    );
    assert!(with_errors > 30, "{with_errors} decisions with errors");
}

fn decide_all(snapshot: &Snapshot, cases: &[Case]) -> Vec<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let call = Call::unrecorded();
    cases
        .iter()
        .filter_map(|(p, a, r, c)| {
            check_uids(snapshot, p.clone(), a.clone(), r.clone(), Some(c.clone())).ok()
        })
        .map(|checked| runtime.block_on(decide(snapshot, &FileSource, &call, &checked, &[])))
        .collect()
}

/// A file source cut on purpose: lean data without what conditions name, or a fetch
/// of the principal alone.
struct Cut {
    data: Arc<EntityData>,
    principal_only: bool,
}

#[async_trait]
impl EntitySource for Cut {
    async fn entities_for(
        &self,
        uids: &[EntityUid],
        snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError> {
        let roots = if self.principal_only {
            &uids[..1]
        } else {
            uids
        };
        Ok(Fetched::whole(Arc::new(reachable(
            &self.data, roots, snapshot,
        )?)))
    }

    async fn list(
        &self,
        _: &EntityTypeName,
        _: Option<&str>,
        _: usize,
        _: &Snapshot,
    ) -> Result<UidPage, EntitySourceError> {
        Ok(UidPage::default())
    }

    async fn ready(&self) -> Result<(), EntitySourceError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "cut"
    }
}

#[test]
fn a_source_that_forgets_what_conditions_name_or_the_resource_is_caught() {
    let (snapshot, cases) = org();
    let whole: Entities = (*snapshot
        .entities
        .as_ref()
        .unwrap()
        .whole(&snapshot.schema)
        .unwrap())
    .clone();
    let data = Arc::new(EntityData::new(whole).unwrap());
    assert!(data.literals.is_empty());
    for principal_only in [false, true] {
        let cut = Cut {
            data: data.clone(),
            principal_only,
        };
        let (found, _) = differences(&snapshot, &cut, &cases);
        assert!(
            found.len() > 10,
            "cut (principal only: {principal_only}) went unnoticed: {} differences",
            found.len()
        );
    }
}

fn portal_file(text: &str) -> (Snapshot, SourceFile) {
    let snapshot = compile(&Sources::embedded()).unwrap();
    (snapshot, SourceFile::new("data.json", text))
}

fn account(id: &str, name: &str) -> Value {
    json!({"uid": {"type": "Portal::Account", "id": id},
           "attrs": {"id": id, "name": name, "owner": {"type": "Portal::User", "id": "o"}},
           "parents": []})
}

fn user_in(id: &str, parents: &[(&str, &str)]) -> Value {
    let parents: Vec<Value> = parents
        .iter()
        .map(|(ty, id)| json!({"type": format!("Portal::{ty}"), "id": id}))
        .collect();
    json!({"uid": {"type": "Portal::User", "id": id},
           "attrs": {"email": "x@example.com", "disabled": false, "twoFactorEnrolled": false},
           "parents": parents})
}

/// Loading rejects exactly what Cedar's whole-set reader rejects, with the same
/// problems, and accepts the rest with the same entities.
#[test]
fn loading_accepts_and_rejects_what_the_whole_set_reader_does() {
    let misfit = json!({"uid": {"type": "Portal::User", "id": "x"},
                        "attrs": {"email": 3, "disabled": false, "twoFactorEnrolled": true},
                        "parents": []});
    let cases: Vec<(&str, String, bool)> = vec![
        (
            "good data",
            json!([account("a", "A"), user_in("u", &[("Account", "a")])]).to_string(),
            true,
        ),
        (
            "a misfit entity",
            json!([account("a", "A"), misfit]).to_string(),
            false,
        ),
        (
            "the same uid twice, differently",
            json!([account("a", "A"), account("a", "B")]).to_string(),
            false,
        ),
        (
            "the same entity twice",
            json!([account("a", "A"), account("a", "A")]).to_string(),
            true,
        ),
        (
            "a parent of an undeclared type",
            json!([user_in("u", &[("Robot", "r")])]).to_string(),
            false,
        ),
        ("not an array", json!({"uid": 1}).to_string(), false),
        ("not JSON", "[{".to_string(), false),
        ("empty", "[]".to_string(), true),
        (
            "an attribute written twice keeps its last value",
            r#"[{"uid": {"type": "Portal::Account", "id": "a"}, "attrs": {"id": "a", "name": 3, "name": "A",
                 "owner": {"type": "Portal::User", "id": "o"}}, "parents": []}]"#
                .to_string(),
            true,
        ),
    ];
    for (what, text, accepted) in cases {
        let (snapshot, file) = portal_file(&text);
        let whole = entity_data(&file, &snapshot.schema, &snapshot.types);
        let lean = lean_entity_data(&file, &snapshot.schema, &snapshot.types);
        assert_eq!(whole.is_ok(), accepted, "{what}: {:?}", whole.err());
        match (whole, lean) {
            (Ok(whole), Ok(lean)) => {
                let from_whole: BTreeSet<String> = whole
                    .iter()
                    .map(|e| e.uid().to_string())
                    .filter(|u| !u.contains("Action::"))
                    .collect();
                let from_lean: BTreeSet<String> = lean
                    .whole(&snapshot.schema)
                    .unwrap()
                    .iter()
                    .map(|e| e.uid().to_string())
                    .filter(|u| !u.contains("Action::"))
                    .collect();
                assert_eq!(from_whole, from_lean, "{what}");
                assert_eq!(lean.len(), from_lean.len(), "{what}");
            }
            (Err(whole), Err(lean)) => {
                let show = |p: &[portcullis::model::Problem]| -> Vec<String> {
                    p.iter().map(ToString::to_string).collect()
                };
                assert_eq!(show(&whole), show(&lean), "{what}");
            }
            (whole, lean) => panic!("{what}: whole {whole:?}, lean {:?}", lean.err()),
        }
    }
}

/// A cycle in the hierarchy is rejected at load, as Cedar's reader rejects it.
#[test]
fn a_cycle_in_the_hierarchy_is_rejected_with_cedars_message() {
    // Portal users may only be in accounts, so the cycle needs a schema that nests.
    let data = json!([
        {"uid": {"type": "Org::Group", "id": "a"}, "attrs": {"level": 1}, "parents": [{"type": "Org::Group", "id": "b"}]},
        {"uid": {"type": "Org::Group", "id": "b"}, "attrs": {"level": 1}, "parents": [{"type": "Org::Group", "id": "c"}]},
        {"uid": {"type": "Org::Group", "id": "c"}, "attrs": {"level": 1}, "parents": [{"type": "Org::Group", "id": "a"}]}
    ]);
    let mut rng = Rng(1);
    let mut sources = org_sources(&mut rng);
    sources.entities = Some(SourceFile::new("cycle.json", data.to_string()));
    let schema = portcullis::model::parse_schema(&sources.schema).unwrap();
    let types = portcullis::model::SchemaTypes::from_source(&sources.schema);
    let file = sources.entities.as_ref().unwrap();
    let lean = lean_entity_data(file, &schema, &types).expect_err("a cycle is rejected");
    let whole = entity_data(file, &schema, &types).expect_err("Cedar rejects a cycle");
    // Cedar names whichever vertex of the cycle it met first, which varies from run
    // to run; the rest of the message is the same.
    let show = |p: &[portcullis::model::Problem]| -> Vec<String> {
        p.iter()
            .map(|p| {
                let text = p.to_string();
                text.split_once("containing vertex")
                    .map_or(text.clone(), |(lead, _)| lead.to_string())
            })
            .collect()
    };
    assert_eq!(show(&lean), show(&whole));
    assert!(show(&lean)[0].contains("has a cycle"), "{:?}", show(&lean));
    // And through the whole compile, as a reload would meet it.
    assert!(compile(&sources).is_err());
}

#[test]
fn listing_pages_through_each_type_in_id_order() {
    let (snapshot, _) = org();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ty: EntityTypeName = "Org::Doc".parse().unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = runtime
            .block_on(FileSource.list(&ty, cursor.as_deref(), 40, &snapshot))
            .unwrap();
        seen.extend(page.uids.iter().map(|u| u.id().unescaped().to_string()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..DOCS).map(|d| format!("d{d}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

/// Small data is served whole (a decision parses nothing); data above the limit is
/// served lean.
#[test]
fn small_data_is_served_whole_and_large_data_lean() {
    let small = compile(&Sources::embedded()).unwrap();
    assert!(small.entities.as_ref().unwrap().served_whole().is_some());
    let invoices: Vec<Value> = (0..12_000)
        .map(|i| {
            json!({"uid": {"type": "Portal::Invoice", "id": format!("inv-{i}")},
                   "attrs": {"account": {"type": "Portal::Account", "id": "acme"}, "total": i},
                   "parents": []})
        })
        .collect();
    let text = Value::Array(invoices).to_string();
    assert!(text.len() > WHOLE_SET_MAX_BYTES);
    let mut sources = Sources::embedded();
    sources.entities = Some(SourceFile::new("large.json", text));
    let large = compile(&sources).unwrap();
    let data = large.entities.as_ref().unwrap();
    assert!(data.served_whole().is_none());
    assert_eq!(data.len(), 12_000);
}
