//! The AuthZEN HTTP endpoints: read the body, hand it to [`crate::authzen`], write the
//! answer. `route` hands every `/access/v1/...` and discovery request here.

use http::{HeaderMap, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{json_response, read_json, Ctx, Reply, Response};
use crate::authzen::wire::{
    self, DecisionOut, EvaluationsOut, SearchKind, DISCOVERY, EVALUATION, EVALUATIONS,
    RESOURCE_PLAN, SEARCH_ACTION, SEARCH_RESOURCE, SEARCH_SUBJECT,
};
use crate::authzen::{self, search, AuthzenError, Evaluations, Scope};
use crate::decision::{Call, Surface};
use crate::model::Snapshot;

/// The header that asks for reasons on every decision of a request.
pub const EXPLAIN_HEADER: &str = "x-portcullis-explain";

/// Whether `path` is one of this module's.
pub fn owns(path: &str) -> bool {
    path.starts_with("/access/v1/") || path == DISCOVERY
}

/// Routes an AuthZEN request. Returns the endpoint label for metrics and the response.
pub async fn route(ctx: &Ctx, req: Request<Incoming>) -> (&'static str, Reply) {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        (EVALUATION, &Method::POST) => ("authzen_evaluation", evaluation(ctx, req).await),
        (EVALUATIONS, &Method::POST) => ("authzen_evaluations", evaluations(ctx, req).await),
        (SEARCH_SUBJECT, &Method::POST) => (
            "authzen_search_subject",
            search_endpoint(ctx, req, SearchKind::Subject).await,
        ),
        (SEARCH_RESOURCE, &Method::POST) => (
            "authzen_search_resource",
            search_endpoint(ctx, req, SearchKind::Resource).await,
        ),
        (SEARCH_ACTION, &Method::POST) => (
            "authzen_search_action",
            search_endpoint(ctx, req, SearchKind::Action).await,
        ),
        (RESOURCE_PLAN, &Method::POST) => ("authzen_resource_plan", resource_plan(ctx, req).await),
        (DISCOVERY, &Method::GET) => ("authzen_discovery", Ok(discovery(ctx, &req))),
        (
            EVALUATION | EVALUATIONS | SEARCH_SUBJECT | SEARCH_RESOURCE | SEARCH_ACTION
            | RESOURCE_PLAN | DISCOVERY,
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

fn explain_header(headers: &HeaderMap) -> bool {
    headers
        .get(EXPLAIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn json_ok<T: serde::Serialize>(value: &T) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(value).unwrap_or_default(),
    )
}

/// The AuthZEN scope of one HTTP request.
fn scope<'a>(ctx: &'a Ctx, snapshot: &'a Snapshot, call: &'a Call<'a>) -> Scope<'a> {
    Scope {
        az: &ctx.app.authzen,
        snapshot,
        source: ctx.app.entities.as_ref(),
        call,
        batch_limit: ctx.app.limits.batch_limit,
    }
}

async fn evaluation(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let explain = explain_header(req.headers());
    let body = body(ctx, req).await?;
    let e = wire::evaluation(&body).map_err(AuthzenError::from)?;
    let snapshot = ctx.app.model.load();
    let call = ctx.call(Surface::Authzen);
    let scope = scope(ctx, &snapshot, &call);
    Ok(json_ok(&authzen::evaluate(&scope, &e, explain).await?))
}

/// A failed evaluation inside a batch: closed, with the error in its context.
fn failed(ctx: &Ctx, e: &AuthzenError, message: String) -> DecisionOut {
    // Outcomes of the pipeline (the store, described entities) were counted when
    // they were recorded; the rest are the caller's mistakes, counted here.
    if !matches!(
        e,
        AuthzenError::StoreUnavailable(_) | AuthzenError::InvalidProperties(_)
    ) {
        ctx.app.metrics.error(e.code());
    }
    let api = ApiError::from(e);
    let mut error = Map::new();
    error.insert("status".into(), Value::from(api.status.as_u16()));
    error.insert("code".into(), Value::from(api.code));
    error.insert("message".into(), Value::from(message));
    let mut context = Map::new();
    context.insert("error".into(), Value::Object(error));
    DecisionOut {
        decision: false,
        context: Some(context),
    }
}

async fn evaluations(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let explain = explain_header(req.headers());
    let body = body(ctx, req).await?;
    let request = wire::evaluations(&body).map_err(AuthzenError::from)?;
    let snapshot = ctx.app.model.load();
    let call = ctx.call(Surface::Authzen);
    let answer = authzen::evaluations(&scope(ctx, &snapshot, &call), request, explain).await?;
    let items = match answer {
        Evaluations::Single(d) => return Ok(json_ok(&d)),
        Evaluations::Batch(items) => items,
    };
    let evaluations = items
        .into_iter()
        .map(|item| {
            let mut d = match item.answer {
                Ok(d) => d,
                Err((e, message)) => failed(ctx, &e, message),
            };
            if item.ended_batch {
                // As in the spec's example: the short-circuiting deny says why the
                // list ends here.
                let c = d.context.get_or_insert_with(Map::new);
                c.entry("code").or_insert_with(|| Value::from("200"));
                c.entry("reason")
                    .or_insert_with(|| Value::from("deny_on_first_deny"));
            }
            d
        })
        .collect();
    Ok(json_ok(&EvaluationsOut { evaluations }))
}

async fn search_endpoint(ctx: &Ctx, req: Request<Incoming>, kind: SearchKind) -> Reply {
    let body = body(ctx, req).await?;
    let s = wire::search(&body, kind).map_err(AuthzenError::from)?;
    let snapshot = ctx.app.model.load();
    let call = ctx.call(Surface::Authzen);
    let scope = scope(ctx, &snapshot, &call);
    let out = match kind {
        SearchKind::Action => search::actions(&scope, &s, &body).await?,
        _ => search::entities(&scope, &s, kind, &body).await?,
    };
    Ok(json_ok(&out))
}

/// The query plan of a resource search: the same body as the search, answered with
/// the plan (`/v1/query_plan`'s answer) instead of the list.
async fn resource_plan(ctx: &Ctx, req: Request<Incoming>) -> Reply {
    let body = body(ctx, req).await?;
    let s = wire::search(&body, SearchKind::Resource).map_err(AuthzenError::from)?;
    let snapshot = ctx.app.model.load();
    let call = ctx.call(Surface::Authzen);
    let scope = scope(ctx, &snapshot, &call);
    let request = search::plan_request(&scope, &s)?;
    let plan = crate::plan::plan_from_source(&snapshot, scope.source, &request)
        .await
        .map_err(|e| ApiError::from(&e))?;
    Ok(json_ok(&plan))
}

/// The discovery document: every endpoint under the public base URL, or, when none is
/// configured, under the scheme and host the request came in on.
fn discovery(ctx: &Ctx, req: &Request<Incoming>) -> Response {
    let configured = ctx.app.authzen.public_base_url.clone();
    // Without a configured base the document echoes the caller's `Host`: a shared cache
    // must not keep it, or one client's forged `Host` would be served to the others.
    let cache = if configured.is_some() {
        "max-age=300"
    } else {
        "no-store"
    };
    let base = configured.unwrap_or_else(|| {
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
    let mut r = json_ok(&authzen::metadata(&base));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(cache),
    );
    r
}
