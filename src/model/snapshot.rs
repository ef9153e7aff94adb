//! The immutable snapshot of the model: the validated policy set and schema with every
//! index derived from them, built once by [`super::compile`] and never changed after.
//! A request loads the current snapshot once and reads everything it needs from it,
//! so a reload can never show a request half of two models.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{Entities, Entity, EntityTypeName, EntityUid, PolicySet, Schema};
use serde::Serialize;

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
    pub entity_types: HashSet<EntityTypeName>,
    pub actions: HashSet<EntityUid>,
    /// The schema's entity types (actions' types included) by their names as written
    /// in a uid (`Portal::User`), so a request's uids are read without Cedar's parser.
    pub type_names: TypeNames,
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

/// Entity type names by their text. The keys come from the schema (trusted), so a fast
/// hasher serves.
pub type TypeNames = HashMap<String, EntityTypeName, foldhash::fast::RandomState>;

/// The [`TypeNames`] of a schema: its entity types and its actions' types.
pub fn type_names(schema: &Schema) -> TypeNames {
    schema
        .entity_types()
        .cloned()
        .chain(schema.actions().map(|a| a.type_name().clone()))
        .map(|ty| (ty.to_string(), ty))
        .collect()
}

/// Entity data held by the model, with the uids of each type in id order for listing.
#[derive(Debug)]
pub struct EntityData {
    pub entities: Arc<Entities>,
    by_type: HashMap<EntityTypeName, Vec<EntityUid>>,
}

impl EntityData {
    pub fn new(entities: Entities) -> Self {
        let mut by_type: HashMap<EntityTypeName, Vec<EntityUid>> = HashMap::new();
        for e in entities.iter() {
            let uid = e.uid();
            by_type
                .entry(uid.type_name().clone())
                .or_default()
                .push(uid);
        }
        for uids in by_type.values_mut() {
            uids.sort_by(|a, b| a.id().unescaped().cmp(b.id().unescaped()));
        }
        Self {
            entities: Arc::new(entities),
            by_type,
        }
    }

    /// The uids of one type, sorted by id.
    pub fn of_type(&self, ty: &EntityTypeName) -> &[EntityUid] {
        self.by_type.get(ty).map_or(&[], Vec::as_slice)
    }
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
