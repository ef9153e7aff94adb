//! The serving [`Model`] and its hot reload: schema, policies, template links, routes,
//! the AuthZEN mapping and the entity file, all of [`Sources`](super::Sources).
//!
//! One background task, started by `serve` and owned by the [`ReloadTask`] it returns,
//! waits for a trigger (a file change in a watched directory, SIGHUP) and then calls
//! [`Model::reload`]: the sources are read and compiled off the async workers, checked
//! by a [`Gate`] (data held outside the model, such as the Redis store, must fit the
//! new schema), and a good snapshot is swapped in with one atomic store. Requests that
//! loaded the old snapshot finish on it; no request ever sees a half-built or empty
//! set. A bad edit changes nothing that serves: its problems are logged, counted and
//! kept for `/v1/policies` until a later reload succeeds.
//!
//! Watching directories rather than files is what makes Kubernetes ConfigMaps work: a
//! ConfigMap volume swaps a `..data` symlink to a new timestamped directory, which
//! shows up as events in the mounted directory while the files' own inodes never
//! change. Every reload reads every file again through its path, symlinks included.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::snapshot::Snapshot;
use super::source::{EntityFile, Problem, Problems};
use crate::config::{ModelArgs, ReloadArgs};
use crate::metrics::Metrics;

/// What started a reload. A small fixed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A file in a watched directory changed.
    FileChange,
    /// The process received SIGHUP.
    Signal,
    /// A direct call of [`Model::reload`] (tests, embedding programs).
    Manual,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::FileChange => "file_change",
            Trigger::Signal => "signal",
            Trigger::Manual => "manual",
        }
    }
}

/// The result of one reload.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new snapshot serves now.
    Applied { hash: String, policies: usize },
    /// The sources compile to the snapshot already serving; nothing was swapped.
    Unchanged,
    /// The sources do not load; the last good snapshot keeps serving.
    Rejected(Problems),
}

impl ReloadOutcome {
    /// The metric label of the outcome.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "applied",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Rejected(_) => "rejected",
        }
    }
}

/// A rejected reload, kept until a later reload succeeds.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub trigger: Trigger,
    pub problems: Vec<Problem>,
}

/// The last reload attempt.
#[derive(Debug, Clone)]
pub struct ReloadAttempt {
    pub at: SystemTime,
    pub trigger: Trigger,
    pub result: &'static str,
}

/// What `/v1/policies` shows of the reload history.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub watching: bool,
    pub last_attempt: Option<ReloadAttempt>,
    pub last_error: Option<ReloadFailure>,
}

/// The reload metrics, registered into the service's registry.
struct ReloadMetrics {
    total: IntCounterVec,
    failing: IntGauge,
    last_success: Gauge,
    duration: Histogram,
}

impl ReloadMetrics {
    fn new(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let total = IntCounterVec::new(
            Opts::new(
                "portcullis_reload_total",
                "Policy reloads by result (applied, unchanged, rejected) and trigger.",
            ),
            &["result", "trigger"],
        )?;
        let failing = IntGauge::new(
            "portcullis_reload_failing",
            "1 while the model's files do not load and an older snapshot keeps serving.",
        )?;
        let last_success = Gauge::new(
            "portcullis_reload_last_success_timestamp_seconds",
            "Unix time of the last reload that applied a new snapshot.",
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "portcullis_reload_duration_seconds",
                "Time to read, compile and swap the model.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        metrics.registry.register(Box::new(total.clone()))?;
        metrics.registry.register(Box::new(failing.clone()))?;
        metrics.registry.register(Box::new(last_success.clone()))?;
        metrics.registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            total,
            failing,
            last_success,
            duration,
        })
    }
}

/// Checks a compiled snapshot against what lives outside the model before it may
/// serve: entity data in an external store must fit the new schema. Implemented by
/// the entity layer; the model knows only this question.
#[async_trait]
pub trait Gate: Send + Sync {
    /// `Err` with the problems when `next` must not serve.
    async fn admit(&self, next: &Snapshot) -> Result<(), Vec<Problem>>;
}

/// A gate that admits every snapshot: nothing lives outside the model.
pub struct Open;

#[async_trait]
impl Gate for Open {
    async fn admit(&self, _next: &Snapshot) -> Result<(), Vec<Problem>> {
        Ok(())
    }
}

