//! Command-line and environment configuration: every flag of every subcommand, its
//! default and its `PORTCULLIS_*` variable, written once here.
//!
//! Defaults live only in the `#[arg]` attributes. The `Default` of each flag group is
//! derived from them by parsing an empty command line with the environment switched
//! off ([`defaults`]), so a test that builds `ServeArgs { .., ..Default::default() }`
//! gets exactly what `portcullis serve` gets, and needs no process environment.
//! Enumerated flags are enums, so a typo is a parse error, not a runtime branch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about = "Cedar authorization sidecar", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve decisions over HTTP.
    Serve(ServeArgs),
    /// Validate the schema and policies strictly; the exit status tells.
    Validate(ValidateArgs),
    /// Decide one request from the command line and print the determining policies.
    Authorize(AuthorizeArgs),
    /// Print the query plan of a principal, action and resource type: which resources
    /// the policies allow, as a filter (docs/query-plan.md).
    Plan(PlanArgs),
    /// Read and write entities in the Redis entity store.
    #[command(
        after_help = "Exit status: 0 when the write landed and every subscribed \
Portcullis acknowledged its invalidation; 1 on an error, after which nothing was \
written (unless the message says the store may hold part of the input); 2 on a usage \
error; 3 when the write landed but fewer subscribers acknowledged the invalidation \
than received it within --ack-timeout-ms (one may still serve the old data)."
    )]
    Entities(EntitiesArgs),
    /// Run policy test suites (YAML, or the cedar CLI's `run-tests` JSON).
    Test(TestArgs),
    /// Format `.cedar` files as the cedar CLI does.
    Fmt(FmtArgs),
    /// Prove the invariants (policies/invariants/*.yaml) with the SMT solver cvc5, and
    /// with `--against`, list what a policy change newly allows and denies.
    Verify(VerifyArgs),
}

/// A flag group with every default as `--help` shows it, read from an empty command
/// line with no environment variable consulted.
///
/// Only for groups without required arguments, which is every group that implements
/// `Default` below; `every_default_parses` proves it for each of them.
fn defaults<T: Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|a| a.env(None::<&'static str>))
        .no_binary_name(true);
    let parsed = command
        .try_get_matches_from(std::iter::empty::<String>())
        .and_then(|m| T::from_arg_matches(&m));
    match parsed {
        Ok(t) => t,
        // Unreachable for the groups below (a unit test parses each); there is no
        // sensible value to fall back on, so fail loudly at start-up.
        #[allow(clippy::panic)]
        Err(e) => panic!("flag defaults do not parse: {e}"),
    }
}

/// Where the model's files come from: schema, policies, template links, the gateway
/// route table and the AuthZEN mapping. Each one left out is the shipped portal
/// model's (the route table and the demo data only with the shipped schema).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Cedar schema file (`.cedarschema`, or `.json` for the JSON schema format).
    #[arg(long, env = "PORTCULLIS_SCHEMA", value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// A `.cedar` file, or a directory whose `*.cedar` files are loaded.
    #[arg(long, env = "PORTCULLIS_POLICIES", value_name = "DIR|FILE")]
    pub policies: Option<PathBuf>,
    /// Template links, in the JSON format of the cedar CLI's `--template-linked`.
    #[arg(long, env = "PORTCULLIS_TEMPLATE_LINKS", value_name = "FILE")]
    pub template_links: Option<PathBuf>,
    /// Gateway route table (YAML) mapping HTTP requests to actions and resources
    /// (default: the shipped portal routes, unless `--schema` names another schema).
    #[arg(long, env = "PORTCULLIS_ROUTES", value_name = "FILE")]
    pub routes: Option<PathBuf>,
    /// AuthZEN-to-Cedar mapping, YAML (or JSON when it ends in `.json`); default: the
    /// shipped portal mapping, whose entries that the schema lacks are ignored.
    #[arg(long, env = "PORTCULLIS_AUTHZEN_MAPPING", value_name = "FILE")]
    pub authzen_mapping: Option<PathBuf>,
}

