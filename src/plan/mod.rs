//! Query plans: "which resources of this type may this principal act on?" answered as
//! a filter over the resources' own attributes, exact or refused.
//!
//! The one module that uses Cedar's experimental type-aware partial evaluator (`tpe`):
//! the principal, action and context are known, the resource is not. What the
//! evaluator leaves (residual policies) is translated into a [`Filter`]:
//!
//! - a condition on the resource's own attributes becomes an atom;
//! - a condition that reads *through* an entity the resource refers to
//!   (`principal in resource.account`, `resource.account.owner == principal`) is
//!   decided once per candidate entity: every entity of that type the data names, and
//!   one stand-in for all others, then evaluated by Cedar itself;
//! - anything else (`like`, arithmetic, tags or hierarchy of the resource itself) makes
//!   the plan `unsupported`, naming the construct. A plan is never an approximation.
//!
//! Errors follow Cedar: a policy whose condition errors does not apply, so each
//! condition is translated twice, "evaluates to true" and "evaluates to false".

pub mod filter;
pub mod subject;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::pst::{self, BinaryOp, Clause, Expr, Literal, UnaryOp, Var};
use cedar_policy::{
    Context, Effect, Entities, EntityId, EntityTypeName, EntityUid, EvalResult, Expression,
    PartialEntities, PartialEntityUid, PartialRequest, Request,
};
use serde::Serialize;
use serde_json::{json, Value};

pub use filter::{Filter, Path};

use crate::entities::{EntitySource, EntitySourceError, Referrers};
use crate::model::schema_types::Ty;
use crate::model::Snapshot;

/// Bound on the candidate cases one plan may evaluate; a plan that needs more is
/// `unsupported` rather than slow.
const MAX_CASES: usize = 10_000;

/// What a plan is asked about.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource_type: EntityTypeName,
    /// The context record in Cedar JSON (`{}` when the action needs none).
    pub context: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    AlwaysAllow,
    AlwaysDeny,
    Conditional,
    Unsupported,
}

/// The answer: which resources of the type the request allows.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub kind: PlanKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// For `unsupported`: the construct the plan cannot express; enumerate instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub assumptions: Vec<String>,
    /// The hash of the policy snapshot the plan was made from.
    pub policies: String,
}

