//! The immutable snapshot of the model: the validated policy set and schema with every
//! index derived from them, built once by [`super::compile`] and never changed after.
//! A request loads the current snapshot once and reads everything it needs from it,
//! so a reload can never show a request half of two models.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use cedar_policy::{Entities, Entity, EntityTypeName, EntityUid, PolicySet, Schema};
use serde::Serialize;
use smol_str::SmolStr;

use cedar_policy_core::ast::RequestSchema;

use super::entity_table::{EntityTable, TypeCanon, UidKey, UidMap};
use super::mapping::Mapping;
use super::routes::RouteTable;
use super::schema_types::SchemaTypes;

/// What kind of policy an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Static,
    Template,
    Link,
}

/// What a snapshot knows about one of its policies.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub kind: PolicyKind,
    /// The file the policy (or, for a link, its links file) came from.
    pub file: String,
    /// Line of the policy in that file (1-based), where known.
    pub line: Option<usize>,
    /// SHA-256 of the policy's text, hex.
    pub hash: String,
}

/// An immutable, validated model.
#[derive(Debug)]
pub struct Snapshot {
    pub schema: Schema,
    pub policies: PolicySet,
    /// The policies filed by what their scopes pin: a decision hands Cedar only the
    /// candidates its request can match, with exactly full evaluation's answer.
    pub index: super::index::PolicyIndex,
    /// Policies, templates and links in load order.
    pub info: Vec<PolicyInfo>,
    /// SHA-256 over every source file's name and text, hex.
    pub hash: String,
    /// SHA-256 over the schema text alone.
    pub schema_hash: String,
    pub loaded_at: SystemTime,
    /// The gateway route table, validated against `schema`; `None` when none is
    /// configured (the gateway endpoints then deny every request).
    pub routes: Option<RouteTable>,
    /// The AuthZEN mapping, checked against `schema`.
    pub mapping: Mapping,
    /// Attribute and context types of the schema, for converting AuthZEN values.
    pub types: SchemaTypes,
    /// The schema's entity types and actions as sets, for request checks.
    pub entity_types: HashSet<EntityTypeName, foldhash::fast::RandomState>,
    pub actions: HashSet<EntityUid, foldhash::fast::RandomState>,
    /// The (principal type, action, resource type) requests the schema accepts with
    /// an empty context, whatever the ids (types that enumerate their ids are never
    /// here): such a request needs no validation against the schema again.
    pub empty_context: EmptyContext,
    /// The schema's entity types (actions' types included) by their names as written
    /// in a uid (`Portal::User`), so a request's uids are read without Cedar's parser.
    pub type_names: TypeNames,
    /// The same names as shared instances, for uids made outside the request check
    /// (the gateway's principal).
    pub type_canon: Arc<TypeCanon>,
    /// The schema's action entities when actions have groups (`action in Group`
    /// needs them); empty otherwise, since a request's own action needs no entity.
    pub action_entities: Vec<Entity>,
    /// The entity data of the model (the file source), validated against `schema`;
    /// `None` when the data lives in an external store.
    pub entities: Option<Arc<EntityData>>,
    /// Paths of the files the snapshot was built from, for the reload watcher.
    pub paths: Vec<PathBuf>,
    /// What the query planner derives from this snapshot alone (its policies and
    /// entity data prepared for partial evaluation), computed on the first plan.
    pub plan_memo: Memo,
    /// Context shapes the schema accepted, per action: see [`ContextShapes`].
    pub context_shapes: ContextShapes,
}

/// The kind of a context value, where the schema's check of a context depends on
/// nothing but the kinds of its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Bool,
    Long,
    String,
    /// An extension value, by its type's name (`ipaddr`, `decimal`).
    Extension(cedar_policy_core::ast::Name),
}

/// A context's keys with the kinds of their values, in key order.
pub type ContextShape = Vec<(SmolStr, ValueKind)>;

