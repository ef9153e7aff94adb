//! The running service's state and its start-up: load the model, pick the entity
//! source, and hand both to the HTTP layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{AuthzenArgs, DecisionLog, EntityArgs, ModelArgs, ServeArgs, TlsArgs};
use crate::entities::{EntitySource, FileSource, RedisSource};
use crate::gateway::{Gateway, GatewaySettings};
use crate::metrics::Metrics;
use crate::policy::{self, embedded, LoadErrors, PolicySnapshot, PolicySources, SourceFile};
use crate::reload::ReloadState;

/// Options of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub max_body_bytes: usize,
    pub batch_limit: usize,
    pub decision_log: DecisionLog,
}

impl From<&ServeArgs> for HttpOptions {
    fn from(a: &ServeArgs) -> Self {
        Self {
            max_body_bytes: a.max_body_bytes,
            batch_limit: a.batch_limit,
            decision_log: a.decision_log,
        }
    }
}

/// Everything a request handler reads.
pub struct App {
    /// The serving snapshot. Read on every request, written only by a reload: an
    /// `ArcSwap` lets readers load it without a lock, and a request keeps the snapshot
    /// it loaded even if a reload swaps in another meanwhile.
    pub policies: Arc<ArcSwap<PolicySnapshot>>,
    pub entities: Arc<dyn EntitySource>,
    pub metrics: Arc<Metrics>,
    pub options: HttpOptions,
    /// The AuthZEN API; `None` only if the embedded mapping failed to load, which its
    /// unit test rules out (the endpoints then answer 404).
    pub authzen: Option<Arc<crate::authzen::Authzen>>,
    /// HTTPS for the listener; `None` serves plain HTTP.
    pub tls: Option<crate::http::tls::Tls>,
    /// Where the model comes from: a reload reads these paths again. The default is
    /// the shipped model.
    pub model: ModelArgs,
    /// Outcome of the last reload and the reload metrics, for `/v1/policies`.
    pub reload: Arc<ReloadState>,
    /// The gateway endpoints' identity source, proxy settings and metrics.
    pub gateway: Gateway,
    /// Decisions seen, for deterministic sampling of the decision log.
    decisions_seen: AtomicU64,
}

impl App {
    pub fn new(
        snapshot: PolicySnapshot,
        entities: Arc<dyn EntitySource>,
        metrics: Arc<Metrics>,
        options: HttpOptions,
    ) -> Self {
        metrics
            .policies_loaded
            .set(i64::try_from(snapshot.active_policy_count()).unwrap_or(i64::MAX));
        let reload = Arc::new(ReloadState::new(&metrics));
        let gateway = Gateway::new(GatewaySettings::unconfigured(), &metrics.registry);
        Self {
            policies: Arc::new(ArcSwap::from_pointee(snapshot)),
            entities,
            metrics,
            options,
            authzen: crate::authzen::Authzen::embedded().ok().map(Arc::new),
            tls: None,
            model: ModelArgs::default(),
            reload,
            gateway,
            decisions_seen: AtomicU64::new(0),
        }
    }

    /// Whether this decision goes to the decision log. A rate `r` logs exactly
    /// `floor(n * r)` of the first `n` decisions, with no randomness to test around.
    pub fn should_log_decision(&self) -> bool {
        match self.options.decision_log {
            DecisionLog::Off => false,
            DecisionLog::On => true,
            DecisionLog::Sampled(rate) => {
                let n = self.decisions_seen.fetch_add(1, Ordering::Relaxed) as f64;
                ((n + 1.0) * rate).floor() > (n * rate).floor()
            }
        }
    }
}

