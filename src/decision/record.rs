//! The one place an outcome becomes metrics and a decision-log event.
//!
//! Every surface logs the same event with the same fields (one JSON schema; fields a
//! surface has no value for are empty strings), so a log search or a dashboard works
//! across the Cedar-native API, AuthZEN and the gateway alike:
//!
//! `surface`, `request_id`, `protocol`, `route`, `principal`, `action`, `resource`,
//! `decision` (`Allow`/`Deny`), `outcome` ([`Outcome::kind`]), `policies`, `errors`,
//! `latency_us`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::pipeline::Outcome;
use super::request::CheckedRequest;
use crate::config::{DecisionLog, RequireEntities};
use crate::metrics::Metrics;

/// Which API a decision was asked through. A small fixed set: a log field and part of
/// the metrics' vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/v1/is_authorized`, `/v1/batch_is_authorized`.
    Cedar,
    /// The AuthZEN evaluation and search endpoints.
    Authzen,
    /// The forward-auth and ext_authz endpoints.
    Gateway,
}

impl Surface {
    pub fn name(self) -> &'static str {
        match self {
            Surface::Cedar => "cedar",
            Surface::Authzen => "authzen",
            Surface::Gateway => "gateway",
        }
    }
}

/// Counts decisions and writes the decision log. One per service.
pub struct Recorder {
    metrics: Arc<Metrics>,
    log: DecisionLog,
    /// Decisions seen, for deterministic sampling of the decision log.
    seen: AtomicU64,
    /// The service's `--require-entities`, handed to every call.
    require: RequireEntities,
}

impl Recorder {
    pub fn new(metrics: Arc<Metrics>, log: DecisionLog, require: RequireEntities) -> Self {
        Self {
            metrics,
            log,
            seen: AtomicU64::new(0),
            require,
        }
    }

    /// Whether this decision goes to the decision log. A rate `r` logs exactly
    /// `floor(n * r)` of the first `n` decisions, with no randomness to test around.
    fn sampled(&self) -> bool {
        match self.log {
            DecisionLog::Off => false,
            DecisionLog::On => true,
            DecisionLog::Sampled(rate) => {
                let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
                ((n + 1.0) * rate).floor() > (n * rate).floor()
            }
        }
    }
}

/// One call of a surface: who asks, and where its decisions are recorded.
pub struct Call<'a> {
    pub surface: Surface,
    pub request_id: &'a str,
    pub started: Instant,
    /// The gateway's proxy protocol and route template; `None` elsewhere.
    pub protocol: Option<&'static str>,
    pub route: Option<&'a str>,
    /// `None` for the command-line tools, whose decisions are not service metrics.
    pub recorder: Option<&'a Recorder>,
    /// Which of the request's entities must exist.
    pub require: RequireEntities,
}

impl<'a> Call<'a> {
    /// A call of `surface` recorded by `recorder`.
    pub fn new(surface: Surface, request_id: &'a str, recorder: &'a Recorder) -> Self {
        Self {
            surface,
            request_id,
            started: Instant::now(),
            protocol: None,
            route: None,
            recorder: Some(recorder),
            require: recorder.require,
        }
    }

    /// A call whose decisions are not recorded (the command-line tools).
    pub fn unrecorded() -> Self {
        Self {
            surface: Surface::Cedar,
            request_id: "",
            started: Instant::now(),
            protocol: None,
            route: None,
            recorder: None,
            require: RequireEntities::default(),
        }
    }

    /// Counts an outcome and logs it (when sampled). `request` is `None` when the
    /// request could not be checked (the gateway still logs that denial).
    pub fn record(&self, request: Option<&CheckedRequest>, outcome: &Outcome) {
        let Some(recorder) = self.recorder else {
            return;
        };
        if let Some(r) = request {
            recorder
                .metrics
                .decision(outcome.allowed(), r.action.id().unescaped());
        }
        match outcome {
            Outcome::Decided(d) if d.errors.is_empty() => {}
            Outcome::Decided(_) => recorder.metrics.error("evaluation"),
            other => recorder.metrics.error(other.kind()),
        }
        if !recorder.sampled() {
            return;
        }
        let decision = outcome.decision();
        let uid = |f: fn(&CheckedRequest) -> String| request.map(f).unwrap_or_default();
        tracing::info!(
            target: "portcullis::decision",
            surface = self.surface.name(),
            request_id = %self.request_id,
            protocol = self.protocol.unwrap_or_default(),
            route = self.route.unwrap_or_default(),
            principal = %uid(|c| c.principal.to_string()),
            action = %uid(|c| c.action.to_string()),
            resource = %uid(|c| c.resource.to_string()),
            decision = if decision.allowed { "Allow" } else { "Deny" },
            outcome = outcome.kind(),
            policies = ?decision.reasons,
            errors = ?decision.errors,
            latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "decision"
        );
    }
}