/// The serving model: the current snapshot, where its sources come from, and the
/// reload bookkeeping.
pub struct Model {
    /// Read on every request, written only by a reload: an `ArcSwap` lets readers load
    /// it without a lock, and a request keeps the snapshot it loaded even if a reload
    /// swaps in another meanwhile.
    current: ArcSwap<Snapshot>,
    /// Where the model comes from: a reload reads these paths again.
    args: ModelArgs,
    entity_file: EntityFile,
    /// Read by `/v1/policies`, written once per reload: a plain mutex is enough, and
    /// the decision path never takes it.
    status: Mutex<ReloadStatus>,
    /// `None` only if registration failed, which a fresh registry never does; reloads
    /// work the same without their metrics.
    metrics: Option<ReloadMetrics>,
    policies_loaded: prometheus::IntGauge,
    /// One reload at a time, so that two triggers cannot swap in their snapshots out
    /// of order.
    serial: tokio::sync::Mutex<()>,
    watching: AtomicBool,
}

impl Model {
    /// A model serving `snapshot`, read from the sources `args` and `entity_file`
    /// name whenever it reloads.
    pub fn new(
        snapshot: Snapshot,
        args: ModelArgs,
        entity_file: EntityFile,
        metrics: &Metrics,
    ) -> Self {
        let reload_metrics = match ReloadMetrics::new(metrics) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "reload metrics unavailable");
                None
            }
        };
        metrics
            .policies_loaded
            .set(i64::try_from(snapshot.active_policy_count()).unwrap_or(i64::MAX));
        Self {
            current: ArcSwap::from_pointee(snapshot),
            args,
            entity_file,
            status: Mutex::new(ReloadStatus::default()),
            metrics: reload_metrics,
            policies_loaded: metrics.policies_loaded.clone(),
            serial: tokio::sync::Mutex::new(()),
            watching: AtomicBool::new(false),
        }
    }

    /// The serving snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The flags the model is read from.
    pub fn args(&self) -> &ModelArgs {
        &self.args
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.watching = self.watching.load(Ordering::Relaxed);
        status
    }

    fn record(&self, trigger: Trigger, outcome: &ReloadOutcome, took: Duration) {
        let now = SystemTime::now();
        if let Some(m) = &self.metrics {
            m.total
                .with_label_values(&[outcome.name(), trigger.name()])
                .inc();
            m.duration.observe(took.as_secs_f64());
            m.failing
                .set(i64::from(matches!(outcome, ReloadOutcome::Rejected(_))));
            if matches!(outcome, ReloadOutcome::Applied { .. }) {
                let unix = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                m.last_success.set(unix);
            }
        }
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.last_attempt = Some(ReloadAttempt {
            at: now,
            trigger,
            result: outcome.name(),
        });
        status.last_error = match outcome {
            ReloadOutcome::Rejected(e) => Some(ReloadFailure {
                at: now,
                trigger,
                problems: e.0.clone(),
            }),
            // The files on disk now load (to a new snapshot or to the serving one):
            // whatever failed before is fixed.
            ReloadOutcome::Applied { .. } | ReloadOutcome::Unchanged => None,
        };
    }

    /// Reads and compiles the model again and, if it loads, differs from the serving
    /// one and passes the gate, swaps it in. Never leaves the service without a
    /// snapshot: on any problem the serving snapshot stays.
    pub async fn reload(&self, trigger: Trigger, gate: &dyn Gate) -> ReloadOutcome {
        let _one_at_a_time = self.serial.lock().await;
        let started = Instant::now();
        let args = self.args.clone();
        let entity_file = self.entity_file.clone();
        // Reading files and validating a policy set is blocking work; it runs beside
        // the request handlers, not on their workers.
        let built = tokio::task::spawn_blocking(move || super::load(&args, &entity_file))
            .await
            .unwrap_or_else(|e| {
                Err(Problems::single(Problem::file(
                    "<reload>",
                    format!("the reload did not finish: {e}"),
                )))
            });
        let outcome = match built {
            Err(e) => ReloadOutcome::Rejected(e),
            Ok(snapshot) => self.apply(snapshot, gate).await,
        };
        let took = started.elapsed();
        self.record(trigger, &outcome, took);
        match &outcome {
            ReloadOutcome::Applied { hash, policies } => tracing::info!(
                trigger = trigger.name(),
                hash = %hash,
                policies = *policies,
                took_ms = took.as_secs_f64() * 1000.0,
                "model reloaded"
            ),
            ReloadOutcome::Unchanged => tracing::debug!(
                trigger = trigger.name(),
                "model unchanged; nothing to reload"
            ),
            ReloadOutcome::Rejected(e) => tracing::warn!(
                trigger = trigger.name(),
                problems = e.0.len(),
                errors = %e,
                "model reload rejected; the last good model keeps serving"
            ),
        }
        outcome
    }

    /// Swaps in a compiled snapshot unless it is the serving one, has lost every
    /// policy, or the gate refuses it.
    async fn apply(&self, snapshot: Snapshot, gate: &dyn Gate) -> ReloadOutcome {
        let current = self.load();
        if snapshot.hash == current.hash {
            return ReloadOutcome::Unchanged;
        }
        if snapshot.active_policy_count() == 0 && current.active_policy_count() > 0 {
            // An empty policy set denies everything. From files that is almost always
            // a mistake (an empty mount, a truncated file), never an intended edit.
            return ReloadOutcome::Rejected(Problems::single(Problem::file(
                self.args
                    .policies
                    .as_ref()
                    .map_or_else(|| "policies".to_string(), |p| p.display().to_string()),
                "the new policy set has no policies; it would deny every request",
            )));
        }
        if let Err(problems) = gate.admit(&snapshot).await {
            return ReloadOutcome::Rejected(Problems(problems));
        }
        let policies = snapshot.active_policy_count();
        let hash = snapshot.hash.clone();
        self.policies_loaded
            .set(i64::try_from(policies).unwrap_or(i64::MAX));
        self.current.store(Arc::new(snapshot));
        ReloadOutcome::Applied { hash, policies }
    }
}

