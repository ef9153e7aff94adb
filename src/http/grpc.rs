//! The gRPC surface of the decision listener: Envoy's external authorization
//! (`envoy.service.auth.v3.Authorization/Check`) and the standard health service
//! (`grpc.health.v1.Health`), on the same port as the HTTP surfaces.
//!
//! A request is gRPC when it arrives over HTTP/2 with a `application/grpc` content
//! type (cleartext with prior knowledge, or TLS by ALPN); the listener's connection
//! budget and timeouts hold for it as for any other request, and its body is read
//! within `--max-body-bytes` and the body timeout before tonic decodes it.
//!
//! A check is decided by [`crate::gateway::Gateway::check_original`], the decision of
//! every forward-auth surface; this file only reads Envoy's message and writes the
//! verdict back in Envoy's terms. Every verdict but an allow is a `CheckResponse` with
//! a non-OK status and a `DeniedHttpResponse` (the status and JSON body the HTTP
//! endpoints answer), never a failed call: Envoy may be configured to let requests
//! through when the call itself fails.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::google::rpc;
use futures_util::Stream;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, Request};
use http_body_util::Full;
use hyper::body::Incoming;
use tonic::body::Body as TonicBody;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::error::{error_body, grpc_status, verdict_grpc_code, verdict_status, ApiError};
use super::gateway::{bearer_challenge, POLICY_HEADER, PRINCIPAL_HEADER, ROUTE_HEADER};
use super::App;
use super::{request_id, sane_request_id, Ctx, REQUEST_ID};
use crate::decision::Surface;
use crate::gateway::{Protocol, ProtocolError, Verdict};

/// The body of a gRPC answer: frames, then trailers carrying the status.
pub type GrpcBody = TonicBody;

/// The code the metrics count a check that does not name its original request under,
/// as on the HTTP endpoints.
const BAD_CHECK: &str = "invalid_forward_auth_request";

/// How often a health `Watch` looks at readiness again; it sends only changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a request is a gRPC call: HTTP/2 with a gRPC content type
/// (`application/grpc`, `application/grpc+proto`; not gRPC-Web).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_2
        && req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("application/grpc"))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

/// The services, by the first segment of a call's path.
enum Called {
    Authorization,
    Health,
}

fn service_of(path: &str) -> Option<Called> {
    let name = path.strip_prefix('/')?.split('/').next()?;
    if name == <AuthorizationServer<Checks> as NamedService>::NAME {
        Some(Called::Authorization)
    } else if name == <HealthServer<Readiness> as NamedService>::NAME {
        Some(Called::Health)
    } else {
        None
    }
}

