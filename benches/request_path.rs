//! In-process benchmarks of the request path: path normalization and route lookup, HS256
//! token verification, and a whole authenticated request through `app()` to a local
//! upstream over a real loopback connection.
//!
//!     cargo bench --bench request_path

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use gateway::auth::jwt::{access_claims, now, TokenType};
use gateway::routing::normalize_path;
use gateway::store::{Revocation, RevocationKind, Store};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$Ps4Uxv+gTwrI54Rt5O6Jsg$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0";

fn config(upstream: &str) -> gateway::config::Config {
    let yaml = format!(
        r#"
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
async fn start_upstream() -> String {
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

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = runtime.block_on(start_upstream());
    let config = Arc::new(config(&upstream));
    let auth = config.auth.clone().expect("auth");
    let claims = access_claims(
        "bench@example.com",
        &["user".into()],
        &Default::default(),
        &auth.rules,
        now(),
    );
    let token = auth.keys.sign(&claims).expect("sign");

    c.bench_function("normalize_and_route", |b| {
        b.iter(|| {
            let path = normalize_path("/properties/12/../42").expect("path");
            config
                .routes
                .resolve(&Method::GET, &path)
                .expect("route")
                .name
                .len()
        })
    });

    c.bench_function("verify_hs256", |b| {
        b.iter(|| {
            auth.keys
                .verify(&token, &auth.rules, now(), TokenType::Access)
                .expect("valid")
        })
    });

    // The per-request revocation check against a local view holding 100,000 revoked
    // tokens (as after many logouts), for a token that is not revoked.
    let store = Store::memory(gateway::metrics::Metrics::new(), 86400);
    let far = now() as i64 + 3600;
    for i in 0..100_000 {
        let id = format!("{i:08x}-revoked");
        runtime
            .block_on(store.revoke(Revocation {
                kind: RevocationKind::Jti,
                id,
                at: far,
            }))
            .expect("revoke");
    }
    let identity = auth
        .keys
        .verify(&token, &auth.rules, now(), TokenType::Access)
        .expect("valid");
    c.bench_function("revocation_check_100k_revoked", |b| {
        b.iter(|| store.check(&identity.ids()).expect("not revoked"))
    });

    let app = gateway::app(config.clone());
    let bearer = format!("Bearer {token}");
    c.bench_function("authenticated_get_through_app", |b| {
        b.to_async(&runtime).iter(|| {
            let app = app.clone();
            let request = Request::get("/properties/1")
                .header("host", "localhost")
                .header("authorization", bearer.as_str())
                .body(gateway::body::empty())
                .expect("request");
            async move {
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
        })
    });
}

/// Login answers for an unknown user and for a wrong password: same status and body, and
/// (the point of this bench) the same time, since both compute one argon2id hash.
fn login_timing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let app = gateway::app(Arc::new(config("http://127.0.0.1:9")));
    let mut group = c.benchmark_group("login");
    group.sample_size(30);
    for (name, email) in [
        ("unknown_user", "nobody@example.com"),
        ("wrong_password", "bench@example.com"),
    ] {
        let body = format!(r#"{{"email": "{email}", "password": "not the password"}}"#);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let request = Request::post("/users/login")
                    .header("host", "localhost")
                    .header("content-type", "application/json")
                    .body(gateway::body::full(body.clone()))
                    .expect("request");
                let app = app.clone();
                async move {
                    let response = app.handle(request).await;
                    assert_eq!(response.status(), 401);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, login_timing);
criterion_main!(benches);