/// How the reload task runs.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Watch the model's directories; `None` watches when any source is a file.
    pub watch: Option<bool>,
    /// Quiet time after the last file change before reloading.
    pub debounce: Duration,
    /// Reload on SIGHUP. Installing the handler replaces SIGHUP's default action
    /// (terminate) for the whole process, so only `serve` turns it on.
    pub sighup: bool,
}

impl From<&ReloadArgs> for ReloadOptions {
    fn from(a: &ReloadArgs) -> Self {
        Self {
            watch: a.watch(),
            debounce: a.debounce(),
            sighup: true,
        }
    }
}

/// The running reload task. Dropping it or calling [`ReloadTask::shutdown`] stops the
/// task and its file watcher.
pub struct ReloadTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl ReloadTask {
    /// Stops the task and waits until it has stopped. A reload in progress finishes
    /// first, so a snapshot is never left half-swapped (there is no such state anyway:
    /// the swap is one store).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            if let Err(e) = handle.await {
                tracing::warn!(error = %e, "reload task ended abnormally");
            }
        }
    }
}

impl Drop for ReloadTask {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the reload task for `model`, whose snapshots must pass `gate`. Must be
/// called inside a Tokio runtime.
///
/// If the task fails (the watcher cannot start, a directory cannot be watched), it
/// logs the problem and carries on with what works: SIGHUP and the remaining watches
/// still reload, and the serving snapshot is never touched by a failure.
pub fn spawn(model: Arc<Model>, gate: Arc<dyn Gate>, options: ReloadOptions) -> ReloadTask {
    let (stop, stopped) = oneshot::channel();
    // Listen for SIGHUP before returning, so that a SIGHUP sent once `serve` logged
    // its start reloads instead of terminating the process.
    let hangup = if options.sighup { hangup() } else { None };
    let handle = tokio::spawn(run(model, gate, options, hangup, stopped));
    ReloadTask {
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// The directories holding the model's files: where a change of any of them shows.
/// Read from the flags, not from a snapshot, so that a file that failed to load is
/// watched too.
pub fn watched_dirs(args: &ModelArgs, entity_file: &EntityFile) -> BTreeSet<PathBuf> {
    let parent = |p: &std::path::Path| match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = BTreeSet::new();
    let ModelArgs {
        schema,
        policies,
        template_links,
        routes,
        authzen_mapping,
    } = args;
    for file in [schema, template_links, routes, authzen_mapping]
        .into_iter()
        .flatten()
    {
        dirs.insert(parent(file));
    }
    if let Some(p) = policies {
        dirs.insert(if p.is_dir() { p.clone() } else { parent(p) });
    }
    if let EntityFile::Path(p) = entity_file {
        dirs.insert(parent(p));
    }
    dirs
}

async fn run(
    model: Arc<Model>,
    gate: Arc<dyn Gate>,
    options: ReloadOptions,
    mut hangup: Option<Hangup>,
    mut stopped: oneshot::Receiver<()>,
) {
    // Capacity one: a pending trigger already means "reload once more", so further
    // events while one is pending carry no news and are dropped.
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let dirs = watched_dirs(&model.args, &model.entity_file);
    let watch = options.watch.unwrap_or(!dirs.is_empty());
    let mut watcher = if watch {
        start_watcher(changed.clone())
    } else {
        None
    };
    let mut watched = BTreeSet::new();
    if let Some(w) = watcher.as_mut() {
        add_watches(w, &dirs, &mut watched);
    }
    model.watching.store(!watched.is_empty(), Ordering::Relaxed);
    tracing::info!(
        watching = ?watched,
        sighup = hangup.is_some(),
        "model reload ready"
    );

    loop {
        let trigger = tokio::select! {
            _ = &mut stopped => break,
            Some(()) = changes.recv() => Trigger::FileChange,
            Some(()) = next_hangup(&mut hangup) => Trigger::Signal,
        };
        if trigger == Trigger::FileChange
            && !settle(&mut changes, options.debounce, &mut stopped).await
        {
            break;
        }
        model.reload(trigger, gate.as_ref()).await;
    }
    model.watching.store(false, Ordering::Relaxed);
    tracing::info!("model reload stopped");
}

/// Waits until no change has arrived for `quiet`, so that a burst of writes reloads
/// once, after its last write. A stream of changes that never pauses still reloads
/// after `20 * quiet`. Returns false when the task is told to stop.
async fn settle(
    changes: &mut mpsc::Receiver<()>,
    quiet: Duration,
    stopped: &mut oneshot::Receiver<()>,
) -> bool {
    let give_up = Instant::now() + quiet.saturating_mul(20);
    loop {
        tokio::select! {
            _ = &mut *stopped => return false,
            more = tokio::time::timeout(quiet, changes.recv()) => match more {
                Ok(Some(())) if Instant::now() < give_up => continue,
                _ => return true,
            },
        }
    }
}

/// A file watcher that reports changes into `changed`.
fn start_watcher(changed: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_change(&event.kind) => {
            // Full means a reload is already pending; closed means the task stopped.
            let _ = changed.try_send(());
        }
        Ok(_) => {}
        Err(e) => {
            // A watcher error (an overflowed event queue, say) may hide a change:
            // reload to be sure. A reload of unchanged files swaps nothing.
            tracing::warn!(error = %e, "file watcher error");
            let _ = changed.try_send(());
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch policy files; reload on SIGHUP only");
            None
        }
    }
}

/// Whether an event can mean new content. Opening and reading are not changes: the
/// reload itself opens every file, and counting that would reload forever.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn add_watches(
    watcher: &mut RecommendedWatcher,
    dirs: &BTreeSet<PathBuf>,
    watched: &mut BTreeSet<PathBuf>,
) {
    let missing: Vec<PathBuf> = dirs.difference(watched).cloned().collect();
    for dir in missing {
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir);
            }
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "cannot watch directory; its changes reload only on SIGHUP"
            ),
        }
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Option<Hangup> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup() -> Option<Hangup> {
    None
}

