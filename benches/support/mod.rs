//! Shared by the benches: the bench configuration and a minimal in-process upstream.
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Ps4Uxv+gTwrI54Rt5O6Jsg$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0";

pub fn config(upstream: &str) -> gateway::config::Config {
    let yaml = format!(
        r#"
admin: {{ enabled: false }}
server: {{ max_connections_per_ip: 10000 }}
listeners: [{{ address: "127.0.0.1:0", plaintext: true }}]
upstreams: {{ backend: {{ url: "{upstream}" }} }}
auth:
  login_limits: {{ enabled: false }}
  users: [{{ email: bench@example.com, password_hash: "{HASH}" }}]
  keys: [{{ algorithm: HS256, secret: "bench-secret-bench-secret-bench-secret" }}]
routes:
  - {{ name: health, exact: /health, upstream: backend, auth: public }}
  - {{ name: properties, path: /properties, methods: [GET], upstream: backend }}
  - {{ name: echo, path: /echo, upstream: backend }}
"#
    );
    gateway::config::from_yaml(&yaml, Path::new("bench.yaml")).expect("bench config")
}

/// A minimal upstream: answers every request with a small JSON body.
pub async fn start_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        br#"{"id":1,"city":"Paris"}"#,
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A fresh HS256 access token of the bench user.
pub fn bench_token(config: &gateway::config::Config) -> String {
    use gateway::auth::jwt::{access_claims, now};
    let auth = config.auth.as_ref().expect("auth");
    let claims = access_claims(
        "bench@example.com",
        &["user".into()],
        &Default::default(),
        &auth.rules,
        now(),
    );
    auth.keys.sign(&claims).expect("sign")
}

/// `Authorization` value with [`bench_token`].
pub fn bench_bearer(config: &gateway::config::Config) -> String {
    format!("Bearer {}", bench_token(config))
}

/// One authenticated `GET /properties/1` through `app`; returns the body length.
pub async fn authenticated_get(app: gateway::App, bearer: &str) -> usize {
    use http_body_util::BodyExt;
    let request = Request::get("/properties/1")
        .header("host", "localhost")
        .header("authorization", bearer)
        .body(gateway::body::empty())
        .expect("request");
    let response = app.handle(request).await;
    assert_eq!(response.status(), 200);
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}
