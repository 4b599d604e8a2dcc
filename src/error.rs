//! The gateway's request error type and the one place where errors become HTTP responses.
//!
//! Every stage of the request path (routing, login, authentication, policy, forwarding)
//! returns a [`GatewayError`]; [`GatewayError::into_response`] is the only function that
//! turns one into a response, so status codes and bodies stay consistent with
//! Flask-JWT-Extended's `{"msg": ...}` shape.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// How token failures are reported (config `auth.errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorMode {
    /// Exactly Flask-JWT-Extended 4.7's statuses (401 for some failures, 422 for others).
    #[default]
    Flask,
    /// RFC 6750: every token failure is a 401 with `error="invalid_token"`.
    Rfc6750,
}

/// A failure to authenticate a bearer token, with Flask-JWT-Extended's status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// The status Flask-JWT-Extended answers with (401 or 422).
    pub status: StatusCode,
    /// The exact `msg` Flask-JWT-Extended puts in the body.
    pub msg: String,
    /// A bounded label for metrics and logs (`missing`, `expired`, `bad_signature`, ...).
    pub reason: &'static str,
}

impl TokenError {
    /// A token failure with the given status, message and metric reason.
    pub fn new(status: StatusCode, msg: impl Into<String>, reason: &'static str) -> Self {
        Self {
            status,
            msg: msg.into(),
            reason,
        }
    }
}

/// Everything that can stop a request before or while it is forwarded.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the (normalized) path.
    #[error("no route matches the request path")]
    NoRoute,
    /// A route matches the path but not the method; `allow` lists the methods it takes.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The value for the `Allow` header.
        allow: String,
    },
    /// The request itself is malformed (bad path encoding, bad JSON, missing field...).
    #[error("{0}")]
    BadRequest(String),
    /// The login body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A request body larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Wrong email or password, unknown or disabled user: one answer for all of them.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The bearer token is missing or not acceptable.
    #[error("{}", .0.msg)]
    Token(TokenError),
    /// Authenticated, but the route's policy does not allow this identity.
    #[error("{0}")]
    Forbidden(String),
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer within the route's timeout.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The request body did not arrive within `server.body_read_timeout`.
    #[error("request body timed out")]
    RequestTimeout,
    /// The request target is longer than `server.max_uri_bytes`.
    #[error("request target too long")]
    UriTooLong,
    /// Too many failed logins for this account or address.
    #[error("too many failed login attempts")]
    TooManyRequests {
        /// Seconds until the limit resets (`Retry-After`).
        retry_after: u64,
    },
    /// The shared state store is unreachable and the fail mode is fail_closed.
    #[error("state store unavailable")]
    StoreUnavailable,
    /// A bug or resource failure inside the gateway; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The bounded metric/log label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::InvalidCredentials => "invalid_credentials",
            GatewayError::Token(t) => t.reason,
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::TooManyRequests { .. } => "rate_limited",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::UriTooLong => "uri_too_long",
            GatewayError::StoreUnavailable => "store_unavailable",
            GatewayError::Internal(_) => "internal",
        }
    }

    /// Turn the error into the response the client sees. The only such mapping in the crate.
    pub fn into_response(self, mode: ErrorMode) -> Response<Body> {
        let (status, msg) = match &self {
            GatewayError::NoRoute => (StatusCode::NOT_FOUND, "Not Found".to_owned()),
            GatewayError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed".to_owned(),
            ),
            GatewayError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            GatewayError::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, m.clone())
            }
            GatewayError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large".to_owned(),
            ),
            GatewayError::InvalidCredentials => {
                (StatusCode::UNAUTHORIZED, "Invalid credentials".to_owned())
            }
            GatewayError::Token(t) => {
                let status = match mode {
                    ErrorMode::Flask => t.status,
                    ErrorMode::Rfc6750 => StatusCode::UNAUTHORIZED,
                };
                (status, t.msg.clone())
            }
            GatewayError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            GatewayError::UpstreamUnavailable => {
                (StatusCode::BAD_GATEWAY, "Upstream unavailable".to_owned())
            }
            GatewayError::UpstreamTimeout => {
                (StatusCode::GATEWAY_TIMEOUT, "Upstream timed out".to_owned())
            }
            GatewayError::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time".to_owned(),
            ),
            GatewayError::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "Request target too long".to_owned(),
            ),
            GatewayError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed login attempts, try again later".to_owned(),
            ),
            GatewayError::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Token state store unavailable, try again later".to_owned(),
            ),
            GatewayError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error".to_owned(),
            ),
        };
        let mut response = json_msg(status, &msg);
        let headers = response.headers_mut();
        if let GatewayError::MethodNotAllowed { allow } = &self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                headers.insert(ALLOW, v);
            }
        }
        if let GatewayError::TooManyRequests { retry_after } = &self {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, www_authenticate(&self));
        }
        response
    }
}

/// The RFC 6750 challenge for a 401. A request without credentials gets no error code
/// (section 3.1); a rejected token gets `invalid_token` with a sanitized description.
fn www_authenticate(err: &GatewayError) -> HeaderValue {
    match err {
        GatewayError::Token(t) if t.reason != "missing" => {
            let description: String = t
                .msg
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                .collect();
            HeaderValue::from_str(&format!(
                "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"{description}\""
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"gateway\", error=\"invalid_token\""))
        }
        _ => HeaderValue::from_static("Bearer realm=\"gateway\""),
    }
}

/// A `{"msg": ...}` JSON response, the body shape Flask-JWT-Extended uses for every error.
pub fn json_msg(status: StatusCode, msg: &str) -> Response<Body> {
    json_response(status, &serde_json::json!({ "msg": msg }))
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(body::full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
