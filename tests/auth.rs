//! Authentication over real sockets: the seed API's login contract, Flask-JWT-Extended's
//! error table, `rfc6750` mode, iss/aud, the issued token's shape, route policies, the
//! identity headers the upstream sees, path-normalization bypass attempts and a login
//! flood next to authenticated traffic.

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::{hs256_header, hs512_token, none_token, sign_hs256, with, Gateway, Upstream, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// No test may take longer than this; anything slower is a hang.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline of one raw request.
const RAW_DEADLINE: Duration = Duration::from_secs(10);
/// A different HMAC secret, long enough to be a valid key.
const OTHER_SECRET: &str = "another-secret-key-that-is-also-long-enough-42";

/// Run a test body under [`TEST_DEADLINE`].
async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, body)
        .await
        .expect("test did not finish within its deadline")
}

/// The upstream and a gateway with the default test configuration.
async fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    (upstream, gw)
}

/// The upstream and a gateway whose `auth:` section starts with `extra` (indented lines).
async fn start_with_auth(extra: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let yaml = support::config_yaml(&upstream.url()).replace("auth:\n", &format!("auth:\n{extra}"));
    assert!(
        yaml.contains(extra),
        "auth section not found in test config"
    );
    let gw = Gateway::start(&yaml).await;
    (upstream, gw)
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// `msg` of a `{"msg": ...}` body.
    fn msg(&self) -> String {
        match self.json().get("msg") {
            Some(Value::String(m)) => m.clone(),
            _ => panic!("body has no string msg: {}", self.text),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

async fn send(request: RequestBuilder) -> Reply {
    let response = request
        .timeout(Duration::from_secs(55))
        .send()
        .await
        .expect("request failed");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    Reply {
        status,
        headers,
        text,
    }
}

/// `GET path` with an optional raw `Authorization` value.
async fn get(gw: &Gateway, path: &str, authorization: Option<&str>) -> Reply {
    let mut request = gw.client().get(gw.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    send(request).await
}

/// `GET path` with `Authorization: Bearer <token>`.
async fn get_bearer(gw: &Gateway, path: &str, token: &str) -> Reply {
    get(gw, path, Some(&format!("Bearer {token}"))).await
}

/// `GET /properties` with a token signed over `claims`: assert `status` and `msg`.
async fn assert_claims_refused(gw: &Gateway, claims: &Value, status: StatusCode, msg: &str) {
    let reply = get_bearer(gw, "/properties", &token(claims)).await;
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.msg(), msg);
}

/// `POST /users/login` with a raw body and `Content-Type`.
async fn login_raw(gw: &Gateway, content_type: &str, body: &'static str) -> Reply {
    send(
        gw.client()
            .post(gw.url("/users/login"))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// A JSON `{"msg": ...}` error with `status` and a non-empty message.
fn assert_json_error(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert!(reply.content_type().starts_with("application/json"));
    assert!(!reply.msg().is_empty());
}

/// `POST /users/login` with a JSON body.
async fn login(gw: &Gateway, email: &str, password: &str) -> Reply {
    send(
        gw.client()
            .post(gw.url("/users/login"))
            .json(&json!({ "email": email, "password": password })),
    )
    .await
}

/// Claims shaped like a gateway (or Flask-JWT-Extended) access token, valid now.
fn access_claims(sub: &str) -> Value {
    let now = support::now();
    json!({
        "fresh": false,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "type": "access",
        "sub": sub,
        "nbf": now,
        "exp": now + 900,
        "roles": ["user"],
    })
}

/// Sign with the test secret.
fn token(claims: &Value) -> String {
    sign_hs256(&hs256_header(), claims, SECRET)
}

/// Decode one base64url JSON segment of a compact JWT.
fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("token segment");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url segment");
    serde_json::from_slice(&bytes).expect("JSON segment")
}

/// Every value the upstream's `/echo` saw for header `name`.
fn echoed(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("echo headers")
        .iter()
        .filter(|pair| pair[0].as_str() == Some(name))
        .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_bearer_challenge(reply: &Reply, context: &str) {
    let challenge = reply.header("www-authenticate").unwrap_or_else(|| {
        panic!(
            "{context}: 401 without WWW-Authenticate ({:?})",
            reply.headers
        )
    });
    assert!(
        challenge.starts_with("Bearer"),
        "{context}: WWW-Authenticate {challenge:?} does not start with Bearer"
    );
}

// ---------------------------------------------------------------------------------------
// 1. The seed's flow
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn seed_flow_login_then_get_properties() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = login(&gw, "test@example.com", "password").await;
        assert_eq!(reply.status, StatusCode::OK, "login: {}", reply.text);
        assert!(
            reply.content_type().starts_with("application/json"),
            "login Content-Type {:?}",
            reply.content_type()
        );
        let body = reply.json();
        let keys: Vec<&String> = body.as_object().expect("JSON object").keys().collect();
        assert_eq!(keys, ["access_token"], "login body {body}");
        let token = body["access_token"].as_str().expect("access_token string");
        assert_eq!(token.split('.').count(), 3, "not a compact JWT: {token}");

        let reply = get_bearer(&gw, "/properties", token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET /properties: {}",
            reply.text
        );
        let list = reply.json();
        let list = list.as_array().expect("the upstream's property list");
        assert!(!list.is_empty(), "empty property list");
        assert!(
            list.iter()
                .all(|p| p.get("id").is_some() && p.get("city").is_some()),
            "not the upstream's properties: {list:?}"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 2. Login failures
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn login_wrong_password_and_unknown_user_are_indistinguishable() {
    within(async {
        let (_upstream, gw) = start().await;
        let wrong = login(&gw, "test@example.com", "not-the-password").await;
        let unknown = login(&gw, "nobody@example.com", "password").await;
        for (name, reply) in [("wrong password", &wrong), ("unknown user", &unknown)] {
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {}",
                reply.text
            );
            assert_eq!(
                reply.json(),
                json!({"msg": "Invalid credentials"}),
                "{name} body"
            );
            assert_bearer_challenge(reply, name);
        }
        assert_eq!(wrong.status, unknown.status);
        assert_eq!(wrong.text, unknown.text, "bodies differ");
        let names = |r: &Reply| -> BTreeSet<String> {
            r.headers.keys().map(|k| k.as_str().to_owned()).collect()
        };
        assert_eq!(names(&wrong), names(&unknown), "header names differ");
        for (name, value) in &wrong.headers {
            if name == "x-request-id" || name == "date" {
                continue;
            }
            assert_eq!(
                Some(value),
                unknown.headers.get(name),
                "header {name} differs"
            );
        }
    })
    .await
}

#[tokio::test]
async fn login_disabled_user_gets_the_same_401() {
    within(async {
        let (_upstream, gw) = start().await;
        let disabled = login(&gw, "disabled@example.com", "password").await;
        let wrong = login(&gw, "test@example.com", "not-the-password").await;
        assert_eq!(
            disabled.status,
            StatusCode::UNAUTHORIZED,
            "{}",
            disabled.text
        );
        assert_eq!(disabled.json(), json!({"msg": "Invalid credentials"}));
        assert_bearer_challenge(&disabled, "disabled user");
        assert_eq!(disabled.text, wrong.text);
        assert_eq!(
            disabled.header("www-authenticate"),
            wrong.header("www-authenticate")
        );
    })
    .await
}

#[tokio::test]
async fn login_email_ignores_case() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = login(&gw, "TEST@Example.com", "password").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let token = reply.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        assert_eq!(
            segment(&token, 1)["sub"],
            "test@example.com",
            "sub should be the configured email"
        );
    })
    .await
}

#[tokio::test]
async fn login_malformed_json_is_400() {
    within(async {
        let (_upstream, gw) = start().await;
        let body = r#"{"email": "test@example.com", "password": "#;
        let reply = login_raw(&gw, "application/json", body).await;
        assert_json_error(&reply, StatusCode::BAD_REQUEST);
    })
    .await
}

#[tokio::test]
async fn login_missing_password_is_400() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = send(
            gw.client()
                .post(gw.url("/users/login"))
                .json(&json!({"email": "test@example.com"})),
        )
        .await;
        assert_json_error(&reply, StatusCode::BAD_REQUEST);
    })
    .await
}