impl PlanRequest {
    /// A request from its text fields: uids in Cedar syntax, the type by name.
    pub fn parse(
        principal: &str,
        action: &str,
        resource_type: &str,
        context: Option<Value>,
    ) -> Result<Self, PlanError> {
        let field = |field: &'static str, message: String| PlanError::Field { field, message };
        Ok(Self {
            principal: EntityUid::from_str(principal)
                .map_err(|e| field("principal", crate::error_chain(&e)))?,
            action: EntityUid::from_str(action)
                .map_err(|e| field("action", crate::error_chain(&e)))?,
            resource_type: EntityTypeName::from_str(resource_type)
                .map_err(|e| field("resource_type", crate::error_chain(&e)))?,
            context: context.unwrap_or_else(|| json!({})),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("`{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("the model holds no entity data to plan over")]
    NoEntityData,
    #[error("the request does not fit the schema: {0}")]
    Request(String),
    #[error("entity store unavailable: {0}")]
    Unavailable(String),
    #[error("the entity data does not fit the schema: {0}")]
    Entities(String),
    #[error("partial evaluation failed: {0}")]
    Evaluation(String),
}

impl PlanError {
    fn from_source(e: EntitySourceError) -> Self {
        match e {
            EntitySourceError::Unavailable(m) => PlanError::Unavailable(m),
            EntitySourceError::InvalidData { message, .. } => PlanError::Entities(message),
        }
    }

    /// The stable code of the error in an error body.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::Field { .. } | PlanError::Request(_) => "invalid_request",
            PlanError::NoEntityData => "plan_needs_entity_data",
            PlanError::Unavailable(_) => "entity_store_unavailable",
            PlanError::Entities(_) => "invalid_entity_data",
            PlanError::Evaluation(_) => "plan_failed",
        }
    }
}

/// Entity data prepared for plans: Cedar's entities, the same data as the partial
/// evaluator's input, and every uid the data names by type (the candidates of a
/// path through an entity). Built once per state of the data: for the file source
/// once per snapshot ([`prepared`]), for a store once per plan from what was fetched.
pub struct PlanData {
    entities: Arc<Entities>,
    partial: PartialEntities,
    /// Every entity uid the data names anywhere (uids, parents, attribute and tag
    /// values), by type.
    named: BTreeMap<String, BTreeSet<EntityUid>>,
}

impl PlanData {
    pub fn new(snapshot: &Snapshot, entities: Arc<Entities>) -> Result<Self, PlanError> {
        let partial = PartialEntities::from_concrete(entities.as_ref().clone(), &snapshot.schema)
            .map_err(|e| PlanError::Entities(crate::error_chain(&e)))?;
        let mut named: BTreeMap<String, BTreeSet<EntityUid>> = BTreeMap::new();
        let mut note = |uid: EntityUid| {
            named
                .entry(uid.type_name().to_string())
                .or_default()
                .insert(uid);
        };
        for entity in entities.iter() {
            note(entity.uid());
            if let Ok(v) = entity.to_json_value() {
                if let Some(parents) = v.get("parents").and_then(Value::as_array) {
                    for p in parents {
                        if let Some(uid) = uid_of_json(p) {
                            note(uid);
                        }
                    }
                }
                for key in ["attrs", "tags"] {
                    if let Some(inner) = v.get(key) {
                        walk_refs(inner, &mut note);
                    }
                }
            }
        }
        Ok(Self {
            entities,
            partial,
            named,
        })
    }

    pub fn entities(&self) -> &Entities {
        &self.entities
    }
}

/// What a snapshot prepares for every plan made from it, computed on the first.
pub struct Prepared {
    /// Entity literals of the policies: candidates of every path of their type.
    literals: BTreeSet<EntityUid>,
    /// The schema's action entities, whose hierarchy decides `action in [...]`;
    /// `None` if they cannot be assembled (plans then evaluate every policy).
    actions: Option<Entities>,
    /// The snapshot's own entity data (the file source), prepared; `None` when the
    /// data lives in a store, or (with the reason) when it cannot be prepared.
    data: Option<Result<Arc<PlanData>, String>>,
}

/// The snapshot's prepared policies and data (computed once per snapshot).
pub fn prepared(snapshot: &Snapshot) -> Arc<Prepared> {
    let make = || Prepared {
        literals: policy_literals(snapshot),
        actions: Entities::from_entities(snapshot.action_entities.iter().cloned(), None).ok(),
        // Data served whole is planned over as it is; lean data never builds it (plans
        // read a neighbourhood of it instead, `plan_from_source`).
        data: snapshot.entities.as_ref().and_then(|d| {
            d.served_whole()?;
            Some(d.whole(&snapshot.schema).and_then(|entities| {
                PlanData::new(snapshot, entities)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            }))
        }),
    };
    // The memo holds nothing else; were it ever to, the plan is prepared afresh.
    snapshot
        .plan_memo
        .get_or_init(make)
        .unwrap_or_else(|| Arc::new(make()))
}

/// The snapshot's own entity data prepared for plans; `NoEntityData` when the data
/// lives in a store or is served lean.
pub fn snapshot_data(snapshot: &Snapshot) -> Result<Arc<PlanData>, PlanError> {
    match &prepared(snapshot).data {
        None => Err(PlanError::NoEntityData),
        Some(Ok(data)) => Ok(data.clone()),
        Some(Err(e)) => Err(PlanError::Entities(e.clone())),
    }
}

/// Plans `request` against the snapshot's policies and the entity data `data`, which
/// holds every entity there is.
pub fn plan(
    snapshot: &Snapshot,
    data: &PlanData,
    request: &PlanRequest,
) -> Result<Plan, PlanError> {
    plan_over(snapshot, data, request, None)
}

/// Rounds of fetches a plan from a store may take: the request's neighbourhood, then
/// the index sets and ancestors its permits name (one more round per level of
/// nesting).
const MAX_ROUNDS: usize = 6;

/// Plans `request` over the entity source. A source that holds the model's data (or
/// any data it hands out whole) plans over all of it. A store (Redis) cannot list
/// every entity a path may name, so the plan fetches the request's neighbourhood:
/// the principal and the context's entities with their ancestors and references,
/// then, as the permits ask, the ancestors of the entities they test membership in
/// and the index sets of the reference attributes they compare (`resource.account
/// .owner == principal` reads the set of accounts whose owner is the principal).
/// Every permit must require such a relation of each entity the plan splits on;
/// otherwise the plan is `unsupported`.
pub async fn plan_from_source(
    snapshot: &Snapshot,
    source: &dyn EntitySource,
    request: &PlanRequest,
) -> Result<Plan, PlanError> {
    // Data served whole is planned over as it is; lean data (and a store) through the
    // request's neighbourhood, so a plan never builds the whole set a lean source
    // exists to avoid.
    if serves_whole(snapshot) {
        let data = snapshot_data(snapshot)?;
        return plan(snapshot, &data, request);
    }
    let mut hood = Neighbourhood::default();
    hood.roots.insert(request.principal.clone());
    walk_refs(&request.context, &mut |uid| {
        hood.roots.insert(uid);
    });
    for _ in 0..MAX_ROUNDS {
        let mut uids: Vec<EntityUid> = hood.roots.iter().cloned().collect();
        uids.extend(hood.referrers.values().flatten().cloned());
        let fetched = source
            .entities_for(&uids, snapshot)
            .await
            .map_err(PlanError::from_source)?;
        let data = PlanData::new(snapshot, fetched.entities)?;
        if fetched.complete {
            return plan(snapshot, &data, request);
        }
        let answer = plan_over(snapshot, &data, request, Some(&hood))?;
        let wants = hood.wants.take();
        if wants.roots.is_empty() && wants.referrers.is_empty() {
            return Ok(answer);
        }
        hood.roots.extend(wants.roots);
        for key in wants.referrers {
            let (ty, attr, target) = &key;
            let page = source
                .referrers(
                    ty,
                    attr,
                    std::slice::from_ref(target),
                    None,
                    MAX_CASES,
                    snapshot,
                )
                .await
                .map_err(PlanError::from_source)?;
            let page = match page {
                Referrers::Page(page) => page,
                Referrers::Unindexed(reason) => return Ok(refused(snapshot, reason)),
            };
            if page.next.is_some() {
                return Ok(refused(
                    snapshot,
                    format!(
                        "more than {MAX_CASES} `{ty}` entities refer to `{target}` by `{attr}`"
                    ),
                ));
            }
            hood.referrers.insert(key, page.uids);
        }
    }
    Ok(refused(
        snapshot,
        format!("the plan needed more than {MAX_ROUNDS} rounds of fetches from the entity source"),
    ))
}

/// Whether the snapshot's own data is held as one Cedar entity set that decisions read.
fn serves_whole(snapshot: &Snapshot) -> bool {
    snapshot
        .entities
        .as_ref()
        .is_some_and(|d| d.served_whole().is_some())
}

fn refused(snapshot: &Snapshot, reason: String) -> Plan {
    Plan {
        kind: PlanKind::Unsupported,
        filter: None,
        reason: Some(reason),
        assumptions: Vec::new(),
        policies: snapshot.hash.clone(),
    }
}

/// What a plan from a store has fetched so far, and what it found it needs next.
#[derive(Default)]
struct Neighbourhood {
    /// Uids fetched as roots: each with its ancestors, whole.
    roots: BTreeSet<EntityUid>,
    /// Index sets read: (type, attribute, referenced entity) to the referrers.
    referrers: BTreeMap<(EntityTypeName, String, EntityUid), Vec<EntityUid>>,
    wants: std::cell::RefCell<Wants>,
}

#[derive(Default)]
struct Wants {
    roots: BTreeSet<EntityUid>,
    referrers: BTreeSet<(EntityTypeName, String, EntityUid)>,
}

fn plan_over(
    snapshot: &Snapshot,
    data: &PlanData,
    request: &PlanRequest,
    hood: Option<&Neighbourhood>,
) -> Result<Plan, PlanError> {
    let prep = prepared(snapshot);
    let schema = &snapshot.schema;
    let context =
        Context::from_json_value(request.context.clone(), Some((schema, &request.action)))
            .map_err(|e| PlanError::Request(format!("`context`: {}", crate::error_chain(&e))))?;
    let partial = PartialRequest::new(
        PartialEntityUid::from_concrete(request.principal.clone()),
        request.action.clone(),
        PartialEntityUid::new(request.resource_type.clone(), None),
        Some(context.clone()),
        schema,
    )
    .map_err(|e| PlanError::Request(crate::error_chain(&e)))?;
    // Only the policies whose scope can match: typechecking and partially evaluating
    // the others, whose scope is false for every resource of the type, is most of
    // the work of a plan and changes nothing.
    let scoped = prep.actions.as_ref().and_then(|actions| {
        snapshot.index.for_plan(
            &request.principal,
            &request.action,
            &request.resource_type,
            &data.entities,
            actions,
        )
    });
    let policies = scoped.as_deref().unwrap_or(&snapshot.policies);
    let response = policies
        .tpe(&partial, &data.partial, schema)
        .map_err(|e| PlanError::Evaluation(crate::error_chain(&e)))?;
    let hash = snapshot.hash.clone();
    let finish = |kind, filter, reason, assumptions| Plan {
        kind,
        filter,
        reason,
        assumptions,
        policies: hash.clone(),
    };
    match response.decision() {
        Some(cedar_policy::Decision::Allow) => {
            return Ok(finish(PlanKind::AlwaysAllow, None, None, Vec::new()))
        }
        Some(cedar_policy::Decision::Deny) => {
            return Ok(finish(PlanKind::AlwaysDeny, None, None, Vec::new()))
        }
        None => {}
    }
    let planner = Planner::new(snapshot, &prep, data, request, context, hood)?;
    let some_permit_holds = response.true_permits().next().is_some();
    let mut residuals = Vec::new();
    for policy in response.residual_policies() {
        let pst = match policy.to_pst() {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("residual policy `{}`: {e}", policy.id());
                return Ok(finish(
                    PlanKind::Unsupported,
                    None,
                    Some(reason),
                    Vec::new(),
                ));
            }
        };
        let clauses = pst.body().clauses().clone();
        residuals.push(Residual {
            effect: policy.effect(),
            clauses,
        });
    }
    let filter = match planner.decide(&residuals, some_permit_holds) {
        Ok(f) => f,
        Err(Unsupported(reason)) => {
            return Ok(finish(
                PlanKind::Unsupported,
                None,
                Some(reason),
                Vec::new(),
            ))
        }
    };
    let assumptions = planner.assumptions();
    Ok(if filter.is_always() {
        finish(PlanKind::AlwaysAllow, None, None, assumptions)
    } else if filter.is_never() {
        finish(PlanKind::AlwaysDeny, None, None, assumptions)
    } else {
        finish(PlanKind::Conditional, Some(filter), None, assumptions)
    })
}

/// A residual policy: its effect and its condition's clauses.
struct Residual {
    effect: Effect,
    clauses: Vec<Clause>,
}

fn clause_expr(c: &Clause) -> &Expr {
    match c {
        Clause::When(e) | Clause::Unless(e) => e,
    }
}

/// A construct the plan cannot express exactly, in words.
#[derive(Debug)]
struct Unsupported(String);

type Translated = Result<Filter, Unsupported>;

fn unsupported(what: impl Into<String>) -> Unsupported {
    Unsupported(what.into())
}

struct Planner<'a> {
    snapshot: &'a Snapshot,
    entities: &'a Entities,
    request: &'a PlanRequest,
    /// The request with a stand-in resource, for evaluating conditions that no longer
    /// read the resource.
    concrete: Request,
    /// Every entity uid the data names anywhere, by type.
    named: &'a BTreeMap<String, BTreeSet<EntityUid>>,
    /// The uids the request names (principal, context): candidates too.
    requested: BTreeSet<EntityUid>,
    /// Entity types whose candidates a plan was decided over.
    split_types: std::cell::RefCell<BTreeSet<String>>,
    /// Entity literals of the policies: candidates too.
    literals: &'a BTreeSet<EntityUid>,
    cases: std::cell::Cell<usize>,
    /// Set when the data is what a store returned around the request rather than
    /// all of it: candidates then come from the request's relations.
    hood: Option<&'a Neighbourhood>,
}

