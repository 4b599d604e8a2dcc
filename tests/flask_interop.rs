//! Interoperability with the real Flask-JWT-Extended (the library of the Flask API the
//! gateway replaces), driven through `tests/interop/flask_jwt.py`:
//! tokens minted by either side are accepted by the other, and the same bad token gets the
//! same status and `msg` from both.
//!
//! Needs python3 with the packages of `tests/interop/requirements.txt`; without them these
//! tests fail (they do not skip). `PYTHON` overrides the interpreter.

mod support;

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{hs256_header, hs512_token, none_token, sign_hs256, with, Gateway, Upstream, SECRET};

const INSTALL_HINT: &str = "pip install -r tests/interop/requirements.txt";
/// The Flask-JWT-Extended version the expectations were checked against.
const FLASK_JWT_EXTENDED_VERSION: &str = "4.7.1";
/// No test may take longer than this.
const TEST_DEADLINE: Duration = Duration::from_secs(90);
/// Deadline of one Python run.
const PYTHON_DEADLINE: Duration = Duration::from_secs(30);
const OTHER_SECRET: &str = "another-secret-key-that-is-also-long-enough-42";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";

async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, body)
        .await
        .expect("test did not finish within its deadline")
}

fn python_exe() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/flask_jwt.py")
        .display()
        .to_string()
}

/// Run a command to completion under [`PYTHON_DEADLINE`] without blocking the runtime;
/// returns (success, stdout, stderr). Output goes to temp files, so no pipe can fill up.
async fn run(program: &str, args: &[String]) -> (bool, String, String) {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone temp file"))
        .stderr(err.try_clone().expect("clone temp file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install Python 3, then `{INSTALL_HINT}`")
        });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if started.elapsed() > PYTHON_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {PYTHON_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let read = |f: &mut std::fs::File| {
        use std::io::{Read, Seek};
        let mut s = String::new();
        f.rewind().expect("rewind");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    (status.success(), read(&mut out), read(&mut err))
}

/// Fail (never skip) unless python3 with the pinned Flask-JWT-Extended is available.
async fn require_flask_jwt_extended() {
    let (ok, stdout, stderr) = run(
        &python_exe(),
        &[
            "-c".into(),
            "import flask, jwt, flask_jwt_extended; print(flask_jwt_extended.__version__)".into(),
        ],
    )
    .await;
    assert!(
        ok,
        "python3 cannot import Flask-JWT-Extended; run `{INSTALL_HINT}`\n{stderr}"
    );
    assert_eq!(
        stdout.trim(),
        FLASK_JWT_EXTENDED_VERSION,
        "wrong Flask-JWT-Extended version; run `{INSTALL_HINT}`"
    );
}

/// Run `flask_jwt.py` with the test secret and `options` (e.g. --issuer) before `args`.
async fn flask(options: &[&str], args: &[&str]) -> String {
    let mut argv = vec![script(), "--secret".into(), SECRET.into()];
    argv.extend(options.iter().map(|s| s.to_string()));
    argv.extend(args.iter().map(|s| s.to_string()));
    let (ok, stdout, stderr) = run(&python_exe(), &argv).await;
    assert!(
        ok,
        "flask_jwt.py {args:?} failed (is `{INSTALL_HINT}` done?)\n{stderr}"
    );
    stdout.trim().to_owned()
}

/// Flask-JWT-Extended's answers for each `Authorization` value (`None`: no header).
async fn flask_verify_all(options: &[&str], values: &[Option<String>]) -> Vec<Outcome> {
    let out = flask(
        options,
        &[
            "verify-batch",
            &serde_json::to_string(values).expect("JSON"),
        ],
    )
    .await;
    let replies: Vec<Value> = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("flask_jwt.py printed no JSON array ({e}): {out}"));
    assert_eq!(replies.len(), values.len(), "{out}");
    replies
        .iter()
        .map(|r| Outcome {
            status: r["status"].as_u64().expect("status") as u16,
            msg: r["body"]["msg"].as_str().map(str::to_owned),
        })
        .collect()
}

/// A status and the `msg` of the JSON body, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: u16,
    msg: Option<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.msg {
            Some(m) => write!(f, "{} {m:?}", self.status),
            None => write!(f, "{} (no msg)", self.status),
        }
    }
}

/// The gateway's answer to `GET /properties` with this `Authorization` value.
async fn gateway_outcome(gw: &Gateway, authorization: Option<&str>) -> Outcome {
    let mut request = gw
        .client()
        .get(gw.url("/properties"))
        .timeout(Duration::from_secs(20));
    if let Some(v) = authorization {
        request = request.header("authorization", v);
    }
    let response = request.send().await.expect("request to the gateway");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Outcome {
        status,
        msg: body.get("msg").and_then(Value::as_str).map(str::to_owned),
    }
}