impl Default for ModelArgs {
    fn default() -> Self {
        defaults()
    }
}

impl ModelArgs {
    /// Whether every part of the model is the shipped one.
    pub fn is_embedded(&self) -> bool {
        let Self {
            schema,
            policies,
            template_links,
            routes,
            authzen_mapping,
        } = self;
        schema.is_none()
            && policies.is_none()
            && template_links.is_none()
            && routes.is_none()
            && authzen_mapping.is_none()
    }
}

/// Where entity data comes from: a file (part of the model, reloaded with it) or the
/// Redis store.
#[derive(Debug, Clone, Args)]
pub struct EntityArgs {
    /// Entity data in Cedar's JSON entity format (default: the shipped demo data, with
    /// the shipped schema).
    #[arg(
        long,
        env = "PORTCULLIS_ENTITIES",
        value_name = "FILE",
        conflicts_with_all = ["redis_url", "redis_cluster"]
    )]
    pub entities: Option<PathBuf>,
    /// The Redis entity store (used instead of `--entities` when a Redis is named).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Which of a request's principal and resource must exist (in the entity data, or
    /// described by the request where the API allows): a request about one that does
    /// not is a Deny naming it. `none` keeps plain Cedar semantics, under which a
    /// missing entity only makes conditions that read it fail.
    #[arg(
        long,
        env = "PORTCULLIS_REQUIRE_ENTITIES",
        value_enum,
        default_value_t = RequireEntities::PrincipalResource
    )]
    pub require_entities: RequireEntities,
}

/// Which entities of a request must exist for it to be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RequireEntities {
    /// Both the principal and the resource (the default).
    #[default]
    #[value(name = "principal,resource")]
    PrincipalResource,
    /// Only the principal.
    Principal,
    /// Neither: plain Cedar semantics.
    None,
}

impl RequireEntities {
    pub fn principal(self) -> bool {
        self != RequireEntities::None
    }

    pub fn resource(self) -> bool {
        self == RequireEntities::PrincipalResource
    }
}

impl Default for EntityArgs {
    fn default() -> Self {
        defaults()
    }
}

/// Flags of the Redis entity store (`serve`, `authorize`; the connection flags are
/// shared with `entities`).
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_URL",
        value_name = "URL",
        conflicts_with = "redis_cluster"
    )]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (`host:port` or URLs).
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_CLUSTER",
        value_name = "NODES",
        value_delimiter = ','
    )]
    pub redis_cluster: Vec<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for `rediss://`
    /// with a private CA (default: the system's trust store).
    #[arg(long, env = "PORTCULLIS_REDIS_TLS_CA", value_name = "FILE")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Prefix of every key Portcullis reads and writes.
    #[arg(long, env = "PORTCULLIS_REDIS_PREFIX", default_value = "portcullis:")]
    pub redis_prefix: String,
    /// Channel writers publish changed uids on.
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_CHANNEL",
        default_value = "portcullis:invalidate"
    )]
    pub redis_channel: String,
    /// Also evict on Redis keyspace notifications, for writers that cannot publish
    /// (the server needs `notify-keyspace-events` with `K$g` or wider).
    #[arg(long, env = "PORTCULLIS_REDIS_KEYSPACE_EVENTS")]
    pub redis_keyspace_events: bool,
    /// How many levels of references (parents, entity attributes, tags) a decision
    /// fetches beyond its principal and resource.
    #[arg(long, env = "PORTCULLIS_REDIS_FETCH_DEPTH", default_value_t = 3)]
    pub redis_fetch_depth: usize,
    /// Connect and response timeout of Redis commands, in milliseconds.
    #[arg(long, env = "PORTCULLIS_REDIS_TIMEOUT_MS", default_value_t = 500)]
    pub redis_timeout_ms: u64,
    /// How often the invalidation subscription and the command connection are sent a
    /// `PING`, in milliseconds: a connection that stopped delivering without closing (a
    /// NAT or load balancer that dropped the flow) is found within one interval plus
    /// the liveness timeout.
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_LIVENESS_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub redis_liveness_interval_ms: u64,
    /// How long a liveness `PING` may go unanswered, in milliseconds, before the
    /// subscription is declared dead: the service is unready, the cache is flushed
    /// (unless `--max-staleness-secs` allows stale data), decisions read Redis
    /// uncached, and Portcullis resubscribes.
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_LIVENESS_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub redis_liveness_timeout_ms: u64,
    /// Upper bound of the entity cache, in bytes of stored JSON.
    #[arg(long, env = "PORTCULLIS_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Upper bound of the entity cache, in entities.
    #[arg(
        long,
        env = "PORTCULLIS_CACHE_MAX_ENTRIES",
        default_value_t = 1_000_000
    )]
    pub cache_max_entries: u64,
    /// Time to live of a cached entity: a safety net behind invalidation.
    #[arg(long, env = "PORTCULLIS_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// Time to live of a "not in Redis" entry, in milliseconds.
    #[arg(long, env = "PORTCULLIS_NEGATIVE_CACHE_TTL_MS", default_value_t = 1000)]
    pub negative_cache_ttl_ms: u64,
    /// While Redis or the subscription is down, keep serving cached entities for this
    /// long. 0 (the default) never serves data that could be stale.
    #[arg(long, env = "PORTCULLIS_MAX_STALENESS_SECS", default_value_t = 0)]
    pub max_staleness_secs: u64,
}

