//! The serving [`Model`] and its hot reload: schema, policies, template links, routes,
//! the AuthZEN mapping and the entity file, all of [`Sources`](super::Sources).
//!
//! One background task, started by `serve` and owned by the [`ReloadTask`] it returns,
//! waits for a trigger (a change of a model file, SIGHUP), waits for the files to
//! settle, and reloads: the sources are read off the async workers, compiled unless
//! they are the serving snapshot's, checked by a [`Gate`] (data held outside the
//! model, such as the Redis store, must fit the new schema), and a good snapshot is
//! swapped in with one atomic store. Requests that loaded the old snapshot finish on
//! it; no request ever sees a half-built or empty set. A bad edit changes nothing that
//! serves: its problems are logged, counted and kept for `/v1/policies` until a later
//! reload succeeds.
//!
//! A policy change applies whole or not at all. A file is read twice, a settle
//! interval apart, and applies only if both reads agree and no change arrived
//! between them, so a file being written in steps is not served half-written. A file
//! caught truncated parses as a valid empty file, so a reload that takes every policy
//! out of a policy file that still exists is rejected unless the file says
//! [`EMPTY_MARKER`](super::source::EMPTY_MARKER).
//!
//! Which files are the model's, and how swapped symlinks (a ConfigMap's `..data`, a
//! `current -> v2` link) are followed, is [`super::watch`]'s part.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::snapshot::{PolicyKind, Snapshot};
use super::source::{confirms_empty, EntityFile, Problem, Problems, Sources, EMPTY_MARKER};
use super::watch::Watches;
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
    compiles: IntCounter,
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
                "Time to compile and swap the model once its files are read.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let compiles = IntCounter::new(
            "portcullis_reload_compiles_total",
            "Reloads that compiled the model; files that read as the serving snapshot's are not compiled.",
        )?;
        metrics.registry.register(Box::new(total.clone()))?;
        metrics.registry.register(Box::new(compiles.clone()))?;
        metrics.registry.register(Box::new(failing.clone()))?;
        metrics.registry.register(Box::new(last_success.clone()))?;
        metrics.registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            total,
            failing,
            last_success,
            duration,
            compiles,
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

    /// Reads the model again and, if it loads, differs from the serving one and
    /// passes the gate, swaps it in. Never leaves the service without a snapshot: on
    /// any problem the serving snapshot stays. Reads once: the reload task reads
    /// twice and hands a settled read to [`Model::reload_read`].
    pub async fn reload(&self, trigger: Trigger, gate: &dyn Gate) -> ReloadOutcome {
        let read = self.read().await;
        self.reload_read(trigger, read, gate).await
    }

    /// Reads every source file of the model. Reading is blocking work; it runs beside
    /// the request handlers, not on their workers.
    pub async fn read(&self) -> Result<Sources, Problems> {
        let args = self.args.clone();
        let entity_file = self.entity_file.clone();
        tokio::task::spawn_blocking(move || Sources::read(&args, &entity_file))
            .await
            .unwrap_or_else(|e| Err(unfinished(&e)))
    }

    /// Reloads from sources already read: compiles them unless they are the serving
    /// snapshot's (same content hash), and swaps in what loads, keeps every policy
    /// file's policies and passes the gate.
    pub async fn reload_read(
        &self,
        trigger: Trigger,
        read: Result<Sources, Problems>,
        gate: &dyn Gate,
    ) -> ReloadOutcome {
        let _one_at_a_time = self.serial.lock().await;
        let started = Instant::now();
        let outcome = match read {
            Err(e) => ReloadOutcome::Rejected(e),
            // The files say what serves (a touch, a rewrite with the same text, a
            // write beside them): nothing to compile.
            Ok(sources) if sources.content_hash() == self.load().hash => ReloadOutcome::Unchanged,
            Ok(sources) => {
                if let Some(m) = &self.metrics {
                    m.compiles.inc();
                }
                // Validating a policy set is blocking work too.
                let compiled = tokio::task::spawn_blocking(move || {
                    let built = super::compile(&sources);
                    (sources, built)
                })
                .await;
                match compiled {
                    Err(e) => ReloadOutcome::Rejected(unfinished(&e)),
                    Ok((_, Err(e))) => ReloadOutcome::Rejected(e),
                    Ok((sources, Ok(snapshot))) => self.apply(&sources, snapshot, gate).await,
                }
            }
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
    /// policy or every policy of a file, or the gate refuses it.
    async fn apply(&self, sources: &Sources, snapshot: Snapshot, gate: &dyn Gate) -> ReloadOutcome {
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
        let emptied = emptied_files(sources, &current, &snapshot);
        if !emptied.is_empty() {
            return ReloadOutcome::Rejected(Problems(emptied));
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

/// A problem for a reload whose blocking work did not finish (it panicked).
fn unfinished(e: &tokio::task::JoinError) -> Problems {
    Problems::single(Problem::file(
        "<reload>",
        format!("the reload did not finish: {e}"),
    ))
}

/// The policy files that still exist but hold no policies any more, while the serving
/// snapshot has some from them, unless the file confirms it with [`EMPTY_MARKER`]. A
/// file truncated by a writer that has not written yet reads exactly like this, and
/// serving it would drop its guards.
fn emptied_files(sources: &Sources, serving: &Snapshot, next: &Snapshot) -> Vec<Problem> {
    let from = |snapshot: &Snapshot, file: &str| {
        snapshot
            .info
            .iter()
            .filter(|p| p.file == file && p.kind != PolicyKind::Link)
            .count()
    };
    sources
        .policies
        .iter()
        .filter(|f| !confirms_empty(&f.text))
        .filter_map(|f| {
            let before = from(serving, &f.name);
            (before > 0 && from(next, &f.name) == 0).then(|| {
                Problem::file(
                    f.name.clone(),
                    format!(
                        "the file holds no policies now, and the serving model has {before} \
                         from it; a file caught mid-write loads once it is complete, and a \
                         file emptied on purpose says so with the line `{EMPTY_MARKER}`"
                    ),
                )
            })
        })
        .collect()
}

/// How the reload task runs.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Watch the model's directories; `None` watches when any source is a file.
    pub watch: Option<bool>,
    /// Quiet time after the last file change before reloading.
    pub debounce: Duration,
    /// Time between the two reads of a reload; the files apply only if both reads
    /// agree and no change arrived between them. Zero reads once.
    pub settle: Duration,
    /// Reload on SIGHUP. Installing the handler replaces SIGHUP's default action
    /// (terminate) for the whole process, so only `serve` turns it on.
    pub sighup: bool,
}

impl From<&ReloadArgs> for ReloadOptions {
    fn from(a: &ReloadArgs) -> Self {
        Self {
            watch: a.watch(),
            debounce: a.debounce(),
            settle: a.settle(),
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
    let interest = super::watch::Interest::of(&model.args, &model.entity_file);
    let watch = options.watch.unwrap_or(!interest.dirs().is_empty());
    let mut watches = Watches::start(&model.args, &model.entity_file, watch, changed);
    model.watching.store(watches.refresh(), Ordering::Relaxed);
    tracing::info!(
        watching = ?watches.dirs(),
        sighup = hangup.is_some(),
        "model reload ready"
    );

    'triggers: loop {
        let trigger = tokio::select! {
            _ = &mut stopped => break,
            Some(()) = changes.recv() => Trigger::FileChange,
            Some(()) = next_hangup(&mut hangup) => Trigger::Signal,
        };
        let mut quiet_first = trigger == Trigger::FileChange;
        loop {
            if quiet_first && !until_quiet(&mut changes, options.debounce, &mut stopped).await {
                break 'triggers;
            }
            // A swapped link or a directory created again moves the watches before
            // the files are read, so that a write into the new place is seen.
            model.watching.store(watches.refresh(), Ordering::Relaxed);
            match read_settled(&model, &mut changes, options.settle, &mut stopped).await {
                Settled::Stopped => break 'triggers,
                Settled::Moving => {
                    tracing::debug!(
                        trigger = trigger.name(),
                        "model files still changing; reading them again once they are quiet"
                    );
                    quiet_first = true;
                }
                Settled::Read(read) => {
                    model.reload_read(trigger, *read, gate.as_ref()).await;
                    break;
                }
            }
        }
        model.watching.store(watches.refresh(), Ordering::Relaxed);
    }
    model.watching.store(false, Ordering::Relaxed);
    tracing::info!("model reload stopped");
}

/// What reading the files twice found.
enum Settled {
    /// Both reads agree and no change arrived between them: this is what to load.
    Read(Box<Result<Sources, Problems>>),
    /// The files changed between the reads: a writer is still at work.
    Moving,
    /// The task was told to stop.
    Stopped,
}

/// Reads the model's files, waits `interval`, and reads them again. The files are
/// settled when both reads agree (the same texts, or the same problems) and no change
/// arrived in between; a file written in two steps a moment apart is then never
/// served half-written, as long as the steps are closer than the debounce and this
/// interval together.
async fn read_settled(
    model: &Model,
    changes: &mut mpsc::Receiver<()>,
    interval: Duration,
    stopped: &mut oneshot::Receiver<()>,
) -> Settled {
    // A change already pending is in what the first read reads.
    while changes.try_recv().is_ok() {}
    let first = model.read().await;
    if interval.is_zero() {
        return Settled::Read(Box::new(first));
    }
    tokio::select! {
        _ = &mut *stopped => return Settled::Stopped,
        Some(()) = changes.recv() => return Settled::Moving,
        () = tokio::time::sleep(interval) => {}
    }
    let second = model.read().await;
    if fingerprint(&first) == fingerprint(&second) {
        Settled::Read(Box::new(second))
    } else {
        Settled::Moving
    }
}

/// What a read says, to compare two reads: the content hash of the files, or the
/// problems that stopped the read.
fn fingerprint(read: &Result<Sources, Problems>) -> Result<String, String> {
    match read {
        Ok(sources) => Ok(sources.content_hash()),
        Err(problems) => Err(problems.to_string()),
    }
}

/// Waits until no change has arrived for `quiet`, so that a burst of writes reloads
/// once, after its last write. A stream of changes that never pauses is read after
/// `20 * quiet`, but applies only once [`read_settled`] finds it still. Returns false
/// when the task is told to stop.
async fn until_quiet(
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
}
