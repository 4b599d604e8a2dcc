//! Security tests of authentication: JWT verification against RFC 8725's attacks, and
//! abuse of the login endpoint. Every test checks what the client saw and what the
//! upstream (an in-process recorder) did or did not receive.

mod security_support;
mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use security_support::{
    access_claims, edit, now, security_yaml, sign_raw, token, within, Recorder, Seen,
};
use support::{sign_hs256, status_json, Gateway, SECRET};

/// Another 46-byte secret: the attacker's, or the second configured key.
const OTHER_SECRET: &str = "attacker-secret-that-is-long-enough-012345678";

/// Timeouts long enough that pooled client connections are never closed under a test.
const SERVER: &[(&str, &str)] = &[
    ("idle_timeout", "30s"),
    ("header_read_timeout", "10s"),
    ("body_read_timeout", "10s"),
];

/// The TLS config of these tests in front of `upstream`.
fn yaml(upstream: &str) -> String {
    security_yaml(upstream, false, SERVER)
}

/// A recorder upstream and a TLS gateway (the harness's base config) in front of it.
async fn setup() -> (Recorder, Gateway) {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&yaml(&recorder.url())).await;
    (recorder, gw)
}

/// GET /echo with `Authorization: <authorization>`; status and JSON body.
async fn get_echo(gw: &Gateway, authorization: &str) -> (u16, Value) {
    let response = within(
        30,
        "GET /echo",
        gw.client()
            .get(gw.url("/echo"))
            .header("authorization", authorization)
            .send(),
    )
    .await
    .expect("request");
    within(30, "body", status_json(response)).await
}

/// Give the gateway a moment to forward anything it (wrongly) would, then return what
/// the upstream has seen.
async fn settled(recorder: &Recorder) -> Vec<Seen> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    recorder.seen()
}

/// `token` is refused with `status` and exactly `msg`, and nothing reaches the upstream.
async fn assert_refused(gw: &Gateway, recorder: &Recorder, token: &str, status: u16, msg: &str) {
    let before = recorder.count();
    let (got, body) = get_echo(gw, &format!("Bearer {token}")).await;
    assert_eq!((got, body["msg"].as_str()), (status, Some(msg)), "{body}");
    let seen = settled(recorder).await;
    assert_eq!(seen.len(), before, "nothing is forwarded: {seen:?}");
}

/// `token` is accepted, and the upstream gets the request with the verified subject.
async fn assert_accepted(gw: &Gateway, recorder: &Recorder, token: &str, sub: &str) {
    let before = recorder.count();
    let (status, body) = get_echo(gw, &format!("Bearer {token}")).await;
    assert_eq!(status, 200, "{body}");
    let seen = recorder.seen();
    assert_eq!(seen.len(), before + 1, "{seen:?}");
    assert_eq!(seen[before].header("x-auth-subject"), sub);
}

/// Claims of a valid access token of test@example.com, modified by `change`.
fn claims_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = access_claims("test@example.com", &["user"]);
    change(&mut claims);
    claims
}

// ---------------------------------------------------------------------------------------
// JWT (RFC 8725)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn crit_header_is_refused() {
    let (recorder, gw) = setup().await;
    let claims = access_claims("test@example.com", &["user"]);
    let crit = sign_hs256(
        &json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
        &claims,
        SECRET,
    );
    assert_refused(
        &gw,
        &recorder,
        &crit,
        422,
        "Unsupported critical header parameter",
    )
    .await;
    // The same token without `crit` is fine.
    let plain = sign_hs256(&json!({"alg": "HS256", "typ": "JWT"}), &claims, SECRET);
    assert_accepted(&gw, &recorder, &plain, "test@example.com").await;
}

#[tokio::test]
async fn attacker_keys_in_jwk_jku_x5u_x5c_headers_are_ignored() {
    let (recorder, gw) = setup().await;
    // Where an attacker would publish keys: it must never be asked for anything.
    let attacker = Recorder::start().await;
    let jwk = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(OTHER_SECRET)});
    let headers = [
        json!({"alg": "HS256", "typ": "JWT", "jwk": jwk}),
        json!({"alg": "HS256", "typ": "JWT", "jku": format!("{}/jwks.json", attacker.url())}),
        json!({"alg": "HS256", "typ": "JWT", "x5u": format!("{}/cert.pem", attacker.url())}),
        json!({"alg": "HS256", "typ": "JWT", "x5c": ["MIIBszCCAVmgAwIBAgIUQ3ZhdHRhY2tlcg=="]}),
        json!({"alg": "HS256", "typ": "JWT", "kid": "attacker", "jwk": jwk}),
    ];
    let claims = access_claims("admin@example.com", &["user", "admin"]);
    for header in headers {
        let forged = sign_hs256(&header, &claims, OTHER_SECRET);
        assert_refused(
            &gw,
            &recorder,
            &forged,
            422,
            "Signature verification failed",
        )
        .await;
    }
    assert!(recorder.seen().is_empty(), "nothing is forwarded");
    assert!(
        attacker.seen().is_empty(),
        "the gateway never fetches keys a token points at: {:?}",
        attacker.seen()
    );
}