impl Default for RedisArgs {
    fn default() -> Self {
        defaults()
    }
}

impl RedisArgs {
    /// Whether a Redis store is named at all.
    pub fn is_configured(&self) -> bool {
        self.redis_url.is_some() || !self.redis_cluster.is_empty()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(1))
    }

    pub fn liveness_interval(&self) -> Duration {
        Duration::from_millis(self.redis_liveness_interval_ms.max(1))
    }

    pub fn liveness_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_liveness_timeout_ms.max(1))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub entity: EntityArgs,
    #[command(flatten)]
    pub authzen: AuthzenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub reload: ReloadArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub listener: ListenerArgs,
    /// Address to listen on.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "127.0.0.1:8180")]
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "PORTCULLIS_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Most requests in one batch.
    #[arg(long, env = "PORTCULLIS_BATCH_LIMIT", default_value_t = 100)]
    pub batch_limit: usize,
    /// Decision log: `off`, `on`, or a sampling rate between 0 and 1 (e.g. `0.1`).
    #[arg(long, env = "PORTCULLIS_DECISION_LOG", default_value = "off")]
    pub decision_log: DecisionLog,
    /// Log format of the service's own logs and the decision log.
    #[arg(
        long,
        env = "PORTCULLIS_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Json
    )]
    pub log_format: LogFormat,
    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Load and check the whole configuration, print a summary, and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        defaults()
    }
}

