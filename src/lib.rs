//! A TLS-terminating reverse-proxy authentication gateway, compatible with
//! Flask-JWT-Extended: it answers `POST /users/login` against an argon2id user store,
//! verifies the bearer JWT on every other route, and forwards authorized requests to an
//! unmodified upstream.
//!
//! # Module map
//! | module | what it does |
//! |---|---|
//! | [`config`] | `gateway.yaml` → raw serde structs → validated, prepared [`config::Config`] |
//! | [`server`] | listeners, TLS handshakes, HTTP/1.1 + HTTP/2 connections, graceful drain |
//! | [`admin`] | the admin listener: `/metrics`, `/healthz`, `/readyz` |
//! | [`reload`] | hot reload on SIGHUP or file change, certificates included |
//! | [`tls`] | PEM loading, self-signed development certificate, swappable cert resolver |
//! | [`app`] | the request path as one service: request id → path → login/route → auth → proxy |
//! | [`routing`] | path normalization and the prepared route table |
//! | [`auth`] | user store, login handler, JWT issue/verify, per-route policy |
//! | [`store`] | revocations, refresh families, login counters: memory or Redis, with a local view |
//! | [`proxy`] | upstreams, header hygiene, forwarding, retries and passive health |
//! | [`pool`] | keep-alive HTTP/1.1 connections to each upstream instance |
//! | [`headers`] | hop-by-hop stripping and `X-Forwarded-*` |
//! | [`metrics`] | the Prometheus registry and metric handles |
//! | [`explain`] | `gateway explain`: which route a request takes and why it is allowed or not |
//! | [`error`] | the error type and its single mapping to `{"msg": ...}` responses |
//! | [`body`] | the one boxed body type used throughout |
//!
//! Tests and embedders bind port 0 and pass their own shutdown future:
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = std::sync::Arc::new(gateway::config::load("gateway.yaml".as_ref())?);
//! let server = gateway::server::Server::bind(config).await?;
//! println!("listening on {:?}", server.local_addrs());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod explain;
pub mod headers;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod store;
pub mod tls;

pub use app::{app, App};
