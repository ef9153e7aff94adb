//! Wire types of the Cedar-native API. Separate from the domain types of `decision`;
//! the conversions are explicit.

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, RawRequest};

/// `POST /v1/is_authorized`: uids in Cedar string syntax, as cedar-agent accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedRequest {
    pub principal: String,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

impl From<IsAuthorizedRequest> for RawRequest {
    fn from(r: IsAuthorizedRequest) -> Self {
        RawRequest {
            principal: r.principal,
            action: r.action,
            resource: r.resource,
            context: r.context,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub requests: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IsAuthorizedResponse {
    pub decision: WireDecision,
    pub diagnostics: Diagnostics,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
pub enum WireDecision {
    Allow,
    Deny,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Diagnostics {
    pub reason: Vec<String>,
    pub errors: Vec<String>,
}

impl From<&Decision> for IsAuthorizedResponse {
    fn from(d: &Decision) -> Self {
        Self {
            decision: if d.allowed {
                WireDecision::Allow
            } else {
                WireDecision::Deny
            },
            diagnostics: Diagnostics {
                reason: d.reasons.clone(),
                errors: d.errors.clone(),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub responses: Vec<IsAuthorizedResponse>,
}