impl<'a> Planner<'a> {
    fn new(
        snapshot: &'a Snapshot,
        prep: &'a Prepared,
        data: &'a PlanData,
        request: &'a PlanRequest,
        context: Context,
        hood: Option<&'a Neighbourhood>,
    ) -> Result<Self, PlanError> {
        let stand_in = EntityUid::from_type_name_and_id(
            request.resource_type.clone(),
            EntityId::new("portcullis:plan:resource"),
        );
        let concrete = Request::new(
            request.principal.clone(),
            request.action.clone(),
            stand_in,
            context,
            None,
        )
        .map_err(|e| PlanError::Request(crate::error_chain(&e)))?;
        let mut requested = BTreeSet::new();
        requested.insert(request.principal.clone());
        // The context's references (explicit or implicit form) are candidates too;
        // a candidate too many only costs one more exact case.
        walk_refs(&request.context, &mut |uid| {
            requested.insert(uid);
        });
        Ok(Self {
            snapshot,
            entities: &data.entities,
            request,
            concrete,
            named: &data.named,
            requested,
            literals: &prep.literals,
            split_types: Default::default(),
            cases: Default::default(),
            hood,
        })
    }

    fn assumptions(&self) -> Vec<String> {
        let mut out = vec![format!(
            "resources of `{}` are valid for the schema of the snapshot",
            self.request.resource_type
        )];
        out.push(format!(
            "`{}` and its ancestors are as in the entity data the plan was made from",
            self.request.principal
        ));
        for ty in self.split_types.borrow().iter() {
            if *ty == self.request.resource_type.to_string() {
                out.push(format!(
                    "the resources of `{ty}` are the entities of the data the plan was made from, with their attributes and ancestors"
                ));
                continue;
            }
            out.push(format!(
                "every `{ty}` a resource refers to is as in the entity data the plan was made from (a missing one is decided as missing)"
            ));
        }
        if let Some(hood) = self.hood {
            for (ty, attr, target) in hood.referrers.keys() {
                out.push(format!(
                    "the entity store's index set of `{ty}.{attr}` for `{target}` is exact (every write through `portcullis entities`)"
                ));
            }
            out.push(
                "decisions read no entity beyond the store's fetch depth (`--redis-fetch-depth`)"
                    .to_string(),
            );
        }
        out
    }

