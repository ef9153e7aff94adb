//! AuthZEN Authorization API 1.0: the standard PDP interface over the Cedar engine.
//!
//! - [`wire`]: the spec's request and response shapes, read with field-named errors.
//! - [`mapping`]: AuthZEN names to Cedar names (file or embedded portal default).
//! - [`schema_info`]: attribute and context types from the schema, and the
//!   conversion of AuthZEN values into Cedar's JSON value format.
//! - [`search`]: subject, resource and action search with opaque page tokens.
//! - [`handlers`]: the HTTP endpoints, called from `http::route`.
//!
//! An evaluation is turned into an ordinary checked Cedar request and decided by
//! `decision::decide`, so AuthZEN and the Cedar-native API cannot disagree.

pub mod handlers;
pub mod mapping;
pub mod schema_info;
pub mod search;
pub mod wire;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use cedar_policy::{Entities, Entity, EntityUid};
use serde_json::{Map, Value};

use crate::decision::{self, CheckedRequest, Decision, RequestError};
use crate::entities::{EntitySource, EntitySourceError};
use crate::http::error::ApiError;
use crate::policy::PolicySnapshot;
use mapping::{Mapping, MappingError, Precedence};
use schema_info::{convert, convert_record, ConvertError, SchemaInfo, Ty};
use wire::{DecisionOut, EntityRef};

/// The context key a caller sets to ask for reasons: `{"portcullis": {"explain":
/// true}}`. It is removed before the context reaches Cedar.
pub const CONTROL_KEY: &str = "portcullis";

/// The header that asks for reasons on every decision of a request.
pub const EXPLAIN_HEADER: &str = "x-portcullis-explain";

/// The AuthZEN service: its mapping and what it derives from the serving schema.
pub struct Authzen {
    pub mapping: Mapping,
    /// Base URL the discovery document advertises; when absent it is built from the
    /// request's `Host` and the listener's scheme.
    pub public_base_url: Option<String>,
    /// This subsystem's metrics, once registered in the service's registry.
    pub metrics: Option<AuthzenMetrics>,
    /// Schema types, keyed by the schema's hash. Swapped, not locked: every request
    /// reads it, a schema change writes it once.
    info: ArcSwapOption<(String, Arc<SchemaInfo>)>,
}

impl Authzen {
    pub fn new(mapping: Mapping, public_base_url: Option<String>) -> Self {
        Self {
            mapping,
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_string()),
            metrics: None,
            info: ArcSwapOption::empty(),
        }
    }

    /// The shipped portal mapping, no public base URL.
    pub fn embedded() -> Result<Self, MappingError> {
        Ok(Self::new(Mapping::embedded()?, None))
    }

    /// Registers this subsystem's metrics in the service's registry.
    pub fn register_metrics(
        &mut self,
        registry: &prometheus::Registry,
    ) -> Result<(), prometheus::Error> {
        let search_candidates = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "portcullis_authzen_search_candidates_total",
                "Candidates evaluated by AuthZEN searches, by search endpoint.",
            ),
            &["search"],
        )?;
        registry.register(Box::new(search_candidates.clone()))?;
        self.metrics = Some(AuthzenMetrics { search_candidates });
        Ok(())
    }

    /// Counts candidates a search evaluated. `search` is `subject`, `resource` or
    /// `action`.
    pub fn count_candidates(&self, search: &str, n: usize) {
        if let Some(m) = &self.metrics {
            m.search_candidates
                .with_label_values(&[search])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    /// The schema types of a snapshot, read once per schema.
    pub fn schema_info(&self, snapshot: &PolicySnapshot) -> Arc<SchemaInfo> {
        if let Some(cached) = self.info.load_full() {
            if cached.0 == snapshot.schema_hash {
                return cached.1.clone();
            }
        }
        let info = Arc::new(SchemaInfo::from_source(&snapshot.schema_source));
        self.info
            .store(Some(Arc::new((snapshot.schema_hash.clone(), info.clone()))));
        info
    }
}

/// Metrics of the AuthZEN endpoints beyond the service-wide request and decision
/// counters. Labels are fixed names, never ids.
#[derive(Clone)]
pub struct AuthzenMetrics {
    pub search_candidates: prometheus::IntCounterVec,
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

/// An entity of the request, the properties the caller sent for it, and the field
/// that names it in errors (`subject`, `resource`).
pub(crate) type WithProperties<'a> = (&'a EntityUid, Option<&'a Map<String, Value>>, &'a str);

/// Entity data for one decision, or the reason it could not be had (which denies).
pub(crate) enum Fetched {
    Entities(Arc<Entities>),
    Deny(String),
}

/// What the evaluations of one request share: the service, the snapshot it loaded and
/// the schema's types.
pub(crate) struct Scope<'a> {
    pub az: &'a Authzen,
    pub snapshot: &'a PolicySnapshot,
    pub info: Arc<SchemaInfo>,
    pub source: &'a Arc<dyn EntitySource>,
}

