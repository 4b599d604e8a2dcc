//! Accepting connections: TLS handshake (with a deadline), HTTP/1.1 or HTTP/2 (by ALPN
//! over TLS, by the first bytes on plain connections) through hyper's connection types,
//! one task per connection, and graceful draining on shutdown.
//!
//! [`Server::bind`] binds every configured listener and the admin listener (port 0 works,
//! for tests); [`Server::run`] serves until the shutdown future completes, then: `/readyz`
//! turns 503, the listeners stop accepting, in-flight requests (streamed bodies included)
//! finish within `server.shutdown_grace`, and it returns.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminContext, Health};
use crate::app::App;
use crate::auth::MAX_REFRESH_TTL_SECS;
use crate::body;
use crate::config::{Config, ListenerConfig, ServerSettings, TlsSetting};
use crate::metrics::Metrics;
use crate::proxy::ConnInfo;
use crate::reload::Reloader;
use crate::store::Store;
use crate::tls::{self, CertResolver};

/// A bound listener, ready to accept.
struct Bound {
    tcp: TcpListener,
    config: ListenerConfig,
    tls: Option<TlsAcceptor>,
}

/// The gateway's listeners, admin listener and request handler.
pub struct Server {
    listeners: Vec<Bound>,
    admin: Option<TcpListener>,
    app: App,
    health: Arc<Health>,
    reloader: Reloader,
}

async fn bind_addr(what: &str, address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {what} on {address}: {e}")))
}

impl Server {
    /// Bind every listener of `config`, and the admin listener when enabled.
    pub async fn bind(config: Arc<Config>) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        let mut resolvers = Vec::new();
        for l in &config.listeners {
            let tcp = bind_addr(&format!("listener {}", l.name), l.address).await?;
            let (key, swappable) = match &l.tls {
                TlsSetting::Plaintext => (None, false),
                TlsSetting::Files { key, .. } => (Some(key.clone()), true),
                TlsSetting::SelfSigned(s) => {
                    tracing::warn!(listener = %l.name, sha256 = %s.fingerprint, "serving a self-signed development certificate");
                    (Some(s.key.clone()), false)
                }
            };
            let resolver = key.map(CertResolver::new);
            let tls = resolver
                .as_ref()
                .map(|r| TlsAcceptor::from(tls::server_config(r.clone())));
            resolvers.push(resolver.filter(|_| swappable));
            tracing::info!(listener = %l.name, address = %tcp.local_addr()?, tls = tls.is_some(), "listening");
            listeners.push(Bound {
                tcp,
                config: l.clone(),
                tls,
            });
        }
        let admin = match &config.admin {
            Some(settings) => {
                let tcp = bind_addr("admin listener", settings.address).await?;
                tracing::info!(address = %tcp.local_addr()?, "admin listening (/metrics, /healthz, /readyz)");
                Some(tcp)
            }
            None => None,
        };
        for issuer in config.auth.iter().flat_map(|a| &a.external) {
            issuer.prefetch();
        }
        let metrics = Metrics::new();
        let store = Store::open(&config.store, metrics.clone(), MAX_REFRESH_TTL_SECS as i64)
            .map_err(|e| std::io::Error::other(format!("store: {e}")))?;
        let app = App::new(config, metrics, Arc::new(store));
        let reloader = Reloader::new(app.clone(), resolvers);
        Ok(Server {
            listeners,
            admin,
            app,
            health: Arc::default(),
            reloader,
        })
    }

    /// The bound addresses, in config order (the real port when the config said 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.tcp.local_addr().ok())
            .collect()
    }

    /// The admin listener's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The request handler (its config and metrics).
    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Reloads this server's configuration (SIGHUP, file watching, tests).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let settings = self.app.config().server.clone();
        let metrics = self.app.metrics().clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin_ctx = AdminContext {
            metrics: metrics.clone(),
            health: self.health.clone(),
            store: self.app.store().clone(),
            app: self.app.clone(),
        };
        let admin_task = self
            .admin
            .map(|tcp| tokio::spawn(admin::serve(tcp, admin_ctx, admin_stop_rx)));
        let shared = Arc::new(Shared {
            app: self.app.clone(),
            http1: http1_builder(&settings),
            http2: http2_builder(&settings),
            header_read_timeout: settings.header_read_timeout,
            handshake_timeout: settings.tls_handshake_timeout,
            idle_timeout: settings.idle_timeout,
            total: Arc::new(Semaphore::new(settings.max_connections)),
            per_ip: Mutex::default(),
            max_per_ip: settings.max_connections_per_ip,
            stop: stop_rx.clone(),
            tracker: TaskTracker::new(),
        });
        let mut accept_tasks = Vec::new();
        for bound in self.listeners {
            let name = bound.config.name.clone();
            let counters = ListenerCounters {
                open: metrics.open_connections.with_label_values(&[&name]),
                handshake_failures: metrics.tls_handshake_failures.with_label_values(&[&name]),
                rejected_total: metrics
                    .connections_rejected
                    .with_label_values(&[&name, "total_limit"]),
                rejected_ip: metrics
                    .connections_rejected
                    .with_label_values(&[&name, "ip_limit"]),
            };
            accept_tasks.push(tokio::spawn(accept_loop(bound, shared.clone(), counters)));
        }

        shutdown.await;
        tracing::info!(grace = ?settings.shutdown_grace, "shutting down: not ready, no new connections, draining in-flight requests");
        self.health.start_draining();
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        shared.tracker.close();
        tokio::select! {
            _ = shared.tracker.wait() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(settings.shutdown_grace) => {
                tracing::warn!(open = shared.tracker.len(), "grace period over; closing the remaining connections");
            }
        }
        let _ = admin_stop_tx.send(true);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
    }
}

