//! The Cedar-native API: `POST /v1/is_authorized` and `/v1/batch_is_authorized`, with
//! their wire types (separate from the domain types of `decision`; the conversions are
//! explicit).

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::error::{json_error, outcome_error, ApiError};
use super::{json_response, read_json, Ctx, Reply};
use crate::decision::{self, Decision, Outcome, RawRequest, Surface};

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
    /// In a batch, the error that closed this request alone (the store could not be
    /// reached, say); the decision is then a Deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
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

/// The error of one batch item: the status and body the request would have had alone.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemError {
    pub status: u16,
    pub code: String,
    pub message: String,
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
            error: None,
        }
    }
}

impl From<&Outcome> for IsAuthorizedResponse {
    fn from(o: &Outcome) -> Self {
        let mut r = Self::from(&o.decision());
        r.error = outcome_error(o).map(|e| ItemError {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message,
        });
        r
    }
}

#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub responses: Vec<IsAuthorizedResponse>,
}

pub async fn is_authorized(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let body: IsAuthorizedRequest = read_json(ctx, req).await?;
    let snapshot = ctx.app.model.load();
    let checked = decision::check(&snapshot, &RawRequest::from(body))?;
    let call = ctx.call(Surface::Cedar);
    let outcome =
        decision::decide(&snapshot, ctx.app.entities.as_ref(), &call, &checked, &[]).await;
    if let Some(e) = outcome_error(&outcome) {
        return Err(e);
    }
    let body = match &outcome {
        // A decision is written from where it lies, without copying its diagnostics.
        Outcome::Decided(d) => serde_json::to_string(&DecisionRef::from(d)),
        other => serde_json::to_string(&IsAuthorizedResponse::from(other)),
    };
    Ok(json_response(StatusCode::OK, body.unwrap_or_default()))
}

/// [`IsAuthorizedResponse`] of a decision, borrowing its diagnostics: the same JSON.
#[derive(Serialize)]
struct DecisionRef<'a> {
    decision: WireDecision,
    diagnostics: DiagnosticsRef<'a>,
}

#[derive(Serialize)]
struct DiagnosticsRef<'a> {
    reason: &'a [String],
    errors: &'a [String],
}

impl<'a> From<&'a Decision> for DecisionRef<'a> {
    fn from(d: &'a Decision) -> Self {
        Self {
            decision: if d.allowed {
                WireDecision::Allow
            } else {
                WireDecision::Deny
            },
            diagnostics: DiagnosticsRef {
                reason: &d.reasons,
                errors: &d.errors,
            },
        }
    }
}

pub async fn batch_is_authorized(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let body: BatchRequest = read_json(ctx, req).await?;
    let limit = ctx.app.limits.batch_limit;
    if body.requests.len() > limit {
        return Err(ApiError::batch_too_large(
            "requests",
            body.requests.len(),
            limit,
        ));
    }
    let snapshot = ctx.app.model.load();
    // Check every request before deciding any, so a malformed one fails the batch
    // whole; an outcome (a store that cannot be reached) closes only its own item.
    let mut checked = Vec::with_capacity(body.requests.len());
    for (i, value) in body.requests.into_iter().enumerate() {
        // The item's name is written only for an error.
        let at = || format!("`requests[{i}]`");
        let one: IsAuthorizedRequest =
            serde_json::from_value(value).map_err(|e| json_error(&e).at(&at()))?;
        checked.push(
            decision::check(&snapshot, &RawRequest::from(one))
                .map_err(|e| ApiError::from(e).at(&at()))?,
        );
    }
    let call = ctx.call(Surface::Cedar);
    let mut responses = Vec::with_capacity(checked.len());
    for c in &checked {
        let outcome = decision::decide(&snapshot, ctx.app.entities.as_ref(), &call, c, &[]).await;
        responses.push(IsAuthorizedResponse::from(&outcome));
    }
    let body = serde_json::to_string(&BatchResponse { responses }).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}
