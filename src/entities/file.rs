//! Entity data held in memory: the file source, whose data is part of the model (read
//! and validated with the schema, reloaded with it, held lean and turned into Cedar
//! entities per decision), and a memory source over a fixed set of entities (policy
//! tests and verification replays decide on their own data).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid};

use super::{
    page_by_id, page_of, references, EntitySource, EntitySourceError, Fetched, Referrers, UidPage,
};
use crate::model::{EntityData, Links, SchemaTypes, Snapshot};

/// The file source: decides on the entity data of the snapshot a decision loaded, so
/// data and schema always come from the same model. Data above
/// [`crate::model::WHOLE_SET_MAX_BYTES`] is held lean (each entity's JSON, see
/// [`EntityData`]); a decision then gets Cedar entities for what it can read: its
/// uids, the entities policy conditions name, their ancestors and whatever their
/// attributes and tags reference, transitively. Evaluation reads nothing else, so the
/// decision is the one the whole data set gives. Smaller data is handed out whole.
#[derive(Debug, Default)]
pub struct FileSource;

#[async_trait]
impl EntitySource for FileSource {
    async fn entities_for(
        &self,
        uids: &[EntityUid],
        snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError> {
        let Some(data) = snapshot.entities.as_ref() else {
            return Ok(Fetched::whole(Arc::new(Entities::empty())));
        };
        // Small data is held whole as well: handing it out is a pointer copy.
        if let Some(whole) = data.served_whole() {
            return Ok(Fetched {
                table: data.served_table(),
                ..Fetched::whole(whole)
            });
        }
        let entities = reachable(data, uids, snapshot)?;
        // What the uids reach, not everything the data holds.
        Ok(Fetched {
            complete: false,
            ..Fetched::whole(Arc::new(entities))
        })
    }

    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<UidPage, EntitySourceError> {
        let all = snapshot
            .entities
            .as_ref()
            .map_or(&[][..], |d| d.of_type(entity_type));
        Ok(page_by_id(
            all,
            |s| &s.id,
            |s| EntityUid::from_type_name_and_id(entity_type.clone(), EntityId::new(&*s.id)),
            cursor,
            limit,
        ))
    }

    /// From the data's links (built on the first call): exact, since the data is the
    /// model's.
    async fn referrers(
        &self,
        entity_type: &EntityTypeName,
        attribute: &str,
        targets: &[EntityUid],
        cursor: Option<&str>,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        let Some(data) = snapshot.entities.as_ref() else {
            return Ok(Referrers::Page(UidPage::default()));
        };
        let links = data.links(|data| links_of(data, &snapshot.types));
        let mut ids: Vec<&str> = targets
            .iter()
            .filter_map(|t| {
                links
                    .referrers
                    .get(&(entity_type.clone(), attribute.to_string(), t.clone()))
            })
            .flatten()
            .map(|id| &**id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(Referrers::Page(page_by_id(
            &ids,
            |id| id,
            |id| EntityUid::from_type_name_and_id(entity_type.clone(), EntityId::new(id)),
            cursor,
            limit,
        )))
    }

    /// Walks the data's links down from `ancestor` through the types whose entities
    /// can be ancestors of `entity_type`'s.
    async fn members(
        &self,
        entity_type: &EntityTypeName,
        ancestor: &EntityUid,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        let Some(data) = snapshot.entities.as_ref() else {
            return Ok(Referrers::Page(UidPage::default()));
        };
        let links = data.links(|data| links_of(data, &snapshot.types));
        let chain = super::member_chain(snapshot, entity_type);
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut found: Vec<EntityUid> = Vec::new();
        let mut level = vec![ancestor.clone()];
        while !level.is_empty() {
            let mut next = Vec::new();
            for parent in &level {
                for ty in &chain {
                    let Some(ids) = links.members.get(&(ty.clone(), parent.clone())) else {
                        continue;
                    };
                    for id in ids {
                        let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id));
                        if !seen.insert(uid.clone()) {
                            continue;
                        }
                        if ty == entity_type {
                            found.push(uid.clone());
                        }
                        next.push(uid);
                    }
                }
            }
            if found.len() > limit {
                return Ok(Referrers::Unindexed(format!(
                    "more than {limit} `{entity_type}` entities are below `{ancestor}`"
                )));
            }
            level = next;
        }
        Ok(super::members_page(found))
    }

