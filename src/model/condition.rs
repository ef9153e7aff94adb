//! Policy conditions compiled for a direct evaluation, so that a decision whose
//! candidate policies all evaluate without error does not go through Cedar's
//! authorizer (issue 14: most of a decision's instructions were Cedar building an
//! evaluator, rebuilding each policy's condition expression and interpreting it).
//!
//! # Why the answer is Cedar's
//!
//! The evaluation here is a *witness or nothing*: it mirrors Cedar's evaluation rules
//! (`cedar-policy-core`'s `Evaluator`, version pinned) for the expressions it knows,
//! and gives up ([`GiveUp`]) wherever Cedar would report an error and wherever it is
//! unsure: a missing attribute, entity or tag read, a type error, an overflow, an
//! extension function or comparison, `like`, a template slot, a context or entity
//! with unknowns (partial evaluation).
//! A policy set is decided here only when every candidate policy evaluated to a
//! boolean; Cedar then reports no error either, and its decision and determining
//! policies follow from the booleans alone (a satisfied forbid denies, with the
//! satisfied forbids as reasons; otherwise a satisfied permit allows, with the
//! satisfied permits; otherwise Deny without reasons). Anything else is handed to
//! Cedar whole. `tests/policy_index.rs` compares both on thousands of generated
//! cases, many of which error, and requires that most are decided here.
//!
//! Values are Cedar's own (`cedar-policy-core`'s `Value`, borrowed where they lie in
//! the entity data, the context or the compiled literals, never converted), so `==`
//! (uids compared ids first), `contains` and the set operations are Cedar's own.
//! Rules mirrored, as in Cedar: `&&`, `||` and `if` short-circuit and require
//! booleans; both operands of every other binary operator are evaluated first; `==`
//! never errors and is false across types (sets and records compare as values);
//! `x in y` is `x == y` or `y` among `x`'s ancestors in the data (an entity missing
//! from the data has none), `y` an entity or a set of entities; `has` on an entity
//! missing from the data is false, reading its attribute is an error; `hasTag` on a
//! missing entity is false.

use std::borrow::Cow;
use std::cell::RefCell;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{EntityTypeName, EntityUid, Request};
use cedar_policy_core::ast::{
    self, EntityType, EntityUID, Literal, PartialValue, Value, ValueKind,
};

use super::entity_table::{Lookup, TypeCanon};
use serde_json::Value as Json;
use smol_str::SmolStr;

/// The evaluation met something it does not decide: Cedar decides the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GiveUp;

type Out<T> = Result<T, GiveUp>;

fn lit(l: Literal) -> Value {
    Value {
        value: ValueKind::Lit(l),
        loc: None,
    }
}

fn boolean(b: bool) -> Value {
    lit(Literal::Bool(b))
}

fn entity_value(uid: &EntityUid) -> Value {
    let core: &EntityUID = uid.as_ref();
    lit(Literal::EntityUID(Arc::new(core.clone())))
}

/// Uid equality, ids first: most uids compared differ in their id, which is cheaper
/// to compare than the type's name and namespace.
pub(crate) fn same_uid(a: &EntityUID, b: &EntityUID) -> bool {
    a.eid() == b.eid() && a.entity_type() == b.entity_type()
}

/// Cedar's `==` on values, with uids compared ids first.
fn same_value(x: &Value, y: &Value) -> bool {
    match (&x.value, &y.value) {
        (ValueKind::Lit(Literal::EntityUID(a)), ValueKind::Lit(Literal::EntityUID(b))) => {
            same_uid(a, b)
        }
        _ => x == y,
    }
}

fn as_bool(v: &Value) -> Out<bool> {
    match &v.value {
        ValueKind::Lit(Literal::Bool(b)) => Ok(*b),
        _ => Err(GiveUp),
    }
}

fn as_long(v: &Value) -> Out<i64> {
    match &v.value {
        ValueKind::Lit(Literal::Long(i)) => Ok(*i),
        _ => Err(GiveUp),
    }
}

fn as_set(v: &Value) -> Out<&ast::Set> {
    match &v.value {
        ValueKind::Set(s) => Ok(s),
        _ => Err(GiveUp),
    }
}