/// Serves one gRPC call, timed under its service's endpoint label.
pub async fn serve(app: Arc<App>, req: Request<Incoming>) -> http::Response<GrpcBody> {
    let started = Instant::now();
    let ctx = Ctx {
        app: app.clone(),
        request_id: request_id(req.headers(), &app.request_ids),
        started,
        trace: super::trace_context(req.headers()),
    };
    let (endpoint, response) = match service_of(req.uri().path()) {
        None => {
            let path = req.uri().path().to_string();
            ("other", failed(&app, &ApiError::not_found(&path)))
        }
        Some(Called::Authorization) => {
            let limit = app.limits.max_body_bytes;
            let server = AuthorizationServer::new(Checks { app: app.clone() })
                .max_decoding_message_size(limit);
            ("ext_authz_grpc", call(&ctx, server, req).await)
        }
        Some(Called::Health) => {
            let server = HealthServer::new(Readiness { app: app.clone() });
            ("grpc_health", call(&ctx, server, req).await)
        }
    };
    app.metrics
        .request_duration
        .with_label_values(&[endpoint])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads the call's body within the listener's limits, then hands it to `service`.
async fn call<S>(ctx: &Ctx, mut service: S, req: Request<Incoming>) -> http::Response<GrpcBody>
where
    S: Service<
        Request<Full<bytes::Bytes>>,
        Response = http::Response<GrpcBody>,
        Error = Infallible,
    >,
{
    let (parts, body) = req.into_parts();
    let body = match super::read_body(ctx, Request::new(body)).await {
        Ok(b) => b,
        Err(e) => return failed(&ctx.app, &e),
    };
    let req = Request::from_parts(parts, Full::new(body));
    // tonic's generated servers are always ready; asking keeps to the tower contract.
    if let Err(never) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
        match never {}
    }
    match service.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// A call that ends with an error status before any message was decided.
fn failed(app: &App, e: &ApiError) -> http::Response<GrpcBody> {
    app.metrics.error(e.code);
    grpc_status(e).into_http()
}

/// The Envoy `Authorization` service.
struct Checks {
    app: Arc<App>,
}

#[tonic::async_trait]
impl Authorization for Checks {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = Instant::now();
        let call_id = request
            .metadata()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(sane_request_id);
        let call_trace = super::trace_context(&request.metadata().clone().into_headers());
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http);
        let headers = http.as_ref().map(original_headers).unwrap_or_default();
        // The original request's id first, so Envoy's access log and the decision log
        // name the same request.
        let id = headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(sane_request_id)
            .or_else(|| http.as_ref().and_then(|h| sane_request_id(&h.id)))
            .or(call_id)
            .unwrap_or_else(|| self.app.request_ids.next_id());
        // The original request's trace context first, as for the request id.
        let ctx = Ctx {
            app: self.app.clone(),
            request_id: id,
            started,
            trace: super::trace_context(&headers).or(call_trace),
        };
        let original = match &http {
            Some(h) => crate::gateway::protocol::envoy_grpc(&h.method, &h.path, &h.host),
            None => Err(ProtocolError::Incomplete(
                "`attributes.request.http` is missing".to_string(),
            )),
        };
        let snapshot = ctx.app.model.load();
        let mut call = ctx.call(Surface::Gateway);
        let verdict = ctx
            .app
            .gateway
            .check_original(
                &snapshot,
                ctx.app.entities.as_ref(),
                &mut call,
                Protocol::EnvoyGrpc,
                original,
                &headers,
            )
            .await;
        let mut response = tonic::Response::new(answer(&ctx, &verdict));
        if let Ok(v) = ctx.request_id.to_str().unwrap_or_default().parse() {
            response.metadata_mut().insert(REQUEST_ID, v);
        }
        Ok(response)
    }
}

/// The original request's headers as Envoy sends them: the `headers` map, or the
/// `header_map` list when Envoy encodes raw headers. Pseudo-headers (`:path`) and
/// names or values HTTP does not allow are left out.
fn original_headers(http: &HttpRequest) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| {
        if name.starts_with(':') {
            return;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) else {
            return;
        };
        out.append(name, value);
    };
    for (name, value) in &http.headers {
        add(name, value.as_bytes());
    }
    for h in http.header_map.iter().flat_map(|m| &m.headers) {
        let value = if h.raw_value.is_empty() {
            h.value.as_bytes()
        } else {
            &h.raw_value
        };
        add(&h.key, value);
    }
    out
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            raw_value: Vec::new(),
        }),
        // What the gateway says replaces whatever the client sent under these names.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..HeaderValueOption::default()
    }
}

