//! Which paths the model is read from, and the file watcher that reports changes of
//! them and of nothing else.
//!
//! The flags name paths, and a path may pass through symlinks that are swapped while
//! the service runs: a ConfigMap's `..data`, a `current -> v2` release link. The
//! platform's watcher (inotify) watches the directory a path leads to *when the watch
//! is added*; a swapped link or a directory removed and created again leaves it
//! watching a directory nobody reads any more. So [`Interest`] resolves every path
//! again, link by link, and [`Watches::refresh`] moves the watches to where the paths
//! now lead. It runs before every reload, on SIGHUP and after a watcher error, so the
//! swap itself (an event in the directory that holds the link) is what moves them.
//!
//! Each directory is watched once, by its resolved path, so events name files by that
//! path; [`Interest`] knows each model file, each link on the way to it and each
//! directory it lies in by the name an event would give it. Anything else written
//! beside the model (a log file, an editor's swap file) is no change of the model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::source::EntityFile;
use crate::config::ModelArgs;

/// How many symlinks a path may pass through before it is taken as it is, so that a
/// link loop ends.
const MAX_LINKS: usize = 16;

/// The paths whose changes are changes of the model, resolved at one moment.
#[derive(Debug, Default)]
pub struct Interest {
    /// Every model file, every symlink on the way to one, and the resolved file, each
    /// by the name an event gives it (the resolved directory joined with the name).
    names: BTreeSet<PathBuf>,
    /// The resolved policy directory: its `*.cedar` files are policies, including
    /// files that do not exist yet.
    policy_dirs: BTreeSet<PathBuf>,
    /// The resolved directories to watch.
    dirs: BTreeSet<PathBuf>,
}

impl Interest {
    /// Resolves the paths the flags name, as the file system has them now. Read from
    /// the flags rather than a snapshot, so that a file that failed to load is
    /// watched too.
    pub fn of(args: &ModelArgs, entity_file: &EntityFile) -> Self {
        let ModelArgs {
            schema,
            policies,
            template_links,
            routes,
            authzen_mapping,
        } = args;
        let mut targets: Vec<&PathBuf> = [schema, template_links, routes, authzen_mapping]
            .into_iter()
            .flatten()
            .collect();
        if let EntityFile::Path(p) = entity_file {
            targets.push(p);
        }
        if let Some(p) = policies {
            targets.push(p);
        }
        let mut chain = BTreeSet::new();
        for target in targets {
            through(&absolute(target), &mut chain, 0);
        }
        let mut interest = Self::default();
        for path in &chain {
            interest.names.insert(as_named_by_events(path));
            if let Some(dir) = path.parent().and_then(|d| std::fs::canonicalize(d).ok()) {
                interest.dirs.insert(dir);
            }
        }
        if let Some(dir) = policies
            .as_ref()
            .and_then(|p| std::fs::canonicalize(absolute(p)).ok())
            .filter(|p| p.is_dir())
        {
            interest.policy_dirs.insert(dir.clone());
            interest.dirs.insert(dir);
        }
        interest
    }

    /// The directories to watch: where the model's files, and the links leading to
    /// them, live now.
    pub fn dirs(&self) -> &BTreeSet<PathBuf> {
        &self.dirs
    }

    /// Whether a change at `path` (as an event names it) can change what the model
    /// reads: a model file or a link on the way to one, a `.cedar` file of the policy
    /// directory, or a directory that holds one of them (renamed, removed, created).
    pub fn concerns(&self, path: &Path) -> bool {
        let policy = path.extension().is_some_and(|x| x == "cedar")
            && path.parent().is_some_and(|d| self.policy_dirs.contains(d));
        policy || self.names.iter().any(|n| n.starts_with(path))
    }
}

/// `path` made absolute against the working directory, without resolving links.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Adds `path` to `out`, and, if a component of it is a symlink, the link and the path
/// through the link's target, recursively: every name through which the file is
/// reached, so that swapping any link on the way is a change of the model.
fn through(path: &Path, out: &mut BTreeSet<PathBuf>, links: usize) {
    if !out.insert(path.to_path_buf()) || links >= MAX_LINKS {
        return;
    }
    let mut prefix = PathBuf::new();
    let mut rest = path.components();
    while let Some(component) = rest.next() {
        prefix.push(component);
        let is_link = std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.is_symlink());
        if !is_link {
            continue;
        }
        let Ok(target) = std::fs::read_link(&prefix) else {
            return;
        };
        out.insert(prefix.clone());
        let base = prefix.parent().unwrap_or_else(|| Path::new("/"));
        through(&base.join(target).join(rest.as_path()), out, links + 1);
        return;
    }
}

/// The name an event gives `path`: its directory resolved, joined with its own name
/// (which is not resolved: the event is about the entry, link or not).
fn as_named_by_events(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether an event kind can mean new content. Opening and reading are not changes:
/// the reload itself opens every file, and counting that would reload forever.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What identifies a directory beyond its path: a directory removed and created again
/// under the same path is another directory, and its old watch is gone with it.
#[cfg(unix)]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|_| (0, 0))
}