fn as_entity(v: &Value) -> Out<&EntityUID> {
    match &v.value {
        ValueKind::Lit(Literal::EntityUID(uid)) => Ok(uid),
        _ => Err(GiveUp),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    In,
    Contains,
    ContainsAll,
    ContainsAny,
    GetTag,
    HasTag,
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Principal,
    Action,
    Resource,
    Context,
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    IsEmpty(Box<Expr>),
    Attr(Box<Expr>, SmolStr),
    /// `e has a.b.c`: the chain of attributes, one for the simple form.
    Has(Box<Expr>, Vec<SmolStr>),
    Is(Box<Expr>, EntityType, Option<Box<Expr>>),
    Set(Vec<Expr>),
    Record(Vec<(SmolStr, Expr)>),
}

impl Expr {
    /// Puts every type name in the expression (uid literals, `is`) on its shared
    /// instance, so that comparing it with the request's is a pointer comparison.
    fn share_types(&mut self, types: &TypeCanon) {
        match self {
            Expr::Lit(v) => *v = types.value(v),
            Expr::Principal | Expr::Action | Expr::Resource | Expr::Context => {}
            Expr::Not(a) | Expr::Neg(a) | Expr::IsEmpty(a) | Expr::Attr(a, _) | Expr::Has(a, _) => {
                a.share_types(types)
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Bin(_, a, b) => {
                a.share_types(types);
                b.share_types(types);
            }
            Expr::If(c, t, f) => {
                c.share_types(types);
                t.share_types(types);
                f.share_types(types);
            }
            Expr::Is(a, ty, within) => {
                a.share_types(types);
                *ty = types.ty(ty);
                if let Some(w) = within {
                    w.share_types(types);
                }
            }
            Expr::Set(items) => items.iter_mut().for_each(|i| i.share_types(types)),
            Expr::Record(fields) => fields.iter_mut().for_each(|(_, v)| v.share_types(types)),
        }
    }
}

/// A policy's `when` and `unless` clauses, in order; `true` for a clause's kind
/// means `when`.
#[derive(Debug)]
pub(crate) struct Condition {
    clauses: Vec<(bool, Expr)>,
}

impl Condition {
    /// Compiles the conditions of a policy or template given as Cedar's JSON policy
    /// format (`Policy::to_json`, `Template::to_json`); `None` when a clause uses
    /// something this evaluator does not know.
    ///
    /// Type names in the clauses are put on the shared instances of `types`.
    pub(crate) fn from_est(est: &Json, types: &TypeCanon) -> Option<Condition> {
        let clauses = match est.get("conditions") {
            None => Vec::new(),
            Some(Json::Array(items)) => items
                .iter()
                .map(|c| {
                    let when = match c.get("kind")?.as_str()? {
                        "when" => true,
                        "unless" => false,
                        _ => return None,
                    };
                    let mut body = compile(c.get("body")?)?;
                    body.share_types(types);
                    Some((when, body))
                })
                .collect::<Option<_>>()?,
            Some(_) => return None,
        };
        Some(Condition { clauses })
    }

    /// Whether the conditions hold for the request of `env` (its scope matched).
    pub(crate) fn holds(&self, env: &Env<'_>) -> Out<bool> {
        for (when, body) in &self.clauses {
            // `unless { e }` is `!e`, which needs a boolean as much as `when` does.
            if eval_bool(body, env)? != *when {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn one_key(v: &Json) -> Option<(&str, &Json)> {
    let map = v.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn boxed(v: Option<&Json>) -> Option<Box<Expr>> {
    compile(v?).map(Box::new)
}

fn entity_type(name: &str) -> Option<EntityType> {
    let name = EntityTypeName::from_str(name).ok()?;
    let core: &EntityType = name.as_ref();
    Some(core.clone())
}

fn compile(v: &Json) -> Option<Expr> {
    let (key, arg) = one_key(v)?;
    let left = || boxed(arg.get("left"));
    let right = || boxed(arg.get("right"));
    let bin = |op| Some(Expr::Bin(op, left()?, right()?));
    match key {
        "Value" => literal(arg).map(Expr::Lit),
        "Var" => match arg.as_str()? {
            "principal" => Some(Expr::Principal),
            "action" => Some(Expr::Action),
            "resource" => Some(Expr::Resource),
            "context" => Some(Expr::Context),
            _ => None,
        },
        "!" => Some(Expr::Not(boxed(arg.get("arg"))?)),
        "neg" => Some(Expr::Neg(boxed(arg.get("arg"))?)),
        "&&" => Some(Expr::And(left()?, right()?)),
        "||" => Some(Expr::Or(left()?, right()?)),
        "==" => bin(Op::Eq),
        "!=" => bin(Op::Ne),
        "<" => bin(Op::Lt),
        "<=" => bin(Op::Le),
        ">" => bin(Op::Gt),
        ">=" => bin(Op::Ge),
        "+" => bin(Op::Add),
        "-" => bin(Op::Sub),
        "*" => bin(Op::Mul),
        "in" => bin(Op::In),
        "contains" => bin(Op::Contains),
        "containsAll" => bin(Op::ContainsAll),
        "containsAny" => bin(Op::ContainsAny),
        "getTag" => bin(Op::GetTag),
        "hasTag" => bin(Op::HasTag),
        "isEmpty" => Some(Expr::IsEmpty(boxed(arg.get("arg"))?)),
        "." => Some(Expr::Attr(
            left()?,
            SmolStr::from(arg.get("attr")?.as_str()?),
        )),
        "has" => {
            let chain = match arg.get("attr")? {
                Json::String(a) => vec![SmolStr::from(a.as_str())],
                Json::Array(items) => items
                    .iter()
                    .map(|a| a.as_str().map(SmolStr::from))
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            if chain.is_empty() {
                return None;
            }
            Some(Expr::Has(left()?, chain))
        }
        "is" => {
            let ty = entity_type(arg.get("entity_type")?.as_str()?)?;
            let within = match arg.get("in") {
                None => None,
                Some(e) => Some(Box::new(compile(e)?)),
            };
            Some(Expr::Is(left()?, ty, within))
        }
        "if-then-else" => Some(Expr::If(
            boxed(arg.get("if"))?,
            boxed(arg.get("then"))?,
            boxed(arg.get("else"))?,
        )),
        "Set" => Some(Expr::Set(
            arg.as_array()?.iter().map(compile).collect::<Option<_>>()?,
        )),
        "Record" => Some(Expr::Record(
            arg.as_object()?
                .iter()
                .map(|(k, v)| Some((SmolStr::from(k.as_str()), compile(v)?)))
                .collect::<Option<_>>()?,
        )),
        // `like`, extension functions, slots: Cedar evaluates them.
        _ => None,
    }
}

/// A literal of the JSON policy format (Cedar's JSON value format).
fn literal(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Bool(b) => boolean(*b),
        Json::Number(n) => lit(Literal::Long(n.as_i64()?)),
        Json::String(s) => lit(Literal::String(SmolStr::from(s.as_str()))),
        Json::Array(items) => {
            Value::set(items.iter().map(literal).collect::<Option<Vec<_>>>()?, None)
        }
        Json::Object(map) => {
            if let Some(e) = map.get("__entity") {
                if map.len() != 1 {
                    return None;
                }
                let ty = entity_type(e.get("type")?.as_str()?)?;
                let id = ast::Eid::new(e.get("id")?.as_str()?);
                lit(Literal::EntityUID(Arc::new(EntityUID::from_components(
                    ty, id, None,
                ))))
            } else if map.contains_key("__extn") || map.contains_key("__expr") {
                return None;
            } else {
                Value::record(
                    map.iter()
                        .map(|(k, v)| Some((SmolStr::from(k.as_str()), literal(v)?)))
                        .collect::<Option<Vec<_>>>()?,
                    None,
                )
            }
        }
        Json::Null => return None,
    })
}

/// An entity of the request whose ancestors the caller already read.
pub(crate) trait Known {
    fn uid(&self) -> &EntityUid;
    /// The entity in the data (`None`: the data does not hold it).
    fn entity(&self) -> Out<Option<&ast::Entity>>;
    /// Cedar's `X in E` for this entity `X`.
    fn is_in(&self, e: &EntityUID) -> bool;
}

/// What a condition is evaluated against: the request, its entity data, and the
/// ancestors of its principal, action and resource.
pub(crate) struct Env<'a> {
    known: [&'a dyn Known; 3],
    request: &'a ast::Request,
    /// The principal, action and resource as values, made when first read.
    vars: [std::cell::OnceCell<Value>; 3],
    /// `None` for a context with unknowns (partial evaluation).
    context: Option<Value>,
    data: Lookup<'a>,
    /// Entities looked up so far: conditions read the same few entities over and
    /// over, and a comparison costs less than hashing a uid again.
    seen: RefCell<Vec<(EntityUID, Option<&'a ast::Entity>)>>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(
        principal: &'a dyn Known,
        action: &'a dyn Known,
        resource: &'a dyn Known,
        request: &'a Request,
        data: Lookup<'a>,
    ) -> Self {
        let context = request.context().and_then(|c| match c.as_ref() {
            ast::Context::Value(map) => Some(Value::record_arc(Arc::clone(map), None)),
            ast::Context::RestrictedResidual(_) => None,
        });
        Self {
            vars: Default::default(),
            known: [principal, action, resource],
            request: request.as_ref(),
            context,
            data,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// The principal, action or resource when it is `uid`.
    fn known_as(&self, uid: &EntityUID) -> Option<&'a dyn Known> {
        self.known
            .into_iter()
            .find(|k| same_uid(k.uid().as_ref(), uid))
    }

    /// The entity `uid` in the data; `None` if the data does not hold it.
    fn entity(&self, uid: &EntityUID) -> Out<Option<&'a ast::Entity>> {
        if let Some(known) = self.known_as(uid) {
            return known.entity();
        }
        if let Some((_, e)) = self.seen.borrow().iter().find(|(u, _)| same_uid(u, uid)) {
            return Ok(*e);
        }
        let found = self.data.entity(uid).map_err(|_| GiveUp)?;
        self.seen.borrow_mut().push((uid.clone(), found));
        Ok(found)
    }

    /// `principal`, `action` or `resource` (0, 1, 2) as a value.
    fn var(&self, at: usize) -> Out<&Value> {
        let (Some(cell), Some(known)) = (self.vars.get(at), self.known.get(at)) else {
            return Err(GiveUp);
        };
        Ok(cell.get_or_init(|| {
            let entry = match at {
                0 => self.request.principal(),
                1 => self.request.action(),
                _ => self.request.resource(),
            };
            match entry {
                // The request's own uid, shared rather than copied.
                ast::EntityUIDEntry::Known { euid, .. } if same_uid(euid, known.uid().as_ref()) => {
                    lit(Literal::EntityUID(Arc::clone(euid)))
                }
                _ => entity_value(known.uid()),
            }
        }))
    }

    /// The entity of `principal`, `action` or `resource` when `e` is one of them.
    fn var_entity(&self, e: &Expr) -> Option<Out<Option<&'a ast::Entity>>> {
        let at = match e {
            Expr::Principal => 0,
            Expr::Action => 1,
            Expr::Resource => 2,
            _ => return None,
        };
        self.known.get(at).map(|k| k.entity())
    }

    /// Cedar's `x in y` for entities.
    fn is_in(&self, x: &EntityUID, y: &EntityUID) -> Out<bool> {
        if let Some(known) = self.known_as(x) {
            return Ok(known.is_in(y));
        }
        Ok(same_uid(x, y) || self.entity(x)?.is_some_and(|e| e.is_descendant_of(y)))
    }
}

/// A value read where it lies (a literal, an entity's attribute, the context) or
/// computed.
type Val<'v> = Cow<'v, Value>;

fn owned<'v>(v: Value) -> Out<Val<'v>> {
    Ok(Cow::Owned(v))
}

fn eval<'v, 'a: 'v>(e: &'v Expr, env: &'v Env<'a>) -> Out<Val<'v>> {
    match e {
        Expr::Lit(v) => Ok(Cow::Borrowed(v)),
        Expr::Principal => env.var(0).map(Cow::Borrowed),
        Expr::Action => env.var(1).map(Cow::Borrowed),
        Expr::Resource => env.var(2).map(Cow::Borrowed),
        Expr::Context => env.context.as_ref().map(Cow::Borrowed).ok_or(GiveUp),
        Expr::Not(_)
        | Expr::And(..)
        | Expr::Or(..)
        | Expr::IsEmpty(_)
        | Expr::Has(..)
        | Expr::Is(..) => owned(boolean(eval_bool(e, env)?)),
        Expr::Neg(a) => owned(lit(Literal::Long(
            as_long(&*eval(a, env)?)?.checked_neg().ok_or(GiveUp)?,
        ))),
        Expr::If(c, t, f) => {
            if eval_bool(c, env)? {
                eval(t, env)
            } else {
                eval(f, env)
            }
        }
        Expr::Bin(op, a, b) => {
            let x = eval(a, env)?;
            let y = eval(b, env)?;
            match op {
                Op::Add => long(i64::checked_add, &x, &y),
                Op::Sub => long(i64::checked_sub, &x, &y),
                Op::Mul => long(i64::checked_mul, &x, &y),
                Op::GetTag => get_tag(&x, &y, env),
                _ => owned(boolean(binary(*op, &x, &y, env)?)),
            }
        }
        Expr::Attr(a, attr) => match env.var_entity(a) {
            // `principal.attr` and the like: the request's entity is at hand.
            Some(entity) => match entity?.and_then(|e| e.get(attr)) {
                Some(PartialValue::Value(v)) => Ok(Cow::Borrowed(v)),
                _ => Err(GiveUp),
            },
            None => match eval(a, env)? {
                Cow::Borrowed(v) => attribute(v, attr, env),
                Cow::Owned(v) => attribute(&v, attr, env).map(|v| Cow::Owned(v.into_owned())),
            },
        },
        Expr::Set(items) => owned(Value::set(
            items
                .iter()
                .map(|i| eval(i, env).map(Cow::into_owned))
                .collect::<Out<Vec<_>>>()?,
            None,
        )),
        Expr::Record(fields) => owned(Value::record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), eval(v, env)?.into_owned())))
                .collect::<Out<Vec<_>>>()?,
            None,
        )),
    }
}

