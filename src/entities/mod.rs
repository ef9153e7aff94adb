//! Entity sources: where the entities a decision reads come from.
//!
//! The decision code sees only [`EntitySource`]. The file source holds a whole data
//! set in memory; a Redis source fetches what one request needs. Both hand back Cedar
//! [`Entities`] validated against the snapshot's schema, so a decision never reads data
//! the schema does not describe.

mod file;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use cedar_policy::{Entities, EntityTypeName, EntityUid};

use crate::policy::PolicySnapshot;

pub use file::FileSource;
pub use redis::RedisSource;

/// Why a source could not supply entities. A decision that meets one denies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EntitySourceError {
    /// The backing store cannot be reached; the API answers 503.
    #[error("entity store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not parse or does not conform to the schema.
    #[error("invalid entity data: {0}")]
    InvalidData(String),
}

/// One page of entity uids of a type, for listing and search.
#[derive(Debug, Clone, Default)]
pub struct UidPage {
    pub uids: Vec<EntityUid>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A source of entity data.
#[async_trait]
pub trait EntitySource: Send + Sync + 'static {
    /// The entities a decision about `uids` (principal, resource, and any other uid the
    /// request names) may read: those entities, their ancestors and what their
    /// attributes reference. Entities the source does not hold are simply absent.
    async fn entities_for(
        &self,
        uids: &[EntityUid],
        snapshot: &PolicySnapshot,
    ) -> Result<Arc<Entities>, EntitySourceError>;

    /// Uids of the entities of one type, in a stable order, `limit` at a time after
    /// `cursor`.
    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        snapshot: &PolicySnapshot,
    ) -> Result<UidPage, EntitySourceError>;

    /// Whether the source can serve decisions now (for `/readyz`).
    async fn ready(&self) -> Result<(), EntitySourceError>;

    /// A short name for logs and status: `file`, `redis`.
    fn kind(&self) -> &'static str;
}
