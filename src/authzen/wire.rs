//! AuthZEN wire types: requests read from JSON by hand so that every error names the
//! field (`evaluations[2].resource.id`), and responses as serde types. Unknown fields
//! are ignored, as the spec requires.

use serde::Serialize;
use serde_json::{Map, Value};

/// Paths of the endpoints, below the PDP's base URL.
pub const EVALUATION: &str = "/access/v1/evaluation";
pub const EVALUATIONS: &str = "/access/v1/evaluations";
pub const SEARCH_SUBJECT: &str = "/access/v1/search/subject";
pub const SEARCH_RESOURCE: &str = "/access/v1/search/resource";
pub const SEARCH_ACTION: &str = "/access/v1/search/action";
/// Not of the AuthZEN spec: the query plan of a resource search (docs/query-plan.md).
pub const RESOURCE_PLAN: &str = "/access/v1/search/resource/plan";
pub const DISCOVERY: &str = "/.well-known/authzen-configuration";

/// A request that does not have the spec's shape; answered with 400.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub code: &'static str,
    pub message: String,
}

impl WireError {
    fn missing(path: &str) -> Self {
        Self {
            code: "missing_field",
            message: format!("`{path}` is required"),
        }
    }

    fn mistyped(path: &str, expected: &str) -> Self {
        Self {
            code: "invalid_field",
            message: format!("`{path}` must be {expected}"),
        }
    }
}

/// A subject or resource: `type`, `id` and optional `properties`.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRef {
    pub ty: String,
    /// Absent only in the searched-for entity of a search request.
    pub id: Option<String>,
    pub properties: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub properties: Option<Map<String, Value>>,
}

/// One access evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub subject: EntityRef,
    pub action: Action,
    pub resource: EntityRef,
    pub context: Option<Map<String, Value>>,
}

/// `options.evaluations_semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// The evaluations request: each item is its own result, so an item that is
/// malformed after merging the defaults is an error of that item only.
#[derive(Debug, Clone)]
pub struct Evaluations {
    pub items: Vec<Result<Evaluation, WireError>>,
    pub semantic: Semantic,
}

/// `page` of a search request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageRequest {
    /// The request carried a `page` (even an empty one): the caller pages, so every
    /// answer carries a `page` too.
    pub present: bool,
    pub token: Option<String>,
    pub limit: Option<usize>,
}

/// A search request. Which of `subject` and `resource` lacks its id depends on the
/// endpoint; action search has no action.
#[derive(Debug, Clone)]
pub struct Search {
    pub subject: EntityRef,
    pub action: Option<Action>,
    pub resource: EntityRef,
    pub context: Option<Map<String, Value>>,
    pub page: PageRequest,
}

/// What a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    Subject,
    Resource,
    Action,
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, WireError> {
    v.as_object()
        .ok_or_else(|| WireError::mistyped(path, "an object"))
}

