//! Security tests of the HTTP layer, over raw TCP to a plaintext listener: size and time
//! limits, connection limits, request framing (smuggling vectors), header hygiene and path
//! normalization. Every test checks what the client saw and what the upstream (an
//! in-process recorder) did or did not receive.

mod security_support;
mod support;

use std::time::Duration;

use security_support::{
    security_yaml, token, RawConn, RawResponse, Recorder, Seen, SMALL_ROUTE_LIMIT,
};
use support::Gateway;

/// A recorder upstream and a plaintext gateway in front of it, with `server` overrides.
async fn setup(server: &[(&str, &str)]) -> (Recorder, Gateway) {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&security_yaml(&recorder.url(), true, server)).await;
    (recorder, gw)
}

/// Send `request` on a new connection and read one response (10 s deadline).
async fn exchange(gw: &Gateway, request: &[u8]) -> (Option<RawResponse>, RawConn) {
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(request).await;
    let response = conn.response(10).await;
    (response, conn)
}

/// Send `request` and expect a complete response.
async fn exchange_ok(gw: &Gateway, request: &[u8]) -> RawResponse {
    let (response, conn) = exchange(gw, request).await;
    response.unwrap_or_else(|| {
        panic!(
            "no response to {:?}; received {:?}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(conn.leftover())
        )
    })
}

/// `GET {target} HTTP/1.1` with `Host: localhost` and `extra` header lines.
fn get(target: &str, extra: &[&str]) -> Vec<u8> {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// `Authorization: Bearer <valid token of test@example.com>`.
fn bearer() -> String {
    format!(
        "Authorization: Bearer {}",
        token("test@example.com", &["user"])
    )
}

/// Give the gateway a moment to forward anything it (wrongly) would, then return what
/// the upstream has seen.
async fn settled(recorder: &Recorder) -> Vec<Seen> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    recorder.seen()
}

/// Send `request` and assert the gateway's own `status` with `msg`, nothing forwarded.
async fn assert_gateway_refusal(
    gw: &Gateway,
    recorder: &Recorder,
    request: &[u8],
    status: u16,
    msg: &str,
) {
    let response = exchange_ok(gw, request).await;
    assert_eq!(response.status, status);
    assert_eq!(response.msg(), msg);
    assert!(settled(recorder).await.is_empty(), "nothing is forwarded");
}

/// Send `request`, assert a 200 and that it is the only request the upstream saw.
async fn forwarded_alone(gw: &Gateway, recorder: &Recorder, request: &[u8]) -> Seen {
    let response = exchange_ok(gw, request).await;
    assert_eq!(response.status, 200);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_head_gets_431_and_is_not_forwarded() {
    let (recorder, gw) = setup(&[("max_header_bytes", "8192")]).await;
    let big = format!("X-Big: {}", "a".repeat(10_000));
    let (response, _conn) = exchange(&gw, &get("/public", &[&big])).await;
    let response = response.expect("a 431 response");
    assert_eq!(response.status, 431, "{response:?}");
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");

    // The limit is the configured one: a 4000-byte header passes.
    let fine = format!("X-Big: {}", "b".repeat(4000));
    let response = exchange_ok(&gw, &get("/public", &[&fine])).await;
    assert_eq!(response.status, 200);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "only the small request arrives: {seen:?}");
    assert_eq!(seen[0].header("x-big").len(), 4000);
}

