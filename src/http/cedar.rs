//! The Cedar-native API: `POST /v1/is_authorized` and `/v1/batch_is_authorized`, with
//! their wire types (separate from the domain types of `decision`; the conversions are
//! explicit).

use cedar_policy::EntityUid;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{json_error, outcome_error, ApiError};
use super::{decode_json, json_response, json_strings, read_json_body, Ctx, Reply};
use crate::decision::{self, CheckedRequest, Decision, Field, Outcome, Surface};
use crate::model::Snapshot;

/// `POST /v1/is_authorized`: uids in Cedar string syntax, as cedar-agent accepts.
///
/// The uids are kept as the JSON text they were sent as: the common form
/// (`"Type::\"id\""`) is read from that text without unescaping it into a string
/// first ([`uid_field`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedRequest<'a> {
    #[serde(borrow)]
    pub principal: &'a RawValue,
    #[serde(borrow)]
    pub action: &'a RawValue,
    #[serde(borrow)]
    pub resource: &'a RawValue,
    #[serde(default)]
    pub context: Option<serde_json::Value>,
}

impl IsAuthorizedRequest<'_> {
    /// The request checked against the snapshot's schema.
    pub fn check(self, snapshot: &Snapshot) -> Result<CheckedRequest, ApiError> {
        let principal = uid_field(snapshot, Field::Principal, self.principal)?;
        let action = uid_field(snapshot, Field::Action, self.action)?;
        let resource = uid_field(snapshot, Field::Resource, self.resource)?;
        Ok(decision::check_uids(
            snapshot,
            principal,
            action,
            resource,
            self.context,
        )?)
    }
}

/// The uid a JSON string holds in Cedar syntax. `"Type::\"id\""` with a type of the
/// schema and a plain id (the text a JSON writer makes of `Type::"id"`) is read where
/// it lies; anything else is unescaped by serde_json and read as
/// [`decision::parse_uid`] reads it, which gives the same uid or the error.
fn uid_field(snapshot: &Snapshot, field: Field, raw: &RawValue) -> Result<EntityUid, ApiError> {
    let text = raw.get();
    if let Some(uid) = plain_uid_in_json(snapshot, text) {
        return Ok(uid);
    }
    let Ok(text) = serde_json::from_str::<String>(text) else {
        let found = match text.bytes().next() {
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b'n') => "null",
            Some(b't' | b'f') => "a boolean",
            _ => "a number",
        };
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "`{}`: invalid type: {found}, expected a string (an entity uid, `Type::\"id\"`)",
                field.name()
            ),
        ));
    };
    Ok(decision::parse_uid(snapshot, field, &text)?)
}

/// The uid of a JSON string `"Type::\\"id\\""` whose parts are plain
/// ([`decision::plain_uid_parts`]); `None` for any other text.
fn plain_uid_in_json(snapshot: &Snapshot, text: &str) -> Option<EntityUid> {
    let inner = text.strip_prefix('"')?.strip_suffix("\\\"\"")?;
    // The first backslash must be the one of `::\"` that opens the id: before it the
    // type holds no escape, and a plain id holds no backslash, so both are their own
    // unescaped text. (A byte search: no substring searcher set up per uid.)
    let at = inner.bytes().position(|b| b == b'\\')?;
    let ty = inner.get(..at)?.strip_suffix("::")?;
    let id = inner.get(at..)?.strip_prefix("\\\"")?;
    decision::plain_uid_parts(snapshot, ty, id)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub requests: Vec<&'a RawValue>,
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
    let bytes = read_json_body(ctx, req).await?;
    let body: IsAuthorizedRequest<'_> = decode_json(&bytes)?;
    let snapshot = ctx.app.model.load();
    let checked = body.check(&snapshot)?;
    let call = ctx.call(Surface::Cedar);
    let outcome =
        decision::decide(&snapshot, ctx.app.entities.as_ref(), &call, &checked, &[]).await;
    if let Some(e) = outcome_error(&outcome) {
        return Err(e);
    }
    let body = match &outcome {
        Outcome::Decided(d) => decision_json(d),
        other => serde_json::to_string(&IsAuthorizedResponse::from(other)).unwrap_or_default(),
    };
    Ok(json_response(StatusCode::OK, body))
}

