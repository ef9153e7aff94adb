//! Entity data from a JSON file (Cedar's entity format), held in memory.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use cedar_policy::{Entities, EntityTypeName, EntityUid};

use super::{EntitySource, EntitySourceError, UidPage};
use crate::policy::{PolicySnapshot, SourceFile};

/// Entities read from one file. The raw JSON is kept so that the data can be validated
/// again when a reload changes the schema.
pub struct FileSource {
    name: String,
    json: serde_json::Value,
    /// The data parsed against one schema, keyed by that schema's hash. Swapped, not
    /// locked: every decision reads it, a schema change writes it once.
    parsed: ArcSwapOption<(String, Arc<Entities>)>,
}

impl FileSource {
    /// Parses the file as JSON; schema conformance is checked by [`Self::check`] and
    /// on first use with each schema.
    pub fn new(file: &SourceFile) -> Result<Self, EntitySourceError> {
        let json = serde_json::from_str(&file.text).map_err(|e| {
            EntitySourceError::InvalidData(format!(
                "{}:{}:{}: {e}",
                file.name,
                e.line(),
                e.column()
            ))
        })?;
        Ok(Self {
            name: file.name.clone(),
            json,
            parsed: ArcSwapOption::empty(),
        })
    }

    /// Validates the data against a snapshot's schema (used at start-up so that bad
    /// data stops the service instead of denying every request).
    pub fn check(&self, snapshot: &PolicySnapshot) -> Result<Arc<Entities>, EntitySourceError> {
        if let Some(cached) = self.parsed.load_full() {
            if cached.0 == snapshot.schema_hash {
                return Ok(cached.1.clone());
            }
        }
        let entities = Entities::from_json_value(self.json.clone(), Some(&snapshot.schema))
            .map_err(|e| EntitySourceError::InvalidData(format!("{}: {e}", self.name)))?;
        let entities = Arc::new(entities);
        self.parsed.store(Some(Arc::new((
            snapshot.schema_hash.clone(),
            entities.clone(),
        ))));
        Ok(entities)
    }

    /// Every uid in the file, sorted, for listing.
    fn sorted_uids(&self, entities: &Entities, ty: &EntityTypeName) -> Vec<EntityUid> {
        let mut uids: Vec<EntityUid> = entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| u.type_name() == ty)
            .collect();
        uids.sort_by(|a, b| a.id().unescaped().cmp(b.id().unescaped()));
        uids
    }
}

#[async_trait]
impl EntitySource for FileSource {
    async fn entities_for(
        &self,
        _uids: &[EntityUid],
        snapshot: &PolicySnapshot,
    ) -> Result<Arc<Entities>, EntitySourceError> {
        // The whole data set is in memory already; handing it out is a pointer copy.
        self.check(snapshot)
    }

    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        snapshot: &PolicySnapshot,
    ) -> Result<UidPage, EntitySourceError> {
        let entities = self.check(snapshot)?;
        let all = self.sorted_uids(&entities, entity_type);
        let start = match cursor {
            None => 0,
            Some(after) => all.partition_point(|u| u.id().unescaped() <= after),
        };
        let page: Vec<EntityUid> = all.iter().skip(start).take(limit).cloned().collect();
        let next = if start + page.len() < all.len() {
            page.last().map(|u| u.id().unescaped().to_string())
        } else {
            None
        };
        Ok(UidPage { uids: page, next })
    }

    async fn ready(&self) -> Result<(), EntitySourceError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}
