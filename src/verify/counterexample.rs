//! Counterexamples in the formats the API and `portcullis authorize` accept, and their
//! replay through the real authorizer.
//!
//! The solver's answer is only as trustworthy as the encoding between Cedar and SMT.
//! Replaying each counterexample through [`crate::decision`] with entity data parsed
//! against the schema, exactly as the server would, turns "the solver says" into "the
//! authorizer decides", and catches a wrong model before anyone acts on it.

use cedar_policy::{Authorizer, Entities, PolicySet};
use serde::Serialize;
use serde_json::{json, Value};

use crate::decision::Call;
use crate::decision::{self, RawRequest};
use crate::entities::MemorySource;
use crate::model::Snapshot;

/// A concrete request and entity data on which a property fails.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// `{principal, action, resource, context}`, the body of `POST /v1/is_authorized`.
    pub request: Value,
    /// Cedar's JSON entity format, without the schema's action entities.
    pub entities: Value,
}

impl Counterexample {
    pub fn from_env(env: &cedar_policy_symcc::Env) -> Self {
        let uid = |u: Option<&cedar_policy::EntityUid>| {
            u.map_or(Value::Null, |u| Value::String(u.to_string()))
        };
        let context = env
            .request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .unwrap_or_else(|| json!({}));
        let request = json!({
            "principal": uid(env.request.principal()),
            "action": uid(env.request.action()),
            "resource": uid(env.request.resource()),
            "context": context,
        });
        // Action entities come from the schema; the API's entity data never holds them.
        let entities = match env.entities.to_json_value() {
            Ok(Value::Array(items)) => {
                Value::Array(items.into_iter().filter(|e| !is_action_entity(e)).collect())
            }
            Ok(other) => other,
            Err(e) => json!({ "error": e.to_string() }),
        };
        Self { request, entities }
    }

    /// The request as `decision::check` takes it.
    pub fn raw_request(&self) -> RawRequest {
        let field = |name: &str| {
            self.request
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        RawRequest {
            principal: field("principal"),
            action: field("action"),
            resource: field("resource"),
            context: self.request.get("context").cloned(),
        }
    }
}

fn is_action_entity(e: &Value) -> bool {
    e.pointer("/uid/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t == "Action" || t.ends_with("::Action"))
}

/// What the replay must show for the counterexample to confirm the violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// `always_denies`: the policies allow it.
    Allowed,
    /// `implies`: the policies allow it and the reference set denies it.
    AllowedNotByReference,
    /// `disjoint`: both allow it.
    AllowedByBoth,
    /// `equivalent`: the two decide it differently.
    DecisionsDiffer,
    /// `never_errors`: evaluating this policy errors.
    PolicyErrors(String),
    /// Change review: the new policies allow it, the old ones deny it.
    NewlyAllowed,
    /// Change review: the old policies allow it, the new ones deny it.
    NoLongerAllowed,
}

/// The authorizer's decision on a counterexample.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// `allow` or `deny` of the policies under check.
    pub decision: &'static str,
    pub determined_by: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The reference set's decision (invariants with a reference) or the old
    /// policies' decision (change review).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_decision: Option<&'static str>,
    /// True when the decisions are those the property's failure predicts.
    pub confirmed: bool,
    /// Why the counterexample could not be replayed, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Replay {
    fn failed(problem: String) -> Self {
        Self {
            decision: "deny",
            determined_by: Vec::new(),
            errors: Vec::new(),
            other_decision: None,
            confirmed: false,
            problem: Some(problem),
        }
    }
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Parses the counterexample as the server would: entity data against the schema,
/// the request through `decision::check`.
fn prepare(
    snapshot: &Snapshot,
    cex: &Counterexample,
) -> Result<(decision::CheckedRequest, Entities), String> {
    let entities = Entities::from_json_value(cex.entities.clone(), Some(&snapshot.schema))
        .map_err(|e| format!("the entities do not load against the schema: {e}"))?;
    let checked = decision::check(snapshot, &cex.raw_request())
        .map_err(|e| format!("the request does not check: {e}"))?;
    Ok((checked, entities))
}

/// Decides a counterexample's request on its entities through the server's pipeline.
async fn decide(
    snapshot: &Snapshot,
    checked: &decision::CheckedRequest,
    entities: &Entities,
) -> decision::Decision {
    let source = MemorySource::new(std::sync::Arc::new(entities.clone()));
    decision::decide(snapshot, &source, &Call::unrecorded(), checked, &[])
        .await
        .decision()
}

/// Replays an invariant's counterexample: the policies through the server's decision
/// pipeline, the reference set (if any) through Cedar's authorizer.
pub async fn replay(
    snapshot: &Snapshot,
    cex: &Counterexample,
    expectation: &Expectation,
    reference: Option<&PolicySet>,
) -> Replay {
    let (checked, entities) = match prepare(snapshot, cex) {
        Ok(p) => p,
        Err(problem) => return Replay::failed(problem),
    };
    let d = decide(snapshot, &checked, &entities).await;
    let other = reference.map(|r| {
        Authorizer::new()
            .is_authorized(&checked.request, r, &entities)
            .decision()
            == cedar_policy::Decision::Allow
    });
    let confirmed = match expectation {
        Expectation::Allowed => d.allowed,
        Expectation::AllowedNotByReference => d.allowed && other == Some(false),
        Expectation::AllowedByBoth => d.allowed && other == Some(true),
        Expectation::DecisionsDiffer => other.is_some_and(|o| o != d.allowed),
        Expectation::PolicyErrors(id) => d
            .errors
            .iter()
            .any(|e| e.contains(&format!("`{id}`")) || e.contains(id.as_str())),
        Expectation::NewlyAllowed | Expectation::NoLongerAllowed => false,
    };
    Replay {
        decision: word(d.allowed),
        determined_by: d.reasons,
        errors: d.errors,
        other_decision: other.map(word),
        confirmed,
        problem: None,
    }
}

/// Replays a change-review counterexample through both snapshots.
pub async fn replay_against(
    new: &Snapshot,
    old: &Snapshot,
    cex: &Counterexample,
    expectation: &Expectation,
) -> Replay {
    let (checked, entities) = match prepare(new, cex) {
        Ok(p) => p,
        Err(problem) => return Replay::failed(problem),
    };
    let d = decide(new, &checked, &entities).await;
    let o = decide(old, &checked, &entities).await;
    let confirmed = match expectation {
        Expectation::NewlyAllowed => d.allowed && !o.allowed,
        Expectation::NoLongerAllowed => !d.allowed && o.allowed,
        _ => false,
    };
    Replay {
        decision: word(d.allowed),
        determined_by: d.reasons,
        errors: d.errors,
        other_decision: Some(word(o.allowed)),
        confirmed,
        problem: None,
    }
}
