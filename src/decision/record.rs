//! The one place an outcome becomes metrics and a decision-log event.
//!
//! Every surface logs the same event with the same fields (one JSON schema; fields a
//! surface has no value for are empty strings), so a log search or a dashboard works
//! across the Cedar-native API, AuthZEN and the gateway alike:
//!
//! `surface`, `request_id`, `protocol`, `route`, `principal`, `action`, `resource`,
//! `decision` (`Allow`/`Deny`), `outcome` ([`Outcome::kind`]), `policies`, `errors`,
//! `latency_us`, `trace_id`, `span_id` (from a W3C `traceparent` of the request).

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

/// The W3C trace context of the request a decision answers (its `traceparent`), so a
/// decision can be found from the trace of the request it judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The caller's span (the header's `parent-id`), 16 lowercase hex digits.
    pub span_id: String,
}

impl TraceContext {
    /// Reads a `traceparent` value (`version-trace_id-parent_id-flags`). Anything
    /// malformed is `None`: the header is advisory, so a bad one is ignored rather
    /// than refused.
    pub fn parse(value: &str) -> Option<Self> {
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        let mut fields = value.trim().split('-');
        let (version, trace_id, span_id, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && !zero(trace_id)
            && hex(span_id, 16)
            && !zero(span_id)
            && hex(flags, 2)
            // Version 00 has exactly four fields; later versions may append more.
            && (version != "00" || fields.next().is_none());
        valid.then(|| Self {
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
        })
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
    /// The request's trace context, when it carried a well-formed `traceparent`.
    pub trace: Option<&'a TraceContext>,
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
            trace: None,
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
            trace: None,
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
                .decision(outcome.allowed(), r.action().id().unescaped());
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
            principal = %uid(|c| c.principal().to_string()),
            action = %uid(|c| c.action().to_string()),
            resource = %uid(|c| c.resource().to_string()),
            decision = if decision.allowed { "Allow" } else { "Deny" },
            outcome = outcome.kind(),
            policies = ?decision.reasons,
            errors = ?decision.errors,
            latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            trace_id = self.trace.map_or("", |t| t.trace_id.as_str()),
            span_id = self.trace.map_or("", |t| t.span_id.as_str()),
            "decision"
        );
    }
}