    /// The resources the residual policies allow: some permit applies (or one held
    /// already) and no forbid applies. A path through an entity that any residual
    /// reads is decided first, once per candidate, over all residuals together.
    fn decide(&self, residuals: &[Residual], some_permit_holds: bool) -> Translated {
        for r in residuals {
            for clause in &r.clauses {
                if !mentions(clause_expr(clause), &Var::Resource) {
                    continue;
                }
                if let Some(through) = self.dereferenced(clause_expr(clause))? {
                    let rewrite = |f: &dyn Fn(&Expr) -> Result<Expr, Unsupported>| {
                        let rewritten = residuals
                            .iter()
                            .map(|r| {
                                Ok(Residual {
                                    effect: r.effect,
                                    clauses: r
                                        .clauses
                                        .iter()
                                        .map(|c| {
                                            let e = Arc::new(f(clause_expr(c))?);
                                            Ok(match c {
                                                Clause::When(_) => Clause::When(e),
                                                Clause::Unless(_) => Clause::Unless(e),
                                            })
                                        })
                                        .collect::<Result<_, Unsupported>>()?,
                                })
                            })
                            .collect::<Result<Vec<_>, Unsupported>>()?;
                        self.decide(&rewritten, some_permit_holds)
                    };
                    let related = match self.hood {
                        None => Vec::new(),
                        Some(hood) => self.related(hood, residuals, &through, some_permit_holds)?,
                    };
                    return self.split(
                        &through,
                        &related,
                        |target, with| rewrite(&|e| substitute(e, target, with)),
                        |target| rewrite(&|e| absent(e, target)),
                    );
                }
            }
        }
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        for r in residuals {
            let mut parts = Vec::new();
            for clause in &r.clauses {
                parts.push(match clause {
                    Clause::When(e) => self.holds(e, true)?,
                    Clause::Unless(e) => self.holds(e, false)?,
                });
            }
            match r.effect {
                Effect::Permit => permits.push(Filter::and(parts)),
                Effect::Forbid => forbids.push(Filter::and(parts)),
            }
        }
        let allowed = if some_permit_holds {
            Filter::always()
        } else {
            Filter::or(permits)
        };
        Ok(Filter::and([allowed, Filter::negate(Filter::or(forbids))]))
    }

    /// From a store: the entities of the path's type that the request relates to,
    /// which are the candidates besides the named ones. Every permit among the
    /// residuals must require, in a `when` conjunct, that the entity at the path is
    /// related to the request: an ancestor of (or equal to) an entity the request
    /// determines (`principal in resource.account`), equal to one, or one whose
    /// reference attribute is one (`resource.account.owner == principal`, read from
    /// the index set). An entity not so related then satisfies no permit, exists or
    /// not, so the plan needs no list of them. What the plan has not fetched yet is
    /// recorded in the wants, and the plan is refused for this round.
    fn related(
        &self,
        hood: &Neighbourhood,
        residuals: &[Residual],
        path: &[String],
        some_permit_holds: bool,
    ) -> Result<Vec<EntityUid>, Unsupported> {
        let type_name = if path.is_empty() {
            self.request.resource_type.to_string()
        } else {
            match self.path_type(path) {
                Some(Ty::Entity(t)) => t,
                _ => return Err(unsupported("an entity reference of unknown type")),
            }
        };
        let at = if path.is_empty() {
            "the resource".to_string()
        } else {
            format!("`resource.{}`", path.join("."))
        };
        if some_permit_holds {
            return Err(unsupported(format!(
                "a permit holds for every resource while a forbid reads the `{type_name}` at {at}; the entity store cannot list every `{type_name}`"
            )));
        }
        let target = path_expr(path);
        let mut out = Vec::new();
        for r in residuals.iter().filter(|r| r.effect == Effect::Permit) {
            let mut found = None;
            for clause in &r.clauses {
                if let Clause::When(e) = clause {
                    if let Some(c) = self.guard(hood, e, &target, &type_name)? {
                        found = Some(c);
                        break;
                    }
                }
            }
            let Some(c) = found else {
                return Err(unsupported(format!(
                    "a permit that does not require the `{type_name}` at {at} to be related to the request (`E in`, `== E`, or a reference attribute `== E`); the entity store cannot list every `{type_name}`"
                )));
            };
            out.extend(c);
        }
        Ok(out)
    }

