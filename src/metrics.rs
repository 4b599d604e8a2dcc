//! Prometheus metrics: one registry per gateway process (or per test), handles prepared
//! once, exposed on the admin listener at `/metrics`.
//!
//! Labels are bounded: route and upstream names from the config, a fixed set of methods,
//! status classes and failure reasons — never the raw path, the subject or a token.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds, from 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// All metric handles of the gateway.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status class (`2xx`...).
    pub requests: IntCounterVec,
    /// Time to the response head, by route.
    pub request_duration: HistogramVec,
    /// Time to the upstream's response head, by upstream.
    pub upstream_duration: HistogramVec,
    /// Token and policy failures by reason (`missing`, `expired`, `bad_signature`, ...).
    pub auth_failures: IntCounterVec,
    /// Login attempts by outcome (`success`, `invalid_credentials`, `bad_request`, ...).
    pub login_attempts: IntCounterVec,
    /// Open client connections, by listener.
    pub open_connections: IntGaugeVec,
    /// Failed or timed-out TLS handshakes, by listener.
    pub tls_handshake_failures: IntCounterVec,
    /// Upstream failures by upstream and kind (`connect`, `timeout`, `protocol`).
    pub upstream_errors: IntCounterVec,
    /// Configuration reloads by outcome (`success`, `failure`).
    pub config_reloads: IntCounterVec,
    /// Always 1, labelled with the version.
    pub build_info: IntGauge,
    /// Uses of the state store while it was unreachable, by operation and fail mode.
    pub store_unavailable: IntCounterVec,
    /// 1 while the shared (Redis) state store is connected and synchronized.
    pub store_connected: IntGauge,
    /// Revoked tokens presented, by kind of token.
    pub revoked_tokens: IntCounterVec,
    /// Logins refused by the brute-force limits, by limit (`account`, `address`).
    pub login_limited: IntCounterVec,
    /// Connections closed at accept by a limit, by listener and reason.
    pub connections_rejected: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid histogram");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    /// A fresh registry with every gateway metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "gateway_open_connections",
                "Client connections currently open.",
            ),
            &["listener"],
        )
        .expect("valid gauge");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("unique metric");
        let build_info = IntGauge::with_opts(
            Opts::new(
                "gateway_build_info",
                "Build information; the value is always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid gauge");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info.set(1);
        let store_connected = IntGauge::new(
            "gateway_store_connected",
            "1 while the shared state store is connected and synchronized.",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(store_connected.clone()))
            .expect("unique metric");
        Metrics {
            store_unavailable: counter(
                &registry,
                "gateway_store_unavailable_total",
                "Uses of the state store while it was unreachable, by operation and mode.",
                &["operation", "mode"],
            ),
            store_connected,
            revoked_tokens: counter(
                &registry,
                "gateway_revoked_tokens_total",
                "Revoked tokens presented, by token type.",
                &["type"],
            ),
            connections_rejected: counter(
                &registry,
                "gateway_connections_rejected_total",
                "Connections closed at accept by a connection limit, by listener and reason.",
                &["listener", "reason"],
            ),
            login_limited: counter(
                &registry,
                "gateway_login_limited_total",
                "Logins refused by brute-force limits, by limit.",
                &["limit"],
            ),
            requests: counter(
                &registry,
                "gateway_requests_total",
                "Requests answered, by route, method and status class.",
                &["route", "method", "status_class"],
            ),
            request_duration: histogram(
                &registry,
                "gateway_request_duration_seconds",
                "Time from request to response head, by route.",
                &["route"],
            ),
            upstream_duration: histogram(
                &registry,
                "gateway_upstream_duration_seconds",
                "Time from forwarding to the upstream's response head, by upstream.",
                &["upstream"],
            ),
            auth_failures: counter(
                &registry,
                "gateway_auth_failures_total",
                "Requests refused by authentication or policy, by reason.",
                &["reason"],
            ),
            login_attempts: counter(
                &registry,
                "gateway_login_attempts_total",
                "Login attempts, by outcome.",
                &["outcome"],
            ),
            open_connections,
            tls_handshake_failures: counter(
                &registry,
                "gateway_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, by listener.",
                &["listener"],
            ),
            upstream_errors: counter(
                &registry,
                "gateway_upstream_errors_total",
                "Upstream requests that failed, by upstream and kind.",
                &["upstream", "kind"],
            ),
            config_reloads: counter(
                &registry,
                "gateway_config_reloads_total",
                "Configuration reloads, by outcome.",
                &["outcome"],
            ),
            build_info,
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A bounded method label: the standard methods, else `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `2xx`, `4xx`... for a status.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
