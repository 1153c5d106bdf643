//! The metrics listener (`metrics.listener`, e.g. `http://127.0.0.1:9404`):
//! `/metrics` in the Prometheus text format and `/healthz`. It speaks HTTP
//! only; nothing here reaches the Kafka API.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::broker::Broker;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn route(
    broker: Arc<Broker>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n",
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            let b = broker.clone();
            match tokio::task::spawn_blocking(move || super::scrape::render(&b)).await {
                Ok(Ok(text)) => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "metrics rendering failed");
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("{e}\n"),
                    )
                }
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    })
}

/// Scrapers are few; more connections than this are closed at once so the
/// metrics port cannot use up the file descriptors the Kafka listener needs.
const MAX_CONNECTIONS: usize = 32;
/// A connection lives at most this long (Prometheus reconnects as needed).
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);
/// Time to send a request's headers before the connection is closed.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds the listener and serves until the runtime stops.
pub async fn serve(broker: Arc<Broker>, addr: String) -> Result<(), String> {
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many metrics connections; closing this one");
                drop(stream);
                continue;
            };
            let b = broker.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| route(b.clone(), req));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "metrics connection ended with an error")
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "metrics connection closed after its lifetime")
                    }
                    Ok(Ok(())) => {}
                }
            });
        }
    });
    Ok(())
}