    /// The related entities a condition requires of the entity at `target`, if it
    /// requires one of the relations [`Self::related`] names.
    fn guard(
        &self,
        hood: &Neighbourhood,
        e: &Expr,
        target: &Expr,
        type_name: &str,
    ) -> Result<Option<Vec<EntityUid>>, Unsupported> {
        // A value the condition compares with: an entity, or none (a value of
        // another type, or an error, makes the comparison fail for every resource).
        let value = |other: &Expr| -> Result<Option<EntityUid>, Unsupported> {
            Ok(match self.evaluate(other)? {
                Ok(EvalResult::EntityUid(v)) => Some(v),
                _ => None,
            })
        };
        let need = |what: String| Err(unsupported(format!("needs {what} from the store")));
        match e {
            Expr::BinaryOp {
                op: BinaryOp::And,
                left,
                right,
            } => Ok(match self.guard(hood, left, target, type_name)? {
                Some(c) => Some(c),
                None => self.guard(hood, right, target, type_name)?,
            }),
            Expr::BinaryOp {
                op: BinaryOp::Or,
                left,
                right,
            } => Ok(
                match (
                    self.guard(hood, left, target, type_name)?,
                    self.guard(hood, right, target, type_name)?,
                ) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                },
            ),
            Expr::BinaryOp {
                op: BinaryOp::In,
                left,
                right,
            } if right.as_ref() == target && !mentions(left, &Var::Resource) => {
                match value(left)? {
                    Some(v) if !hood.roots.contains(&v) => {
                        hood.wants.borrow_mut().roots.insert(v.clone());
                        need(format!("the ancestors of `{v}`"))
                    }
                    // Its ancestors are fetched whole, and named: candidates already.
                    Some(v) => Ok(Some(vec![v])),
                    None => Ok(Some(Vec::new())),
                }
            }
            Expr::BinaryOp {
                op: BinaryOp::Eq,
                left,
                right,
            } => {
                for (side, other) in [(left, right), (right, left)] {
                    if mentions(other, &Var::Resource) {
                        continue;
                    }
                    if side.as_ref() == target {
                        return Ok(Some(value(other)?.into_iter().collect()));
                    }
                    let Expr::GetAttr { expr, attr } = side.as_ref() else {
                        continue;
                    };
                    let attr = attr.to_string();
                    let indexed = self
                        .snapshot
                        .types
                        .reference_attributes(type_name)
                        .contains(&attr.as_str());
                    if expr.as_ref() != target || !indexed {
                        continue;
                    }
                    let Some(v) = value(other)? else {
                        return Ok(Some(Vec::new()));
                    };
                    let ty = EntityTypeName::from_str(type_name)
                        .map_err(|_| unsupported(format!("entity type `{type_name}`")))?;
                    let key = (ty, attr, v);
                    return match hood.referrers.get(&key) {
                        Some(list) => Ok(Some(list.clone())),
                        None => {
                            let what =
                                format!("the index set of `{}.{}` for `{}`", key.0, key.1, key.2);
                            hood.wants.borrow_mut().referrers.insert(key);
                            need(what)
                        }
                    };
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The resources for which `e` evaluates to `want` (not to the other boolean, not
    /// to an error).
    fn holds(&self, e: &Expr, want: bool) -> Translated {
        if !mentions(e, &Var::Resource) {
            return Ok(match self.evaluate(e)? {
                Ok(EvalResult::Bool(b)) if b == want => Filter::always(),
                _ => Filter::never(),
            });
        }
        if let Some(through) = self.dereferenced(e)? {
            if self.hood.is_some() {
                return Err(unsupported(format!(
                    "`{e}` reads through an entity outside the policies' conditions"
                )));
            }
            return self.split(
                &through,
                &[],
                |target, with| self.holds(&substitute(e, target, with)?, want),
                |target| self.holds(&absent(e, target)?, want),
            );
        }
        match e {
            Expr::BinaryOp {
                op: BinaryOp::And,
                left,
                right,
            } => Ok(if want {
                Filter::and([self.holds(left, true)?, self.holds(right, true)?])
            } else {
                Filter::or([
                    self.holds(left, false)?,
                    Filter::and([self.holds(left, true)?, self.holds(right, false)?]),
                ])
            }),
            Expr::BinaryOp {
                op: BinaryOp::Or,
                left,
                right,
            } => Ok(if want {
                Filter::or([
                    self.holds(left, true)?,
                    Filter::and([self.holds(left, false)?, self.holds(right, true)?]),
                ])
            } else {
                Filter::and([self.holds(left, false)?, self.holds(right, false)?])
            }),
            Expr::UnaryOp {
                op: UnaryOp::Not,
                expr,
            } => self.holds(expr, !want),
            Expr::IfThenElse {
                cond,
                then_expr,
                else_expr,
            } => Ok(Filter::or([
                Filter::and([self.holds(cond, true)?, self.holds(then_expr, want)?]),
                Filter::and([self.holds(cond, false)?, self.holds(else_expr, want)?]),
            ])),
            _ => self.atom(e, want),
        }
    }

    /// A comparison of one resource path with a value that does not depend on the
    /// resource.
    fn atom(&self, e: &Expr, want: bool) -> Translated {
        // `when true` / `when false` of an atom: the atom, or its path defined and the
        // atom false.
        let polar = |path: Path, atom: Filter| -> Filter {
            if want {
                atom
            } else {
                Filter::and([Filter::Has(path), Filter::negate(atom)])
            }
        };
        match e {
            Expr::BinaryOp { op, left, right } => {
                let (path, other, flipped) = match (resource_path(left), resource_path(right)) {
                    (Some(p), None) => (p, right, false),
                    (None, Some(p)) => (p, left, true),
                    (Some(_), Some(_)) => {
                        return Err(unsupported(format!(
                            "`{e}` compares two attributes of the resource"
                        )))
                    }
                    (None, None) => return Err(unsupported(construct(e))),
                };
                if mentions(other, &Var::Resource) {
                    return Err(unsupported(construct(e)));
                }
                let value = match self.evaluate(other)? {
                    Ok(v) => v,
                    // The operand errors: so does the comparison, for every resource.
                    Err(_) => return Ok(Filter::never()),
                };
                match op {
                    BinaryOp::Eq | BinaryOp::NotEq => {
                        let json = value_json(&value)?;
                        let atom = Filter::Eq(path.clone(), json);
                        let is_eq = *op == BinaryOp::Eq;
                        Ok(if is_eq == want {
                            atom
                        } else {
                            Filter::and([Filter::Has(path), Filter::negate(atom)])
                        })
                    }
                    BinaryOp::Less | BinaryOp::LessEq | BinaryOp::Greater | BinaryOp::GreaterEq => {
                        let EvalResult::Long(n) = value else {
                            return Err(unsupported(format!(
                                "`{e}` compares a resource attribute with a value that is not a Long"
                            )));
                        };
                        // `path OP n`, or `n OP path` turned around.
                        let op = if flipped { mirror(*op) } else { *op };
                        let atom = match op {
                            BinaryOp::Less => Filter::Lt(path.clone(), n),
                            BinaryOp::LessEq => Filter::Le(path.clone(), n),
                            BinaryOp::Greater => Filter::Gt(path.clone(), n),
                            _ => Filter::Ge(path.clone(), n),
                        };
                        Ok(polar(path, atom))
                    }
                    BinaryOp::Contains if flipped => {
                        // `[values].contains(path)`: the path is one of the values.
                        let EvalResult::Set(items) = &value else {
                            return Ok(Filter::never());
                        };
                        let values = items.iter().map(value_json).collect::<Result<_, _>>()?;
                        Ok(polar(path.clone(), Filter::In(path, values)))
                    }
                    BinaryOp::Contains => {
                        let json = value_json(&value)?;
                        Ok(polar(path.clone(), Filter::Contains(path, json)))
                    }
                    _ => Err(unsupported(construct(e))),
                }
            }
            Expr::HasAttr { expr, attrs } => {
                let Some(base) = resource_path(expr) else {
                    return Err(unsupported(construct(e)));
                };
                let mut full = base.clone();
                full.extend(attrs.iter().map(|a| a.to_string()));
                // `has` errors only when its base is undefined.
                Ok(if want {
                    Filter::Has(full)
                } else {
                    Filter::and([Filter::Has(base), Filter::negate(Filter::Has(full))])
                })
            }
            Expr::GetAttr { .. } if resource_path(e).is_some() => {
                // A boolean attribute used as a condition.
                let path = resource_path(e).unwrap_or_default();
                Ok(Filter::Eq(path, Value::Bool(want)))
            }
            _ => Err(unsupported(construct(e))),
        }
    }

    /// The shortest path of the resource that names an entity and that `e` reads
    /// through (an attribute of it, its ancestors, its tags or its type).
    fn dereferenced(&self, e: &Expr) -> Result<Option<Path>, Unsupported> {
        let mut found: Option<Path> = None;
        let mut problem: Option<Unsupported> = None;
        visit(e, &mut |node| {
            let operands: Vec<&Arc<Expr>> = match node {
                Expr::GetAttr { expr, .. } | Expr::HasAttr { expr, .. } => vec![expr],
                Expr::Is { expr, in_expr, .. } => {
                    let mut v = vec![expr];
                    v.extend(in_expr.iter());
                    v
                }
                Expr::BinaryOp {
                    op: BinaryOp::In | BinaryOp::GetTag | BinaryOp::HasTag,
                    left,
                    right,
                } => vec![left, right],
                _ => Vec::new(),
            };
            // `x in resource`: decided per resource uid, like a path through an entity.
            if let Expr::BinaryOp {
                op: BinaryOp::In,
                right,
                ..
            } = node
            {
                if matches!(right.as_ref(), Expr::Var(Var::Resource)) {
                    found = Some(Vec::new());
                    return;
                }
            }
            for operand in operands {
                let Some(path) = resource_path(operand) else {
                    continue;
                };
                if path.is_empty() {
                    // The resource itself: its own attributes are paths; its tags and
                    // ancestors are not expressible.
                    if let Expr::BinaryOp { .. } | Expr::Is { .. } = node {
                        problem.get_or_insert(unsupported(construct(node)));
                    }
                    continue;
                }
                match self.path_type(&path) {
                    Some(Ty::Entity(_)) => {
                        if found.as_ref().is_none_or(|f| path.len() < f.len()) {
                            found = Some(path);
                        }
                    }
                    Some(Ty::Record(_)) => {}
                    _ => {
                        if let Expr::BinaryOp { .. } | Expr::Is { .. } = node {
                            problem.get_or_insert(unsupported(construct(node)));
                        }
                    }
                }
            }
        });
        // An entity path takes precedence: after it is decided, the problem may vanish.
        match (found, problem) {
            (Some(p), _) => Ok(Some(p)),
            (None, Some(p)) => Err(p),
            (None, None) => Ok(None),
        }
    }

    /// Whether every resource valid for the schema defines the path.
    fn path_required(&self, path: &[String]) -> bool {
        let mut ty = self.snapshot.types.attributes(&self.request.resource_type);
        for name in path {
            let Ty::Record(attrs) = ty else { return false };
            let Some(attr) = attrs.get(name) else {
                return false;
            };
            if !attr.required {
                return false;
            }
            ty = attr.ty.clone();
        }
        true
    }

    /// The schema type at a path of the resource type.
    fn path_type(&self, path: &[String]) -> Option<Ty> {
        let mut ty = self.snapshot.types.attributes(&self.request.resource_type);
        for name in path {
            ty = match ty {
                Ty::Record(attrs) => attrs.get(name)?.ty.clone(),
                _ => return None,
            };
        }
        Some(ty)
    }

    /// A filter decided once for each entity the path may name: `decide(target, with)`
    /// is the filter with the path `target` read as the entity literal `with`.
    fn split(
        &self,
        path: &[String],
        related: &[EntityUid],
        decide: impl Fn(&Expr, &Expr) -> Translated,
        decide_absent: impl Fn(&Expr) -> Translated,
    ) -> Translated {
        let type_name = if path.is_empty() {
            self.request.resource_type.to_string()
        } else {
            let Some(Ty::Entity(type_name)) = self.path_type(path) else {
                return Err(unsupported("an entity reference of unknown type"));
            };
            type_name
        };
        self.split_types.borrow_mut().insert(type_name.clone());
        let target = path_expr(path);
        let mut candidates: BTreeSet<EntityUid> =
            self.named.get(&type_name).cloned().unwrap_or_default();
        candidates.extend(
            self.literals
                .iter()
                .chain(&self.requested)
                .chain(related)
                .filter(|u| u.type_name().to_string() == type_name)
                .cloned(),
        );
        let ty = EntityTypeName::from_str(&type_name)
            .map_err(|_| unsupported(format!("entity type `{type_name}`")))?;
        // One stand-in for every entity the data does not name: none of them exists,
        // and the condition cannot tell them apart.
        let mut other_id = String::from("portcullis:plan:other");
        while candidates
            .iter()
            .any(|c| c.id().unescaped() == other_id.as_str())
        {
            other_id.push('_');
        }
        let other = EntityUid::from_type_name_and_id(ty, EntityId::new(&other_id));
        self.cases.set(self.cases.get() + candidates.len() + 1);
        if self.cases.get() > MAX_CASES {
            return Err(unsupported(format!(
                "more than {MAX_CASES} candidate `{type_name}` entities"
            )));
        }
        let mut allowed = Vec::new();
        let mut parts = Vec::new();
        for candidate in &candidates {
            let f = decide(&target, &literal(candidate)?)?;
            if f.is_always() {
                allowed.push(uid_json(candidate));
            } else if !f.is_never() {
                parts.push(Filter::and([
                    Filter::Eq(path.to_vec(), uid_json(candidate)),
                    f,
                ]));
            }
        }
        if !allowed.is_empty() {
            parts.insert(0, Filter::In(path.to_vec(), allowed));
        }
        // From a store, every entity the request does not relate to is refused by
        // every permit (`related` checked that), whether it exists or not.
        let rest = match self.hood {
            None => decide(&target, &literal(&other)?)?,
            Some(_) => Filter::never(),
        };
        if !path.is_empty() && !self.path_required(path) {
            // Resources without the attribute: `has` is false and reading it errors.
            let absent = decide_absent(&target)?;
            if !absent.is_never() {
                parts.push(Filter::and([
                    Filter::negate(Filter::Has(path.to_vec())),
                    absent,
                ]));
            }
        }
        if path.is_empty() && !rest.is_never() {
            // Resources the data does not name are read as missing there; the filter
            // reads the resource itself, so refuse rather than guess.
            return Err(unsupported(format!(
                "a condition on `{type_name}` resources the entity data does not hold"
            )));
        }
        if !rest.is_never() {
            parts.push(Filter::and([
                Filter::Has(path.to_vec()),
                Filter::negate(Filter::In(
                    path.to_vec(),
                    candidates.iter().map(uid_json).collect(),
                )),
                rest,
            ]));
        }
        Ok(Filter::or(parts))
    }

    /// Evaluates an expression that does not read the resource. The outer error is a
    /// construct the planner cannot evaluate; the inner one is Cedar's.
    fn evaluate(
        &self,
        e: &Expr,
    ) -> Result<Result<EvalResult, cedar_policy::EvaluationError>, Unsupported> {
        if mentions_unknown(e) {
            return Err(unsupported(format!("`{e}` holds an unknown")));
        }
        let text = e.to_string();
        let expression = Expression::from_str(&text)
            .map_err(|_| unsupported(format!("`{text}` cannot be evaluated on its own")))?;
        Ok(cedar_policy::eval_expression(
            &self.concrete,
            self.entities,
            &expression,
        ))
    }
}

/// The operator with its operands swapped (`n < path` is `path > n`).
fn mirror(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Less => BinaryOp::Greater,
        BinaryOp::LessEq => BinaryOp::GreaterEq,
        BinaryOp::Greater => BinaryOp::Less,
        BinaryOp::GreaterEq => BinaryOp::LessEq,
        other => other,
    }
}

/// How a construct is named in an `unsupported` reason: the first subexpression
/// over the resource that a plan cannot express, or the whole.
fn construct(e: &Expr) -> String {
    let mut found: Option<String> = None;
    visit(e, &mut |node| {
        if found.is_none() && mentions(node, &Var::Resource) {
            if let Some(what) = offending(node) {
                found = Some(format!("{what}: `{node}`"));
            }
        }
    });
    found.unwrap_or_else(|| format!("an expression over the resource: `{e}`"))
}

fn offending(e: &Expr) -> Option<&'static str> {
    Some(match e {
        Expr::Like { .. } => "`like` on a resource attribute",
        Expr::BinaryOp {
            op: BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul,
            ..
        } => "arithmetic on a resource attribute",
        Expr::UnaryOp {
            op: UnaryOp::Neg, ..
        } => "arithmetic on a resource attribute",
        Expr::BinaryOp {
            op: BinaryOp::GetTag | BinaryOp::HasTag,
            ..
        } => "tags of the resource",
        Expr::BinaryOp {
            op: BinaryOp::In, ..
        } => "the resource's ancestors (`in`)",
        Expr::Is { .. } => "the resource's type (`is`)",
        Expr::BinaryOp {
            op: BinaryOp::ContainsAll | BinaryOp::ContainsAny,
            ..
        } => "`containsAll`/`containsAny` on a resource attribute",
        Expr::UnaryOp {
            op: UnaryOp::Not, ..
        }
        | Expr::BinaryOp {
            op:
                BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Less
                | BinaryOp::LessEq
                | BinaryOp::Greater
                | BinaryOp::GreaterEq
                | BinaryOp::Contains,
            ..
        } => return None,
        Expr::UnaryOp { .. } | Expr::BinaryOp { .. } => {
            "an operator or extension function on a resource attribute"
        }
        _ => return None,
    })
}

/// The attribute path of `resource.a.b`, `[]` for `resource`; `None` otherwise.
fn resource_path(e: &Expr) -> Option<Path> {
    match e {
        Expr::Var(Var::Resource) => Some(Vec::new()),
        Expr::GetAttr { expr, attr } => {
            let mut p = resource_path(expr)?;
            p.push(attr.to_string());
            Some(p)
        }
        _ => None,
    }
}

fn path_expr(path: &[String]) -> Expr {
    let mut e = Expr::Var(Var::Resource);
    for name in path {
        e = Expr::GetAttr {
            expr: Arc::new(e),
            attr: name.as_str().into(),
        };
    }
    e
}

fn mentions(e: &Expr, var: &Var) -> bool {
    let mut found = false;
    visit(e, &mut |node| {
        if matches!(node, Expr::Var(v) if v == var) {
            found = true;
        }
    });
    found
}

fn mentions_unknown(e: &Expr) -> bool {
    let mut found = false;
    visit(e, &mut |node| {
        if matches!(node, Expr::Unknown { .. } | Expr::Slot(_)) {
            found = true;
        }
    });
    found
}

/// Calls `f` on `e` and every subexpression.
fn visit(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match e {
        Expr::UnaryOp { expr, .. }
        | Expr::GetAttr { expr, .. }
        | Expr::HasAttr { expr, .. }
        | Expr::Like { expr, .. } => visit(expr, f),
        Expr::BinaryOp { left, right, .. } => {
            visit(left, f);
            visit(right, f);
        }
        Expr::Is { expr, in_expr, .. } => {
            visit(expr, f);
            if let Some(i) = in_expr {
                visit(i, f);
            }
        }
        Expr::IfThenElse {
            cond,
            then_expr,
            else_expr,
        } => {
            visit(cond, f);
            visit(then_expr, f);
            visit(else_expr, f);
        }
        Expr::Set(items) => items.iter().for_each(|i| visit(i, f)),
        Expr::Record(fields) => fields.values().for_each(|i| visit(i, f)),
        _ => {}
    }
}

/// `e` rebuilt bottom-up, with each node `f` maps replaced (and not descended into).
fn rewrite(e: &Expr, f: &mut dyn FnMut(&Expr) -> Option<Expr>) -> Result<Expr, Unsupported> {
    if let Some(replaced) = f(e) {
        return Ok(replaced);
    }
    let f = std::cell::RefCell::new(f);
    let sub = |x: &Arc<Expr>| -> Result<Arc<Expr>, Unsupported> {
        let mut guard = f.borrow_mut();
        rewrite(x, &mut **guard).map(Arc::new)
    };
    Ok(match e {
        Expr::Literal(_) | Expr::Var(_) | Expr::Slot(_) | Expr::Unknown { .. } => e.clone(),
        Expr::ResidualError => e.clone(),
        Expr::UnaryOp { op, expr } => Expr::UnaryOp {
            op: *op,
            expr: sub(expr)?,
        },
        Expr::BinaryOp { op, left, right } => Expr::BinaryOp {
            op: *op,
            left: sub(left)?,
            right: sub(right)?,
        },
        Expr::GetAttr { expr, attr } => Expr::GetAttr {
            expr: sub(expr)?,
            attr: attr.clone(),
        },
        Expr::HasAttr { expr, attrs } => Expr::HasAttr {
            expr: sub(expr)?,
            attrs: attrs.clone(),
        },
        Expr::Like { expr, pattern } => Expr::Like {
            expr: sub(expr)?,
            pattern: pattern.clone(),
        },
        Expr::Is {
            expr,
            entity_type,
            in_expr,
        } => Expr::Is {
            expr: sub(expr)?,
            entity_type: entity_type.clone(),
            in_expr: in_expr.as_ref().map(sub).transpose()?,
        },
        Expr::IfThenElse {
            cond,
            then_expr,
            else_expr,
        } => Expr::IfThenElse {
            cond: sub(cond)?,
            then_expr: sub(then_expr)?,
            else_expr: sub(else_expr)?,
        },
        Expr::Set(items) => Expr::Set(items.iter().map(sub).collect::<Result<_, _>>()?),
        Expr::Record(fields) => Expr::Record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), sub(v)?)))
                .collect::<Result<_, Unsupported>>()?,
        ),
        _ => return Err(unsupported(format!("the construct `{e}`"))),
    })
}

