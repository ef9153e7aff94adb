//! Entity lookups with a cheaper hash than Cedar's store: the compiled decision path
//! looks up the request's principal, action and resource and the entities its
//! conditions read, and Cedar's `Entities` hashes each uid whole with SipHash (about
//! a sixth of a decision's instructions went there, issue 14).
//!
//! [`UidKey`] hashes a uid by its id and its type's basename only, with a fast
//! hasher (the keys of a table are the data's own uids; a request's uid that shares
//! an id and basename with one of them costs one more comparison, never a wrong
//! answer: equality is the whole uid's). [`EntityTable`] holds a copy of the entities
//! of data served whole, built from Cedar's own store so that both always hold the
//! same entities.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use cedar_policy::{Entities, EntityTypeName};
use cedar_policy_core::ast::{
    Entity, EntityType, EntityUID, Literal, PartialValue, Value, ValueKind,
};
use cedar_policy_core::entities::Dereference;
use ref_cast::RefCast;
use smol_str::SmolStr;

use super::condition::same_uid;

/// A uid as a hash key: hashed by its id and its type's basename, equal as uids are.
#[derive(Debug, Clone, RefCast)]
#[repr(transparent)]
pub struct UidKey(EntityUID);

impl UidKey {
    pub fn new(uid: EntityUID) -> Self {
        Self(uid)
    }

    /// A borrowed uid as a key, for lookups.
    pub fn of(uid: &EntityUID) -> &Self {
        Self::ref_cast(uid)
    }

    pub fn uid(&self) -> &EntityUID {
        &self.0
    }
}

impl Hash for UidKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let id: &str = self.0.eid().as_ref();
        let basename: &str = self.0.entity_type().name().basename_as_ref().as_ref();
        id.hash(state);
        basename.hash(state);
    }
}

impl PartialEq for UidKey {
    fn eq(&self, other: &Self) -> bool {
        same_uid(&self.0, &other.0)
    }
}

impl Eq for UidKey {}

pub(crate) type UidMap<V> = HashMap<UidKey, V, foldhash::fast::RandomState>;

/// The entities of a data set by uid (copies of those in its Cedar store).
#[derive(Debug, Default)]
pub struct EntityTable {
    entities: UidMap<Entity>,
}

impl EntityTable {
    /// A table of every entity `entities` holds; `None` for a partial store (one
    /// whose entities may be unknown), which only Cedar reads.
    pub fn of(entities: &Entities, types: &TypeCanon) -> Option<Self> {
        let store: &cedar_policy_core::entities::Entities = entities.as_ref();
        if store.is_partial() {
            return None;
        }
        Some(Self {
            entities: store
                .iter()
                .map(|e| {
                    let e = types.entity(e);
                    (UidKey::new(e.uid().clone()), e)
                })
                .collect(),
        })
    }

    /// The entity `uid`; `None` when the data does not hold it.
    pub fn get(&self, uid: &EntityUID) -> Option<&Entity> {
        self.entities.get(UidKey::of(uid))
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}

/// One instance of each entity type name of the schema, shared by what the compiled
/// decision path compares: the request's uids (read through the snapshot's type
/// names, these very instances), the index's scopes, the compiled conditions'
/// literals and the entities of an [`EntityTable`]. Cedar compares type names by
/// their namespace path, an `Arc` compared pointer first, so names that share an
/// instance compare in a few instructions; names parsed apart compare element by
/// element. Sharing an instance changes no value: equality and hashing are the
/// names'.
#[derive(Debug, Default)]
pub struct TypeCanon(HashSet<EntityType, foldhash::fast::RandomState>);

impl TypeCanon {
    pub fn new<'a>(types: impl IntoIterator<Item = &'a EntityTypeName>) -> Self {
        Self(
            types
                .into_iter()
                .map(|t| AsRef::<EntityType>::as_ref(t).clone())
                .collect(),
        )
    }

    /// The shared instance of `ty`: a copy of `ty` when the schema does not declare it.
    pub fn ty(&self, ty: &EntityType) -> EntityType {
        self.0.get(ty).unwrap_or(ty).clone()
    }

    /// `uid` with its type's shared instance.
    pub fn uid(&self, uid: &EntityUID) -> EntityUID {
        EntityUID::from_components(self.ty(uid.entity_type()), uid.eid().clone(), None)
    }

