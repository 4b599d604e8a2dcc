//! Token lifecycle on one instance with the memory store: refresh rotation and reuse
//! detection, logout, brute-force limits, admin revocation of a subject, and the JWK set.

mod support;

use std::time::Duration;

use base64::Engine;
use support::{lifecycle_yaml, Gateway, Upstream, ADMIN_TOKEN, PASSWORD_HASH};

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

fn token(body: &serde_json::Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_owned()
}

async fn start(upstream: &Upstream) -> Gateway {
    Gateway::start(&lifecycle_yaml(&upstream.url(), "memory")).await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let upstream = Upstream::start();
    let gw = start(&upstream).await;
    let first = gw.login_pair("test@example.com").await;
    let (access, refresh) = (
        token(&first, "access_token"),
        token(&first, "refresh_token"),
    );
    let (a, r) = (claims_of(&access), claims_of(&refresh));
    assert_eq!(r["type"], "refresh");
    assert_eq!(r["sub"], "test@example.com");
    assert_eq!(
        r["exp"].as_i64().unwrap() - r["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(
        a["fam"], r["fam"],
        "access and refresh tokens share the family"
    );

    let (status, second) = gw.refresh(&refresh).await;
    assert_eq!(status, 200, "{second}");
    let (access2, refresh2) = (
        token(&second, "access_token"),
        token(&second, "refresh_token"),
    );
    assert_ne!(refresh2, refresh);
    assert_eq!(claims_of(&access2)["fresh"], false);
    assert_eq!(claims_of(&access2)["roles"], serde_json::json!(["user"]));
    assert_eq!(gw.get_with("/properties", &access2).await.0, 200);

    // Presenting the rotated-out token again: reuse. The whole family is revoked.
    let (status, body) = gw.refresh(&refresh).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (401, Some("Token has been revoked"))
    );
    assert_eq!(
        gw.refresh(&refresh2).await.0,
        401,
        "the family's newest refresh token survived reuse"
    );
    let (status, body) = gw.get_with("/properties", &access2).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (401, Some("Token has been revoked"))
    );
    assert_eq!(gw.get_with("/properties", &access).await.0, 401);

    // Another login is another family, unaffected.
    let other = gw.login_pair("test@example.com").await;
    assert_eq!(
        gw.get_with("/properties", &token(&other, "access_token"))
            .await
            .0,
        200
    );
    assert_eq!(gw.refresh(&token(&other, "refresh_token")).await.0, 200);
    let revoked = r#"gateway_revoked_tokens_total{type="refresh_reuse"}"#;
    assert_eq!(gw.metric(revoked).await, 1.0);
}

