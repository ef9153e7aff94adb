//! Entity data held in memory: the file source, whose data is part of the model (read
//! and validated with the schema, reloaded with it), and a memory source over a fixed
//! set of entities (policy tests and verification replays decide on their own data).

use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Entities, EntityTypeName, EntityUid};

use super::{page_of, EntitySource, EntitySourceError, Fetched, UidPage};
use crate::model::Snapshot;

/// The file source: hands out the entity data of the snapshot a decision loaded, so
/// data and schema always come from the same model.
#[derive(Debug, Default)]
pub struct FileSource;

#[async_trait]
impl EntitySource for FileSource {
    async fn entities_for(
        &self,
        _uids: &[EntityUid],
        snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError> {
        // The whole data set is in memory already; handing it out is a pointer copy.
        Ok(Fetched::whole(snapshot.entities.as_ref().map_or_else(
            || Arc::new(Entities::empty()),
            |d| d.entities.clone(),
        )))
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
        Ok(page_of(all, cursor, limit))
    }

    async fn ready(&self) -> Result<(), EntitySourceError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "file"
    }
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
