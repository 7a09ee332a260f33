//! What the pipeline reports about itself, and the only place that turns it into answers for
//! the admin server: Prometheus metrics ([`Status::encode_metrics`]), readiness as named
//! conditions ([`Status::readiness`]) and liveness ([`Status::health`]).
//!
//! Every stage holds a clone of [`Status`] and calls its methods when something worth counting
//! happens. Stages never read it back: data still flows one way. Readiness is computed afresh
//! on every request from the current state (and, for the target, a fresh /proc scan), so it
//! drops back to "not ready" as soon as a condition stops holding; nothing is latched.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How one reload attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttemptOutcome {
    /// The action succeeded.
    Success,
    /// The action failed and will be retried.
    Failure,
}

impl AttemptOutcome {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Failure => "failure",
        }
    }
}

/// Everything reported so far.
#[derive(Debug, Clone, Default)]
pub struct StatusState {
    /// Every watched path has its inotify watch (or waits for the path through an ancestor).
    pub watching: bool,
    /// Whether the last reload attempt found its target (`None` before any attempt).
    pub target_found: Option<bool>,
    /// Reload attempts by action name and outcome.
    pub attempts: BTreeMap<(&'static str, AttemptOutcome), u64>,
    /// Reloads that completed (after any retries), by action name.
    pub reloads: BTreeMap<&'static str, u64>,
    /// Duration of the last attempt.
    pub last_attempt_duration: Option<Duration>,
    /// Wall-clock time of the last successful reload.
    pub last_success: Option<SystemTime>,
    /// Content changes detected, by volume.
    pub changes: BTreeMap<PathBuf, u64>,
    /// Current content hash (hex) by volume.
    pub hashes: BTreeMap<PathBuf, String>,
    /// Full rescans (queue overflow, resync, watch errors).
    pub rescans: u64,
    /// Errors from inotify or from keeping watches in place.
    pub watch_errors: u64,
    /// Volumes whose newest content fails validation, with the reason.
    pub validation_failing: BTreeMap<PathBuf, String>,
    /// The watched paths, in the order given (for the "volumes present" condition).
    pub volumes: Vec<PathBuf>,
    /// The watch stage's task has ended (it only ends on shutdown, or by a bug).
    pub watcher_stopped: bool,
}

/// Looks for the reload target now: `Ok(description)` when found, `Err(why)` when not.
pub type TargetProbe = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// One named readiness condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Short name: `watching`, `volumes`, `target`, `validation`.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found, or why it does not hold.
    pub detail: String,
}

/// Every readiness condition; ready when all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The conditions, in a fixed order.
    pub conditions: Vec<Condition>,
}

impl Readiness {
    /// Whether every condition holds.
    pub fn ready(&self) -> bool {
        self.conditions.iter().all(|c| c.ok)
    }
}

impl fmt::Display for Readiness {
    /// One line per condition: `ok target: pid 12 (nginx)` or `FAIL target: no process ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.ready() { "ready" } else { "not ready" })?;
        for c in &self.conditions {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    volume: String,
    hash: String,
}

/// The Prometheus metrics, all registered under the `nudge_` prefix.
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    reloads: Family<OutcomeLabels, Counter>,
    attempts: Family<ActionLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    last_duration: Gauge<f64, AtomicU64>,
    durations: Histogram,
    changes: Family<VolumeLabels, Counter>,
    validation_failures: Family<VolumeLabels, Counter>,
    watch_errors: Counter,
    rescans: Counter,
    restart_backoff: Counter,
    config: Family<HashLabels, Gauge>,
    target_found: Gauge,
    watching: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nudge");
        let m = Metrics {
            reloads: Family::default(),
            attempts: Family::default(),
            last_success: Gauge::default(),
            last_duration: Gauge::default(),
            // 0.5 ms .. ~2 min: a signal takes microseconds, a webhook with retries seconds.
            durations: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            changes: Family::default(),
            validation_failures: Family::default(),
            watch_errors: Counter::default(),
            rescans: Counter::default(),
            restart_backoff: Counter::default(),
            config: Family::default(),
            target_found: Gauge::default(),
            watching: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "reloads",
            "Reload attempts by action and outcome (failures are retried)",
            m.reloads.clone(),
        );
        r.register(
            "reload_attempts",
            "Reload attempts by action, retries included",
            m.attempts.clone(),
        );
        r.register(
            "last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload",
            m.last_success.clone(),
        );
        r.register(
            "last_reload_duration_seconds",
            "Duration of the last reload attempt",
            m.last_duration.clone(),
        );
        r.register(
            "reload_duration_seconds",
            "Duration of reload attempts",
            m.durations.clone(),
        );
        r.register(
            "changes",
            "Content changes detected, by volume",
            m.changes.clone(),
        );
        r.register(
            "validation_failures",
            "New content held back because it failed validation, by volume",
            m.validation_failures.clone(),
        );
        r.register(
            "watch_errors",
            "Errors from inotify or from keeping watches in place",
            m.watch_errors.clone(),
        );
        r.register(
            "rescans",
            "Full rehashes of every volume (start-up, queue overflow, resync, watch errors)",
            m.rescans.clone(),
        );
        r.register(
            "restart_backoff_warnings",
            "Restarts within 10 minutes of the previous one (the kubelet backs off)",
            m.restart_backoff.clone(),
        );
        r.register(
            "config_info",
            "Current content hash of each watched volume (value is always 1)",
            m.config.clone(),
        );
        r.register(
            "target_found",
            "Whether the reload target process is found now (1) or not (0)",
            m.target_found.clone(),
        );
        r.register(
            "watching",
            "Whether every watched path has its inotify watch (1) or not (0)",
            m.watching.clone(),
        );
        // A gauge, not prometheus-client's `Info`: the OpenMetrics `info` type is not in the
        // Prometheus text format that promtool (and older scrapers) parse.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        r.register("build_info", "Version of nudge (value is always 1)", build);
        Metrics { registry, ..m }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<StatusState>,
    metrics: Metrics,
    probe: Mutex<Option<TargetProbe>>,
}

