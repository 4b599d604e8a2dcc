//! Forwarding to upstreams: the prepared upstream set, header hygiene, and a keep-alive
//! connection pool per upstream instance ([`crate::pool`]). Bodies stream both ways,
//! never buffered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use serde_yaml::Value;

use crate::auth::jwt::Identity;
use crate::auth::Auth;
use crate::body::{self, Body};
use crate::config::{duration_or, raw::RawUpstream, Problems};
use crate::error::GatewayError;
use crate::headers::{self, Forwarding};
use crate::metrics::Metrics;
use crate::pool::{Pool, SendError};
use crate::routing::Route;

/// One upstream instance.
#[derive(Debug)]
struct Target {
    /// `host:port` to connect to, also sent as `Host`.
    authority: Authority,
    /// Path prefix of the base URL, without a trailing slash (`""` for none).
    base_path: String,
    /// `Host` header value, prepared once.
    host: HeaderValue,
    /// Idle keep-alive connections to this instance.
    pool: Arc<Pool>,
    /// Consecutive connection failures (passive health).
    failures: std::sync::atomic::AtomicU32,
    /// Until when (ms since the upstream was built) the instance is skipped.
    skip_until_ms: std::sync::atomic::AtomicU64,
}

impl Target {
    fn record_failure(&self, upstream: &Upstream) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if upstream.max_failures > 0 && failures >= upstream.max_failures {
            let until = upstream.now_ms() + upstream.cooldown.as_millis() as u64;
            self.skip_until_ms.store(until, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %upstream.name, instance = %self.authority, cooldown = ?upstream.cooldown, "instance failing; skipped for the cooldown");
        }
    }

    fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

/// A named upstream: one or more instances used round-robin, with its own pool.
pub struct Upstream {
    /// The name routes refer to.
    pub name: String,
    /// The name again, shared cheaply with each request's access-log record.
    pub label: Arc<str>,
    targets: Vec<Target>,
    next: AtomicUsize,
    /// Default response timeout of routes to this upstream.
    pub timeout: Duration,
    /// Connection failures in a row after which an instance is skipped (0: never).
    max_failures: u32,
    /// How long a failing instance is skipped.
    cooldown: Duration,
    /// Reference point of `skip_until_ms`.
    epoch: std::time::Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("targets", &self.targets)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Upstream {
    /// The base URLs, for `gateway check`.
    pub fn urls(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| format!("http://{}{}", t.authority, t.base_path))
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next instance round-robin, skipping those in their cooldown (unless all are).
    fn pick(&self) -> &Target {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let n = self.targets.len();
        (0..n)
            .map(|k| &self.targets[(start + k) % n])
            .find(|t| t.skip_until_ms.load(Ordering::Relaxed) <= now)
            .unwrap_or(&self.targets[start % n])
    }
}

fn parse_target(url: &str, connect_timeout: Duration) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(format!("{url:?}: https upstreams are not supported yet; use http:// (upstreams are expected on a private network or localhost)")),
        _ => return Err(format!("{url:?}: expected an http:// URL")),
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{url:?}: missing host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials in upstream URLs are not supported"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{url:?}: a base URL cannot have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let host =
        HeaderValue::from_str(authority.as_str()).map_err(|_| format!("{url:?}: invalid host"))?;
    Ok(Target {
        pool: Arc::new(Pool::new(
            authority.clone(),
            connect_timeout,
            POOL_IDLE_TIMEOUT,
        )),
        authority,
        base_path,
        host,
        failures: Default::default(),
        skip_until_ms: Default::default(),
    })
}

