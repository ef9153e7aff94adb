//! HTTP: the listener, the routing table, every status code and error body, and the
//! handlers of each surface. Only this module knows HTTP statuses and JSON bodies.
//!
//! - [`app`]: the application state, built once from configuration.
//! - [`cedar`], [`authzen`], [`gateway`], [`admin`]: the handlers of each surface.
//! - [`error`]: the one mapping of outcomes and errors to statuses and bodies.
//! - [`tls`]: HTTPS and mutual TLS for the listener.

pub mod admin;
pub mod app;
pub mod authzen;
pub mod cedar;
pub mod error;
pub mod gateway;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;

use crate::decision::{Call, Surface};
pub use app::App;
use error::{json_error, ApiError};

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
pub type Response = http::Response<Body>;
/// A handler's result: a response, or an error `handle` answers.
pub type Reply = Result<Response, ApiError>;

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

impl Ctx {
    /// A call of `surface` for this request: its decisions are recorded under its id.
    pub fn call(&self, surface: Surface) -> Call<'_> {
        let mut call = Call::new(surface, &self.request_id, &self.app.recorder);
        call.started = self.started;
        call
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response, Infallible> {
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
async fn route(ctx: &Ctx, req: Request<Incoming>) -> (&'static str, Reply) {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/healthz", &Method::GET) => ("healthz", Ok(admin::healthz())),
        ("/readyz", &Method::GET) => ("readyz", Ok(admin::readyz(ctx).await)),
        ("/metrics", &Method::GET) => ("metrics", Ok(admin::metrics(ctx))),
        ("/v1/policies", &Method::GET) => ("policies", Ok(admin::policies(ctx))),
        ("/v1/is_authorized", &Method::POST) => {
            ("is_authorized", cedar::is_authorized(ctx, req).await)
        }
        ("/v1/batch_is_authorized", &Method::POST) => (
            "batch_is_authorized",
            cedar::batch_is_authorized(ctx, req).await,
        ),
        (
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/v1/is_authorized"
            | "/v1/batch_is_authorized"
            | "/v1/policies",
            _,
        ) => ("other", Err(ApiError::method_not_allowed(&method, &path))),
        (p, _) if authzen::owns(p) => authzen::route(ctx, req).await,
        // The gateway endpoints take any method: the proxy may forward the original
        // one (Envoy always does).
        ("/forward-auth/nginx", _) => (
            "forward_auth_nginx",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Nginx).await),
        ),
        ("/forward-auth/traefik", _) => (
            "forward_auth_traefik",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Traefik).await),
        ),
        (p, _) if ctx.app.gateway.is_ext_authz(p) => (
            "ext_authz",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Envoy).await),
        ),
        _ => ("other", Err(ApiError::not_found(&path))),
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Reads a JSON body: checks the content type and the size limit, then decodes.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let limit = ctx.app.limits.max_body_bytes;
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    let too_large = || ApiError::body_too_large(limit);
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
