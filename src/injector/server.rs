//! The injector's HTTPS server (rustls + hyper 1, HTTP/1.1). Endpoints, all on one port:
//!
//! - `POST /mutate`  — `admission.k8s.io/v1` `AdmissionReview` in, `AdmissionReview` out
//!   ([`super::review`]); 400 for a body that is not a review, 413 over [`MAX_BODY`], 415 for a
//!   content type other than JSON.
//! - `GET /healthz`  — as the sidecar's: 200 `ok` while the certificate watcher runs, else 503.
//! - `GET /readyz`   — as the sidecar's: 200 when every condition holds (a certificate is
//!   loaded, the certificate watcher runs), else 503; the body lists each condition.
//! - `GET /metrics`  — Prometheus text: `nudge_injector_reviews_total{verdict}`,
//!   `nudge_injector_review_seconds`, `nudge_injector_certificate_reloads_total{result}`.
//!
//! The accept loop, the HTTP/1.1 settings and the probe/metrics responses are the admin
//! server's ([`crate::server`]). Each connection is its own task with its own deadlines (TLS
//! handshake, headers — which also closes idle keep-alive connections —, body), so a slow or
//! hostile client only ever holds its own connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::review::{review, Settings, Verdict};
use super::tls::CertStore;
use crate::server::{
    accept_loop, health_response, http1_builder, metrics_response, readiness_response, text,
};

/// The largest review body read (the API server sends whole Pods; 3 MiB is etcd's own limit
/// on an object, so a real Pod review is always smaller).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// ... or its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ... or its request body (the API server's own webhook timeout is at most 30 s).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight reviews may take this long to finish on shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

/// The injector's metrics.
struct Metrics {
    registry: Registry,
    reviews: Family<VerdictLabel, Counter>,
    seconds: Histogram,
}

impl Metrics {
    fn new(certs: &CertStore) -> Metrics {
        let mut registry = Registry::with_prefix("nudge_injector");
        let reviews = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by verdict (injected, skipped, invalid, wrong_kind, malformed, too_large)",
            reviews.clone(),
        );
        let seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "review_seconds",
            "Time from the whole body read to the answer built",
            seconds.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads after a change of its files, by result (ok, failed)",
            certs.reloads(),
        );
        Metrics {
            registry,
            reviews,
            seconds,
        }
    }

    fn count(&self, verdict: &'static str) {
        self.reviews.get_or_create(&VerdictLabel { verdict }).inc();
    }

    /// The Prometheus text format 0.0.4, as the sidecar's `/metrics` serves it.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        crate::status::encode_registry(&self.registry)
    }
}

/// What every connection shares.
struct Shared {
    settings: Settings,
    metrics: Metrics,
    certs: Arc<CertStore>,
}

/// Serves on `listener` with the certificate from `certs` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertStore>,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .with_no_client_auth()
            .with_cert_resolver(certs.clone()),
        Err(e) => {
            warn!(error = %e, "no TLS protocol version available");
            return;
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let shared = Arc::new(Shared {
        settings,
        metrics: Metrics::new(&certs),
        certs,
    });
    let http = http1_builder(HEADER_TIMEOUT);
    accept_loop(
        listener,
        shutdown,
        DRAIN_GRACE,
        "injector",
        move |stream, peer, watcher| {
            let _ = stream.set_nodelay(true);
            let (acceptor, shared, http) = (acceptor.clone(), shared.clone(), http.clone());
            async move {
                let tls = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return debug!(%peer, "TLS handshake timed out"),
                };
                let service = service_fn(move |req| respond(req, shared.clone()));
                let conn = http.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn).await {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await;
}

async fn respond(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let probe = matches!(*req.method(), Method::GET | Method::HEAD);
    let answer = match (req.uri().path(), probe) {
        ("/mutate", _) if req.method() == Method::POST => mutate(req, &shared).await,
        ("/mutate", _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview\n".into(),
        ),
        ("/healthz" | "/readyz" | "/metrics", false) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into())
        }
        ("/healthz", true) => health_response(shared.certs.health()),
        ("/readyz", true) => readiness_response(&shared.certs.readiness()),
        ("/metrics", true) => metrics_response(shared.metrics.encode()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try POST /mutate, /healthz, /readyz or /metrics\n".into(),
        ),
    };
    Ok(answer)
}

async fn mutate(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        shared.metrics.count("malformed");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json\n".into(),
        );
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        shared.metrics.count("too_large");
        return too_large();
    }
    let body = match timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            shared.metrics.count("too_large");
            return too_large();
        }
        Ok(Err(e)) => {
            shared.metrics.count("malformed");
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            );
        }
        Err(_) => {
            shared.metrics.count("malformed");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long\n".into(),
            );
        }
    };
    let started = Instant::now();
    let answer = review(&body, &shared.settings);
    shared
        .metrics
        .seconds
        .observe(started.elapsed().as_secs_f64());
    match answer {
        Ok((body, verdict)) => {
            shared.metrics.count(verdict.as_str());
            if verdict == Verdict::WrongKind {
                warn!("denied a review that is not for a Pod");
            }
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => {
            shared.metrics.count("malformed");
            debug!(error = %e, "malformed review");
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the review is larger than {MAX_BODY} bytes\n"),
    )
}