/// hyper's HTTP/1.1 settings from `server:`.
fn http1_builder(settings: &ServerSettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers);
    builder
}

/// hyper's HTTP/2 settings from `server:`.
fn http2_builder(settings: &ServerSettings) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(settings.h2_max_header_list_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

/// HTTP/2's connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain connection speaks, from its first bytes, left unread for hyper: HTTP/2
/// when they are the connection preface (prior knowledge), HTTP/1.1 otherwise. `None`
/// when the client closes, fails, or sends nothing decisive within `header_read_timeout`.
///
/// Deciding before hyper's connection state exists keeps every plain connection's task
/// the size of an HTTP/1.1 connection (an auto-detecting one is sized for HTTP/2), and
/// a connection that never sends anything holds no HTTP state at all.
async fn plain_protocol(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let detect = async {
        let mut first = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if first[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::Http2);
            }
            // A prefix of the preface so far; `peek` would return at once with the same
            // bytes, so wait a little for the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, detect).await.ok().flatten()
}

/// What every connection task shares.
struct Shared {
    app: App,
    /// HTTP/1.1 connection settings.
    http1: http1::Builder,
    /// HTTP/2 connection settings.
    http2: http2::Builder<TokioExecutor>,
    /// Also bounds the wait for a plain connection's first bytes.
    header_read_timeout: Duration,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// One permit per open connection (`server.max_connections`).
    total: Arc<Semaphore>,
    /// Open connections per client IP.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// Turns true when the server starts draining.
    stop: watch::Receiver<bool>,
    /// Every connection task, to wait for them when draining.
    tracker: TaskTracker,
}

/// The metric handles of one listener.
#[derive(Clone)]
struct ListenerCounters {
    open: IntGauge,
    handshake_failures: IntCounter,
    rejected_total: IntCounter,
    rejected_ip: IntCounter,
}

/// A client IP's slot; released when the connection ends.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<IpSlot> {
        let mut map = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(bound: Bound, shared: Arc<Shared>, counters: ListenerCounters) {
    let mut stop = shared.stop.clone();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.changed() => return,
            accepted = bound.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %bound.config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Limits first: a refused connection is closed before any TLS or HTTP work.
        let Ok(permit) = shared.total.clone().try_acquire_owned() else {
            counters.rejected_total.inc();
            continue;
        };
        let Some(slot) = IpSlot::take(&shared, remote.ip()) else {
            counters.rejected_ip.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            remote,
            client_ip: HeaderValue::from_str(&remote.ip().to_string())
                .expect("an IP address is a valid header value"),
            tls: bound.tls.is_some(),
            trust_forwarded: bound.config.trust_forwarded_headers,
        };
        let acceptor = bound.tls.clone();
        let (shared2, counters) = (shared.clone(), counters.clone());
        shared.tracker.spawn(async move {
            counters.open.inc();
            serve_connection(stream, acceptor, info, &shared2, &counters).await;
            counters.open.dec();
            drop((permit, slot));
        });
    }
}

