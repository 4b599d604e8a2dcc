//! The admin listener (plain HTTP, loopback by default): `/metrics` for Prometheus,
//! `/healthz` (the process is alive), `/readyz` (configured and listening; 503 while
//! draining, so load balancers stop sending before the listeners close), and
//! `POST /revocations` `{"sub": ...}`, which revokes every token of a subject issued until
//! now, on every replica. That one needs `Authorization: Bearer <admin.token>`; without an
//! `admin.token` in the config it is disabled.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{self, Body};
use crate::error::{json_msg, json_response, GatewayError};
use crate::metrics::Metrics;
use crate::store::{Revocation, RevocationKind, Store};

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

/// What the admin endpoints need.
#[derive(Clone)]
pub struct AdminContext {
    /// Rendered at `/metrics`.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Arc<Health>,
    /// Where subject revocations go.
    pub store: Arc<Store>,
    /// The current config (for `admin.token`, which may change on reload).
    pub app: App,
}

/// Answer one admin request.
pub async fn handle(request: Request<Body>, ctx: &AdminContext) -> Response<Body> {
    let method = request.method().clone();
    match (request.uri().path(), method) {
        ("/revocations", Method::POST) => match revoke_subject(request, ctx).await {
            Ok(r) => r,
            Err(e) => e.into_response(crate::error::ErrorMode::Flask),
        },
        (_, m) if m != Method::GET && m != Method::HEAD => {
            json_msg(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        }
        ("/metrics", _) => {
            let mut response = Response::new(body::full(ctx.metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        ("/healthz", _) => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        ("/readyz", _) if ctx.health.is_draining() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "draining"}),
        ),
        ("/readyz", _) => json_response(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        _ => json_msg(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `POST /revocations {"sub": "..."}`: revoke every token of the subject issued until now.
async fn revoke_subject(
    request: Request<Body>,
    ctx: &AdminContext,
) -> Result<Response<Body>, GatewayError> {
    let config = ctx.app.config();
    let Some(expected) = config.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return Err(GatewayError::Forbidden(
            "Admin endpoints are disabled: set admin.token".into(),
        ));
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(GatewayError::Forbidden("Invalid admin token".into()));
    }
    let body = crate::auth::login::read_json_body(request).await?;
    let Some(Value::String(sub)) = body.get("sub") else {
        return Err(GatewayError::BadRequest(
            "Missing \"sub\" in request body".into(),
        ));
    };
    let at = crate::auth::jwt::now() as i64;
    ctx.store
        .revoke(Revocation {
            kind: RevocationKind::Sub,
            id: sub.clone(),
            at,
        })
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    tracing::info!(subject = %sub, "all tokens of the subject revoked by the admin endpoint");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "msg": "Tokens revoked", "sub": sub, "revoked_before": at }),
    ))
}

/// Serve the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, ctx: AdminContext, mut stop: watch::Receiver<bool>) {
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
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(request.map(body::boxed), &ctx).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
