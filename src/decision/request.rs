//! Requests in domain terms, checked against the snapshot's schema. A request that
//! is malformed for the schema is the caller's mistake, a [`RequestError`]; its message
//! names the field in the caller's own vocabulary ([`FieldNames`]).

use std::str::FromStr;

use cedar_policy::{
    Context, EntityId, EntityUid, Request, RequestValidationError, RestrictedExpression,
};

use crate::model::snapshot::{ContextShape, ValueKind};
use crate::model::Snapshot;

/// Which part of a request a problem is in; named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Principal,
    Action,
    Resource,
    Context,
}

/// What each API calls the parts of a request: Cedar's names on the Cedar-native API
/// and the gateway, AuthZEN's on AuthZEN (`subject` for the principal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldNames {
    pub principal: &'static str,
    pub action: &'static str,
    pub resource: &'static str,
    pub context: &'static str,
}

/// Cedar's names.
pub const CEDAR_NAMES: FieldNames = FieldNames {
    principal: "principal",
    action: "action",
    resource: "resource",
    context: "context",
};

/// AuthZEN's names.
pub const AUTHZEN_NAMES: FieldNames = FieldNames {
    principal: "subject",
    action: "action",
    resource: "resource",
    context: "context",
};

impl Field {
    /// The field's name in an API's vocabulary.
    pub fn name_in(self, names: &FieldNames) -> &'static str {
        match self {
            Field::Principal => names.principal,
            Field::Action => names.action,
            Field::Resource => names.resource,
            Field::Context => names.context,
        }
    }

    /// The field's Cedar name.
    pub fn name(self) -> &'static str {
        self.name_in(&CEDAR_NAMES)
    }
}

/// A request whose parts are not yet checked: uids in Cedar string syntax and a JSON
/// context.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub context: Option<serde_json::Value>,
}

/// Why a request cannot be decided. Each is the caller's mistake.
#[derive(Debug, Clone)]
pub enum RequestError {
    InvalidUid {
        field: Field,
        input: String,
        reason: String,
    },
    UnknownEntityType {
        field: Field,
        type_name: String,
    },
    UnknownAction(String),
    NotInSchema {
        field: Field,
        message: String,
    },
    InvalidContext(String),
}

impl RequestError {
    /// The stable error code of the API.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidUid { .. } => "invalid_uid",
            RequestError::UnknownEntityType { .. } => "unknown_entity_type",
            RequestError::UnknownAction(_) => "unknown_action",
            RequestError::NotInSchema { .. } => "request_not_in_schema",
            RequestError::InvalidContext(_) => "invalid_context",
        }
    }

    /// The message, naming the field as the API in `names` calls it.
    pub fn message(&self, names: &FieldNames) -> String {
        match self {
            RequestError::InvalidUid {
                field,
                input,
                reason,
            } => format!(
                "`{}`: invalid entity uid `{input}`: {reason}",
                field.name_in(names)
            ),
            RequestError::UnknownEntityType { field, type_name } => format!(
                "`{}`: entity type `{type_name}` is not declared in the schema",
                field.name_in(names)
            ),
            RequestError::UnknownAction(action) => format!(
                "`{}`: action `{action}` is not declared in the schema",
                names.action
            ),
            RequestError::NotInSchema { field, message } => {
                format!("`{}`: {message}", field.name_in(names))
            }
            RequestError::InvalidContext(message) => format!("`{}`: {message}", names.context),
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message(&CEDAR_NAMES))
    }
}

impl std::error::Error for RequestError {}

/// A request checked against the schema.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    /// The principal and the resource: the entities a decision reads first, in the
    /// slice form the entity sources take.
    roots: [EntityUid; 2],
    action: EntityUid,
    pub request: Request,
}

impl CheckedRequest {
    pub fn principal(&self) -> &EntityUid {
        let [principal, _] = &self.roots;
        principal
    }

    pub fn action(&self) -> &EntityUid {
        &self.action
    }

    pub fn resource(&self) -> &EntityUid {
        let [_, resource] = &self.roots;
        resource
    }

    /// The principal and the resource.
    pub fn roots(&self) -> &[EntityUid] {
        &self.roots
    }
}

