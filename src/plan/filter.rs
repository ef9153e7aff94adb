//! The filter of a query plan: a small boolean AST over one resource's attributes, in
//! the JSON shape docs/query-plan.md describes, and its evaluator over a stored entity
//! (the reference semantics a SQL or Redis translation must match).
//!
//! Two-valued: an atom whose path is undefined is false, and so is an atom whose
//! operand has the wrong type.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Attribute names from the resource; empty is the resource's own uid.
pub type Path = Vec<String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Every operand holds (`{"and": []}` is true).
    And(Vec<Filter>),
    /// Some operand holds (`{"or": []}` is false).
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// The value at the path equals the Cedar JSON value.
    Eq(Path, Value),
    /// The value at the path equals one of the values.
    In(Path, Vec<Value>),
    /// The path is defined.
    Has(Path),
    /// The set at the path contains the value.
    Contains(Path, Value),
    Lt(Path, i64),
    Le(Path, i64),
    Gt(Path, i64),
    Ge(Path, i64),
}

impl Filter {
    pub fn always() -> Self {
        Filter::And(Vec::new())
    }

    pub fn never() -> Self {
        Filter::Or(Vec::new())
    }

    pub fn is_always(&self) -> bool {
        matches!(self, Filter::And(v) if v.is_empty())
    }

    pub fn is_never(&self) -> bool {
        matches!(self, Filter::Or(v) if v.is_empty())
    }

    /// A conjunction, flattened, with true operands dropped and false absorbing.
    pub fn and(parts: impl IntoIterator<Item = Filter>) -> Self {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Filter::And(inner) => out.extend(inner),
                p if p.is_never() => return Filter::never(),
                p => out.push(p),
            }
        }
        if out.len() == 1 {
            out.pop().unwrap_or_else(Filter::always)
        } else {
            Filter::And(out)
        }
    }

    /// A disjunction, flattened, with false operands dropped and true absorbing.
    pub fn or(parts: impl IntoIterator<Item = Filter>) -> Self {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Filter::Or(inner) => out.extend(inner),
                p if p.is_always() => return Filter::always(),
                p => out.push(p),
            }
        }
        if out.len() == 1 {
            out.pop().unwrap_or_else(Filter::never)
        } else {
            Filter::Or(out)
        }
    }

    /// A negation, with constants folded.
    pub fn negate(inner: Filter) -> Self {
        if inner.is_always() {
            Filter::never()
        } else if inner.is_never() {
            Filter::always()
        } else if let Filter::Not(x) = inner {
            *x
        } else {
            Filter::Not(Box::new(inner))
        }
    }

    /// Whether the filter holds for a resource, given in the entity JSON form of
    /// `cedar_policy::Entity::to_json_value` (`uid`, `attrs`).
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(v) => v.iter().all(|f| f.matches(resource)),
            Filter::Or(v) => v.iter().any(|f| f.matches(resource)),
            Filter::Not(f) => !f.matches(resource),
            Filter::Has(p) => lookup(resource, p).is_some(),
            Filter::Eq(p, v) => lookup(resource, p).is_some_and(|x| same(&x, v)),
            Filter::In(p, vs) => {
                lookup(resource, p).is_some_and(|x| vs.iter().any(|v| same(&x, v)))
            }
            Filter::Contains(p, v) => lookup(resource, p)
                .is_some_and(|x| x.as_array().is_some_and(|s| s.iter().any(|e| same(e, v)))),
            Filter::Lt(p, n) => number(resource, p).is_some_and(|x| x < *n),
            Filter::Le(p, n) => number(resource, p).is_some_and(|x| x <= *n),
            Filter::Gt(p, n) => number(resource, p).is_some_and(|x| x > *n),
            Filter::Ge(p, n) => number(resource, p).is_some_and(|x| x >= *n),
        }
    }
}

/// The value at a path of a resource; the empty path is its uid as an entity value.
fn lookup(resource: &Value, path: &[String]) -> Option<Value> {
    let Some((first, rest)) = path.split_first() else {
        return resource
            .get("uid")
            .map(|uid| serde_json::json!({ "__entity": uid }));
    };
    let mut cur = resource.get("attrs")?.get(first)?;
    for name in rest {
        cur = cur.get(name)?;
    }
    Some(cur.clone())
}

fn number(resource: &Value, path: &[String]) -> Option<i64> {
    lookup(resource, path).and_then(|v| v.as_i64())
}

/// Cedar equality of two Cedar JSON values: entity references in either form
/// (`{"__entity": {..}}` or `{"type", "id"}`), sets unordered.
fn same(a: &Value, b: &Value) -> bool {
    canonical(a) == canonical(b)
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            if let Some(inner) = map.get("__entity") {
                return serde_json::json!({ "__entity": {
                    "type": inner.get("type").cloned().unwrap_or(Value::Null),
                    "id": inner.get("id").cloned().unwrap_or(Value::Null),
                }});
            }
            Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            items.sort_by_key(|x| x.to_string());
            items.dedup();
            Value::Array(items)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn invoice(account: &str) -> Value {
        json!({"uid": {"type": "Portal::Invoice", "id": "i1"},
               "attrs": {"account": {"__entity": {"type": "Portal::Account", "id": account}},
                         "total": 10, "tags": ["a", "b"]}})
    }

    #[test]
    fn the_json_shape_is_the_documented_one() {
        let f = Filter::and([
            Filter::In(
                vec!["account".into()],
                vec![json!({"__entity": {"type": "Portal::Account", "id": "acme"}})],
            ),
            Filter::negate(Filter::Gt(vec!["total".into()], 5)),
        ]);
        let text = serde_json::to_value(&f).unwrap();
        assert_eq!(
            text,
            json!({"and": [
                {"in": [["account"], [{"__entity": {"type": "Portal::Account", "id": "acme"}}]]},
                {"not": {"gt": [["total"], 5]}}
            ]})
        );
        assert_eq!(serde_json::from_value::<Filter>(text).unwrap(), f);
    }

    #[test]
    fn an_atom_on_an_undefined_path_is_false_and_its_negation_true() {
        let r = invoice("acme");
        let missing = Filter::Eq(vec!["nope".into()], json!(1));
        assert!(!missing.matches(&r));
        assert!(Filter::negate(missing).matches(&r));
        assert!(Filter::Has(vec![]).matches(&r));
        assert!(Filter::Contains(vec!["tags".into()], json!("b")).matches(&r));
        assert!(!Filter::Lt(vec!["tags".into()], 3).matches(&r));
        assert!(Filter::Eq(
            vec![],
            json!({"__entity": {"type": "Portal::Invoice", "id": "i1"}})
        )
        .matches(&r));
    }
}
