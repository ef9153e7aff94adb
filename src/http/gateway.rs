//! The gateway endpoints: `/forward-auth/nginx`, `/forward-auth/traefik` and Envoy's
//! `/ext-authz/...`. [`crate::gateway`] decides; this turns its verdict into a status
//! the proxy understands: 200 allow (with headers the proxy can pass upstream), 401 no
//! or bad identity, 403 deny, 503 store unavailable. Anything that goes wrong on the
//! way is a deny, never an allow.

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::{error_body, verdict_status};
use super::{json_response, Ctx, Response};
use crate::decision::Surface;
use crate::gateway::{Authenticator, Protocol, Verdict};

pub const PRINCIPAL_HEADER: &str = "x-portcullis-principal";
pub const POLICY_HEADER: &str = "x-portcullis-policy";
pub const ROUTE_HEADER: &str = "x-portcullis-route";

/// Answers one check request of `protocol`.
pub async fn check(ctx: &Ctx, req: Request<Incoming>, protocol: Protocol) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let snapshot = ctx.app.model.load();
    let mut call = ctx.call(Surface::Gateway);
    let verdict = ctx
        .app
        .gateway
        .check(
            &snapshot,
            ctx.app.entities.as_ref(),
            &mut call,
            protocol,
            req.method(),
            &target,
            req.headers(),
        )
        .await;
    answer(ctx, &verdict)
}

/// The `WWW-Authenticate` challenge of an answer with `status`: a 401 of a gateway that
/// identifies callers by bearer tokens asks for one.
pub fn bearer_challenge(ctx: &Ctx, status: StatusCode) -> Option<&'static str> {
    let bearer = matches!(
        ctx.app.gateway.settings.authenticator,
        Authenticator::Jwt(_)
    );
    (status == StatusCode::UNAUTHORIZED && bearer).then_some("Bearer")
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The HTTP answer to a verdict.
fn answer(ctx: &Ctx, verdict: &Verdict) -> Response {
    let (status, error) = verdict_status(verdict);
    if let Verdict::BadCheck(_) = verdict {
        ctx.app.metrics.error("invalid_forward_auth_request");
    }
    if let Some((code, message)) = error {
        let mut r = json_response(status, error_body(code, &message));
        if let Some(challenge) = bearer_challenge(ctx, status) {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        return r;
    }
    match verdict {
        Verdict::Allow {
            principal,
            policies,
            route,
        } => {
            let mut r = json_response(
                status,
                serde_json::json!({"decision": "Allow", "route": route, "policies": policies})
                    .to_string(),
            );
            let h = r.headers_mut();
            if let Some(v) = header_value(&principal.to_string()) {
                h.insert(PRINCIPAL_HEADER, v);
            }
            if let Some(v) = header_value(&policies.join(",")) {
                h.insert(POLICY_HEADER, v);
            }
            if let Some(v) = header_value(route) {
                h.insert(ROUTE_HEADER, v);
            }
            r
        }
        _ => json_response(status, r#"{"decision":"Allow"}"#.to_string()),
    }
}
