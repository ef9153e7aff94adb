//! HTTP: the listener, routing, the wire format and error responses. Only this module
//! knows JSON bodies and status codes.

pub mod error;
pub mod gateway;
pub mod policies;
pub mod tls;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::decision::{self, CheckedRequest, Decision, RawRequest};
use crate::server::App;
use error::{json_error, ApiError};
use wire::{BatchRequest, BatchResponse, IsAuthorizedRequest, IsAuthorizedResponse};

pub const REQUEST_ID: &str = "x-request-id";

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and
/// gives open connections `grace` to finish before returning.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Accept errors (e.g. too many open files) are transient:
                        // back off briefly instead of spinning or exiting.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let watcher = graceful.watcher();
                match app.tls.clone() {
                    None => spawn_connection(&builder, watcher, stream, app),
                    Some(tls) => {
                        let builder = builder.clone();
                        // The handshake runs in its own task so that a slow or silent
                        // client cannot hold up the accept loop; it gets a bounded time.
                        tokio::spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => spawn_connection(&builder, watcher, stream, app),
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    Ok(())
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection (plain or TLS) in its own task, watched by the
/// graceful shutdown.
fn spawn_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    app: Arc<App>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(app.clone(), req));
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    tokio::spawn(async move {
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection closed with error");
        }
    });
}

type Body = Full<Bytes>;

/// The request id: the caller's when it is a sane header value, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Per-request facts the handlers need besides the body.
pub struct Ctx {
    pub app: Arc<App>,
    pub request_id: String,
    pub started: Instant,
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let rid = request_id(req.headers());
    let ctx = Ctx {
        app: app.clone(),
        request_id: rid.clone(),
        started,
    };
    let (endpoint, result) = route(&ctx, req).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics.error(e.code);
            json_response(e.status, e.body())
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    app.metrics
        .request_duration
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Routes a request. Returns the endpoint label for metrics (a fixed name, never the
/// path as sent) and the response.
async fn route(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/healthz", &Method::GET) => (
            "healthz",
            Ok(json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())),
        ),
        ("/readyz", &Method::GET) => ("readyz", Ok(readyz(ctx).await)),
        ("/metrics", &Method::GET) => ("metrics", Ok(metrics(ctx))),
        ("/v1/is_authorized", &Method::POST) => ("is_authorized", is_authorized(ctx, req).await),
        ("/v1/policies", &Method::GET) => ("policies", Ok(list_policies(ctx))),
        ("/v1/batch_is_authorized", &Method::POST) => {
            ("batch_is_authorized", batch_is_authorized(ctx, req).await)
        }
        (
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/v1/is_authorized"
            | "/v1/batch_is_authorized"
            | "/v1/policies",
            _,
        ) => ("other", Err(ApiError::method_not_allowed(&method, &path))),
        (p, _) if crate::authzen::handlers::owns(p) => {
            crate::authzen::handlers::route(ctx, req).await
        }
        // The gateway endpoints take any method: the proxy may forward the original
        // one (Envoy always does).
        ("/forward-auth/nginx", _) => (
            "forward_auth_nginx",
            gateway::check(ctx, req, crate::gateway::Protocol::Nginx).await,
        ),
        ("/forward-auth/traefik", _) => (
            "forward_auth_traefik",
            gateway::check(ctx, req, crate::gateway::Protocol::Traefik).await,
        ),
        (p, _) if gateway::is_ext_authz(ctx, p) => (
            "ext_authz",
            gateway::check(ctx, req, crate::gateway::Protocol::Envoy).await,
        ),
        _ => ("other", Err(ApiError::not_found(&path))),
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn readyz(ctx: &Ctx) -> Response<Body> {
    match ctx.app.entities.ready().await {
        Ok(()) => json_response(StatusCode::OK, r#"{"status":"ready"}"#.into()),
        Err(e) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": e.to_string()}).to_string(),
        ),
    }
}

fn metrics(ctx: &Ctx) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(ctx.app.metrics.render())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn list_policies(ctx: &Ctx) -> Response<Body> {
    let snapshot = ctx.app.policies.load();
    let body = policies::PoliciesResponse::new(&snapshot, &ctx.app.reload.status());
    json_response(
        StatusCode::OK,
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// Reads a JSON body: checks the content type and the size limit, then decodes.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let limit = ctx.app.options.max_body_bytes;
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "`Content-Type` must be `application/json`",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(ApiError::bad_request(
                "body_unreadable",
                format!("request body could not be read: {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| json_error(&e))
}

/// Decides one checked request, counts it and logs it.
pub async fn decide_logged(
    ctx: &Ctx,
    checked: &CheckedRequest,
    snapshot: &crate::policy::PolicySnapshot,
) -> Decision {
    let decision = decision::decide_with(snapshot, &ctx.app.entities, checked).await;
    record_decision(ctx, checked, &decision);
    decision
}

/// Counts and logs a decision made by any endpoint.
pub fn record_decision(ctx: &Ctx, checked: &CheckedRequest, decision: &Decision) {
    let action = checked.action.id().unescaped();
    ctx.app.metrics.decision(decision.allowed, action);
    if !decision.errors.is_empty() {
        ctx.app.metrics.error(if decision.source_unavailable {
            "entity_store_unavailable"
        } else {
            "evaluation"
        });
    }
    if ctx.app.should_log_decision() {
        tracing::info!(
            target: "portcullis::decision",
            request_id = %ctx.request_id,
            principal = %checked.principal,
            action = %checked.action,
            resource = %checked.resource,
            decision = if decision.allowed { "Allow" } else { "Deny" },
            policies = ?decision.reasons,
            errors = ?decision.errors,
            latency_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "decision"
        );
    }
}

async fn is_authorized(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: IsAuthorizedRequest = read_json(ctx, req).await?;
    let snapshot = ctx.app.policies.load_full();
    let checked = decision::check(&snapshot, &RawRequest::from(body))?;
    let decision = decide_logged(ctx, &checked, &snapshot).await;
    if decision.source_unavailable {
        return Err(ApiError::unavailable(decision.errors.join("; ")));
    }
    let body = serde_json::to_string(&IsAuthorizedResponse::from(&decision)).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}

async fn batch_is_authorized(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: BatchRequest = read_json(ctx, req).await?;
    let limit = ctx.app.options.batch_limit;
    if body.requests.len() > limit {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "`requests` holds {} requests; the limit is {limit}",
                body.requests.len()
            ),
        ));
    }
    let snapshot = ctx.app.policies.load_full();
    // Check every request before deciding any, so a bad one fails the batch whole.
    let mut checked = Vec::with_capacity(body.requests.len());
    for (i, value) in body.requests.into_iter().enumerate() {
        let at = format!("`requests[{i}]`");
        let one: IsAuthorizedRequest =
            serde_json::from_value(value).map_err(|e| json_error(&e).at(&at))?;
        checked.push(
            decision::check(&snapshot, &RawRequest::from(one))
                .map_err(|e| ApiError::from(e).at(&at))?,
        );
    }
    let mut responses = Vec::with_capacity(checked.len());
    for c in &checked {
        let decision = decide_logged(ctx, c, &snapshot).await;
        if decision.source_unavailable {
            return Err(ApiError::unavailable(decision.errors.join("; ")));
        }
        responses.push(IsAuthorizedResponse::from(&decision));
    }
    let body = serde_json::to_string(&BatchResponse { responses }).unwrap_or_default();
    Ok(json_response(StatusCode::OK, body))
}