/// [`eval`] of an expression that must be a boolean (a clause, an operand of `&&`,
/// `||`, `!`, a condition of `if`), without making a value of it: the same rules,
/// and `GiveUp` wherever the value would not be a boolean.
fn eval_bool(e: &Expr, env: &Env<'_>) -> Out<bool> {
    match e {
        Expr::Not(a) => Ok(!eval_bool(a, env)?),
        // `&&` and `||` short-circuit, and require booleans on both sides they read.
        Expr::And(a, b) => Ok(eval_bool(a, env)? && eval_bool(b, env)?),
        Expr::Or(a, b) => Ok(eval_bool(a, env)? || eval_bool(b, env)?),
        Expr::If(c, t, f) => {
            if eval_bool(c, env)? {
                eval_bool(t, env)
            } else {
                eval_bool(f, env)
            }
        }
        Expr::Bin(op, a, b) if !matches!(op, Op::Add | Op::Sub | Op::Mul | Op::GetTag) => {
            let x = eval(a, env)?;
            let y = eval(b, env)?;
            binary(*op, &x, &y, env)
        }
        Expr::IsEmpty(a) => Ok(as_set(&*eval(a, env)?)?.is_empty()),
        Expr::Has(a, chain) => match (env.var_entity(a), chain.split_first()) {
            (Some(entity), Some((first, rest))) => match entity?.map(|e| e.get(first)) {
                // The data does not hold the entity, or it lacks the attribute.
                None | Some(None) => Ok(false),
                Some(Some(PartialValue::Value(v))) => has(v, rest, env),
                Some(Some(PartialValue::Residual(_))) => Err(GiveUp),
            },
            _ => has(&*eval(a, env)?, chain, env),
        },
        Expr::Is(a, ty, within) => {
            let x = eval(a, env)?;
            if as_entity(&x)?.entity_type() != ty {
                Ok(false)
            } else {
                match within {
                    None => Ok(true),
                    Some(w) => binary(Op::In, &x, &*eval(w, env)?, env),
                }
            }
        }
        _ => as_bool(&*eval(e, env)?),
    }
}

