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

use super::jwt::{access_claims, now};
use super::Auth;
use crate::body::Body;
use crate::error::{json_response, GatewayError};

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

/// Handle a login request.
pub async fn handle(auth: &Auth, request: Request<Body>) -> Result<Response<Body>, GatewayError> {
    if !is_json(request.headers().get(CONTENT_TYPE)) {
        return Err(GatewayError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    let bytes = read_body(request.into_body()).await?;
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(GatewayError::BadRequest(
                "Request body must be a JSON object".into(),
            ))
        }
        Err(_) => {
            return Err(GatewayError::BadRequest(
                "Request body is not valid JSON".into(),
            ))
        }
    };
    let email = string_field(&body, "email")?;
    let password = string_field(&body, "password")?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(GatewayError::BadRequest("Password too long".into()));
    }
    let user = auth
        .users
        .authenticate(email, password.to_owned())
        .await
        .ok_or(GatewayError::InvalidCredentials)?;
    let claims = access_claims(&user.email, &user.roles, &user.claims, &auth.rules, now());
    let token = auth.keys.sign(&claims).map_err(GatewayError::Internal)?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "access_token": token }),
    ))
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
