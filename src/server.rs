//! The admin HTTP server (hyper 1, HTTP/1.1 only). Endpoints:
//!
//! - `GET /healthz` — 200 `ok` while the process runs and its watch stage is alive, else 503.
//! - `GET /readyz`  — 200 when every named condition holds (watching, volumes present, target
//!   found for signal actions, no content held back by validation), else 503; the body lists
//!   each condition and why it does not hold.
//! - `GET /metrics` — Prometheus metrics (text format 0.0.4), every name starting with `nudge_`.
//!
//! Anything else is 404. The server only reads [`Status`]; it never changes what the pipeline
//! does. On shutdown it stops accepting and lets in-flight requests finish, within a grace
//! period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::status::Status;

/// How long in-flight requests may take to finish once nudge is stopping.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// A scrape or probe that has not sent its request by then is dropped (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Content type of the Prometheus text format that [`Status::encode_metrics`] writes.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Failures of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--listen, RELOAD_LISTEN; `off` disables the admin server)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the admin server's listener; done before the pipeline starts so a taken port fails
/// at once.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Serves the endpoints on `listener` until `shutdown` turns true, then drains.
pub async fn serve(listener: TcpListener, status: Status, mut shutdown: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        // Tests and operators learn the bound port (e.g. with `--listen 127.0.0.1:0`) here.
        info!(%addr, "admin server listening");
    }
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "admin connection");
                    let status = status.clone();
                    let service = service_fn(move |req| respond(req, status.clone()));
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(error = %e, "admin connection ended with an error");
                        }
                    });
                }
                // Out of file descriptors and the like: keep serving once it passes.
                Err(e) => {
                    warn!(error = %e, "admin server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("admin connections still open after the grace period; dropping them");
    }
}

async fn respond(
    req: Request<Incoming>,
    status: Status,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into()));
    }
    let answer: fn(&Status) -> Response<Full<Bytes>> = match req.uri().path() {
        "/healthz" => healthz,
        "/readyz" => readyz,
        "/metrics" => metrics,
        _ => {
            return Ok(text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz or /metrics\n".into(),
            ))
        }
    };
    // Readiness and metrics scan /proc for the target; off the runtime thread, so a slow
    // scan never delays the pipeline.
    Ok(tokio::task::spawn_blocking(move || answer(&status))
        .await
        .unwrap_or_else(|_| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the handler failed\n".into(),
            )
        }))
}

fn healthz(status: &Status) -> Response<Full<Bytes>> {
    match status.health() {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

fn readyz(status: &Status) -> Response<Full<Bytes>> {
    let readiness = status.readiness();
    let code = match readiness.ready() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(code, readiness.to_string())
}

fn metrics(status: &Status) -> Response<Full<Bytes>> {
    match status.encode_metrics() {
        Ok(body) => {
            let mut response = text(StatusCode::OK, body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n".into(),
        ),
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
