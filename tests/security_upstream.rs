//! Security tests of upstream faults: refused and reset connections, broken framing,
//! slow upstreams, retries, passive health, client disconnects and an upstream restart
//! under load. Every test checks what the client saw and what the upstream received.

mod security_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use security_support::{
    closed_port, edit, eventually, get_json, security_yaml, within, FixedUpstream, RawConn,
    RawUpstream, Recorder,
};
use support::{status_json, Gateway};

/// Timeouts long enough that pooled client connections are never closed under a test.
const SERVER: &[(&str, &str)] = &[
    ("idle_timeout", "30s"),
    ("header_read_timeout", "10s"),
    ("body_read_timeout", "10s"),
];

/// The base upstream section of the harness config.
const UPSTREAM_TIMEOUTS: &str = "    connect_timeout: 1s\n    timeout: 2s\n";

/// The TLS test config in front of `url`.
fn yaml(url: &str) -> String {
    security_yaml(url, false, SERVER)
}

/// The TLS test config whose upstream has several `urls` and extra settings `extra`
/// (YAML lines indented by four spaces).
fn yaml_multi(urls: &[String], extra: &str) -> String {
    let base = yaml("http://placeholder.invalid:1");
    edit(
        &base,
        &format!("    url: http://placeholder.invalid:1\n{UPSTREAM_TIMEOUTS}"),
        &format!(
            "    urls: [{}]\n{UPSTREAM_TIMEOUTS}{extra}",
            urls.join(", ")
        ),
    )
}

/// A sample of `gateway_upstream_errors_total` for the test upstream.
fn upstream_errors(kind: &str) -> String {
    format!(r#"gateway_upstream_errors_total{{kind="{kind}",upstream="properties"}}"#)
}

#[tokio::test]
async fn refused_connection_gets_502_quickly() {
    let port = closed_port();
    let gw = Gateway::start(&yaml(&format!("http://127.0.0.1:{port}"))).await;
    let client = gw.client();
    let started = Instant::now();
    let (status, body) = within(
        10,
        "GET to a closed upstream",
        get_json(&gw, &client, "/health"),
    )
    .await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (502, Some("Upstream unavailable"))
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // A GET without a body is retried once: two connection attempts, neither got far.
    assert_eq!(gw.metric(&upstream_errors("connect")).await, 2.0);

    let response = within(
        10,
        "POST to a closed upstream",
        client.post(gw.url("/public")).body("payload").send(),
    )
    .await
    .expect("request");
    let (status, body) = status_json(response).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (502, Some("Upstream unavailable"))
    );
    assert_eq!(
        gw.metric(&upstream_errors("connect")).await,
        3.0,
        "a request with a body is not retried"
    );
    // Nothing listens there: the port is still free.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[tokio::test]
async fn reset_mid_response_never_looks_complete() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .await;
    let gw = Gateway::start(&yaml(&upstream.url())).await;
    for (name, client) in [("h2", gw.client()), ("http/1.1", gw.client_http1())] {
        let response = within(30, "GET", client.get(gw.url("/health")).send())
            .await
            .unwrap_or_else(|e| panic!("{name}: the head was sent, so a response: {e}"));
        let status = response.status().as_u16();
        assert!(
            status == 200 || status == 502,
            "{name}: the upstream's head or a 502, got {status}"
        );
        if status == 200 {
            let body = within(30, "body", response.bytes()).await;
            assert!(
                body.is_err(),
                "{name}: a truncated body must fail to read, got {} bytes",
                body.map(|b| b.len()).unwrap_or_default()
            );
        }
    }
    let heads = upstream.heads();
    assert_eq!(
        heads.len(),
        2,
        "one request per client, never retried: {heads:?}"
    );
    assert!(heads
        .iter()
        .all(|h| h.starts_with("GET /health HTTP/1.1\r\n")));
}

