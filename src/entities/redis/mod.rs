//! The Redis entity source: entities live in Redis (written by the portal backend's
//! sync job or by `portcullis entities`), a bounded moka cache sits in front, and an
//! invalidation subscription keeps the cache honest.
//!
//! - [`store`]: key layout and connections (single server, TLS, cluster).
//! - [`invalidation`]: the subscriber task and the message format writers publish.
//! - [`cli`]: `portcullis entities import|put|delete|get`.
//! - [`metrics`]: cache and Redis metrics.
//!
//! A decision fetches its principal and resource, then what they point to (parents,
//! entity references in attributes and tags) level by level up to the fetch depth,
//! with one `MGET` per level for whatever the cache does not hold. A warm decision
//! makes no network call.

pub mod cli;
pub mod invalidation;
pub mod metrics;
pub mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use cedar_policy::{Entities, Entity, EntityTypeName, EntityUid};
use moka::future::Cache;
use moka::notification::RemovalCause;
use prometheus::Registry;
use tokio::sync::watch;

use super::{EntitySource, EntitySourceError, Fetched, Referrers, UidPage};
use crate::config::RedisArgs;
use crate::model::{Problem, Snapshot};
use metrics::RedisMetrics;
use store::{Conn, Target};

/// Where the configured store is (nothing connects yet).
pub fn target(args: &RedisArgs) -> Result<Target, EntitySourceError> {
    let ca = match &args.redis_tls_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            EntitySourceError::Unavailable(format!("`--redis-tls-ca` `{}`: {e}", path.display()))
        })?),
        None => None,
    };
    Target::new(
        args.redis_url.as_deref(),
        &args.redis_cluster,
        args.timeout(),
        ca,
    )
    .map_err(|e| EntitySourceError::Unavailable(format!("invalid Redis address: {e}")))
}

/// One entity in the cache: parsed against the schema whose hash it carries.
struct Cached {
    schema_hash: String,
    entity: Entity,
    /// Its parents: always fetched, so ancestry is never cut.
    parents: Vec<EntityUid>,
    /// Uids its attributes and tags point to: fetched up to the depth.
    refs: Vec<EntityUid>,
    /// Size of the stored JSON: the entry's weight.
    bytes: usize,
}

/// What a miss in Redis left behind: absent, or present but unusable.
#[derive(Clone)]
enum Negative {
    Absent,
    Invalid(Arc<str>),
}

/// Levels of parents fetched beyond the reference depth before a hierarchy is called
/// too deep (a cycle in stored parents would otherwise never end).
const MAX_ANCESTRY: usize = 32;

/// Ids of each entity type read from Redis to check a new schema against stored data.
const ADMIT_SAMPLE: usize = 100;
/// Misfits named in a rejected reload's report; the rest are counted.
const ADMIT_REPORTED: usize = 10;

/// Subscription states.
const CONNECTING: u8 = 0;
const LIVE: u8 = 1;
const DOWN: u8 = 2;

/// State shared by request handlers and the subscriber task.
pub(crate) struct Shared {
    prefix: String,
    depth: usize,
    timeout: Duration,
    max_staleness: Duration,
    cache: Cache<EntityUid, Arc<Cached>>,
    negative: Cache<EntityUid, Negative>,
    /// Bumped by every invalidation and every flush. A fetch inserts what it read and
    /// then checks the epoch: if it moved, an invalidation may have raced the read, so
    /// the fetch removes its own inserts. The subscriber bumps the epoch before it
    /// evicts, so either it evicts after the insert or the fetch sees the bump.
    epoch: AtomicU64,
    state: watch::Sender<u8>,
    /// Milliseconds since `started` when the subscription went down.
    down_since_ms: AtomicU64,
    started: Instant,
    /// The command connection, set by the subscriber task once Redis answers, and
    /// replaced by it when a liveness `PING` on it goes unanswered.
    conn: ArcSwapOption<Conn>,
    /// Why the subscription is not live (for `/readyz`); set with every `DOWN`.
    down_reason: ArcSwapOption<String>,
    /// Why the command connection is not usable, when its last liveness `PING` went
    /// unanswered; cleared by the next answer.
    store_problem: ArcSwapOption<String>,
    liveness_interval: Duration,
    liveness_timeout: Duration,
    metrics: RedisMetrics,
}

