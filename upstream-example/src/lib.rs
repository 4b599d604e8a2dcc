//! Routing and request handlers for the example "properties" backend.
//!
//! Nothing here looks at credentials: the service trusts whoever reaches it.

#![forbid(unsafe_code)]

pub mod query;
pub mod store;
pub mod stream_body;

use std::convert::Infallible;
use std::fmt::Display;
use std::pin::pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Version};
use serde::Serialize;
use serde_json::json;

use crate::query::Query;
use crate::store::{Filter, NewProperty, Store};
use crate::stream_body::RepeatBody;

/// The response body type of every handler.
pub type ResBody = UnsyncBoxBody<Bytes, Infallible>;

/// The store shared by all connections.
pub type SharedStore = Arc<RwLock<Store>>;

/// Largest accepted `POST /properties` body.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;
/// Largest response `/stream` will produce.
const MAX_STREAM_BYTES: u64 = 1024 * 1024 * 1024;
/// Default `/stream` size.
const DEFAULT_STREAM_BYTES: u64 = 1024 * 1024;
/// Largest `/stream` chunk.
const MAX_STREAM_CHUNK: u64 = 16 * 1024 * 1024;
/// Default `/stream` chunk size.
const DEFAULT_STREAM_CHUNK: u64 = 64 * 1024;
/// Longest pause `/stream` and `/slow` accept.
const MAX_DELAY_MS: u64 = 60_000;
/// Default `/slow` pause.
const DEFAULT_SLOW_MS: u64 = 1_000;

/// Dispatches one request. Never fails: every problem becomes a JSON error response.
pub async fn handle<B>(store: &SharedStore, req: Request<B>) -> Response<ResBody>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match path.as_str() {
        "/health" if method == Method::GET => json(StatusCode::OK, &json!({"status": "ok"})),
        "/health" => method_not_allowed("GET"),
        "/properties" => match method {
            Method::GET => list_properties(store, &req),
            Method::POST => create_property(store, req).await,
            _ => method_not_allowed("GET, POST"),
        },
        "/echo" => echo(req).await,
        "/stream" => stream(&req),
        "/slow" => slow(&req).await,
        _ => {
            if path.starts_with("/echo/") {
                echo(req).await
            } else if let Some(id) = path.strip_prefix("/properties/") {
                if id.contains('/') {
                    not_found()
                } else if method == Method::GET {
                    get_property(store, id)
                } else {
                    method_not_allowed("GET")
                }
            } else if let Some(code) = path.strip_prefix("/status/") {
                status(code)
            } else {
                not_found()
            }
        }
    }
}

/// `GET /properties[?city=..][&max_price=..]`
fn list_properties<B>(store: &SharedStore, req: &Request<B>) -> Response<ResBody> {
    let query = Query::parse(req.uri().query());
    let max_price = match query.get("max_price").map(str::parse::<u64>) {
        None => None,
        Some(Ok(max)) => Some(max),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "max_price must be a non-negative integer",
            )
        }
    };
    let filter = Filter {
        city: query.get("city").map(str::to_owned),
        max_price,
    };
    let properties = store
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .list(&filter);
    json(StatusCode::OK, &properties)
}

/// `GET /properties/{id}`
fn get_property(store: &SharedStore, id: &str) -> Response<ResBody> {
    let found = id
        .parse::<u64>()
        .ok()
        .and_then(|id| store.read().unwrap_or_else(PoisonError::into_inner).get(id));
    match found {
        Some(property) => json(StatusCode::OK, &property),
        None => error(StatusCode::NOT_FOUND, "property not found"),
    }
}

