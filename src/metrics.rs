//! Prometheus metrics. Labels come from small fixed sets (endpoint names, decision,
//! error codes, schema action names); never from principal or resource ids.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the service exports, registered in its own registry.
pub struct Metrics {
    pub registry: Registry,
    pub decisions: IntCounterVec,
    pub request_duration: HistogramVec,
    pub errors: IntCounterVec,
    pub policies_loaded: IntGauge,
    /// Open connections by listener (`decision`, `admin`).
    pub connections_open: IntGaugeVec,
    /// Closed connections by listener and reason (`closed` by the client or after its
    /// last response, `header_timeout`, `body_timeout`, `idle_timeout`,
    /// `keepalive_timeout`, `error`, `shutdown`).
    pub connections_closed: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_decisions_total",
                "Decisions by decision and action.",
            ),
            &["decision", "action"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "HTTP request latency by endpoint.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0,
            ]),
            &["endpoint"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "portcullis_errors_total",
                "Errors by kind (the API error code).",
            ),
            &["kind"],
        )?;
        let policies_loaded = IntGauge::new(
            "portcullis_policies_loaded",
            "Policies (static and template-linked) in the serving snapshot.",
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "portcullis_connections_open",
                "Open connections by listener.",
            ),
            &["listener"],
        )?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_closed_total",
                "Closed connections by listener and reason.",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_closed.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(policies_loaded.clone()))?;
        Ok(Self {
            registry,
            decisions,
            request_duration,
            errors,
            policies_loaded,
            connections_open,
            connections_closed,
        })
    }

    /// Counts one decision. `action` is the action's id, from the schema.
    pub fn decision(&self, allowed: bool, action: &str) {
        let d = if allowed { "allow" } else { "deny" };
        self.decisions.with_label_values(&[d, action]).inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
