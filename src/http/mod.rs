//! HTTP: the listener, the routing table, every status code and error body, and the
//! handlers of each surface. Only this module knows HTTP statuses and JSON bodies.
//!
//! - [`app`]: the application state, built once from configuration.
//! - [`listener`]: the decision and admin listeners, connection budgets and timeouts.
//! - [`ROUTES`]: the routing table of both listeners (docs/openapi.json documents it).
//! - [`cedar`], [`authzen`], [`gateway`], [`admin`], [`plan`]: the handlers of each surface.
//! - [`grpc`]: Envoy's gRPC ext_authz and the gRPC health service, on the decision
//!   listener beside the HTTP surfaces.
//! - [`error`]: the one mapping of outcomes and errors to statuses and bodies.
//! - [`tls`]: HTTPS and mutual TLS for the listener.

pub mod admin;
pub mod app;
pub mod authzen;
pub mod cedar;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod jwks;
pub mod listener;
pub mod plan;
pub mod request_id;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use crate::decision::{Call, Surface, TraceContext};
pub use app::App;
use error::{json_error, ApiError};
pub use listener::{serve, CloseReason, Listeners, Role};

pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name, made at compile time: a name given as text is
/// parsed and checked on every use.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

type Body = Full<Bytes>;
pub type Response = http::Response<Body>;
/// A handler's result: a response, or an error `handle` answers.
pub type Reply = Result<Response, ApiError>;

/// The request id: the caller's when it is a sane header value, else a new one from
/// `ids`. Either way no copy of the text is made: a header value shares its bytes.
fn request_id(headers: &HeaderMap, ids: &request_id::RequestIds) -> HeaderValue {
    headers
        .get(&REQUEST_ID_HEADER)
        .filter(|v| is_sane_request_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(|| ids.next_id())
}

/// Whether a caller's request id is short printable text, fit to echo and log.
fn is_sane_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 200 && v.iter().all(u8::is_ascii_graphic)
}

/// A caller's request id as a header value, when it is sane.
fn sane_request_id(v: &str) -> Option<HeaderValue> {
    is_sane_request_id(v.as_bytes())
        .then(|| HeaderValue::from_str(v).ok())
        .flatten()
}

/// Per-request facts the handlers need besides the body.
pub struct Ctx {
    pub app: Arc<App>,
    /// The request id, echoed in the response; printable ASCII only.
    pub request_id: HeaderValue,
    pub started: Instant,
    /// The request's W3C `traceparent`, when it sent exactly one well-formed header.
    pub trace: Option<TraceContext>,
}

impl Ctx {
    /// The request id as text.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// A call of `surface` for this request: its decisions are recorded under its id.
    pub fn call(&self, surface: Surface) -> Call<'_> {
        let mut call = Call::new(surface, self.request_id(), &self.app.recorder);
        call.started = self.started;
        call.trace = self.trace.as_ref();
        call
    }
}

/// The body of any answer of the listeners: an HTTP handler's whole body, or a gRPC
/// call's frames and trailers.
pub type AnyBody = Either<Body, grpc::GrpcBody>;

/// Serves one request of either listener: gRPC calls on the decision listener go to
/// [`grpc`], everything else through the routing table.
async fn dispatch(
    app: Arc<App>,
    role: Role,
    req: Request<Incoming>,
) -> Result<http::Response<AnyBody>, Infallible> {
    if role == Role::Decision && grpc::is_grpc(&req) {
        return Ok(grpc::serve(app, req).await.map(Either::Right));
    }
    let response = handle(app, role, req).await;
    Ok(response.map(Either::Left))
}

/// The trace context of a request: one `traceparent` header that parses. Several, or
/// a malformed one, are ignored.
pub(crate) fn trace_context(headers: &http::HeaderMap) -> Option<TraceContext> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => TraceContext::parse(v.to_str().ok()?),
        _ => None,
    }
}

async fn handle(app: Arc<App>, role: Role, req: Request<Incoming>) -> Response {
    let started = Instant::now();
    let ctx = Ctx {
        request_id: request_id(req.headers(), &app.request_ids),
        app: app.clone(),
        started,
        trace: trace_context(req.headers()),
    };
    let http1 = req.version() < http::Version::HTTP_2;
    let (endpoint, allow, result) = route(&ctx, role, req).await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            app.metrics.error(e.code);
            let mut r = json_response(e.status, e.body());
            // RFC 9110: a 405 lists the methods the resource does accept.
            if e.status == StatusCode::METHOD_NOT_ALLOWED {
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    r.headers_mut().insert(http::header::ALLOW, v);
                }
            }
            // The rest of a body that timed out may still be on its way: an HTTP/1
            // connection cannot be reused after it (an HTTP/2 stream ends alone).
            if e.code == error::BODY_TIMEOUT && http1 {
                r.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                r.extensions_mut().insert(CloseReason("body_timeout"));
            }
            r
        }
    };
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, ctx.request_id);
    app.metrics
        .request_duration
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Which listener serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    Decision,
    Admin,
    Both,
}

