//! The YAML test format, written beside the policies:
//!
//! ```yaml
//! description: what the bookkeeper may do      # optional
//! entities: ../../examples/portal/entities.json # a file, or a list of files and entities
//! cases:
//!   - name: the bookkeeper may pay acme's invoice
//!     principal: Portal::User::"bea"
//!     action: Portal::Action::"PayInvoice"
//!     resource: Portal::Invoice::"inv-1001"
//!     context: {}                 # optional
//!     decision: allow
//!     reasons: [member-invoices]  # optional: exactly these policies determined it
//!     errors: 0                   # optional: number of evaluation errors
//!     entities: [...]             # optional: added to (or replacing) the file's
//! ```
//!
//! Entity files are read relative to the test file. Unknown keys are errors, so a
//! misspelt expectation cannot silently pass.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::entities::EntityList;
use super::{Case, CaseBody, Expectation, ExpectedDecision, ReasonCheck, Suite, SuiteError};
use crate::decision::RawRequest;
use crate::model::Snapshot;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlSuite {
    /// For the reader of the file; the runner does not use it.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    entities: Option<EntitySpec>,
    cases: Vec<YamlCase>,
}

/// Entity data: one file, or a list whose items are files or entities.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EntitySpec {
    File(String),
    List(Vec<EntityItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EntityItem {
    File(String),
    Entity(Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlCase {
    name: String,
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<Value>,
    decision: ExpectedDecision,
    #[serde(default, alias = "reason")]
    reasons: Option<Vec<String>>,
    #[serde(default, alias = "num_errors")]
    errors: Option<usize>,
    #[serde(default)]
    entities: Option<EntitySpec>,
}

fn collect(spec: &EntitySpec, base: &Path, into: &mut EntityList) -> Result<(), String> {
    match spec {
        EntitySpec::File(f) => into.add_file(&base.join(f)),
        EntitySpec::List(items) => {
            for item in items {
                match item {
                    EntityItem::File(f) => into.add_file(&base.join(f))?,
                    EntityItem::Entity(e) => into.add(e.clone()),
                }
            }
            Ok(())
        }
    }
}

/// Loads a YAML suite; entity data is parsed against the snapshot's schema.
pub fn load(path: &Path, snapshot: &Snapshot) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SuiteError::new(path, format!("cannot read: {e}")))?;
    parse(path, &text, snapshot)
}

/// Parses a YAML suite's text; `path` names it and locates its entity files.
pub fn parse(path: &Path, text: &str, snapshot: &Snapshot) -> Result<Suite, SuiteError> {
    let raw: YamlSuite = serde_yaml_ng::from_str(text)
        .map_err(|e| SuiteError::new(path, format!("invalid test file: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut shared = EntityList::default();
    if let Some(spec) = &raw.entities {
        collect(spec, base, &mut shared).map_err(|e| SuiteError::new(path, e))?;
    }
    // Parsed once for the cases that add nothing of their own.
    let shared_entities = shared
        .build(&snapshot.schema)
        .map_err(|e| SuiteError::new(path, e))?;
    let cases = raw
        .cases
        .into_iter()
        .map(|c| {
            let entities = match &c.entities {
                None => Ok(shared_entities.clone()),
                Some(spec) => {
                    let mut own = EntityList::default();
                    own.extend(&shared);
                    collect(spec, base, &mut own).and_then(|()| own.build(&snapshot.schema))
                }
            };
            let body = entities.map(|entities| CaseBody {
                request: RawRequest {
                    principal: c.principal,
                    action: c.action,
                    resource: c.resource,
                    context: c.context,
                },
                entities,
                expect: Expectation {
                    decision: c.decision,
                    reasons: c.reasons.map_or(ReasonCheck::Any, |r| {
                        ReasonCheck::Exactly(r.into_iter().collect::<BTreeSet<_>>())
                    }),
                    errors: c.errors,
                },
            });
            Case { name: c.name, body }
        })
        .collect();
    Ok(Suite {
        file: path.display().to_string(),
        cases,
    })
}