/// A present, non-null member.
fn member<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn string(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, WireError> {
    match member(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(WireError::mistyped(&format!("{path}.{key}"), "a string")),
    }
}

fn properties(o: &Map<String, Value>, path: &str) -> Result<Option<Map<String, Value>>, WireError> {
    match member(o, "properties") {
        None => Ok(None),
        Some(Value::Object(p)) => Ok(Some(p.clone())),
        Some(_) => Err(WireError::mistyped(
            &format!("{path}.properties"),
            "an object",
        )),
    }
}

/// Reads a subject or resource. `need_id` is false for the entity a search is for,
/// whose `id` the spec says to ignore.
pub fn entity_ref(v: &Value, path: &str, need_id: bool) -> Result<EntityRef, WireError> {
    let o = object(v, path)?;
    let ty = string(o, "type", path)?.ok_or_else(|| WireError::missing(&format!("{path}.type")))?;
    let id = if need_id {
        Some(string(o, "id", path)?.ok_or_else(|| WireError::missing(&format!("{path}.id")))?)
    } else {
        None
    };
    Ok(EntityRef {
        ty,
        id,
        properties: properties(o, path)?,
    })
}

pub fn action(v: &Value, path: &str) -> Result<Action, WireError> {
    let o = object(v, path)?;
    let name =
        string(o, "name", path)?.ok_or_else(|| WireError::missing(&format!("{path}.name")))?;
    Ok(Action {
        name,
        properties: properties(o, path)?,
    })
}

fn context(v: Option<&Value>, path: &str) -> Result<Option<Map<String, Value>>, WireError> {
    match v {
        None => Ok(None),
        Some(Value::Object(c)) => Ok(Some(c.clone())),
        Some(_) => Err(WireError::mistyped(path, "an object")),
    }
}

fn required<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Value, WireError> {
    member(o, key).ok_or_else(|| WireError::missing(&join(path, key)))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The body of `POST /access/v1/evaluation`.
pub fn evaluation(body: &Value) -> Result<Evaluation, WireError> {
    let o = object(body, "request body")?;
    evaluation_from(o, None, "")
}

/// A top-level default of a batch: present, not null, and not an empty object
/// (`"resource": {}` says nothing, so it is no default).
fn default<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    member(o, key).filter(|v| !v.as_object().is_some_and(Map::is_empty))
}

/// An evaluation from an object, taking each missing key from `defaults`. A default
/// is read only here, for an item that uses it, so a malformed default is an error
/// of exactly the items that use it.
fn evaluation_from(
    o: &Map<String, Value>,
    defaults: Option<&Map<String, Value>>,
    path: &str,
) -> Result<Evaluation, WireError> {
    // Where a value came from: the item's own key, or the top-level default.
    let pick = |key: &str| -> (Option<&Value>, String, bool) {
        match (member(o, key), defaults.and_then(|d| default(d, key))) {
            (Some(v), _) => (Some(v), join(path, key), false),
            (None, Some(v)) => (Some(v), key.to_string(), true),
            (None, None) => (None, join(path, key), false),
        }
    };
    // An error in a default names the item that used it.
    let used_by = |from_default: bool| {
        move |mut e: WireError| {
            if from_default && !path.is_empty() {
                e.message = format!("{} (the top-level default `{path}` uses)", e.message);
            }
            e
        }
    };
    let required = |key: &str| -> Result<(&Value, String, bool), WireError> {
        match pick(key) {
            (Some(v), p, from_default) => Ok((v, p, from_default)),
            (None, p, _) => Err(WireError::missing(&p)),
        }
    };
    let (s, sp, sd) = required("subject")?;
    let (a, ap, ad) = required("action")?;
    let (r, rp, rd) = required("resource")?;
    let (ctx, cp, cd) = pick("context");
    Ok(Evaluation {
        subject: entity_ref(s, &sp, true).map_err(used_by(sd))?,
        action: action(a, &ap).map_err(used_by(ad))?,
        resource: entity_ref(r, &rp, true).map_err(used_by(rd))?,
        context: context(ctx, &cp).map_err(used_by(cd))?,
    })
}

/// What `POST /access/v1/evaluations` asks for.
#[derive(Debug, Clone)]
pub enum EvaluationsRequest {
    /// No (or an empty) `evaluations` array: one evaluation, answered as one decision.
    Single(Box<Evaluation>),
    Batch(Evaluations),
}

/// The body of `POST /access/v1/evaluations`.
pub fn evaluations(body: &Value) -> Result<EvaluationsRequest, WireError> {
    let o = object(body, "request body")?;
    let semantic = match member(o, "options") {
        None => Semantic::ExecuteAll,
        Some(options) => {
            let options = object(options, "options")?;
            match string(options, "evaluations_semantic", "options")?.as_deref() {
                None | Some("execute_all") => Semantic::ExecuteAll,
                Some("deny_on_first_deny") => Semantic::DenyOnFirstDeny,
                Some("permit_on_first_permit") => Semantic::PermitOnFirstPermit,
                Some(other) => {
                    return Err(WireError {
                        code: "invalid_field",
                        message: format!(
                            "`options.evaluations_semantic`: `{other}` is not one of `execute_all`, `deny_on_first_deny`, `permit_on_first_permit`"
                        ),
                    })
                }
            }
        }
    };
    let items = match member(o, "evaluations") {
        None => None,
        Some(Value::Array(items)) if items.is_empty() => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(WireError::mistyped("evaluations", "an array")),
    };
    let Some(items) = items else {
        return evaluation_from(o, None, "").map(|e| EvaluationsRequest::Single(Box::new(e)));
    };
    let items = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("evaluations[{i}]");
            object(item, &path).and_then(|item| evaluation_from(item, Some(o), &path))
        })
        .collect();
    Ok(EvaluationsRequest::Batch(Evaluations { items, semantic }))
}