/// The upstream answers with `reply`: the client gets 502 JSON, the upstream got the
/// request exactly once.
async fn assert_bad_upstream_framing(reply: &'static [u8]) {
    let upstream = RawUpstream::start(reply).await;
    let gw = Gateway::start(&yaml(&upstream.url())).await;
    let client = gw.client();
    let response = within(30, "GET", client.get(gw.url("/health")).send())
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = within(30, "body", response.bytes()).await;
    let text = body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|e| format!("<body error: {e}>"));
    assert_eq!(
        status,
        502,
        "upstream reply {:?} must give 502, the client got {status} with body {text:?}",
        String::from_utf8_lossy(reply)
    );
    let json: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(json["msg"], "Upstream unavailable");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 1, "asked once: {heads:?}");
    assert!(gw.metric(&upstream_errors("protocol")).await >= 1.0);
}

#[tokio::test]
async fn upstream_invalid_content_length_gets_502() {
    assert_bad_upstream_framing(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello").await;
}

#[tokio::test]
async fn upstream_conflicting_content_lengths_get_502() {
    assert_bad_upstream_framing(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
}

#[tokio::test]
/// hyper's client follows RFC 9112 section 6.3 here rather than failing: Transfer-Encoding
/// wins and Content-Length is dropped. The gateway re-frames the response for the client,
/// so the client reads exactly the chunked-decoded body and nothing can desync it.
async fn upstream_content_length_with_transfer_encoding_is_reframed() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    let gw = Gateway::start(&yaml(&upstream.url())).await;
    let client = gw.client_http1();
    let response = within(30, "GET", client.get(gw.url("/health")).send())
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-length")
            .is_none_or(|v| v == "3"),
        "{:?}",
        response.headers()
    );
    let body = within(30, "body", response.bytes())
        .await
        .expect("a complete body");
    assert_eq!(
        &body[..],
        b"abc",
        "the chunked framing wins; Content-Length: 5 is ignored"
    );
    assert_eq!(upstream.heads().len(), 1, "asked once");
}

#[tokio::test]
async fn slow_upstream_gets_504_after_route_timeout() {
    let recorder = Recorder::start().await;
    let config = edit(
        &yaml(&recorder.url()),
        "    timeout: 2s\n",
        "    timeout: 500ms\n",
    );
    let gw = Gateway::start(&config).await;
    let client = gw.client();
    let (status, body) = within(
        10,
        "GET /slow",
        get_json(&gw, &client, "/slow?delay_ms=5000"),
    )
    .await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (504, Some("Upstream timed out"))
    );
    assert_eq!(gw.metric(&upstream_errors("timeout")).await, 1.0);
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "sent once, not retried: {seen:?}");
    assert_eq!(seen[0].target, "/slow?delay_ms=5000");
    // The gateway gave up on it: the upstream's handler is dropped, not left running.
    eventually(10, "the upstream request is cancelled", || {
        let s = &recorder.seen()[0];
        assert!(!s.answered, "the upstream finished the request: {s:?}");
        s.cancelled
    })
    .await;
}

#[tokio::test]
async fn retries_only_idempotent_bodiless_requests() {
    let recorder = Recorder::start().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    // max_failures: 0 keeps the dead instance in rotation for the whole test.
    let gw = Gateway::start(&yaml_multi(
        &[dead, recorder.url()],
        "    max_failures: 0\n",
    ))
    .await;
    let client = gw.client();
    for i in 0..6 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(
            status, 200,
            "GET {i} is retried on the live instance: {body}"
        );
    }
    let retried = gw.metric(&upstream_errors("connect")).await;
    assert!(
        retried >= 1.0,
        "the dead instance was picked (and retried past)"
    );

    let mut outcomes = Vec::new();
    for i in 0..4 {
        let body = format!("post-{i}");
        let response = within(
            30,
            "POST",
            client.post(gw.url("/public")).body(body.clone()).send(),
        )
        .await
        .expect("request");
        let (status, json) = status_json(response).await;
        if status == 502 {
            assert_eq!(json["msg"], "Upstream unavailable");
        } else {
            assert_eq!(status, 200, "{json}");
        }
        outcomes.push((body, status));
    }
    assert!(
        outcomes.iter().any(|(_, s)| *s == 502),
        "a POST that met the dead instance fails: {outcomes:?}"
    );
    let posts: Vec<String> = recorder
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .map(|s| String::from_utf8(s.body).expect("utf-8"))
        .collect();
    let succeeded: Vec<String> = outcomes
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(b, _)| b.clone())
        .collect();
    assert_eq!(
        posts, succeeded,
        "the upstream got each successful POST once and no failed POST (no retry)"
    );
    assert_eq!(
        recorder.with_path("/health").len(),
        6,
        "every GET arrived once"
    );
}

