//! The gateway endpoints: `/forward-auth/nginx`, `/forward-auth/traefik` and Envoy's
//! `/ext-authz/...`. [`crate::gateway`] decides; this turns its verdict into a status
//! the proxy understands: 200 allow (with headers the proxy can pass upstream), 401 no
//! or bad identity, 403 deny, 503 store unavailable. Anything that goes wrong on the
//! way is a deny, never an allow.

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::error::{error_body, verdict_status};
use super::{json_response, json_string, json_strings, Ctx, Response};
use crate::decision::{uid_text, Surface};
use crate::gateway::{Authenticator, Protocol, Verdict};

pub const PRINCIPAL_HEADER: &str = "x-portcullis-principal";
pub const POLICY_HEADER: &str = "x-portcullis-policy";
pub const ROUTE_HEADER: &str = "x-portcullis-route";

// The names above as header names, made at compile time (a name given as text is
// parsed and checked on every use).
const PRINCIPAL: HeaderName = HeaderName::from_static(PRINCIPAL_HEADER);
const POLICY: HeaderName = HeaderName::from_static(POLICY_HEADER);
const ROUTE: HeaderName = HeaderName::from_static(ROUTE_HEADER);

/// The body of an Allow: `{"decision":"Allow","route":..,"policies":[..]}`.
fn allow_body(route: &str, policies: &[String]) -> String {
    let texts: usize = policies.iter().map(String::len).sum();
    let mut body = String::with_capacity(48 + route.len() + texts + 3 * policies.len());
    body.push_str(r#"{"decision":"Allow","route":"#);
    json_string(&mut body, route);
    body.push_str(r#","policies":["#);
    json_strings(&mut body, policies);
    body.push_str("]}");
    body
}

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
            let mut r = json_response(status, allow_body(route, policies));
            let h = r.headers_mut();
            if let Some(v) = header_value(&uid_text(principal)) {
                h.insert(PRINCIPAL, v);
            }
            if let Some(v) = header_value(&policies.join(",")) {
                h.insert(POLICY, v);
            }
            if let Some(v) = header_value(route) {
                h.insert(ROUTE, v);
            }
            r
        }
        _ => json_response(status, r#"{"decision":"Allow"}"#.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Allow body is the JSON value it always was.
    #[test]
    fn an_allow_body_is_the_json_it_was() {
        let cases: [(&str, &[&str]); 4] = [
            ("GET /accounts/{account}", &["member-login"]),
            ("POST /a/\"b\"", &["p1", "p\\2", "tab\t"]),
            ("", &[]),
            ("é", &["é"]),
        ];
        for (route, policies) in cases {
            let policies: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
            let was =
                serde_json::json!({"decision": "Allow", "route": route, "policies": policies});
            let body: serde_json::Value =
                serde_json::from_str(&allow_body(route, &policies)).unwrap();
            assert_eq!(body, was);
        }
    }
}
