//! Helpers shared by the security suites (`security_http`, `security_auth`,
//! `security_upstream`), on top of the common harness in `tests/support`:
//!
//! - [`Recorder`]: an in-process HTTP/1.1 upstream that records every request it gets
//!   (head, body bytes, whether the body arrived whole, whether its handler was cancelled)
//!   and answers with a JSON description of what it saw;
//! - [`RawUpstream`]: a raw TCP upstream that answers every request with fixed bytes;
//! - [`RawConn`]: a raw HTTP/1 client on a TCP stream, with deadlines everywhere;
//! - [`security_yaml`]: the base test config with short timeouts, a small-body route and
//!   optionally a plaintext listener;
//! - token minting that bypasses the gateway.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{config_yaml, spawn_upstream, SECRET};

/// Await `fut`, failing the test instead of hanging when it takes longer than `secs`.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {secs}s"))
}

/// Poll `check` every 20 ms until it holds, failing after `secs`.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `text` with the single occurrence of `from` replaced by `to` (panics when `from` does
/// not occur exactly once, so a config edit can never silently do nothing).
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur exactly once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// The `server:` settings of [`security_yaml`]: short timeouts so nothing waits long.
pub const DEFAULT_SERVER: &[(&str, &str)] = &[
    ("body_read_timeout", "500ms"),
    ("header_read_timeout", "500ms"),
    ("idle_timeout", "500ms"),
    ("tls_handshake_timeout", "500ms"),
    ("shutdown_grace", "1s"),
    ("reload_interval", "0s"),
];

/// The limit of the `small` route of [`security_yaml`].
pub const SMALL_ROUTE_LIMIT: usize = 1024;

/// The harness's base config (all routes to `upstream`) plus:
/// - a `server:` section with [`DEFAULT_SERVER`], where `server` overrides or adds keys;
/// - a public route `small` (`/small`, `max_body_bytes: 1024`);
/// - with `plaintext`, the listener serves plain HTTP instead of self-signed TLS.
pub fn security_yaml(upstream: &str, plaintext: bool, server: &[(&str, &str)]) -> String {
    let mut settings: Vec<(String, String)> = DEFAULT_SERVER
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (k, v) in server {
        match settings.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = (*v).to_owned(),
            None => settings.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    let mut yaml = String::from("server:\n");
    for (k, v) in &settings {
        yaml.push_str(&format!("  {k}: {v}\n"));
    }
    let mut base = config_yaml(upstream);
    if plaintext {
        base = edit(&base, "tls: { self_signed: true }", "plaintext: true");
    }
    yaml.push_str(&base);
    yaml.push_str(&format!(
        "  - name: small\n    path: /small\n    upstream: properties\n    auth: public\n    max_body_bytes: {SMALL_ROUTE_LIMIT}\n"
    ));
    yaml
}

/// GET `path` through the gateway with `client`: status and JSON body (30 s deadline).
pub async fn get_json(
    gw: &crate::support::Gateway,
    client: &reqwest::Client,
    path: &str,
) -> (u16, serde_json::Value) {
    let response = within(30, "GET", client.get(gw.url(path)).send())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    within(30, "body", crate::support::status_json(response)).await
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    crate::support::now()
}

/// Sign `header` and `payload` exactly as given (duplicate members and all) with HMAC
/// `alg` (HS256/HS384/HS512) and `secret`.
pub fn sign_raw(
    header: &str,
    payload: &str,
    alg: jsonwebtoken::Algorithm,
    secret: &[u8],
) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        alg,
    )
    .expect("sign");
    format!("{input}.{sig}")
}

/// The claims of a valid access token for `sub` with `roles`, living 10 minutes.
pub fn access_claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "fresh": false,
        "iat": now,
        "jti": format!("test-{now}-{sub}"),
        "type": "access",
        "sub": sub,
        "nbf": now,
        "exp": now + 600,
        "roles": roles,
    })
}

