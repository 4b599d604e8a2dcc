//! Forwarding over real sockets: TLS, HTTP/1.1 and HTTP/2, streaming, header hygiene,
//! forwarding headers and upstream failures.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode, Version};
use serde_json::{json, Value};

use support::{Gateway, Upstream};

/// 10 MiB, the size of the large-body tests.
const TEN_MIB: usize = 10 * 1024 * 1024;

/// Await `fut`, failing the test instead of hanging when it takes longer than `secs`.
async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs}s"))
}

/// Send a request with a 30 s deadline.
async fn send(request: reqwest::RequestBuilder) -> Response {
    within(30, "request", request.send())
        .await
        .expect("request reaches the gateway")
}

/// The JSON body of a response (with a deadline).
async fn json_body(response: Response) -> Value {
    within(30, "response body", response.json::<Value>())
        .await
        .expect("a JSON body")
}

/// The upstream and a gateway with the default test configuration.
async fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    (upstream, gw)
}

/// [`start`], plus an access token for the test user.
async fn start_logged_in() -> (Upstream, Gateway, String) {
    let (upstream, gw) = start().await;
    let token = gw.login("test@example.com", "password").await;
    (upstream, gw, token)
}

/// Send a 10 MiB upload with a 60 s deadline; assert it succeeded.
async fn upload(what: &str, request: reqwest::RequestBuilder) -> Response {
    let response = within(60, what, request.send()).await.expect("upload");
    assert_eq!(response.status(), 200);
    response
}

/// Assert a 200 response and return its JSON body.
async fn ok_json(response: Response) -> Value {
    assert_eq!(response.status(), 200);
    json_body(response).await
}

/// Assert a gateway 405 with `Allow: allow`.
async fn assert_not_allowed(response: Response, allow: &str) {
    assert_eq!(response.headers().get("allow").unwrap(), allow);
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
    )
    .await;
}