/// The context shapes the schema accepted for an action, with the principal and
/// resource types of a request it accepts for any ids (`EmptyContext`). Cedar's
/// check of such a request's context reads only the context's keys and the kinds of
/// its values when they are booleans, longs, strings or extension values (no entity,
/// whose id an enumerated type would check; no set or record): a shape accepted once
/// is accepted again, whatever the strings or numbers, so the check is skipped.
/// Shapes the schema refused are never kept (each refusal is checked and named
/// anew). Bounded: past [`ContextShapes::MAX`] shapes nothing more is kept.
#[derive(Debug, Default)]
pub struct ContextShapes(std::sync::RwLock<UidMap<Vec<ContextShape>>>);

impl ContextShapes {
    pub const MAX: usize = 4096;

    /// Whether `shape` was accepted for `action`.
    pub fn accepted(&self, action: &EntityUid, shape: &[(SmolStr, ValueKind)]) -> bool {
        // A poisoned lock only means that another thread panicked while holding it:
        // the memo is then skipped, and the schema checks every context.
        self.0.read().is_ok_and(|map| {
            map.get(UidKey::of(action.as_ref()))
                .is_some_and(|shapes| shapes.iter().any(|s| s.as_slice() == shape))
        })
    }

    /// Notes that the schema accepted `shape` for `action`.
    pub fn accept(&self, action: &EntityUid, shape: ContextShape) {
        if let Ok(mut map) = self.0.write() {
            if map.values().map(Vec::len).sum::<usize>() < Self::MAX {
                let shapes = map.entry(UidKey::new(action.as_ref().clone())).or_default();
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0
            .read()
            .map_or(0, |map| map.values().map(Vec::len).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value a higher layer derives from one snapshot and nothing else, computed on
/// first use and dropped with the snapshot: a cache that cannot outlive or mismatch
/// the model it was derived from. It holds one value of one type (the layer that
/// owns it names the type); `OnceLock` makes concurrent first uses compute it once.
#[derive(Default)]
pub struct Memo(std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The value, computed by `init` on first use; `None` if the memo already holds a
    /// value of another type.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Option<Arc<T>> {
        self.0
            .get_or_init(|| Arc::new(init()))
            .clone()
            .downcast::<T>()
            .ok()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(empty)"
        })
    }
}

/// See [`Snapshot::empty_context`]: per action, its (principal type, resource type)
/// pairs, and beside them the pairs whose scope the schema accepts for any ids with
/// the context set aside ([`EmptyContext::scope_accepts`]). Keys come from the
/// schema (trusted): a fast hasher. A lookup hashes the action alone and compares a
/// few type names, with nothing cloned.
#[derive(Debug, Default)]
pub struct EmptyContext(
    UidMap<Vec<(EntityTypeName, EntityTypeName)>>,
    /// The pairs whose principal and resource the schema accepts for any ids, with
    /// the context set aside (an action whose context has required attributes is
    /// here, not above).
    UidMap<Vec<(EntityTypeName, EntityTypeName)>>,
);

type Pairs = UidMap<Vec<(EntityTypeName, EntityTypeName)>>;

fn file_pair(
    pairs: &mut Pairs,
    principal: &EntityTypeName,
    action: &EntityUid,
    resource: &EntityTypeName,
) {
    pairs
        .entry(UidKey::new(action.as_ref().clone()))
        .or_default()
        .push((principal.clone(), resource.clone()));
}

fn holds_pair(
    pairs: &Pairs,
    principal: &EntityTypeName,
    action: &EntityUid,
    resource: &EntityTypeName,
) -> bool {
    pairs
        .get(UidKey::of(action.as_ref()))
        .is_some_and(|pairs| pairs.iter().any(|(p, r)| p == principal && r == resource))
}

impl EmptyContext {
    /// Whether the schema accepts a request of `action` on these types for any ids,
    /// whatever its context is checked to be: the context's check then reads only
    /// the context (see `ContextShapes`).
    pub fn scope_accepts(
        &self,
        principal: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityTypeName,
    ) -> bool {
        holds_pair(&self.1, principal, action, resource)
    }

    /// Whether the schema accepts `action` on these types with an empty context for
    /// any ids (and so declares the types and the action).
    pub fn accepts(
        &self,
        principal: &EntityTypeName,
        action: &EntityUid,
        resource: &EntityTypeName,
    ) -> bool {
        holds_pair(&self.0, principal, action, resource)
    }

    /// The number of (principal type, action, resource type) accepted.
    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The requests `schema` accepts with an empty context for any ids, and those whose
/// scope it accepts for any ids: each action's principal and resource types, tried
/// with two ids no enumeration of ids would hold both of, so that a type with
/// enumerated ids is left out.
pub fn empty_context(schema: &Schema) -> EmptyContext {
    // Kept on the names requests are read with, so that they compare by pointer.
    let types = type_canon(schema);
    let mut ok = EmptyContext::default();
    for action in schema.actions() {
        let (Some(principals), Some(resources)) = (
            schema.principals_for_action(action),
            schema.resources_for_action(action),
        ) else {
            continue;
        };
        let resources: Vec<&EntityTypeName> = resources.collect();
        for p in principals {
            for r in &resources {
                // Two ids no enumeration of ids would hold both of.
                let with_ids = || {
                    ["", "\u{0}portcullis\u{0}"].into_iter().map(|id| {
                        let uid = |ty: &EntityTypeName| {
                            EntityUid::from_type_name_and_id(
                                ty.clone(),
                                cedar_policy::EntityId::new(id),
                            )
                        };
                        (uid(p), uid(r))
                    })
                };
                let validator: &cedar_policy_core::validator::ValidatorSchema = schema.as_ref();
                let scope_accepted = with_ids().all(|(pu, ru)| {
                    validator
                        .validate_scope_variables(
                            Some(pu.as_ref()),
                            Some(action.as_ref()),
                            Some(ru.as_ref()),
                        )
                        .is_ok()
                });
                let accepted = with_ids().all(|(pu, ru)| {
                    let empty = cedar_policy::Context::empty();
                    cedar_policy::Request::new(pu, action.clone(), ru, empty, Some(schema)).is_ok()
                });
                let file = |pairs: &mut Pairs| {
                    file_pair(
                        pairs,
                        &types.api_type(p),
                        &types.api_uid(action),
                        &types.api_type(r),
                    )
                };
                if scope_accepted {
                    file(&mut ok.1);
                }
                if accepted {
                    file(&mut ok.0);
                }
            }
        }
    }
    ok
}

/// Entity type names by their text. The keys come from the schema (trusted), so a fast
/// hasher serves.
pub type TypeNames = HashMap<String, EntityTypeName, foldhash::fast::RandomState>;

/// The [`TypeNames`] of a schema: its entity types and its actions' types.
pub fn type_names(schema: &Schema) -> TypeNames {
    schema_types(schema)
        .cloned()
        .map(|ty| (ty.to_string(), ty))
        .collect()
}

/// The [`TypeCanon`] of a schema: the very instances [`type_names`] holds, which
/// requests are read with (both come from the schema's own names).
pub fn type_canon(schema: &Schema) -> TypeCanon {
    TypeCanon::new(schema_types(schema))
}

fn schema_types(schema: &Schema) -> impl Iterator<Item = &EntityTypeName> {
    schema
        .entity_types()
        .chain(schema.actions().map(|a| a.type_name()))
}

/// Entity data held by the model (the file source), lean: each entity is kept as its
/// JSON text, filed by type and sorted by id, and a decision parses only the entities
/// it reads (its request's uids, their ancestors and what their attributes reference).
/// Holding Cedar's parsed `Entities` for the whole data set instead costs tens of
/// times the file's size and makes a load wait for the transitive closure of every
/// hierarchy; every entity was still checked against the schema when the data loaded.
/// Data up to [`WHOLE_SET_MAX_BYTES`] is held whole as well, since a lean decision
/// pays for every entity it parses.
#[derive(Debug)]
pub struct EntityData {
    /// The entities of each type, sorted by id (the listing order, and looked up by
    /// binary search).
    by_type: HashMap<EntityTypeName, Vec<StoredEntity>>,
    count: usize,
    /// Entities that policy conditions name as literals and the data holds: a
    /// condition may read their attributes or ancestors, so every decision reads them.
    pub literals: Vec<EntityUid>,
    /// The whole data set as Cedar entities: built at load for data served whole
    /// (query plans then decide over all of it); lean data never builds it.
    whole: OnceLock<Result<Arc<Entities>, String>>,
    /// The whole set's [`EntityTable`], for data served whole: the compiled decision
    /// path looks entities up there (a copy of each entity: small data only).
    table: Option<Arc<EntityTable>>,
    /// Who refers to whom, built on first use by query plans and search, which read
    /// it instead of the whole set.
    links: OnceLock<Links>,
    /// Whether decisions read the whole set (built at load) rather than the entities
    /// each request reaches: see [`WHOLE_SET_MAX_BYTES`].
    serves_whole: bool,
}

/// The references between entities of the data, by what search asks: the entities of a
/// type whose reference attribute names an entity (the index sets of Redis), and the
/// children of a type each entity has (its member sets). Ids only, sorted: a small
/// fraction of the data's size.
#[derive(Debug, Default)]
pub struct Links {
    /// (type, attribute, referenced entity) → the ids of the type's entities.
    pub referrers: HashMap<(EntityTypeName, String, EntityUid), Vec<Box<str>>>,
    /// (child type, parent) → the ids of the parent's children of that type.
    pub members: HashMap<(EntityTypeName, EntityUid), Vec<Box<str>>>,
}

/// Entity files up to this size are also held as one Cedar entity set, built at load,
/// which every decision reads as it is: a few megabytes of JSON cost tens of
/// megabytes that way, and a decision then parses nothing. Larger files are served
/// lean, each decision parsing the entities it reaches (tens of microseconds each),
/// because the whole set costs about 40 times the file's size.
pub const WHOLE_SET_MAX_BYTES: usize = 1 << 20;

/// One entity of the data: its id and its JSON in Cedar's explicit form (`__entity`,
/// `__extn`: it reads back without the schema), checked against the schema at load.
#[derive(Debug)]
pub struct StoredEntity {
    pub id: Box<str>,
    pub json: Box<str>,
}

impl EntityData {
    /// Lean data from entities already grouped by type (each group in any order; ids
    /// unique within a type).
    pub fn from_stored(mut by_type: HashMap<EntityTypeName, Vec<StoredEntity>>) -> Self {
        let mut count = 0;
        for stored in by_type.values_mut() {
            stored.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            count += stored.len();
        }
        Self {
            by_type,
            count,
            literals: Vec::new(),
            whole: OnceLock::new(),
            table: None,
            links: OnceLock::new(),
            serves_whole: false,
        }
    }

    /// Lean data from parsed entities (actions left out: the schema holds them). An
    /// entity that cannot be written back as JSON (it cannot hold unknowns, so never in
    /// practice) is an error naming it.
    pub fn new(entities: Entities) -> Result<Self, String> {
        let mut by_type: HashMap<EntityTypeName, Vec<StoredEntity>> = HashMap::new();
        for e in entities.iter() {
            let uid = e.uid();
            if is_action_type(uid.type_name()) {
                continue;
            }
            let json = e
                .to_json_value()
                .map_err(|err| format!("entity `{uid}`: {err}"))?
                .to_string();
            by_type
                .entry(uid.type_name().clone())
                .or_default()
                .push(StoredEntity {
                    id: uid.id().unescaped().into(),
                    json: json.into(),
                });
        }
        Ok(Self::from_stored(by_type))
    }

    /// The number of entities in the data (actions, which the schema holds, aside).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entities of one type, sorted by id.
    pub fn of_type(&self, ty: &EntityTypeName) -> &[StoredEntity] {
        self.by_type.get(ty).map_or(&[], Vec::as_slice)
    }

    /// The JSON of the entity `uid`, when the data holds it.
    pub fn json_of(&self, uid: &EntityUid) -> Option<&str> {
        let of_type = self.of_type(uid.type_name());
        let id = uid.id().unescaped();
        of_type
            .binary_search_by(|s| (*s.id).cmp(id))
            .ok()
            .and_then(|at| of_type.get(at))
            .map(|s| &*s.json)
    }

    /// Builds the whole set now and has decisions read it (data up to
    /// [`WHOLE_SET_MAX_BYTES`]).
    pub fn serving_whole(self, schema: &Schema) -> Result<Self, String> {
        let whole = self.whole(schema)?;
        Ok(Self {
            serves_whole: true,
            table: EntityTable::of(&whole, &type_canon(schema)).map(Arc::new),
            ..self
        })
    }

    /// The [`EntityTable`] of the set [`Self::served_whole`] hands out.
    pub fn served_table(&self) -> Option<Arc<EntityTable>> {
        self.table.clone().filter(|_| self.serves_whole)
    }

    /// The whole set, when decisions read it rather than what each request reaches.
    pub fn served_whole(&self) -> Option<Arc<Entities>> {
        if !self.serves_whole {
            return None;
        }
        self.whole.get().and_then(|w| w.as_ref().ok()).cloned()
    }

    /// Whether the whole set has been built (at load for small data, or by a reader
    /// that needed it).
    pub fn whole_built(&self) -> bool {
        self.whole.get().is_some()
    }

    /// The references between the data's entities, built by `build` on first use
    /// (the entity source knows how to read them from each entity's JSON).
    pub fn links(&self, build: impl FnOnce(&Self) -> Links) -> &Links {
        self.links.get_or_init(|| build(self))
    }

    /// Every type's entities, each type's sorted by id.
    pub fn by_type(&self) -> impl Iterator<Item = (&EntityTypeName, &[StoredEntity])> {
        self.by_type
            .iter()
            .map(|(ty, stored)| (ty, stored.as_slice()))
    }

    /// The whole data set as Cedar entities, with the schema's actions, as Cedar reads
    /// the file: built once, on first use.
    pub fn whole(&self, schema: &Schema) -> Result<Arc<Entities>, String> {
        self.whole
            .get_or_init(|| {
                let mut all = Vec::with_capacity(self.count);
                for stored in self.by_type.values().flatten() {
                    // Through a JSON value, as the data was read at load.
                    let value: serde_json::Value =
                        serde_json::from_str(&stored.json).map_err(|e| e.to_string())?;
                    all.push(
                        Entity::from_json_value(value, Some(schema))
                            .map_err(|e| crate::error_chain(&e))?,
                    );
                }
                Entities::from_entities(all, Some(schema))
                    .map(Arc::new)
                    .map_err(|e| crate::error_chain(&e))
            })
            .clone()
    }
}

/// Whether entities of this type are actions (`Action`, namespaced or not): the
/// schema defines them, so entity data never stands in for them.
pub fn is_action_type(ty: &EntityTypeName) -> bool {
    ty.basename() == "Action"
}

impl Snapshot {
    /// Number of static policies plus template-linked policies: the policies that
    /// take part in decisions.
    pub fn active_policy_count(&self) -> usize {
        self.info
            .iter()
            .filter(|p| p.kind != PolicyKind::Template)
            .count()
    }

    /// The number of policies of each kind: static, templates, links.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.info
            .iter()
            .fold((0, 0, 0), |(s, t, l), p| match p.kind {
                PolicyKind::Static => (s + 1, t, l),
                PolicyKind::Template => (s, t + 1, l),
                PolicyKind::Link => (s, t, l + 1),
            })
    }

    /// The schema's entity type (or action type) named `name` as written in a uid.
    pub fn type_named(&self, name: &str) -> Option<&EntityTypeName> {
        self.type_names.get(name)
    }

    pub fn declares_type(&self, ty: &EntityTypeName) -> bool {
        self.entity_types.contains(ty)
    }

    pub fn declares_action(&self, action: &EntityUid) -> bool {
        self.actions.contains(action)
    }
}
