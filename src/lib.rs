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
//! - [`http`]: listener, routing, wire types, error responses.
//! - [`metrics`]: Prometheus registry.
//! - [`server`]: start-up: builds the application state from configuration.
//! - [`cli`]: the subcommands `main` dispatches to.

pub mod cli;
pub mod config;
pub mod decision;
pub mod entities;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod server;
