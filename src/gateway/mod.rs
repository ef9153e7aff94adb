//! Gateway forward-auth: a proxy in front of the portal asks about each incoming
//! request without knowing Cedar. This module maps the proxy's question to a Cedar
//! request; `http::gateway` answers it.
//!
//! - [`routes`]: the route table (method + path template -> action, resource, context).
//! - [`identity`]: who is asking: a verified JWT or a trusted header.
//! - [`protocol`]: how nginx, Traefik and Envoy name the original request.

pub mod identity;
pub mod protocol;
pub mod routes;

use prometheus::{IntCounterVec, Opts, Registry};

pub use identity::{Authenticator, Identity, IdentityError};
pub use protocol::{ClientIpFrom, Protocol};
pub use routes::{ContextSource, RouteTable, Unmatched};

use crate::config::GatewayArgs;

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
        let taken = ["/forward-auth", "/v1", "/healthz", "/readyz", "/metrics"];
        if taken.iter().any(|t| prefix.starts_with(t)) {
            return Err(format!(
                "`--ext-authz-prefix` `{prefix}` collides with another endpoint"
            ));
        }
        Ok(Self {
            authenticator: Authenticator::from_args(args)?,
            client_ip: args.client_ip_from.parse()?,
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
    /// `None` only if registration failed (a name clash in the registry); checks are
    /// then answered as usual and only their counting is lost.
    pub metrics: Option<GatewayMetrics>,
}

impl Gateway {
    pub fn new(settings: GatewaySettings, registry: &Registry) -> Self {
        let metrics = match GatewayMetrics::new(registry) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "gateway metrics not registered");
                None
            }
        };
        Self { settings, metrics }
    }

    pub fn count(&self, protocol: Protocol, route: &str, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.count(protocol, route, outcome);
        }
    }
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
