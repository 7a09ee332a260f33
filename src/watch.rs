//! Watch stage: owns the inotify watches (notify crate) and turns filesystem events into
//! [`Touch`]es, "look at volume N". It never reads file content; the snapshot stage decides
//! whether anything changed, by hash, never by event kind.
//!
//! What is watched, for each path:
//! - a kubelet volume (has `..data`): the directory itself, not recursively; `..data` appearing
//!   is the commit point and is passed on at once;
//! - a plain directory: recursively; events settle for `--settle` before the read;
//! - a single file: its parent directory, filtered to the file's name (survives rename-over);
//! - a path that does not exist (yet, or any more) is waited for through its nearest existing
//!   ancestor. An existing directory's parent is not watched: the directory's own delete/move
//!   events say when it goes, and sibling activity in the parent would wake nudge for nothing.
//!
//! Queue overflow, watch plan changes and the periodic resync ask for a full rehash.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, trace, warn};

use crate::snapshot::DATA_LINK;
use crate::status::Status;

/// Index of a watched path in the order the user gave them.
pub type VolumeId = usize;

/// Why a volume should be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchKind {
    /// The kubelet swapped `..data`: read now.
    Commit,
    /// Plain-file events went quiet for the settle delay.
    Settled,
    /// Start-up, overflow, resync or a changed watch plan: rehash fully, trust no shortcut.
    Rescan,
}

/// "Look at volume `volume`": the only thing the watch stage emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// Which watched path.
    pub volume: VolumeId,
    /// Why.
    pub kind: TouchKind,
}

/// Failures to set up or keep inotify watches.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// ENOSPC from inotify_add_watch.
    #[error("cannot watch {path}: the inotify watch limit is reached; raise the sysctl fs.inotify.max_user_watches")]
    TooManyWatches {
        /// The path being watched.
        path: PathBuf,
    },
    /// EMFILE from inotify_init.
    #[error("cannot start inotify: the instance limit is reached; raise the sysctl fs.inotify.max_user_instances")]
    TooManyInstances,
    /// Anything else notify reported.
    #[error("cannot watch {path}: {source}")]
    Notify {
        /// The path being watched ("" when not about one path).
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
}

impl WatchError {
    fn from_notify(path: &Path, source: notify::Error) -> Self {
        let errno = match &source.kind {
            notify::ErrorKind::Io(io) => io.raw_os_error(),
            notify::ErrorKind::MaxFilesWatch => Some(nix::libc::ENOSPC),
            _ => None,
        };
        match errno {
            Some(nix::libc::ENOSPC) => WatchError::TooManyWatches { path: path.into() },
            Some(nix::libc::EMFILE) => WatchError::TooManyInstances,
            _ => WatchError::Notify {
                path: path.into(),
                source,
            },
        }
    }
}

/// What one raw event means for one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    /// `..data` moved: commit.
    Commit,
    /// Content may have changed: settle, then read.
    Settle,
    /// The path or one of its ancestors appeared, vanished or was replaced: re-plan, then read.
    Replan,
}

/// One watched directory: its mode and identity (so a recreated directory is re-watched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WatchedDir {
    mode: RecursiveMode,
    identity: (u64, u64),
}

/// The inotify watches for all volumes, kept in line with what exists on disk.
pub struct VolumeWatcher {
    volumes: Vec<PathBuf>,
    status: Status,
    watcher: RecommendedWatcher,
    active: HashMap<PathBuf, WatchedDir>,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
}