impl ServeArgs {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// The admin listener, and what a connection may cost: the timeouts that close a
/// connection that holds resources without using them, and the limits that keep a
/// flood of connections from starving the ones being served.
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics`, `/v1/policies`
    /// and `/openapi.json`, with its own connection budget. In a pod, bind `0.0.0.0`
    /// so the kubelet reaches it.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9180"
    )]
    pub admin_listen: SocketAddr,
    /// Most connections the admin listener serves at once; it is small and separate so
    /// probes and scrapes answer while the decision listener is full.
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_MAX_CONNECTIONS",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub admin_max_connections: u32,
    /// Most open connections on the decision listener. Beyond it new connections wait
    /// in the kernel's accept queue until one closes; open ones keep being served.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers: from connecting, or from the
    /// first byte of a later request on a kept-alive connection.
    #[arg(
        long,
        env = "PORTCULLIS_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a request has to send its whole body once its headers arrived.
    #[arg(
        long,
        env = "PORTCULLIS_BODY_READ_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight: between the
    /// requests of a kept-alive HTTP/1 connection, or an HTTP/2 connection without
    /// streams.
    #[arg(
        long,
        env = "PORTCULLIS_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_timeout_secs: u64,
    /// Seconds between HTTP/2 keep-alive pings, which find peers that vanished.
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_KEEPALIVE_INTERVAL_SECS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http2_keepalive_interval_secs: u64,
    /// Seconds an HTTP/2 peer has to answer a keep-alive ping before the connection is
    /// closed.
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub http2_keepalive_timeout_secs: u64,
    /// Most concurrent streams (requests) one HTTP/2 connection may open.
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub http2_max_concurrent_streams: u32,
}

impl Default for ListenerArgs {
    fn default() -> Self {
        defaults()
    }
}

/// The format of the service's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// The AuthZEN API's public address (see docs/authzen.md). The mapping is a model
/// file (`--authzen-mapping`).
#[derive(Debug, Clone, Args)]
pub struct AuthzenArgs {
    /// Base URL advertised by `/.well-known/authzen-configuration`, e.g.
    /// `https://pdp.example.com` (default: the scheme and `Host` of the request).
    #[arg(long, env = "PORTCULLIS_PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,
    /// File holding the key (at least 32 bytes) that signs search page tokens; give
    /// every replica the same file (default: a random key per process, so tokens do not
    /// survive a restart or cross replicas).
    #[arg(long, env = "PORTCULLIS_PAGE_TOKEN_KEY_FILE", value_name = "FILE")]
    pub page_token_key_file: Option<PathBuf>,
}

impl Default for AuthzenArgs {
    fn default() -> Self {
        defaults()
    }
}

/// HTTPS for the listener. Plain HTTP when no certificate is given.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Server certificate chain (PEM); with `--tls-key`, serve HTTPS.
    #[arg(
        long,
        env = "PORTCULLIS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the server certificate (PEM).
    #[arg(
        long,
        env = "PORTCULLIS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): require client certificates signed by it (mutual TLS).
    #[arg(
        long,
        env = "PORTCULLIS_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for TlsArgs {
    fn default() -> Self {
        defaults()
    }
}

/// When the served model is reloaded. SIGHUP always reloads.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Reload when a file of the model changes (default: on when any of them is read
    /// from a file, off for the shipped model). `--watch=false` turns it off too.
    #[arg(
        long,
        env = "PORTCULLIS_WATCH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        overrides_with = "no_watch"
    )]
    pub watch: Option<bool>,
    /// Do not watch the model's files (SIGHUP still reloads).
    #[arg(long, overrides_with = "watch")]
    pub no_watch: bool,
    /// Milliseconds without further file changes before a reload starts, so that a
    /// burst of writes (an editor, a `git checkout`, a ConfigMap swap) loads once.
    #[arg(long, env = "PORTCULLIS_RELOAD_DEBOUNCE_MS", default_value_t = 150)]
    pub reload_debounce_ms: u64,
    /// Milliseconds between the two reads of a reload: the files apply only if both
    /// reads agree and no change arrived between them, so a file written in steps is
    /// not served half-written. `0` reads once.
    #[arg(long, env = "PORTCULLIS_RELOAD_SETTLE_MS", default_value_t = 200)]
    pub reload_settle_ms: u64,
}

impl Default for ReloadArgs {
    fn default() -> Self {
        defaults()
    }
}

impl ReloadArgs {
    /// `Some(choice)` when the flags decide; `None` leaves it to the sources.
    pub fn watch(&self) -> Option<bool> {
        if self.no_watch {
            Some(false)
        } else {
            self.watch
        }
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.reload_debounce_ms)
    }

    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.reload_settle_ms)
    }
}