/// `x + y`, `x - y`, `x * y` on longs; overflow is an error.
fn long<'v>(f: fn(i64, i64) -> Option<i64>, x: &Value, y: &Value) -> Out<Val<'v>> {
    owned(lit(Literal::Long(
        f(as_long(x)?, as_long(y)?).ok_or(GiveUp)?,
    )))
}

/// `x.getTag(y)`: a tag of an entity the data holds; a missing one is an error.
fn get_tag<'v>(x: &Value, y: &Value, env: &Env<'_>) -> Out<Val<'v>> {
    let uid = as_entity(x)?;
    let ValueKind::Lit(Literal::String(tag)) = &y.value else {
        return Err(GiveUp);
    };
    match env.entity(uid)?.map(|e| e.get_tag(tag)) {
        Some(Some(PartialValue::Value(v))) => owned(v.clone()),
        _ => Err(GiveUp),
    }
}

/// The boolean binary operators: comparisons, `in`, the set tests, `hasTag`.
fn binary(op: Op, x: &Value, y: &Value, env: &Env<'_>) -> Out<bool> {
    Ok(match op {
        // Cedar's own equality of values (source locations ignored).
        Op::Eq => same_value(x, y),
        Op::Ne => !same_value(x, y),
        Op::Lt => as_long(x)? < as_long(y)?,
        Op::Le => as_long(x)? <= as_long(y)?,
        Op::Gt => as_long(x)? > as_long(y)?,
        Op::Ge => as_long(x)? >= as_long(y)?,
        Op::In => {
            let x = as_entity(x)?;
            match &y.value {
                ValueKind::Lit(Literal::EntityUID(y)) => env.is_in(x, y)?,
                ValueKind::Set(items) => {
                    // Cedar requires every element to be an entity before it looks.
                    let uids = items
                        .authoritative
                        .iter()
                        .map(as_entity)
                        .collect::<Out<Vec<_>>>()?;
                    let mut found = false;
                    for y in uids {
                        if env.is_in(x, y)? {
                            found = true;
                            break;
                        }
                    }
                    found
                }
                _ => return Err(GiveUp),
            }
        }
        Op::Contains => as_set(x)?.contains(y),
        Op::ContainsAll => as_set(y)?.is_subset(as_set(x)?),
        Op::ContainsAny => !as_set(x)?.is_disjoint(as_set(y)?),
        Op::HasTag => {
            let uid = as_entity(x)?;
            let ValueKind::Lit(Literal::String(tag)) = &y.value else {
                return Err(GiveUp);
            };
            env.entity(uid)?.is_some_and(|e| e.get_tag(tag).is_some())
        }
        // Not boolean: [`eval`] computes them.
        Op::Add | Op::Sub | Op::Mul | Op::GetTag => return Err(GiveUp),
    })
}

