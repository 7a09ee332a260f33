//! Wires the sidecar's stages together: watch -> snapshot -> decide (-> action), connected by
//! channels, all stopped by one shutdown signal.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::config::Settings;
use crate::snapshot::VolumeSnapshot;
use crate::status::Status;
use crate::watch::{VolumeWatcher, WatchError};
use crate::{decide, snapshot};

/// Touches and changes are tiny; a short queue is plenty because every stage coalesces.
const QUEUE: usize = 64;

/// Runs the sidecar until `shutdown` resolves. Fails only if inotify cannot start.
/// `status` receives what the stages report, for the admin server.
pub async fn run(
    settings: Settings,
    status: Status,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WatchError> {
    let Settings {
        watch: paths,
        settle,
        resync,
        reload_on_start,
        action,
        decide: decide_settings,
        ..
    } = settings;
    // Watch before taking the baseline, so nothing written in between is missed.
    let watcher = VolumeWatcher::new(paths.clone(), status.clone())?;
    let baseline = snapshot::baseline(&paths);
    for (path, snapshot) in paths.iter().zip(&baseline) {
        if let Some(snapshot) = snapshot {
            status.baseline(path, &snapshot.hash.to_string());
        }
    }
    let acted: Vec<Option<Arc<VolumeSnapshot>>> = if reload_on_start {
        vec![None; paths.len()]
    } else {
        baseline.clone()
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (touch_tx, touch_rx) = mpsc::channel(QUEUE);
    let (change_tx, change_rx) = mpsc::channel(QUEUE);
    let stages = [
        tokio::spawn(watcher.run(settle, resync, touch_tx, stop_rx.clone())),
        tokio::spawn(snapshot::run(
            paths.clone(),
            baseline.clone(),
            touch_rx,
            change_tx,
            stop_rx.clone(),
        )),
        tokio::spawn(decide::run(
            paths.clone(),
            acted,
            baseline,
            action,
            decide_settings,
            change_rx,
            status,
            stop_rx,
        )),
    ];
    info!(volumes = ?paths, "watching");
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for stage in stages {
        let _ = stage.await;
    }
    Ok(())
}
