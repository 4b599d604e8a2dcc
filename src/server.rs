//! Accepting connections: TLS handshake (with a deadline), HTTP/1.1 or HTTP/2 through
//! hyper-util's auto builder, one task per connection, and graceful draining on shutdown.
//!
//! [`Server::bind`] binds every configured listener and the admin listener (port 0 works,
//! for tests); [`Server::run`] serves until the shutdown future completes, then: `/readyz`
//! turns 503, the listeners stop accepting, in-flight requests (streamed bodies included)
//! finish within `server.shutdown_grace`, and it returns.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminContext, Health};
use crate::app::App;
use crate::auth::MAX_REFRESH_TTL_SECS;
use crate::body;
use crate::config::{Config, ListenerConfig, TlsSetting};
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
        let graceful = Arc::new(GracefulShutdown::new());
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let mut accept_tasks = Vec::new();
        for bound in self.listeners {
            let ctx = ConnContext {
                app: self.app.clone(),
                builder: builder.clone(),
                handshake_timeout: settings.tls_handshake_timeout,
                open: metrics
                    .open_connections
                    .with_label_values(&[&bound.config.name]),
                handshake_failures: metrics
                    .tls_handshake_failures
                    .with_label_values(&[&bound.config.name]),
            };
            accept_tasks.push(tokio::spawn(accept_loop(
                bound,
                ctx,
                graceful.clone(),
                stop_rx.clone(),
            )));
        }

        shutdown.await;
        tracing::info!(grace = ?settings.shutdown_grace, "shutting down: not ready, no new connections, draining in-flight requests");
        self.health.start_draining();
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        let graceful = Arc::try_unwrap(graceful).unwrap_or_default();
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(settings.shutdown_grace) => {
                tracing::warn!("grace period over; closing the remaining connections");
            }
        }
        let _ = admin_stop_tx.send(true);
        if let Some(t) = admin_task {
            let _ = t.await;
        }
    }
}

/// What every connection task needs.
#[derive(Clone)]
struct ConnContext {
    app: App,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: std::time::Duration,
    /// `gateway_open_connections` of this listener.
    open: IntGauge,
    /// `gateway_tls_handshake_failures_total` of this listener.
    handshake_failures: prometheus::IntCounter,
}

async fn accept_loop(
    bound: Bound,
    ctx: ConnContext,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.changed() => return,
            accepted = bound.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %bound.config.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            remote,
            tls: bound.tls.is_some(),
            trust_forwarded: bound.config.trust_forwarded_headers,
        };
        let acceptor = bound.tls.clone();
        let ctx = ctx.clone();
        // Subscribe before spawning, so a shutdown signalled meanwhile is not missed.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            ctx.open.inc();
            serve_connection(stream, acceptor, info, &ctx, watcher).await;
            ctx.open.dec();
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    info: ConnInfo,
    ctx: &ConnContext,
    watcher: Watcher,
) {
    let app = ctx.app.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        async move {
            let mut request = request.map(body::boxed);
            request.extensions_mut().insert(info);
            Ok::<_, Infallible>(app.handle(request).await)
        }
    });
    let result = match acceptor {
        None => {
            watcher
                .watch(ctx.builder.serve_connection(TokioIo::new(stream), service))
                .await
        }
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(ctx.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        ctx.handshake_failures.inc();
                        tracing::debug!(client = %info.remote, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        ctx.handshake_failures.inc();
                        tracing::debug!(client = %info.remote, "tls handshake timed out");
                        return;
                    }
                };
            watcher
                .watch(ctx.builder.serve_connection(TokioIo::new(tls), service))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %info.remote, error = %e, "connection ended with an error");
    }
}
