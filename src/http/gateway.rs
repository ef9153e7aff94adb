//! The gateway endpoints: `/forward-auth/nginx`, `/forward-auth/traefik` and Envoy's
//! `/ext-authz/...`. Each answers the proxy's question with a status it understands:
//! 200 allow (with headers the proxy can pass upstream), 401 no or bad identity, 403
//! deny. Anything that goes wrong on the way is a deny, never an allow.

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{json_response, Ctx};
use crate::decision::{self, Decision};
use crate::gateway::routes::RouteMatch;
use crate::gateway::{protocol, Authenticator, ContextSource, IdentityError, Protocol, Unmatched};

pub const PRINCIPAL_HEADER: &str = "x-portcullis-principal";
pub const POLICY_HEADER: &str = "x-portcullis-policy";
pub const ROUTE_HEADER: &str = "x-portcullis-route";

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// Whether `path` belongs to the Envoy ext_authz endpoint.
pub fn is_ext_authz(ctx: &Ctx, path: &str) -> bool {
    let prefix = &ctx.app.gateway.settings.ext_authz_prefix;
    path.strip_prefix(prefix.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn answer(status: StatusCode, code: &'static str, message: String) -> Response<Full<Bytes>> {
    json_response(status, ApiError::new(status, code, message).body())
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Answers one check request of `protocol`.
pub async fn check(
    ctx: &Ctx,
    req: Request<Incoming>,
    protocol: Protocol,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let gateway = &ctx.app.gateway;
    let settings = &gateway.settings;
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let headers = req.headers();
    let original = protocol::original(
        protocol,
        req.method(),
        &target,
        headers,
        &settings.ext_authz_prefix,
    )
    .map_err(|e| {
        gateway.count(protocol, UNMATCHED, "error");
        ApiError::bad_request("invalid_forward_auth_request", e.to_string())
    })?;

    let snapshot = ctx.app.policies.load_full();
    let Some(table) = snapshot.routes.clone() else {
        gateway.count(protocol, UNMATCHED, "deny");
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "no_route",
            "no route table is configured (`--routes`)".to_string(),
        ));
    };
    let Some(matched) = table.find(&original.method, &original.uri) else {
        return Ok(match table.default {
            Unmatched::Allow => {
                gateway.count(protocol, UNMATCHED, "allow");
                json_response(StatusCode::OK, r#"{"decision":"Allow"}"#.to_string())
            }
            Unmatched::Deny => {
                gateway.count(protocol, UNMATCHED, "deny");
                answer(
                    StatusCode::FORBIDDEN,
                    "no_route",
                    format!(
                        "no route matches `{} {}`",
                        original.method,
                        original.uri.split('?').next().unwrap_or("")
                    ),
                )
            }
        });
    };
    let route = matched.route.template.as_str();

    let identity = match settings.authenticator.identify(headers) {
        Ok(i) => i,
        Err(e) => {
            gateway.count(protocol, route, "unauthenticated");
            if let IdentityError::NotConfigured = e {
                return Ok(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.code(),
                    e.to_string(),
                ));
            }
            let mut r = answer(StatusCode::UNAUTHORIZED, e.code(), e.to_string());
            if let Authenticator::Jwt(_) = settings.authenticator {
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return Ok(r);
        }
    };

    let context = context_of(
        &matched,
        headers,
        settings.client_ip,
        identity.second_factor,
    );
    let Some(resource) = matched.resource() else {
        gateway.count(protocol, route, "error");
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the route's resource could not be built".to_string(),
        ));
    };
    let checked = match decision::check_uids(
        &snapshot,
        identity.principal.clone(),
        matched.route.action.clone(),
        resource,
        Some(Value::Object(context)),
    ) {
        Ok(c) => c,
        Err(e) => {
            // The principal's type does not fit the action, say: the request cannot
            // be decided, so it is denied.
            gateway.count(protocol, route, "error");
            log(
                ctx,
                protocol,
                route,
                None,
                &Decision::deny_with_error(e.to_string(), false),
            );
            return Ok(answer(StatusCode::FORBIDDEN, e.code(), e.to_string()));
        }
    };
    let decision = decision::decide_with(&snapshot, &ctx.app.entities, &checked).await;
    ctx.app
        .metrics
        .decision(decision.allowed, checked.action.id().unescaped());
    if !decision.errors.is_empty() {
        ctx.app.metrics.error(if decision.source_unavailable {
            "entity_store_unavailable"
        } else {
            "evaluation"
        });
    }
    log(ctx, protocol, route, Some(&checked), &decision);
    if decision.source_unavailable {
        gateway.count(protocol, route, "error");
        return Ok(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "entity_store_unavailable",
            "entity data is unavailable; the request is denied".to_string(),
        ));
    }
    if !decision.allowed {
        gateway.count(protocol, route, "deny");
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("`{route}` is denied to this principal"),
        ));
    }
    gateway.count(protocol, route, "allow");
    // Cedar reports the determining policies as a set; sort them so the header is
    // stable for caches and log searches.
    let mut reasons = decision.reasons.clone();
    reasons.sort();
    let mut r = json_response(
        StatusCode::OK,
        serde_json::json!({"decision": "Allow", "route": route, "policies": reasons}).to_string(),
    );
    let h = r.headers_mut();
    if let Some(v) = header_value(&identity.principal.to_string()) {
        h.insert(PRINCIPAL_HEADER, v);
    }
    if let Some(v) = header_value(&reasons.join(",")) {
        h.insert(POLICY_HEADER, v);
    }
    if let Some(v) = header_value(route) {
        h.insert(ROUTE_HEADER, v);
    }
    Ok(r)
}

/// The Cedar context of a matched request. A field whose value is unknown is left
/// out; if the schema requires it, checking the request fails and the request is
/// denied.
fn context_of(
    matched: &RouteMatch<'_>,
    headers: &http::HeaderMap,
    client_ip: crate::gateway::ClientIpFrom,
    second_factor: Option<bool>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut ip = None;
    for (name, source) in &matched.route.context {
        let value = match source {
            ContextSource::ClientIp => {
                let addr = *ip.get_or_insert_with(|| client_ip.client_ip(headers));
                addr.map(|a| serde_json::json!({"__extn": {"fn": "ip", "arg": a.to_string()}}))
            }
            ContextSource::SecondFactor => second_factor.map(Value::Bool),
            ContextSource::Header(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|v| Value::String(v.to_string())),
        };
        if let Some(v) = value {
            out.insert(name.clone(), v);
        }
    }
    out
}

fn log(
    ctx: &Ctx,
    protocol: Protocol,
    route: &str,
    checked: Option<&decision::CheckedRequest>,
    decision: &Decision,
) {
    if !ctx.app.should_log_decision() {
        return;
    }
    let uid = |f: fn(&decision::CheckedRequest) -> String| checked.map(f).unwrap_or_default();
    tracing::info!(
        target: "portcullis::decision",
        request_id = %ctx.request_id,
        protocol = protocol.name(),
        route = route,
        principal = %uid(|c| c.principal.to_string()),
        action = %uid(|c| c.action.to_string()),
        resource = %uid(|c| c.resource.to_string()),
        decision = if decision.allowed { "Allow" } else { "Deny" },
        policies = ?decision.reasons,
        errors = ?decision.errors,
        latency_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "decision"
    );
}
