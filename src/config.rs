//! Command-line and environment configuration. Every flag of `serve` also reads a
//! `PORTCULLIS_*` variable; tests build these structs directly, without a process
//! environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Validate(ModelArgs),
    /// Decide one request from the command line and print the determining policies.
    Authorize(AuthorizeArgs),
    /// Read and write entities in the Redis entity store.
    Entities(crate::entities::redis::EntitiesArgs),
    /// Run policy test suites (YAML, or the cedar CLI's `run-tests` JSON).
    Test(TestArgs),
    /// Format `.cedar` files as the cedar CLI does.
    Fmt(FmtArgs),
    /// Prove the invariants (policies/invariants/*.yaml) with the SMT solver cvc5, and
    /// with `--against`, list what a policy change newly allows and denies.
    Verify(VerifyArgs),
}

/// Where the schema, policies and template links come from. Each one left out is the
/// shipped portal model's.
#[derive(Debug, Clone, Default, Args)]
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
}

/// Where entity data comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct EntityArgs {
    /// Entity data in Cedar's JSON entity format (default: the shipped demo data).
    #[arg(
        long,
        env = "PORTCULLIS_ENTITIES",
        value_name = "FILE",
        conflicts_with_all = ["redis_url", "redis_cluster"]
    )]
    pub entities: Option<PathBuf>,
    /// The Redis entity store (used instead of `--entities` when a Redis is named).
    #[command(flatten)]
    pub redis: crate::entities::redis::RedisArgs,
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
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Load and check the whole configuration, print a summary, and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl ServeArgs {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            model: ModelArgs::default(),
            entity: EntityArgs::default(),
            authzen: AuthzenArgs::default(),
            tls: TlsArgs::default(),
            reload: ReloadArgs::default(),
            gateway: GatewayArgs::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8180)),
            max_body_bytes: 1_048_576,
            batch_limit: 100,
            decision_log: DecisionLog::Off,
            log_format: "json".to_string(),
            shutdown_grace_secs: 10,
            check_config: false,
        }
    }
}

/// The AuthZEN API's mapping and public address (see docs/authzen.md).
#[derive(Debug, Clone, Default, Args)]
pub struct AuthzenArgs {
    /// AuthZEN-to-Cedar mapping, YAML (or JSON when it ends in `.json`); default: the
    /// shipped portal mapping.
    #[arg(long, env = "PORTCULLIS_AUTHZEN_MAPPING", value_name = "FILE")]
    pub authzen_mapping: Option<PathBuf>,
    /// Base URL advertised by `/.well-known/authzen-configuration`, e.g.
    /// `https://pdp.example.com` (default: the scheme and `Host` of the request).
    #[arg(long, env = "PORTCULLIS_PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,
}

/// HTTPS for the listener. Plain HTTP when no certificate is given.
#[derive(Debug, Clone, Default, Args)]
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

/// When the served model is reloaded. SIGHUP always reloads.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Reload when a file of the schema, policies or links changes (default: on when
    /// any of them is read from a file, off for the shipped model). `--watch=false`
    /// turns it off too.
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
}

impl Default for ReloadArgs {
    fn default() -> Self {
        Self {
            watch: None,
            no_watch: false,
            reload_debounce_ms: 150,
        }
    }
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
    /// Where the client's address comes from: `none`, `x-real-ip`, or `x-forwarded-for`
    /// (its last entry, the one the proxy in front of Portcullis appended).
    #[arg(long, env = "PORTCULLIS_CLIENT_IP_FROM", default_value = "none", value_parser = ["none", "x-real-ip", "x-forwarded-for"])]
    pub client_ip_from: String,
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
        Self {
            jwt_key_file: None,
            jwt_jwks_file: None,
            jwt_hs256_secret_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            jwt_principal: "Portal::User::\"{sub}\"".to_string(),
            jwt_second_factor_amr: vec!["mfa".to_string(), "otp".to_string()],
            jwt_second_factor_acr: Vec::new(),
            trusted_principal_header: None,
            trusted_principal_type: "Portal::User".to_string(),
            trusted_second_factor_header: None,
            client_ip_from: "none".to_string(),
            ext_authz_prefix: "/ext-authz".to_string(),
        }
    }
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

/// `portcullis test`. Model flags left out are read from the working directory when the
/// shipped model's files are there (`policies/`, `schema/portal.cedarschema`, ...), so a
/// policy repository tests its own edits; otherwise the embedded model is used.
#[derive(Debug, Clone, Default, Args)]
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

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage between 0 and 100")),
    }
}

/// `portcullis fmt`.
#[derive(Debug, Clone, Default, Args)]
pub struct FmtArgs {
    /// `.cedar` files, or directories searched recursively for them.
    #[arg(value_name = "PATH", default_value = "policies")]
    pub paths: Vec<PathBuf>,
    /// Write nothing; list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
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
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}
