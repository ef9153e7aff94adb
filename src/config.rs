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
    #[arg(long, env = "PORTCULLIS_ENTITIES", value_name = "FILE")]
    pub entities: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub entity: EntityArgs,
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
