//! The symmetric plan, for subject search: the resource, action and context known,
//! the principal not. Cedar's partial evaluator leaves, of each permit, what it asks
//! of the principal (`principal in Portal::Account::"acme" && ...`,
//! `Portal::User::"olivia" == principal`). When every permit left pins the principal
//! to named entities or to the descendants of named entities, those are the only
//! subjects that can be allowed; the search then decides just them. Otherwise every
//! subject of the type stays a candidate. Data served whole is read as it is; lean
//! data and a store through the resource's neighbourhood and the source's member and
//! index sets (`EntitySource::members`, `referrers`).
//! Candidates are never answers: each is decided by the pipeline.

use std::collections::BTreeSet;

use cedar_policy::pst::{BinaryOp, Clause, Expr, Literal, Var};
use cedar_policy::{
    Context, Effect, EntityTypeName, EntityUid, EvalResult, PartialEntities, PartialEntityUid,
    PartialRequest,
};
use serde_json::Value;

use super::{
    api_uid, prepared, serves_whole, snapshot_data, visit, walk_refs, PlanError, MAX_CASES,
};
use crate::entities::{EntitySource, Referrers};
use crate::model::Snapshot;

/// Who may be allowed, as far as the policies tell without the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subjects {
    /// No subject of the type.
    Nobody,
    /// At most these, sorted by id.
    Only(Vec<EntityUid>),
    /// Any subject of the type, and why the policies do not narrow it.
    Every(String),
}

/// A necessary condition a permit puts on the principal.
#[derive(Debug, Clone)]
enum Pin {
    /// `principal == uid`
    Is(EntityUid),
    /// `principal in uid`
    In(EntityUid),
    /// `principal.attr == uid`
    Refers(String, EntityUid),
}