#[tokio::test]
async fn kid_selects_the_key_by_exact_match() {
    let recorder = Recorder::start().await;
    let yaml = edit(
        &yaml(&recorder.url()),
        &format!("  keys:\n    - algorithm: HS256\n      secret: \"{SECRET}\"\n"),
        &format!(
            "  keys:\n    - kid: main\n      algorithm: HS256\n      secret: \"{SECRET}\"\n      sign: true\n    - kid: other\n      algorithm: HS256\n      secret: \"{OTHER_SECRET}\"\n"
        ),
    );
    let gw = Gateway::start(&yaml).await;
    let claims = access_claims("test@example.com", &["user"]);
    let with_kid = |kid: &str, secret: &str| {
        sign_hs256(
            &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
            &claims,
            secret,
        )
    };
    for (kid, secret) in [
        ("main ", SECRET),
        ("MAIN", SECRET),
        (" main", SECRET),
        ("main\u{0}", SECRET),
        ("other", SECRET),
        ("main", OTHER_SECRET),
    ] {
        let before = recorder.count();
        let (status, body) = get_echo(&gw, &format!("Bearer {}", with_kid(kid, secret))).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (422, Some("Signature verification failed")),
            "kid {kid:?}: {body}"
        );
        assert_eq!(settled(&recorder).await.len(), before, "kid {kid:?}");
    }
    assert_accepted(
        &gw,
        &recorder,
        &with_kid("main", SECRET),
        "test@example.com",
    )
    .await;
    assert_accepted(
        &gw,
        &recorder,
        &with_kid("other", OTHER_SECRET),
        "test@example.com",
    )
    .await;
    assert_eq!(
        recorder.count(),
        2,
        "only the two exact matches got through"
    );
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    let (recorder, gw) = setup().await;
    let future = sign_hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims_with(|c| {
            c["iat"] = (now() + 3600).into();
            c["exp"] = (now() + 4200).into();
        }),
        SECRET,
    );
    assert_refused(
        &gw,
        &recorder,
        &future,
        422,
        "The token is not yet valid (iat)",
    )
    .await;
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn lifetime_over_max_token_lifetime_is_refused() {
    let (recorder, gw) = setup().await;
    let iat = now() - 60;
    let long = sign_hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims_with(|c| {
            c["iat"] = iat.into();
            c["nbf"] = iat.into();
            c["exp"] = (iat + 25 * 3600).into();
        }),
        SECRET,
    );
    assert_refused(
        &gw,
        &recorder,
        &long,
        422,
        "Token lifetime exceeds the allowed maximum",
    )
    .await;
    // 23 hours is within the default 24h maximum.
    let fine = sign_hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims_with(|c| {
            c["iat"] = iat.into();
            c["nbf"] = iat.into();
            c["exp"] = (iat + 23 * 3600).into();
        }),
        SECRET,
    );
    assert_accepted(&gw, &recorder, &fine, "test@example.com").await;
    assert_eq!(recorder.count(), 1);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let recorder = Recorder::start().await;
    let yaml = edit(
        &yaml(&recorder.url()),
        "auth:\n",
        "auth:\n  issuer: https://gw.example\n  audience: properties-api\n",
    );
    let gw = Gateway::start(&yaml).await;
    let sign = |iss: Option<&str>, aud: Option<&str>| {
        sign_hs256(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &claims_with(|c| {
                if let Some(iss) = iss {
                    c["iss"] = iss.into();
                }
                if let Some(aud) = aud {
                    c["aud"] = aud.into();
                }
            }),
            SECRET,
        )
    };
    let cases = [
        (None, None, "Token is missing the \"iss\" claim"),
        (
            None,
            Some("properties-api"),
            "Token is missing the \"iss\" claim",
        ),
        (
            Some("https://gw.example"),
            None,
            "Token is missing the \"aud\" claim",
        ),
        (
            Some("https://evil.example"),
            Some("properties-api"),
            "Invalid issuer",
        ),
        (
            Some("https://gw.example"),
            Some("other-api"),
            "Audience doesn't match",
        ),
    ];
    for (iss, aud, msg) in cases {
        assert_refused(&gw, &recorder, &sign(iss, aud), 422, msg).await;
    }
    assert!(recorder.seen().is_empty());
    let good = sign(Some("https://gw.example"), Some("properties-api"));
    assert_accepted(&gw, &recorder, &good, "test@example.com").await;
}