/// Send every row to both and list the rows where they differ.
async fn compare(gw: &Gateway, flask_options: &[&str], rows: &[(&str, Option<String>)]) {
    let values: Vec<Option<String>> = rows.iter().map(|(_, v)| v.clone()).collect();
    let flask = flask_verify_all(flask_options, &values).await;
    let mut mismatches = Vec::new();
    for ((row, value), flask) in rows.iter().zip(flask) {
        let gateway = gateway_outcome(gw, value.as_deref()).await;
        if gateway != flask {
            mismatches.push(format!(
                "row {row:?}: Flask-JWT-Extended {flask}, gateway {gateway}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "the gateway differs from Flask-JWT-Extended {FLASK_JWT_EXTENDED_VERSION}:\n{}",
        mismatches.join("\n")
    );
}

/// Claims in the shape both sides issue, valid now.
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
    })
}

fn bearer(claims: &Value) -> Option<String> {
    Some(format!(
        "Bearer {}",
        sign_hs256(&hs256_header(), claims, SECRET)
    ))
}

async fn start_with_iss_aud() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let yaml = support::config_yaml(&upstream.url()).replace(
        "auth:\n",
        &format!("auth:\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n"),
    );
    assert!(yaml.contains("issuer:"), "auth section not found");
    let gw = Gateway::start(&yaml).await;
    (upstream, gw)
}

// ---------------------------------------------------------------------------------------

/// Flask-JWT-Extended is installed; a gateway with the default test config in front of
/// the example upstream.
async fn interop_gateway() -> (Upstream, Gateway) {
    require_flask_jwt_extended().await;
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    (upstream, gw)
}