    /// `EntityUid` of the public API with its type's shared instance.
    pub fn api_uid(&self, uid: &cedar_policy::EntityUid) -> cedar_policy::EntityUid {
        cedar_policy::EntityUid::ref_cast(&self.uid(uid.as_ref())).clone()
    }

    /// `EntityTypeName` of the public API as its shared instance.
    pub fn api_type(&self, ty: &EntityTypeName) -> EntityTypeName {
        EntityTypeName::ref_cast(&self.ty(ty.as_ref())).clone()
    }

    /// `v` with every uid in it (in sets and records too) on shared type instances.
    /// A value without uids is `v` itself (a set or record shares its contents).
    pub fn value(&self, v: &Value) -> Value {
        if !holds_uid(v) {
            return v.clone();
        }
        match &v.value {
            ValueKind::Lit(Literal::EntityUID(uid)) => Value {
                value: ValueKind::Lit(Literal::EntityUID(Arc::new(self.uid(uid)))),
                loc: v.loc.clone(),
            },
            ValueKind::Set(set) => Value::set(
                set.authoritative.iter().map(|x| self.value(x)),
                v.loc.clone(),
            ),
            ValueKind::Record(fields) => Value::record(
                fields.iter().map(|(k, x)| (k.clone(), self.value(x))),
                v.loc.clone(),
            ),
            _ => v.clone(),
        }
    }

    /// A copy of `e` whose uid, ancestors, attributes and tags name types by their
    /// shared instances.
    pub fn entity(&self, e: &Entity) -> Entity {
        let partial = |(k, v): (&SmolStr, &PartialValue)| {
            let v = match v {
                PartialValue::Value(v) => PartialValue::Value(self.value(v)),
                residual => residual.clone(),
            };
            (k.clone(), v)
        };
        Entity::new_with_attr_partial_value(
            self.uid(e.uid()),
            e.attrs().map(partial),
            e.indirect_ancestors().map(|a| self.uid(a)).collect(),
            e.parents().map(|a| self.uid(a)).collect(),
            e.tags().map(partial),
        )
    }
}

fn holds_uid(v: &Value) -> bool {
    match &v.value {
        ValueKind::Lit(Literal::EntityUID(_)) => true,
        ValueKind::Set(set) => set.authoritative.iter().any(holds_uid),
        ValueKind::Record(fields) => fields.values().any(holds_uid),
        _ => false,
    }
}

/// A decision's entity data: Cedar's store and, when the data has one, its
/// [`EntityTable`] for the lookups of the compiled path.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    entities: &'a Entities,
    table: Option<&'a EntityTable>,
}

/// The store answered a lookup with a residual (partial evaluation): Cedar decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residual;

impl<'a> Lookup<'a> {
    /// `table` must be [`EntityTable::of`] `entities`; one that does not hold as many
    /// entities is not used.
    pub fn new(entities: &'a Entities, table: Option<&'a EntityTable>) -> Self {
        let table = table.filter(|t| t.len() == entities.as_ref().len());
        Self { entities, table }
    }

    pub fn entities(&self) -> &'a Entities {
        self.entities
    }

    /// The entity `uid`: `None` when the data does not hold it.
    pub fn entity(&self, uid: &EntityUID) -> Result<Option<&'a Entity>, Residual> {
        if let Some(table) = self.table {
            return Ok(table.get(uid));
        }
        let store: &'a cedar_policy_core::entities::Entities = self.entities.as_ref();
        match store.entity(uid) {
            Dereference::Data(e) => Ok(Some(e)),
            Dereference::NoSuchEntity => Ok(None),
            Dereference::Residual(_) => Err(Residual),
        }
    }
}