/// Reads a uid in Cedar string syntax. The common form, `Type::"id"` with a type of
/// the schema and an id without escapes, is read by a lookup in the snapshot's type
/// names; anything else (whitespace, escapes, unknown types, malformed input) goes
/// through Cedar's parser, which gives the same uid or the error.
pub fn parse_uid(
    snapshot: &Snapshot,
    field: Field,
    input: &str,
) -> Result<EntityUid, RequestError> {
    if let Some(uid) = plain_uid(snapshot, input) {
        return Ok(uid);
    }
    EntityUid::from_str(input).map_err(|e| RequestError::InvalidUid {
        field,
        input: input.to_string(),
        reason: e.to_string(),
    })
}

/// `Type::"id"` where `Type` is written exactly as the schema names it and `id` is
/// printable ASCII without quotes or backslashes: text Cedar would write unescaped, so
/// it is the id itself and already in the normalised form Cedar's parser demands.
fn plain_uid(snapshot: &Snapshot, input: &str) -> Option<EntityUid> {
    // The first quote, which must follow `::` (a byte search: no substring searcher
    // set up per uid).
    let quote = input.bytes().position(|b| b == b'"')?;
    let ty = input.get(..quote)?.strip_suffix("::")?;
    let id = input.get(quote + 1..)?.strip_suffix('"')?;
    plain_uid_parts(snapshot, ty, id)
}

/// The uid `Type::"id"` from its two parts as they are written, on the terms of
/// [`plain_uid`]: `None` unless `ty` is a type of the schema written exactly as the
/// schema names it and `id` is printable ASCII without quotes or backslashes.
pub fn plain_uid_parts(snapshot: &Snapshot, ty: &str, id: &str) -> Option<EntityUid> {
    if !is_plain(id) {
        return None;
    }
    let ty = snapshot.type_named(ty)?;
    Some(EntityUid::from_type_name_and_id(
        ty.clone(),
        EntityId::new(id),
    ))
}

/// Whether Cedar writes `text` as it is inside quotes (Rust's `escape_debug` leaves
/// it unchanged): printable ASCII and spaces, without quotes or backslashes.
pub fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (b.is_ascii_graphic() || b == b' ') && !matches!(b, b'"' | b'\\' | b'\''))
}

/// `uid` as Cedar's `Display` writes it (`Type::"id"`), without the formatting
/// machinery for an id [`is_plain`] holds.
pub fn uid_text(uid: &EntityUid) -> String {
    let id = uid.id().unescaped();
    if !is_plain(id) {
        return uid.to_string();
    }
    let ty = uid.type_name();
    let mut out = String::with_capacity(48);
    for part in ty.namespace_components() {
        out.push_str(part);
        out.push_str("::");
    }
    out.push_str(ty.basename());
    out.push_str("::\"");
    out.push_str(id);
    out.push('"');
    out
}

/// Checks a raw request against the snapshot's schema.
pub fn check(snapshot: &Snapshot, raw: &RawRequest) -> Result<CheckedRequest, RequestError> {
    let principal = parse_uid(snapshot, Field::Principal, &raw.principal)?;
    let action = parse_uid(snapshot, Field::Action, &raw.action)?;
    let resource = parse_uid(snapshot, Field::Resource, &raw.resource)?;
    check_uids(snapshot, principal, action, resource, raw.context.clone())
}

/// Checks parsed uids and a JSON context against the snapshot's schema.
pub fn check_uids(
    snapshot: &Snapshot,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Option<serde_json::Value>,
) -> Result<CheckedRequest, RequestError> {
    check_uids_with(
        snapshot,
        principal,
        action,
        resource,
        |schema, action| match context {
            // The common `{}` too: Cedar's JSON reader would first try it as an
            // extension value and build the errors of that attempt.
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Object(m)) if m.is_empty() => Ok(None),
            Some(v) => Context::from_json_value(v, Some((schema, action)))
                .map(Some)
                .map_err(|e| RequestError::InvalidContext(crate::error_chain(&e))),
        },
    )
}

/// Checks parsed uids and a context built from typed values (what a surface that
/// computes its own context, the gateway, hands over: no JSON to read) against the
/// snapshot's schema, which types the context when the request is built.
pub fn check_uids_with_pairs(
    snapshot: &Snapshot,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    pairs: Vec<(String, RestrictedExpression)>,
) -> Result<CheckedRequest, RequestError> {
    check_uids_with(snapshot, principal, action, resource, |_, _| {
        Context::from_pairs(pairs)
            .map(Some)
            .map_err(|e| RequestError::InvalidContext(crate::error_chain(&e)))
    })
}