/// The subjects of `subject_type` that may do `action` on `resource` in `context` (Cedar
/// JSON), read from the snapshot's data or, through `source`, from the resource's
/// neighbourhood and the source's member sets.
pub async fn subjects(
    snapshot: &Snapshot,
    source: &dyn EntitySource,
    subject_type: &EntityTypeName,
    action: &EntityUid,
    resource: &EntityUid,
    context: &Value,
) -> Result<Subjects, PlanError> {
    let schema = &snapshot.schema;
    let whole = if serves_whole(snapshot) {
        Some(snapshot_data(snapshot)?)
    } else {
        None
    };
    let (entities, partial) = match &whole {
        Some(data) => (data.entities.clone(), data.partial.clone()),
        None => {
            let mut roots = vec![resource.clone()];
            walk_refs(context, &mut |uid| roots.push(uid));
            // What is not fetched is unknown to the evaluator, which then leaves a
            // residual rather than a wrong answer. The resource's ancestors are always
            // fetched whole.
            let fetched = source
                .entities_for(&roots, snapshot)
                .await
                .map_err(PlanError::from_source)?;
            let partial = PartialEntities::from_concrete(fetched.entities.as_ref().clone(), schema)
                .map_err(|e| PlanError::Entities(crate::error_chain(&e)))?;
            (fetched.entities, partial)
        }
    };
    // Only the policies whose scope can match: the others are false for every
    // subject, and evaluating them is most of the work once links number thousands.
    let scoped = prepared(snapshot).actions.as_ref().and_then(|actions| {
        snapshot
            .index
            .for_subject_plan(subject_type, action, resource, &entities, actions)
    });
    let policies = scoped.as_deref().unwrap_or(&snapshot.policies);
    let context = Context::from_json_value(context.clone(), Some((schema, action)))
        .map_err(|e| PlanError::Request(format!("`context`: {}", crate::error_chain(&e))))?;
    let request = PartialRequest::new(
        PartialEntityUid::new(subject_type.clone(), None),
        action.clone(),
        PartialEntityUid::from_concrete(resource.clone()),
        Some(context),
        schema,
    )
    .map_err(|e| PlanError::Request(crate::error_chain(&e)))?;
    let response = policies
        .tpe(&request, &partial, schema)
        .map_err(|e| PlanError::Evaluation(crate::error_chain(&e)))?;
    match response.decision() {
        Some(cedar_policy::Decision::Deny) => return Ok(Subjects::Nobody),
        Some(cedar_policy::Decision::Allow) => {
            return Ok(Subjects::Every("every subject is allowed".to_string()))
        }
        None => {}
    }
    if let Some(p) = response.true_permits().next() {
        return Ok(Subjects::Every(format!(
            "permit `{p}` holds for every subject"
        )));
    }
    let mut conditions = Vec::new();
    for policy in response.residual_policies() {
        if policy.effect() != Effect::Permit {
            continue;
        }
        let Ok(pst) = policy.to_pst() else {
            return Ok(Subjects::Every(format!(
                "residual policy `{}` cannot be read",
                policy.id()
            )));
        };
        let when: Vec<std::sync::Arc<Expr>> = pst
            .body()
            .clauses()
            .iter()
            .filter_map(|c| match c {
                Clause::When(e) => Some(e.clone()),
                Clause::Unless(_) => None,
            })
            .collect();
        conditions.push((policy.id().to_string(), when));
    }
    // Entities the conditions read attributes of: one that does not exist makes the
    // comparison an error, so the permit cannot hold.
    let mut read: BTreeSet<EntityUid> = BTreeSet::new();
    for (_, when) in &conditions {
        for e in when {
            visit(e, &mut |node| {
                if let Expr::GetAttr { expr, .. } | Expr::HasAttr { expr, .. } = node {
                    if let Expr::Literal(Literal::EntityUID(uid)) = expr.as_ref() {
                        read.extend(api_uid(uid));
                    }
                }
            });
        }
    }
    let absent: BTreeSet<EntityUid> = match &whole {
        Some(data) => read
            .into_iter()
            .filter(|u| data.entities.get(u).is_none())
            .collect(),
        None if read.is_empty() => BTreeSet::new(),
        None => {
            let uids: Vec<EntityUid> = read.iter().cloned().collect();
            let fetched = source
                .entities_for(&uids, snapshot)
                .await
                .map_err(PlanError::from_source)?;
            read.into_iter()
                .filter(|u| fetched.entities.get(u).is_none())
                .collect()
        }
    };
    let mut pins = Vec::new();
    for (id, when) in &conditions {
        match when.iter().find_map(|e| pins_of(e, &absent)) {
            Some(p) => pins.extend(p),
            None => {
                return Ok(Subjects::Every(format!(
                    "permit `{id}` does not pin the principal to named entities"
                )))
            }
        }
    }
    let mut found: Vec<EntityUid> = Vec::new();
    for pin in pins {
        let (uid, below) = match pin {
            Pin::Is(uid) => (uid, false),
            Pin::In(uid) => (uid, true),
            Pin::Refers(attr, target) => {
                match &whole {
                    Some(data) => found.extend(
                        data.entities
                            .iter()
                            .filter(|e| {
                                e.uid().type_name() == subject_type
                                    && matches!(e.attr(&attr), Some(Ok(EvalResult::EntityUid(u))) if u == target)
                            })
                            .map(|e| e.uid()),
                    ),
                    None => match source
                        .referrers(
                            subject_type,
                            &attr,
                            std::slice::from_ref(&target),
                            None,
                            MAX_CASES,
                            snapshot,
                        )
                        .await
                        .map_err(PlanError::from_source)?
                    {
                        Referrers::Page(page) if page.next.is_none() => found.extend(page.uids),
                        Referrers::Page(_) => {
                            return Ok(Subjects::Every(format!(
                                "more than {MAX_CASES} `{subject_type}` entities refer to `{target}`"
                            )))
                        }
                        Referrers::Unindexed(reason) => return Ok(Subjects::Every(reason)),
                    },
                }
                continue;
            }
        };
        if uid.type_name() == subject_type {
            found.push(uid.clone());
        }
        if !below {
            continue;
        }
        match &whole {
            Some(data) => found.extend(data.entities.iter().map(|e| e.uid()).filter(|u| {
                u.type_name() == subject_type && u != &uid && data.entities.is_ancestor_of(&uid, u)
            })),
            None => match source
                .members(subject_type, &uid, MAX_CASES, snapshot)
                .await
                .map_err(PlanError::from_source)?
            {
                Referrers::Page(page) => found.extend(page.uids),
                Referrers::Unindexed(reason) => return Ok(Subjects::Every(reason)),
            },
        }
        if found.len() > MAX_CASES {
            return Ok(Subjects::Every(format!(
                "more than {MAX_CASES} candidate subjects"
            )));
        }
    }
    found.sort_unstable_by(|a, b| a.id().unescaped().cmp(b.id().unescaped()));
    found.dedup();
    Ok(if found.is_empty() {
        Subjects::Nobody
    } else {
        Subjects::Only(found)
    })
}

