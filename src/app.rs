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
//! Every request then gets one access-log line and its metrics.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::{Method, Request, Response};

use crate::auth::jwt::TokenType;
use crate::auth::{self, session, Auth, JWKS_PATH, MAX_REFRESH_TTL_SECS};
use crate::body::Body;
use crate::config::Config;
use crate::error::{ErrorMode, GatewayError};
use crate::headers::X_REQUEST_ID;
use crate::metrics::{method_label, status_class, Metrics};
use crate::proxy::{self, ConnInfo};
use crate::routing::{self, AuthMode};
use crate::store::Store;

/// The gateway's request handler. Cheap to clone; clones share the current config.
#[derive(Clone)]
pub struct App {
    config: Arc<ArcSwap<Config>>,
    metrics: Metrics,
    store: Arc<Store>,
}

/// Build the request handler for a configuration, with its own metrics registry and an
/// in-memory state store.
pub fn app(config: Arc<Config>) -> App {
    let metrics = Metrics::new();
    let store = Arc::new(Store::memory(metrics.clone(), MAX_REFRESH_TTL_SECS as i64));
    App::new(config, metrics, store)
}

/// What the access log and metrics learn while a request is handled.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The route's name, `login`, or `None` when no route matched.
    pub route: Option<Arc<str>>,
    /// The upstream forwarded to.
    pub upstream: Option<Arc<str>>,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// The verified subject.
    pub subject: Option<String>,
}

/// The route label for login requests.
const LOGIN_ROUTE: &str = "login";

impl App {
    /// A handler for `config` reporting into `metrics`.
    pub fn new(config: Arc<Config>, metrics: Metrics, store: Arc<Store>) -> App {
        App {
            config: Arc::new(ArcSwap::new(config)),
            metrics,
            store,
        }
    }

    /// The token state store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The configuration new requests use.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Use `config` for new requests; requests in flight finish with the old one.
    pub fn set_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// The metrics this handler reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handle one request; never fails (errors are responses).
    pub async fn handle(&self, mut request: Request<Body>) -> Response<Body> {
        let started = Instant::now();
        let config = self.config.load_full();
        let request_id = request_id(&request);
        request
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.clone());
        let method = request.method().clone();
        let uri = request.uri().clone();
        let client = request.extensions().get::<ConnInfo>().map(|c| c.remote);

        let mut outcome = Outcome::default();
        let result = route(&config, &self.metrics, &self.store, request, &mut outcome).await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                self.count_failure(&e, &outcome);
                e.into_response(
                    config
                        .auth
                        .as_ref()
                        .map_or(ErrorMode::Flask, |a| a.error_mode),
                )
            }
        };
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.clone());

        let elapsed = started.elapsed();
        let status = response.status();
        let route_label = outcome.route.as_deref().unwrap_or("none");
        self.metrics
            .requests
            .with_label_values(&[route_label, method_label(&method), status_class(status)])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route_label])
            .observe(elapsed.as_secs_f64());
        // The query string is left out: it is where secrets leak into URLs.
        tracing::info!(
            target: "access",
            request_id = request_id.to_str().unwrap_or(""),
            client = client.map(|c| c.to_string()).unwrap_or_default(),
            method = method.as_str(),
            path = uri.path(),
            route = route_label,
            status = status.as_u16(),
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            upstream = outcome.upstream.as_deref().unwrap_or(""),
            upstream_status = outcome.upstream_status.unwrap_or(0),
            subject = outcome.subject.as_deref().unwrap_or(""),
        );
        response
    }

    fn count_failure(&self, error: &GatewayError, outcome: &Outcome) {
        match error {
            GatewayError::Token(_) | GatewayError::Forbidden(_) => {
                self.metrics
                    .auth_failures
                    .with_label_values(&[error.reason()])
                    .inc();
            }
            _ if outcome.route.as_deref() == Some(LOGIN_ROUTE) => {
                self.metrics
                    .login_attempts
                    .with_label_values(&[error.reason()])
                    .inc();
            }
            _ => {}
        }
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
            // A v4 UUID from the thread-local RNG: no system call per request.
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes())
                .expect("a UUID is a valid header value")
        })
}