impl Serves {
    fn includes(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Serves::Both, _) | (Serves::Decision, Role::Decision) | (Serves::Admin, Role::Admin)
        )
    }
}

/// What answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    Policies,
    OpenApi,
    IsAuthorized,
    BatchIsAuthorized,
    QueryPlan,
    /// Every AuthZEN path; [`authzen::route`] tells them apart.
    Authzen,
    ForwardAuthNginx,
    ForwardAuthTraefik,
    /// Envoy's check requests: `--ext-authz-prefix` followed by the original path.
    ExtAuthz,
}

/// One row of the routing table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The path; for [`Endpoint::ExtAuthz`] the default prefix followed by `{path}`.
    pub path: &'static str,
    /// Methods it accepts; empty means any (a proxy may forward the original one, and
    /// Envoy always does).
    pub methods: &'static [&'static str],
    pub serves: Serves,
    pub endpoint: Endpoint,
}

const fn row(
    path: &'static str,
    methods: &'static [&'static str],
    serves: Serves,
    endpoint: Endpoint,
) -> Route {
    Route {
        path,
        methods,
        serves,
        endpoint,
    }
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const ANY: &[&str] = &[];

/// The routing table of both listeners: the decision listener keeps `/healthz` and
/// `/readyz` for proxies that health-check their upstream; metrics and the policy
/// status are the admin listener's only.
pub const ROUTES: &[Route] = &[
    row("/healthz", GET, Serves::Both, Endpoint::Healthz),
    row("/readyz", GET, Serves::Both, Endpoint::Readyz),
    row("/openapi.json", GET, Serves::Both, Endpoint::OpenApi),
    row("/metrics", GET, Serves::Admin, Endpoint::Metrics),
    row("/v1/policies", GET, Serves::Admin, Endpoint::Policies),
    row(
        "/v1/is_authorized",
        POST,
        Serves::Decision,
        Endpoint::IsAuthorized,
    ),
    row(
        "/v1/batch_is_authorized",
        POST,
        Serves::Decision,
        Endpoint::BatchIsAuthorized,
    ),
    row(
        "/v1/query_plan",
        POST,
        Serves::Decision,
        Endpoint::QueryPlan,
    ),
    row(
        crate::authzen::wire::EVALUATION,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::EVALUATIONS,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::SEARCH_SUBJECT,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::SEARCH_RESOURCE,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::SEARCH_ACTION,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::RESOURCE_PLAN,
        POST,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        crate::authzen::wire::DISCOVERY,
        GET,
        Serves::Decision,
        Endpoint::Authzen,
    ),
    row(
        "/forward-auth/nginx",
        ANY,
        Serves::Decision,
        Endpoint::ForwardAuthNginx,
    ),
    row(
        "/forward-auth/traefik",
        ANY,
        Serves::Decision,
        Endpoint::ForwardAuthTraefik,
    ),
    row(
        "/ext-authz/{path}",
        ANY,
        Serves::Decision,
        Endpoint::ExtAuthz,
    ),
];

/// The row of `ROUTES` that answers `path` on `role`'s listener.
fn find_route(ctx: &Ctx, role: Role, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| {
        r.serves.includes(role)
            && match r.endpoint {
                Endpoint::ExtAuthz => ctx.app.gateway.is_ext_authz(path),
                _ => r.path == path,
            }
    })
}

/// Routes a request through [`ROUTES`]. Returns the endpoint label for metrics (a
/// fixed name, never the path as sent), the methods the route accepts (for a 405's
/// `Allow`) and the response.
async fn route(
    ctx: &Ctx,
    role: Role,
    req: Request<Incoming>,
) -> (&'static str, &'static [&'static str], Reply) {
    let path = req.uri().path();
    let Some(found) = find_route(ctx, role, path) else {
        return ("other", ANY, Err(ApiError::not_found(path)));
    };
    if !found.methods.is_empty() && !found.methods.contains(&req.method().as_str()) {
        let e = ApiError::method_not_allowed(req.method(), path);
        return ("other", found.methods, Err(e));
    }
    let (endpoint, reply) = answer(ctx, found, req).await;
    (endpoint, found.methods, reply)
}

/// Answers a request with the endpoint of its route.
async fn answer(ctx: &Ctx, found: &Route, req: Request<Incoming>) -> (&'static str, Reply) {
    match found.endpoint {
        Endpoint::Healthz => ("healthz", Ok(admin::healthz())),
        Endpoint::Readyz => ("readyz", Ok(admin::readyz(ctx).await)),
        Endpoint::Metrics => ("metrics", Ok(admin::metrics(ctx))),
        Endpoint::Policies => ("policies", Ok(admin::policies(ctx))),
        Endpoint::OpenApi => ("openapi", Ok(admin::openapi())),
        Endpoint::IsAuthorized => ("is_authorized", cedar::is_authorized(ctx, req).await),
        Endpoint::BatchIsAuthorized => (
            "batch_is_authorized",
            cedar::batch_is_authorized(ctx, req).await,
        ),
        Endpoint::QueryPlan => ("query_plan", plan::query_plan(ctx, req).await),
        Endpoint::Authzen => authzen::route(ctx, req).await,
        Endpoint::ForwardAuthNginx => (
            "forward_auth_nginx",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Nginx).await),
        ),
        Endpoint::ForwardAuthTraefik => (
            "forward_auth_traefik",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Traefik).await),
        ),
        Endpoint::ExtAuthz => (
            "ext_authz",
            Ok(gateway::check(ctx, req, crate::gateway::Protocol::Envoy).await),
        ),
    }
}