impl Shared {
    fn state(&self) -> u8 {
        *self.state.borrow()
    }

    /// Whether the cache may answer: the subscription is live, or it went down less
    /// than the allowed staleness ago.
    fn cache_usable(&self) -> bool {
        match self.state() {
            LIVE => true,
            DOWN if !self.max_staleness.is_zero() => {
                let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let since = self.down_since_ms.load(Ordering::SeqCst);
                Duration::from_millis(now.saturating_sub(since)) < self.max_staleness
            }
            _ => false,
        }
    }

    fn set_state(&self, s: u8) {
        if s == DOWN && self.state() != DOWN {
            let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.down_since_ms.store(now, Ordering::SeqCst);
        }
        self.metrics.subscription_up.set(i64::from(s == LIVE));
        self.state.send_replace(s);
    }

    /// Marks the subscription down, saying why (the reason `/readyz` reports).
    fn set_down(&self, reason: String) {
        self.down_reason.store(Some(Arc::new(reason)));
        self.set_state(DOWN);
    }

    /// Forgets everything cached.
    pub(crate) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
        self.negative.invalidate_all();
        self.metrics
            .invalidations
            .with_label_values(&["flush"])
            .inc();
    }

    /// Forgets one entity.
    pub(crate) async fn evict(&self, uid: &EntityUid, source: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate(uid).await;
        self.negative.invalidate(uid).await;
        self.metrics
            .invalidations
            .with_label_values(&[source])
            .inc();
    }

    fn update_size_gauges(&self) {
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
        self.metrics
            .cache_bytes
            .set(i64::try_from(self.cache.weighted_size()).unwrap_or(i64::MAX));
    }

    fn conn(&self) -> Result<Conn, EntitySourceError> {
        self.conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or_else(|| EntitySourceError::Unavailable("not connected to Redis".to_string()))
    }

    /// One round trip, timed and counted.
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, EntitySourceError> {
        let mut conn = self.conn()?;
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, conn.mget(keys)).await;
        self.metrics
            .roundtrip
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(values)) if values.len() == keys.len() => Ok(values),
            Ok(Ok(_)) => {
                self.metrics.errors.inc();
                Err(EntitySourceError::Unavailable(
                    "Redis answered MGET with the wrong number of values".to_string(),
                ))
            }
            Ok(Err(e)) => {
                self.metrics.errors.inc();
                Err(EntitySourceError::Unavailable(format!("Redis: {e}")))
            }
            Err(_) => {
                self.metrics.errors.inc();
                Err(EntitySourceError::Unavailable(format!(
                    "Redis did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

/// Levels of the hierarchy a walk down the member sets reads at most.
const MAX_MEMBER_LEVELS: usize = 16;
/// Entities a walk down the member sets visits at most.
const MAX_MEMBER_WALK: usize = 100_000;

/// The entity source backed by Redis.
pub struct RedisSource {
    shared: Arc<Shared>,
    /// The subscriber task; it lives exactly as long as the source.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RedisSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisSource {
    /// Sets up the cache and starts the subscriber task, which connects in the
    /// background: the service starts (not ready) even while Redis is down. Must run
    /// inside a Tokio runtime.
    pub fn open(args: &RedisArgs, registry: Option<&Registry>) -> Result<Self, EntitySourceError> {
        let target = target(args)?;
        let metrics = RedisMetrics::new(registry)
            .map_err(|e| EntitySourceError::Unavailable(format!("metrics: {e}")))?;
        // moka bounds one weight. Each entry weighs its bytes but at least
        // `max_bytes / max_entries`, so neither the byte bound nor the entry bound
        // can be passed.
        let min_weight = u32::try_from(
            args.cache_max_bytes
                .checked_div(args.cache_max_entries.max(1))
                .unwrap_or(1)
                .max(1),
        )
        .unwrap_or(u32::MAX);
        let evictions = metrics.cache_evictions.clone();
        let cache = Cache::builder()
            .max_capacity(args.cache_max_bytes)
            .weigher(move |_k: &EntityUid, v: &Arc<Cached>| {
                u32::try_from(v.bytes).unwrap_or(u32::MAX).max(min_weight)
            })
            .time_to_live(Duration::from_secs(args.cache_ttl_secs.max(1)))
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => evictions.with_label_values(&["size"]).inc(),
                RemovalCause::Expired => evictions.with_label_values(&["expired"]).inc(),
                _ => {}
            })
            .build();
        let negative = Cache::builder()
            .max_capacity(args.cache_max_entries.max(1))
            .time_to_live(Duration::from_millis(args.negative_cache_ttl_ms.max(1)))
            .build();
        let (state, _) = watch::channel(CONNECTING);
        let shared = Arc::new(Shared {
            prefix: args.redis_prefix.clone(),
            depth: args.redis_fetch_depth,
            timeout: args.timeout(),
            max_staleness: Duration::from_secs(args.max_staleness_secs),
            cache,
            negative,
            epoch: AtomicU64::new(0),
            state,
            down_since_ms: AtomicU64::new(0),
            started: Instant::now(),
            conn: ArcSwapOption::empty(),
            down_reason: ArcSwapOption::empty(),
            store_problem: ArcSwapOption::empty(),
            liveness_interval: args.liveness_interval(),
            liveness_timeout: args.liveness_timeout(),
            metrics,
        });
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            EntitySourceError::Unavailable("the Redis source needs a Tokio runtime".to_string())
        })?;
        let task = handle.spawn(invalidation::run(
            shared.clone(),
            target,
            invalidation::Settings {
                channel: args.redis_channel.clone(),
                keyspace: args.redis_keyspace_events,
            },
        ));
        Ok(Self { shared, task })
    }

    /// Drops every cached entity, as a missed invalidation would require (also used by
    /// the benchmarks to measure the cold path).
    pub fn clear_cache(&self) {
        self.shared.flush();
    }

    /// Waits until the first connection attempt settles (used at start-up and by
    /// the one-shot `authorize`), at most `limit`.
    pub async fn wait_connected(&self, limit: Duration) {
        let mut rx = self.shared.state.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|s| *s != CONNECTING)).await;
    }

    /// Why the sets a ledger vouches for cannot be trusted, if they cannot: the ledger
    /// (`ledger`, the ids a writer that keeps the sets has written; see
    /// [`store::ledger_key`] and [`store::member_ledger_key`]) does not hold as many ids
    /// as the type's index set. That is the case for data written before the sets
    /// existed and for entities added or removed around `portcullis entities`; a
    /// writer of its own can also delete the ledger to say so. `sets` names them.
    async fn ledger_gap(
        &self,
        conn: &Conn,
        ty: &EntityTypeName,
        ledger: String,
        sets: &str,
    ) -> Result<Option<String>, EntitySourceError> {
        let type_key = store::type_key(&self.shared.prefix, ty);
        let (entities, kept) = self.counts(conn, type_key, ledger).await?;
        Ok((entities != kept).then(|| {
            format!(
                "the {sets} in Redis are not known to be exact: {kept} of the {entities} `{ty}` entities were written by `portcullis entities` (rewrite the others with it)"
            )
        }))
    }

    /// The sizes of two sorted sets, read together.
    async fn counts(
        &self,
        conn: &Conn,
        a: String,
        b: String,
    ) -> Result<(u64, u64), EntitySourceError> {
        let reads = [a, b].map(|key| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(key);
            async move { conn.query::<u64>(&cmd).await }
        });
        match self.together(reads).await?[..] {
            [a, b] => Ok((a, b)),
            _ => Err(EntitySourceError::Unavailable(
                "Redis answered ZCARD with the wrong number of values".to_string(),
            )),
        }
    }

    /// Runs `reads` (commands on clones of one connection) together within the
    /// deadline; a failure is counted and makes the source unavailable for the call.
    async fn together<T, F>(
        &self,
        reads: impl IntoIterator<Item = F>,
    ) -> Result<Vec<T>, EntitySourceError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(
            self.shared.timeout,
            futures_util::future::try_join_all(reads),
        )
        .await
        .map_err(|_| EntitySourceError::Unavailable("Redis did not answer".to_string()))?
        .map_err(|e| {
            self.shared.metrics.errors.inc();
            EntitySourceError::Unavailable(format!("Redis: {e}"))
        })
    }

    /// Parses what Redis holds under `uid`'s key into a cache entry.
    fn parse(uid: &EntityUid, bytes: &[u8], snapshot: &Snapshot) -> Result<Cached, String> {
        let stored = parse_stored(uid, bytes, snapshot)?;
        Ok(Cached {
            parents: stored.parents,
            schema_hash: snapshot.schema_hash.clone(),
            entity: stored.entity,
            refs: stored.refs,
            bytes: bytes.len(),
        })
    }
}

