//! The upstream connection pool (`gateway::pool`) over real sockets: connections are
//! reused, a connection whose response was abandoned is never reused, and an upstream
//! that closes its kept-alive connections costs no failed requests.

mod security_support;
mod support;

use std::time::Duration;

use security_support::{get_json, security_yaml, within, RawUpstream, Recorder};
use support::{Gateway, Upstream};

/// A complete keep-alive response (no `Connection: close`).
const REPLY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

/// Idle and read timeouts long enough not to interfere.
const SERVER: &[(&str, &str)] = &[
    ("idle_timeout", "30s"),
    ("header_read_timeout", "10s"),
    ("body_read_timeout", "10s"),
];

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&security_yaml(&recorder.url(), false, SERVER)).await;
    let client = gw.client_http1();
    for i in 0..20 {
        let response = within(
            10,
            "GET",
            client.get(gw.url(&format!("/public?n={i}"))).send(),
        )
        .await
        .expect("response");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
    }
    assert_eq!(recorder.count(), 20);
    assert_eq!(
        recorder.connections(),
        1,
        "20 sequential requests should reuse one kept-alive upstream connection"
    );
}

#[tokio::test]
async fn a_connection_whose_response_was_abandoned_is_not_reused() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&security_yaml(&upstream.url(), false, SERVER)).await;
    let client = gw.client_http1();
    // 8 MiB in 64 KiB chunks, slowly: the client reads one chunk and leaves.
    let mut response = within(
        10,
        "GET /stream",
        client
            .get(gw.url("/stream?bytes=8388608&chunk=65536&delay_ms=5"))
            .send(),
    )
    .await
    .expect("stream response");
    assert_eq!(response.status(), 200);
    let first = within(10, "first chunk", response.chunk())
        .await
        .expect("chunk");
    assert!(first.is_some_and(|c| !c.is_empty()));
    drop(response);
    drop(client);
    // Had the half-read connection gone back to the pool, the next requests would read
    // the rest of the stream as their response.
    let client = gw.client_http1();
    for _ in 0..10 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
    }
}

#[tokio::test]
async fn an_upstream_closing_kept_alive_connections_costs_no_requests() {
    // Each connection answers one request, without `Connection: close`, then closes:
    // the gateway keeps it as idle and must notice, or send again when it loses the race.
    let upstream = RawUpstream::start(REPLY).await;
    let gw = Gateway::start(&security_yaml(&upstream.url(), false, SERVER)).await;
    let client = gw.client_http1();
    for i in 0..30 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body["ok"], true);
        if i % 10 == 0 {
            // Also after the closed connection has sat idle for a while.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        upstream.heads().len(),
        30,
        "each request reached the upstream once"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_closed_as_it_is_reused_is_retried_only_when_safe() {
    // The upstream reads the second request on a connection and closes without an
    // answer: what a request sent just as the upstream closes an idle connection sees.
    let upstream = RawUpstream::start_closing_on_reuse(REPLY).await;
    let gw = Gateway::start(&security_yaml(&upstream.url(), false, SERVER)).await;
    let client = gw.client_http1();
    // Opens the connection; it goes back to the pool.
    assert_eq!(get_json(&gw, &client, "/health").await.0, 200);
    // Reuses it, the upstream closes it: a GET is sent again on a new connection.
    let (status, body) = get_json(&gw, &client, "/health").await;
    assert_eq!(status, 200, "{body}");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 3, "first, lost, retried: {heads:?}");
    // A POST with a body is never sent twice: the client gets the failure.
    let response = within(
        10,
        "POST",
        client.post(gw.url("/small")).body("{\"a\":1}").send(),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), 502);
    let heads = upstream.heads();
    assert_eq!(
        heads.iter().filter(|h| h.starts_with("POST")).count(),
        1,
        "the POST reached the upstream once: {heads:?}"
    );
}
