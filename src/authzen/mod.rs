//! AuthZEN Authorization API 1.0: the standard PDP interface over the Cedar engine.
//! No HTTP here: `http::authzen` reads bodies and writes answers, this module turns
//! the spec's shapes into checked Cedar requests and decides them through the one
//! pipeline, so AuthZEN and the Cedar-native API cannot disagree.
//!
//! - [`wire`]: the spec's request and response shapes, read with field-named errors.
//! - [`convert`]: AuthZEN values into Cedar's JSON value format by the schema's types.
//! - [`search`]: subject, resource and action search with opaque page tokens.
//! - [`token`]: the key that seals page tokens, so only this PDP's tokens resume.
//!
//! The mapping of AuthZEN names to Cedar names and the schema's types are part of the
//! model snapshot, checked against its schema and reloaded with it.

pub mod convert;
pub mod search;
pub mod token;
pub mod wire;

use cedar_policy::{EntityTypeName, EntityUid};
use serde_json::{Map, Value};

use crate::decision::{
    self, Call, CheckedRequest, Decision, Described, Outcome, RequestError, AUTHZEN_NAMES,
};
use crate::entities::EntitySource;
use crate::model::schema_types::Ty;
use crate::model::{Snapshot, UnknownActions};
use convert::{convert, convert_record, ConvertError};
use wire::{DecisionOut, EntityRef, Evaluation, EvaluationsRequest, Semantic, WireError};

/// The context key a caller sets to ask for reasons: `{"portcullis": {"explain":
/// true}}`. It is removed before the context reaches Cedar.
pub const CONTROL_KEY: &str = "portcullis";

/// Why an AuthZEN request cannot be answered. `http` chooses the status of each.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthzenError {
    /// The body does not have the spec's shape.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The request does not fit the schema (named with AuthZEN's field names).
    #[error("{}", .0.message(&AUTHZEN_NAMES))]
    Request(RequestError),
    #[error("`{field}.type`: `{ty}` is neither mapped to a Cedar entity type nor a type the schema declares")]
    UnknownType { field: String, ty: String },
    #[error("`{field}.name`: `{name}` is not an action of the schema")]
    UnknownAction { field: String, name: String },
    /// A value of the wrong type for the schema.
    #[error("{0}")]
    Convert(#[from] ConvertError),
    /// Described entities do not fit the schema.
    #[error("{0}")]
    InvalidProperties(String),
    /// A page token this PDP did not issue, or not for this request and model.
    #[error("`page.token`: {reason}")]
    InvalidPageToken { reason: &'static str },
    #[error("`evaluations` holds {count} evaluations; the limit is {limit}")]
    BatchTooLarge { count: usize, limit: usize },
    /// The entity store could not be reached; the decision is a Deny.
    #[error("{0}")]
    StoreUnavailable(String),
}

impl AuthzenError {
    /// The stable error code of the API.
    pub fn code(&self) -> &'static str {
        match self {
            AuthzenError::Wire(w) => w.code,
            AuthzenError::Request(r) => r.code(),
            AuthzenError::UnknownType { .. } => "unknown_entity_type",
            AuthzenError::UnknownAction { .. } => "unknown_action",
            AuthzenError::Convert(_) => "invalid_field",
            AuthzenError::InvalidProperties(_) => "invalid_properties",
            AuthzenError::InvalidPageToken { .. } => "invalid_page_token",
            AuthzenError::BatchTooLarge { .. } => "batch_too_large",
            AuthzenError::StoreUnavailable(_) => "entity_store_unavailable",
        }
    }

    /// The same error, its message prefixed with where it is (`evaluations[2]`).
    pub fn at(self, location: &str) -> (Self, String) {
        let message = format!("`{location}`: {self}");
        (self, message)
    }
}