/// Where a gateway request's client address may be read. Portcullis sees only the
/// proxy's check request, so the address is whatever the proxy put in a header; trust
/// one only when the proxy sets it (and, for `X-Forwarded-For`, appends the address it
/// saw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ClientIpFrom {
    /// Never: routes' `client_ip` context stays unset.
    #[default]
    None,
    /// The `X-Real-IP` header.
    XRealIp,
    /// The last entry of `X-Forwarded-For`: the one the proxy in front of Portcullis
    /// appended. Earlier entries come from the client and prove nothing.
    XForwardedFor,
}

/// The gateway endpoints (`/forward-auth/...`, `/ext-authz/...`): how a caller is
/// identified and how the proxy's request is read. Identity comes from a verified JWT
/// or from a trusted header, never both; see docs/gateway.md.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// PEM public key that signs the JWTs: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA).
    #[arg(long, env = "PORTCULLIS_JWT_KEY_FILE", value_name = "FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// JWKS file with the signing keys (RS256, ES256, EdDSA); tokens must name a `kid`.
    #[arg(long, env = "PORTCULLIS_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// URL of the identity provider's JWKS (HTTPS; HTTP only on loopback), fetched in
    /// the background and refreshed; tokens must name a `kid`.
    #[arg(long, env = "PORTCULLIS_JWT_JWKS_URL", value_name = "URL")]
    pub jwt_jwks_url: Option<String>,
    /// Read the JWKS URL (`jwks_uri`) from `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "PORTCULLIS_JWT_OIDC_DISCOVERY")]
    pub jwt_oidc_discovery: bool,
    /// Seconds between fetches of the JWKS from `--jwt-jwks-url` (or discovery); a
    /// token naming an unknown `kid` fetches at once, at most once a second.
    #[arg(
        long,
        env = "PORTCULLIS_JWT_JWKS_REFRESH_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub jwt_jwks_refresh_secs: u64,
    /// Verified tokens remembered (keyed by the whole token) until their `exp`, so a
    /// returning token skips the signature check; 0 turns the cache off.
    #[arg(long, env = "PORTCULLIS_JWT_CACHE_ENTRIES", default_value_t = 10_000)]
    pub jwt_cache_entries: u64,
    /// Bytes the verified-token cache may hold, the tokens themselves included.
    #[arg(long, env = "PORTCULLIS_JWT_CACHE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub jwt_cache_bytes: u64,
    /// File holding an HS256 shared secret; HS256 is accepted only with this flag.
    #[arg(long, env = "PORTCULLIS_JWT_HS256_SECRET_FILE", value_name = "FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Required `iss` of tokens.
    #[arg(long, env = "PORTCULLIS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens.
    #[arg(long, env = "PORTCULLIS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "PORTCULLIS_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// The principal uid a token stands for, with a claim name in braces.
    #[arg(
        long,
        env = "PORTCULLIS_JWT_PRINCIPAL",
        default_value = "Portal::User::\"{sub}\""
    )]
    pub jwt_principal: String,
    /// `amr` values that mean the session used a second factor (comma-separated).
    #[arg(
        long,
        env = "PORTCULLIS_JWT_SECOND_FACTOR_AMR",
        value_delimiter = ',',
        default_value = "mfa,otp"
    )]
    pub jwt_second_factor_amr: Vec<String>,
    /// `acr` values that mean the session used a second factor (comma-separated).
    #[arg(long, env = "PORTCULLIS_JWT_SECOND_FACTOR_ACR", value_delimiter = ',')]
    pub jwt_second_factor_acr: Vec<String>,
    /// Trust this header, set by an upstream authenticator, as the principal's id.
    /// Only for a proxy that strips the header from client requests.
    #[arg(
        long,
        env = "PORTCULLIS_TRUSTED_PRINCIPAL_HEADER",
        value_name = "HEADER"
    )]
    pub trusted_principal_header: Option<String>,
    /// Entity type of the principal named by the trusted header.
    #[arg(
        long,
        env = "PORTCULLIS_TRUSTED_PRINCIPAL_TYPE",
        default_value = "Portal::User"
    )]
    pub trusted_principal_type: String,
    /// Trusted header whose value `true` says the session used a second factor.
    #[arg(
        long,
        env = "PORTCULLIS_TRUSTED_SECOND_FACTOR_HEADER",
        value_name = "HEADER"
    )]
    pub trusted_second_factor_header: Option<String>,
    /// Where the client's address comes from.
    #[arg(
        long,
        env = "PORTCULLIS_CLIENT_IP_FROM",
        value_enum,
        default_value_t = ClientIpFrom::None
    )]
    pub client_ip_from: ClientIpFrom,
    /// Path prefix of Envoy's ext_authz check requests; the original path follows it.
    #[arg(
        long,
        env = "PORTCULLIS_EXT_AUTHZ_PREFIX",
        default_value = "/ext-authz"
    )]
    pub ext_authz_prefix: String,
}