/// A cloneable handle to what the pipeline reported, its metrics and its readiness.
#[derive(Clone, Default)]
pub struct Status {
    shared: Arc<Shared>,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn volume_labels(volume: &Path) -> VolumeLabels {
    VolumeLabels {
        volume: volume.display().to_string(),
    }
}

impl Status {
    /// A copy of everything reported so far.
    pub fn state(&self) -> StatusState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, StatusState> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters; keep serving them.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The paths being watched, for the "volumes present" readiness condition.
    pub fn set_volumes(&self, volumes: &[PathBuf]) {
        self.lock().volumes = volumes.to_vec();
    }

    /// How to look for the reload target now; without one (actions with no target process)
    /// the `target` condition is left out of readiness.
    pub fn set_target_probe(&self, probe: TargetProbe) {
        *self
            .shared
            .probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(probe);
    }

    /// The watch stage has (re)established its watches.
    pub fn set_watching(&self, watching: bool) {
        self.lock().watching = watching;
        self.metrics().watching.set(i64::from(watching));
    }

    /// The watch stage's task ended; from now on `/healthz` fails.
    pub fn watcher_stopped(&self) {
        self.lock().watcher_stopped = true;
    }

    /// The watch stage rescanned every volume.
    pub fn rescanned(&self) {
        self.lock().rescans += 1;
        self.metrics().rescans.inc();
    }

    /// inotify reported an error, or a watch could not be kept.
    pub fn watch_error(&self) {
        self.lock().watch_errors += 1;
        self.metrics().watch_errors.inc();
    }

    /// The restart action restarted the app again soon after the previous restart, so the
    /// kubelet's CrashLoopBackOff delay applies.
    pub fn restart_backoff_warning(&self) {
        self.metrics().restart_backoff.inc();
    }

    /// A volume's content changed to `hash`.
    pub fn content_changed(&self, volume: &Path, hash: &str) {
        {
            let mut state = self.lock();
            *state.changes.entry(volume.to_path_buf()).or_default() += 1;
        }
        self.metrics()
            .changes
            .get_or_create(&volume_labels(volume))
            .inc();
        self.set_hash(volume, hash);
    }

    /// The content of a volume at start-up.
    pub fn baseline(&self, volume: &Path, hash: &str) {
        self.set_hash(volume, hash);
    }

    fn set_hash(&self, volume: &Path, hash: &str) {
        let old = self
            .lock()
            .hashes
            .insert(volume.to_path_buf(), hash.to_owned());
        let volume = volume.display().to_string();
        // An info metric has one series per volume: drop the old hash's series.
        if let Some(old) = old {
            self.metrics().config.remove(&HashLabels {
                volume: volume.clone(),
                hash: old,
            });
        }
        let labels = HashLabels {
            volume,
            hash: hash.to_owned(),
        };
        self.metrics().config.get_or_create(&labels).set(1);
    }

    /// The newest content of `volume` failed validation and is held back; `reason` is shown by
    /// `/readyz` (never file contents).
    pub fn validation_failed(&self, volume: &Path, reason: &str) {
        self.lock()
            .validation_failing
            .insert(volume.to_path_buf(), reason.to_owned());
        self.metrics()
            .validation_failures
            .get_or_create(&volume_labels(volume))
            .inc();
    }

    /// The newest content of `volume` passed validation (or was replaced by content that did).
    pub fn validation_passed(&self, volume: &Path) {
        self.lock().validation_failing.remove(volume);
    }

    /// One reload attempt ended.
    pub fn attempt(
        &self,
        action: &'static str,
        outcome: AttemptOutcome,
        took: Duration,
        target_found: Option<bool>,
    ) {
        {
            let mut state = self.lock();
            *state.attempts.entry((action, outcome)).or_default() += 1;
            state.last_attempt_duration = Some(took);
            if target_found.is_some() {
                state.target_found = target_found;
            }
            if outcome == AttemptOutcome::Success {
                *state.reloads.entry(action).or_default() += 1;
                state.last_success = Some(SystemTime::now());
            }
        }
        self.record_attempt(action, outcome, took, target_found);
    }