#[tokio::test]
async fn token_types_are_kept_apart() {
    let upstream = Upstream::start();
    let gw = start(&upstream).await;
    let pair = gw.login_pair("test@example.com").await;
    let (status, body) = gw.refresh(&token(&pair, "access_token")).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some("Only refresh tokens are allowed"))
    );
    let (status, body) = gw
        .get_with("/properties", &token(&pair, "refresh_token"))
        .await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some("Only non-refresh tokens are allowed"))
    );
    let (status, _) = support::status_json(
        gw.client()
            .post(gw.url("/users/refresh"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "refresh without a token");
    let get = gw
        .client()
        .get(gw.url("/users/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_the_family() {
    let upstream = Upstream::start();
    let gw = start(&upstream).await;
    let pair = gw.login_pair("test@example.com").await;
    let kept = gw.login_pair("test@example.com").await;
    let (access, refresh) = (token(&pair, "access_token"), token(&pair, "refresh_token"));
    let (status, body) = gw.logout(&access, Some(&refresh)).await;
    assert_eq!(
        (status, body),
        (200, serde_json::json!({"msg": "Successfully logged out"}))
    );

    let response = gw
        .client()
        .get(gw.url("/properties"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["msg"],
        "Token has been revoked"
    );
    assert_eq!(gw.refresh(&refresh).await.0, 401);
    assert_eq!(gw.logout(&access, None).await.0, 401, "logging out twice");

    // The other session of the same user is untouched.
    assert_eq!(
        gw.get_with("/properties", &token(&kept, "access_token"))
            .await
            .0,
        200
    );
    // Logout without a body revokes the access token and its family too.
    let (status, _) = gw.logout(&token(&kept, "access_token"), None).await;
    assert_eq!(status, 200);
    assert_eq!(gw.refresh(&token(&kept, "refresh_token")).await.0, 401);
}

#[tokio::test]
async fn failed_logins_lock_the_account_then_the_address() {
    let upstream = Upstream::start();
    let gw = start(&upstream).await;
    for _ in 0..3 {
        assert_eq!(gw.try_login("test@example.com", "wrong").await.0, 401);
    }
    // Locked: even the right password is refused, before any hashing.
    let (status, retry_after, body) = gw.try_login("test@example.com", "password").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After {retry_after:?}"
    );
    assert_eq!(
        body["msg"],
        "Too many failed login attempts, try again later"
    );
    assert_eq!(
        gw.try_login("TEST@example.com", "password").await.0,
        429,
        "the account key ignores case"
    );

    // A success resets the account's counter: 2 failures, success, 2 failures: no lockout.
    for password in ["x", "x", "password", "x", "x"] {
        let expected = if password == "password" { 200 } else { 401 };
        assert_eq!(
            gw.try_login("admin@example.com", password).await.0,
            expected
        );
    }
    // 10 failures from this address in all: 3 + 4 so far; three more on unknown accounts.
    for i in 0..3 {
        assert_eq!(
            gw.try_login(&format!("nobody{i}@example.com"), "x").await.0,
            401
        );
    }
    let (status, _, _) = gw.try_login("someone-else@example.com", "x").await;
    assert_eq!(status, 429, "the address limit did not apply");
    assert_eq!(
        gw.metric(r#"gateway_login_limited_total{limit="account"}"#)
            .await,
        2.0
    );
    assert_eq!(
        gw.metric(r#"gateway_login_limited_total{limit="address"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn admin_endpoint_revokes_every_token_of_a_subject() {
    let upstream = Upstream::start();
    let gw = start(&upstream).await;
    let one = token(&gw.login_pair("test@example.com").await, "access_token");
    let two = gw.login_pair("test@example.com").await;
    let admin = token(&gw.login_pair("admin@example.com").await, "access_token");
    let admin_client = reqwest::Client::new();
    let revoke = |bearer: &'static str| {
        admin_client
            .post(gw.admin_url("/revocations"))
            .bearer_auth(bearer)
            .json(&serde_json::json!({"sub": "test@example.com"}))
            .send()
    };
    assert_eq!(revoke("not-the-admin-token").await.unwrap().status(), 403);
    assert_eq!(gw.get_with("/properties", &one).await.0, 200);
    let response = revoke(ADMIN_TOKEN).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(gw.get_with("/properties", &one).await.0, 401);
    assert_eq!(
        gw.get_with("/properties", &token(&two, "access_token"))
            .await
            .0,
        401
    );
    assert_eq!(gw.refresh(&token(&two, "refresh_token")).await.0, 401);
    assert_eq!(
        gw.get_with("/properties", &admin).await.0,
        200,
        "another subject was revoked"
    );
    // Tokens issued after the revocation (a later second) work again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = token(&gw.login_pair("test@example.com").await, "access_token");
    assert_eq!(gw.get_with("/properties", &fresh).await.0, 200);
}

#[tokio::test]
async fn admin_revocation_is_disabled_without_an_admin_token() {
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    let response = reqwest::Client::new()
        .post(gw.admin_url("/revocations"))
        .bearer_auth("anything-at-all-here")
        .json(&serde_json::json!({"sub": "test@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn jwks_publishes_the_public_keys_for_independent_verifiers() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.path().join("ec.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ec.pub"), key.public_key_pem()).unwrap();
    let yaml = format!(
        r#"
admin: {{ enabled: false }}
listeners: [{{ address: "127.0.0.1:0", tls: {{ self_signed: true }} }}]
upstreams: {{ properties: {{ url: "{}" }} }}
auth:
  users: [{{ email: test@example.com, password_hash: "{PASSWORD_HASH}" }}]
  keys:
    - {{ kid: ec-1, algorithm: ES256, private_key_file: {dir}/ec.key, public_key_file: {dir}/ec.pub }}
routes:
  - {{ name: echo, path: /echo, upstream: properties }}
"#,
        upstream.url(),
        dir = dir.path().display()
    );
    let gw = Gateway::start(&yaml).await;
    let response = gw
        .client()
        .get(gw.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let jwks: jsonwebtoken::jwk::JwkSet = response.json().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    let jwk = jwks.find("ec-1").expect("kid ec-1 published");

    // jsonwebtoken's own JWK path verifies a token the gateway issued.
    let token = gw.login("test@example.com", "password").await;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], "test@example.com");
    assert_eq!(data.header.kid.as_deref(), Some("ec-1"));

    // No asymmetric key, no JWK set: HMAC secrets are never published.
    let hs = Gateway::start_default(&upstream).await;
    let response = hs
        .client()
        .get(hs.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
