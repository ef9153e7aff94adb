//! Entity sources: where the entities a decision reads come from.
//!
//! The decision code sees only [`EntitySource`]. The file source hands out the data
//! the model holds (validated with the schema when the model was compiled); the Redis
//! source fetches what one request needs through a cache; the memory source serves a
//! fixed set (policy tests, verification replays). Each hands back Cedar [`Entities`]
//! that conform to the snapshot's schema, so a decision never reads data the schema
//! does not describe.

mod file;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Entities, EntityTypeName, EntityUid};

use crate::model::entity_table::EntityTable;
use crate::model::{Gate, Problem, Snapshot};

pub use file::{reachable, FileSource, MemorySource};
pub use redis::RedisSource;

/// Why a source could not supply entities. A decision that meets one denies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EntitySourceError {
    /// The backing store cannot be reached; the decision is a Deny answered 503.
    #[error("entity store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not parse or does not conform to the schema; `uid` names the
    /// entity when one is at fault. The decision is a Deny that says so.
    #[error("invalid entity data: {message}")]
    InvalidData {
        uid: Option<Box<EntityUid>>,
        message: String,
    },
}

/// The entities a decision may read, and what the source left out.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub entities: Arc<Entities>,
    /// Entities referenced (by attributes or tags) beyond the source's fetch depth,
    /// which were not fetched. A decision whose evaluation reads one of them must not
    /// stand: it is denied, saying the depth was exceeded. Ancestors are always
    /// fetched whole, so `in` never sees a cut hierarchy.
    pub beyond_depth: Vec<EntityUid>,
    /// The fetch depth, for the diagnostic.
    pub depth: usize,
    /// Whether `entities` is everything the source holds (the file and memory
    /// sources), rather than what the requested uids reach.
    pub complete: bool,
    /// The [`EntityTable`] of `entities` when the source keeps one (data served
    /// whole): the decision looks entities up there.
    pub table: Option<Arc<EntityTable>>,
}

impl Fetched {
    /// Everything the source holds, nothing left out.
    pub fn whole(entities: Arc<Entities>) -> Self {
        Self {
            entities,
            beyond_depth: Vec::new(),
            depth: 0,
            complete: true,
            table: None,
        }
    }
}

