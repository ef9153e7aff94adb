//! Portcullis: an authorization sidecar that answers "may this principal do this
//! action on this resource?" with Cedar policies.
//!
//! - [`config`]: command-line flags and `PORTCULLIS_*` variables.
//! - [`policy`]: the policy store: load schema, policies and links; validate strictly;
//!   build immutable snapshots.
//! - [`entities`]: entity sources (file now; Redis slots in behind the same trait).
//! - [`decision`]: request checking and Cedar evaluation. No I/O.
//! - [`gateway`]: forward-auth for nginx, Traefik and Envoy: route table, identity,
//!   proxy dialects.
//! - [`http`]: listener (plain or TLS), routing, wire types, error responses.
//! - [`authzen`]: the AuthZEN Authorization API 1.0 endpoints and their mapping to Cedar.
//! - [`metrics`]: Prometheus registry.
//! - [`reload`]: hot reload of the model: file watching, SIGHUP, atomic swap.
//! - [`server`]: start-up: builds the application state from configuration.
//! - [`cli`]: the subcommands `main` dispatches to.
//! - [`policytest`]: `portcullis test`, the policy test runner (YAML and cedar CLI
//!   suites, coverage, JUnit).
//! - [`fmt`]: `portcullis fmt`, the cedar CLI's policy formatter.
//! - [`verify`]: `portcullis verify`: proves invariants with cedar-policy-symcc and
//!   reviews policy changes (CLI and CI only; the server never uses it).

pub mod authzen;
pub mod cli;
pub mod config;
pub mod decision;
pub mod entities;
pub mod fmt;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod policytest;
pub mod reload;
pub mod server;
pub mod verify;

/// An error's message with its causes, on one line (`outer: inner: root`), skipping a
/// cause whose text the message already contains.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = inner.source();
    }
    s
}
