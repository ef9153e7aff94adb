//! The decision: a request in domain terms, checked against the schema, evaluated by
//! Cedar. No I/O happens here; entities arrive from the caller.
//!
//! Authorization never fails: evaluation problems travel as diagnostics on a `Deny`
//! (or on an `Allow` decided by other policies), as in Cedar itself. Only a request
//! that is malformed for the schema is an error, and that is the caller's mistake.

use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request, RequestValidationError};

use crate::entities::{EntitySource, EntitySourceError};
use crate::policy::PolicySnapshot;

/// Which part of a request a problem is in; named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Principal,
    Action,
    Resource,
    Context,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Principal => "principal",
            Field::Action => "action",
            Field::Resource => "resource",
            Field::Context => "context",
        }
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
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("`{field}`: invalid entity uid `{input}`: {reason}", field = .field.name())]
    InvalidUid {
        field: Field,
        input: String,
        reason: String,
    },
    #[error("`{field}`: entity type `{type_name}` is not declared in the schema", field = .field.name())]
    UnknownEntityType { field: Field, type_name: String },
    #[error("`action`: action `{0}` is not declared in the schema")]
    UnknownAction(String),
    #[error("`{field}`: {message}", field = .field.name())]
    NotInSchema { field: Field, message: String },
    #[error("`context`: {0}")]
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
}

/// A request checked against the schema.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub request: Request,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub reasons: Vec<String>,
    /// Problems met while deciding, as messages.
    pub errors: Vec<String>,
    /// True when entity data could not be read at all (the store is down); the
    /// decision is then a deny that says so.
    pub source_unavailable: bool,
}

impl Decision {
    pub fn deny_with_error(message: String, source_unavailable: bool) -> Self {
        Self {
            allowed: false,
            reasons: Vec::new(),
            errors: vec![message],
            source_unavailable,
        }
    }
}

fn parse_uid(field: Field, input: &str) -> Result<EntityUid, RequestError> {
    EntityUid::from_str(input).map_err(|e| RequestError::InvalidUid {
        field,
        input: input.to_string(),
        reason: e.to_string(),
    })
}

/// Checks a raw request against the snapshot's schema.
pub fn check(snapshot: &PolicySnapshot, raw: &RawRequest) -> Result<CheckedRequest, RequestError> {
    let principal = parse_uid(Field::Principal, &raw.principal)?;
    let action = parse_uid(Field::Action, &raw.action)?;
    let resource = parse_uid(Field::Resource, &raw.resource)?;
    check_uids(snapshot, principal, action, resource, raw.context.clone())
}

/// Checks parsed uids and a JSON context against the snapshot's schema.
pub fn check_uids(
    snapshot: &PolicySnapshot,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Option<serde_json::Value>,
) -> Result<CheckedRequest, RequestError> {
    let schema = &snapshot.schema;
    let declared = |uid: &EntityUid| schema.entity_types().any(|t| t == uid.type_name());
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
    if !schema.actions().any(|a| a == &action) {
        return Err(RequestError::UnknownAction(action.to_string()));
    }
    let context = match context {
        None | Some(serde_json::Value::Null) => Context::empty(),
        Some(v) => Context::from_json_value(v, Some((schema, &action)))
            .map_err(|e| RequestError::InvalidContext(crate::error_chain(&e)))?,
    };
    let request = Request::new(
        principal.clone(),
        action.clone(),
        resource.clone(),
        context,
        Some(schema),
    )
    .map_err(|e| request_error(&e))?;
    Ok(CheckedRequest {
        principal,
        action,
        resource,
        request,
    })
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

/// Evaluates a checked request. Total: never panics, never errors.
pub fn decide(
    snapshot: &PolicySnapshot,
    request: &CheckedRequest,
    entities: &Entities,
) -> Decision {
    let response = Authorizer::new().is_authorized(&request.request, &snapshot.policies, entities);
    let allowed = response.decision() == cedar_policy::Decision::Allow;
    let reasons = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    let errors = response
        .diagnostics()
        .errors()
        .map(|e| crate::error_chain(e))
        .collect();
    Decision {
        allowed,
        reasons,
        errors,
        source_unavailable: false,
    }
}

/// Fetches the entities a checked request needs and decides. Missing or unreadable
/// data denies.
pub async fn decide_with(
    snapshot: &PolicySnapshot,
    source: &Arc<dyn EntitySource>,
    request: &CheckedRequest,
) -> Decision {
    let uids = [request.principal.clone(), request.resource.clone()];
    match source.entities_for(&uids, snapshot).await {
        Ok(entities) => decide(snapshot, request, &entities),
        Err(e) => {
            let unavailable = matches!(e, EntitySourceError::Unavailable(_));
            Decision::deny_with_error(e.to_string(), unavailable)
        }
    }
}
