//! The one decision pipeline: every decision of every surface (Cedar-native, AuthZEN
//! evaluation and search, the gateway endpoints, `authorize`, `test`, the verify
//! replay) is made by [`decide`], and every answer derives from its [`Outcome`].
//!
//! Authorization never fails: problems travel as diagnostics on a Deny, as in Cedar.
//! Missing or unreadable data denies; nothing allows because something failed.

use std::borrow::Cow;
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, EvalResult};
use serde_json::{Map, Value};

use super::record::Call;
use super::request::CheckedRequest;
use crate::entities::{EntitySource, EntitySourceError};
use crate::model::entity_table::Lookup;
use crate::model::index::{Presence, Verdict};
use crate::model::{Precedence, Snapshot};

/// What Cedar decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub reasons: Vec<String>,
    /// Problems met while deciding, as messages.
    pub errors: Vec<String>,
}

impl Decision {
    /// A Deny no policy determined, with one diagnostic saying why.
    pub fn deny(message: String) -> Self {
        Self {
            allowed: false,
            reasons: Vec::new(),
            errors: vec![message],
        }
    }
}

/// How a decision ended. Every surface answers the same outcome the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Cedar evaluated the request on the data.
    Decided(Decision),
    /// The entity store could not be reached: a Deny, answered as
    /// `entity_store_unavailable` (503) so the caller knows to retry.
    StoreUnavailable(String),
    /// Stored data could not be used: a Deny whose diagnostic names the entity.
    DataInvalid {
        uid: Option<EntityUid>,
        message: String,
    },
    /// Entities the request described (AuthZEN properties) do not fit the schema: the
    /// caller's mistake, answered as `invalid_properties`.
    DescriptionInvalid(String),
    /// The request cannot be decided for the schema (a gateway route whose principal
    /// does not fit the action, say): a Deny that says why.
    Undecidable(String),
    /// Evaluation read an entity the source left out because it lies beyond the fetch
    /// depth: a Deny saying so, since the decision was made on cut data.
    DepthExceeded { uid: EntityUid, depth: usize },
    /// The request's principal or resource is neither in the entity data nor described
    /// by the request: a Deny naming it (`--require-entities`).
    MissingEntity { uid: EntityUid, role: &'static str },
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        matches!(self, Outcome::Decided(d) if d.allowed)
    }

    /// The decision as answered: Cedar's, or a Deny carrying the problem.
    pub fn decision(&self) -> Decision {
        match self {
            Outcome::Decided(d) => d.clone(),
            Outcome::StoreUnavailable(m)
            | Outcome::DescriptionInvalid(m)
            | Outcome::Undecidable(m)
            | Outcome::DataInvalid { message: m, .. } => Decision::deny(m.clone()),
            Outcome::DepthExceeded { uid, depth } => Decision::deny(format!(
                "entity `{uid}` lies beyond the fetch depth of {depth} reference levels and was not fetched; the decision needs it (raise `--redis-fetch-depth`)"
            )),
            Outcome::MissingEntity { uid, role } => Decision::deny(format!(
                "the {role} `{uid}` does not exist: neither the entity data holds it nor the request describes it"
            )),
        }
    }

    /// A fixed name of the outcome: a metric label and the decision log's `outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Decided(_) => "decided",
            Outcome::StoreUnavailable(_) => "entity_store_unavailable",
            Outcome::DataInvalid { .. } => "entity_data_invalid",
            Outcome::DescriptionInvalid(_) => "invalid_properties",
            Outcome::Undecidable(_) => "undecidable",
            Outcome::MissingEntity { .. } => "entity_missing",
            Outcome::DepthExceeded { .. } => "entity_depth_exceeded",
        }
    }
}

/// An entity the request describes itself: AuthZEN `properties`, already converted to
/// Cedar's JSON attribute values. `field` names it in messages (`subject`).
#[derive(Debug, Clone)]
pub struct Described {
    pub uid: EntityUid,
    pub attrs: Map<String, Value>,
    pub field: &'static str,
}