/// A valid HS256 access token of the test key for `sub` with `roles`.
pub fn token(sub: &str, roles: &[&str]) -> String {
    crate::support::sign_hs256(
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        &access_claims(sub, roles),
        SECRET,
    )
}

// ---------------------------------------------------------------------------------------
// Recording upstream
// ---------------------------------------------------------------------------------------

/// One request as the [`Recorder`] received it.
#[derive(Clone, Default)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target exactly as received (path and query, still encoded).
    pub target: String,
    /// The path part of the target.
    pub path: String,
    /// Every header as (lowercase name, value), repeated names repeated, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes received so far.
    pub body: Vec<u8>,
    /// The body was read to its end (the framing said it was complete).
    pub complete: bool,
    /// Reading the body failed with this error.
    pub body_error: Option<String>,
    /// The handler finished and produced its response.
    pub answered: bool,
    /// The handler was dropped before it answered (the gateway gave up on the request).
    pub cancelled: bool,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("complete", &self.complete)
            .field("body_error", &self.body_error)
            .field("answered", &self.answered)
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl Seen {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The single value of header `name`, failing when there is none or several.
    pub fn header(&self, name: &str) -> String {
        let values = self.header_values(name);
        assert_eq!(
            values.len(),
            1,
            "upstream should see exactly one {name}, saw {values:?} in {:?}",
            self.headers
        );
        values.into_iter().next().unwrap()
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An in-process HTTP/1.1 upstream on `127.0.0.1:0` recording every request.
///
/// It reads the whole request body first (recording it as it arrives), then waits
/// `delay_ms` milliseconds when the query has `delay_ms=N`, then answers 200 with JSON
/// `{"method", "target", "headers": [[name, value]...], "body_bytes"}`.
pub struct Recorder {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Log,
    /// Connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Bind and start serving.
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log: Log = Arc::default();
        let log2 = log.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let log = log2.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(record(log, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder {
            addr,
            log,
            connections,
            task,
        }
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests arrived (at least their head).
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Requests received with path `path`.
    pub fn with_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Marks the log entry `cancelled` when the handler is dropped before answering.
struct CancelGuard {
    log: Log,
    index: usize,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if !log[self.index].answered {
            log[self.index].cancelled = true;
        }
    }
}

async fn record(log: Log, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_owned());
    let seen = Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        ..Seen::default()
    };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    let _guard = CancelGuard {
        log: log.clone(),
        index,
    };
    loop {
        match body.frame().await {
            None => {
                log.lock().unwrap()[index].complete = true;
                break;
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    log.lock().unwrap()[index]
                        .body
                        .extend_from_slice(data.as_ref());
                }
            }
            Some(Err(e)) => {
                log.lock().unwrap()[index].body_error = Some(e.to_string());
                break;
            }
        }
    }
    let delay = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("delay_ms="))
            .and_then(|v| v.parse::<u64>().ok())
    });
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body_bytes = log.lock().unwrap()[index].body.len();
    let reply = serde_json::json!({
        "method": seen.method,
        "target": target,
        "headers": seen.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "body_bytes": body_bytes,
    });
    log.lock().unwrap()[index].answered = true;
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

// ---------------------------------------------------------------------------------------
// Raw TCP upstream
// ---------------------------------------------------------------------------------------

/// A TCP upstream that reads each request head, answers with fixed bytes and closes.
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Start answering every connection's first request with `reply`, then closing.
    pub async fn start(reply: &'static [u8]) -> RawUpstream {
        RawUpstream::start_with(reply, false).await
    }

    /// Like [`RawUpstream::start`], but the connection stays open after the reply and is
    /// closed, unanswered, when a second request arrives on it: the race of an upstream
    /// closing an idle kept-alive connection just as the gateway reuses it.
    pub async fn start_closing_on_reuse(reply: &'static [u8]) -> RawUpstream {
        RawUpstream::start_with(reply, true).await
    }

    async fn start_with(reply: &'static [u8], linger: bool) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let heads2 = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let heads = heads2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    heads
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    let _ = stream.write_all(reply).await;
                    let _ = stream.flush().await;
                    if linger {
                        let mut next = [0u8; 4096];
                        if let Ok(n @ 1..) = stream.read(&mut next).await {
                            heads
                                .lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&next[..n]).into_owned());
                        }
                    }
                    // Dropping the stream closes the connection.
                });
            }
        });
        RawUpstream { addr, heads, task }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