/// A verdict in Envoy's terms: the status, and the HTTP answer Envoy gives the client
/// (a deny) or the headers it adds upstream (an allow).
fn answer(ctx: &Ctx, verdict: &Verdict) -> CheckResponse {
    let (status, error) = verdict_status(verdict);
    let code = verdict_grpc_code(verdict);
    // The id is printable ASCII (checked when it was taken or made).
    let request_id = header(REQUEST_ID, ctx.request_id.to_str().unwrap_or_default());
    if let Some((error_code, message)) = error {
        if let Verdict::BadCheck(_) = verdict {
            ctx.app.metrics.error(BAD_CHECK);
        }
        let mut headers = vec![
            header(CONTENT_TYPE.as_str(), "application/json"),
            request_id,
        ];
        if let Some(challenge) = bearer_challenge(ctx, status) {
            headers.push(header(WWW_AUTHENTICATE.as_str(), challenge));
        }
        return CheckResponse {
            status: Some(rpc::Status {
                code: code.into(),
                message: message.clone(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status.as_u16()),
                }),
                headers,
                body: error_body(error_code, &message),
            })),
            dynamic_metadata: None,
        };
    }
    let mut ok = OkHttpResponse {
        headers: vec![request_id],
        ..OkHttpResponse::default()
    };
    match verdict {
        Verdict::Allow {
            principal,
            policies,
            route,
        } => {
            ok.headers
                .push(header(PRINCIPAL_HEADER, &principal.to_string()));
            ok.headers.push(header(POLICY_HEADER, &policies.join(",")));
            ok.headers.push(header(ROUTE_HEADER, route));
        }
        // Nobody was identified: a client's own claims to these must not reach the
        // upstream either.
        _ => {
            ok.headers_to_remove = [PRINCIPAL_HEADER, POLICY_HEADER, ROUTE_HEADER]
                .map(str::to_string)
                .to_vec();
        }
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: code.into(),
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: None,
    }
}

/// The standard health service: `SERVING` while the service is ready (as `/readyz`
/// says), for the whole server (`""`) and for the `Authorization` service.
struct Readiness {
    app: Arc<App>,
}

impl Readiness {
    async fn status(app: &App) -> ServingStatus {
        match app.entities.ready().await {
            Ok(()) => {
                app.became_ready.store(true, Ordering::Release);
                ServingStatus::Serving
            }
            Err(_) => ServingStatus::NotServing,
        }
    }

    fn known(service: &str) -> Result<(), tonic::Status> {
        if service.is_empty() || service == <AuthorizationServer<Checks> as NamedService>::NAME {
            Ok(())
        } else {
            Err(tonic::Status::not_found(format!(
                "no service `{service}` here"
            )))
        }
    }
}

fn health(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Health for Readiness {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        Self::known(&request.get_ref().service)?;
        Ok(tonic::Response::new(health(Self::status(&self.app).await)))
    }

    type WatchStream = Statuses;

    /// The current status, then each change, looked at every [`WATCH_INTERVAL`].
    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Statuses>, tonic::Status> {
        Self::known(&request.get_ref().service)?;
        let app = self.app.clone();
        let changes =
            futures_util::stream::unfold((app, None::<ServingStatus>), |(app, last)| async move {
                loop {
                    if last.is_some() {
                        tokio::time::sleep(WATCH_INTERVAL).await;
                    }
                    let now = Readiness::status(&app).await;
                    if last != Some(now) {
                        return Some((Ok(health(now)), (app, Some(now))));
                    }
                }
            });
        Ok(tonic::Response::new(Box::pin(changes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http2_calls_with_a_grpc_content_type_are_grpc() {
        let request = |version, content_type: &str| {
            let mut r = Request::new(());
            *r.version_mut() = version;
            r.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_str(content_type).unwrap(),
            );
            r
        };
        let h2 = http::Version::HTTP_2;
        // (content type, HTTP version, gRPC?)
        let cases = [
            ("application/grpc", h2, true),
            ("application/grpc+proto", h2, true),
            ("application/grpc;charset=utf-8", h2, true),
            ("application/grpc-web", h2, false),
            ("application/json", h2, false),
            ("application/grpc", http::Version::HTTP_11, false),
        ];
        for (content_type, version, want) in cases {
            assert_eq!(
                is_grpc(&request(version, content_type)),
                want,
                "{content_type} {version:?}"
            );
        }
    }

    #[test]
    fn a_call_names_its_service_by_the_first_path_segment() {
        assert!(matches!(
            service_of("/envoy.service.auth.v3.Authorization/Check"),
            Some(Called::Authorization)
        ));
        assert!(matches!(
            service_of("/grpc.health.v1.Health/Watch"),
            Some(Called::Health)
        ));
        for other in [
            "/",
            "",
            "/envoy.service.auth.v2.Authorization/Check",
            "/v1/is_authorized",
        ] {
            assert!(service_of(other).is_none(), "{other}");
        }
    }
}