/// Every value the upstream's `/echo` saw for header `name`.
fn echoed(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("echo lists headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|pair| pair[1].as_str().expect("header value").to_owned())
        .collect()
}

/// The single value the upstream saw for `name`, failing when it saw none or several.
fn echoed_one(echo: &Value, name: &str) -> String {
    let values = echoed(echo, name);
    assert_eq!(
        values.len(),
        1,
        "upstream should see exactly one {name}, saw {values:?} in {echo}"
    );
    values.into_iter().next().unwrap()
}

/// A request body of `remaining` bytes produced chunk by chunk, with no known length.
struct Chunks {
    remaining: usize,
    chunk: Bytes,
}

impl Chunks {
    fn new(total: usize, chunk_size: usize) -> Chunks {
        Chunks {
            remaining: total,
            chunk: Bytes::from(vec![b'a'; chunk_size]),
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len());
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// A streamed (length-unknown) reqwest body of `total` bytes in 64 KiB chunks.
fn streamed_body(total: usize) -> reqwest::Body {
    reqwest::Body::wrap_stream(http_body_util::BodyDataStream::new(Chunks::new(
        total,
        64 * 1024,
    )))
}

/// Assert a gateway error response: `status`, JSON content type, body `{"msg": msg}`.
async fn assert_error(response: Response, status: StatusCode, msg: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let body = json_body(response).await;
    assert_eq!(body, json!({ "msg": msg }));
}

#[tokio::test]
async fn public_route_is_forwarded_over_tls() {
    let (_upstream, gw) = start().await;
    let response = gw.client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn authenticated_get_returns_upstream_list_and_query_is_forwarded_verbatim() {
    let (_upstream, gw, token) = start_logged_in().await;
    let client = gw.client();

    let response = send(client.get(gw.url("/properties")).bearer_auth(&token)).await;
    let all = ok_json(response).await;
    let all = all.as_array().expect("a JSON list");
    assert_eq!(all.len(), 5, "the seeded store has five listings: {all:?}");
    assert!(all
        .iter()
        .all(|p| p["id"].is_u64() && p["city"].is_string()));

    let response = send(
        client
            .get(gw.url("/properties?city=london"))
            .bearer_auth(&token),
    )
    .await;
    let london = ok_json(response).await;
    let london = london.as_array().expect("a JSON list");
    assert_eq!(london.len(), 2, "two London listings: {london:?}");
    assert!(london.iter().all(|p| p["city"] == "London"));

    // The query string reaches the upstream byte for byte: escapes, `+`, empty values,
    // repeated keys and a bare flag are not re-encoded or reordered.
    let query = "city=S%C3%A3o+Paulo&max_price=500000&tag=a&tag=b&empty=&flag";
    let response = send(
        client
            .get(gw.url(&format!("/echo?{query}")))
            .bearer_auth(&token),
    )
    .await;
    let echo = ok_json(response).await;
    assert_eq!(echo["query"], query);
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["method"], "GET");
}

#[tokio::test]
async fn post_creates_property_and_location_passes_through() {
    let (_upstream, gw, token) = start_logged_in().await;
    let client = gw.client();

    let new = json!({"title": "Loft", "city": "Paris", "price": 700000, "bedrooms": 2});
    let response = send(
        client
            .post(gw.url("/properties"))
            .bearer_auth(&token)
            .json(&new),
    )
    .await;
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .expect("Location passes through")
        .to_str()
        .unwrap()
        .to_owned();
    let created = json_body(response).await;
    let id = created["id"].as_u64().expect("an id");
    assert_eq!(location, format!("/properties/{id}"));
    assert_eq!(created["title"], "Loft");
    assert_eq!(created["city"], "Paris");

    // The new listing is really stored upstream.
    let response = send(client.get(gw.url(&location)).bearer_auth(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await["title"], "Loft");
}

#[tokio::test]
async fn ten_mib_chunked_request_body_streams_to_upstream_over_http1() {
    let (_upstream, gw, token) = start_logged_in().await;

    let response = upload(
        "10 MiB chunked upload",
        gw.client_http1()
            .post(gw.url("/echo"))
            .bearer_auth(&token)
            .body(streamed_body(TEN_MIB)),
    )
    .await;
    assert_eq!(response.version(), Version::HTTP_11);
    let echo = json_body(response).await;
    assert_eq!(echo["body_bytes"], 10_485_760);
    assert_eq!(echo["method"], "POST");
    // No length was known, so the body went upstream chunked as well.
    assert_eq!(echoed_one(&echo, "transfer-encoding"), "chunked");
    assert!(echoed(&echo, "content-length").is_empty(), "{echo}");
}

#[tokio::test]
async fn ten_mib_streamed_request_body_streams_to_upstream_over_http2() {
    let (_upstream, gw, token) = start_logged_in().await;

    let response = upload(
        "10 MiB streamed h2 upload",
        gw.client()
            .put(gw.url("/echo/upload"))
            .bearer_auth(&token)
            .body(streamed_body(TEN_MIB)),
    )
    .await;
    assert_eq!(response.version(), Version::HTTP_2);
    let echo = json_body(response).await;
    assert_eq!(echo["body_bytes"], 10_485_760);
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/upload");
}

#[tokio::test]
async fn ten_mib_request_body_with_content_length_reaches_upstream() {
    let (_upstream, gw, token) = start_logged_in().await;

    let response = upload(
        "10 MiB upload with Content-Length",
        gw.client_http1()
            .post(gw.url("/echo"))
            .bearer_auth(&token)
            .body(vec![b'b'; TEN_MIB]),
    )
    .await;
    let echo = json_body(response).await;
    assert_eq!(echo["body_bytes"], 10_485_760);
    assert_eq!(echoed_one(&echo, "content-length"), "10485760");
    assert!(echoed(&echo, "transfer-encoding").is_empty(), "{echo}");
}

/// Read a response body chunk by chunk, returning (bytes, whether all were `b'x'`).
async fn count_body(mut response: Response) -> (usize, bool) {
    let mut total = 0usize;
    let mut all_x = true;
    while let Some(chunk) = within(30, "response chunk", response.chunk())
        .await
        .expect("body chunk")
    {
        total += chunk.len();
        all_x &= chunk.iter().all(|b| *b == b'x');
    }
    (total, all_x)
}

#[tokio::test]
async fn ten_mib_streamed_response_arrives_complete() {
    let (_upstream, gw) = start().await;

    for (client, version) in [
        (gw.client(), Version::HTTP_2),
        (gw.client_http1(), Version::HTTP_11),
    ] {
        let response = send(client.get(gw.url("/stream?bytes=10485760"))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/octet-stream"
        );
        let (total, all_x) = count_body(response).await;
        assert_eq!(total, TEN_MIB, "over {version:?}");
        assert!(all_x, "the payload is intact over {version:?}");
    }
}

#[tokio::test]
async fn hop_by_hop_and_connection_nominated_headers_are_not_forwarded() {
    let (_upstream, gw, token) = start_logged_in().await;

    let response = send(
        gw.client_http1()
            .get(gw.url("/echo"))
            .bearer_auth(&token)
            .header("Connection", "X-Secret, x-other-secret")
            .header("X-Secret", "1")
            .header("X-Other-Secret", "2")
            .header("Keep-Alive", "timeout=5, max=100")
            .header("TE", "trailers")
            .header("Upgrade", "websocket")
            .header("Proxy-Authorization", "Basic dXNlcjpwYXNz")
            .header("Proxy-Connection", "keep-alive")
            .header("X-Kept", "yes"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let echo = json_body(response).await;
    for name in [
        "connection",
        "x-secret",
        "x-other-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            echoed(&echo, name).is_empty(),
            "{name} must not reach the upstream: {echo}"
        );
    }
    // Ordinary headers (and the bearer token, forward_authorization defaulting to true)
    // still pass, so the absence above is hygiene, not a dropped header map.
    assert_eq!(echoed_one(&echo, "x-kept"), "yes");
    assert_eq!(
        echoed_one(&echo, "authorization"),
        format!("Bearer {token}")
    );
}

#[tokio::test]
async fn forwarded_headers_replace_spoofed_values_and_host_is_the_upstreams() {
    let (upstream, gw, token) = start_logged_in().await;
    let expected_host = format!("localhost:{}", gw.addr.port());
    let upstream_authority = upstream.addr.to_string();
    assert_eq!(
        gw.config.upstreams["properties"].urls(),
        vec![format!("http://{upstream_authority}")]
    );

    for client in [gw.client(), gw.client_http1()] {
        let response = send(
            client
                .get(gw.url("/echo"))
                .bearer_auth(&token)
                .header("X-Forwarded-For", "6.6.6.6, 7.7.7.7")
                .header("X-Forwarded-For", "8.8.8.8")
                .header("X-Forwarded-Proto", "http")
                .header("X-Forwarded-Host", "evil.example")
                .header("Forwarded", "for=6.6.6.6;proto=http;host=evil.example"),
        )
        .await;
        assert_eq!(response.status(), 200);
        let version = response.version();
        let echo = json_body(response).await;
        assert_eq!(
            echoed_one(&echo, "x-forwarded-for"),
            "127.0.0.1",
            "{version:?}"
        );
        assert_eq!(
            echoed_one(&echo, "x-forwarded-proto"),
            "https",
            "{version:?}"
        );
        assert_eq!(
            echoed_one(&echo, "x-forwarded-host"),
            expected_host,
            "{version:?}"
        );
        assert!(echoed(&echo, "forwarded").is_empty(), "{version:?}: {echo}");
        assert_eq!(echoed_one(&echo, "host"), upstream_authority, "{version:?}");
    }
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_kept_when_sent() {
    let (_upstream, gw, token) = start_logged_in().await;
    let client = gw.client();

    let mut generated = Vec::new();
    for _ in 0..2 {
        let response = send(client.get(gw.url("/echo")).bearer_auth(&token)).await;
        assert_eq!(response.status(), 200);
        let id = response
            .headers()
            .get("x-request-id")
            .expect("a generated X-Request-Id")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?} is a UUID");
        let echo = json_body(response).await;
        assert_eq!(echoed_one(&echo, "x-request-id"), id, "upstream saw it");
        generated.push(id);
    }
    assert_ne!(generated[0], generated[1], "each request gets its own id");

    let response = send(
        client
            .get(gw.url("/echo"))
            .bearer_auth(&token)
            .header("X-Request-Id", "client-chosen-id-42"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "client-chosen-id-42"
    );
    let echo = json_body(response).await;
    assert_eq!(echoed_one(&echo, "x-request-id"), "client-chosen-id-42");

    // Error responses produced by the gateway itself carry the id too.
    let response = send(
        client
            .get(gw.url("/no-such-route"))
            .header("X-Request-Id", "id-on-a-404"),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "id-on-a-404"
    );

    // An unusable id (too long) is replaced, not forwarded.
    let long = "a".repeat(200);
    let response = send(
        client
            .get(gw.url("/echo"))
            .bearer_auth(&token)
            .header("X-Request-Id", &long),
    )
    .await;
    assert_eq!(response.status(), 200);
    let id = response.headers().get("x-request-id").unwrap().to_owned();
    assert_ne!(id, long.as_str());
    assert!(
        uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
        "{id:?}"
    );
    let echo = json_body(response).await;
    assert_eq!(echoed_one(&echo, "x-request-id"), id.to_str().unwrap());
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_upstream_speaks_http1() {
    let (_upstream, gw, token) = start_logged_in().await;

    let response = send(gw.client().get(gw.url("/echo")).bearer_auth(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let echo = json_body(response).await;
    assert_eq!(echo["version"], "HTTP/1.1");

    let response = send(gw.client_http1().get(gw.url("/echo")).bearer_auth(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let echo = json_body(response).await;
    assert_eq!(echo["version"], "HTTP/1.1");
}

#[tokio::test]
async fn upstream_down_gives_502_json() {
    let mut upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    let token = gw.login("test@example.com", "password").await;
    let client = gw.client();

    // Warm the gateway's connection pool first, so the failure is the realistic one: an
    // upstream that went away after it had been used.
    let response = send(client.get(gw.url("/health"))).await;
    assert_eq!(response.status(), 200);

    upstream.stop();

    let response = send(client.get(gw.url("/health"))).await;
    assert_error(response, StatusCode::BAD_GATEWAY, "Upstream unavailable").await;
    let response = send(client.get(gw.url("/properties")).bearer_auth(&token)).await;
    assert_error(response, StatusCode::BAD_GATEWAY, "Upstream unavailable").await;
}

#[tokio::test]
async fn slow_upstream_gives_504_json() {
    let (_upstream, gw) = start().await;

    // The test config's upstream timeout is 2s; the upstream would answer after 5s.
    let response = send(gw.client().get(gw.url("/slow?ms=5000"))).await;
    assert_error(response, StatusCode::GATEWAY_TIMEOUT, "Upstream timed out").await;

    // A fast answer on the same route still works.
    let response = send(gw.client().get(gw.url("/slow?ms=0"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await, json!({"slept_ms": 0}));
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    let (_upstream, gw) = start().await;
    let client = gw.client();

    let response = send(client.get(gw.url("/no-such-route"))).await;
    assert_error(response, StatusCode::NOT_FOUND, "Not Found").await;
    // Prefixes match on segment boundaries only.
    let response = send(client.get(gw.url("/healthz"))).await;
    assert_error(response, StatusCode::NOT_FOUND, "Not Found").await;

    let response = send(client.delete(gw.url("/health"))).await;
    assert_not_allowed(response, "GET").await;

    // Two routes share /properties; the Allow header lists the methods of both.
    let response = send(client.delete(gw.url("/properties"))).await;
    assert_not_allowed(response, "GET, HEAD, POST").await;

    // The login endpoint only takes POST.
    let response = send(client.get(gw.url("/users/login"))).await;
    assert_not_allowed(response, "POST").await;
}

#[tokio::test]
async fn prefix_rewrite_maps_public_to_echo() {
    let (_upstream, gw) = start().await;
    let client = gw.client();

    let response = send(client.get(gw.url("/public/x?y=1"))).await;
    let echo = ok_json(response).await;
    assert_eq!(echo["path"], "/echo/x");
    assert_eq!(echo["query"], "y=1");

    let response = send(client.get(gw.url("/public"))).await;
    let echo = ok_json(response).await;
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], Value::Null);

    let response = send(client.post(gw.url("/public/a/b/c")).body("hello")).await;
    let echo = ok_json(response).await;
    assert_eq!(echo["path"], "/echo/a/b/c");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], 5);
}

/// Send `n` concurrent authenticated GET /properties on clones of `client`; return the
/// versions of the responses, asserting each one succeeded with the full list.
async fn concurrent_gets(
    client: &reqwest::Client,
    url: String,
    token: &str,
    n: usize,
) -> Vec<Version> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = client.get(&url).bearer_auth(token);
        tasks.spawn(async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            let version = response.version();
            let body: Value = response.json().await.expect("JSON");
            (status, version, body)
        });
    }
    let mut versions = Vec::new();
    within(60, "concurrent requests", async {
        while let Some(done) = tasks.join_next().await {
            let (status, version, body) = done.expect("task");
            assert_eq!(status, 200, "{body}");
            assert_eq!(body.as_array().map(Vec::len), Some(5), "{body}");
            versions.push(version);
        }
    })
    .await;
    assert_eq!(versions.len(), n);
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_authenticated_gets_succeed_over_h2_and_http1() {
    let (_upstream, gw, token) = start_logged_in().await;

    let h2 = gw.client();
    let versions = concurrent_gets(&h2, gw.url("/properties"), &token, 50).await;
    assert!(
        versions.iter().all(|v| *v == Version::HTTP_2),
        "{versions:?}"
    );

    let h1 = gw.client_http1();
    let versions = concurrent_gets(&h1, gw.url("/properties"), &token, 50).await;
    assert!(
        versions.iter().all(|v| *v == Version::HTTP_11),
        "{versions:?}"
    );
}