impl Default for GatewayArgs {
    fn default() -> Self {
        defaults()
    }
}

/// `portcullis validate`.
#[derive(Debug, Clone, Default, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Entity data (Cedar's JSON entity format) to check against the schema with the
    /// model; each misfit names the entity, the attribute and the expected type.
    /// Default: none (the model alone is checked).
    #[arg(long, env = "PORTCULLIS_ENTITIES", value_name = "FILE")]
    pub entities: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub entity: EntityArgs,
    /// Principal uid, e.g. `Portal::User::"bea"`.
    #[arg(long)]
    pub principal: String,
    /// Action uid, e.g. `Portal::Action::"PayInvoice"`.
    #[arg(long)]
    pub action: String,
    /// Resource uid, e.g. `Portal::Invoice::"inv-1001"`.
    #[arg(long)]
    pub resource: String,
    /// Context as a JSON object.
    #[arg(long)]
    pub context: Option<String>,
}

/// `portcullis plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub entity: EntityArgs,
    /// Principal uid, e.g. `Portal::User::"bea"`.
    #[arg(long)]
    pub principal: String,
    /// Action uid, e.g. `Portal::Action::"ViewInvoice"`.
    #[arg(long)]
    pub action: String,
    /// Resource type, e.g. `Portal::Invoice`.
    #[arg(long)]
    pub resource_type: String,
    /// Context as a JSON object.
    #[arg(long)]
    pub context: Option<String>,
}

/// `portcullis entities`: the Redis store's connection flags, the model whose schema
/// every write is checked against, and the command.
#[derive(Debug, Clone, Args)]
pub struct EntitiesArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// How long to wait for running services to acknowledge the invalidations; a
    /// shortfall exits with status 3.
    #[arg(long, env = "PORTCULLIS_ACK_TIMEOUT_MS", default_value_t = 2000)]
    pub ack_timeout_ms: u64,
    #[command(subcommand)]
    pub command: EntitiesCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EntitiesCommand {
    /// Import a file of entities (Cedar JSON): all of it lands, or none of it.
    Import { file: PathBuf },
    /// Write entities given as JSON (one entity or an array), or read from `--file`.
    Put {
        json: Option<String>,
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
    },
    /// Delete one entity, e.g. `'Portal::User::"bea"'`.
    Delete { uid: String },
    /// Print one entity's stored JSON.
    Get { uid: String },
}

/// `portcullis test`. Model flags left out are read from the working directory when the
/// shipped model's files are there (`policies/`, `schema/portal.cedarschema`, ...), so a
/// policy repository tests its own edits; otherwise the embedded model is used.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A test file, or a directory searched recursively for `*.yaml`, `*.yml` and
    /// cedar CLI `*.json` suites.
    #[arg(value_name = "PATH", default_value = "policies/tests")]
    pub path: PathBuf,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// List the policies (static and template-linked) that no test case made
    /// determining.
    #[arg(long)]
    pub coverage: bool,
    /// Fail (exit status 1) when fewer than this percentage of policies were
    /// determining in some case. Implies `--coverage`.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub min_coverage: Option<f64>,
}

impl Default for TestArgs {
    fn default() -> Self {
        defaults()
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage between 0 and 100")),
    }
}

