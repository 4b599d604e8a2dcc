//! The request path as one service: `app(config)` in axum's style, so most tests call it
//! in-process with `tower::ServiceExt::oneshot`, and the server wraps it for sockets.
//!
//! Per request, in order:
//! 1. `X-Request-Id`: kept when the client sent a sane one, generated otherwise.
//! 2. path normalization ([`routing::normalize_path`]); ambiguous paths end here with 400.
//! 3. the login endpoint, answered locally ([`auth::login`]).
//! 4. route lookup (404/405).
//! 5. for `auth: required` routes: bearer token verification, then the route's policy.
//! 6. forwarding ([`proxy::forward`]).
//!
//! Errors from any step become responses in one place, [`GatewayError::into_response`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Method, Request, Response};

use crate::auth::{self};
use crate::body::Body;
use crate::config::Config;
use crate::error::{ErrorMode, GatewayError};
use crate::headers::X_REQUEST_ID;
use crate::proxy;
use crate::routing::{self, AuthMode};

/// The gateway's request handler. Cheap to clone; clones share the current config.
#[derive(Clone)]
pub struct App {
    config: Arc<ArcSwap<Config>>,
}

/// Build the request handler for a configuration.
pub fn app(config: Arc<Config>) -> App {
    App {
        config: Arc::new(ArcSwap::new(config)),
    }
}

impl App {
    /// The configuration new requests use.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Use `config` for new requests; requests in flight finish with the old one.
    pub fn set_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// Handle one request; never fails (errors are responses).
    pub async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        let config = self.config.load_full();
        let request_id = request_id(&request);
        request
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.clone());
        let mode = config
            .auth
            .as_ref()
            .map_or(ErrorMode::Flask, |a| a.error_mode);
        let mut response = match route(&config, request).await {
            Ok(r) => r,
            Err(e) => e.into_response(mode),
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        response
    }
}

/// The client's request id when it is short printable ASCII, else a new UUID.
fn request_id(request: &Request<Body>) -> HeaderValue {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        })
}

async fn route(config: &Config, request: Request<Body>) -> Result<Response<Body>, GatewayError> {
    let path = routing::normalize_path(request.uri().path())?;
    let auth = config.auth.as_deref();
    if let Some(auth) = auth.filter(|a| a.login_path == path) {
        if request.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed {
                allow: "POST".into(),
            });
        }
        return auth::login::handle(auth, request).await;
    }
    let route = config.routes.resolve(request.method(), &path)?;
    let identity = match (route.auth, auth) {
        (AuthMode::Public, _) => None,
        (AuthMode::Required, Some(auth)) => {
            let identity = auth
                .authenticate(request.headers())
                .map_err(GatewayError::Token)?;
            route.require.check(&identity)?;
            Some(identity)
        }
        (AuthMode::Required, None) => {
            return Err(GatewayError::Internal(
                "route requires auth but none is configured".into(),
            ))
        }
    };
    proxy::forward(route, &path, identity.as_ref(), auth, request).await
}

impl tower::Service<Request<Body>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.handle(request).await) })
    }
}