/// An entity read from Redis, with the uids a decision about it may read next.
#[derive(Debug, Clone)]
pub struct StoredEntity {
    pub entity: Entity,
    /// Its parents: always fetched, so ancestry is never cut.
    pub parents: Vec<EntityUid>,
    /// Uids its attributes and tags point to: fetched up to the depth.
    pub refs: Vec<EntityUid>,
}

/// Parses what Redis holds under `uid`'s key: JSON that conforms to the snapshot's
/// schema and holds the data of `uid` itself. The error names the entity.
pub fn parse_stored(
    uid: &EntityUid,
    bytes: &[u8],
    snapshot: &Snapshot,
) -> Result<StoredEntity, String> {
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("entity `{uid}` in Redis is not valid JSON: {e}"))?;
    let entity = Entity::from_json_value(json.clone(), Some(&snapshot.schema)).map_err(|e| {
        let lead = format!("entity `{uid}`: ");
        let explained: Vec<String> = crate::model::conformance::explain(
            &serde_json::Value::Array(vec![json.clone()]),
            &snapshot.types,
        )
        .into_iter()
        .map(|m| m.strip_prefix(&lead).map_or(m.clone(), str::to_string))
        .collect();
        let details = if explained.is_empty() {
            crate::error_chain(&e)
        } else {
            explained.join("; ")
        };
        format!("entity `{uid}` in Redis does not conform to the schema: {details}")
    })?;
    if &entity.uid() != uid {
        return Err(format!(
            "entity `{uid}` in Redis holds the data of `{}`",
            entity.uid()
        ));
    }
    let (parents, refs) = super::parents_and_references(&json);
    Ok(StoredEntity {
        entity,
        parents,
        refs,
    })
}