#[tokio::test]
async fn passive_health_skips_a_failing_instance_until_cooldown() {
    const COOLDOWN: Duration = Duration::from_secs(4);
    let recorder = Recorder::start().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let gw = Gateway::start(&yaml_multi(
        &[dead, recorder.url()],
        "    max_failures: 2\n    cooldown: 4s\n",
    ))
    .await;
    let client = gw.client();
    let errors = upstream_errors("connect");
    let mut gets = 0;
    // Until the dead instance has failed max_failures times (each GET is retried).
    while gw.metric(&errors).await < 2.0 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(status, 200, "{body}");
        gets += 1;
        assert!(gets <= 10, "the dead instance was never picked");
    }
    let skipped_since = Instant::now();
    assert_eq!(gw.metric(&errors).await, 2.0);

    // During the cooldown it is skipped: no errors, every GET goes to the live one.
    let mut during = 0;
    while skipped_since.elapsed() < COOLDOWN / 2 && during < 20 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(status, 200, "{body}");
        during += 1;
        gets += 1;
    }
    assert!(
        during >= 3,
        "too few requests in the cooldown to tell ({during})"
    );
    assert_eq!(
        gw.metric(&errors).await,
        2.0,
        "the dead instance is not tried during its cooldown"
    );

    // After the cooldown it is tried again.
    tokio::time::sleep(
        COOLDOWN.saturating_sub(skipped_since.elapsed()) + Duration::from_millis(300),
    )
    .await;
    let mut after = 0;
    while gw.metric(&errors).await < 3.0 {
        let (status, body) = get_json(&gw, &client, "/health").await;
        assert_eq!(status, 200, "{body}");
        gets += 1;
        after += 1;
        assert!(
            after <= 4,
            "the dead instance was never tried again after its cooldown"
        );
    }
    assert_eq!(
        recorder.with_path("/health").len(),
        gets,
        "every GET arrived once"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&security_yaml(&recorder.url(), true, SERVER)).await;
    let open = r#"gateway_open_connections{listener="test"}"#;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /slow?delay_ms=3000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    eventually(10, "the request reaches the upstream", || {
        recorder.count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.metric(open).await, 1.0);
    drop(conn);

    eventually(10, "the upstream request is cancelled", || {
        let s = &recorder.seen()[0];
        assert!(
            !s.answered,
            "the upstream request ran to completion after the client left: {s:?}"
        );
        s.cancelled
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.metric(open).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the client connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The gateway is fine afterwards.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(conn.expect_response(10).await.status, 200);
    assert_eq!(recorder.count(), 2);
}

/// One request of the restart test.
#[derive(Debug)]
struct Sample {
    started: Instant,
    ended: Instant,
    /// The status, or the transport error.
    outcome: Result<u16, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_kill_and_restart_under_load() {
    let port = closed_port();
    let mut first = Some(
        tokio::task::spawn_blocking(move || FixedUpstream::start(port))
            .await
            .expect("start"),
    );
    let gw = Arc::new(Gateway::start(&yaml(&format!("http://127.0.0.1:{port}"))).await);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (gw, samples, stop) = (gw.clone(), samples.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let client = gw.client();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let outcome = match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.get(gw.url("/health")).send(),
                )
                .await
                {
                    Err(_) => Err("no answer within 10s".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(response)) => {
                        let status = response.status().as_u16();
                        match tokio::time::timeout(Duration::from_secs(10), response.bytes()).await
                        {
                            Ok(Ok(body)) if status != 200 => {
                                let msg = serde_json::from_slice::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["msg"].as_str().map(str::to_owned));
                                if msg.is_some() {
                                    Ok(status)
                                } else {
                                    Err(format!("{status} without a JSON msg"))
                                }
                            }
                            Ok(Ok(_)) => Ok(status),
                            Ok(Err(e)) => Err(format!("{status} then body error {e}")),
                            Err(_) => Err(format!("{status} then no body within 10s")),
                        }
                    }
                };
                samples.lock().unwrap().push(Sample {
                    started,
                    ended: Instant::now(),
                    outcome,
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    let mut old = first.take().expect("running");
    tokio::task::spawn_blocking(move || old.stop())
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = tokio::task::spawn_blocking(move || FixedUpstream::start(port))
        .await
        .expect("restart on the same port");
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        within(30, "load workers", w).await.expect("worker");
    }
    drop(second);

    let samples = samples.lock().unwrap();
    let margin = Duration::from_millis(500);
    let failures: Vec<&Sample> = samples.iter().filter(|s| s.outcome != Ok(200)).collect();
    for s in &failures {
        assert!(
            matches!(s.outcome, Ok(502) | Ok(504)),
            "a failed request gets 502 or 504, never a hang or another status: {s:?}"
        );
        assert!(
            s.ended >= stopped_at && s.started <= restarted_at + margin,
            "failures only while the upstream is down: {s:?} (stopped at +{:?}, restarted at +{:?})",
            stopped_at.duration_since(samples[0].started),
            restarted_at.duration_since(samples[0].started),
        );
    }
    let before = samples.iter().filter(|s| s.ended < stopped_at).count();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > restarted_at + margin)
        .collect();
    assert!(before > 0, "requests ran before the stop");
    assert!(
        !failures.is_empty(),
        "requests failed while the upstream was down"
    );
    assert!(
        !after.is_empty() && after.iter().all(|s| s.outcome == Ok(200)),
        "requests succeed again after the restart: {after:?}"
    );
}

/// Requests whose *client* body fails (too slow, too large) are the client's fault: they
/// must not count as upstream failures, or any client could take healthy instances out of
/// rotation. Three instances, `max_failures: 1`: a 408 (picked instance A) and a 413
/// (picked instance B) must leave all three serving.
#[tokio::test]
async fn client_body_errors_are_not_upstream_failures() {
    let instances = [
        Recorder::start().await,
        Recorder::start().await,
        Recorder::start().await,
    ];
    let urls: Vec<String> = instances.iter().map(Recorder::url).collect();
    let config = edit(
        &security_yaml("http://placeholder.invalid:1", true, &[]),
        &format!("    url: http://placeholder.invalid:1\n{UPSTREAM_TIMEOUTS}"),
        &format!(
            "    urls: [{}]\n{UPSTREAM_TIMEOUTS}    max_failures: 1\n    cooldown: 60s\n",
            urls.join(", ")
        ),
    );
    let gw = Gateway::start(&config).await;

    // A body that stalls: 408.
    let mut conn = RawConn::connect(gw.addr).await;
    let mut slow =
        b"POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n".to_vec();
    slow.extend(std::iter::repeat_n(b'z', 50));
    conn.send(&slow).await;
    let response = conn.expect_response(10).await;
    assert_eq!(response.status, 408);
    assert_eq!(response.msg(), "Request body not received in time");
    // A chunked body over the route limit: 413.
    let mut conn = RawConn::connect(gw.addr).await;
    let mut big =
        b"POST /small HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        big.extend_from_slice(b"200\r\n");
        big.extend(std::iter::repeat_n(b'y', 512));
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    conn.send(&big).await;
    let response = conn.expect_response(10).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.msg(), "Request body too large");
    assert!(
        instances
            .iter()
            .flat_map(Recorder::seen)
            .all(|s| !s.complete),
        "no incomplete body was completed upstream"
    );

    let errors = gw.metric(&upstream_errors("protocol")).await
        + gw.metric(&upstream_errors("connect")).await
        + gw.metric(&upstream_errors("timeout")).await;
    // All three instances stay in rotation: six GETs are spread over them.
    for _ in 0..6 {
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        assert_eq!(conn.expect_response(10).await.status, 200);
    }
    let gets: Vec<usize> = instances
        .iter()
        .map(|r| r.seen().iter().filter(|s| s.method == "GET").count())
        .collect();
    assert_eq!(
        (errors, gets),
        (0.0, vec![2, 2, 2]),
        "(upstream errors counted, GETs per instance): client body errors must neither \
         count as upstream errors nor take instances out of rotation"
    );
}