impl<'a> From<&'a Entities> for Lookup<'a> {
    fn from(entities: &'a Entities) -> Self {
        Self::new(entities, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;
    use std::str::FromStr;

    fn key(s: &str) -> UidKey {
        let uid = cedar_policy::EntityUid::from_str(s).unwrap();
        UidKey::new(uid.as_ref().clone())
    }

    /// Keys are equal exactly when the uids are, and equal keys hash alike; uids
    /// that share an id and a basename hash alike but stay apart.
    #[test]
    fn keys_are_equal_as_uids_are() {
        let uids = [
            r#"User::"bea""#,
            r#"Portal::User::"bea""#,
            r#"Other::User::"bea""#,
            r#"Portal::Account::"bea""#,
            r#"Portal::User::"be""#,
            r#"Portal::User::"abea""#,
            r#"A::"bc""#,
            r#"Ab::"c""#,
        ];
        let state = foldhash::fast::RandomState::default();
        for a in uids {
            for b in uids {
                let (ka, kb) = (key(a), key(b));
                assert_eq!(ka == kb, a == b, "{a} {b}");
                if ka == kb {
                    assert_eq!(state.hash_one(&ka), state.hash_one(&kb));
                }
            }
        }
        let again = key(r#"Portal::User::"bea""#);
        assert!(key(r#"Portal::User::"bea""#) == again);
    }

    /// A table that does not hold as many entities as the store (built from other
    /// data) is not read: lookups go to the store.
    #[test]
    fn a_table_of_other_data_is_not_read() {
        let json = |ids: &[&str]| {
            let items: Vec<String> = ids
                .iter()
                .map(|id| format!(r#"{{"uid": {{"type": "User", "id": "{id}"}}, "attrs": {{}}, "parents": []}}"#))
                .collect();
            Entities::from_json_str(&format!("[{}]", items.join(",")), None).unwrap()
        };
        let store = json(&["a", "b"]);
        let other = json(&["c"]);
        let table = EntityTable::of(&other, &TypeCanon::default()).unwrap();
        let lookup = Lookup::new(&store, Some(&table));
        let a = key(r#"User::"a""#);
        let c = key(r#"User::"c""#);
        assert!(
            lookup.entity(a.uid()).unwrap().is_some(),
            "read from the store"
        );
        assert!(
            lookup.entity(c.uid()).unwrap().is_none(),
            "the other table not read"
        );
        let own = EntityTable::of(&store, &TypeCanon::default()).unwrap();
        assert!(Lookup::new(&store, Some(&own))
            .entity(a.uid())
            .unwrap()
            .is_some());
    }

    /// The table holds what the store holds, and nothing else: equal entities (uids
    /// in attributes, sets, records and tags put on shared type names, never changed).
    #[test]
    fn the_table_holds_the_stores_entities() {
        let entities = Entities::from_json_str(
            r#"[
                {"uid": {"type": "A::User", "id": "bea"}, "parents": [{"type": "A::Team", "id": "t"}],
                 "attrs": {"n": 1, "team": {"__entity": {"type": "A::Team", "id": "t"}},
                           "teams": [{"__entity": {"type": "A::Team", "id": "t"}}, {"__entity": {"type": "B::Team", "id": "t"}}],
                           "deep": {"of": {"who": {"__entity": {"type": "A::User", "id": "x"}}, "k": "v"}},
                           "plain": {"a": [1, 2], "s": "text"}},
                 "tags": {"acme": {"who": {"__entity": {"type": "A::Team", "id": "t"}}}}},
                {"uid": {"type": "A::Team", "id": "t"}, "attrs": {}, "parents": [{"type": "A::Team", "id": "all"}]},
                {"uid": {"type": "A::Team", "id": "all"}, "attrs": {}, "parents": []},
                {"uid": {"type": "B::Team", "id": "bea"}, "attrs": {"n": 2}, "parents": []}
            ]"#,
            None,
        )
        .unwrap();
        let names: Vec<EntityTypeName> = ["A::User", "A::Team"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        for types in [TypeCanon::default(), TypeCanon::new(&names)] {
            let table = EntityTable::of(&entities, &types).unwrap();
            assert_eq!(table.len(), 4);
            let store: &cedar_policy_core::entities::Entities = entities.as_ref();
            for e in store.iter() {
                let t = table.get(e.uid()).unwrap();
                assert!(t.deep_eq(e), "{e}");
                let parents = |x: &Entity| x.parents().cloned().collect::<HashSet<_>>();
                assert_eq!(parents(t), parents(e));
            }
        }
        let table = EntityTable::of(&entities, &TypeCanon::new(&names)).unwrap();
        let missing = key(r#"User::"t""#);
        assert!(table.get(missing.uid()).is_none());
    }
}
