//! Wires the sidecar's stages together: watch -> snapshot -> decide (-> action), connected by
//! channels, with the admin server beside them, all stopped by one shutdown signal.

use std::path::Path;

use nix::sys::signal::Signal;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::action::ReloadAction;
use crate::config::Settings;
use crate::server::{self, ServerError};
use crate::snapshot::VolumeSnapshot;
use crate::status::{Status, TargetProbe};
use crate::target::Selector;
use crate::watch::{VolumeWatcher, WatchError};
use crate::{decide, snapshot, target};

/// Touches and changes are tiny; a short queue is plenty because every stage coalesces.
const QUEUE: usize = 64;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// inotify could not start.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The admin server could not listen.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Runs the sidecar until `shutdown` resolves. Fails only if inotify cannot start or the admin
/// server cannot listen. `status` receives what the stages report, for the admin server.
pub async fn run(
    settings: Settings,
    status: Status,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let listener = match settings.listen {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    status.set_volumes(&settings.watch);
    if let Some(probe) = target_probe(&settings.action) {
        status.set_target_probe(probe);
    }
    // The effective settings, once, on the "watching" line below.
    let action_name = settings.action.name();
    let target = target_of(&settings.action).map(|(selector, _)| selector.to_string());
    let admin = settings
        .listen
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
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
    let watch_status = status.clone();
    let watch_stage = watcher.run(settle, resync, touch_tx, stop_rx.clone());
    let mut stages = vec![
        tokio::spawn(async move {
            watch_stage.await;
            // /healthz fails from here on; harmless during shutdown, telling if by a bug.
            watch_status.watcher_stopped();
        }),
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
            status.clone(),
            stop_rx.clone(),
        )),
    ];
    if let Some(listener) = listener {
        stages.push(tokio::spawn(server::serve(listener, status, stop_rx)));
    }
    info!(volumes = ?paths, action = action_name, process = ?target, %admin, ?settle, ?resync, "watching");
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for stage in stages {
        let _ = stage.await;
    }
    Ok(())
}

/// The target process of actions that have one (signal, restart): its selector and the
/// signal it gets. Webhook and exec have no target.
pub fn target_of(action: &ReloadAction) -> Option<(&Selector, Signal)> {
    match action {
        ReloadAction::Signal(a) => Some((a.selector(), a.signal())),
        ReloadAction::Restart(a) => Some((a.selector(), a.signal())),
        ReloadAction::Webhook(_) | ReloadAction::Exec(_) => None,
    }
}

/// For actions with a target process: how `/readyz` and `/metrics` look for it now.
fn target_probe(action: &ReloadAction) -> Option<TargetProbe> {
    let selector = target_of(action)?.0.clone();
    Some(Box::new(move || {
        match target::find(&selector, Path::new("/proc")) {
            Ok(found) if !found.is_empty() => Ok(found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")),
            Ok(_) => Err(format!("no {selector} is running")),
            Err(e) => Err(e.to_string()),
        }
    }))
}