/// Every entity literal of the snapshot's policies (and so of any residual).
fn policy_literals(snapshot: &Snapshot) -> BTreeSet<EntityUid> {
    let mut out = BTreeSet::new();
    for policy in snapshot.policies.policies() {
        let Ok(pst) = policy.to_pst() else { continue };
        for clause in pst.body().clauses() {
            visit(clause_expr(clause), &mut |node| {
                if let Expr::Literal(Literal::EntityUID(uid)) = node {
                    if let Some(u) = api_uid(uid) {
                        out.insert(u);
                    }
                }
            });
        }
    }
    out
}

/// `e` for a resource that lacks the attribute `target` reads: `resource has ...`
/// through it is false, and reading it errors (an overflow stands for the error,
/// which Cedar then propagates exactly as it would the missing attribute's).
fn absent(e: &Expr, target: &Expr) -> Result<Expr, Unsupported> {
    let Some(missing) = resource_path(target) else {
        return Err(unsupported("an absent attribute that is not a path"));
    };
    let error = Expr::BinaryOp {
        op: BinaryOp::Add,
        left: Arc::new(Expr::Literal(Literal::Long(i64::MAX))),
        right: Arc::new(Expr::Literal(Literal::Long(1))),
    };
    rewrite(e, &mut |node| {
        if node == target {
            return Some(error.clone());
        }
        if let Expr::HasAttr { expr, attrs } = node {
            let base = resource_path(expr)?;
            let mut full = base.clone();
            full.extend(attrs.iter().map(|a| a.to_string()));
            if base.len() < missing.len() && full.starts_with(&missing) {
                return Some(Expr::Literal(Literal::Bool(false)));
            }
        }
        None
    })
}