#[tokio::test]
async fn login_non_json_content_type_is_415() {
    within(async {
        let (_upstream, gw) = start().await;
        let body = r#"{"email": "test@example.com", "password": "password"}"#;
        let reply = login_raw(&gw, "text/plain", body).await;
        assert_json_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    })
    .await
}

#[tokio::test]
async fn login_body_over_4_kib_is_413() {
    within(async {
        let (_upstream, gw) = start().await;
        let body = json!({
            "email": "test@example.com",
            "password": "password",
            "padding": "x".repeat(4 * 1024),
        });
        let reply = send(gw.client().post(gw.url("/users/login")).json(&body)).await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            reply.text
        );
        assert!(!reply.msg().is_empty());
    })
    .await
}

#[tokio::test]
async fn login_get_is_405() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = get(&gw, "/users/login", None).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{}",
            reply.text
        );
        assert_eq!(reply.header("allow"), Some("POST"));
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 3. Flask-JWT-Extended's error table
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn flask_error_table() {
    within(async {
        let (_upstream, gw) = start().await;
        let now = support::now();
        let valid = access_claims("test@example.com");
        let expired = with(valid.clone(), json!({"iat": now - 2000, "nbf": now - 2000, "exp": now - 1000}));
        let refresh = with(valid.clone(), json!({"type": "refresh"}));
        let bearer = |t: String| Some(format!("Bearer {t}"));
        let rows: Vec<(&str, Option<String>, u16, &str)> = vec![
            ("no Authorization header", None, 401, "Missing Authorization Header"),
            (
                "Token scheme",
                Some("Token abc".into()),
                401,
                "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'",
            ),
            (
                "Bearer without token",
                Some("Bearer".into()),
                422,
                "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'",
            ),
            ("Bearer abc", Some("Bearer abc".into()), 422, "Not enough segments"),
            (
                "bad signature",
                bearer(sign_hs256(&hs256_header(), &valid, OTHER_SECRET)),
                422,
                "Signature verification failed",
            ),
            ("expired", bearer(token(&expired)), 401, "Token has expired"),
            (
                "alg none",
                bearer(none_token(&valid)),
                422,
                "The specified alg value is not allowed",
            ),
            (
                "HS512",
                bearer(hs512_token(&valid)),
                422,
                "The specified alg value is not allowed",
            ),
            (
                "refresh token",
                bearer(token(&refresh)),
                422,
                "Only non-refresh tokens are allowed",
            ),
        ];
        let mut failures = Vec::new();
        for (row, authorization, status, msg) in rows {
            let reply = get(&gw, "/properties", authorization.as_deref()).await;
            let body: Option<Value> = serde_json::from_str(&reply.text).ok();
            if reply.status.as_u16() != status || body != Some(json!({"msg": msg})) {
                failures.push(format!(
                    "row {row:?}: expected {status} {{\"msg\": {msg:?}}}, got {} {}",
                    reply.status, reply.text
                ));
            }
            if reply.status == StatusCode::UNAUTHORIZED && reply.header("www-authenticate").is_none_or(|c| !c.starts_with("Bearer")) {
                failures.push(format!(
                    "row {row:?}: 401 without a Bearer WWW-Authenticate ({:?})",
                    reply.header("www-authenticate")
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await
}

#[tokio::test]
async fn nbf_in_the_future_is_422() {
    within(async {
        let (_upstream, gw) = start().await;
        let claims = with(
            access_claims("test@example.com"),
            json!({"nbf": support::now() + 600}),
        );
        assert_claims_refused(
            &gw,
            &claims,
            StatusCode::UNPROCESSABLE_ENTITY,
            "The token is not yet valid (nbf)",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn lowercase_bearer_scheme_is_accepted() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;
        let reply = get(&gw, "/properties", Some(&format!("bearer {token}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    })
    .await
}

#[tokio::test]
async fn two_authorization_headers_are_422() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;
        let value = format!("Bearer {token}");
        let client = gw.client_http1();
        // The public echo shows both headers really go out on the wire.
        let echo = send(
            client
                .get(gw.url("/public"))
                .header("authorization", &value)
                .header("authorization", &value),
        )
        .await;
        assert_eq!(echo.status, StatusCode::OK, "{}", echo.text);
        assert_eq!(
            echoed(&echo.json(), "authorization").len(),
            2,
            "the client did not send two Authorization headers: {}",
            echo.text
        );

        let reply = send(
            client
                .get(gw.url("/properties"))
                .header("authorization", &value)
                .header("authorization", &value),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.text
        );
        assert_eq!(
            reply.msg(),
            "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 4. errors: rfc6750
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc6750_mode_turns_token_failures_into_401_invalid_token() {
    within(async {
        let (_upstream, gw) = start_with_auth("  errors: rfc6750\n").await;
        let bad = sign_hs256(
            &hs256_header(),
            &access_claims("test@example.com"),
            OTHER_SECRET,
        );
        let reply = get_bearer(&gw, "/properties", &bad).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
        let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "challenge {challenge:?} lacks error=\"invalid_token\""
        );
        assert_eq!(reply.msg(), "Signature verification failed");

        // RFC 6750 section 3.1: a request without credentials gets no error code.
        let reply = get(&gw, "/properties", None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(!challenge.contains("error="), "{challenge}");
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 5. iss / aud
// ---------------------------------------------------------------------------------------

const ISS_AUD: &str = "  issuer: https://issuer.test\n  audience: api\n";

#[tokio::test]
async fn issuer_and_audience_are_issued_and_accepted() {
    within(async {
        let (_upstream, gw) = start_with_auth(ISS_AUD).await;
        let token = gw.login("test@example.com", "password").await;
        let claims = segment(&token, 1);
        assert_eq!(claims["iss"], "https://issuer.test", "{claims}");
        assert_eq!(claims["aud"], "api", "{claims}");
        let reply = get_bearer(&gw, "/properties", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    })
    .await
}

#[tokio::test]
async fn wrong_issuer_is_422() {
    within(async {
        let (_upstream, gw) = start_with_auth(ISS_AUD).await;
        let claims = with(
            access_claims("test@example.com"),
            json!({"iss": "https://evil.test", "aud": "api"}),
        );
        assert_claims_refused(
            &gw,
            &claims,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid issuer",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn wrong_audience_is_422() {
    within(async {
        let (_upstream, gw) = start_with_auth(ISS_AUD).await;
        let claims = with(
            access_claims("test@example.com"),
            json!({"iss": "https://issuer.test", "aud": "other"}),
        );
        assert_claims_refused(
            &gw,
            &claims,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Audience doesn't match",
        )
        .await;
    })
    .await
}

#[tokio::test]
async fn missing_audience_is_422() {
    within(async {
        let (_upstream, gw) = start_with_auth(ISS_AUD).await;
        let claims = with(
            access_claims("test@example.com"),
            json!({"iss": "https://issuer.test"}),
        );
        // PyJWT's MissingRequiredClaimError("aud").
        assert_claims_refused(
            &gw,
            &claims,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Token is missing the \"aud\" claim",
        )
        .await;
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 6. The issued token's shape
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn issued_token_has_flask_jwt_extended_shape() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;
        let header = segment(&token, 0);
        assert_eq!(header["alg"], "HS256", "{header}");
        assert_eq!(header["typ"], "JWT", "{header}");

        let claims = segment(&token, 1);
        assert_eq!(claims["sub"], "test@example.com", "{claims}");
        let iat = claims["iat"].as_i64().expect("integer iat");
        assert!(claims["nbf"].as_i64().is_some(), "integer nbf: {claims}");
        let exp = claims["exp"].as_i64().expect("integer exp");
        assert_eq!(exp, iat + 900, "exp - iat: {claims}");
        let jti = claims["jti"].as_str().expect("string jti");
        uuid::Uuid::parse_str(jti).unwrap_or_else(|e| panic!("jti {jti:?} is not a UUID: {e}"));
        assert_eq!(claims["type"], "access", "{claims}");
        assert_eq!(claims["fresh"], false, "{claims}");
        assert_eq!(claims["roles"], json!(["user"]), "{claims}");
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 7. Route policies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_route_needs_admin_role() {
    within(async {
        let (_upstream, gw) = start().await;
        let user = gw.login("test@example.com", "password").await;
        let reply = get_bearer(&gw, "/echo/admin", &user).await;
        assert_json_error(&reply, StatusCode::FORBIDDEN);

        let admin = gw.login("admin@example.com", "password").await;
        let reply = get_bearer(&gw, "/echo/admin", &admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json()["path"], "/echo/admin");
    })
    .await
}

#[tokio::test]
async fn post_properties_needs_user_role() {
    within(async {
        let (_upstream, gw) = start().await;
        let no_roles = token(&with(
            access_claims("test@example.com"),
            json!({"roles": []}),
        ));
        let property = json!({"title": "Loft", "city": "Paris", "price": 700000, "bedrooms": 2});
        let reply = send(
            gw.client()
                .post(gw.url("/properties"))
                .bearer_auth(&no_roles)
                .json(&property),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert!(!reply.msg().is_empty());

        // Control: the same request with the user role reaches the upstream.
        let user = gw.login("test@example.com", "password").await;
        let reply = send(
            gw.client()
                .post(gw.url("/properties"))
                .bearer_auth(&user)
                .json(&property),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    })
    .await
}

#[tokio::test]
async fn wrong_method_is_405() {
    within(async {
        let (_upstream, gw) = start().await;
        let user = gw.login("test@example.com", "password").await;
        let reply = send(gw.client().delete(gw.url("/properties")).bearer_auth(&user)).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{}",
            reply.text
        );
        let allow = reply.header("allow").expect("Allow header");
        assert!(
            allow.contains("GET") && allow.contains("POST") && !allow.contains("DELETE"),
            "Allow: {allow}"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 8. The identity the upstream sees
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_sees_only_the_gateway_identity() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;
        let reply = send(
            gw.client_http1()
                .get(gw.url("/echo"))
                .bearer_auth(&token)
                .header("X-Auth-Subject", "evil")
                .header("x-auth-roles", "admin")
                .header("X_Auth_Subject", "evil"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let echo = reply.json();
        assert_eq!(
            echoed(&echo, "x-auth-subject"),
            ["test@example.com"],
            "{echo}"
        );
        assert_eq!(echoed(&echo, "x-auth-roles"), ["user"], "{echo}");
        assert!(echoed(&echo, "x_auth_subject").is_empty(), "{echo}");
        assert_eq!(
            echoed(&echo, "authorization"),
            [format!("Bearer {token}")],
            "Authorization is forwarded by default: {echo}"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 9. Path normalization bypasses (raw requests: no client-side normalization)
// ---------------------------------------------------------------------------------------

struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn msg(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
    }
}

/// `GET <path>` written verbatim over a fresh TLS connection.
async fn raw_get(gw: &Gateway, path: &str, extra_headers: &[(&str, &str)]) -> RawReply {
    tokio::time::timeout(RAW_DEADLINE, raw_get_inner(gw, path, extra_headers))
        .await
        .unwrap_or_else(|_| panic!("raw GET {path} timed out"))
}

async fn raw_get_inner(gw: &Gateway, path: &str, extra_headers: &[(&str, &str)]) -> RawReply {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(gw.cert_pem.as_bytes()) {
        roots.add(cert.expect("certificate PEM")).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let server_name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    tls.flush().await.expect("flush");
    let mut bytes = Vec::new();
    if let Err(e) = tls.read_to_end(&mut bytes).await {
        // A peer that closes without close_notify still sent a complete response.
        assert!(
            e.kind() == std::io::ErrorKind::UnexpectedEof && !bytes.is_empty(),
            "reading the response to {path}: {e}"
        );
    }
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let mut body = bytes[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    RawReply { status, head, body }
}

/// Decode a chunked body (no trailers expected).
fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&input[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        input = &input[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

#[tokio::test]
async fn dot_segments_out_of_login_get_the_target_policy() {
    within(async {
        let (_upstream, gw) = start().await;
        // RFC 3986 section 5.2.4: `..` removes only `login`, so this is /users/properties,
        // which no route takes: the gateway's own 404, not the login handler, not forwarded.
        let reply = raw_get(&gw, "/users/login/../properties", &[]).await;
        assert_eq!(reply.status, 404, "{}", reply.head);
        assert_eq!(reply.msg().as_deref(), Some("Not Found"));
        // Climbing out of /users/login entirely lands on /properties and its policy.
        let reply = raw_get(&gw, "/users/login/../../properties", &[]).await;
        assert_eq!(reply.status, 401, "{}", reply.head);
        assert_eq!(reply.msg().as_deref(), Some("Missing Authorization Header"));
    })
    .await
}

#[tokio::test]
async fn double_slash_is_the_same_route() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = raw_get(&gw, "//properties", &[]).await;
        assert_eq!(reply.status, 401, "{}", reply.head);
        let token = gw.login("test@example.com", "password").await;
        let authorization = format!("Bearer {token}");
        let reply = raw_get(&gw, "//properties", &[("Authorization", &authorization)]).await;
        assert_eq!(reply.status, 200, "{}", reply.head);
        let list: Value = serde_json::from_slice(&reply.body).expect("JSON list");
        assert!(list.is_array(), "{list}");
    })
    .await
}

#[tokio::test]
async fn uppercase_path_has_no_route_and_is_not_forwarded() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;
        let authorization = format!("Bearer {token}");
        let reply = raw_get(&gw, "/PROPERTIES", &[("Authorization", &authorization)]).await;
        assert_eq!(reply.status, 404, "{}", reply.head);
        // The gateway's own 404 ("Not Found"), not the upstream's ("not found").
        assert_eq!(reply.msg().as_deref(), Some("Not Found"));
    })
    .await
}

#[tokio::test]
async fn encoded_slash_dot_dot_is_400() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = raw_get(&gw, "/properties%2f..", &[]).await;
        assert_eq!(reply.status, 400, "{}", reply.head);
    })
    .await
}

#[tokio::test]
async fn encoded_traversal_out_of_public_route_is_400() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = raw_get(&gw, "/public/..%2f..%2fproperties", &[]).await;
        assert_eq!(reply.status, 400, "{}", reply.head);
    })
    .await
}

#[tokio::test]
async fn dot_segments_out_of_public_health_get_the_target_policy() {
    within(async {
        let (_upstream, gw) = start().await;
        let reply = raw_get(&gw, "/health/../properties", &[]).await;
        assert_eq!(reply.status, 401, "{}", reply.head);
        assert_eq!(reply.msg().as_deref(), Some("Missing Authorization Header"));
    })
    .await
}

// ---------------------------------------------------------------------------------------
// 10. Login flood
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_does_not_starve_authenticated_traffic() {
    within(async {
        let (_upstream, gw) = start().await;
        let token = gw.login("test@example.com", "password").await;

        let login_client = gw.client_http1();
        let url = gw.url("/users/login");
        let logins: Vec<_> = (0..200)
            .map(|i| {
                let request = login_client
                    .post(&url)
                    .json(&json!({"email": "test@example.com", "password": format!("wrong-{i}")}));
                tokio::spawn(async move { send(request).await.status })
            })
            .collect();

        let api_client = gw.client();
        let gets: Vec<_> = (0..20)
            .map(|_| {
                let request = api_client.get(gw.url("/properties")).bearer_auth(&token);
                tokio::spawn(async move { send(request).await.status })
            })
            .collect();

        for (i, get) in gets.into_iter().enumerate() {
            let status = get.await.expect("GET task");
            assert_eq!(status, StatusCode::OK, "GET #{i} during the login flood");
        }
        for (i, login) in logins.into_iter().enumerate() {
            let status = login.await.expect("login task");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "login #{i} of the flood");
        }
    })
    .await
}