/// Reads the sources the flags name, each falling back to the shipped model.
pub fn model_sources(args: &ModelArgs) -> Result<PolicySources, LoadErrors> {
    let mut sources = PolicySources::embedded();
    if let Some(path) = &args.schema {
        sources.schema = SourceFile::read(path)?;
        // The shipped route table belongs to the shipped schema.
        sources.routes = None;
    }
    if let Some(path) = &args.policies {
        sources.policies = policy::policy_files(path)?
            .iter()
            .map(|p| SourceFile::read(p))
            .collect::<Result<_, _>>()?;
        // The shipped links name the shipped templates; other policies bring their own
        // links file or none.
        sources.links = None;
    }
    if let Some(path) = &args.template_links {
        sources.links = Some(SourceFile::read(path)?);
    }
    if let Some(path) = &args.routes {
        sources.routes = Some(SourceFile::read(path)?);
    }
    Ok(sources)
}

/// Loads and strictly validates the model the flags name.
pub fn load_model(args: &ModelArgs) -> Result<PolicySnapshot, LoadErrors> {
    policy::compile(&model_sources(args)?)
}

/// Opens the entity source the flags name and checks its data against the schema.
pub fn open_entities(
    args: &EntityArgs,
    snapshot: &PolicySnapshot,
) -> anyhow::Result<Arc<dyn EntitySource>> {
    open_entities_with(args, snapshot, None)
}

/// [`open_entities`], registering the source's metrics (if it has any) in `metrics`.
/// A Redis source connects in the background; its data is checked per entity as
/// decisions read it.
pub fn open_entities_with(
    args: &EntityArgs,
    snapshot: &PolicySnapshot,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Arc<dyn EntitySource>> {
    if args.redis.is_configured() {
        let source = RedisSource::open(&args.redis, metrics.map(|m| &m.registry))?;
        return Ok(Arc::new(source));
    }
    let file = match &args.entities {
        Some(path) => SourceFile::read(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => SourceFile::new(embedded::ENTITIES.0, embedded::ENTITIES.1),
    };
    let source = FileSource::new(&file)?;
    source.check(snapshot)?;
    Ok(Arc::new(source))
}

/// Builds the whole application state from `serve` flags.
pub fn build_app(args: &ServeArgs) -> anyhow::Result<App> {
    let snapshot = load_model(&args.model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = GatewaySettings::from_args(&args.gateway).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut authzen = open_authzen(&args.authzen, &snapshot)?;
    let tls = open_tls(&args.tls)?;
    let metrics = Arc::new(Metrics::new()?);
    let entities = open_entities_with(&args.entity, &snapshot, Some(&metrics))?;
    authzen.register_metrics(&metrics.registry)?;
    let mut app = App::new(snapshot, entities, metrics, HttpOptions::from(args));
    app.authzen = Some(Arc::new(authzen));
    app.tls = tls;
    app.model = args.model.clone();
    app.gateway.settings = gateway;
    Ok(app)
}

/// The AuthZEN mapping the flags name, checked against the schema: an explicit file
/// must name only declared types and actions.
pub fn open_authzen(
    args: &AuthzenArgs,
    snapshot: &PolicySnapshot,
) -> anyhow::Result<crate::authzen::Authzen> {
    use crate::authzen::{mapping::Mapping, Authzen};
    if let Some(url) = &args.public_base_url {
        crate::authzen::check_public_base_url(url).map_err(|e| anyhow::anyhow!(e))?;
    }
    let mapping = match &args.authzen_mapping {
        None => Mapping::embedded()?,
        Some(path) => {
            let mapping = Mapping::read(path)?;
            let problems = mapping.problems(&snapshot.schema);
            if !problems.is_empty() {
                anyhow::bail!("{}: {}", path.display(), problems.join("; "));
            }
            mapping
        }
    };
    Ok(Authzen::new(mapping, args.public_base_url.clone()))
}

/// The TLS acceptor the flags ask for, if any.
pub fn open_tls(args: &TlsArgs) -> anyhow::Result<Option<crate::http::tls::Tls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::http::tls::Tls::load(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?)),
        (None, None) if args.tls_client_ca.is_none() => Ok(None),
        _ => anyhow::bail!(
            "`--tls-cert` and `--tls-key` go together (and `--tls-client-ca` needs both)"
        ),
    }
}
