//! Snapshot stage: reads a watched path and hashes it with SHA-256, one digest per file and one
//! for the whole volume, and passes a [`VolumeSnapshot`] on only when the volume hash moved.
//!
//! A kubelet volume is read through the timestamped directory that `..data` points to, resolved
//! once per read, so a snapshot never mixes two generations even if the kubelet swaps mid-read.
//! Secret contents are never kept: only key names and digests.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, trace, warn};

use crate::watch::{Touch, TouchKind, VolumeId};

/// Name of the kubelet's commit link inside a ConfigMap/Secret volume.
pub const DATA_LINK: &str = "..data";
/// Nested directories deeper than this are not read (guards against symlink loops).
const MAX_DEPTH: usize = 16;
/// Reads retried when the kubelet removes the generation being read.
const SWAP_RETRIES: usize = 5;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The first 12 hex digits, enough to tell versions apart in logs.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

/// How a watched path is laid out on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A kubelet volume; the name `..data` pointed to when read.
    Kubelet(PathBuf),
    /// A plain directory.
    Directory,
    /// A single file.
    File,
}

/// The content of one watched path at one moment: key names and their digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSnapshot {
    /// How the path was laid out.
    pub layout: Layout,
    /// Digest of each file by key (path relative to the volume, `/`-separated).
    pub files: BTreeMap<String, Digest>,
    /// Digest over all keys and file digests.
    pub hash: Digest,
}

/// Keys that differ between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// Keys present only in the newer snapshot.
    pub added: Vec<String>,
    /// Keys present only in the older snapshot.
    pub removed: Vec<String>,
    /// Keys whose content differs.
    pub modified: Vec<String>,
}

impl VolumeSnapshot {
    fn from_files(layout: Layout, files: BTreeMap<String, Digest>) -> Self {
        let mut volume = Sha256::new();
        for (key, digest) in &files {
            volume.update((key.len() as u64).to_le_bytes());
            volume.update(key.as_bytes());
            volume.update(digest.0);
        }
        VolumeSnapshot {
            layout,
            files,
            hash: Digest(volume.finalize().into()),
        }
    }

