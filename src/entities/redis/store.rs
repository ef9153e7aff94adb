//! The Redis side of the entity store: where keys live, how to reach a single server or
//! a cluster, and the reads and writes both the service and the CLI use.
//!
//! Key layout (documented for writers in `docs/redis.md`):
//!
//! - `<prefix>e:<uid>` — one string key per entity, `<uid>` in Cedar syntax
//!   (`Portal::User::"bea"`), holding the entity's Cedar JSON (`uid`, `attrs`,
//!   `parents`, `tags`). Cedar syntax escapes quotes, so every uid maps to exactly one
//!   key and the key parses back to the uid (keyspace notifications rely on that).
//! - `<prefix>t:<Type>` — a sorted set per entity type whose members are the entity ids
//!   with score 0, so `ZRANGEBYLEX` pages through a type in id order with a cursor.
//! - `<prefix>r:<Type>.<attr>:<uid>` — a sorted set per referenced entity `<uid>` and
//!   reference attribute `<attr>` of `<Type>` (an attribute whose schema type is one
//!   entity): the ids of the `<Type>` entities whose `<attr>` is `<uid>`, score 0,
//!   paged like the type index. Kept exact by every write of `portcullis entities`
//!   in the transaction that writes the entity; query plans and search read it.
//!
//! No hash tags: entity keys spread over a cluster's slots. A cluster's `MGET` is
//! split per node by the client and answered in one parallel round trip, so a level
//! of the fetch still costs one round trip.

use std::time::Duration;

use cedar_policy::{EntityTypeName, EntityUid};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, RedisResult, TlsCertificates};

/// The Redis key of an entity.
pub fn entity_key(prefix: &str, uid: &EntityUid) -> String {
    format!("{prefix}e:{uid}")
}

/// The Redis key of a type's index set.
pub fn type_key(prefix: &str, ty: &EntityTypeName) -> String {
    format!("{prefix}t:{ty}")
}

/// The Redis key of the index set of the `ty` entities whose `attr` refers to `target`.
pub fn ref_key(prefix: &str, ty: &EntityTypeName, attr: &str, target: &EntityUid) -> String {
    format!("{prefix}r:{ty}.{attr}:{target}")
}

/// The Redis key of the ledger of `ty.attr`'s index sets: the ids of the `ty`
/// entities whose membership in those sets a writer keeps (`portcullis entities` adds
/// every entity it writes, in the same transaction). The sets are trusted only while
/// it holds as many ids as the type's index set (`t:`): an entity written around the
/// writer, or data written before the sets existed, makes the counts differ.
pub fn ledger_key(prefix: &str, ty: &EntityTypeName, attr: &str) -> String {
    format!("{prefix}x:{ty}.{attr}")
}

/// The Redis key of the member set of `parent`: the ids of its children of type
/// `child`, for subject search ("who is in this account?").
pub fn member_key(prefix: &str, child: &EntityTypeName, parent: &EntityUid) -> String {
    format!("{prefix}m:{child}:{parent}")
}

/// The Redis key of the ledger of the member sets of `ty`'s entities: the ids of the
/// `ty` entities whose place in them a writer keeps (see [`ledger_key`]).
pub fn member_ledger_key(prefix: &str, ty: &EntityTypeName) -> String {
    format!("{prefix}x:{ty}")
}

/// The uid an entity key names, if it is one.
pub fn uid_of_key(prefix: &str, key: &str) -> Option<EntityUid> {
    let rest = key.strip_prefix(prefix)?.strip_prefix("e:")?;
    rest.parse().ok()
}

/// Where the store is: one server (plain or TLS, with credentials in the URL) or a
/// cluster reached through seed nodes.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // Built once per process; boxing buys nothing.
pub enum Target {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// One client per seed, for the invalidation subscription: a cluster forwards
        /// `PUBLISH` to every node, so a subscription on any one node hears all.
        seeds: Vec<redis::Client>,
    },
}

/// Turns `host:port` into `redis://host:port`; URLs pass through.
fn as_url(s: &str) -> String {
    let s = s.trim();
    if s.contains("://") {
        s.to_string()
    } else {
        format!("redis://{s}")
    }
}

impl Target {
    /// Parses the configured URL or seed list. Nothing connects yet.
    pub fn new(
        url: Option<&str>,
        cluster: &[String],
        timeout: Duration,
        ca: Option<Vec<u8>>,
    ) -> RedisResult<Self> {
        let open = |url: String| match &ca {
            Some(pem) => redis::Client::build_with_tls(
                url,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(url),
        };
        let seeds: Vec<String> = cluster
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| as_url(s))
            .collect();
        if seeds.is_empty() {
            let url = as_url(url.unwrap_or("redis://127.0.0.1:6379"));
            return Ok(Target::Single(open(url)?));
        }
        let mut builder = ClusterClient::builder(seeds.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        if let Some(pem) = &ca {
            builder = builder.certs(TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        let client = builder.build()?;
        let seeds = seeds
            .into_iter()
            .map(open)
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Target::Cluster { client, seeds })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// A connection for commands. A single server's connection reconnects by itself;
    /// so does a cluster's.
    pub async fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(Conn::Single(conn))
            }
            Target::Cluster { client, .. } => {
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Clients to subscribe through, in order of preference.
    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        match self {
            Target::Single(c) => vec![c.clone()],
            Target::Cluster { seeds, .. } => seeds.clone(),
        }
    }
}

/// A command connection to a single server or a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    pub async fn pipe<T: FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        }
    }

    /// The values of `keys`, in order; `None` where a key is absent.
    pub async fn mget(&mut self, keys: &[String]) -> RedisResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(k);
        }
        self.query(&cmd).await
    }
}
