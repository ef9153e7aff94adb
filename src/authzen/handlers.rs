//! The AuthZEN HTTP endpoints. `http::route` hands every `/access/v1/...` and
//! discovery request here.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::wire::{
    self, DecisionOut, Evaluation, EvaluationsOut, EvaluationsRequest, Metadata, SearchKind,
    Semantic,
};
use super::{decide, decision_out, explain_in, search, Authzen, Scope, EXPLAIN_HEADER};
use crate::http::error::ApiError;
use crate::http::{json_response, read_json, record_decision, Ctx};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

const EVALUATION: &str = "/access/v1/evaluation";
const EVALUATIONS: &str = "/access/v1/evaluations";
const SEARCH_SUBJECT: &str = "/access/v1/search/subject";
const SEARCH_RESOURCE: &str = "/access/v1/search/resource";
const SEARCH_ACTION: &str = "/access/v1/search/action";
pub const DISCOVERY: &str = "/.well-known/authzen-configuration";

/// Whether `path` is one of this module's.
pub fn owns(path: &str) -> bool {
    path.starts_with("/access/v1/") || path == DISCOVERY
}

/// Routes an AuthZEN request. Returns the endpoint label for metrics and the response.
pub async fn route(ctx: &Ctx, req: Request<Incoming>) -> (&'static str, Reply) {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let Some(az) = ctx.app.authzen.clone() else {
        return ("other", Err(ApiError::not_found(&path)));
    };
    match (path.as_str(), &method) {
        (EVALUATION, &Method::POST) => ("authzen_evaluation", evaluation(ctx, &az, req).await),
        (EVALUATIONS, &Method::POST) => ("authzen_evaluations", evaluations(ctx, &az, req).await),
        (SEARCH_SUBJECT, &Method::POST) => (
            "authzen_search_subject",
            search_endpoint(ctx, &az, req, SearchKind::Subject).await,
        ),
        (SEARCH_RESOURCE, &Method::POST) => (
            "authzen_search_resource",
            search_endpoint(ctx, &az, req, SearchKind::Resource).await,
        ),
        (SEARCH_ACTION, &Method::POST) => (
            "authzen_search_action",
            search_endpoint(ctx, &az, req, SearchKind::Action).await,
        ),
        (DISCOVERY, &Method::GET) => ("authzen_discovery", Ok(discovery(ctx, &az, &req))),
        (
            EVALUATION | EVALUATIONS | SEARCH_SUBJECT | SEARCH_RESOURCE | SEARCH_ACTION | DISCOVERY,
            _,
        ) => ("other", Err(ApiError::method_not_allowed(&method, &path))),
        _ => ("other", Err(ApiError::not_found(&path))),
    }
}

/// Reads the JSON body. The spec answers every malformed request, a wrong content
/// type included, with 400.
async fn body(ctx: &Ctx, req: Request<Incoming>) -> Result<Value, ApiError> {
    read_json::<Value>(ctx, req).await.map_err(|mut e| {
        if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            e.status = StatusCode::BAD_REQUEST;
        }
        e
    })
}

fn wire_error(e: wire::WireError) -> ApiError {
    ApiError::bad_request(e.code, e.message)
}

fn explain_header(headers: &HeaderMap) -> bool {
    headers
        .get(EXPLAIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn json_ok<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        serde_json::to_string(value).unwrap_or_default(),
    )
}

/// One evaluation: mapped, checked, decided, recorded.
async fn evaluate(
    ctx: &Ctx,
    scope: &Scope<'_>,
    e: &Evaluation,
    explain: bool,
) -> Result<DecisionOut, ApiError> {
    let principal = scope.uid(&e.subject, "subject")?;
    let action = scope.action(&e.action, "action")?;
    let resource = scope.uid(&e.resource, "resource")?;
    let context = scope.context(&action, e.context.as_ref(), e.action.properties.as_ref())?;
    let checked = scope.check(principal.clone(), action, resource.clone(), context)?;
    let fetched = scope
        .entities(
            &[principal.clone(), resource.clone()],
            &[
                (&principal, e.subject.properties.as_ref(), "subject"),
                (&resource, e.resource.properties.as_ref(), "resource"),
            ],
        )
        .await?;
    let d = decide(scope.snapshot, &checked, &fetched);
    record_decision(ctx, &checked, &d);
    Ok(decision_out(&d, explain || explain_in(e.context.as_ref())))
}