    /// Keys added, removed and modified going from `older` (none: everything is added) to `self`.
    pub fn changes_since(&self, older: Option<&VolumeSnapshot>) -> KeyChanges {
        let empty = BTreeMap::new();
        let old = older.map_or(&empty, |s| &s.files);
        let mut changes = KeyChanges::default();
        for (key, digest) in &self.files {
            match old.get(key) {
                None => changes.added.push(key.clone()),
                Some(d) if d != digest => changes.modified.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|k| !self.files.contains_key(*k))
            .cloned()
            .collect();
        changes
    }
}

/// Reads and hashes `path`. `Ok(None)` means the path does not exist (yet).
pub fn read(path: &Path) -> io::Result<Option<VolumeSnapshot>> {
    for _ in 0..SWAP_RETRIES {
        match read_once(path) {
            // A generation vanished mid-read: the kubelet committed a newer one; read again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => return other.map(Some),
        }
    }
    read_once(path).map(Some)
}

fn read_once(path: &Path) -> io::Result<VolumeSnapshot> {
    // The kubelet case first: it is the common one and needs no stat of the volume itself.
    match fs::read_link(path.join(DATA_LINK)) {
        Ok(generation) => {
            let mut files = BTreeMap::new();
            hash_dir(&path.join(&generation), "", 0, &mut files, false)?;
            return Ok(VolumeSnapshot::from_files(
                Layout::Kubelet(generation),
                files,
            ));
        }
        // ENOTDIR: `path` is a file.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) => {}
        Err(e) => return Err(e),
    }
    if !fs::metadata(path)?.is_dir() {
        let key = path
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let files = BTreeMap::from([(key, hash_file(path)?)]);
        return Ok(VolumeSnapshot::from_files(Layout::File, files));
    }
    let mut files = BTreeMap::new();
    hash_dir(path, "", 0, &mut files, true)?;
    Ok(VolumeSnapshot::from_files(Layout::Directory, files))
}

/// The `..data` target of a kubelet volume, cheaply (one readlink).
pub fn generation(path: &Path) -> Option<PathBuf> {
    fs::read_link(path.join(DATA_LINK)).ok()
}

fn hash_dir(
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut BTreeMap<String, Digest>,
    skip_reserved: bool,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `..`-names belong to the kubelet's writer (timestamped dirs, `..data`).
        if skip_reserved && name.starts_with("..") {
            continue;
        }
        let key = format!("{prefix}{name}");
        let path = entry.path();
        // d_type from getdents answers for real files and dirs (all of a kubelet generation)
        // without a stat; only symlinks need one, to follow them.
        let file_type = entry.file_type()?;
        let meta = if file_type.is_symlink() {
            match fs::metadata(&path) {
                Ok(meta) => meta.file_type(),
                // A dangling symlink is not content.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        } else {
            file_type
        };
        if meta.is_dir() {
            hash_dir(&path, &format!("{key}/"), depth + 1, files, skip_reserved)?;
        } else if meta.is_file() {
            files.insert(key, hash_file(&path)?);
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(Digest(hasher.finalize().into()))
}

/// Reads every path once: the baseline that start-up content is compared against.
pub fn baseline(paths: &[PathBuf]) -> Vec<Option<Arc<VolumeSnapshot>>> {
    paths
        .iter()
        .map(|path| match read(path) {
            Ok(Some(snapshot)) => {
                info!(volume = %path.display(), hash = %snapshot.hash.short(), keys = snapshot.files.len(), "baseline");
                Some(Arc::new(snapshot))
            }
            Ok(None) => {
                info!(volume = %path.display(), "does not exist yet; waiting for it");
                None
            }
            Err(e) => {
                warn!(volume = %path.display(), error = %e, "cannot read; will retry on the next event");
                None
            }
        })
        .collect()
}

/// A volume whose content moved, as handed to the decide stage.
#[derive(Debug, Clone)]
pub struct VolumeChange {
    /// Which watched path.
    pub volume: VolumeId,
    /// Its new content.
    pub snapshot: Arc<VolumeSnapshot>,
}

/// Runs the snapshot stage: for each [`Touch`], reads the volume and forwards it if its hash
/// differs from the last one seen. A vanished path is not a change: nudge waits for it to
/// come back, and acts then only if the content differs.
pub async fn run(
    paths: Vec<PathBuf>,
    mut last_seen: Vec<Option<Arc<VolumeSnapshot>>>,
    mut touches: mpsc::Receiver<Touch>,
    changes: mpsc::Sender<VolumeChange>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let touch = tokio::select! {
            _ = shutdown.changed() => return,
            touch = touches.recv() => match touch { Some(t) => t, None => return },
        };
        let path = &paths[touch.volume];
        trace!(volume = %path.display(), kind = ?touch.kind, "touched");
        let seen = &mut last_seen[touch.volume];
        if touch.kind != TouchKind::Rescan && unchanged_generation(path, seen.as_deref()) {
            continue;
        }
        let snapshot = match read(path) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                debug!(volume = %path.display(), "gone; waiting for it to come back");
                continue;
            }
            Err(e) => {
                warn!(volume = %path.display(), error = %e, "cannot read; will retry on the next event");
                continue;
            }
        };
        if seen.as_ref().is_some_and(|s| s.hash == snapshot.hash) {
            debug!(volume = %path.display(), ?touch.kind, "content unchanged");
            continue;
        }
        let snapshot = Arc::new(snapshot);
        *seen = Some(snapshot.clone());
        if changes
            .send(VolumeChange {
                volume: touch.volume,
                snapshot,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The kubelet never writes into a generation after committing it, so a kubelet volume whose
/// `..data` still names the generation last read cannot have changed (a resync still rehashes).
fn unchanged_generation(path: &Path, seen: Option<&VolumeSnapshot>) -> bool {
    match seen.map(|s| &s.layout) {
        Some(Layout::Kubelet(last)) => generation(path).as_ref() == Some(last),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    #[test]
    fn same_content_gives_same_hash_and_any_edit_changes_it() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "app.yaml", "x: 1");
        write(a.path(), "sub/n.txt", "n");
        let first = read(a.path()).unwrap().unwrap();
        assert_eq!(
            first.files.keys().collect::<Vec<_>>(),
            ["app.yaml", "sub/n.txt"]
        );
        assert_eq!(read(a.path()).unwrap().unwrap().hash, first.hash);
        write(a.path(), "app.yaml", "x: 2");
        let second = read(a.path()).unwrap().unwrap();
        assert_ne!(second.hash, first.hash);
        assert_eq!(second.changes_since(Some(&first)).modified, ["app.yaml"]);
    }

    #[test]
    fn renaming_a_key_changes_the_volume_hash() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "a", "same");
        let before = read(a.path()).unwrap().unwrap();
        fs::rename(a.path().join("a"), a.path().join("b")).unwrap();
        let after = read(a.path()).unwrap().unwrap();
        assert_ne!(before.hash, after.hash);
        let changes = after.changes_since(Some(&before));
        assert_eq!(
            (changes.added, changes.removed),
            (vec!["b".to_owned()], vec!["a".to_owned()])
        );
    }

    #[test]
    fn kubelet_volume_is_read_through_data_link() {
        let v = tempfile::tempdir().unwrap();
        write(v.path(), "..2026_01_01_00_00_00.1/app.yaml", "new");
        write(v.path(), "..2025_01_01_00_00_00.1/app.yaml", "old");
        std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", v.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.yaml", v.path().join("app.yaml")).unwrap();
        let snap = read(v.path()).unwrap().unwrap();
        assert_eq!(
            snap.layout,
            Layout::Kubelet("..2026_01_01_00_00_00.1".into())
        );
        assert_eq!(snap.files.keys().collect::<Vec<_>>(), ["app.yaml"]);
    }

    #[test]
    fn missing_path_is_none_and_a_single_file_is_one_key() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(&d.path().join("nope")).unwrap().is_none());
        write(d.path(), "f.conf", "x");
        let snap = read(&d.path().join("f.conf")).unwrap().unwrap();
        assert_eq!(snap.layout, Layout::File);
        assert_eq!(snap.files.keys().collect::<Vec<_>>(), ["f.conf"]);
    }
}