/// The AuthZEN service's own settings and metrics; the mapping is in the snapshot.
pub struct Authzen {
    /// Base URL the discovery document advertises; when absent it is built from the
    /// request's `Host` and the listener's scheme.
    pub public_base_url: Option<String>,
    /// Seals and opens search page tokens.
    pub page_tokens: token::PageTokenKey,
    search_candidates: prometheus::IntCounterVec,
}

impl Authzen {
    /// Registers the service's metrics in `registry`.
    pub fn new(
        public_base_url: Option<String>,
        page_tokens: token::PageTokenKey,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        let search_candidates = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "portcullis_authzen_search_candidates_total",
                "Candidates evaluated by AuthZEN searches, by search endpoint.",
            ),
            &["search"],
        )?;
        registry.register(Box::new(search_candidates.clone()))?;
        Ok(Self {
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_string()),
            page_tokens,
            search_candidates,
        })
    }

    /// Counts candidates a search evaluated. `search` is `subject`, `resource` or
    /// `action`.
    pub fn count_candidates(&self, search: &str, n: usize) {
        self.search_candidates
            .with_label_values(&[search])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// Checks a public base URL: absolute `http`/`https`, no query or fragment (the spec's
/// PDP identifier).
pub fn check_public_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`--public-base-url` `{url}` must start with `https://` (or `http://`)")
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`--public-base-url` `{url}` has no host"));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(format!(
            "`--public-base-url` `{url}` must not have a query or fragment"
        ));
    }
    Ok(())
}

/// What the evaluations of one HTTP request share: the service, the snapshot it
/// loaded, the entity source and the call its decisions are recorded under.
pub struct Scope<'a> {
    pub az: &'a Authzen,
    pub snapshot: &'a Snapshot,
    pub source: &'a dyn EntitySource,
    pub call: &'a Call<'a>,
    /// Most evaluations in one batch.
    pub batch_limit: usize,
}