async fn evaluation(ctx: &Ctx, az: &Authzen, req: Request<Incoming>) -> Reply {
    let explain = explain_header(req.headers());
    let body = body(ctx, req).await?;
    let e = wire::evaluation(&body).map_err(wire_error)?;
    let snapshot = ctx.app.policies.load_full();
    let scope = Scope::new(az, &snapshot, &ctx.app.entities);
    Ok(json_ok(&evaluate(ctx, &scope, &e, explain).await?))
}

/// A failed evaluation inside a batch: closed, with the error in its context.
fn failed(status: StatusCode, code: &str, message: String) -> DecisionOut {
    let mut error = Map::new();
    error.insert("status".into(), Value::from(status.as_u16()));
    error.insert("code".into(), Value::from(code));
    error.insert("message".into(), Value::from(message));
    let mut context = Map::new();
    context.insert("error".into(), Value::Object(error));
    DecisionOut {
        decision: false,
        context: Some(context),
    }
}

async fn evaluations(ctx: &Ctx, az: &Authzen, req: Request<Incoming>) -> Reply {
    let explain = explain_header(req.headers());
    let body = body(ctx, req).await?;
    let batch = wire::evaluations(&body).map_err(wire_error)?;
    let snapshot = ctx.app.policies.load_full();
    let scope = Scope::new(az, &snapshot, &ctx.app.entities);
    let batch = match batch {
        EvaluationsRequest::Single(single) => {
            return Ok(json_ok(&evaluate(ctx, &scope, &single, explain).await?))
        }
        EvaluationsRequest::Batch(batch) => batch,
    };
    let limit = ctx.app.options.batch_limit;
    if batch.items.len() > limit {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "`evaluations` holds {} evaluations; the limit is {limit}",
                batch.items.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(batch.items.len());
    for (i, item) in batch.items.iter().enumerate() {
        let mut d = match item {
            Err(e) => {
                ctx.app.metrics.error(e.code);
                failed(StatusCode::BAD_REQUEST, e.code, e.message.clone())
            }
            Ok(e) => match evaluate(ctx, &scope, e, explain).await {
                Ok(d) => d,
                Err(err) => {
                    // Counted like a whole request's error, though it fails only
                    // this evaluation.
                    ctx.app.metrics.error(err.code);
                    failed(
                        err.status,
                        err.code,
                        format!("`evaluations[{i}]`: {}", err.message),
                    )
                }
            },
        };
        let stop = match batch.semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !d.decision,
            Semantic::PermitOnFirstPermit => d.decision,
        };
        if stop && batch.semantic == Semantic::DenyOnFirstDeny {
            // As in the spec's example: the short-circuiting deny says why the list
            // ends here.
            let c = d.context.get_or_insert_with(Map::new);
            c.entry("code").or_insert_with(|| Value::from("200"));
            c.entry("reason")
                .or_insert_with(|| Value::from("deny_on_first_deny"));
        }
        out.push(d);
        if stop {
            break;
        }
    }
    Ok(json_ok(&EvaluationsOut { evaluations: out }))
}

async fn search_endpoint(
    ctx: &Ctx,
    az: &Authzen,
    req: Request<Incoming>,
    kind: SearchKind,
) -> Reply {
    let body = body(ctx, req).await?;
    let s = wire::search(&body, kind).map_err(wire_error)?;
    let snapshot = ctx.app.policies.load_full();
    let scope = Scope::new(az, &snapshot, &ctx.app.entities);
    let out = match kind {
        SearchKind::Action => search::actions(ctx, &scope, &s, &body).await?,
        _ => search::entities(ctx, &scope, &s, kind, &body).await?,
    };
    Ok(json_ok(&out))
}

/// The discovery document: every endpoint under the public base URL, or, when none is
/// configured, under the scheme and host the request came in on.
fn discovery(ctx: &Ctx, az: &Authzen, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let base = az.public_base_url.clone().unwrap_or_else(|| {
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "localhost".to_string());
        let scheme = if ctx.app.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    });
    let doc = Metadata {
        policy_decision_point: base.clone(),
        access_evaluation_endpoint: format!("{base}{EVALUATION}"),
        access_evaluations_endpoint: format!("{base}{EVALUATIONS}"),
        search_subject_endpoint: format!("{base}{SEARCH_SUBJECT}"),
        search_resource_endpoint: format!("{base}{SEARCH_RESOURCE}"),
        search_action_endpoint: format!("{base}{SEARCH_ACTION}"),
    };
    let mut r = json_ok(&doc);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=300"),
    );
    r
}