    async fn ready(&self) -> Result<(), EntitySourceError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

/// Who refers to whom in `data`: for each reference attribute of `types`, the entities
/// naming each entity, and the children of each type of every parent.
fn links_of(data: &EntityData, types: &SchemaTypes) -> Links {
    let mut links = Links::default();
    for (ty, stored) in data.by_type() {
        let attrs = types.reference_attributes(&ty.to_string());
        for entity in stored {
            // Checked at load; an entity that no longer parses names nothing.
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&entity.json) else {
                continue;
            };
            for attr in &attrs {
                let target = json
                    .get("attrs")
                    .and_then(|a| a.get(*attr))
                    .and_then(super::uid_of_json);
                if let Some(target) = target {
                    let key = (ty.clone(), (*attr).to_string(), target);
                    file(links.referrers.entry(key).or_default(), &entity.id);
                }
            }
            for parent in super::parents_and_references(&json).0 {
                file(
                    links.members.entry((ty.clone(), parent)).or_default(),
                    &entity.id,
                );
            }
        }
    }
    links
}

/// Files `id` under a key: ids arrive in order (each type's entities are sorted), so
/// a repeat (a parent listed twice) is the last one.
fn file(ids: &mut Vec<Box<str>>, id: &str) {
    if ids.last().is_none_or(|last| **last != *id) {
        ids.push(id.into());
    }
}

/// The Cedar entities a decision about `roots` can read in `data`: the roots and the
/// entities policy conditions name, their ancestors and their references, followed
/// to the end (the data is all in memory), with the schema's grouped actions.
pub fn reachable(
    data: &EntityData,
    roots: &[EntityUid],
    snapshot: &Snapshot,
) -> Result<Entities, EntitySourceError> {
    let mut seen: HashSet<EntityUid> = HashSet::new();
    let mut queue: Vec<EntityUid> = roots.iter().chain(&data.literals).cloned().collect();
    let mut found = Vec::new();
    while let Some(uid) = queue.pop() {
        if !seen.insert(uid.clone()) {
            continue;
        }
        let Some(json) = data.json_of(&uid) else {
            continue;
        };
        // Checked against this schema when the data loaded and kept in Cedar's explicit
        // form, which reads back without the schema; neither step fails in practice,
        // and if one did, the decision denies naming the entity.
        let invalid = |message: String| EntitySourceError::InvalidData {
            uid: Some(Box::new(uid.clone())),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("entity `{uid}`: {e}")))?;
        queue.extend(references(&value));
        let entity = Entity::from_json_value(value, None)
            .map_err(|e| invalid(format!("entity `{uid}`: {}", crate::error_chain(&e))))?;
        found.push(entity);
    }
    Entities::from_entities(
        found
            .into_iter()
            .chain(snapshot.action_entities.iter().cloned()),
        None,
    )
    .map_err(|e| EntitySourceError::InvalidData {
        uid: None,
        message: crate::error_chain(&e),
    })
}

/// A fixed set of entities, validated by whoever built it.
pub struct MemorySource {
    entities: Arc<Entities>,
}

impl MemorySource {
    pub fn new(entities: Arc<Entities>) -> Self {
        Self { entities }
    }
}

#[async_trait]
impl EntitySource for MemorySource {
    async fn entities_for(
        &self,
        _uids: &[EntityUid],
        _snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError> {
        Ok(Fetched::whole(self.entities.clone()))
    }

    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        _snapshot: &Snapshot,
    ) -> Result<UidPage, EntitySourceError> {
        let mut all: Vec<EntityUid> = self
            .entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| u.type_name() == entity_type)
            .collect();
        all.sort_by(|a, b| a.id().unescaped().cmp(b.id().unescaped()));
        Ok(page_of(&all, cursor, limit))
    }

    async fn ready(&self) -> Result<(), EntitySourceError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