impl Scope<'_> {
    /// The Cedar type of an AuthZEN type.
    pub fn cedar_type(&self, ty: &str, field: &str) -> Result<EntityTypeName, AuthzenError> {
        self.snapshot
            .mapping
            .cedar_type(ty, &self.snapshot.schema)
            .ok_or_else(|| AuthzenError::UnknownType {
                field: field.to_string(),
                ty: ty.to_string(),
            })
    }

    /// The Cedar uid of a subject or resource with an id.
    pub fn uid(&self, r: &EntityRef, field: &str) -> Result<EntityUid, AuthzenError> {
        let ty = self.cedar_type(&r.ty, field)?;
        let id = r.id.as_deref().unwrap_or_default();
        Ok(EntityUid::from_type_name_and_id(
            ty,
            cedar_policy::EntityId::new(id),
        ))
    }

    /// Whether an unknown action name is answered as a deny (and an empty search)
    /// rather than a 400, as the mapping's `unknown_actions` says.
    pub fn unknown_actions_deny(&self) -> bool {
        self.snapshot.mapping.unknown_actions == UnknownActions::Deny
    }

    /// The answer to an evaluation of an unknown action (`e`, an
    /// [`AuthzenError::UnknownAction`]): a Deny with the reason in its context, recorded
    /// like every decision; or, with `unknown_actions: reject`, the error.
    fn unknown_action(&self, e: AuthzenError) -> Result<DecisionOut, AuthzenError> {
        if !self.unknown_actions_deny() {
            return Err(e);
        }
        let outcome = Outcome::Undecidable(e.to_string());
        self.call.record(None, &outcome);
        let mut context = Map::new();
        if let Some(reason) = outcome.decision().errors.into_iter().next() {
            context.insert("reason".into(), Value::from(reason));
        }
        Ok(DecisionOut {
            decision: false,
            context: Some(context),
        })
    }

    pub fn action(&self, a: &wire::Action, field: &str) -> Result<EntityUid, AuthzenError> {
        self.snapshot
            .mapping
            .cedar_action(&a.name, &self.snapshot.schema)
            .ok_or_else(|| AuthzenError::UnknownAction {
                field: field.to_string(),
                name: a.name.clone(),
            })
    }

    fn reference_type(&self) -> impl Fn(&str) -> String + '_ {
        |t: &str| self.snapshot.mapping.reference_type(t)
    }

    /// The Cedar context: the declared attributes of the request's context, converted
    /// by type, plus the action's properties under the configured key when the
    /// context type declares it.
    pub fn context(
        &self,
        action: &EntityUid,
        context: Option<&Map<String, Value>>,
        action_properties: Option<&Map<String, Value>>,
    ) -> Result<Value, AuthzenError> {
        let mut raw = context.cloned().unwrap_or_default();
        raw.remove(CONTROL_KEY);
        let ty = self.snapshot.types.context(action);
        let refs = self.reference_type();
        let mut out = match &ty {
            Ty::Record(attrs) => convert_record(&raw, attrs, "context", &refs)?,
            _ => raw,
        };
        if let (Some(props), Ty::Record(attrs)) = (action_properties, &ty) {
            let key = &self.snapshot.mapping.action_properties_key;
            if let Some(attr) = attrs.get(key) {
                let value = convert(
                    &Value::Object(props.clone()),
                    &attr.ty,
                    "action.properties",
                    &refs,
                )?;
                out.insert(key.clone(), value);
            }
        }
        Ok(Value::Object(out))
    }

    /// Checks the request against the schema, naming fields in AuthZEN terms.
    pub fn check(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Value,
    ) -> Result<CheckedRequest, AuthzenError> {
        decision::check_uids(self.snapshot, principal, action, resource, Some(context))
            .map_err(AuthzenError::Request)
    }

    /// An entity the request describes with `properties`, converted by the schema's
    /// types; `None` when it has none. The pipeline decides, by the mapping's
    /// precedence, whether it is used.
    pub fn described(
        &self,
        uid: &EntityUid,
        props: Option<&Map<String, Value>>,
        field: &'static str,
    ) -> Result<Option<Described>, AuthzenError> {
        let Some(props) = props.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        if self.snapshot.mapping.precedence_for(uid.type_name()) == crate::model::Precedence::Ignore
        {
            return Ok(None);
        }
        let path = format!("{field}.properties");
        let refs = self.reference_type();
        let attrs = match self.snapshot.types.attributes(uid.type_name()) {
            Ty::Record(attrs) => convert_record(props, &attrs, &path, &refs)?,
            _ => props.clone(),
        };
        Ok(Some(Described {
            uid: uid.clone(),
            attrs,
            field,
        }))
    }

    /// Decides a checked request through the pipeline. A store that cannot be reached
    /// and described entities that do not fit are errors of the call; every other
    /// outcome is a decision (unreadable data denies).
    pub async fn decide(
        &self,
        checked: &CheckedRequest,
        described: &[Described],
    ) -> Result<Decision, AuthzenError> {
        match decision::decide(self.snapshot, self.source, self.call, checked, described).await {
            Outcome::StoreUnavailable(m) => Err(AuthzenError::StoreUnavailable(m)),
            Outcome::DescriptionInvalid(m) => Err(AuthzenError::InvalidProperties(m)),
            other => Ok(other.decision()),
        }
    }
}

