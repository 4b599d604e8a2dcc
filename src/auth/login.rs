//! `POST /users/login`: the seed API's login contract, answered by the gateway.
//!
//! `{"email", "password"}` as JSON gives `200 {"access_token": ...}`; a wrong password,
//! an unknown user and a disabled user all give the same `401 {"msg": "Invalid
//! credentials"}` after the same amount of hashing work.

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::{session, Auth};
use crate::body::Body;
use crate::error::{json_response, GatewayError};
use crate::metrics::Metrics;
use crate::proxy::ConnInfo;
use crate::store::Store;

/// Largest login body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Longest password accepted (hashing cost does not depend on it, but memory does).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Whether a Content-Type is JSON the way Flask's `request.is_json` sees it.
fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(mime) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Read the whole (small) body, refusing more than [`MAX_BODY_BYTES`].
async fn read_body(mut body: Body) -> Result<Bytes, GatewayError> {
    if http_body::Body::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(GatewayError::PayloadTooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| GatewayError::BadRequest("Could not read request body".into()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(GatewayError::PayloadTooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn string_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, GatewayError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(GatewayError::BadRequest(format!(
            "Field \"{name}\" must be a string"
        ))),
        None => Err(GatewayError::BadRequest(format!(
            "Missing \"{name}\" in request body"
        ))),
    }
}

/// Check the content type, read the (small) body, and parse it as a JSON object.
pub async fn read_json_body(
    request: Request<Body>,
) -> Result<serde_json::Map<String, Value>, GatewayError> {
    if !is_json(request.headers().get(CONTENT_TYPE)) {
        return Err(GatewayError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    let bytes = read_body(request.into_body()).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(GatewayError::BadRequest(
            "Request body must be a JSON object".into(),
        )),
        Err(_) => Err(GatewayError::BadRequest(
            "Request body is not valid JSON".into(),
        )),
    }
}

/// Handle a login request.
pub async fn handle(
    auth: &Auth,
    store: &Store,
    metrics: &Metrics,
    request: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let client_ip = request
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.remote.ip());
    let body = read_json_body(request).await?;
    let email = string_field(&body, "email")?;
    let password = string_field(&body, "password")?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(GatewayError::BadRequest("Password too long".into()));
    }
    // Limits are checked before any hashing, so a locked-out guesser costs nothing.
    auth.limits.check(store, metrics, email, client_ip).await?;
    let Some(user) = auth.users.authenticate(email, password.to_owned()).await else {
        auth.limits.record_failure(store, email, client_ip).await;
        return Err(GatewayError::InvalidCredentials);
    };
    auth.limits.record_success(store, email).await;
    let body = session::issue(auth, store, &user).await?;
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::is_json;
    use http::HeaderValue;

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(is_json(v("application/json").as_ref()));
        assert!(is_json(v("Application/JSON; charset=utf-8").as_ref()));
        assert!(is_json(v("application/problem+json").as_ref()));
        assert!(!is_json(v("text/plain").as_ref()));
        assert!(!is_json(None));
    }
}
