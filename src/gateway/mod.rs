//! Gateway forward-auth: a proxy in front of the portal asks about each incoming
//! request without knowing Cedar. This module maps the proxy's question to a Cedar
//! request, decides it through the one pipeline and returns a [`Verdict`]; `http`
//! turns the verdict into the status and headers each proxy understands.
//!
//! - [`identity`]: who is asking: a verified JWT or a trusted header.
//! - [`protocol`]: how nginx, Traefik and Envoy name the original request.
//!
//! The route table (method + path template -> action, resource, context) is part of
//! the model snapshot ([`crate::model::routes`]), so it reloads with the schema it was
//! validated against.

pub mod identity;
pub mod protocol;

use cedar_policy::{EntityUid, RestrictedExpression};
use http::HeaderMap;
use prometheus::{IntCounterVec, Opts, Registry};

pub use identity::{Authenticator, Identity, IdentityError};
pub use protocol::{Protocol, ProtocolError};

use crate::config::{ClientIpFrom, GatewayArgs};
use crate::decision::{self, Call, Outcome, RequestError};
use crate::entities::EntitySource;
use crate::model::routes::{ContextSource, RouteMatch, Unmatched};
use crate::model::Snapshot;

/// How the gateway endpoints identify callers and read proxy requests. Fixed at
/// start-up; the route table lives in the policy snapshot instead, so that it reloads
/// with the schema it was validated against.
#[derive(Debug, Default)]
pub struct GatewaySettings {
    pub authenticator: Authenticator,
    pub client_ip: ClientIpFrom,
    pub ext_authz_prefix: String,
}

impl GatewaySettings {
    pub fn from_args(args: &GatewayArgs) -> Result<Self, String> {
        let prefix = args.ext_authz_prefix.trim_end_matches('/').to_string();
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return Err(format!(
                "`--ext-authz-prefix` must be a path such as `/ext-authz`, not `{}`",
                args.ext_authz_prefix
            ));
        }
        let taken = [
            "/forward-auth",
            "/v1",
            "/healthz",
            "/readyz",
            "/metrics",
            "/access",
            "/.well-known",
        ];
        if taken.iter().any(|t| prefix.starts_with(t)) {
            return Err(format!(
                "`--ext-authz-prefix` `{prefix}` collides with another endpoint"
            ));
        }
        Ok(Self {
            authenticator: Authenticator::from_args(args)?,
            client_ip: args.client_ip_from,
            ext_authz_prefix: prefix,
        })
    }

    /// Settings with no identity source: every matched route answers 503 until one is
    /// configured.
    pub fn unconfigured() -> Self {
        Self {
            authenticator: Authenticator::NotConfigured,
            client_ip: ClientIpFrom::None,
            ext_authz_prefix: "/ext-authz".to_string(),
        }
    }
}

/// The gateway's metrics, registered into the service's registry.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Checks by proxy protocol, route template (`unmatched` when none) and outcome
    /// (`allow`, `deny`, `unauthenticated`, `error`). Route labels come from the route
    /// table, a small set the security team owns; never from request paths.
    pub checks: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let checks = IntCounterVec::new(
            Opts::new(
                "portcullis_gateway_checks_total",
                "Gateway forward-auth checks by protocol, route template and outcome.",
            ),
            &["protocol", "route", "outcome"],
        )?;
        registry.register(Box::new(checks.clone()))?;
        Ok(Self { checks })
    }

    pub fn count(&self, protocol: Protocol, route: &str, outcome: &str) {
        self.checks
            .with_label_values(&[protocol.name(), route, outcome])
            .inc();
    }
}