/// Decides one checked request: fetches the entities it reads, lays the entities the
/// request describes over them (as the mapping's precedence allows), evaluates, and
/// records the outcome (metrics and the decision log) when `call` has a recorder.
pub async fn decide(
    snapshot: &Snapshot,
    source: &dyn EntitySource,
    call: &Call<'_>,
    request: &CheckedRequest,
    described: &[Described],
) -> Outcome {
    let outcome = fetch_and_evaluate(snapshot, source, call, request, described).await;
    call.record(Some(request), &outcome);
    outcome
}

async fn fetch_and_evaluate(
    snapshot: &Snapshot,
    source: &dyn EntitySource,
    call: &Call<'_>,
    request: &CheckedRequest,
    described: &[Described],
) -> Outcome {
    // The principal, the resource and the uids of the context (most contexts hold
    // none: the request's own pair then serves).
    let mut in_context = Vec::new();
    context_uids(&request.request, &mut in_context);
    let uids: Cow<'_, [EntityUid]> = if in_context.is_empty() {
        Cow::Borrowed(request.roots())
    } else {
        Cow::Owned(request.roots().iter().cloned().chain(in_context).collect())
    };
    let fetched = match source.entities_for(&uids, snapshot).await {
        Ok(e) => e,
        Err(EntitySourceError::Unavailable(m)) => {
            return Outcome::StoreUnavailable(format!("entity store unavailable: {m}"))
        }
        Err(EntitySourceError::InvalidData { uid, message }) => {
            return Outcome::DataInvalid {
                uid: uid.map(|u| *u),
                message: format!("invalid entity data: {message}"),
            }
        }
    };
    let stored = Arc::clone(&fetched.entities);
    let entities = match overlay(snapshot, fetched.entities, &uids, described) {
        Ok(e) => e,
        Err(m) => return Outcome::DescriptionInvalid(m),
    };
    // The source's table holds the stored entities: it serves only when nothing was
    // laid over them.
    let table = fetched.table.filter(|_| Arc::ptr_eq(&stored, &entities));
    let (decision, presence) =
        evaluate(snapshot, request, Lookup::new(&entities, table.as_deref()));
    // Cedar skips a policy whose condition errors, so a guard reading a missing
    // principal's attributes would be skipped while a permit comparing uids still
    // applies: a request about an entity nobody holds is denied, whatever Cedar
    // decided (the index notes whether the data holds them as it reads their
    // ancestors).
    let required = [
        (
            call.require.principal(),
            presence.principal,
            request.principal(),
            "principal",
        ),
        (
            call.require.resource(),
            presence.resource,
            request.resource(),
            "resource",
        ),
    ];
    for (required, held, uid, role) in required {
        if required && !held {
            return Outcome::MissingEntity {
                uid: uid.clone(),
                role,
            };
        }
    }
    // An entity left out by the fetch depth is absent to Cedar: a condition reading it
    // errors and its policy is skipped, which for a forbid could allow. Such a
    // decision does not stand.
    for uid in &fetched.beyond_depth {
        let named = uid.to_string();
        if decision.errors.iter().any(|e| e.contains(&named)) {
            return Outcome::DepthExceeded {
                uid: uid.clone(),
                depth: fetched.depth,
            };
        }
    }
    Outcome::Decided(decision)
}

/// Adds the entity uids the request's context holds (`context.delegate`): evaluation
/// may read them as it reads the principal and the resource.
fn context_uids(request: &cedar_policy::Request, out: &mut Vec<EntityUid>) {
    fn walk(v: &EvalResult, out: &mut Vec<EntityUid>) {
        match v {
            EvalResult::EntityUid(uid) => out.push(uid.clone()),
            EvalResult::Set(items) => items.iter().for_each(|i| walk(i, out)),
            EvalResult::Record(fields) => fields.iter().for_each(|(_, f)| walk(f, out)),
            _ => {}
        }
    }
    let Some(context) = request.context() else {
        return;
    };
    // Most contexts are empty: nothing to copy then.
    if matches!(context.as_ref(), cedar_policy_core::ast::Context::Value(map) if map.is_empty()) {
        return;
    }
    // Cedar lends out a context's values by key only; its keys come from a copy.
    for (key, _) in context.clone() {
        if let Some(value) = context.get(&key) {
            walk(&value, out);
        }
    }
}

