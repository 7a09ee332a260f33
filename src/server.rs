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
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::status::{Readiness, Status};

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
pub async fn serve(listener: TcpListener, status: Status, shutdown: watch::Receiver<bool>) {
    let http = http1_builder(HEADER_TIMEOUT);
    accept_loop(
        listener,
        shutdown,
        DRAIN_GRACE,
        "admin server",
        move |stream, _peer, watcher| {
            let status = status.clone();
            let service = service_fn(move |req| respond(req, status.clone()));
            let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "admin connection ended with an error");
                }
            }
        },
    )
    .await;
}

/// An HTTP/1.1 connection builder whose connections are dropped when a request's headers
/// (or the next request on an idle keep-alive connection) take longer than `header_timeout`:
/// the slowloris guard both of nudge's servers use.
pub(crate) fn http1_builder(header_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    http
}

/// Accepts connections on `listener` until `shutdown` turns true, spawning `handle`'s future
/// for each (it serves the connection under the given [`Watcher`]); then stops accepting and
/// lets the watched connections finish within `grace`. `what` names the server in logs
/// (`"{what} listening"` carries the bound address, which tests and operators read).
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    what: &'static str,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        // Tests and operators learn the bound port (e.g. with `--listen 127.0.0.1:0`) here.
        info!(%addr, "{what} listening");
    }
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "{what} connection");
                    tokio::spawn(handle(stream, peer, graceful.watcher()));
                }
                // Out of file descriptors and the like: keep serving once it passes.
                Err(e) => {
                    warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("{what} connections still open after the grace period; dropping them");
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
    health_response(status.health())
}

fn readyz(status: &Status) -> Response<Full<Bytes>> {
    readiness_response(&status.readiness())
}

fn metrics(status: &Status) -> Response<Full<Bytes>> {
    metrics_response(status.encode_metrics())
}

/// `/healthz`: 200 `ok`, or 503 `unhealthy: WHY`.
pub(crate) fn health_response(health: Result<(), String>) -> Response<Full<Bytes>> {
    match health {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

/// `/readyz`: 200 when every condition holds, else 503; the body lists each condition.
pub(crate) fn readiness_response(readiness: &Readiness) -> Response<Full<Bytes>> {
    let code = match readiness.ready() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(code, readiness.to_string())
}

/// `/metrics`: the Prometheus text (format 0.0.4), or 500 if it could not be encoded.
pub(crate) fn metrics_response(encoded: Result<String, fmt::Error>) -> Response<Full<Bytes>> {
    match encoded {
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

/// A `text/plain` response.
pub(crate) fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