#[async_trait]
impl EntitySource for RedisSource {
    async fn entities_for(
        &self,
        uids: &[EntityUid],
        snapshot: &Snapshot,
    ) -> Result<Fetched, EntitySourceError> {
        let shared = &self.shared;
        if shared.state() == CONNECTING {
            self.wait_connected(shared.timeout).await;
        }
        let use_cache = shared.cache_usable();
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut found: Vec<Entity> = Vec::new();
        let mut level: Vec<EntityUid> = uids.to_vec();
        let mut beyond: Vec<EntityUid> = Vec::new();
        let mut round = 0usize;
        while !level.is_empty() {
            if round > shared.depth + MAX_ANCESTRY {
                return Err(EntitySourceError::InvalidData {
                    uid: level.first().cloned().map(Box::new),
                    message: format!(
                        "the hierarchy above the request is deeper than {} levels",
                        shared.depth + MAX_ANCESTRY
                    ),
                });
            }
            // Attribute references are followed up to the depth; parents always.
            let follow_refs = round < shared.depth;
            round += 1;
            let mut next = Vec::new();
            let mut take = |c: &Cached, next: &mut Vec<EntityUid>| {
                next.extend(c.parents.iter().cloned());
                if follow_refs {
                    next.extend(c.refs.iter().cloned());
                } else {
                    beyond.extend(c.refs.iter().cloned());
                }
            };
            let mut misses = Vec::new();
            for uid in level {
                if !snapshot.declares_type(uid.type_name()) || !seen.insert(uid.clone()) {
                    continue;
                }
                if use_cache {
                    if let Some(c) = shared.cache.get(&uid).await {
                        if c.schema_hash == snapshot.schema_hash {
                            shared.metrics.cache_hits.inc();
                            found.push(c.entity.clone());
                            take(&c, &mut next);
                            continue;
                        }
                    }
                    if let Some(n) = shared.negative.get(&uid).await {
                        shared.metrics.cache_hits.inc();
                        match n {
                            Negative::Absent => continue,
                            Negative::Invalid(m) => {
                                return Err(EntitySourceError::InvalidData {
                                    uid: Some(Box::new(uid)),
                                    message: m.to_string(),
                                })
                            }
                        }
                    }
                }
                shared.metrics.cache_misses.inc();
                misses.push(uid);
            }
            if !misses.is_empty() {
                let epoch = shared.epoch.load(Ordering::SeqCst);
                let keys: Vec<String> = misses
                    .iter()
                    .map(|u| store::entity_key(&shared.prefix, u))
                    .collect();
                let values = shared.mget(&keys).await?;
                let mut invalid = None;
                for (uid, value) in misses.iter().zip(values) {
                    let entry = match value {
                        None => Err(Negative::Absent),
                        Some(bytes) => Self::parse(uid, &bytes, snapshot)
                            .map_err(|m| Negative::Invalid(m.into())),
                    };
                    match entry {
                        Ok(c) => {
                            found.push(c.entity.clone());
                            take(&c, &mut next);
                            if use_cache {
                                shared.cache.insert(uid.clone(), Arc::new(c)).await;
                            }
                        }
                        Err(n) => {
                            if let Negative::Invalid(m) = &n {
                                invalid.get_or_insert_with(|| (uid.clone(), m.to_string()));
                            }
                            if use_cache {
                                shared.negative.insert(uid.clone(), n).await;
                            }
                        }
                    }
                }
                if use_cache {
                    if shared.epoch.load(Ordering::SeqCst) != epoch {
                        // An invalidation raced this read: what was read may be older
                        // than what the invalidation announced.
                        for uid in &misses {
                            shared.cache.invalidate(uid).await;
                            shared.negative.invalidate(uid).await;
                        }
                    }
                    shared.update_size_gauges();
                }
                if let Some((uid, message)) = invalid {
                    return Err(EntitySourceError::InvalidData {
                        uid: Some(Box::new(uid)),
                        message,
                    });
                }
            }
            level = next;
        }
        beyond.retain(|u| snapshot.declares_type(u.type_name()) && !seen.contains(u));
        // Each entity was checked against this schema when it was parsed, so the set
        // is assembled without checking again; the schema's grouped actions join it.
        let entities = Entities::from_entities(
            found
                .into_iter()
                .chain(snapshot.action_entities.iter().cloned()),
            None,
        )
        .map_err(|e| EntitySourceError::InvalidData {
            uid: None,
            message: crate::error_chain(&e),
        })?;
        Ok(Fetched {
            entities: Arc::new(entities),
            beyond_depth: beyond,
            depth: shared.depth,
            complete: false,
            table: None,
        })
    }