#[tokio::test]
async fn flask_minted_token_is_accepted_by_the_gateway() {
    within(async {
        require_flask_jwt_extended().await;
        let identity = "flask-user@example.com";
        let token = flask(&[], &["mint", identity]).await;
        assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");

        let upstream = Upstream::start();
        let gw = Gateway::start_default(&upstream).await;
        let response = gw
            .client()
            .get(gw.url("/echo"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(status, 200, "{body}");
        let subjects: Vec<&str> = body["headers"]
            .as_array()
            .expect("echo headers")
            .iter()
            .filter(|h| h[0] == "x-auth-subject")
            .filter_map(|h| h[1].as_str())
            .collect();
        assert_eq!(subjects, [identity], "{body}");
    })
    .await
}

#[tokio::test]
async fn gateway_token_is_accepted_by_flask() {
    within(async {
        let (_upstream, gw) = interop_gateway().await;
        let token = gw.login("test@example.com", "password").await;
        let out = flask(&[], &["verify", &token]).await;
        let reply: Value = serde_json::from_str(&out).expect("JSON from flask_jwt.py");
        assert_eq!(
            reply,
            json!({"status": 200, "body": {"identity": "test@example.com"}}),
            "Flask-JWT-Extended refused the gateway's token"
        );
    })
    .await
}

#[tokio::test]
async fn refusals_match_flask_jwt_extended() {
    within(async {
        let (_upstream, gw) = interop_gateway().await;
        let now = support::now();
        let valid = access_claims("test@example.com");
        let rows: Vec<(&str, Option<String>)> = vec![
            (
                "expired",
                bearer(&with(
                    valid.clone(),
                    json!({"iat": now - 2000, "nbf": now - 2000, "exp": now - 1000}),
                )),
            ),
            (
                "bad signature",
                Some(format!(
                    "Bearer {}",
                    sign_hs256(&hs256_header(), &valid, OTHER_SECRET)
                )),
            ),
            ("Bearer abc", Some("Bearer abc".into())),
            ("no Authorization header", None),
            ("Token scheme", Some("Token abc".into())),
            ("Bearer without token", Some("Bearer".into())),
            ("Bearer with two tokens", Some("Bearer a b".into())),
            ("two Bearer credentials", Some("Bearer a, Bearer b".into())),
            (
                "Basic then Bearer abc",
                Some("Basic xyz, Bearer abc".into()),
            ),
            ("alg none", Some(format!("Bearer {}", none_token(&valid)))),
            ("HS512", Some(format!("Bearer {}", hs512_token(&valid)))),
            (
                "refresh token",
                bearer(&with(valid.clone(), json!({"type": "refresh"}))),
            ),
            (
                "nbf in the future",
                bearer(&with(valid.clone(), json!({"nbf": now + 600}))),
            ),
            (
                "iat in the future",
                bearer(&with(valid.clone(), json!({"iat": now + 600}))),
            ),
        ];
        compare(&gw, &[], &rows).await;
    })
    .await
}

#[tokio::test]
async fn claim_edge_cases_match_flask_jwt_extended() {
    within(async {
        let (_upstream, gw) = interop_gateway().await;
        let now = support::now();
        let valid = access_claims("test@example.com");
        let rows: Vec<(&str, Option<String>)> = vec![
            ("no sub", bearer(&with(valid.clone(), json!({"sub": null})))),
            (
                "numeric sub",
                bearer(&with(valid.clone(), json!({"sub": 42}))),
            ),
            (
                "numeric jti",
                bearer(&with(valid.clone(), json!({"jti": 7}))),
            ),
            (
                "exp not a number",
                bearer(&with(valid.clone(), json!({"exp": "soon"}))),
            ),
            (
                "expired and nbf in the future",
                bearer(&with(
                    valid.clone(),
                    json!({"nbf": now + 600, "exp": now - 600}),
                )),
            ),
            (
                "expired without sub",
                bearer(&with(valid.clone(), json!({"sub": null, "exp": now - 600}))),
            ),
            (
                "expired with numeric sub",
                bearer(&with(valid.clone(), json!({"sub": 42, "exp": now - 600}))),
            ),
            (
                "expired refresh token",
                bearer(&with(
                    valid.clone(),
                    json!({"type": "refresh", "exp": now - 600}),
                )),
            ),
            (
                "fractional exp (RFC 7519 NumericDate)",
                bearer(&with(valid.clone(), json!({"exp": now as f64 + 900.5}))),
            ),
        ];
        compare(&gw, &[], &rows).await;
    })
    .await
}

#[tokio::test]
async fn issuer_and_audience_match_flask_jwt_extended() {
    within(async {
        require_flask_jwt_extended().await;
        let (_upstream, gw) = start_with_iss_aud().await;
        let options = ["--issuer", ISSUER, "--audience", AUDIENCE];

        // Tokens issued by either side, configured alike, are accepted by the other.
        let gateway_token = gw.login("test@example.com", "password").await;
        let out = flask(&options, &["verify", &gateway_token]).await;
        let reply: Value = serde_json::from_str(&out).expect("JSON from flask_jwt.py");
        assert_eq!(
            reply,
            json!({"status": 200, "body": {"identity": "test@example.com"}}),
            "Flask-JWT-Extended refused the gateway's iss/aud token"
        );
        let flask_token = flask(&options, &["mint", "flask-user@example.com"]).await;
        let outcome = gateway_outcome(&gw, Some(&format!("Bearer {flask_token}"))).await;
        assert_eq!(
            outcome.status, 200,
            "gateway refused Flask's iss/aud token: {outcome}"
        );

        let now = support::now();
        let valid = with(
            access_claims("test@example.com"),
            json!({"iss": ISSUER, "aud": AUDIENCE}),
        );
        let rows: Vec<(&str, Option<String>)> = vec![
            (
                "wrong iss",
                bearer(&with(valid.clone(), json!({"iss": "https://evil.test"}))),
            ),
            (
                "wrong aud",
                bearer(&with(valid.clone(), json!({"aud": "other"}))),
            ),
            (
                "missing aud",
                bearer(&with(valid.clone(), json!({"aud": null}))),
            ),
            (
                "missing iss",
                bearer(&with(valid.clone(), json!({"iss": null}))),
            ),
            (
                "aud list containing the audience",
                bearer(&with(valid.clone(), json!({"aud": ["other", AUDIENCE]}))),
            ),
            (
                "wrong iss and wrong aud",
                bearer(&with(
                    valid.clone(),
                    json!({"iss": "https://evil.test", "aud": "other"}),
                )),
            ),
            (
                "expired and missing aud",
                bearer(&with(
                    valid.clone(),
                    json!({"aud": null, "iat": now - 2000, "nbf": now - 2000, "exp": now - 1000}),
                )),
            ),
            (
                "expired and wrong iss",
                bearer(&with(
                    valid.clone(),
                    json!({"iss": "https://evil.test", "exp": now - 600}),
                )),
            ),
            (
                "expired and wrong aud",
                bearer(&with(
                    valid.clone(),
                    json!({"aud": "other", "exp": now - 600}),
                )),
            ),
            (
                "empty aud",
                bearer(&with(valid.clone(), json!({"aud": ""}))),
            ),
        ];
        compare(&gw, &options, &rows).await;
    })
    .await
}