/// `v.attr`: a record's field or an entity's attribute; a missing one is an error.
fn attribute<'v, 'a: 'v>(v: &'v Value, attr: &str, env: &Env<'a>) -> Out<Val<'v>> {
    match &v.value {
        ValueKind::Record(fields) => fields.get(attr).map(Cow::Borrowed).ok_or(GiveUp),
        ValueKind::Lit(Literal::EntityUID(uid)) => {
            match env.entity(uid)?.and_then(|e| e.get(attr)) {
                Some(PartialValue::Value(v)) => Ok(Cow::Borrowed(v)),
                _ => Err(GiveUp),
            }
        }
        _ => Err(GiveUp),
    }
}

/// `v has x.y.z`: each step present, short-circuiting at the first absent one.
fn has<'v, 'a: 'v>(v: &'v Value, chain: &[SmolStr], env: &Env<'a>) -> Out<bool> {
    let mut current = v;
    for attr in chain {
        let next = match &current.value {
            ValueKind::Record(fields) => fields.get(attr),
            ValueKind::Lit(Literal::EntityUID(uid)) => {
                match env.entity(uid)?.and_then(|e| e.get(attr)) {
                    None => None,
                    Some(PartialValue::Value(v)) => Some(v),
                    Some(PartialValue::Residual(_)) => return Err(GiveUp),
                }
            }
            _ => return Err(GiveUp),
        };
        match next {
            Some(v) => current = v,
            None => return Ok(false),
        }
    }
    Ok(true)
}