#[tokio::test]
async fn too_many_headers_gets_431_and_is_not_forwarded() {
    let (recorder, gw) = setup(&[("max_headers", "20")]).await;
    let lines: Vec<String> = (0..30).map(|i| format!("X-H{i}: v")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (response, _conn) = exchange(&gw, &get("/public", &lines)).await;
    let response = response.expect("a 431 response");
    assert_eq!(response.status, 431, "{response:?}");
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");

    let seen = forwarded_alone(&gw, &recorder, &get("/public", &lines[..10])).await;
    assert_eq!(seen.header("x-h9"), "v");
}

#[tokio::test]
async fn uri_over_max_uri_bytes_gets_414_json() {
    let (recorder, gw) = setup(&[("max_uri_bytes", "1024")]).await;
    let long = format!("/public?q={}", "a".repeat(2000));
    assert_gateway_refusal(
        &gw,
        &recorder,
        &get(&long, &[]),
        414,
        "Request target too long",
    )
    .await;

    let fine = format!("/public?q={}", "a".repeat(500));
    let seen = forwarded_alone(&gw, &recorder, &get(&fine, &[])).await;
    assert_eq!(seen.target, format!("/echo?q={}", "a".repeat(500)));
}

#[tokio::test]
async fn body_over_route_limit_with_content_length_gets_413_before_forwarding() {
    let (recorder, gw) = setup(&[]).await;
    // Only the head is sent: the answer must come from Content-Length alone.
    let head = format!(
        "POST /small HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        SMALL_ROUTE_LIMIT * 4
    );
    assert_gateway_refusal(
        &gw,
        &recorder,
        head.as_bytes(),
        413,
        "Request body too large",
    )
    .await;

    // At the limit it is forwarded whole.
    let mut request = format!(
        "POST /small HTTP/1.1\r\nHost: localhost\r\nContent-Length: {SMALL_ROUTE_LIMIT}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'x', SMALL_ROUTE_LIMIT));
    let seen = forwarded_alone(&gw, &recorder, &request).await;
    assert!(seen.complete);
    assert_eq!(seen.body.len(), SMALL_ROUTE_LIMIT);
}

#[tokio::test]
async fn chunked_body_over_route_limit_gets_413_while_streaming() {
    let (recorder, gw) = setup(&[]).await;
    let mut request =
        b"POST /small HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b'y', 512));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = exchange_ok(&gw, &request).await;
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.msg(), "Request body too large");
    for seen in settled(&recorder).await {
        assert!(
            !seen.complete && seen.body.len() <= SMALL_ROUTE_LIMIT,
            "the upstream must never get the complete over-limit body: complete={} bytes={}",
            seen.complete,
            seen.body.len()
        );
    }
}

#[tokio::test]
async fn slow_body_gets_408_after_body_read_timeout() {
    let (recorder, gw) = setup(&[("body_read_timeout", "500ms")]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    let mut request =
        b"POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'z', 50));
    conn.send(&request).await;
    // ...and the other 50 bytes never come.
    let response = conn.expect_response(10).await;
    assert_eq!(response.status, 408);
    assert_eq!(response.msg(), "Request body not received in time");
    for seen in settled(&recorder).await {
        assert!(
            !seen.complete && seen.body.len() <= 50,
            "the upstream never gets a complete body: {seen:?}"
        );
    }
}

#[tokio::test]
async fn half_sent_head_is_disconnected_after_header_read_timeout() {
    let (recorder, gw) = setup(&[("header_read_timeout", "500ms"), ("idle_timeout", "30s")]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /public HTTP/1.1\r\nHost: loc").await;
    assert!(
        conn.closed_within(10).await,
        "a client that never finishes its head is disconnected"
    );
    let received = String::from_utf8_lossy(conn.leftover()).into_owned();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "at most a 408 before closing: {received:?}"
    );
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

#[tokio::test]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let (recorder, gw) = setup(&[("header_read_timeout", "500ms"), ("idle_timeout", "30s")]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    assert!(
        conn.closed_within(10).await,
        "a connection that never sends a byte is closed"
    );
    assert!(conn.leftover().is_empty(), "nothing is sent to it");
    assert!(settled(&recorder).await.is_empty());
}

#[tokio::test]
async fn request_whose_first_byte_arrives_alone_is_served() {
    // "P" could begin HTTP/2's preface ("PRI * HTTP/2.0...") or a POST: the gateway
    // waits for the byte that tells them apart.
    let (recorder, gw) = setup(&[]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"P").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.send(b"OST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    let response = conn.expect_response(10).await;
    assert_eq!(response.status, 200);
    let seen = settled(&recorder).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].body.as_slice()),
        ("POST", &b"hi"[..])
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_a_plain_listener() {
    let (recorder, gw) = setup(&[]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("client");
    let response = client
        .get(format!("http://{}/public", gw.addr))
        .send()
        .await
        .expect("HTTP/2 response");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(settled(&recorder).await.len(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (recorder, gw) = setup(&[("idle_timeout", "500ms"), ("header_read_timeout", "30s")]).await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(&get("/public", &[])).await;
    let response = conn.expect_response(10).await;
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"));
    assert!(
        conn.closed_within(10).await,
        "an idle keep-alive connection is closed by the gateway"
    );
    assert!(conn.leftover().is_empty(), "nothing else is sent");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "exactly the one request arrives: {seen:?}");
    assert_eq!(seen[0].path, "/echo");
}

#[tokio::test]
async fn tls_handshake_timeout_closes_a_silent_connection() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&security_yaml(
        &recorder.url(),
        false,
        &[("tls_handshake_timeout", "500ms")],
    ))
    .await;
    let failures = r#"gateway_tls_handshake_failures_total{listener="test"}"#;
    assert_eq!(gw.metric(failures).await, 0.0);
    let mut conn = RawConn::connect(gw.addr).await;
    assert!(
        conn.closed_within(10).await,
        "a TCP connection that never starts TLS is closed"
    );
    assert!(conn.leftover().is_empty(), "nothing is sent to it");
    assert_eq!(gw.metric(failures).await, 1.0);
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

/// Open two connections and wait until the gateway has accepted both.
async fn two_open_connections(gw: &Gateway) -> (RawConn, RawConn) {
    let first = RawConn::connect(gw.addr).await;
    let second = RawConn::connect(gw.addr).await;
    let open = r#"gateway_open_connections{listener="test"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.metric(open).await != 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (first, second)
}

/// With two connections open, a third is closed at accept (counted under `rejected`),
/// nothing is forwarded and the first still works. Returns the two open connections.
async fn third_connection_is_rejected(
    gw: &Gateway,
    recorder: &Recorder,
    rejected: &str,
) -> (RawConn, RawConn) {
    assert_eq!(gw.metric(rejected).await, 0.0);
    let (mut first, second) = two_open_connections(gw).await;

    let mut third = RawConn::connect(gw.addr).await;
    third.send(&get("/public", &[])).await;
    assert!(
        third.closed_within(5).await,
        "the third connection is closed at once"
    );
    assert!(third.leftover().is_empty(), "and gets no HTTP answer");
    assert_eq!(gw.metric(rejected).await, 1.0);
    assert!(settled(recorder).await.is_empty(), "nothing is forwarded");

    // The accepted connections still work.
    first.send(&get("/public", &[])).await;
    assert_eq!(first.expect_response(10).await.status, 200);
    assert_eq!(recorder.count(), 1);
    (first, second)
}

#[tokio::test]
async fn third_connection_from_one_ip_is_closed_at_accept() {
    let (recorder, gw) = setup(&[
        ("max_connections_per_ip", "2"),
        ("header_read_timeout", "30s"),
        ("idle_timeout", "30s"),
    ])
    .await;
    let rejected = r#"gateway_connections_rejected_total{listener="test",reason="ip_limit"}"#;
    let _open = third_connection_is_rejected(&gw, &recorder, rejected).await;
    assert_eq!(
        gw.metric(r#"gateway_connections_rejected_total{listener="test",reason="total_limit"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_accept() {
    let (recorder, gw) = setup(&[
        ("max_connections", "2"),
        ("header_read_timeout", "30s"),
        ("idle_timeout", "30s"),
    ])
    .await;
    let rejected = r#"gateway_connections_rejected_total{listener="test",reason="total_limit"}"#;
    let (_first, second) = third_connection_is_rejected(&gw, &recorder, rejected).await;

    // Closing one frees its slot.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = RawConn::connect(gw.addr).await;
        again.send(&get("/public", &[])).await;
        if let Some(r) = again.response(10).await {
            assert_eq!(r.status, 200);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorder.count(), 2);
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// Assert the request was refused with 400 by the HTTP layer or the gateway and the
/// connection closed, and that nothing reached the upstream.
async fn assert_refused_400(gw: &Gateway, recorder: &Recorder, request: &[u8]) {
    let (response, mut conn) = exchange(gw, request).await;
    let seen = settled(recorder).await;
    let response = response.unwrap_or_else(|| {
        panic!(
            "expected 400 for {:?}, the connection closed without a response; upstream saw {seen:?}",
            String::from_utf8_lossy(request)
        )
    });
    assert_eq!(
        response.status,
        400,
        "request {:?} got {response:?}; upstream saw {seen:?}",
        String::from_utf8_lossy(request)
    );
    assert!(
        conn.closed_within(10).await,
        "the connection is closed after a framing error"
    );
    assert!(seen.is_empty(), "nothing is forwarded: {seen:?}");
}

#[tokio::test]
/// hyper follows RFC 9112 section 6.3 for a request with both Content-Length and
/// Transfer-Encoding rather than answering 400: the chunked framing wins, Content-Length
/// is dropped, the request is re-framed for the upstream and the connection is closed
/// after the response. What matters holds: bytes that a Content-Length reader would take
/// for a second request are never forwarded.
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (response, mut conn) = exchange(&gw, request).await;
    let seen = settled(&recorder).await;
    if let Some(r) = &response {
        assert!(
            r.status == 400 || r.status == 200,
            "{r:?}; upstream saw {seen:?}"
        );
    }
    assert!(
        conn.closed_within(10).await,
        "the connection is closed after an ambiguous request"
    );
    assert!(seen.len() <= 1, "one request at most: {seen:?}");
    assert!(
        seen.iter()
            .all(|s| !s.target.contains("smuggled") && s.body.is_empty()),
        "the smuggled bytes reached the upstream: {seen:?}"
    );
}

#[tokio::test]
async fn two_different_content_lengths_are_refused() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_refused_400(&gw, &recorder, request).await;
}

#[tokio::test]
async fn malformed_content_length_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    let request =
        b"POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12abc\r\n\r\nhello world!";
    assert_refused_400(&gw, &recorder, request).await;
}

#[tokio::test]
async fn bad_chunk_size_is_refused_and_nothing_complete_is_forwarded() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let (response, mut conn) = exchange(&gw, request).await;
    let seen = settled(&recorder).await;
    match &response {
        Some(r) => assert_eq!(r.status, 400, "{r:?}; upstream saw {seen:?}"),
        None => assert!(conn.closed_within(10).await),
    }
    for s in &seen {
        assert!(!s.complete, "no complete body reaches the upstream: {s:?}");
        assert!(
            s.body.is_empty(),
            "no body byte reaches the upstream: {s:?}"
        );
    }
}

#[tokio::test]
async fn obs_fold_header_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n  continued\r\n\r\n";
    assert_refused_400(&gw, &recorder, request).await;
}

