//! The operational endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, and
//! `/v1/policies` (what the service enforces right now, and whether the files on disk
//! could be loaded the last time they were read).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use cedar_policy::PolicyId;
use serde::Serialize;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;

use super::{json_response, Ctx, Response};
use crate::model::reload::ReloadFailure;
use crate::model::{PolicyInfo, PolicyKind, Problem, ReloadStatus, Snapshot};

pub fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// Ready when the entity source can serve (the first snapshot is loaded before the
/// listeners open) and, with keys fetched from an identity provider, a first key set
/// arrived. Until the source was usable once the status is `starting`;
/// afterwards a source that stops serving makes it `not_ready`.
pub async fn readyz(ctx: &Ctx) -> Response {
    // Signing keys fetched from an identity provider: without a first set no token
    // can be verified. Once fetched, a set is never dropped, so this only delays the
    // first `ready`.
    if let Some(reason) = ctx
        .app
        .gateway
        .settings
        .authenticator
        .remote_keys()
        .and_then(|k| k.not_ready())
    {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": reason}).to_string(),
        );
    }
    match ctx.app.entities.ready().await {
        Ok(()) => {
            ctx.app.became_ready.store(true, Ordering::Release);
            json_response(StatusCode::OK, r#"{"status":"ready"}"#.into())
        }
        Err(e) => {
            let status = if ctx.app.became_ready.load(Ordering::Acquire) {
                "not_ready"
            } else {
                "starting"
            };
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": status, "reason": e.to_string()}).to_string(),
            )
        }
    }
}

/// The OpenAPI 3.1 document of every route of both listeners (docs/openapi.json).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

pub fn openapi() -> Response {
    json_response(StatusCode::OK, OPENAPI.to_string())
}

pub fn metrics(ctx: &Ctx) -> Response {
    let mut r = json_response(StatusCode::OK, ctx.app.metrics.render());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

pub fn policies(ctx: &Ctx) -> Response {
    let snapshot = ctx.app.model.load();
    let body = PoliciesResponse::new(&snapshot, &ctx.app.model.status());
    json_response(
        StatusCode::OK,
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

#[derive(Debug, Serialize)]
pub struct PoliciesResponse {
    /// SHA-256 over every source file of the serving snapshot.
    pub hash: String,
    pub schema_hash: String,
    /// When the serving snapshot was built (RFC 3339).
    pub loaded_at: String,
    /// Static policies and template-linked policies: what takes part in decisions.
    pub active_policies: usize,
    pub policies: Vec<PolicyEntry>,
    pub templates: Vec<PolicyEntry>,
    pub links: Vec<LinkEntry>,
    pub reload: ReloadView,
}

#[derive(Debug, Serialize)]
pub struct PolicyEntry {
    pub id: String,
    pub file: String,
    pub line: Option<usize>,
    /// SHA-256 of the policy's text.
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct LinkEntry {
    pub id: String,
    pub template_id: Option<String>,
    /// Slot (`?principal`, `?resource`) to entity uid.
    pub args: BTreeMap<String, String>,
    pub file: String,
    /// SHA-256 of the template id and the arguments.
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct ReloadView {
    /// Whether file changes reload the model (SIGHUP always does).
    pub watching: bool,
    pub last_attempt_at: Option<String>,
    pub last_trigger: Option<&'static str>,
    /// `applied`, `unchanged` or `rejected`.
    pub last_result: Option<&'static str>,
    /// The last rejected reload, until a later reload succeeds.
    pub last_error: Option<ReloadErrorView>,
}

#[derive(Debug, Serialize)]
pub struct ReloadErrorView {
    pub at: String,
    pub trigger: &'static str,
    /// Every problem as `file:line:col: message`.
    pub messages: Vec<String>,
    pub problems: Vec<Problem>,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl PoliciesResponse {
    pub fn new(snapshot: &Snapshot, status: &ReloadStatus) -> Self {
        let entry = |p: &PolicyInfo| PolicyEntry {
            id: p.id.clone(),
            file: p.file.clone(),
            line: p.line,
            hash: p.hash.clone(),
        };
        let of_kind = |kind: PolicyKind| snapshot.info.iter().filter(move |p| p.kind == kind);
        let links = of_kind(PolicyKind::Link)
            .map(|p| {
                let linked = snapshot.policies.policy(&PolicyId::new(&p.id));
                LinkEntry {
                    id: p.id.clone(),
                    template_id: linked
                        .and_then(|l| l.template_id())
                        .map(ToString::to_string),
                    args: linked
                        .and_then(|l| l.template_links())
                        .map(|args| {
                            args.into_iter()
                                .map(|(slot, uid)| (slot.to_string(), uid.to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    file: p.file.clone(),
                    hash: p.hash.clone(),
                }
            })
            .collect();
        Self {
            hash: snapshot.hash.clone(),
            schema_hash: snapshot.schema_hash.clone(),
            loaded_at: rfc3339(snapshot.loaded_at),
            active_policies: snapshot.active_policy_count(),
            policies: of_kind(PolicyKind::Static).map(entry).collect(),
            templates: of_kind(PolicyKind::Template).map(entry).collect(),
            links,
            reload: ReloadView {
                watching: status.watching,
                last_attempt_at: status.last_attempt.as_ref().map(|a| rfc3339(a.at)),
                last_trigger: status.last_attempt.as_ref().map(|a| a.trigger.name()),
                last_result: status.last_attempt.as_ref().map(|a| a.result),
                last_error: status.last_error.as_ref().map(ReloadErrorView::from),
            },
        }
    }
}

impl From<&ReloadFailure> for ReloadErrorView {
    fn from(f: &ReloadFailure) -> Self {
        Self {
            at: rfc3339(f.at),
            trigger: f.trigger.name(),
            messages: f.problems.iter().map(ToString::to_string).collect(),
            problems: f.problems.clone(),
        }
    }
}
