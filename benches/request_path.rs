//! In-process benchmarks of the request path: path normalization and route lookup, HS256
//! token verification, and a whole authenticated request through `app()` to a local
//! upstream over a real loopback connection.
//!
//!     cargo bench --bench request_path

mod support;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request};
use support::{authenticated_get, bench_token, config, start_upstream};

use gateway::auth::jwt::{now, TokenType};
use gateway::routing::normalize_path;
use gateway::store::{Revocation, RevocationKind, Store};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = runtime.block_on(start_upstream());
    let config = Arc::new(config(&upstream));
    let auth = config.auth.clone().expect("auth");
    let token = bench_token(&config);

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
        b.to_async(&runtime)
            .iter(|| authenticated_get(app.clone(), &bearer))
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
