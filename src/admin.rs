//! The admin listener (plain HTTP, loopback by default): `/metrics` for Prometheus,
//! `/healthz` (the process is alive) and `/readyz` (configured and listening; 503 while
//! draining, so load balancers stop sending before the listeners close).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::error::{json_msg, json_response};
use crate::metrics::Metrics;

/// Readiness, shared by the server (which starts draining) and the admin endpoints.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    /// Mark the process as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Answer one admin request.
pub fn handle(request: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_msg(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(body::full(metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" if health.is_draining() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "draining"}),
        ),
        "/readyz" => json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        _ => json_msg(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Serve the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = handle(&request, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