/// The file watcher and the directories it watches, owned by the reload task.
pub struct Watches {
    args: ModelArgs,
    entity_file: EntityFile,
    /// Written by [`Watches::refresh`] on the reload task, read by the watcher's
    /// handler on the watcher's own thread for every event: an `ArcSwap` lets the
    /// handler read it without a lock.
    interest: Arc<ArcSwap<Interest>>,
    watcher: Option<RecommendedWatcher>,
    /// Each watched directory with the identity it had when the watch was added.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
}

impl Watches {
    /// A watcher reporting changes of the model into `changed`, or none when `watch`
    /// is off. Watches nothing until [`Watches::refresh`].
    pub fn start(
        args: &ModelArgs,
        entity_file: &EntityFile,
        watch: bool,
        changed: mpsc::Sender<()>,
    ) -> Self {
        let interest = Arc::new(ArcSwap::from_pointee(Interest::of(args, entity_file)));
        let watcher = if watch {
            start_watcher(interest.clone(), changed)
        } else {
            None
        };
        Self {
            args: args.clone(),
            entity_file: entity_file.clone(),
            interest,
            watcher,
            watched: BTreeMap::new(),
        }
    }

    /// Resolves the model's paths again and moves the watches to the directories they
    /// lead to now: a swapped link's new target is watched and its old one dropped, a
    /// directory created again is watched again. Returns whether every directory is
    /// watched (false without a watcher). A directory that does not exist is not
    /// wanted until it does: the watch on the directory that holds it sees it come.
    pub fn refresh(&mut self) -> bool {
        let interest = Interest::of(&self.args, &self.entity_file);
        let Some(watcher) = self.watcher.as_mut() else {
            return false;
        };
        let wanted: BTreeMap<PathBuf, Option<(u64, u64)>> = interest
            .dirs()
            .iter()
            .map(|d| (d.clone(), identity(d)))
            .collect();
        // Publish the new interest before watching, so that the first events of a new
        // directory are already judged by it.
        self.interest.store(Arc::new(interest));
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(dir, id)| wanted.get(*dir) != Some(*id))
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in stale {
            // The watch may already be gone with its directory; that is what we want.
            let _ = watcher.unwatch(&dir);
            self.watched.remove(&dir);
            tracing::info!(dir = %dir.display(), "model directory no longer watched");
        }
        let mut all = true;
        for (dir, id) in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "watching model directory");
                    self.watched.insert(dir, id);
                }
                Err(e) => {
                    all = false;
                    tracing::warn!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot watch directory; its changes reload only on SIGHUP"
                    );
                }
            }
        }
        all && !self.watched.is_empty()
    }

    /// The directories watched now.
    pub fn dirs(&self) -> Vec<&PathBuf> {
        self.watched.keys().collect()
    }
}

/// A file watcher that reports changes of the model into `changed`.
fn start_watcher(
    interest: Arc<ArcSwap<Interest>>,
    changed: mpsc::Sender<()>,
) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_change(&event.kind) => {
            let interest = interest.load();
            // An event without paths (the watcher lost track, say) may hide a change.
            if event.paths.is_empty() || event.paths.iter().any(|p| interest.concerns(p)) {
                // Full means a reload is already pending; closed means the task stopped.
                let _ = changed.try_send(());
            }
        }
        Ok(_) => {}
        Err(e) => {
            // A watcher error (an overflowed event queue, say) may hide a change, or a
            // lost watch: reload, which refreshes the watches first. A reload of
            // unchanged files compiles nothing.
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
    fn the_shipped_model_has_nothing_to_watch() {
        assert!(Interest::of(&ModelArgs::default(), &EntityFile::Shipped)
            .dirs()
            .is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn the_model_concerns_its_files_and_the_links_to_them_but_not_their_neighbours() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let v1 = root.join("v1");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("guards.cedar"), "").unwrap();
        std::os::unix::fs::symlink("v1", root.join("current")).unwrap();
        std::fs::write(root.join("app.cedarschema"), "").unwrap();
        let args = ModelArgs {
            schema: Some(root.join("app.cedarschema")),
            policies: Some(root.join("current")),
            ..ModelArgs::default()
        };
        let interest = Interest::of(&args, &EntityFile::External);
        let cases = [
            ("app.cedarschema", true),
            ("current", true),
            ("v1", true),
            ("v1/guards.cedar", true),
            ("v1/new.cedar", true),
            ("v1/app.log", false),
            ("app.log", false),
            ("v2", false),
            ("current.tmp", false),
        ];
        for (rel, expected) in cases {
            assert_eq!(interest.concerns(&root.join(rel)), expected, "{rel}");
        }
        assert_eq!(
            interest.dirs().iter().collect::<Vec<_>>(),
            [&root, &v1],
            "the link's directory and its target's"
        );
    }
}