/// Whether the caller asked for reasons in this evaluation's context.
pub fn explain_in(context: Option<&Map<String, Value>>) -> bool {
    context
        .and_then(|c| c.get(CONTROL_KEY))
        .and_then(|p| p.get("explain"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A decision as answered: with `explain`, the determining policies and any
/// evaluation errors go into the decision's `context`.
pub fn decision_out(d: &Decision, explain: bool) -> DecisionOut {
    let context = explain.then(|| {
        let mut c = Map::new();
        c.insert("policies".into(), Value::from(d.reasons.clone()));
        if !d.errors.is_empty() {
            c.insert("errors".into(), Value::from(d.errors.clone()));
        }
        c
    });
    DecisionOut {
        decision: d.allowed,
        context,
    }
}

/// One evaluation: mapped, checked, decided (and recorded by the pipeline).
pub async fn evaluate(
    scope: &Scope<'_>,
    e: &Evaluation,
    explain: bool,
) -> Result<DecisionOut, AuthzenError> {
    let principal = scope.uid(&e.subject, "subject")?;
    let action = match scope.action(&e.action, "action") {
        Ok(action) => action,
        Err(unknown) => return scope.unknown_action(unknown),
    };
    let resource = scope.uid(&e.resource, "resource")?;
    let context = scope.context(&action, e.context.as_ref(), e.action.properties.as_ref())?;
    let checked = scope.check(principal.clone(), action, resource.clone(), context)?;
    let described: Vec<Described> = [
        scope.described(&principal, e.subject.properties.as_ref(), "subject")?,
        scope.described(&resource, e.resource.properties.as_ref(), "resource")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    let d = scope.decide(&checked, &described).await?;
    Ok(decision_out(&d, explain || explain_in(e.context.as_ref())))
}

/// One item of an evaluations answer.
#[derive(Debug, Clone)]
pub struct Item {
    /// The decision, or the error that closed this item alone (answered as a Deny
    /// carrying the error) with its message, which names the item (`evaluations[2]`).
    pub answer: Result<DecisionOut, (AuthzenError, String)>,
    /// This item's deny ended a `deny_on_first_deny` batch.
    pub ended_batch: bool,
}

impl Item {
    fn allowed(&self) -> bool {
        matches!(&self.answer, Ok(d) if d.decision)
    }
}

/// The answer to `POST /access/v1/evaluations`.
#[derive(Debug, Clone)]
pub enum Evaluations {
    /// No `evaluations` array: one evaluation, answered as one decision.
    Single(DecisionOut),
    Batch(Vec<Item>),
}

/// Evaluates a batch with its semantic: every item, or up to the first deny or permit.
pub async fn evaluations(
    scope: &Scope<'_>,
    request: EvaluationsRequest,
    explain: bool,
) -> Result<Evaluations, AuthzenError> {
    let batch = match request {
        EvaluationsRequest::Single(single) => {
            return Ok(Evaluations::Single(
                evaluate(scope, &single, explain).await?,
            ))
        }
        EvaluationsRequest::Batch(batch) => batch,
    };
    if batch.items.len() > scope.batch_limit {
        return Err(AuthzenError::BatchTooLarge {
            count: batch.items.len(),
            limit: scope.batch_limit,
        });
    }
    let mut out = Vec::with_capacity(batch.items.len());
    for (i, item) in batch.items.into_iter().enumerate() {
        let answer = match item {
            // A wire error already names the item's fields (`evaluations[2].subject`).
            Err(e) => {
                let message = e.message.clone();
                Err((AuthzenError::Wire(e), message))
            }
            Ok(e) => evaluate(scope, &e, explain)
                .await
                .map_err(|err| err.at(&format!("evaluations[{i}]"))),
        };
        let mut item = Item {
            answer,
            ended_batch: false,
        };
        let stop = match batch.semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !item.allowed(),
            Semantic::PermitOnFirstPermit => item.allowed(),
        };
        item.ended_batch = stop && batch.semantic == Semantic::DenyOnFirstDeny;
        out.push(item);
        if stop {
            break;
        }
    }
    Ok(Evaluations::Batch(out))
}

/// The discovery document for a PDP at `base`.
pub fn metadata(base: &str) -> wire::Metadata {
    wire::Metadata {
        policy_decision_point: base.to_string(),
        access_evaluation_endpoint: format!("{base}{}", wire::EVALUATION),
        access_evaluations_endpoint: format!("{base}{}", wire::EVALUATIONS),
        search_subject_endpoint: format!("{base}{}", wire::SEARCH_SUBJECT),
        search_resource_endpoint: format!("{base}{}", wire::SEARCH_RESOURCE),
        search_action_endpoint: format!("{base}{}", wire::SEARCH_ACTION),
    }
}