/// Requests in flight on one connection and when the last one ended, for the idle timeout.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `start` at the end of the last request.
    last_ms: AtomicU64,
    start: OnceLock<Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.start.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
}

/// Held while a request (including its streamed response body) is in flight.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    inner: body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    info: ConnInfo,
    shared: &Shared,
    counters: &ListenerCounters,
) {
    match acceptor {
        None => {
            let mut stop = shared.stop.clone();
            let protocol = tokio::select! {
                p = plain_protocol(&stream, shared.header_read_timeout) => p,
                _ = stop.wait_for(|stopping| *stopping) => None,
            };
            if let Some(protocol) = protocol {
                drive(TokioIo::new(stream), protocol, info, shared).await;
            }
        }
        // Boxed: the TLS state is large, and an unboxed branch would make every
        // connection's task that large, plain HTTP ones included.
        Some(acceptor) => Box::pin(serve_tls(stream, acceptor, info, shared, counters)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    info: ConnInfo,
    shared: &Shared,
    counters: &ListenerCounters,
) {
    match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            // Over TLS, HTTP/2 is chosen by ALPN only (RFC 9113 section 3.3).
            let protocol = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            drive(TokioIo::new(tls), protocol, info, shared).await
        }
        Ok(Err(e)) => {
            counters.handshake_failures.inc();
            tracing::debug!(client = %info.remote, error = %e, "tls handshake failed");
        }
        Err(_) => {
            counters.handshake_failures.inc();
            tracing::debug!(client = %info.remote, "tls handshake timed out");
        }
    }
}

/// Serve HTTP on an established connection until it ends, it has been idle (nothing in
/// flight) for `idle_timeout`, or the server drains; the last two close it gracefully.
async fn drive<I>(io: TokioIo<I>, protocol: Protocol, info: ConnInfo, shared: &Shared)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    activity.last_ms.store(activity.now_ms(), Ordering::SeqCst);
    let app = shared.app.clone();
    let tracked = activity.clone();
    let remote = info.remote;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        let in_flight = InFlight::new(&tracked);
        let info = info.clone();
        // Boxed: hyper keeps room for one request future in every HTTP/1 connection for
        // the connection's whole life, and the request path's future is over 4 KiB; boxed,
        // an idle connection keeps a pointer and the 4 KiB exist only while a request does.
        Box::pin(async move {
            let mut request = request.map(body::boxed);
            request.extensions_mut().insert(info);
            let response = app.handle(request).await;
            Ok::<_, Infallible>(response.map(|inner| {
                body::boxed(Tracked {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        })
    });
    // One heap allocation per connection, for one type whichever the protocol.
    let conn: Pin<Box<dyn Connection>> = match protocol {
        Protocol::Http1 => Box::pin(shared.http1.serve_connection(io, service)),
        Protocol::Http2 => Box::pin(shared.http2.serve_connection(io, service)),
    };
    run_connection(conn, &activity, remote, shared).await
}

/// An HTTP connection being served, HTTP/1.1 or HTTP/2.
trait Connection: Future<Output = Result<(), hyper::Error>> + Send {
    /// Finish the requests in flight, take no new ones, then end.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<C> Connection for C
where
    C: GracefulConnection<Error = hyper::Error> + Send,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        GracefulConnection::graceful_shutdown(self)
    }
}

/// Poll `conn` to its end, closing it gracefully once idle for `idle_timeout` or when
/// the server drains.
async fn run_connection(
    mut conn: Pin<Box<dyn Connection>>,
    activity: &Activity,
    remote: SocketAddr,
    shared: &Shared,
) {
    let mut stop = shared.stop.clone();
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let idle_deadline = {
            let idle_since = activity.last_ms.load(Ordering::SeqCst);
            let elapsed = activity.now_ms().saturating_sub(idle_since);
            shared
                .idle_timeout
                .saturating_sub(Duration::from_millis(elapsed))
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %remote, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(idle_deadline), if !closing => {
                let idle_since = activity.last_ms.load(Ordering::SeqCst);
                let idle = Duration::from_millis(activity.now_ms().saturating_sub(idle_since));
                if activity.in_flight.load(Ordering::SeqCst) == 0 && idle >= shared.idle_timeout {
                    tracing::debug!(client = %remote, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