impl VolumeWatcher {
    /// Starts inotify and watches every volume (or its nearest existing ancestor).
    pub fn new(volumes: Vec<PathBuf>, status: Status) -> Result<Self, WatchError> {
        let (tx, events) = mpsc::unbounded_channel();
        // notify calls this on its own thread; the receiver side lives in the tokio task.
        let watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| WatchError::from_notify(Path::new(""), e))?;
        let mut this = VolumeWatcher {
            volumes,
            status,
            watcher,
            active: HashMap::new(),
            events,
        };
        this.replan()?;
        this.status.set_watching(true);
        Ok(this)
    }

    /// Brings the set of inotify watches in line with the current state of the disk.
    ///
    /// A directory created between planning and `inotify_add_watch` would go unseen, so the
    /// plan is made again until it stops changing (a few rounds at most: each round adds depth).
    fn replan(&mut self) -> Result<(), WatchError> {
        let mut desired = desired_watches(&self.volumes);
        for _ in 0..8 {
            self.apply(&desired)?;
            let again = desired_watches(&self.volumes);
            if again == desired {
                break;
            }
            desired = again;
        }
        Ok(())
    }

    fn apply(&mut self, desired: &HashMap<PathBuf, WatchedDir>) -> Result<(), WatchError> {
        let stale: Vec<PathBuf> = self
            .active
            .iter()
            .filter(|(path, dir)| desired.get(*path) != Some(*dir))
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            self.active.remove(&path);
            // The watch may already be gone with its directory; nothing to undo then.
            let _ = self.watcher.unwatch(&path);
        }
        for (path, dir) in desired {
            if self.active.contains_key(path) {
                continue;
            }
            match self.watcher.watch(path, dir.mode) {
                Ok(()) => {
                    debug!(path = %path.display(), mode = ?dir.mode, "watching");
                    self.active.insert(path.clone(), *dir);
                }
                // Raced with a delete: the parent's event will trigger another re-plan.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(WatchError::from_notify(path, e)),
            }
        }
        Ok(())
    }

    /// What one raw event means for each volume it concerns.
    fn reactions(&self, event: &Event) -> Vec<(VolumeId, Reaction)> {
        let mut out = Vec::new();
        for path in &event.paths {
            for (id, root) in self.volumes.iter().enumerate() {
                if let Some(reaction) = reaction(root, path) {
                    out.push((id, reaction));
                }
            }
        }
        out
    }

    /// Runs the watch stage until shutdown: emits touches, keeps watches planned, resyncs.
    pub async fn run(
        mut self,
        settle: Duration,
        resync: Option<Duration>,
        touches: mpsc::Sender<Touch>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut settling: HashMap<VolumeId, Instant> = HashMap::new();
        let mut next_resync = resync.map(|r| Instant::now() + r);
        loop {
            let next_settle = settling.values().min().copied();
            let mut due: Vec<Touch> = Vec::new();
            tokio::select! {
                _ = shutdown.changed() => return,
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    due = self.handle(event, settle, &mut settling);
                }
                _ = sleep_until(next_settle.unwrap_or_else(Instant::now)), if next_settle.is_some() => {
                    let now = Instant::now();
                    settling.retain(|volume, deadline| {
                        let ready = *deadline <= now;
                        if ready {
                            due.push(Touch { volume: *volume, kind: TouchKind::Settled });
                        }
                        !ready
                    });
                }
                _ = sleep_until(next_resync.unwrap_or_else(Instant::now)), if next_resync.is_some() => {
                    next_resync = resync.map(|r| Instant::now() + r);
                    self.replan_logged();
                    due = self.rescan_all();
                }
            }
            for touch in due {
                if touches.send(touch).await.is_err() {
                    return;
                }
            }
        }
    }

    fn handle(
        &mut self,
        event: notify::Result<Event>,
        settle: Duration,
        settling: &mut HashMap<VolumeId, Instant>,
    ) -> Vec<Touch> {
        let event = match event {
            Ok(event) => {
                trace!(kind = ?event.kind, paths = ?event.paths, "inotify event");
                event
            }
            Err(e) => {
                self.status.watch_error();
                warn!(error = %e, "inotify reported an error; rescanning every volume");
                self.replan_logged();
                return self.rescan_all();
            }
        };
        if event.need_rescan() || (event.paths.is_empty() && !is_read_only(&event.kind)) {
            warn!("inotify queue overflowed; rescanning every volume");
            self.replan_logged();
            return self.rescan_all();
        }
        if is_read_only(&event.kind) {
            return Vec::new();
        }
        let mut due = Vec::new();
        let mut replanned = false;
        for (volume, reaction) in self.reactions(&event) {
            match reaction {
                Reaction::Commit => due.push(Touch {
                    volume,
                    kind: TouchKind::Commit,
                }),
                Reaction::Settle => {
                    settling.insert(volume, Instant::now() + settle);
                }
                Reaction::Replan => {
                    if !replanned {
                        self.replan_logged();
                        replanned = true;
                    }
                    settling.insert(volume, Instant::now() + settle);
                }
            }
        }
        due
    }

    fn replan_logged(&mut self) {
        match self.replan() {
            Ok(()) => self.status.set_watching(true),
            Err(e) => {
                self.status.watch_error();
                self.status.set_watching(false);
                error!(error = %e, "cannot keep watching; the periodic resync still catches changes");
            }
        }
    }

    fn rescan_all(&self) -> Vec<Touch> {
        self.status.rescanned();
        (0..self.volumes.len())
            .map(|volume| Touch {
                volume,
                kind: TouchKind::Rescan,
            })
            .collect()
    }
}