/// `POST /properties` with a JSON body.
async fn create_property<B>(store: &SharedStore, req: Request<B>) -> Response<ResBody>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/json",
        );
    }
    let body = match read_limited(req, MAX_JSON_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let new = match NewProperty::from_json(&body) {
        Ok(new) => new,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let property = store
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(new);
    let mut response = json(StatusCode::CREATED, &property);
    if let Ok(location) = HeaderValue::try_from(format!("/properties/{}", property.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// Whether a `Content-Type` value names `application/json`, ignoring parameters.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Collects a request body of at most `limit` bytes, or builds the error response.
async fn read_limited<B>(req: Request<B>, limit: u64) -> Result<Bytes, Response<ResBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body must not exceed {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = pin!(req.into_body());
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| read_error(&e))?;
        if let Some(data) = frame.data_ref() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// What `/echo` reports about a request.
#[derive(Debug, Serialize)]
struct EchoReply {
    /// The request method.
    method: String,
    /// The path exactly as received, still percent-encoded.
    path: String,
    /// The raw query string, if the request had one.
    query: Option<String>,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    version: String,
    /// Every header as `[name, value]`, repeated names repeated.
    headers: Vec<[String; 2]>,
    /// Number of request body bytes received.
    body_bytes: u64,
}

/// `/echo` and `/echo/...`, any method: describes the request back to the caller.
///
/// The body is consumed frame by frame and only counted, so arbitrarily large
/// uploads use constant memory.
async fn echo<B>(req: Request<B>) -> Response<ResBody>
where
    B: Body<Data = Bytes>,
    B::Error: Display,
{
    let (parts, body) = req.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            [
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let mut body = pin!(body);
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => return read_error(&e),
        }
    }
    let reply = EchoReply {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: version_name(parts.version),
        headers,
        body_bytes,
    };
    json(StatusCode::OK, &reply)
}

/// The conventional name of an HTTP version.
fn version_name(version: Version) -> String {
    match version {
        Version::HTTP_09 => "HTTP/0.9".to_owned(),
        Version::HTTP_10 => "HTTP/1.0".to_owned(),
        Version::HTTP_11 => "HTTP/1.1".to_owned(),
        Version::HTTP_2 => "HTTP/2.0".to_owned(),
        Version::HTTP_3 => "HTTP/3.0".to_owned(),
        other => format!("{other:?}"),
    }
}

/// `/stream?bytes=N&chunk=M&delay_ms=D`, any method: a streamed `b'x'` payload.
fn stream<B>(req: &Request<B>) -> Response<ResBody> {
    let query = Query::parse(req.uri().query());
    let (total, chunk, delay_ms) = match stream_params(&query) {
        Ok(params) => params,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let chunk = usize::try_from(chunk).unwrap_or(usize::MAX);
    let body = RepeatBody::new(total, chunk, Duration::from_millis(delay_ms));
    let mut response = Response::new(body.boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// The `(bytes, chunk, delay_ms)` parameters of `/stream`.
fn stream_params(query: &Query) -> Result<(u64, u64, u64), String> {
    Ok((
        bounded(query, "bytes", DEFAULT_STREAM_BYTES, 0, MAX_STREAM_BYTES)?,
        bounded(query, "chunk", DEFAULT_STREAM_CHUNK, 1, MAX_STREAM_CHUNK)?,
        bounded(query, "delay_ms", 0, 0, MAX_DELAY_MS)?,
    ))
}

/// `/slow?ms=N`, any method: answers after `N` milliseconds.
async fn slow<B>(req: &Request<B>) -> Response<ResBody> {
    let query = Query::parse(req.uri().query());
    let ms = match bounded(&query, "ms", DEFAULT_SLOW_MS, 0, MAX_DELAY_MS) {
        Ok(ms) => ms,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    tokio::time::sleep(Duration::from_millis(ms)).await;
    json(StatusCode::OK, &json!({ "slept_ms": ms }))
}

/// `/status/{code}`, any method: answers with that status.
fn status(code: &str) -> Response<ResBody> {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "status code must be an integer between 200 and 599",
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // These statuses must not carry a body.
        let mut response = Response::new(empty());
        *response.status_mut() = status;
        return response;
    }
    json(status, &json!({ "status": status.as_u16() }))
}

/// Reads an integer query parameter within `min..=max`, or `default` when absent.
fn bounded(query: &Query, name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| format!("{name} must be an integer between {min} and {max}")),
    }
}

/// A JSON response with the given status.
fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ResBody> {
    let (status, bytes) = match serde_json::to_vec(value) {
        Ok(bytes) => (status, Bytes::from(bytes)),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(br#"{"msg":"failed to encode response"}"#),
        ),
    };
    let mut response = Response::new(Full::new(bytes).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON `{"msg": ...}` error response.
fn error(status: StatusCode, msg: &str) -> Response<ResBody> {
    json(status, &json!({ "msg": msg }))
}

/// The 404 for paths no route knows.
fn not_found() -> Response<ResBody> {
    error(StatusCode::NOT_FOUND, "not found")
}

/// The 405 for a known path, listing the methods it does accept.
fn method_not_allowed(allow: &'static str) -> Response<ResBody> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The 400 for a request body that broke off or was malformed on the wire.
fn read_error(e: &dyn Display) -> Response<ResBody> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("failed to read request body: {e}"),
    )
}

/// An empty body.
fn empty() -> ResBody {
    Full::new(Bytes::new()).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one request with a fresh seeded store, returning status and JSON body.
    async fn call(method: Method, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let store: SharedStore = Arc::new(RwLock::new(Store::seeded()));
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("valid request");
        let response = handle(&store, req).await;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("infallible")
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, value)
    }

    #[tokio::test]
    async fn lists_and_filters() {
        let (status, body) =
            call(Method::GET, "/properties?city=london&max_price=500000", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_array().map(Vec::len), Some(1));

        let (status, body) = call(Method::GET, "/properties?max_price=cheap", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["msg"], "max_price must be a non-negative integer");
    }

    #[tokio::test]
    async fn gets_one_or_404() {
        assert_eq!(
            call(Method::GET, "/properties/1", "").await.0,
            StatusCode::OK
        );
        let (status, body) = call(Method::GET, "/properties/abc", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["msg"], "property not found");
        assert_eq!(
            call(Method::DELETE, "/properties/1", "").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn creates_property() {
        let body = r#"{"title":"Loft","city":"Paris","price":700000,"bedrooms":2}"#;
        let (status, created) = call(Method::POST, "/properties", body).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["id"], 6);
        let (status, _) = call(Method::POST, "/properties", r#"{"title":"x"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn echo_counts_body() {
        let (status, body) = call(Method::PUT, "/echo/a%20b?x=1", "hello").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["path"], "/echo/a%20b");
        assert_eq!(body["query"], "x=1");
        assert_eq!(body["body_bytes"], 5);
        assert_eq!(body["method"], "PUT");
    }

    #[tokio::test]
    async fn status_and_fallbacks() {
        assert_eq!(
            call(Method::GET, "/status/418", "").await.0,
            StatusCode::IM_A_TEAPOT
        );
        assert_eq!(
            call(Method::GET, "/status/99", "").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(Method::GET, "/nope", "").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(call(Method::GET, "/health", "").await.1["status"], "ok");
    }

    #[test]
    fn recognises_json_content_type() {
        let ct = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_json(Some(&ct("application/json"))));
        assert!(is_json(Some(&ct("Application/JSON; charset=utf-8"))));
        assert!(!is_json(Some(&ct("text/plain"))));
        assert!(!is_json(None));
    }
}