/// The gateway's state in the application: settings and metrics.
pub struct Gateway {
    pub settings: GatewaySettings,
    metrics: GatewayMetrics,
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// The answer to one check, before any proxy dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: who, by which policies (sorted, so headers are stable for caches and
    /// log searches), on which route.
    Allow {
        principal: EntityUid,
        policies: Vec<String>,
        route: String,
    },
    /// No route matched and the table lets such requests through.
    AllowUnmatched,
    /// Denied, with a stable code and a message naming why.
    Deny { code: &'static str, message: String },
    /// No or bad credentials.
    Unauthenticated(IdentityError),
    /// The gateway cannot identify anyone: no identity source is configured, or its
    /// keys were not fetched yet.
    NotConfigured(IdentityError),
    /// The entity store could not be reached: a Deny the proxy may retry.
    Unavailable(String),
    /// The proxy's check request does not say which request it is about (a proxy
    /// configuration mistake): a Deny.
    BadCheck(ProtocolError),
}

impl Gateway {
    pub fn new(settings: GatewaySettings, registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            settings,
            metrics: GatewayMetrics::new(registry)?,
        })
    }

    fn count(&self, protocol: Protocol, route: &str, outcome: &str) {
        self.metrics.count(protocol, route, outcome);
    }

    /// Whether `path` belongs to the Envoy ext_authz endpoint.
    pub fn is_ext_authz(&self, path: &str) -> bool {
        path.strip_prefix(self.settings.ext_authz_prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Answers one check request of `protocol`: which request it is about, which
    /// route that is, who asks, and what the policies decide.
    #[allow(clippy::too_many_arguments)] // Each is one fact of the check request.
    pub async fn check<'a>(
        &self,
        snapshot: &'a Snapshot,
        source: &dyn EntitySource,
        call: &mut Call<'a>,
        protocol: Protocol,
        method: &http::Method,
        target: &str,
        headers: &HeaderMap,
    ) -> Verdict {
        let original = protocol::original(
            protocol,
            method,
            target,
            headers,
            &self.settings.ext_authz_prefix,
        );
        self.check_original(snapshot, source, call, protocol, original, headers)
            .await
    }

    /// Answers a check whose original request was already read from the proxy's
    /// question (or could not be: then it is a [`Verdict::BadCheck`]). Every surface's
    /// decision is this one; `headers` are the original request's.
    pub async fn check_original<'a>(
        &self,
        snapshot: &'a Snapshot,
        source: &dyn EntitySource,
        call: &mut Call<'a>,
        protocol: Protocol,
        original: Result<protocol::Original, ProtocolError>,
        headers: &HeaderMap,
    ) -> Verdict {
        let settings = &self.settings;
        call.protocol = Some(protocol.name());
        let original = match original {
            Ok(o) => o,
            Err(ProtocolError::Unmatchable(message)) => {
                self.count(protocol, UNMATCHED, "deny");
                return Verdict::Deny {
                    code: "no_route",
                    message,
                };
            }
            Err(e) => {
                self.count(protocol, UNMATCHED, "error");
                return Verdict::BadCheck(e);
            }
        };
        let Some(table) = snapshot.routes.as_ref() else {
            self.count(protocol, UNMATCHED, "deny");
            return Verdict::Deny {
                code: "no_route",
                message: "no route table is configured (`--routes`)".to_string(),
            };
        };
        let Some(matched) = table.find(&original.method, &original.uri) else {
            return match table.default {
                Unmatched::Allow => {
                    self.count(protocol, UNMATCHED, "allow");
                    Verdict::AllowUnmatched
                }
                Unmatched::Deny => {
                    self.count(protocol, UNMATCHED, "deny");
                    Verdict::Deny {
                        code: "no_route",
                        message: format!(
                            "no route matches `{} {}`",
                            original.method,
                            original.uri.split('?').next().unwrap_or("")
                        ),
                    }
                }
            };
        };
        let route = matched.route.template.as_str();
        call.route = Some(route);

        let identity = match settings.authenticator.identify(headers) {
            Ok(i) => i,
            Err(e) => {
                self.count(protocol, route, "unauthenticated");
                return match e {
                    IdentityError::NotConfigured | IdentityError::KeysUnavailable(_) => {
                        Verdict::NotConfigured(e)
                    }
                    other => Verdict::Unauthenticated(other),
                };
            }
        };

        let context = context_of(
            &matched,
            headers,
            settings.client_ip,
            identity.second_factor,
        );
        let Some(resource) = matched.resource() else {
            self.count(protocol, route, "error");
            return Verdict::Deny {
                code: "forbidden",
                message: "the route's resource could not be built".to_string(),
            };
        };
        let checked = match decision::check_uids_with_pairs(
            snapshot,
            // On the schema's instance of its type, as a request's uid read from text.
            snapshot.type_canon.api_uid(&identity.principal),
            matched.route.action.clone(),
            resource,
            context,
        ) {
            Ok(c) => c,
            Err(e) => {
                // The principal's type does not fit the action, say: the request cannot
                // be decided, so it is denied.
                self.count(protocol, route, "error");
                let outcome = Outcome::Undecidable(e.to_string());
                call.record(None, &outcome);
                return undecidable(&e);
            }
        };
        let outcome = decision::decide(snapshot, source, call, &checked, &[]).await;
        match outcome {
            Outcome::StoreUnavailable(m) => {
                self.count(protocol, route, "error");
                Verdict::Unavailable(m)
            }
            outcome @ (Outcome::MissingEntity { .. } | Outcome::DepthExceeded { .. }) => {
                self.count(protocol, route, "deny");
                Verdict::Deny {
                    code: outcome.kind(),
                    message: outcome.decision().errors.join("; "),
                }
            }
            Outcome::DataInvalid { message, .. } => {
                // Said as it is, so the operator reading the proxy's log sees which
                // entity to repair; the decision log carries it too.
                self.count(protocol, route, "deny");
                Verdict::Deny {
                    code: "entity_data_invalid",
                    message,
                }
            }
            Outcome::Decided(d) if d.allowed => {
                self.count(protocol, route, "allow");
                let mut policies = d.reasons;
                policies.sort();
                Verdict::Allow {
                    principal: identity.principal,
                    policies,
                    route: route.to_string(),
                }
            }
            _ => {
                self.count(protocol, route, "deny");
                Verdict::Deny {
                    code: "forbidden",
                    message: format!("`{route}` is denied to this principal"),
                }
            }
        }
    }
}