/// Opening or reading a file changes nothing; the app (and nudge's own hashing) do it all the time.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

fn is_not_found(e: &notify::Error) -> bool {
    matches!(&e.kind, notify::ErrorKind::PathNotFound)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
}

/// How an event on `path` concerns the volume at `root`, if at all.
fn reaction(root: &Path, path: &Path) -> Option<Reaction> {
    if root.starts_with(path) {
        return Some(Reaction::Replan);
    }
    let first = path.strip_prefix(root).ok()?.components().next()?;
    let name = first.as_os_str().to_string_lossy();
    if name == DATA_LINK {
        Some(Reaction::Commit)
    } else if name.starts_with("..") {
        // The kubelet's own scaffolding (timestamped dirs, `..data_tmp`): the commit follows.
        None
    } else {
        Some(Reaction::Settle)
    }
}

/// The directories to watch for `volumes`, given what exists on disk now.
fn desired_watches(volumes: &[PathBuf]) -> HashMap<PathBuf, WatchedDir> {
    let mut desired: HashMap<PathBuf, WatchedDir> = HashMap::new();
    let mut add = |path: &Path, mode: RecursiveMode| {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let dir = WatchedDir {
            mode,
            identity: (meta.dev(), meta.ino()),
        };
        let slot = desired.entry(path.to_path_buf()).or_insert(dir);
        if mode == RecursiveMode::Recursive {
            slot.mode = RecursiveMode::Recursive;
        }
    };
    for volume in volumes {
        match std::fs::metadata(volume) {
            Ok(meta) if meta.is_dir() => {
                let kubelet = volume.join(DATA_LINK).symlink_metadata().is_ok();
                let mode = if kubelet {
                    RecursiveMode::NonRecursive
                } else {
                    RecursiveMode::Recursive
                };
                add(volume, mode);
            }
            Ok(_) => {
                // A single file: watch its directory, so rename-over and recreation are seen.
                if let Some(parent) = volume.parent().filter(|p| p.is_dir()) {
                    add(parent, RecursiveMode::NonRecursive);
                }
            }
            _ => {
                if let Some(ancestor) = volume.ancestors().skip(1).find(|a| a.is_dir()) {
                    add(ancestor, RecursiveMode::NonRecursive);
                }
            }
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_link_is_the_commit_point_and_scaffolding_is_ignored() {
        let root = Path::new("/etc/config");
        assert_eq!(
            reaction(root, Path::new("/etc/config/..data")),
            Some(Reaction::Commit)
        );
        assert_eq!(reaction(root, Path::new("/etc/config/..data_tmp")), None);
        assert_eq!(
            reaction(root, Path::new("/etc/config/..2026_01_01_00_00_00.1")),
            None
        );
        assert_eq!(
            reaction(root, Path::new("/etc/config/app.yaml")),
            Some(Reaction::Settle)
        );
        assert_eq!(
            reaction(root, Path::new("/etc/config/sub/x")),
            Some(Reaction::Settle)
        );
    }

    #[test]
    fn the_path_or_an_ancestor_changing_means_replan() {
        let root = Path::new("/etc/config");
        assert_eq!(
            reaction(root, Path::new("/etc/config")),
            Some(Reaction::Replan)
        );
        assert_eq!(reaction(root, Path::new("/etc")), Some(Reaction::Replan));
        assert_eq!(reaction(root, Path::new("/etc/other")), None);
        assert_eq!(reaction(root, Path::new("/etc/configuration")), None);
    }

    #[test]
    fn missing_paths_are_waited_for_through_an_existing_ancestor() {
        let d = tempfile::tempdir().unwrap();
        let wanted = d.path().join("a/b/config");
        let plan = desired_watches(std::slice::from_ref(&wanted));
        assert_eq!(plan.keys().collect::<Vec<_>>(), [&d.path().to_path_buf()]);
        std::fs::create_dir_all(&wanted).unwrap();
        let plan = desired_watches(std::slice::from_ref(&wanted));
        assert_eq!(plan[&wanted].mode, RecursiveMode::Recursive);
        assert_eq!(
            plan.len(),
            1,
            "an existing directory's parent is not watched"
        );
    }
}
