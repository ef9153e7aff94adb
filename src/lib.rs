//! Portcullis: an authorization sidecar that answers "may this principal do this
//! action on this resource?" with Cedar policies.
//!
//! Layers, bottom-up; each imports only from below it (`tests/layers.rs` holds this):
//!
//! - [`config`], [`metrics`]: flags and their defaults, once; the Prometheus registry.
//! - [`model`]: source files, compile, the immutable snapshot with every derived index
//!   (route table, AuthZEN mapping, schema types, entity data), reload.
//! - [`entities`]: the entity source trait and its file, memory and Redis sources.
//! - [`decision`]: request checks and the one pipeline (fetch, evaluate, one outcome
//!   type), recorded in one place (metrics, decision log).
//! - [`authzen`], [`gateway`]: their wire shapes turned into checked requests and
//!   decided; no HTTP. [`policytest`], [`verify`], [`fmt`]: the security team's tools.
//! - [`http`]: listener, routing, every status code and error body, the handlers.
//! - [`cli`]: the subcommands `main` dispatches to.

pub mod authzen;
pub mod cli;
pub mod config;
pub mod decision;
pub mod entities;
pub mod fmt;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod policytest;
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