#[tokio::test]
async fn authorization_header_over_8_kib_is_refused_without_decoding() {
    let (recorder, gw) = setup().await;
    // A correctly signed, otherwise valid token padded to a given header size.
    let padded = |header_len: usize| {
        let base = token("test@example.com", &["user"]).len();
        // base64 grows 4/3: pad the claim so the whole header lands near header_len.
        let pad = (header_len.saturating_sub(base + 7 + 16)) * 3 / 4;
        let t = sign_hs256(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &claims_with(|c| c["pad"] = "p".repeat(pad).into()),
            SECRET,
        );
        format!("Bearer {t}")
    };
    let bad_header = "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'";

    let huge = padded(9000);
    assert!(huge.len() > 8192 && huge.len() <= 9100, "{}", huge.len());
    let (status, body) = get_echo(&gw, &huge).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some(bad_header)),
        "{body}"
    );
    // Garbage of that size gets the same answer: it is not decoded at all.
    let garbage = format!("Bearer {}", "a".repeat(9000 - 7));
    let (status, body) = get_echo(&gw, &garbage).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some(bad_header)),
        "{body}"
    );
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");

    // Under the limit the same kind of token is accepted.
    let big = padded(7000);
    assert!(big.len() < 8192, "{}", big.len());
    let (status, body) = get_echo(&gw, &big).await;
    assert_eq!(status, 200, "{body}");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-auth-subject"), "test@example.com");
}

#[tokio::test]
async fn duplicate_claims_are_refused() {
    let (recorder, gw) = setup().await;
    let now = now();
    let payload = format!(
        r#"{{"sub":"test@example.com","iat":{now},"nbf":{now},"exp":{},"type":"access","roles":["user"],"sub":"admin@example.com"}}"#,
        now + 600
    );
    let dup = sign_raw(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &payload,
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let (status, body) = get_echo(&gw, &format!("Bearer {dup}")).await;
    assert_eq!(status, 422, "{body}");
    let msg = body["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Invalid payload string: duplicate member \"sub\""),
        "{body}"
    );
    let dup_header = sign_raw(
        r#"{"alg":"HS256","typ":"JWT","alg":"none"}"#,
        &access_claims("test@example.com", &["user"]).to_string(),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let (status, body) = get_echo(&gw, &format!("Bearer {dup_header}")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid header string: duplicate member \"alg\""),
        "{body}"
    );
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

#[tokio::test]
async fn hmac_secret_of_31_bytes_stops_the_config() {
    let recorder = Recorder::start().await;
    let base = yaml(&recorder.url());
    let short = "s".repeat(31);
    let yaml = edit(
        &base,
        &format!("secret: \"{SECRET}\""),
        &format!("secret: \"{short}\""),
    );
    let Err(err) = gateway::config::from_yaml(&yaml, std::path::Path::new("gateway.yaml")) else {
        panic!("a 31-byte HMAC secret is refused");
    };
    assert!(
        err.problems.iter().any(|p| p
            == "gateway.yaml: auth.keys[0].secret: HMAC secret is 31 bytes; at least 32 are required"),
        "{:?}",
        err.problems
    );
    // 32 bytes is enough.
    let yaml = edit(
        &base,
        &format!("secret: \"{SECRET}\""),
        &format!("secret: \"{}\"", "s".repeat(32)),
    );
    gateway::config::from_yaml(&yaml, std::path::Path::new("gateway.yaml"))
        .unwrap_or_else(|e| panic!("32 bytes are accepted: {e}"));
    assert!(
        recorder.seen().is_empty(),
        "no gateway ran: nothing forwarded"
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let (recorder, gw) = setup().await;
    let valid = format!("Bearer {}", token("test@example.com", &["user"]));
    for client in [gw.client(), gw.client_http1()] {
        let response = within(
            30,
            "GET",
            client
                .get(gw.url("/echo"))
                .header("authorization", &valid)
                .header("authorization", &valid)
                .send(),
        )
        .await
        .expect("request");
        let (status, body) = status_json(response).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (
                422,
                Some("Bad Authorization header. Expected 'Authorization: Bearer <JWT>'")
            ),
            "{body}"
        );
    }
    assert!(settled(&recorder).await.is_empty(), "nothing is forwarded");
}

#[tokio::test]
async fn lowercase_bearer_is_accepted() {
    let (recorder, gw) = setup().await;
    let t = token("test@example.com", &["user"]);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let (status, body) = get_echo(&gw, &format!("{scheme} {t}")).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let seen = recorder.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("x-auth-subject"), "test@example.com");
        assert_eq!(s.header("x-auth-roles"), "user");
    }
}