fn check_uids_with(
    snapshot: &Snapshot,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: impl FnOnce(&cedar_policy::Schema, &EntityUid) -> Result<Option<Context>, RequestError>,
) -> Result<CheckedRequest, RequestError> {
    let schema = &snapshot.schema;
    // Accepted with an empty context for any ids: then the schema declares the types
    // and the action as well, and the three lookups below are skipped.
    let accepted =
        snapshot
            .empty_context
            .accepts(principal.type_name(), &action, resource.type_name());
    if !accepted {
        let declared = |uid: &EntityUid| snapshot.declares_type(uid.type_name());
        if !declared(&principal) {
            return Err(RequestError::UnknownEntityType {
                field: Field::Principal,
                type_name: principal.type_name().to_string(),
            });
        }
        if !declared(&resource) {
            return Err(RequestError::UnknownEntityType {
                field: Field::Resource,
                type_name: resource.type_name().to_string(),
            });
        }
        if !snapshot.declares_action(&action) {
            return Err(RequestError::UnknownAction(action.to_string()));
        }
    }
    // `None`: the empty context. Requests the schema accepts with it for any ids were
    // found at compile time; validating one again would change nothing. Nor would
    // validating a context whose shape the schema accepted for this action before
    // (`model::snapshot::ContextShapes`).
    let context = context(schema, &action)?;
    let shape = match &context {
        Some(c)
            if accepted
                || snapshot.empty_context.scope_accepts(
                    principal.type_name(),
                    &action,
                    resource.type_name(),
                ) =>
        {
            context_shape(c)
        }
        _ => None,
    };
    let validated = match (&context, &shape) {
        (None, _) => accepted,
        (Some(_), Some(shape)) => snapshot.context_shapes.accepted(&action, shape),
        (Some(_), None) => false,
    };
    let request = Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context.unwrap_or_else(Context::empty),
        (!validated).then_some(schema),
    )
    .map_err(|e| request_error(&e))?;
    if let (false, Some(shape)) = (validated, shape) {
        snapshot.context_shapes.accept(&action, shape);
    }
    Ok(CheckedRequest {
        roots: [principal, resource],
        action,
        request,
    })
}

/// The shape of a context whose values are all booleans, longs, strings or extension
/// values; `None` for any other (an entity, a set, a record, unknowns).
fn context_shape(context: &Context) -> Option<ContextShape> {
    use cedar_policy_core::ast::{self, Literal};
    let ast::Context::Value(map) = context.as_ref() else {
        return None;
    };
    map.iter()
        .map(|(key, value)| {
            let kind = match &value.value {
                ast::ValueKind::Lit(Literal::Bool(_)) => ValueKind::Bool,
                ast::ValueKind::Lit(Literal::Long(_)) => ValueKind::Long,
                ast::ValueKind::Lit(Literal::String(_)) => ValueKind::String,
                ast::ValueKind::ExtensionValue(e) => ValueKind::Extension(e.typename()),
                _ => return None,
            };
            Some((key.clone(), kind))
        })
        .collect()
}