/// The JSON of [`IsAuthorizedResponse`] for a decision, written from where its
/// diagnostics lie (no copy, no serializer set up per answer): every answer of this
/// endpoint writes one.
fn decision_json(d: &Decision) -> String {
    let texts = d
        .reasons
        .iter()
        .chain(&d.errors)
        .map(String::len)
        .sum::<usize>();
    let mut out = String::with_capacity(64 + texts + 4 * (d.reasons.len() + d.errors.len()));
    out.push_str(if d.allowed {
        r#"{"decision":"Allow","diagnostics":{"reason":["#
    } else {
        r#"{"decision":"Deny","diagnostics":{"reason":["#
    });
    json_strings(&mut out, &d.reasons);
    out.push_str(r#"],"errors":["#);
    json_strings(&mut out, &d.errors);
    out.push_str("]}}");
    out
}

pub async fn batch_is_authorized(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let bytes = read_json_body(ctx, req).await?;
    let body: BatchRequest<'_> = decode_json(&bytes)?;
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
    for (i, item) in body.requests.into_iter().enumerate() {
        // The item's name is written only for an error.
        let at = || format!("`requests[{i}]`");
        let one: IsAuthorizedRequest<'_> =
            serde_json::from_str(item.get()).map_err(|e| json_error(&e).at(&at()))?;
        checked.push(one.check(&snapshot).map_err(|e| e.at(&at()))?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// A uid read from its JSON text is the uid Cedar's parser reads from the
    /// unescaped string, or an error where Cedar has one; the common form is read
    /// where it lies.
    #[test]
    fn uids_read_from_json_text_are_cedars() {
        let snapshot = crate::model::compile::compile(&crate::model::Sources::embedded()).unwrap();
        let texts = [
            r#""Portal::User::\"bea\"""#,
            r#""Portal::Invoice::\"inv-1001\"""#,
            r#""Portal::User::\"\"""#,
            r#""Portal::User::\"with space\"""#,
            r#""Portal::User::\"a::\"b\"""#,
            r#""Portal::User::\"a\\\"""#,
            r#""Portal::User::\"it's\"""#,
            r#""Portal::User::\u0022bea\u0022""#,
            r#""Portal::User::\"b\u0065a\"""#,
            r#""Portal::User::\"tab\there\"""#,
            r#""Portal\u003a:User::\"bea\"""#,
            r#""Portal::Nope::\"bea\"""#,
            r#""User::\"bea\"""#,
            r#"" Portal::User::\"bea\"""#,
            r#""Portal::User::\"bea\" ""#,
            r#""Portal::User::\"bea""#,
            r#""Portal::User::bea""#,
            r#""Portal::User::\"é\"""#,
            r#""""#,
            "7",
            "null",
            "{}",
            "[]",
            "true",
        ];
        for text in texts {
            let raw = RawValue::from_string(text.to_string()).unwrap();
            let cedar = serde_json::from_str::<String>(text)
                .ok()
                .and_then(|s| EntityUid::from_str(&s).ok());
            let ours = uid_field(&snapshot, Field::Principal, &raw).ok();
            assert_eq!(ours, cedar, "{text}");
            if let Some(fast) = plain_uid_in_json(&snapshot, text) {
                assert_eq!(Some(fast), cedar, "{text}");
            }
        }
        for plain in [r#""Portal::User::\"bea\"""#, r#""Portal::User::\"\"""#] {
            assert!(plain_uid_in_json(&snapshot, plain).is_some(), "{plain}");
        }
    }

    /// The written answer is byte for byte what serde_json writes for the wire type,
    /// for texts that need escaping and texts that do not.
    #[test]
    fn a_decision_is_written_as_serde_writes_its_wire_type() {
        let texts = [
            "member-invoices",
            "",
            "a \"quoted\" id",
            "back\\slash",
            "tab\there",
            "new\nline",
            "\u{1}\u{1f}\u{7f}",
            "é and 😀",
            "`policy0`: entity `Portal::User::\"x\"` does not exist",
        ];
        let mut cases = vec![Decision {
            allowed: false,
            reasons: vec![],
            errors: vec![],
        }];
        for (i, text) in texts.iter().enumerate() {
            let other = texts[(i + 1) % texts.len()].to_string();
            cases.push(Decision {
                allowed: i % 2 == 0,
                reasons: vec![text.to_string()],
                errors: vec![other.clone(), text.to_string()],
            });
            cases.push(Decision {
                allowed: i % 2 == 1,
                reasons: vec![other, text.to_string(), "p".into()],
                errors: vec![],
            });
        }
        for d in &cases {
            let expected = serde_json::to_string(&IsAuthorizedResponse::from(d)).unwrap();
            assert_eq!(decision_json(d), expected, "{d:?}");
        }
    }
}
