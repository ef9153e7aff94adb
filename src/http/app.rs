//! The running service's state, built once from configuration: the model, the entity
//! source, metrics and the decision recorder, the AuthZEN and gateway settings, TLS.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::authzen::token::PageTokenKey;
use crate::authzen::Authzen;
use crate::config::{ModelArgs, ServeArgs, TlsArgs};
use crate::decision::Recorder;
use crate::entities::{EntitySource, FileSource, RedisSource};
use crate::gateway::{Gateway, GatewaySettings};
use crate::metrics::Metrics;
use crate::model::{EntityFile, Model};

use super::listener::ConnectionSettings;
use super::tls::Tls;

/// Limits of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub batch_limit: usize,
}

/// Everything a request handler reads. Built once by [`App::build`]; nothing in it is
/// optional but TLS (plain HTTP is a choice, not a missing half).
pub struct App {
    /// The serving model; a request loads its snapshot once.
    pub model: Arc<Model>,
    pub entities: Arc<dyn EntitySource>,
    pub metrics: Arc<Metrics>,
    /// Turns every decision's outcome into metrics and the decision log.
    pub recorder: Recorder,
    pub authzen: Authzen,
    pub gateway: Gateway,
    /// HTTPS for the listener; `None` serves plain HTTP.
    pub tls: Option<Tls>,
    pub limits: Limits,
    /// Connection budgets and timeouts of both listeners.
    pub connections: ConnectionSettings,
    /// Fetches the gateway's signing keys when they come from an identity provider;
    /// stops when the `App` is dropped.
    pub jwks: Option<super::jwks::JwksTask>,
    /// Set the first time `/readyz` found the entity source usable (the first snapshot
    /// is loaded before the listeners open): until then the service is `starting`.
    pub became_ready: AtomicBool,
    /// Ids for requests that carry no `X-Request-Id`.
    pub request_ids: super::request_id::RequestIds,
}

/// Where the entity data of `serve` (and `authorize`) comes from.
pub fn entity_file(args: &crate::config::EntityArgs) -> EntityFile {
    if args.redis.is_configured() {
        EntityFile::External
    } else {
        match &args.entities {
            Some(path) => EntityFile::Path(path.clone()),
            None => EntityFile::Shipped,
        }
    }
}

/// Opens the entity source the flags name: the model's own data, or Redis (which
/// connects in the background and registers its metrics in `metrics`).
pub fn open_entities(
    args: &crate::config::EntityArgs,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Arc<dyn EntitySource>> {
    if args.redis.is_configured() {
        let source = RedisSource::open(&args.redis, metrics.map(|m| &m.registry))?;
        return Ok(Arc::new(source));
    }
    Ok(Arc::new(FileSource))
}

impl App {
    /// Builds the whole application state from `serve` flags: loads and checks the
    /// model, opens the entity source, and sets up every subsystem.
    pub fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = entity_file(&args.entity);
        let snapshot =
            crate::model::load(&args.model, &file).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(url) = &args.authzen.public_base_url {
            crate::authzen::check_public_base_url(url).map_err(|e| anyhow::anyhow!(e))?;
        }
        let settings =
            GatewaySettings::from_args(&args.gateway).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = open_tls(&args.tls)?;
        let metrics = Arc::new(Metrics::new()?);
        let entities = open_entities(&args.entity, Some(&metrics))?;
        let page_tokens = match &args.authzen.page_token_key_file {
            Some(path) => PageTokenKey::from_file(path)?,
            None => {
                tracing::info!(
                    "AuthZEN search page tokens are signed with a random key of this process: they do not survive a restart or cross replicas (give every replica one `--page-token-key-file`)"
                );
                PageTokenKey::random()?
            }
        };
        let authzen = Authzen::new(
            args.authzen.public_base_url.clone(),
            page_tokens,
            &metrics.registry,
        )?;
        let jwks = settings
            .authenticator
            .remote_keys()
            .map(|keys| super::jwks::spawn(keys.clone(), &metrics.registry))
            .transpose()?;
        let gateway = Gateway::new(settings, &metrics.registry)?;
        let model = Arc::new(Model::new(snapshot, args.model.clone(), file, &metrics));
        Ok(Self {
            model,
            entities,
            recorder: Recorder::new(
                metrics.clone(),
                args.decision_log,
                args.entity.require_entities,
            ),
            metrics,
            authzen,
            gateway,
            tls,
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                batch_limit: args.batch_limit,
            },
            connections: ConnectionSettings::from(&args.listener),
            jwks,
            became_ready: AtomicBool::new(false),
            request_ids: super::request_id::RequestIds::new(),
        })
    }

    /// The start-up line's words for where the model comes from: the embedded demo
    /// and the flags that replace it, or the files.
    pub fn model_origin(args: &ModelArgs, entities: &EntityFile) -> String {
        if args.is_embedded() && *entities == EntityFile::Shipped {
            "the embedded demo portal model and its data (replace parts with --schema, --policies, --template-links, --routes, --authzen-mapping, --entities or --redis-url)".to_string()
        } else if args.is_embedded() {
            "the embedded portal model (replace parts with --schema, --policies, --template-links, --routes, --authzen-mapping)".to_string()
        } else {
            "model files (see `/v1/policies`)".to_string()
        }
    }
}

/// The TLS acceptor the flags ask for, if any.
pub fn open_tls(args: &TlsArgs) -> anyhow::Result<Option<Tls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Tls::load(cert, key, args.tls_client_ca.as_deref())?)),
        (None, None) if args.tls_client_ca.is_none() => Ok(None),
        _ => anyhow::bail!(
            "`--tls-cert` and `--tls-key` go together (and `--tls-client-ca` needs both)"
        ),
    }
}