/// Writes `items` as JSON strings separated by commas, as serde_json writes them.
pub(crate) fn json_strings(out: &mut String, items: &[impl AsRef<str>]) {
    for (i, item) in items.iter().enumerate() {
        let item = item.as_ref();
        if i > 0 {
            out.push(',');
        }
        // Text without quotes, backslashes and control characters is its own JSON
        // string body; anything else is escaped by serde_json.
        if item.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push('"');
            out.push_str(item);
            out.push('"');
        } else {
            out.push_str(&serde_json::to_string(item).unwrap_or_else(|_| "\"\"".into()));
        }
    }
}

/// Writes `text` as a JSON string, as serde_json writes it.
pub(crate) fn json_string(out: &mut String, text: &str) {
    json_strings(out, std::slice::from_ref(&text));
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
    decode_json(&read_json_body(ctx, req).await?)
}

/// The bytes of a JSON body, for a caller that decodes values borrowing from them:
/// checks the content type and the size limit.
pub async fn read_json_body(ctx: &Ctx, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_json_media_type(v.as_bytes()));
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    read_body(ctx, req).await
}

/// Whether a `Content-Type` value names `application/json` (any case, parameters
/// after `;` allowed, spaces around the type ignored).
fn is_json_media_type(value: &[u8]) -> bool {
    // What nearly every client sends, compared whole.
    if value == b"application/json" {
        return true;
    }
    // Text a header value may hold as a string (`HeaderValue::to_str`) only.
    if !value
        .iter()
        .all(|b| (b' '..=b'~').contains(b) || *b == b'\t')
    {
        return false;
    }
    let media = value.split(|b| *b == b';').next().unwrap_or_default();
    media.trim_ascii().eq_ignore_ascii_case(b"application/json")
}

/// Reads a request body within `--max-body-bytes` and the body timeout.
pub async fn read_body(ctx: &Ctx, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = ctx.app.limits.max_body_bytes;
    let too_large = || ApiError::body_too_large(limit);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = collect(Limited::new(req.into_body(), limit));
    let mut read = std::pin::pin!(read);
    // A small body mostly arrives with its head: then it is read without arming the
    // timer (one poll; if the body is not all here, that poll only registers the
    // task's waker, and the read goes on under the timeout).
    let ready = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let collected = match ready {
        Poll::Ready(collected) => collected,
        Poll::Pending => {
            let timeout = ctx.app.connections.body_read;
            let Ok(collected) = tokio::time::timeout(timeout, read).await else {
                return Err(ApiError::body_timeout(timeout));
            };
            collected
        }
    };
    match collected {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            Err(ApiError::bad_request(
                "body_unreadable",
                format!("request body could not be read: {e}"),
            ))
        }
    }
}

/// The data of a body's frames. A body of one frame (a small one mostly is) is that
/// frame's bytes as they are, without a copy.
async fn collect<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        match (&mut joined, first.take()) {
            (Some(all), _) => all.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(before)) => {
                let mut all = Vec::with_capacity(before.len() + data.len());
                all.extend_from_slice(&before);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(match (joined, first) {
        (Some(all), _) => Bytes::from(all),
        (None, Some(only)) => only,
        (None, None) => Bytes::new(),
    })
}

/// Decodes a request body that arrived whole: the one JSON parser of every body the
/// decision listener reads, with the error `handle` answers when it does not fit `T`.
pub fn decode_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    // Read as text checked once: serde_json then need not check each borrowed value
    // (a raw uid, say) as UTF-8 again. Bytes that are not UTF-8 are left to its byte
    // reader, for the error it names them with.
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
    .map_err(|e| json_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte check answers as reading the value as text, taking what precedes
    /// `;`, trimming it and comparing it without case did.
    #[test]
    fn json_media_types_are_told_as_before() {
        let values: [&[u8]; 14] = [
            b"application/json",
            b"Application/JSON",
            b"application/json; charset=utf-8",
            b"  application/json  ;x",
            b"\tapplication/json",
            b"application/jsonx",
            b"application/json-seq",
            b"text/plain",
            b"",
            b";application/json",
            b"application/json; \xe9",
            b"application/json\x7f",
            b"application/ json",
            b"application/json;",
        ];
        for value in values {
            let before = std::str::from_utf8(value)
                .ok()
                .filter(|v| HeaderValue::from_str(v).is_ok_and(|h| h.to_str().is_ok()))
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            let before = before && HeaderValue::from_bytes(value).is_ok_and(|h| h.to_str().is_ok());
            assert_eq!(is_json_media_type(value), before, "{value:?}");
        }
    }
}
