//! Accepting connections: TLS handshake (with a deadline), HTTP/1.1 or HTTP/2 through
//! hyper-util's auto builder, one task per connection, and graceful draining on shutdown.
//!
//! [`Server::bind`] binds every configured listener (port 0 works, for tests) and
//! [`Server::run`] serves until the shutdown future completes, then stops accepting and
//! lets in-flight requests finish within `server.shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::body;
use crate::config::{Config, ListenerConfig, TlsSetting};
use crate::proxy::ConnInfo;
use crate::tls::{self, CertResolver};

/// A bound listener, ready to accept.
struct Bound {
    tcp: TcpListener,
    config: ListenerConfig,
    tls: Option<(TlsAcceptor, Arc<CertResolver>)>,
}

/// The gateway's listeners and request handler.
pub struct Server {
    listeners: Vec<Bound>,
    app: App,
}

impl Server {
    /// Bind every listener of `config`.
    pub async fn bind(config: Arc<Config>) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let tcp = TcpListener::bind(l.address).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot bind listener {} on {}: {e}", l.name, l.address),
                )
            })?;
            let tls = match &l.tls {
                TlsSetting::Plaintext => None,
                TlsSetting::Files { key, .. } => Some(key.clone()),
                TlsSetting::SelfSigned(s) => {
                    tracing::warn!(listener = %l.name, sha256 = %s.fingerprint, "serving a self-signed development certificate");
                    Some(s.key.clone())
                }
            }
            .map(|key| {
                let resolver = CertResolver::new(key);
                (TlsAcceptor::from(tls::server_config(resolver.clone())), resolver)
            });
            tracing::info!(listener = %l.name, address = %tcp.local_addr()?, tls = tls.is_some(), "listening");
            listeners.push(Bound {
                tcp,
                config: l.clone(),
                tls,
            });
        }
        Ok(Server {
            listeners,
            app: crate::app::app(config),
        })
    }

    /// The bound addresses, in config order (the real port when the config said 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.tcp.local_addr().ok())
            .collect()
    }

    /// The request handler (to swap its config on reload).
    pub fn app(&self) -> App {
        self.app.clone()
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let config = self.app.config();
        let settings = config.server.clone();
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_tasks = Vec::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        for bound in self.listeners {
            let ctx = ConnContext {
                app: self.app.clone(),
                builder: builder.clone(),
                handshake_timeout: settings.tls_handshake_timeout,
            };
            accept_tasks.push(tokio::spawn(accept_loop(
                bound,
                ctx,
                graceful.clone(),
                stop_rx.clone(),
            )));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(settings.shutdown_grace) => {
                tracing::warn!(grace = ?settings.shutdown_grace, "grace period over; closing remaining connections");
            }
        }
    }
}

/// What every connection task needs.
#[derive(Clone)]
struct ConnContext {
    app: App,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: std::time::Duration,
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
        let acceptor = bound.tls.as_ref().map(|(a, _)| a.clone());
        let ctx = ctx.clone();
        // Subscribe before spawning, so a shutdown signalled meanwhile is not missed.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(stream, acceptor, info, ctx, watcher).await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    info: ConnInfo,
    ctx: ConnContext,
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
            let conn = ctx.builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(ctx.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %info.remote, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client = %info.remote, "tls handshake timed out");
                        return;
                    }
                };
            let conn = ctx.builder.serve_connection(TokioIo::new(tls), service);
            watcher.watch(conn).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %info.remote, error = %e, "connection ended with an error");
    }
}