async fn route(
    config: &Config,
    metrics: &Metrics,
    store: &Store,
    request: Request<Body>,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    check_head(&request, &config.server)?;
    let path = routing::normalize_path(request.uri().path())?;
    let auth = config.auth.as_deref();
    if let Some(auth) = auth.filter(|a| a.is_local_path(&path)) {
        // Local endpoints take small JSON bodies: 4 KiB, within the body deadline.
        let (parts, body) = request.into_parts();
        let max = auth::login::MAX_BODY_BYTES as u64;
        let (body, limit) = crate::body::limited(body, max, config.server.body_read_timeout);
        let request = Request::from_parts(parts, body);
        let result = local(auth, metrics, store, request, &path, outcome).await;
        return match (result, limit.hit()) {
            (Err(_), Some(crate::body::BodyLimit::TooLarge)) => Err(GatewayError::PayloadTooLarge),
            (Err(_), Some(crate::body::BodyLimit::TimedOut)) => Err(GatewayError::RequestTimeout),
            (Err(_), Some(crate::body::BodyLimit::Broken)) => {
                Err(GatewayError::BadRequest("Malformed request body".into()))
            }
            (result, _) => result,
        };
    }
    let route = config.routes.resolve(request.method(), &path)?;
    outcome.route = Some(route.label.clone());
    let identity = match (route.auth, auth) {
        (AuthMode::Public, _) => None,
        (AuthMode::Required, Some(auth)) => {
            let identity = auth
                .authenticate_request(request.headers())
                .await
                .map_err(GatewayError::Token)?;
            outcome.subject = Some(identity.sub.clone());
            session::check_revocation(store, metrics, &identity, TokenType::Access)?;
            route.require.check(&identity)?;
            Some(identity)
        }
        (AuthMode::Required, None) => {
            return Err(GatewayError::Internal(
                "route requires auth but none is configured".into(),
            ))
        }
    };
    outcome.upstream = Some(route.upstream.label.clone());
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > route.max_body_bytes) {
        return Err(GatewayError::PayloadTooLarge);
    }
    let (parts, body) = request.into_parts();
    let (body, limit) =
        crate::body::limited(body, route.max_body_bytes, config.server.body_read_timeout);
    let request = Request::from_parts(parts, body);
    let response = proxy::forward(
        route,
        &path,
        identity.as_ref(),
        auth,
        metrics,
        request,
        &limit,
    )
    .await?;
    outcome.upstream_status = Some(response.status().as_u16());
    Ok(response)
}

/// Refuse request heads the routes must never see: an over-long target (414), and a
/// missing (HTTP/1.1), repeated or malformed `Host` (400). The upstream's authority
/// always comes from the config, so `Host` is only validated, never forwarded.
fn check_head(
    request: &Request<Body>,
    server: &crate::config::ServerSettings,
) -> Result<(), GatewayError> {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target_len > server.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(GatewayError::BadRequest("Multiple Host headers".into())),
        (None, _) if request.version() == http::Version::HTTP_11 => {
            Err(GatewayError::BadRequest("Missing Host header".into()))
        }
        (Some(host), None) => {
            let valid = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
            if valid {
                Ok(())
            } else {
                Err(GatewayError::BadRequest("Invalid Host header".into()))
            }
        }
        (None, _) => Ok(()),
    }
}

/// The endpoints the gateway answers itself: login, refresh, logout and the JWK set.
async fn local(
    auth: &Auth,
    metrics: &Metrics,
    store: &Store,
    request: Request<Body>,
    path: &str,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let (label, allowed) = if path == auth.login_path {
        (LOGIN_ROUTE, Method::POST)
    } else if path == auth.logout_path {
        ("logout", Method::POST)
    } else if path == JWKS_PATH {
        ("jwks", Method::GET)
    } else {
        ("refresh", Method::POST)
    };
    outcome.route = Some(Arc::from(label));
    let head_ok = allowed == Method::GET && request.method() == Method::HEAD;
    if request.method() != allowed && !head_ok {
        return Err(GatewayError::MethodNotAllowed {
            allow: allowed.to_string(),
        });
    }
    match label {
        LOGIN_ROUTE => {
            let response = auth::login::handle(auth, store, metrics, request).await?;
            metrics.login_attempts.with_label_values(&["success"]).inc();
            Ok(response)
        }
        "logout" => session::logout(auth, store, metrics, request).await,
        "refresh" => session::refresh(auth, store, metrics, request.headers()).await,
        _ => {
            let body = auth.jwks.clone().unwrap_or_default();
            let mut response = Response::new(crate::body::full(body));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            Ok(response)
        }
    }
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