/// `portcullis fmt`.
#[derive(Debug, Clone, Args)]
pub struct FmtArgs {
    /// `.cedar` files, or directories searched recursively for them.
    #[arg(value_name = "PATH", default_value = "policies")]
    pub paths: Vec<PathBuf>,
    /// Write nothing; list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
}

impl Default for FmtArgs {
    fn default() -> Self {
        defaults()
    }
}

/// Whether decisions are logged: never, always, or a fraction of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecisionLog {
    Off,
    On,
    Sampled(f64),
}

impl FromStr for DecisionLog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "on" => Ok(Self::On),
            other => match other.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(Self::Sampled(r)),
                _ => Err(format!(
                    "invalid decision log setting `{other}`: expected `off`, `on` or a rate between 0 and 1"
                )),
            },
        }
    }
}

/// The format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// `portcullis verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Directory of invariant files (`*.yaml`). Default: `invariants/` beside the
    /// `--policies` directory when there is one, else the shipped portal invariants.
    #[arg(long, value_name = "DIR")]
    pub invariants: Option<PathBuf>,
    /// Review a change: the old policies (a `.cedar` file or directory, same schema),
    /// compared per request environment with the ones under check.
    #[arg(long, value_name = "OLD_POLICY_DIR")]
    pub against: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

impl Default for VerifyArgs {
    fn default() -> Self {
        defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_without_the_environment() {
        let serve = ServeArgs::default();
        assert_eq!(serve.listen, SocketAddr::from(([127, 0, 0, 1], 8180)));
        assert_eq!(serve.max_body_bytes, 1_048_576);
        assert_eq!(serve.log_format, LogFormat::Json);
        assert_eq!(serve.decision_log, DecisionLog::Off);
        assert_eq!(serve.gateway.jwt_second_factor_amr, ["mfa", "otp"]);
        assert_eq!(serve.gateway.client_ip_from, ClientIpFrom::None);
        assert_eq!(serve.entity.redis.redis_fetch_depth, 3);
        assert_eq!(serve.reload.reload_debounce_ms, 150);
        assert_eq!(serve.reload.reload_settle_ms, 200);
        assert!(serve.model.is_embedded());
        assert_eq!(
            serve.listener.admin_listen,
            SocketAddr::from(([127, 0, 0, 1], 9180))
        );
        assert_eq!(serve.listener.max_connections, 4096);
        assert_eq!(serve.listener.header_read_timeout_secs, 10);
        assert_eq!(serve.listener.idle_timeout_secs, 60);
        assert_eq!(TestArgs::default().path, PathBuf::from("policies/tests"));
        assert_eq!(FmtArgs::default().paths, [PathBuf::from("policies")]);
        assert_eq!(VerifyArgs::default().format, ReportFormat::Text);
        let _ = (
            ValidateArgs::default(),
            AuthzenArgs::default(),
            TlsArgs::default(),
        );
    }

    #[test]
    fn the_command_line_agrees_with_the_defaults() {
        let parsed = Cli::try_parse_from(["portcullis", "serve"]).map_err(|e| e.to_string());
        let Ok(Cli {
            command: Command::Serve(args),
        }) = parsed
        else {
            unreachable!("`serve` parses: {parsed:?}")
        };
        let default = ServeArgs::default();
        // Compared through Debug: the flag groups hold no floats but the log rate.
        assert_eq!(format!("{args:?}"), format!("{default:?}"));
    }

    #[test]
    fn enumerated_flags_refuse_unknown_values() {
        for flags in [
            ["portcullis", "serve", "--log-format", "xml"],
            ["portcullis", "serve", "--client-ip-from", "x-client"],
            ["portcullis", "serve", "--decision-log", "sometimes"],
            ["portcullis", "serve", "--max-connections", "0"],
            ["portcullis", "serve", "--header-read-timeout-secs", "0"],
        ] {
            assert!(Cli::try_parse_from(flags).is_err(), "{flags:?}");
        }
    }
}