#[tokio::test]
async fn nul_byte_in_header_value_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"GET /public HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n";
    assert_refused_400(&gw, &recorder, request).await;
}

/// Every `Transfer-Encoding` the upstream saw is exactly `chunked` (hyper's framing).
fn assert_only_gateway_framing(seen: &Seen) {
    for te in seen.header_values("transfer-encoding") {
        assert_eq!(
            te, "chunked",
            "only the gateway's own framing reaches the upstream: {seen:?}"
        );
    }
}

#[tokio::test]
async fn chunked_request_is_reframed_upstream() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";
    let response = exchange_ok(&gw, request).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_bytes"], 11);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].complete);
    assert_eq!(seen[0].body, b"hello world");
    assert_only_gateway_framing(&seen[0]);
    if let Some(len) = seen[0].header_values("content-length").first() {
        assert_eq!(len, "11", "a length the gateway set must be the real one");
    }
}

#[tokio::test]
async fn gzip_chunked_transfer_encoding_is_refused_or_reframed() {
    let (recorder, gw) = setup(&[]).await;
    let request = b"POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let response = exchange_ok(&gw, request).await;
    let seen = settled(&recorder).await;
    match response.status {
        400 => assert!(
            seen.is_empty(),
            "refused, so nothing is forwarded: {seen:?}"
        ),
        200 => {
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_only_gateway_framing(&seen[0]);
            assert!(
                !seen[0]
                    .header_values("transfer-encoding")
                    .iter()
                    .any(|v| v.contains("gzip")),
                "the client's transfer coding is never forwarded as is: {seen:?}"
            );
        }
        other => panic!("expected 400 or a re-framed 200, got {other}: {response:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn h2c_upgrade_is_served_as_http1_and_not_forwarded() {
    let (recorder, gw) = setup(&[]).await;
    let request = get(
        "/public",
        &[
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ],
    );
    let response = exchange_ok(&gw, &request).await;
    assert!(
        response.status_line.starts_with("HTTP/1.1 200"),
        "served as plain HTTP/1.1, not switched: {response:?}"
    );
    assert!(response.header("upgrade").is_none(), "{response:?}");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    for name in ["connection", "upgrade", "http2-settings"] {
        assert!(
            seen[0].header_values(name).is_empty(),
            "{name} must not reach the upstream: {:?}",
            seen[0].headers
        );
    }
}

#[tokio::test]
async fn connection_nominating_authorization_cannot_bypass_auth() {
    let (recorder, gw) = setup(&[]).await;
    // Without a credential the nomination changes nothing.
    let response = exchange_ok(&gw, &get("/echo", &["Connection: Authorization"])).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.msg(), "Missing Authorization Header");
    // A bad credential is still checked.
    let response = exchange_ok(
        &gw,
        &get(
            "/echo",
            &["Connection: Authorization", "Authorization: Bearer abc"],
        ),
    )
    .await;
    assert_eq!(response.status, 422);
    assert_eq!(response.msg(), "Not enough segments");
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");

    // With a valid token the request is authenticated first; the nominated header is
    // then removed as hop-by-hop, and the identity headers carry the result.
    let response = exchange_ok(
        &gw,
        &get("/echo", &["Connection: Authorization", &bearer()]),
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("x-auth-subject"), "test@example.com");
    assert_eq!(seen[0].header("x-auth-roles"), "user");
    assert!(seen[0].header_values("authorization").is_empty());
}

/// Every header the upstream saw whose name, with `_` read as `-`, is `name`.
fn spellings(seen: &Seen, name: &str) -> Vec<(String, String)> {
    seen.headers
        .iter()
        .filter(|(n, _)| n.replace('_', "-").eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

#[tokio::test]
async fn identity_header_spoofing_never_reaches_upstream() {
    let (recorder, gw) = setup(&[]).await;
    let spoofed = [
        "X-AUTH-SUBJECT: admin@example.com",
        "x_auth_subject: admin@example.com",
        "X_Auth_Subject: admin@example.com",
        "X_Auth_Roles: admin",
        "x-auth-roles: admin",
        "X-Auth_Roles: admin",
        "Connection: X-Auth-Subject",
    ];
    let auth = bearer();
    let mut lines = spoofed.to_vec();
    lines.push(&auth);
    let response = exchange_ok(&gw, &get("/echo", &lines)).await;
    assert_eq!(response.status, 200);
    // On a public route nobody is authenticated: no identity at all reaches the upstream.
    let response = exchange_ok(&gw, &get("/public", &spoofed)).await;
    assert_eq!(response.status, 200);

    let seen = recorder.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let authenticated = &seen[0];
    assert_eq!(
        spellings(authenticated, "x-auth-subject"),
        [("x-auth-subject".to_owned(), "test@example.com".to_owned())],
        "only the gateway's subject: {:?}",
        authenticated.headers
    );
    assert_eq!(
        spellings(authenticated, "x-auth-roles"),
        [("x-auth-roles".to_owned(), "user".to_owned())],
        "only the gateway's roles: {:?}",
        authenticated.headers
    );
    let public = &seen[1];
    assert!(
        spellings(public, "x-auth-subject").is_empty()
            && spellings(public, "x-auth-roles").is_empty(),
        "no client identity on a public route: {:?}",
        public.headers
    );
}

#[tokio::test]
async fn missing_host_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    assert_gateway_refusal(
        &gw,
        &recorder,
        b"GET /public HTTP/1.1\r\n\r\n",
        400,
        "Missing Host header",
    )
    .await;
}

#[tokio::test]
async fn duplicate_host_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    assert_gateway_refusal(
        &gw,
        &recorder,
        b"GET /public HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
        400,
        "Multiple Host headers",
    )
    .await;
}

#[tokio::test]
async fn malformed_host_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    for host in ["a b", "user@evil", "user:pw@evil.example"] {
        let request = format!("GET /public HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let response = exchange_ok(&gw, request.as_bytes()).await;
        assert_eq!(response.status, 400, "Host: {host}: {response:?}");
        assert_eq!(response.msg(), "Invalid Host header", "Host: {host}");
    }
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

#[tokio::test]
async fn upstream_always_gets_its_configured_host() {
    let (recorder, gw) = setup(&[]).await;
    for host in ["localhost", "evil.example", "evil.example:666", "127.0.0.1"] {
        let request = format!("GET /public HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let response = exchange_ok(&gw, request.as_bytes()).await;
        assert_eq!(response.status, 200, "Host: {host}");
    }
    let seen = recorder.seen();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(s.header("host"), recorder.addr.to_string());
    }
}

#[tokio::test]
async fn absolute_form_target_still_needs_auth_and_goes_to_configured_upstream() {
    let (recorder, gw) = setup(&[]).await;
    let request = |extra: &[&str]| {
        let mut r =
            String::from("GET http://evil.example/properties HTTP/1.1\r\nHost: evil.example\r\n");
        for line in extra {
            r.push_str(line);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    assert_gateway_refusal(
        &gw,
        &recorder,
        &request(&[]),
        401,
        "Missing Authorization Header",
    )
    .await;

    let seen = forwarded_alone(&gw, &recorder, &request(&[&bearer()])).await;
    assert_eq!(seen.target, "/properties");
    assert_eq!(seen.header("host"), recorder.addr.to_string());
    assert_eq!(seen.header("x-auth-subject"), "test@example.com");
}

#[tokio::test]
async fn options_asterisk_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    assert_gateway_refusal(
        &gw,
        &recorder,
        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
        400,
        "Bad request path: must start with /",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

/// The answer to percent-encodings whose meaning differs between servers.
const AMBIGUOUS: &str = "Bad request path: ambiguous percent-encoding";

/// GET `target` with a valid token (so only the path can stop it): 400 JSON
/// `Bad request path: ...`, nothing forwarded.
async fn assert_path_refused(target: &str, msg: &str) {
    let (recorder, gw) = setup(&[]).await;
    let response = exchange_ok(&gw, &get(target, &[&bearer()])).await;
    assert_eq!(response.status, 400, "{target}: {response:?}");
    assert_eq!(response.msg(), msg, "{target}");
    assert!(
        settled(&recorder).await.is_empty(),
        "{target}: nothing is forwarded"
    );
    // The same request without the trick goes through, so the refusal is the path's.
    let response = exchange_ok(&gw, &get("/properties", &[&bearer()])).await;
    assert_eq!(response.status, 200);
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn encoded_slash_in_path_is_refused() {
    assert_path_refused("/properties%2f..", AMBIGUOUS).await;
}

#[tokio::test]
async fn encoded_backslash_in_path_is_refused() {
    assert_path_refused("/echo%5c..%5cadmin", AMBIGUOUS).await;
}

#[tokio::test]
async fn encoded_semicolon_in_path_is_refused() {
    assert_path_refused("/properties%3bjsessionid=x", AMBIGUOUS).await;
}

#[tokio::test]
async fn encoded_nul_in_path_is_refused() {
    assert_path_refused("/properties%00.json", AMBIGUOUS).await;
}

#[tokio::test]
async fn double_encoded_dot_in_path_is_refused() {
    assert_path_refused("/echo/%252e%252e/admin", AMBIGUOUS).await;
}

#[tokio::test]
async fn raw_backslash_in_path_is_refused() {
    let (recorder, gw) = setup(&[]).await;
    let (response, _conn) = exchange(&gw, &get("/echo\\..\\admin", &[&bearer()])).await;
    let response = response.expect("an answer");
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.msg(), "Bad request path: backslash");
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

#[tokio::test]
async fn dot_segments_are_forwarded_normalized() {
    let (recorder, gw) = setup(&[]).await;
    let response = exchange_ok(&gw, &get("/echo/a/../b", &[&bearer()])).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/echo/b");
    let response = exchange_ok(&gw, &get("/public/./x/%2e%2e/y//z", &[])).await;
    assert_eq!(response.status, 200);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].target, "/echo/b",
        "the upstream gets the normalized path"
    );
    assert_eq!(seen[1].target, "/echo/y/z");
}

#[tokio::test]
async fn dot_segments_are_authorized_on_the_normalized_path() {
    let (recorder, gw) = setup(&[]).await;
    // `/echo/x/../admin` is `/echo/admin`: the admin route's policy applies, not echo's.
    let response = exchange_ok(&gw, &get("/echo/x/../admin", &[&bearer()])).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.msg(), "Missing required role: admin");
    // And a public prefix cannot be used to climb into a protected one.
    assert_gateway_refusal(
        &gw,
        &recorder,
        &get("/public/../echo/admin", &[]),
        401,
        "Missing Authorization Header",
    )
    .await;

    let admin = format!(
        "Authorization: Bearer {}",
        support::sign_hs256(
            &serde_json::json!({"alg": "HS256"}),
            &{
                let mut c =
                    security_support::access_claims("admin@example.com", &["user", "admin"]);
                c["tenant"] = "acme".into();
                c
            },
            support::SECRET,
        )
    );
    let seen = forwarded_alone(&gw, &recorder, &get("/echo/x/../admin", &[&admin])).await;
    assert_eq!(seen.target, "/echo/admin");
    assert_eq!(seen.header("x-auth-subject"), "admin@example.com");
}
