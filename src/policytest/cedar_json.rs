//! The cedar CLI's `run-tests` format, so that suites written for `cedar run-tests`
//! run here unchanged: a JSON array of cases
//!
//! ```json
//! [{ "name": "optional",
//!    "request": { "principal": "User::\"alice\"", "action": "Action::\"view\"",
//!                 "resource": "Photo::\"a\"", "context": {} },
//!    "entities": [ ...Cedar JSON entities... ]   or  "entities.json",
//!    "decision": "allow",
//!    "reason": ["policy-id"],
//!    "num_errors": 0 }]
//! ```
//!
//! The semantics follow the cedar CLI: `reason` lists policies that must be among the
//! determining ones (a subset, not the exact set), `num_errors` is compared exactly, and
//! an entity file is read relative to the test file. Each case is read on its own, so
//! one malformed case fails alone, as there.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::entities::EntityList;
use super::{Case, CaseBody, Expectation, ExpectedDecision, ReasonCheck, Suite, SuiteError};
use crate::decision::RawRequest;
use crate::model::Snapshot;

#[derive(Debug, Deserialize)]
struct CedarCase {
    request: CedarRequest,
    entities: Value,
    decision: ExpectedDecision,
    #[serde(default)]
    reason: Vec<String>,
    #[serde(default)]
    num_errors: usize,
}

#[derive(Debug, Deserialize)]
struct CedarRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<Value>,
}

/// Whether a JSON text is a `run-tests` suite rather than, say, an entity file: a
/// non-empty array whose items all carry a `request`.
pub fn looks_like_suite(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => {
            !items.is_empty() && items.iter().all(|i| i.get("request").is_some())
        }
        _ => false,
    }
}

/// Loads a `run-tests` suite; entity data is parsed against the snapshot's schema.
pub fn load(path: &Path, snapshot: &Snapshot) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SuiteError::new(path, format!("cannot read: {e}")))?;
    let items: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
        SuiteError::new(
            path,
            format!(
                "invalid test file at {}:{}: {e} (expected a JSON array of test cases)",
                e.line(),
                e.column()
            ),
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let cases = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| case(i, item, base, snapshot))
        .collect();
    Ok(Suite {
        file: path.display().to_string(),
        cases,
    })
}

fn case(index: usize, item: Value, base: &Path, snapshot: &Snapshot) -> Case {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("(unnamed #{})", index + 1), str::to_string);
    Case {
        body: body(item, base, snapshot),
        name,
    }
}

fn body(item: Value, base: &Path, snapshot: &Snapshot) -> Result<CaseBody, String> {
    let parsed: CedarCase = serde_json::from_value(item)
        .map_err(|e| format!("invalid test case: {}", crate::error_chain(&e)))?;
    let mut list = EntityList::default();
    match parsed.entities {
        Value::String(file) => list.add_file(&base.join(file))?,
        Value::Array(items) => items.into_iter().for_each(|e| list.add(e)),
        _ => return Err("`entities` must be an array of entities or a file name".to_string()),
    }
    Ok(CaseBody {
        request: RawRequest {
            principal: parsed.request.principal,
            action: parsed.request.action,
            resource: parsed.request.resource,
            context: parsed.request.context,
        },
        entities: list.build(&snapshot.schema)?,
        expect: Expectation {
            decision: parsed.decision,
            reasons: ReasonCheck::Includes(parsed.reason.into_iter().collect()),
            errors: Some(parsed.num_errors),
        },
    })
}
