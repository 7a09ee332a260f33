//! The serving certificate: loaded from PEM files, handed to rustls per handshake by
//! [`CertStore`] (a `ResolvesServerCert` over a lock), and reloaded by [`watch`] whenever
//! nudge's own volume watcher sees the files change (a cert-manager rotation of the mounted
//! Secret is a kubelet `..data` swap). A handshake always gets one whole certificate + key pair:
//! the old one until the new pair has loaded and matched, then the new one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::{mpsc, watch as signal};
use tracing::{info, warn};

use crate::status::{Condition, Readiness, Status};
use crate::watch::VolumeWatcher;

/// How long file events must be quiet before a plain (non-kubelet) write is read.
const SETTLE: Duration = Duration::from_millis(200);
/// Re-read the files this often anyway, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(60);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or not PEM.
    #[error("cannot read {what} from {path}: {reason} (--tls-cert/--tls-key: PEM files)")]
    Read {
        /// "the certificate chain" or "the private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key type is not one rustls signs with, or the key is not the certificate's.
    #[error("the key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// The files could not be watched.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
}

/// Reads and checks one certificate chain + key pair.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path, reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| read("the certificate chain", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read(
            "the certificate chain",
            cert,
            "no CERTIFICATE block".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| read("the private key", key, e.to_string()))?;
    let mismatch = |reason: String| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let signer = any_supported_type(&private).map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// The label of the reload counter: `result="ok"` or `"failed"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: &'static str,
}

/// The certificate every new handshake gets; swapped in place on rotation. It also keeps what
/// `/healthz`, `/readyz` and `/metrics` say about it.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Reloads after a change, by result.
    reloads: Family<ResultLabel, Counter>,
    /// Why the last reload failed, until one succeeds.
    last_failure: Mutex<Option<String>>,
    /// The watcher is running (set by [`watch`]; false before it starts and once it ends).
    watching: AtomicBool,
}

impl CertStore {
    /// Loads the pair once; failing here is fatal (nothing to serve with).
    pub fn open(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let loaded = load(cert, key)?;
        let reloads = Family::<ResultLabel, Counter>::default();
        for result in ["ok", "failed"] {
            // Both series exist from the start (a scrape sees 0, not nothing).
            reloads.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            reloads,
            last_failure: Mutex::new(None),
            watching: AtomicBool::new(false),
        })
    }

    /// The `certificate_reloads` counter family (labels `result="ok"|"failed"`), to register.
    pub fn reloads(&self) -> Family<ResultLabel, Counter> {
        self.reloads.clone()
    }

    /// Liveness, as the sidecar's: `Err(why)` once the certificate watcher has stopped (a
    /// rotation would never be seen; a restart starts a new watcher).
    pub fn health(&self) -> Result<(), String> {
        match self.watching.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err("the certificate watcher is not running".to_owned()),
        }
    }

    /// Readiness, as the sidecar's: a certificate is loaded (always, once the server listens;
    /// a failed reload keeps the previous one and says so) and its watcher runs.
    pub fn readiness(&self) -> Readiness {
        let failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let detail = match failure {
            None => format!("serving {}", self.cert.display()),
            Some(why) => {
                format!("serving the previous certificate; the files failed to load: {why}")
            }
        };
        let watcher = match self.health() {
            Ok(()) => format!("watching {}", self.cert.display()),
            Err(why) => why,
        };
        Readiness {
            conditions: vec![
                Condition {
                    name: "certificate",
                    ok: true,
                    detail,
                },
                Condition {
                    name: "watching",
                    ok: self.health().is_ok(),
                    detail: watcher,
                },
            ],
        }
    }

    fn record(&self, result: &Result<bool, TlsError>) {
        let mut failure = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(changed) => {
                *failure = None;
                if *changed {
                    self.count("ok");
                }
            }
            Err(e) => {
                *failure = Some(e.to_string());
                self.count("failed");
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Re-reads the files; on failure the current pair stays (a half-written rotation or a
    /// bad Secret must not take the webhook down).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let loaded = load(&self.cert, &self.key)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.cert == loaded.cert {
            return Ok(false);
        }
        *current = Arc::new(loaded);
        Ok(true)
    }

    /// The directories to watch: where the files live (a Secret volume is one directory).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert, &self.key]
            .iter()
            .map(|p| match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        dirs
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Watches the certificate's directories with nudge's volume watcher and reloads on every
/// change, until `shutdown`. While it runs, [`CertStore::health`] is `Ok`.
pub async fn watch(
    store: Arc<CertStore>,
    shutdown: signal::Receiver<bool>,
) -> Result<(), TlsError> {
    let watcher = VolumeWatcher::new(store.dirs(), Status::default())?;
    let (touches, mut touched) = mpsc::channel(16);
    let mut stop = shutdown.clone();
    tokio::spawn(watcher.run(SETTLE, Some(RESYNC), touches, shutdown));
    store.watching.store(true, Ordering::Relaxed);
    let _stopped = Stopped(&store);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            touch = touched.recv() => {
                if touch.is_none() {
                    return Ok(());
                }
                let result = store.reload();
                store.record(&result);
                match result {
                    Ok(true) => info!(cert = %store.cert.display(), "serving certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "keeping the current certificate"),
                }
            }
        }
    }
}

/// Marks the watcher stopped however [`watch`] returns.
struct Stopped<'a>(&'a CertStore);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.watching.store(false, Ordering::Relaxed);
    }
}