impl<'a> Scope<'a> {
    pub fn new(
        az: &'a Authzen,
        snapshot: &'a PolicySnapshot,
        source: &'a Arc<dyn EntitySource>,
    ) -> Self {
        Self {
            az,
            snapshot,
            info: az.schema_info(snapshot),
            source,
        }
    }

    /// The Cedar type of an AuthZEN type, or a 400 naming the field.
    pub fn cedar_type(
        &self,
        ty: &str,
        field: &str,
    ) -> Result<cedar_policy::EntityTypeName, ApiError> {
        self.az
            .mapping
            .cedar_type(ty, &self.snapshot.schema)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_entity_type",
                    format!(
                        "`{field}.type`: `{ty}` is neither mapped to a Cedar entity type nor a type the schema declares"
                    ),
                )
            })
    }

    /// The Cedar uid of a subject or resource with an id.
    pub fn uid(&self, r: &EntityRef, field: &str) -> Result<EntityUid, ApiError> {
        let ty = self.cedar_type(&r.ty, field)?;
        let id = r.id.as_deref().unwrap_or_default();
        Ok(EntityUid::from_type_name_and_id(
            ty,
            cedar_policy::EntityId::new(id),
        ))
    }

    pub fn action(&self, a: &wire::Action, field: &str) -> Result<EntityUid, ApiError> {
        self.az
            .mapping
            .cedar_action(&a.name, &self.snapshot.schema)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_action",
                    format!(
                        "`{field}.name`: `{}` is not an action of the schema",
                        a.name
                    ),
                )
            })
    }

    fn reference_type(&self) -> impl Fn(&str) -> String + '_ {
        |t: &str| self.az.mapping.reference_type(t)
    }

    /// The Cedar context: the declared attributes of the request's context, converted
    /// by type, plus the action's properties under the configured key when the
    /// context type declares it.
    pub fn context(
        &self,
        action: &EntityUid,
        context: Option<&Map<String, Value>>,
        action_properties: Option<&Map<String, Value>>,
    ) -> Result<Value, ApiError> {
        let mut raw = context.cloned().unwrap_or_default();
        raw.remove(CONTROL_KEY);
        let ty = self.info.context(action);
        let refs = self.reference_type();
        let mut out = match &ty {
            Ty::Record(attrs) => convert_record(&raw, attrs, "context", &refs).map_err(invalid)?,
            _ => raw,
        };
        if let (Some(props), Ty::Record(attrs)) = (action_properties, &ty) {
            let key = &self.az.mapping.action_properties_key;
            if let Some(attr) = attrs.get(key) {
                let value = convert(
                    &Value::Object(props.clone()),
                    &attr.ty,
                    "action.properties",
                    &refs,
                )
                .map_err(invalid)?;
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
    ) -> Result<CheckedRequest, ApiError> {
        decision::check_uids(self.snapshot, principal, action, resource, Some(context))
            .map_err(|e| authzen_error(&e))
    }

    /// The entity built from a request's properties, when it changes anything.
    fn property_entity(
        &self,
        uid: &EntityUid,
        props: &Map<String, Value>,
        stored: Option<&Entity>,
        field: &str,
    ) -> Result<Option<Entity>, ApiError> {
        let ignored = match self.az.mapping.precedence {
            Precedence::Ignore => true,
            Precedence::Store => stored.is_some(),
            Precedence::Request => false,
        };
        if props.is_empty() || ignored {
            return Ok(None);
        }
        let path = format!("{field}.properties");
        let refs = self.reference_type();
        let attrs = match self.info.attributes(uid.type_name()) {
            Ty::Record(attrs) => convert_record(props, &attrs, &path, &refs).map_err(invalid)?,
            _ => props.clone(),
        };
        if attrs.is_empty() {
            return Ok(None);
        }
        let json = match stored {
            Some(e) => {
                let mut json = e.to_json_value().map_err(|err| {
                    ApiError::bad_request("invalid_properties", format!("`{path}`: {err}"))
                })?;
                if let Some(Value::Object(stored_attrs)) = json.get_mut("attrs") {
                    stored_attrs.extend(attrs);
                }
                json
            }
            None => serde_json::json!({
                "uid": {"type": uid.type_name().to_string(), "id": uid.id().unescaped()},
                "attrs": attrs,
                "parents": [],
            }),
        };
        Entity::from_json_value(json, Some(&self.snapshot.schema))
            .map(Some)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_properties",
                    format!("`{path}`: {}", crate::error_chain(&e)),
                )
            })
    }

    /// Fetches the entities a decision about `uids` reads and lays the request's
    /// properties over them. An unreachable store is a 503; unreadable data denies.
    pub async fn entities(
        &self,
        uids: &[EntityUid],
        with_properties: &[WithProperties<'_>],
    ) -> Result<Fetched, ApiError> {
        let stored = match self.source.entities_for(uids, self.snapshot).await {
            Ok(s) => s,
            Err(EntitySourceError::Unavailable(m)) => {
                return Err(ApiError::unavailable(format!(
                    "entity store unavailable: {m}"
                )))
            }
            Err(e) => return Ok(Fetched::Deny(e.to_string())),
        };
        let mut extra = Vec::new();
        for (uid, props, field) in with_properties {
            if let Some(props) = props {
                if let Some(e) = self.property_entity(uid, props, stored.get(uid), field)? {
                    extra.push(e);
                }
            }
        }
        if extra.is_empty() {
            return Ok(Fetched::Entities(stored));
        }
        match (*stored)
            .clone()
            .upsert_entities(extra, Some(&self.snapshot.schema))
        {
            Ok(merged) => Ok(Fetched::Entities(Arc::new(merged))),
            Err(e) => Err(ApiError::bad_request(
                "invalid_properties",
                format!(
                    "properties do not fit the schema: {}",
                    crate::error_chain(&e)
                ),
            )),
        }
    }
}

/// Decides with fetched entities; data that could not be read denies.
pub(crate) fn decide(
    snapshot: &PolicySnapshot,
    checked: &CheckedRequest,
    fetched: &Fetched,
) -> Decision {
    match fetched {
        Fetched::Entities(e) => decision::decide(snapshot, checked, e),
        Fetched::Deny(m) => Decision::deny_with_error(m.clone(), false),
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

fn invalid(e: ConvertError) -> ApiError {
    ApiError::bad_request("invalid_field", e.to_string())
}

/// A request error with the Cedar-native field names replaced by AuthZEN's.
fn authzen_error(e: &RequestError) -> ApiError {
    let message = e.to_string().replacen("`principal`", "`subject`", 1);
    ApiError::bad_request(e.code(), message)
}