    async fn prefetch(&self, uids: &[EntityUid], snapshot: &Snapshot) {
        // Fetching them all at once fills the cache level by level; what failed will
        // fail again, with its diagnostic, in the decision that needs it. Without a
        // usable cache nothing would be kept, so nothing is fetched.
        if self.shared.cache_usable() {
            let _ = self.entities_for(uids, snapshot).await;
        }
    }

    async fn list(
        &self,
        entity_type: &EntityTypeName,
        cursor: Option<&str>,
        limit: usize,
        _snapshot: &Snapshot,
    ) -> Result<UidPage, EntitySourceError> {
        let mut conn = self.shared.conn()?;
        let min = match cursor {
            Some(c) => format!("({c}"),
            None => "-".to_string(),
        };
        let mut cmd = redis::cmd("ZRANGEBYLEX");
        cmd.arg(store::type_key(&self.shared.prefix, entity_type))
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.saturating_add(1));
        let ids: Vec<String> = tokio::time::timeout(self.shared.timeout, conn.query(&cmd))
            .await
            .map_err(|_| EntitySourceError::Unavailable("Redis did not answer".to_string()))?
            .map_err(|e| {
                self.shared.metrics.errors.inc();
                EntitySourceError::Unavailable(format!("Redis: {e}"))
            })?;
        let more = ids.len() > limit;
        let uids: Vec<EntityUid> = ids
            .iter()
            .take(limit)
            .map(|id| {
                EntityUid::from_type_name_and_id(
                    entity_type.clone(),
                    cedar_policy::EntityId::new(id),
                )
            })
            .collect();
        let next = if more {
            ids.get(limit.saturating_sub(1)).cloned()
        } else {
            None
        };
        Ok(UidPage { uids, next })
    }

    /// Reads the index sets of `entity_type.attribute` of every target (one
    /// `ZRANGEBYLEX` each, sent together) and merges them in id order. An entity has
    /// one value per attribute, so the sets are disjoint.
    async fn referrers(
        &self,
        entity_type: &EntityTypeName,
        attribute: &str,
        targets: &[EntityUid],
        cursor: Option<&str>,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        let indexed = snapshot
            .types
            .reference_attributes(&entity_type.to_string())
            .contains(&attribute);
        if !indexed {
            return Ok(Referrers::Unindexed(format!(
                "`{entity_type}.{attribute}` is not a reference attribute of the schema, so Redis keeps no index of it"
            )));
        }
        let conn = self.shared.conn()?;
        let ledger = store::ledger_key(&self.shared.prefix, entity_type, attribute);
        let sets = format!("index sets of `{entity_type}.{attribute}`");
        if let Some(reason) = self.ledger_gap(&conn, entity_type, ledger, &sets).await? {
            return Ok(Referrers::Unindexed(reason));
        }
        let min = match cursor {
            Some(c) => format!("({c}"),
            None => "-".to_string(),
        };
        let reads = targets.iter().map(|target| {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("ZRANGEBYLEX");
            cmd.arg(store::ref_key(
                &self.shared.prefix,
                entity_type,
                attribute,
                target,
            ))
            .arg(&min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.saturating_add(1));
            async move { conn.query::<Vec<String>>(&cmd).await }
        });
        let answers = self.together(reads).await?;
        let mut ids: Vec<String> = answers.into_iter().flatten().collect();
        ids.sort_unstable();
        ids.dedup();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let next = more.then(|| ids.last().cloned()).flatten();
        let uids = ids
            .iter()
            .map(|id| {
                EntityUid::from_type_name_and_id(
                    entity_type.clone(),
                    cedar_policy::EntityId::new(id),
                )
            })
            .collect();
        Ok(Referrers::Page(UidPage { uids, next }))
    }

    /// Walks the member sets down from `ancestor`, one level per round trip (every
    /// set of the level sent together), through the types whose entities can be
    /// ancestors of `entity_type`'s; trusted only while the ledger of every type it
    /// reads counts every entity of that type.
    async fn members(
        &self,
        entity_type: &EntityTypeName,
        ancestor: &EntityUid,
        limit: usize,
        snapshot: &Snapshot,
    ) -> Result<Referrers, EntitySourceError> {
        let types = &snapshot.types;
        // The types a walk from `ancestor` down to `entity_type` passes through.
        let mut chain = super::member_chain(snapshot, entity_type);
        let conn = self.shared.conn()?;
        // Types whose entities have no parents keep no member sets to be missing from.
        chain.retain(|ty| {
            types
                .parent_types(&ty.to_string())
                .is_some_and(|p| !p.is_empty())
        });
        for ty in &chain {
            let ledger = store::member_ledger_key(&self.shared.prefix, ty);
            let sets = format!("member sets of `{ty}`");
            if let Some(reason) = self.ledger_gap(&conn, ty, ledger, &sets).await? {
                return Ok(Referrers::Unindexed(reason));
            }
        }
        let prefix = &self.shared.prefix;
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut found: Vec<EntityUid> = Vec::new();
        let mut level = vec![ancestor.clone()];
        for _ in 0..MAX_MEMBER_LEVELS {
            if level.is_empty() {
                return Ok(super::members_page(found));
            }
            let mut sets: Vec<(EntityTypeName, String)> = Vec::new();
            for parent in &level {
                let parent_type = parent.type_name().to_string();
                for child in &chain {
                    let may = types
                        .parent_types(&child.to_string())
                        .is_some_and(|p| p.contains(&parent_type));
                    if may {
                        sets.push((child.clone(), store::member_key(prefix, child, parent)));
                    }
                }
            }
            let reads = sets.iter().map(|(_, key)| {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("ZRANGE");
                // At most `limit + 1` ids of any one set: more already means too many.
                cmd.arg(key).arg(0).arg(limit);
                async move { conn.query::<Vec<String>>(&cmd).await }
            });
            let answers = self.together(reads).await?;
            let mut next = Vec::new();
            for ((ty, _), ids) in sets.iter().zip(answers) {
                // A set cut short would hide what is below the rest of it.
                if ids.len() > limit {
                    return Ok(Referrers::Unindexed(format!(
                        "more than {limit} `{ty}` entities are below `{ancestor}`"
                    )));
                }
                for id in ids {
                    let uid = EntityUid::from_type_name_and_id(
                        ty.clone(),
                        cedar_policy::EntityId::new(id),
                    );
                    if !seen.insert(uid.clone()) {
                        continue;
                    }
                    if ty == entity_type {
                        found.push(uid.clone());
                    }
                    next.push(uid);
                }
            }
            if found.len() > limit || seen.len() > MAX_MEMBER_WALK {
                return Ok(Referrers::Unindexed(format!(
                    "more than {limit} `{entity_type}` entities are below `{ancestor}`"
                )));
            }
            level = next;
        }
        Ok(Referrers::Unindexed(format!(
            "the hierarchy below `{ancestor}` is deeper than {MAX_MEMBER_LEVELS} levels"
        )))
    }

    /// Reads what the subscriber task's liveness checks found (a `PING` on the
    /// subscription and on the command connection every `--redis-liveness-interval-ms`,
    /// each with its deadline), so a probe costs no Redis call and a hung Redis makes
    /// the service unready within one interval plus the deadline.
    async fn ready(&self) -> Result<(), EntitySourceError> {
        let shared = &self.shared;
        match shared.state() {
            LIVE => match shared.store_problem.load_full() {
                None => Ok(()),
                Some(problem) => Err(EntitySourceError::Unavailable(problem.to_string())),
            },
            CONNECTING => Err(EntitySourceError::Unavailable(
                "connecting to Redis".to_string(),
            )),
            _ => Err(EntitySourceError::Unavailable(
                shared.down_reason.load_full().map_or_else(
                    || "the Redis invalidation subscription is down; reconnecting".to_string(),
                    |r| r.to_string(),
                ),
            )),
        }
    }

    /// A new schema serves only if the stored data fits it: every cached entity
    /// (parsed under another schema) and the first [`ADMIT_SAMPLE`] ids of each type's
    /// index in Redis are parsed under the new schema, and any that do not conform
    /// reject the reload, naming them. Entities of types the new schema drops are not
    /// checked: decisions never read them. When Redis cannot be read the cached
    /// entities alone decide, since a schema that the data does not fit only makes
    /// decisions deny.
    async fn admit(&self, next: &Snapshot) -> Result<(), Vec<Problem>> {
        let shared = &self.shared;
        let mut misfits: Vec<String> = Vec::new();
        let mut checked: HashSet<EntityUid> = HashSet::new();
        for (uid, cached) in shared.cache.iter() {
            if cached.schema_hash == next.schema_hash || !next.declares_type(uid.type_name()) {
                continue;
            }
            checked.insert((*uid).clone());
            let Ok(json) = cached.entity.to_json_value() else {
                continue;
            };
            if let Err(e) = Entity::from_json_value(json.clone(), Some(&next.schema)) {
                let found =
                    crate::model::misfits(&serde_json::Value::Array(vec![json]), &next.types, &e);
                misfits.extend(
                    found
                        .into_iter()
                        .map(|m| format!("{m} (cached `{uid}`, under the new schema)")),
                );
            }
        }
        let mut types: Vec<&EntityTypeName> = next.entity_types.iter().collect();
        types.sort_by_key(|t| t.to_string());
        for ty in types {
            let page = match self.list(ty, None, ADMIT_SAMPLE, next).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sample Redis for the new schema; checked the cached entities only");
                    break;
                }
            };
            let uids: Vec<EntityUid> = page
                .uids
                .into_iter()
                .filter(|u| !checked.contains(u))
                .collect();
            let keys: Vec<String> = uids
                .iter()
                .map(|u| store::entity_key(&shared.prefix, u))
                .collect();
            let values = match shared.mget(&keys).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot sample Redis for the new schema; checked the cached entities only");
                    break;
                }
            };
            for (uid, value) in uids.iter().zip(values) {
                if let Some(bytes) = value {
                    if let Err(m) = Self::parse(uid, &bytes, next) {
                        misfits.push(m.replace("the schema", "the new schema"));
                    }
                }
            }
        }
        if misfits.is_empty() {
            return Ok(());
        }
        misfits.sort();
        let more = misfits.len().saturating_sub(ADMIT_REPORTED);
        let mut problems: Vec<Problem> = misfits
            .into_iter()
            .take(ADMIT_REPORTED)
            .map(|m| Problem::file("redis", m))
            .collect();
        if more > 0 {
            problems.push(Problem::file(
                "redis",
                format!("and {more} more stored entities that do not conform"),
            ));
        }
        Err(problems)
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