/// `e` with every occurrence of `target` replaced by `with`.
fn substitute(e: &Expr, target: &Expr, with: &Expr) -> Result<Expr, Unsupported> {
    rewrite(e, &mut |node| (node == target).then(|| with.clone()))
}

fn literal(uid: &EntityUid) -> Result<Expr, Unsupported> {
    let ty = uid.type_name();
    let name = pst::Name::qualified(ty.namespace_components(), ty.basename())
        .map_err(|_| unsupported(format!("entity type `{ty}`")))?;
    Ok(Expr::Literal(Literal::EntityUID(pst::EntityUID {
        ty: pst::EntityType(name),
        eid: uid.id().unescaped().into(),
    })))
}

fn api_uid(uid: &pst::EntityUID) -> Option<EntityUid> {
    let ty = EntityTypeName::from_str(&uid.ty.to_string()).ok()?;
    Some(EntityUid::from_type_name_and_id(
        ty,
        EntityId::new(uid.eid.as_str()),
    ))
}

fn uid_json(uid: &EntityUid) -> Value {
    json!({"__entity": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()}})
}

fn uid_of_json(v: &Value) -> Option<EntityUid> {
    let v = v.get("__entity").unwrap_or(v);
    let ty = EntityTypeName::from_str(v.get("type")?.as_str()?).ok()?;
    Some(EntityUid::from_type_name_and_id(
        ty,
        EntityId::new(v.get("id")?.as_str()?),
    ))
}

