//! Metrics of the Redis entity store, registered into the service's registry. No label
//! carries an id.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The store's own metrics.
#[derive(Clone)]
pub struct RedisMetrics {
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// Entries the cache dropped by itself (size bound or TTL), not invalidations.
    pub cache_evictions: IntCounterVec,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub roundtrip: Histogram,
    pub errors: IntCounter,
    pub invalidations: IntCounterVec,
    /// 1 while the invalidation subscription is live, 0 otherwise.
    pub subscription_up: IntGauge,
    /// Times the invalidation subscription was found dead, by how it was found
    /// (`closed`: the connection ended; `unanswered`: a liveness `PING` went
    /// unanswered while the connection stayed open).
    pub subscription_failures: IntCounterVec,
}

impl RedisMetrics {
    /// Creates the metrics and registers them when a registry is given (the CLI and
    /// tests of the store alone run without one).
    pub fn new(registry: Option<&Registry>) -> Result<Self, prometheus::Error> {
        let m = Self {
            cache_hits: IntCounter::new(
                "portcullis_entity_cache_hits_total",
                "Entity lookups answered by the cache (negative entries included).",
            )?,
            cache_misses: IntCounter::new(
                "portcullis_entity_cache_misses_total",
                "Entity lookups that went to Redis.",
            )?,
            cache_evictions: IntCounterVec::new(
                Opts::new(
                    "portcullis_entity_cache_evictions_total",
                    "Entries the cache dropped by itself, by cause (size, expired).",
                ),
                &["cause"],
            )?,
            cache_entries: IntGauge::new(
                "portcullis_entity_cache_entries",
                "Entities held in the cache.",
            )?,
            cache_bytes: IntGauge::new(
                "portcullis_entity_cache_bytes",
                "Weight of the cached entities, in bytes of their stored JSON.",
            )?,
            roundtrip: Histogram::with_opts(
                HistogramOpts::new(
                    "portcullis_redis_roundtrip_seconds",
                    "Latency of one Redis round trip of the entity fetch.",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0,
                ]),
            )?,
            errors: IntCounter::new(
                "portcullis_redis_errors_total",
                "Redis commands of the entity store that failed.",
            )?,
            invalidations: IntCounterVec::new(
                Opts::new(
                    "portcullis_entity_invalidations_total",
                    "Invalidations received, by source (channel, keyspace, flush).",
                ),
                &["source"],
            )?,
            subscription_up: IntGauge::new(
                "portcullis_redis_subscription_up",
                "1 while the invalidation subscription is live.",
            )?,
            subscription_failures: IntCounterVec::new(
                Opts::new(
                    "portcullis_redis_subscription_failures_total",
                    "Times the invalidation subscription was found dead, by how (closed, unanswered).",
                ),
                &["how"],
            )?,
        };
        if let Some(r) = registry {
            r.register(Box::new(m.cache_hits.clone()))?;
            r.register(Box::new(m.cache_misses.clone()))?;
            r.register(Box::new(m.cache_evictions.clone()))?;
            r.register(Box::new(m.cache_entries.clone()))?;
            r.register(Box::new(m.cache_bytes.clone()))?;
            r.register(Box::new(m.roundtrip.clone()))?;
            r.register(Box::new(m.errors.clone()))?;
            r.register(Box::new(m.invalidations.clone()))?;
            r.register(Box::new(m.subscription_up.clone()))?;
            r.register(Box::new(m.subscription_failures.clone()))?;
        }
        Ok(m)
    }
}