fn undecidable(e: &RequestError) -> Verdict {
    Verdict::Deny {
        code: e.code(),
        message: e.to_string(),
    }
}

/// The Cedar context of a matched request. A field whose value is unknown is left
/// out; if the schema requires it, checking the request fails and the request is
/// denied.
fn context_of(
    matched: &RouteMatch<'_>,
    headers: &HeaderMap,
    client_ip: ClientIpFrom,
    second_factor: Option<bool>,
) -> Vec<(String, RestrictedExpression)> {
    let mut out = Vec::with_capacity(matched.route.context.len());
    let mut ip = None;
    for (name, source) in &matched.route.context {
        let value = match source {
            ContextSource::ClientIp => {
                let addr = *ip.get_or_insert_with(|| protocol::client_ip(client_ip, headers));
                addr.map(|a| RestrictedExpression::new_ip(a.to_string()))
            }
            ContextSource::SecondFactor => second_factor.map(RestrictedExpression::new_bool),
            ContextSource::Header(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|v| RestrictedExpression::new_string(v.to_string())),
        };
        if let Some(v) = value {
            out.push((name.clone(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envoy_prefix_must_not_shadow_other_endpoints() {
        let with = |prefix: &str| {
            GatewaySettings::from_args(&GatewayArgs {
                ext_authz_prefix: prefix.to_string(),
                ..GatewayArgs::default()
            })
            .map(|s| s.ext_authz_prefix)
        };
        assert_eq!(with("/ext-authz/"), Ok("/ext-authz".to_string()));
        assert_eq!(with("/authz"), Ok("/authz".to_string()));
        for bad in [
            "",
            "/",
            "ext-authz",
            "/v1/check",
            "/forward-auth/nginx",
            "/metrics",
        ] {
            assert!(with(bad).is_err(), "`{bad}` was accepted");
        }
    }
}