/// Every entity reference in a Cedar JSON value.
fn walk_refs(v: &Value, note: &mut dyn FnMut(EntityUid)) {
    match v {
        Value::Object(map) => {
            if let Some(inner) = map.get("__entity") {
                if let Some(uid) = uid_of_json(inner) {
                    note(uid);
                }
                return;
            }
            if map.len() == 2 {
                if let Some(uid) = uid_of_json(v) {
                    note(uid);
                }
            }
            map.values().for_each(|x| walk_refs(x, note));
        }
        Value::Array(items) => items.iter().for_each(|x| walk_refs(x, note)),
        _ => {}
    }
}

/// A Cedar value in Cedar JSON; extension values are refused (their equality is not
/// their text's).
fn value_json(v: &EvalResult) -> Result<Value, Unsupported> {
    Ok(match v {
        EvalResult::Bool(b) => json!(b),
        EvalResult::Long(n) => json!(n),
        EvalResult::String(s) => json!(s),
        EvalResult::EntityUid(uid) => uid_json(uid),
        EvalResult::Set(items) => Value::Array(
            items
                .iter()
                .map(value_json)
                .collect::<Result<_, Unsupported>>()?,
        ),
        EvalResult::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.to_string(), value_json(v)?)))
                .collect::<Result<_, Unsupported>>()?,
        ),
        EvalResult::ExtensionValue(text) => {
            return Err(unsupported(format!(
                "a comparison of a resource attribute with the extension value `{text}`"
            )))
        }
    })
}