/// Idle upstream connections unused this long are closed rather than reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Build the upstreams from `upstreams:`, recording every problem.
pub fn build_upstreams(
    problems: &mut Problems,
    value: Option<Value>,
) -> BTreeMap<String, Arc<Upstream>> {
    let mut out = BTreeMap::new();
    let map = match value {
        None | Some(Value::Null) => {
            problems.push("upstreams", "at least one upstream is required");
            return out;
        }
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            problems.push("upstreams", "expected a mapping of name to upstream");
            return out;
        }
    };
    for (name, v) in map {
        let Some(name) = name.as_str().map(str::to_owned) else {
            problems.push("upstreams", "upstream names must be strings");
            continue;
        };
        let key = format!("upstreams.{name}");
        let Some(raw) = problems.parse::<RawUpstream>(&key, v) else {
            continue;
        };
        let urls = match (raw.url, raw.urls) {
            (Some(u), None) => vec![u],
            (None, Some(list)) if !list.is_empty() => list,
            (Some(_), Some(_)) => {
                problems.push(&key, "set either url or urls, not both");
                continue;
            }
            _ => {
                problems.push(&key, "an upstream needs url (or urls)");
                continue;
            }
        };
        let connect_timeout = duration_or(
            problems,
            format!("{key}.connect_timeout"),
            raw.connect_timeout.as_deref(),
            Duration::from_secs(2),
        );
        let mut targets = Vec::new();
        for url in &urls {
            match parse_target(url, connect_timeout) {
                Ok(t) => targets.push(t),
                Err(e) => problems.push(format!("{key}.url"), e),
            }
        }
        let cooldown = duration_or(
            problems,
            format!("{key}.cooldown"),
            raw.cooldown.as_deref(),
            Duration::from_secs(10),
        );
        let timeout = duration_or(
            problems,
            format!("{key}.timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(30),
        );
        if targets.len() != urls.len() {
            continue;
        }
        out.insert(
            name.clone(),
            Arc::new(Upstream {
                label: Arc::from(name.as_str()),
                name,
                targets,
                next: AtomicUsize::new(0),
                timeout,
                max_failures: raw.max_failures.unwrap_or(3),
                cooldown,
                epoch: std::time::Instant::now(),
            }),
        );
    }
    out
}

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's socket address.
    pub remote: SocketAddr,
    /// The client's IP address as a header value, rendered once per connection for
    /// `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the listener trusts client-sent `X-Forwarded-*`.
    pub trust_forwarded: bool,
}