    fn record_attempt(
        &self,
        action: &'static str,
        outcome: AttemptOutcome,
        took: Duration,
        target_found: Option<bool>,
    ) {
        let m = self.metrics();
        let labels = OutcomeLabels {
            action: action.to_owned(),
            outcome: outcome.as_str().to_owned(),
        };
        m.reloads.get_or_create(&labels).inc();
        m.attempts
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
        m.last_duration.set(seconds(took));
        m.durations.observe(seconds(took));
        if let Some(found) = target_found {
            m.target_found.set(i64::from(found));
        }
        if outcome == AttemptOutcome::Success {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            m.last_success.set(seconds(now));
        }
    }

    /// Runs the target probe, if any, and records what it found.
    fn probe_target(&self) -> Option<Result<String, String>> {
        let result = {
            let probe = self
                .shared
                .probe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            probe.as_ref().map(|probe| probe())
        }?;
        let found = result.is_ok();
        self.lock().target_found = Some(found);
        self.metrics().target_found.set(i64::from(found));
        Some(result)
    }

    /// The named readiness conditions, evaluated now.
    pub fn readiness(&self) -> Readiness {
        let target = self.probe_target();
        let state = self.state();
        let mut conditions = vec![watching_condition(&state), volumes_condition(&state)];
        if let Some(target) = target {
            conditions.push(Condition {
                name: "target",
                ok: target.is_ok(),
                detail: target.unwrap_or_else(|why| why),
            });
        }
        conditions.push(validation_condition(&state));
        Readiness { conditions }
    }

    /// Liveness: `Ok` while the watch stage runs, `Err(why)` once it has stopped.
    pub fn health(&self) -> Result<(), String> {
        match self.lock().watcher_stopped {
            false => Ok(()),
            true => Err("the watch stage has stopped".to_owned()),
        }
    }

    /// The metrics in the Prometheus text format 0.0.4 (what Prometheus scrapes and
    /// `promtool check metrics` reads).
    pub fn encode_metrics(&self) -> Result<String, fmt::Error> {
        // Refresh the target gauge so a scrape sees the present, not the last attempt.
        let _ = self.probe_target();
        encode_registry(&self.metrics().registry)
    }
}

/// A registry in the Prometheus text format 0.0.4; the injector's `/metrics` uses it too.
pub fn encode_registry(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(openmetrics_to_prometheus(&out))
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total`
/// and the text ends with `# EOF`. The Prometheus text format names the family `x_total`
/// and has no EOF marker; rewrite those two things so every consumer reads it.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 16 * counters.len());
    for line in text.lines().filter(|l| *l != "# EOF") {
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn watching_condition(state: &StatusState) -> Condition {
    Condition {
        name: "watching",
        ok: state.watching,
        detail: match state.watching {
            true => "inotify watches in place".to_owned(),
            false => "inotify watches are not in place (see the log)".to_owned(),
        },
    }
}

fn volumes_condition(state: &StatusState) -> Condition {
    let missing: Vec<String> = state
        .volumes
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    Condition {
        name: "volumes",
        ok: missing.is_empty(),
        detail: match missing.is_empty() {
            true => format!("{} watched path(s) present", state.volumes.len()),
            false => format!("missing (waiting for them): {}", missing.join(", ")),
        },
    }
}

fn validation_condition(state: &StatusState) -> Condition {
    let failing: Vec<String> = state
        .validation_failing
        .iter()
        .map(|(volume, reason)| format!("{}: {reason}", volume.display()))
        .collect();
    Condition {
        name: "validation",
        ok: failing.is_empty(),
        detail: match failing.is_empty() {
            true => "no content held back".to_owned(),
            false => format!("new content held back: {}", failing.join("; ")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_drops_back_when_a_condition_stops_holding() {
        let status = Status::default();
        status.set_watching(true);
        assert!(status.readiness().ready());
        status.validation_failed(Path::new("/cfg"), "app.yaml: bad YAML");
        let readiness = status.readiness();
        assert!(!readiness.ready());
        assert!(readiness.to_string().contains("app.yaml: bad YAML"));
        status.validation_passed(Path::new("/cfg"));
        assert!(status.readiness().ready());
    }

    #[test]
    fn the_target_condition_follows_the_probe() {
        let status = Status::default();
        status.set_watching(true);
        let found = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = found.clone();
        status.set_target_probe(Box::new(move || {
            match seen.load(std::sync::atomic::Ordering::SeqCst) {
                true => Ok("pid 7 (app)".into()),
                false => Err("no process named app".into()),
            }
        }));
        assert!(status
            .readiness()
            .to_string()
            .contains("no process named app"));
        found.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(status.readiness().ready());
    }

    #[test]
    fn a_new_hash_replaces_the_volumes_info_series() {
        let status = Status::default();
        status.baseline(Path::new("/cfg"), "aaaa");
        status.content_changed(Path::new("/cfg"), "bbbb");
        let text = status.encode_metrics().expect("encodes");
        assert!(
            text.contains(r#"nudge_config_info{volume="/cfg",hash="bbbb"} 1"#),
            "{text}"
        );
        assert!(!text.contains("aaaa"), "{text}");
    }
}