fn request_error(e: &RequestValidationError) -> RequestError {
    let message = crate::error_chain(e);
    match e {
        RequestValidationError::UndeclaredAction(_) | RequestValidationError::ExternalAction(_) => {
            RequestError::NotInSchema {
                field: Field::Action,
                message,
            }
        }
        RequestValidationError::UndeclaredPrincipalType(_)
        | RequestValidationError::InvalidPrincipalType(_) => RequestError::NotInSchema {
            field: Field::Principal,
            message,
        },
        RequestValidationError::UndeclaredResourceType(_)
        | RequestValidationError::InvalidResourceType(_) => RequestError::NotInSchema {
            field: Field::Resource,
            message,
        },
        RequestValidationError::InvalidContext(_) | RequestValidationError::TypeOfContext(_) => {
            RequestError::InvalidContext(message)
        }
        _ => RequestError::NotInSchema {
            field: Field::Context,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{compile::compile, source::Sources};

    /// The embedded model with `schema` in place of its own and one policy that
    /// permits everything (no links, routes or data).
    fn with_schema(schema: &str) -> Snapshot {
        let mut sources = Sources::embedded();
        sources.schema = crate::model::SourceFile::new("s.cedarschema", schema);
        sources.policies = vec![crate::model::SourceFile::new(
            "p.cedar",
            "permit (principal, action, resource);",
        )];
        sources.links = None;
        sources.routes = None;
        sources.entities = None;
        compile(&sources).unwrap()
    }

    /// A request with an empty context skips Cedar's schema validation only where the
    /// schema accepts that action and those types with any ids; every other empty-
    /// context request is still refused exactly as Cedar refuses it: a type that
    /// enumerates its ids, a pair of types the action does not apply to, a context
    /// with a required attribute.
    #[test]
    fn an_empty_context_skips_validation_only_where_it_cannot_fail() {
        let snapshot = with_schema(
            r#"
entity User;
entity Colour enum ["red", "green"];
entity Doc;
action paint appliesTo { principal: [User], resource: [Colour] };
action read appliesTo { principal: [User], resource: [Doc] };
action sign appliesTo { principal: [User], resource: [Doc], context: { pin: String } };
"#,
        );
        let uid = |s: &str| s.parse::<EntityUid>().unwrap();
        let ask = |p: &str, a: &str, r: &str| {
            check_uids(
                &snapshot,
                uid(p),
                uid(a),
                uid(r),
                Some(serde_json::json!({})),
            )
        };
        // Only `read` on a document is accepted whatever the ids.
        assert_eq!(
            snapshot.empty_context.len(),
            1,
            "{:?}",
            snapshot.empty_context
        );
        assert!(ask(r#"User::"u""#, r#"Action::"read""#, r#"Doc::"d""#).is_ok());
        assert!(ask(r#"User::"u""#, r#"Action::"paint""#, r#"Colour::"red""#).is_ok());
        let refused = [
            (r#"User::"u""#, r#"Action::"paint""#, r#"Colour::"blue""#),
            (r#"User::"u""#, r#"Action::"read""#, r#"Colour::"red""#),
            (r#"Doc::"d""#, r#"Action::"read""#, r#"Doc::"d""#),
            (r#"User::"u""#, r#"Action::"sign""#, r#"Doc::"d""#),
        ];
        for (p, a, r) in refused {
            let error = ask(p, a, r).expect_err(&format!("{p} {a} {r}"));
            assert!(
                matches!(
                    error,
                    RequestError::NotInSchema { .. } | RequestError::InvalidContext(_)
                ),
                "{p} {a} {r}: {error:?}"
            );
        }
    }

    /// A context whose shape the schema accepted before is not checked again, and
    /// the answer is still Cedar's: every context below, asked twice and in an order
    /// that first accepts a shape, then sends the same keys with other kinds, more or
    /// fewer keys, is accepted or refused exactly as Cedar's validation does.
    #[test]
    fn a_context_shape_accepted_once_is_accepted_as_cedar_would() {
        let snapshot = with_schema(
            r#"
entity User;
entity Doc;
action sign appliesTo {
  principal: [User], resource: [Doc],
  context: { pin: String, n: Long, from?: ipaddr, urgent?: Bool }
};
"#,
        );
        let uid = |s: &str| s.parse::<EntityUid>().unwrap();
        let (p, a, r) = (
            uid(r#"User::"u""#),
            uid(r#"Action::"sign""#),
            uid(r#"Doc::"d""#),
        );
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let n = |v: i64| RestrictedExpression::new_long(v);
        let b = |v: bool| RestrictedExpression::new_bool(v);
        let ip = |v: &str| RestrictedExpression::new_ip(v);
        type Pairs = Vec<(&'static str, RestrictedExpression)>;
        let contexts: Vec<Pairs> = vec![
            vec![("pin", s("1234")), ("n", n(1))],
            vec![("pin", s("other")), ("n", n(-7))],
            vec![("pin", n(1234)), ("n", n(1))],
            vec![("pin", s("1234")), ("n", s("1"))],
            vec![("pin", s("1234")), ("n", b(true))],
            vec![("pin", s("1234"))],
            vec![("pin", s("1234")), ("n", n(1)), ("extra", s("x"))],
            vec![("pin", s("1234")), ("n", n(1)), ("from", ip("10.0.0.1"))],
            vec![("pin", s("1234")), ("n", n(1)), ("from", s("10.0.0.1"))],
            vec![("pin", s("1234")), ("n", n(1)), ("urgent", b(false))],
            vec![("pin", s("1234")), ("n", n(1)), ("urgent", n(0))],
            vec![
                ("pin", s("1234")),
                ("n", n(1)),
                ("from", ip("::1")),
                ("urgent", b(true)),
            ],
        ];
        for round in 0..2 {
            for pairs in &contexts {
                let owned = |pairs: &Pairs| -> Vec<(String, RestrictedExpression)> {
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect()
                };
                let cedar = cedar_policy::Context::from_pairs(owned(pairs))
                    .ok()
                    .map(|c| {
                        Request::new(p.clone(), a.clone(), r.clone(), c, Some(&snapshot.schema))
                            .is_ok()
                    });
                let ours =
                    check_uids_with_pairs(&snapshot, p.clone(), a.clone(), r.clone(), owned(pairs))
                        .is_ok();
                assert_eq!(Some(ours), cedar, "round {round}: {pairs:?}");
            }
        }
        // Four shapes were accepted (two keys; with `from`; with `urgent`; with both),
        // and each was kept once.
        assert_eq!(snapshot.context_shapes.len(), 4);
    }

    /// The shapes kept are bounded, however many distinct ones the schema accepts.
    #[test]
    fn kept_context_shapes_are_bounded() {
        use crate::model::snapshot::{ContextShapes, ValueKind};
        let shapes = ContextShapes::default();
        let action = EntityUid::from_str(r#"Action::"a""#).unwrap();
        let shape = |i: usize| vec![(smol_str::SmolStr::new(format!("k{i}")), ValueKind::Long)];
        for i in 0..ContextShapes::MAX + 100 {
            shapes.accept(&action, shape(i));
        }
        assert_eq!(shapes.len(), ContextShapes::MAX);
        assert!(shapes.accepted(&action, &shape(0)));
        assert!(!shapes.accepted(&action, &shape(ContextShapes::MAX)));
        // A shape kept again is kept once.
        let fresh = ContextShapes::default();
        fresh.accept(&action, shape(1));
        fresh.accept(&action, shape(1));
        assert_eq!(fresh.len(), 1);
    }

    /// A uid is written as `Display` writes it, plain or not.
    #[test]
    fn uids_are_written_as_display_writes_them() {
        let uids = [
            ("Portal::User", "bea"),
            ("User", "bea"),
            ("A::B::C", "x y"),
            ("Portal::User", ""),
            ("Portal::User", "it's"),
            ("Portal::User", "q\"uote"),
            ("Portal::User", "back\\slash"),
            ("Portal::User", "tab\there"),
            ("Portal::User", "é"),
        ];
        for (ty, id) in uids {
            let uid = EntityUid::from_type_name_and_id(ty.parse().unwrap(), EntityId::new(id));
            assert_eq!(uid_text(&uid), uid.to_string(), "{ty} {id}");
        }
    }

    /// The uid fast path gives exactly what Cedar's parser gives, or leaves the input
    /// to it: the same uid, or an error for the same inputs.
    #[test]
    fn the_plain_uid_path_agrees_with_cedars_parser() {
        let snapshot = compile(&Sources::embedded()).unwrap();
        let inputs = [
            r#"Portal::User::"bea""#,
            r#"Portal::Invoice::"inv-1001""#,
            r#"Portal::User::"with space""#,
            r#"Portal::User::"""#,
            r#"Portal::User::"a::b""#,
            r#"Portal::User::"tab\there""#,
            r#"Portal::User::"esc\"aped""#,
            r#"Portal::User::"it's""#,
            r#"Portal::User::"trailing" "#,
            r#" Portal::User::"leading""#,
            r#"Portal :: User::"spaced""#,
            r#"Portal::User::"bea"x"#,
            r#"Portal::User::"bea"""#,
            r#"Portal::Nope::"bea""#,
            r#"Nope::"bea""#,
            r#"User::"bea""#,
            r#""bea""#,
            r#"::"bea""#,
            r#"Portal::User"bea""#,
            r#"Portal::User::bea"#,
            r#"Portal::User::"é""#,
            "Portal::User::\"\u{7f}\"",
            "",
        ];
        for input in inputs {
            let cedar = EntityUid::from_str(input);
            let ours = parse_uid(&snapshot, Field::Principal, input);
            match (&cedar, &ours) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{input:?}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{input:?}: Cedar {cedar:?}, ours {ours:?}"),
            }
            if let Some(fast) = plain_uid(&snapshot, input) {
                assert_eq!(Ok(&fast), cedar.as_ref().map_err(|_| ()), "{input:?}");
            }
        }
        assert!(plain_uid(&snapshot, r#"Portal::User::"bea""#).is_some());
    }
}