/// Forward a request that passed routing and authentication to the route's upstream.
pub async fn forward(
    route: &Route,
    path: &str,
    identity: Option<&Identity>,
    auth: Option<&Auth>,
    metrics: &Metrics,
    request: Request<Body>,
    limit: &crate::body::LimitState,
) -> Result<Response<Body>, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let conn = parts.extensions.remove::<ConnInfo>();
    // `Host` was validated by the app; HTTP/2 requests carry `:authority` instead.
    let client_host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = &mut parts.headers;
    headers::strip_hop_by_hop(headers);
    if let Some(auth) = auth {
        headers::remove_spellings_of(headers, &[&auth.subject_header, &auth.roles_header]);
    }
    if !route.forward_authorization {
        headers.remove(http::header::AUTHORIZATION);
    }
    headers::set_forwarded(
        headers,
        &Forwarding {
            client_ip: conn.as_ref().map(|c| &c.client_ip),
            proto: if conn.as_ref().is_some_and(|c| !c.tls) {
                "http"
            } else {
                "https"
            },
            host: client_host.as_ref(),
            trust: conn.as_ref().is_some_and(|c| c.trust_forwarded),
        },
    );
    if let (Some(identity), Some(auth)) = (identity, auth) {
        let subject = HeaderValue::from_str(&identity.sub).map_err(|_| {
            GatewayError::Forbidden("Subject cannot be forwarded as a header".into())
        })?;
        headers.insert(&auth.subject_header, subject);
        if let Ok(roles) = HeaderValue::from_str(&identity.roles.join(",")) {
            headers.insert(&auth.roles_header, roles);
        }
    }
    parts.version = Version::HTTP_11;
    let upstream_path = route.upstream_path(path);
    // Usually the client's target is forwarded as it came (already normal, no prefix to
    // add or rewrite): then it is reused as is, without formatting and parsing it again.
    let unchanged = (upstream_path == parts.uri.path())
        .then(|| parts.uri.path_and_query().cloned())
        .flatten();
    let query = parts.uri.query();

    // Connection failures of idempotent requests without a body are retried once, on
    // another instance when there is one: nothing reached the upstream yet.
    let retryable = parts.method.is_idempotent() && http_body::Body::is_end_stream(&body);
    let upstream = &route.upstream;
    let mut body = Some(body);
    let mut headers = Some(std::mem::take(&mut parts.headers));
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let target = upstream.pick();
        let path_and_query = match (&unchanged, query) {
            (Some(same), _) if target.base_path.is_empty() => same.clone(),
            (_, Some(q)) => {
                PathAndQuery::try_from(format!("{}{upstream_path}?{q}", target.base_path))
                    .map_err(|_| GatewayError::BadRequest("Bad request target".into()))?
            }
            (_, None) => PathAndQuery::try_from(format!("{}{upstream_path}", target.base_path))
                .map_err(|_| GatewayError::BadRequest("Bad request target".into()))?,
        };
        let mut request_parts = Request::new(()).into_parts().0;
        request_parts.method = parts.method.clone();
        request_parts.version = parts.version;
        // Only a retryable request needs its headers again.
        request_parts.headers = match (retryable, &mut headers) {
            (true, Some(h)) => h.clone(),
            (_, h) => h.take().unwrap_or_default(),
        };
        request_parts.headers.insert(HOST, target.host.clone());
        // Origin form (`/path?query`); the instance is the pool's.
        request_parts.uri = Uri::from(path_and_query);
        let upstream_request =
            Request::from_parts(request_parts, body.take().unwrap_or_else(body::empty));

        let started = std::time::Instant::now();
        let result = tokio::time::timeout(route.timeout, target.pool.send(upstream_request)).await;
        // A failure caused by the client's body is the client's: answer it, and do not
        // count it against the upstream or the instance.
        if let (Ok(Err(_)), Some(hit)) = (&result, limit.hit()) {
            return Err(match hit {
                body::BodyLimit::TooLarge => GatewayError::PayloadTooLarge,
                body::BodyLimit::TimedOut => GatewayError::RequestTimeout,
                body::BodyLimit::Broken => {
                    GatewayError::BadRequest("Malformed request body".into())
                }
            });
        }
        // Sent again, on another connection: a failed connect, or a kept-alive
        // connection the upstream had closed; nothing was answered yet either way.
        let again = retryable
            && attempt < 2
            && matches!(&result, Ok(Err(e)) if matches!(e, SendError::Connect { .. }) || e.is_stale_connection());
        let error_kind = match &result {
            Ok(Ok(_)) => None,
            Err(_) => Some("timeout"),
            Ok(Err(SendError::Connect { .. })) => Some("connect"),
            Ok(Err(e)) if again && e.is_stale_connection() => None,
            Ok(Err(_)) => Some("protocol"),
        };
        match (&result, error_kind) {
            (Ok(Ok(_)), _) => {
                target.record_success();
                metrics
                    .upstream_duration
                    .with_label_values(&[&upstream.name])
                    .observe(started.elapsed().as_secs_f64());
            }
            (_, Some(kind)) => {
                metrics
                    .upstream_errors
                    .with_label_values(&[&upstream.name, kind])
                    .inc();
                target.record_failure(upstream);
            }
            // A stale kept-alive connection: not the instance's failure.
            (_, None) => {}
        }
        match result {
            Ok(Ok(r)) => break r,
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => {
                if again {
                    tracing::debug!(upstream = %upstream.name, error = %e, "not sent; retrying");
                    continue;
                }
                tracing::warn!(upstream = %upstream.name, error = %e, "upstream request failed");
                return Err(GatewayError::UpstreamUnavailable);
            }
        }
    };
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::boxed(body)))
}
