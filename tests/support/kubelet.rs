//! A writer that updates a directory exactly as the kubelet's AtomicWriter updates a
//! ConfigMap/Secret volume (see shared/kubelet-volumes.md): new timestamped directory,
//! `..data_tmp` link, rename over `..data`, top-level links after the swap, old generation
//! removed, and nothing written at all when the payload is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// When the user-visible top-level links are created relative to the `..data` swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOrder {
    /// Kubernetes 1.29 and later: after the swap.
    AfterSwap,
    /// Older kubelets: before the swap.
    BeforeSwap,
}

/// A kubelet-managed volume directory.
pub struct KubeletVolume {
    pub dir: PathBuf,
    pub order: LinkOrder,
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

impl KubeletVolume {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        fs::create_dir_all(&dir).expect("create volume dir");
        KubeletVolume {
            dir,
            order: LinkOrder::AfterSwap,
        }
    }

    /// Creates the volume and writes its first payload.
    pub fn create(dir: impl Into<PathBuf>, payload: &[(&str, &str)]) -> Self {
        let volume = Self::new(dir);
        volume.write(payload);
        volume
    }

    /// Writes `payload` (key -> content; keys may hold `/`). Returns false when nothing was
    /// written because the content is unchanged.
    pub fn write(&self, payload: &[(&str, &str)]) -> bool {
        self.write_with(payload, |_| {})
    }

    /// Swaps in a new generation even though the content is identical, as a writer that does
    /// not compare (or a metadata-only change) would.
    pub fn rewrite_identical(&self, payload: &[(&str, &str)]) {
        self.commit(payload, true, |_| {});
    }

    /// Like [`write`](Self::write), calling `before_swap` with the volume dir just before the
    /// rename of `..data_tmp` over `..data` (the commit point), for latency measurements.
    pub fn write_with(&self, payload: &[(&str, &str)], before_swap: impl FnOnce(&Path)) -> bool {
        self.commit(payload, false, before_swap)
    }

    fn commit(
        &self,
        payload: &[(&str, &str)],
        force: bool,
        before_swap: impl FnOnce(&Path),
    ) -> bool {
        let payload: BTreeMap<&str, &str> = payload.iter().copied().collect();
        // 1. current generation
        let old = fs::read_link(self.dir.join("..data"))
            .ok()
            .map(|t| self.dir.join(t));
        // 2-3. compare with the old files; nothing to do when identical
        let old_files = old.as_deref().map(read_files).unwrap_or_default();
        let new_files: BTreeMap<String, Vec<u8>> = payload
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        if !force && old.is_some() && old_files == new_files {
            return false;
        }
        // 4. new timestamped dir
        let generation = timestamped_name();
        let new_dir = self.dir.join(&generation);
        fs::create_dir(&new_dir).expect("mkdir generation");
        fs::set_permissions(&new_dir, fs::Permissions::from_mode(0o755)).expect("chmod generation");
        // 5. files
        for (key, content) in &payload {
            let path = new_dir.join(key);
            fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir key dir");
            fs::write(&path, content).expect("write key");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod key");
        }
        let new_top: BTreeSet<String> = payload.keys().map(|k| top_level(k)).collect();
        if self.order == LinkOrder::BeforeSwap {
            self.create_top_links(&new_top);
        }
        // 6-7. the atomic switch
        let tmp = self.dir.join("..data_tmp");
        symlink(&generation, &tmp).expect("symlink ..data_tmp");
        before_swap(&self.dir);
        fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        // 8. links for new keys, after the switch
        if self.order == LinkOrder::AfterSwap {
            self.create_top_links(&new_top);
        }
        // 9. links for removed keys
        let old_top: BTreeSet<String> = old_files.keys().map(|k| top_level(k)).collect();
        for gone in old_top.difference(&new_top) {
            fs::remove_file(self.dir.join(gone)).expect("remove old link");
        }
        // 10. old generation
        if let Some(old) = old {
            fs::remove_dir_all(old).expect("remove old generation");
        }
        true
    }

    fn create_top_links(&self, names: &BTreeSet<String>) {
        for name in names {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), link).expect("user-visible link");
            }
        }
    }
}

fn top_level(key: &str) -> String {
    key.split('/').next().unwrap_or(key).to_string()
}

fn read_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}/"), out);
            } else {
                out.insert(
                    format!("{prefix}{name}"),
                    fs::read(&path).unwrap_or_default(),
                );
            }
        }
    }
    walk(dir, "", &mut out);
    out
}

/// `..YYYY_MM_DD_HH_MM_SS.<digits>` in UTC, unique within the process.
fn timestamped_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let unique = (u64::from(now.subsec_nanos()) ^ u64::from(std::process::id()) << 20)
        .wrapping_add(GENERATION.fetch_add(1, Ordering::Relaxed) * 7_919);
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{unique}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn civil_dates_are_right() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_785), (2026, 11, 28));
}