/// What `e` being true requires of the principal: to be one of, or below one of, the
/// entities named, or to refer to one by an attribute; `None` when it requires nothing
/// so simple, and nothing at all when it cannot be true (it reads an attribute of an
/// entity in `absent`, which is an error). A conjunction requires what either side
/// does, a disjunction what one side or the other does.
fn pins_of(e: &Expr, absent: &BTreeSet<EntityUid>) -> Option<Vec<Pin>> {
    let principal = |e: &Expr| matches!(e, Expr::Var(Var::Principal));
    let named = |e: &Expr| match e {
        Expr::Literal(Literal::EntityUID(uid)) => api_uid(uid),
        _ => None,
    };
    // An attribute of an entity that does not exist: an error wherever it is read.
    fn fails(e: &Expr, absent: &BTreeSet<EntityUid>) -> bool {
        match e {
            Expr::GetAttr { expr, .. } => match expr.as_ref() {
                Expr::Literal(Literal::EntityUID(uid)) => {
                    api_uid(uid).is_some_and(|u| absent.contains(&u))
                }
                inner => fails(inner, absent),
            },
            _ => false,
        }
    }
    match e {
        Expr::BinaryOp {
            op: BinaryOp::And,
            left,
            right,
        } => pins_of(left, absent).or_else(|| pins_of(right, absent)),
        Expr::BinaryOp {
            op: BinaryOp::Or,
            left,
            right,
        } => {
            let mut pins = pins_of(left, absent)?;
            pins.extend(pins_of(right, absent)?);
            Some(pins)
        }
        Expr::BinaryOp {
            op: BinaryOp::Eq | BinaryOp::In,
            left,
            right,
        } if fails(left, absent) || fails(right, absent) => Some(Vec::new()),
        Expr::HasAttr { expr, .. } if named(expr).is_some_and(|u| absent.contains(&u)) => {
            Some(Vec::new())
        }
        Expr::BinaryOp {
            op: BinaryOp::Eq,
            left,
            right,
        } => {
            for (side, other) in [(left, right), (right, left)] {
                let Some(uid) = named(other) else {
                    continue;
                };
                if principal(side) {
                    return Some(vec![Pin::Is(uid)]);
                }
                if let Expr::GetAttr { expr, attr } = side.as_ref() {
                    if principal(expr) {
                        return Some(vec![Pin::Refers(attr.to_string(), uid)]);
                    }
                }
            }
            None
        }
        Expr::BinaryOp {
            op: BinaryOp::In,
            left,
            right,
        } if principal(left) => match right.as_ref() {
            Expr::Set(items) => items
                .iter()
                .map(|i| named(i).map(Pin::In))
                .collect::<Option<Vec<_>>>(),
            other => named(other).map(|u| vec![Pin::In(u)]),
        },
        _ => None,
    }
}