/// The next SIGHUP; never completes without a handler.
async fn next_hangup(hangup: &mut Option<Hangup>) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(s) => s.recv().await,
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    #[test]
    fn opening_a_file_is_not_a_change_but_writing_and_renaming_are() {
        let cases = [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Modify(ModifyKind::Any), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Create(CreateKind::File), true),
        ];
        for (kind, expected) in cases {
            assert_eq!(is_change(&kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn watch_flags_choose_or_leave_it_to_the_sources() {
        use crate::config::{Cli, Command};
        use clap::Parser;
        let cases: [(&[&str], Option<bool>); 5] = [
            (&[], None),
            (&["--watch"], Some(true)),
            (&["--watch=false"], Some(false)),
            (&["--no-watch"], Some(false)),
            (&["--watch", "--no-watch"], Some(false)),
        ];
        for (flags, expected) in cases {
            let argv = ["portcullis", "serve"].iter().chain(flags.iter());
            let parsed = Cli::try_parse_from(argv).map_err(|e| e.to_string());
            let watch = match parsed {
                Ok(Cli {
                    command: Command::Serve(args),
                }) => args.reload.watch(),
                other => panic!("{flags:?}: {other:?}"),
            };
            assert_eq!(watch, expected, "{flags:?}");
        }
    }

    #[test]
    fn the_shipped_model_has_nothing_to_watch() {
        assert!(watched_dirs(&ModelArgs::default(), &EntityFile::Shipped).is_empty());
    }
}