/// One page of entity uids of a type, for listing and search.
#[derive(Debug, Clone, Default)]
pub struct UidPage {
    pub uids: Vec<EntityUid>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// What a source answers for the referrers of some entities.
#[derive(Debug, Clone)]
pub enum Referrers {
    /// One page of them, from an index the source keeps exact.
    Page(UidPage),
    /// The source has no index of the attribute it can trust, and why.
    Unindexed(String),
}

/// A source of entity data.
#[async_trait]
pub trait EntitySource: Send + Sync + 'static {
    /// The entities a decision about `uids` (principal, resource) may read: those
    /// entities, their ancestors and what their attributes reference. Entities the
    /// source does not hold are simply absent.
    async fn entities_for(
        &self,
        uids: &[EntityUid],
        snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError>;

    /// Loads what decisions about `uids` will read into the source's cache, in as few
    /// round trips as one fetch of them all, so that deciding many requests one by one
    /// (a search page) costs no more round trips than one request. Best effort: a
    /// failure here shows again in the decisions themselves.
    async fn prefetch(&self, _uids: &[EntityUid], _snapshot: &Snapshot) {}

    /// Uids of the entities of one type, in a stable order, `limit` at a time after
    /// `cursor`.
    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<UidPage, EntitySourceError>;

    /// Uids of the entities of `entity_type` whose attribute `attribute` refers to one
    /// of `targets`, in id order, `limit` at a time after `cursor`: what a store's
    /// index sets per referenced entity answer, for query plans and search.
    /// [`Referrers::Unindexed`] when the source keeps no exact index of the attribute
    /// (the caller then enumerates the type).
    async fn referrers(
        &self,
        entity_type: &EntityTypeName,
        attribute: &str,
        _targets: &[EntityUid],
        _cursor: Option<&str>,
        _limit: usize,
        _snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        Ok(Referrers::Unindexed(format!(
            "the entity source keeps no index of `{entity_type}.{attribute}`"
        )))
    }

    /// Uids of the entities of `entity_type` below `ancestor` in the hierarchy (its
    /// children of that type, and those of its descendants of the types between),
    /// sorted by id: what a store's member sets answer, for subject search. More than
    /// `limit` of them, or a source without exact member sets, is
    /// [`Referrers::Unindexed`] (the caller then enumerates the type).
    async fn members(
        &self,
        entity_type: &EntityTypeName,
        _ancestor: &EntityUid,
        _limit: usize,
        _snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        Ok(Referrers::Unindexed(format!(
            "the entity source keeps no member sets of `{entity_type}`"
        )))
    }

    /// Whether the source can serve decisions now (for `/readyz`).
    async fn ready(&self) -> Result<(), EntitySourceError>;

    /// Whether the data this source holds outside the model fits a snapshot about to
    /// serve (a reload's new schema). Sources whose data is part of the model have
    /// nothing to check.
    async fn admit(&self, _next: &Snapshot) -> Result<(), Vec<Problem>> {
        Ok(())
    }

    /// A short name for logs and status: `file`, `redis`, `memory`.
    fn kind(&self) -> &'static str;
}

/// The reload gate of an entity source: a snapshot serves only if the source's data
/// fits it.
pub struct SourceGate(pub Arc<dyn EntitySource>);

#[async_trait]
impl Gate for SourceGate {
    async fn admit(&self, next: &Snapshot) -> Result<(), Vec<Problem>> {
        self.0.admit(next).await
    }
}

/// The types a walk down the hierarchy to `entity_type`'s entities passes through:
/// the type itself and every type whose entities can be ancestors of its entities.
pub(crate) fn member_chain(
    snapshot: &Snapshot,
    entity_type: &EntityTypeName,
) -> Vec<EntityTypeName> {
    let mut chain = vec![entity_type.clone()];
    if let Some(above) = snapshot.schema.ancestors(entity_type) {
        chain.extend(above.cloned());
    }
    chain
}

/// The members a walk found, as one page in id order.
pub(crate) fn members_page(mut found: Vec<EntityUid>) -> Referrers {
    found.sort_unstable_by(|a, b| a.id().unescaped().cmp(b.id().unescaped()));
    Referrers::Page(UidPage {
        uids: found,
        next: None,
    })
}

/// One page of `all` (uids sorted by id) after `cursor`.
pub(crate) fn page_of(all: &[EntityUid], cursor: Option<&str>, limit: usize) -> UidPage {
    page_by_id(all, |u| u.id().unescaped(), EntityUid::clone, cursor, limit)
}

/// One page of `all` (sorted by id) after the id `cursor`, each item turned into a uid
/// by `uid`; `next` is the last id of the page when more follow.
fn page_by_id<T>(
    all: &[T],
    id: impl Fn(&T) -> &str,
    uid: impl Fn(&T) -> EntityUid,
    cursor: Option<&str>,
    limit: usize,
) -> UidPage {
    let start = match cursor {
        None => 0,
        Some(after) => all.partition_point(|x| id(x) <= after),
    };
    let page = all.get(start..).unwrap_or_default();
    let page = page.get(..limit.min(page.len())).unwrap_or_default();
    let next = if start + page.len() < all.len() {
        page.last().map(|x| id(x).to_string())
    } else {
        None
    };
    UidPage {
        uids: page.iter().map(uid).collect(),
        next,
    }
}

/// The uids an entity in Cedar's JSON format points to: its parents and every entity
/// reference in its attributes and tags. What a decision about it may read next.
pub fn references(json: &serde_json::Value) -> Vec<EntityUid> {
    let (mut parents, refs) = parents_and_references(json);
    parents.extend(refs);
    parents
}

/// [`references`], split into the parents and the references in attributes and tags.
pub fn parents_and_references(json: &serde_json::Value) -> (Vec<EntityUid>, Vec<EntityUid>) {
    let parents = json
        .get("parents")
        .and_then(|p| p.as_array())
        .map(|p| p.iter().filter_map(uid_of_json).collect())
        .unwrap_or_default();
    let mut refs = Vec::new();
    for field in ["attrs", "tags"] {
        if let Some(v) = json.get(field) {
            collect_refs(v, &mut refs);
        }
    }
    (parents, refs)
}

/// The entities of `all` that a decision about `roots` may read: the roots, their
/// ancestors and whatever their attributes reference, transitively. What a store
/// held in memory hands out when a request's own entities must be laid over it,
/// without copying the whole store. `None` when an entity cannot be read back (it
/// holds no unknowns in stored data, so never in practice): the caller then uses all.
pub fn closure(all: &Entities, roots: &[EntityUid]) -> Option<Vec<cedar_policy::Entity>> {
    let mut seen: std::collections::HashSet<EntityUid> = std::collections::HashSet::new();
    let mut queue: Vec<EntityUid> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(uid) = queue.pop() {
        if !seen.insert(uid.clone()) {
            continue;
        }
        let Some(entity) = all.get(&uid) else {
            continue;
        };
        queue.extend(references(&entity.to_json_value().ok()?));
        out.push(entity.clone());
    }
    Some(out)
}

/// A uid in JSON form: `{"type": .., "id": ..}` or `{"__entity": {...}}`.
pub(crate) fn uid_of_json(v: &serde_json::Value) -> Option<EntityUid> {
    let v = v.get("__entity").unwrap_or(v);
    let ty = v.get("type")?.as_str()?;
    let id = v.get("id")?.as_str()?;
    let ty: EntityTypeName = ty.parse().ok()?;
    Some(EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(id),
    ))
}

/// Every entity reference inside an attribute or tag value. A record that merely
/// looks like a reference costs one extra key lookup at worst.
fn collect_refs(v: &serde_json::Value, out: &mut Vec<EntityUid>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(uid) = uid_of_json(v) {
                out.push(uid);
                return;
            }
            for inner in map.values() {
                collect_refs(inner, out);
            }
        }
        serde_json::Value::Array(items) => {
            for inner in items {
                collect_refs(inner, out);
            }
        }
        _ => {}
    }
}