// ---------------------------------------------------------------------------------------
// The example upstream on a fixed port
// ---------------------------------------------------------------------------------------

/// `upstream-example --listen 127.0.0.1:{port}` as a child process (killed on drop).
pub struct FixedUpstream {
    child: Child,
}

impl FixedUpstream {
    /// Start it on `port` and wait for its `listening on` line.
    pub fn start(port: u16) -> FixedUpstream {
        let (child, addr) = spawn_upstream(&format!("127.0.0.1:{port}"));
        assert_eq!(
            addr.port(),
            port,
            "upstream-example did not start on port {port}"
        );
        FixedUpstream { child }
    }

    /// Kill the process and wait for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FixedUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1 client
// ---------------------------------------------------------------------------------------

/// A response read off a raw connection.
#[derive(Clone)]
pub struct RawResponse {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// Headers as (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawResponse")
            .field("status_line", &self.status_line)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), got status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `msg` of a gateway `{"msg": ...}` body, checking the content type too.
    pub fn msg(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "gateway errors are JSON: {self:?}"
        );
        self.json()["msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no msg in {self:?}"))
            .to_owned()
    }
}

/// A raw client connection (plain TCP) to a gateway listener.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConn {
    /// Connect to `addr` (within 10 s).
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = within(10, "connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Write bytes (errors are ignored: the peer may already have closed).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = within(10, "write", async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await;
    }

    /// Read one response, or `None` when the connection ended before a complete one.
    pub async fn response(&mut self, secs: u64) -> Option<RawResponse> {
        within(secs, "reading a response", async {
            loop {
                if let Some(r) = self.parse() {
                    return Some(r);
                }
                if self.eof {
                    return None;
                }
                self.fill().await;
            }
        })
        .await
    }

    /// Read one response, failing the test when there is none.
    pub async fn expect_response(&mut self, secs: u64) -> RawResponse {
        match self.response(secs).await {
            Some(r) => r,
            None => panic!(
                "connection closed without a complete response; received {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Whether the peer closes the connection (EOF or reset) within `secs`; anything
    /// received meanwhile is kept (see [`RawConn::leftover`]).
    pub async fn closed_within(&mut self, secs: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(secs), async {
            while !self.eof {
                self.fill().await;
            }
        })
        .await
        .is_ok()
    }

    /// Bytes received but not consumed by a parsed response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
    }

    /// Take one complete response off the buffer, if there is one.
    fn parse(&mut self) -> Option<RawResponse> {
        let head_end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_owned();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let start = head_end + 4;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (body, consumed) = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            dechunk(&self.buf[start..])?
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().expect("numeric content-length");
            if self.buf.len() < start + len {
                return None;
            }
            (self.buf[start..start + len].to_vec(), len)
        } else if (100..200).contains(&status) || status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if self.eof {
            (self.buf[start..].to_vec(), self.buf.len() - start)
        } else {
            return None;
        };
        self.buf.drain(..start + consumed);
        Some(RawResponse {
            status_line,
            status,
            headers,
            body,
        })
    }
}

/// Decode a complete chunked body: (body, bytes consumed), or `None` when incomplete.
fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = data.len();
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let end = data.windows(2).position(|w| w == b"\r\n")?;
            data = &data[end + 2..];
            return Some((out, total - data.len()));
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A plain-HTTP reqwest client (for plaintext listeners and the admin endpoint).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
