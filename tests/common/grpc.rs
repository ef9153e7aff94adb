//! The gRPC client of the tests: Envoy's ext_authz `Check` and the standard health
//! service, spoken with tonic over loopback like a sidecar's Envoy would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A cleartext HTTP/2 channel (prior knowledge) to the decision listener.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the decision listener accepts gRPC")
}

/// A check request as Envoy sends it for `method path` with these headers.
pub fn check(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: method.to_string(),
                    path: path.to_string(),
                    host: "portal.example".to_string(),
                    scheme: "https".to_string(),
                    protocol: "HTTP/1.1".to_string(),
                    headers,
                    ..HttpRequest::default()
                }),
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Envoy's answer to one check: the gRPC status code inside the message, and the HTTP
/// answer Envoy would give (a deny) or the headers it would add upstream (an allow).
#[derive(Debug)]
pub struct Answer {
    pub code: tonic::Code,
    /// The status Envoy answers the client with on a deny; 200 on an allow.
    pub http_status: u16,
    /// Headers of the denied response, or those added to the upstream request.
    pub headers: HashMap<String, String>,
    /// Headers Envoy removes from the upstream request on an allow.
    pub removed: Vec<String>,
    pub body: String,
    /// The JSON body of a deny.
    pub json: serde_json::Value,
    /// The `x-request-id` of the call's response metadata.
    pub call_request_id: Option<String>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub fn answer(response: tonic::Response<CheckResponse>) -> Answer {
    let call_request_id = response
        .metadata()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let r = response.into_inner();
    let code = tonic::Code::from(r.status.expect("a check answer carries a status").code);
    let pairs = |h: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        h.iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match r
        .http_response
        .expect("a check answer carries an HTTP answer")
    {
        HttpResponse::OkResponse(ok) => Answer {
            code,
            http_status: 200,
            headers: pairs(&ok.headers),
            removed: ok.headers_to_remove,
            body: String::new(),
            json: serde_json::Value::Null,
            call_request_id,
        },
        HttpResponse::DeniedResponse(d) | HttpResponse::ErrorResponse(d) => Answer {
            code,
            http_status: u16::try_from(d.status.map_or(0, |s| s.code)).unwrap(),
            headers: pairs(&d.headers),
            removed: Vec::new(),
            json: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
            body: d.body,
            call_request_id,
        },
    }
}

/// Sends one check; panics when the call itself fails (a check is always answered).
pub async fn ask(channel: &Channel, request: CheckRequest) -> Answer {
    let response = AuthorizationClient::new(channel.clone())
        .check(request)
        .await
        .expect("a check is answered, never failed");
    answer(response)
}

/// The health service's status of `service` (`""` for the whole server).
pub async fn health(
    channel: &Channel,
    service: &str,
) -> Result<tonic_health::pb::health_check_response::ServingStatus, tonic::Status> {
    let r = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(r.into_inner().status())
}