/// The body of a search request.
pub fn search(body: &Value, kind: SearchKind) -> Result<Search, WireError> {
    let o = object(body, "request body")?;
    let subject = entity_ref(
        required(o, "subject", "")?,
        "subject",
        kind != SearchKind::Subject,
    )?;
    let resource = entity_ref(
        required(o, "resource", "")?,
        "resource",
        kind != SearchKind::Resource,
    )?;
    let action = match kind {
        SearchKind::Action => None,
        _ => Some(action(required(o, "action", "")?, "action")?),
    };
    let page = match member(o, "page") {
        None => PageRequest::default(),
        Some(p) => {
            let p = object(p, "page")?;
            let limit = match member(p, "limit") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| {
                            WireError::mistyped("page.limit", "a non-negative integer")
                        })?,
                ),
            };
            PageRequest {
                present: true,
                token: string(p, "token", "page")?.filter(|t| !t.is_empty()),
                limit,
            }
        }
    };
    Ok(Search {
        subject,
        action,
        resource,
        context: context(member(o, "context"), "context")?,
        page,
    })
}

/// A decision as answered.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionOut {
    pub decision: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
pub struct EvaluationsOut {
    pub evaluations: Vec<DecisionOut>,
}

#[derive(Debug, Serialize)]
pub struct PageOut {
    pub next_token: String,
    pub count: usize,
}

/// A search response; `page` first, as the spec recommends. `page` is left out when
/// the request carried none and the results are the whole set (the spec requires it
/// only of a partial answer).
#[derive(Debug, Serialize)]
pub struct SearchOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PageOut>,
    pub results: Vec<Value>,
}

impl SearchOut {
    /// The answer to `req`: `results`, and where the next call resumes (`next_token`,
    /// empty when these are the last).
    pub fn new(req: &Search, results: Vec<Value>, next_token: String) -> Self {
        let page = (req.page.present || !next_token.is_empty()).then_some(PageOut {
            next_token,
            count: results.len(),
        });
        Self { page, results }
    }
}

/// `GET /.well-known/authzen-configuration`.
#[derive(Debug, Serialize)]
pub struct Metadata {
    pub policy_decision_point: String,
    pub access_evaluation_endpoint: String,
    pub access_evaluations_endpoint: String,
    pub search_subject_endpoint: String,
    pub search_resource_endpoint: String,
    pub search_action_endpoint: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn item_keys_override_top_level_defaults() {
        let body = json!({
            "subject": {"type": "user", "id": "bea"},
            "action": {"name": "ViewInvoice"},
            "context": {"secondFactor": true},
            "evaluations": [
                {"resource": {"type": "invoice", "id": "inv-1001"}},
                {"action": {"name": "PayInvoice"}, "resource": {"type": "invoice", "id": "inv-1001"}, "context": {}},
                {"subject": {"type": "user"}, "resource": {"type": "invoice", "id": "inv-1001"}}
            ]
        });
        let Ok(EvaluationsRequest::Batch(batch)) = evaluations(&body) else {
            panic!("a batch")
        };
        let first = batch.items[0].as_ref().unwrap();
        assert_eq!(first.action.name, "ViewInvoice");
        assert_eq!(
            first.context,
            Some(json!({"secondFactor": true}).as_object().unwrap().clone())
        );
        let second = batch.items[1].as_ref().unwrap();
        assert_eq!(second.action.name, "PayInvoice");
        assert_eq!(second.context, Some(Map::new()));
        let third = batch.items[2].as_ref().unwrap_err();
        assert!(
            !third.message.contains("top-level default"),
            "the item's own subject is at fault: {}",
            third.message
        );
        assert!(
            third.message.contains("`evaluations[2].subject.id`"),
            "{}",
            third.message
        );
    }

    #[test]
    fn an_empty_or_unused_default_is_no_error_and_a_used_one_names_its_item() {
        let body = json!({
            "subject": {"type": "user"},
            "action": {"name": "ViewInvoice"},
            "resource": {},
            "evaluations": [
                {"subject": {"type": "user", "id": "bea"}, "resource": {"type": "invoice", "id": "inv-1"}},
                {"resource": {"type": "invoice", "id": "inv-1"}},
                {"subject": {"type": "user", "id": "bea"}}
            ]
        });
        let Ok(EvaluationsRequest::Batch(batch)) = evaluations(&body) else {
            panic!("a batch")
        };
        assert!(batch.items[0].is_ok());
        let second = batch.items[1].as_ref().unwrap_err();
        assert_eq!(
            second.message,
            "`subject.id` is required (the top-level default `evaluations[1]` uses)"
        );
        let third = batch.items[2].as_ref().unwrap_err();
        assert_eq!(third.message, "`evaluations[2].resource` is required");
    }
}