/// Lays described entities over the stored ones. With `store` precedence a stored
/// entity wins whole; with `request` each described attribute replaces the stored one
/// (parents and tags stay: request properties can never create them); with `ignore`
/// nothing described is used.
fn overlay(
    snapshot: &Snapshot,
    stored: Arc<Entities>,
    roots: &[EntityUid],
    described: &[Described],
) -> Result<Arc<Entities>, String> {
    let mut extra = Vec::new();
    for d in described {
        if d.attrs.is_empty() {
            continue;
        }
        let existing = stored.get(&d.uid);
        let used = match snapshot.mapping.precedence_for(d.uid.type_name()) {
            Precedence::Ignore => false,
            Precedence::Store => existing.is_none(),
            Precedence::Request => true,
        };
        if !used {
            continue;
        }
        let json = match existing {
            Some(e) => {
                let mut json = e
                    .to_json_value()
                    .map_err(|err| format!("`{}.properties`: {err}", d.field))?;
                if let Some(Value::Object(attrs)) = json.get_mut("attrs") {
                    attrs.extend(d.attrs.clone());
                }
                json
            }
            None => serde_json::json!({
                "uid": {"type": d.uid.type_name().to_string(), "id": d.uid.id().unescaped()},
                "attrs": d.attrs,
                "parents": [],
            }),
        };
        let entity = Entity::from_json_value(json, Some(&snapshot.schema))
            .map_err(|e| format!("`{}.properties`: {}", d.field, crate::error_chain(&e)))?;
        extra.push(entity);
    }
    if extra.is_empty() {
        return Ok(stored);
    }
    // Only what the decision may read is copied: the described entities' and the
    // request's closure in the stored data (a store held in memory hands out all of
    // it), and the schema's grouped actions.
    let roots: Vec<EntityUid> = extra
        .iter()
        .map(Entity::uid)
        .chain(roots.iter().cloned())
        .collect();
    let base = match crate::entities::closure(&stored, &roots) {
        Some(mut entities) => {
            let held: std::collections::HashSet<EntityUid> =
                entities.iter().map(Entity::uid).collect();
            entities.extend(
                snapshot
                    .action_entities
                    .iter()
                    .filter(|a| !held.contains(&a.uid()))
                    .cloned(),
            );
            Entities::from_entities(entities, None).map_err(|e| {
                format!(
                    "stored entities do not assemble: {}",
                    crate::error_chain(&e)
                )
            })?
        }
        None => (*stored).clone(),
    };
    base.upsert_entities(extra, Some(&snapshot.schema))
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "properties do not fit the schema: {}",
                crate::error_chain(&e)
            )
        })
}

/// Cedar's evaluation of a checked request on its entities, over the policies whose
/// scope can match (the snapshot's index; the same answer as the whole set). Total:
/// never panics, never errors.
fn evaluate(
    snapshot: &Snapshot,
    request: &CheckedRequest,
    data: Lookup<'_>,
) -> (Decision, Presence) {
    let (verdict, presence) = snapshot.index.is_authorized_noting(&request.request, data);
    let decision = match verdict {
        Verdict::Compiled { allowed, reasons } => Decision {
            allowed,
            reasons: reasons.iter().map(policy_id_text).collect(),
            errors: Vec::new(),
        },
        Verdict::Cedar(response) => Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            reasons: response
                .diagnostics()
                .reason()
                .map(policy_id_text)
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| crate::error_chain(e))
                .collect(),
        },
    };
    (decision, presence)
}

/// A policy id as `Display` writes it (Rust's `escape_debug` of the id), without the
/// formatting machinery for the ids that it leaves as they are.
fn policy_id_text(id: &cedar_policy::PolicyId) -> String {
    let raw: &str = id.as_ref();
    if super::request::is_plain(raw) {
        raw.to_owned()
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_ids_read_as_display_writes_them() {
        for id in [
            "member-invoices",
            "policy0",
            "a b",
            "quote\"d",
            "tab\there",
            "back\\slash",
            "it's",
            "é",
        ] {
            let id = cedar_policy::PolicyId::new(id);
            assert_eq!(policy_id_text(&id), id.to_string());
        }
    }
}
