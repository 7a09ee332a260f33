//! The serving certificate: loaded from PEM files, handed to rustls per handshake by
//! [`CertStore`] (a `ResolvesServerCert` over a lock), and reloaded by [`watch`] whenever
//! nudge's own volume watcher sees the files change (a cert-manager rotation of the mounted
//! Secret is a kubelet `..data` swap). A handshake always gets one whole certificate + key pair:
//! the old one until the new pair has loaded and matched, then the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::{mpsc, watch as signal};
use tracing::{info, warn};

use crate::status::Status;
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

/// The certificate every new handshake gets; swapped in place on rotation.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the pair once; failing here is fatal (nothing to serve with).
    pub fn open(cert: &Path, key: &Path) -> Result<CertStore, TlsError> {
        let loaded = load(cert, key)?;
        Ok(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
        })
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
/// change, until `shutdown`.
pub async fn watch(
    store: Arc<CertStore>,
    shutdown: signal::Receiver<bool>,
) -> Result<(), TlsError> {
    let watcher = VolumeWatcher::new(store.dirs(), Status::default())?;
    let (touches, mut touched) = mpsc::channel(16);
    let mut stop = shutdown.clone();
    tokio::spawn(watcher.run(SETTLE, Some(RESYNC), touches, shutdown));
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            touch = touched.recv() => {
                if touch.is_none() {
                    return Ok(());
                }
                match store.reload() {
                    Ok(true) => info!(cert = %store.cert.display(), "serving certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "keeping the current certificate"),
                }
            }
        }
    }
}
