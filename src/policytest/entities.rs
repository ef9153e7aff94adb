//! The entity data of test cases: entity files and inline entities in Cedar's JSON
//! entity format, merged by uid so that a case can add an entity to the demo data or
//! replace one of them.

use std::path::Path;
use std::sync::Arc;

use cedar_policy::{Entities, Schema};
use serde_json::Value;

/// Entities in the order they were given; a later entity with the uid of an earlier one
/// replaces it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntityList {
    entries: Vec<(Option<(String, String)>, Value)>,
}

/// The `(type, id)` of an entity in Cedar's JSON format, whether its uid is written
/// `{"type", "id"}` or with the `__entity` escape.
fn uid_key(entity: &Value) -> Option<(String, String)> {
    let uid = entity.get("uid")?;
    let uid = uid.get("__entity").unwrap_or(uid);
    Some((
        uid.get("type")?.as_str()?.to_string(),
        uid.get("id")?.as_str()?.to_string(),
    ))
}

impl EntityList {
    pub(crate) fn add(&mut self, entity: Value) {
        let key = uid_key(&entity);
        if key.is_some() {
            if let Some(slot) = self.entries.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = entity;
                return;
            }
        }
        self.entries.push((key, entity));
    }

    pub(crate) fn extend(&mut self, other: &EntityList) {
        for (_, e) in &other.entries {
            self.add(e.clone());
        }
    }

    /// Adds every entity of a JSON entity file.
    pub(crate) fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read entity file `{}`: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            format!(
                "entity file `{}`:{}:{}: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        match value {
            Value::Array(items) => {
                for e in items {
                    self.add(e);
                }
                Ok(())
            }
            _ => Err(format!(
                "entity file `{}`: expected a JSON array of entities",
                path.display()
            )),
        }
    }

    /// Parses the entities against the schema, as the server does with its data.
    pub(crate) fn build(&self, schema: &Schema) -> Result<Arc<Entities>, String> {
        let all = Value::Array(self.entries.iter().map(|(_, e)| e.clone()).collect());
        Entities::from_json_value(all, Some(schema))
            .map(Arc::new)
            .map_err(|e| format!("invalid entities: {}", crate::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_later_entity_replaces_an_earlier_one_with_the_same_uid() {
        let mut list = EntityList::default();
        list.add(json!({"uid": {"type": "T", "id": "a"}, "attrs": {"n": 1}, "parents": []}));
        list.add(json!({"uid": {"type": "T", "id": "b"}, "attrs": {}, "parents": []}));
        list.add(
            json!({"uid": {"__entity": {"type": "T", "id": "a"}}, "attrs": {"n": 2}, "parents": []}),
        );
        assert_eq!(list.entries.len(), 2);
        assert_eq!(list.entries[0].1["attrs"]["n"], 2);
    }
}