/// The `alg` allow-list comes from the configured keys (HS256 only here).
const ALG_NOT_ALLOWED: &str = "The specified alg value is not allowed";

#[tokio::test]
async fn alg_none_is_refused() {
    let (recorder, gw) = setup().await;
    let claims = access_claims("admin@example.com", &["user", "admin"]).to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE","typ":"JWT"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        assert_refused(&gw, &recorder, &unsigned, 422, ALG_NOT_ALLOWED).await;
    }
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn alg_hs512_not_configured_is_refused() {
    let (recorder, gw) = setup().await;
    let claims = access_claims("test@example.com", &["user"]).to_string();
    for alg in [Algorithm::HS512, Algorithm::HS384] {
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT"}).to_string();
        let t = sign_raw(&header, &claims, alg, SECRET.as_bytes());
        assert_refused(&gw, &recorder, &t, 422, ALG_NOT_ALLOWED).await;
    }
    assert!(recorder.seen().is_empty());
}

#[tokio::test]
async fn alg_rs256_signed_with_the_hmac_secret_is_refused() {
    let (recorder, gw) = setup().await;
    // Algorithm confusion: claim RS256 but sign with the HMAC secret as if it were the
    // "public key" a confused verifier would use.
    let claims = access_claims("admin@example.com", &["user", "admin"]).to_string();
    let header = r#"{"alg":"RS256","typ":"JWT"}"#;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(&claims)
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("sign");
    let confused = format!("{input}.{sig}");
    assert_refused(&gw, &recorder, &confused, 422, ALG_NOT_ALLOWED).await;
    for alg in ["ES256", "PS256", "EdDSA"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let t = format!("{input}.{sig}");
        assert_refused(&gw, &recorder, &t, 422, ALG_NOT_ALLOWED).await;
    }
    assert!(recorder.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// Login abuse
// ---------------------------------------------------------------------------------------

/// POST /users/login with `body` as JSON; status, headers and body bytes.
async fn login_raw(
    gw: &Gateway,
    client: &reqwest::Client,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let response = within(
        60,
        "login",
        client
            .post(gw.url("/users/login"))
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await
    .expect("login request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = within(30, "login body", response.bytes())
        .await
        .expect("body");
    (status, headers, bytes)
}

fn msg_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes).expect("JSON")["msg"]
        .as_str()
        .expect("msg")
        .to_owned()
}

#[tokio::test]
async fn login_body_over_4_kib_gets_413() {
    let (recorder, gw) = setup().await;
    let body = json!({
        "email": "test@example.com",
        "password": "password",
        "padding": "p".repeat(5000),
    })
    .to_string()
    .into_bytes();
    let (status, _, bytes) = login_raw(&gw, &gw.client(), body.clone()).await;
    assert_eq!(
        (status, msg_of(&bytes)),
        (413, "Request body too large".into())
    );
    // Without a Content-Length (streamed), the limit holds while reading.
    let stream = futures_util::stream::iter(
        body.chunks(512)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let response = within(
        30,
        "streamed login",
        gw.client()
            .post(gw.url("/users/login"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    )
    .await
    .expect("request");
    let (status, json) = status_json(response).await;
    assert_eq!(
        (status, json["msg"].as_str()),
        (413, Some("Request body too large"))
    );
    assert!(
        settled(&recorder).await.is_empty(),
        "login never reaches the upstream"
    );
}

#[tokio::test]
async fn login_password_over_1_kib_gets_400() {
    let (recorder, gw) = setup().await;
    let body = json!({"email": "test@example.com", "password": "a".repeat(1025)})
        .to_string()
        .into_bytes();
    assert!(body.len() < 4096);
    let (status, _, bytes) = login_raw(&gw, &gw.client(), body).await;
    assert_eq!((status, msg_of(&bytes)), (400, "Password too long".into()));
    // 1024 bytes is a (wrong) password like any other.
    let body = json!({"email": "test@example.com", "password": "a".repeat(1024)})
        .to_string()
        .into_bytes();
    let (status, _, bytes) = login_raw(&gw, &gw.client(), body).await;
    assert_eq!(
        (status, msg_of(&bytes)),
        (401, "Invalid credentials".into())
    );
    assert!(
        settled(&recorder).await.is_empty(),
        "login never reaches the upstream"
    );
}

#[tokio::test]
async fn argon2_params_below_owasp_stop_the_config() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let recorder = Recorder::start().await;
    let base = yaml(&recorder.url());
    for (m, t) in [(1024, 1), (7168, 4), (19456, 1)] {
        let params = argon2::Params::new(m, t, 1, None).expect("params");
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let weak = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"password", &salt)
            .expect("hash")
            .to_string();
        let yaml = edit(
            &base,
            &format!(
                "  users:\n    - email: test@example.com\n      password_hash: \"{}\"\n",
                support::PASSWORD_HASH
            ),
            &format!("  users:\n    - email: test@example.com\n      password_hash: \"{weak}\"\n"),
        );
        let Err(err) = gateway::config::from_yaml(&yaml, std::path::Path::new("gateway.yaml"))
        else {
            panic!("m={m},t={t} must be refused");
        };
        let expected = format!(
            "gateway.yaml: auth.users[0].password_hash: argon2id parameters m={m},t={t} are below the OWASP minimum (e.g. m=19456,t=2)"
        );
        assert!(
            err.problems.contains(&expected),
            "m={m},t={t}: {:?}",
            err.problems
        );
    }
    assert!(
        recorder.seen().is_empty(),
        "no gateway ran: nothing forwarded"
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_identical_answers() {
    let (recorder, gw) = setup().await;
    let client = gw.client_http1();
    let attempt = |email: &str, password: &str| {
        json!({"email": email, "password": password})
            .to_string()
            .into_bytes()
    };
    let answers = [
        login_raw(&gw, &client, attempt("nobody@example.com", "password")).await,
        login_raw(&gw, &client, attempt("test@example.com", "wrong-password")).await,
        login_raw(&gw, &client, attempt("disabled@example.com", "password")).await,
    ];
    let comparable = |h: &reqwest::header::HeaderMap| {
        let mut v: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| {
                let value = match n.as_str() {
                    "date" | "x-request-id" => "<varies>".to_owned(),
                    _ => v.to_str().unwrap_or("<binary>").to_owned(),
                };
                (n.as_str().to_owned(), value)
            })
            .collect();
        v.sort();
        v
    };
    let (status, headers, body) = &answers[0];
    assert_eq!(*status, 401);
    assert_eq!(msg_of(body), "Invalid credentials");
    for (other_status, other_headers, other_body) in &answers[1..] {
        assert_eq!(other_status, status);
        assert_eq!(comparable(other_headers), comparable(headers));
        assert_eq!(other_body, body);
    }
    assert!(
        settled(&recorder).await.is_empty(),
        "login never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_do_not_starve_authenticated_requests() {
    let (recorder, gw) = setup().await;
    let gw = std::sync::Arc::new(gw);
    within(120, "500 logins and 20 GETs", async {
        // One HTTP/2 connection carries the login flood (under the per-IP limit).
        let flood_client = gw.client();
        let mut logins = Vec::new();
        for i in 0..500 {
            let (gw, client) = (gw.clone(), flood_client.clone());
            logins.push(tokio::spawn(async move {
                let password = if i % 2 == 0 { "password" } else { "wrong" };
                let body = json!({"email": "test@example.com", "password": password})
                    .to_string()
                    .into_bytes();
                login_raw(&gw, &client, body).await.0
            }));
        }
        let token = token("test@example.com", &["user"]);
        let client = gw.client();
        for i in 0..20 {
            let response = within(
                60,
                "authenticated GET during the login flood",
                client.get(gw.url("/properties")).bearer_auth(&token).send(),
            )
            .await
            .unwrap_or_else(|e| panic!("GET {i}: {e}"));
            assert_eq!(response.status(), 200, "GET {i}");
        }
        for login in logins {
            let status = login.await.expect("login task");
            assert!(status == 200 || status == 401, "login got {status}");
        }
    })
    .await;
    let gets = recorder.with_path("/properties");
    assert_eq!(gets.len(), 20, "every GET reached the upstream");
    assert!(gets
        .iter()
        .all(|s| s.method == "GET" && s.header("x-auth-subject") == "test@example.com"));
    assert_eq!(recorder.count(), 20, "logins never reach the upstream");
}
