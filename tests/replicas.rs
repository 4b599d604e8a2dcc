//! Several replicas sharing one real Redis: a logout, a refresh-token reuse or an admin
//! revocation on one replica is enforced on the others (pub/sub), a replica started later
//! learns earlier revocations (resync), login failures are counted across replicas, and
//! the fail modes while Redis is down (fail_closed refuses, fail_open keeps serving).
//!
//! Every test starts its own redis-server, upstream and in-process gateways, and uses its
//! own key prefix. Nothing waits unbounded: every request has a deadline, every test too,
//! and asynchronous effects are awaited by polls with generous bounds.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{lifecycle_yaml, Gateway, RedisServer, Upstream, ADMIN_TOKEN};

/// Deadline of one request (or one probe of a poll).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// Deadline of a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// How long a revocation may take to reach another replica.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(5);
/// Flask-JWT-Extended's message for a revoked token.
const REVOKED: &str = "Token has been revoked";
/// The fail_closed answer while the store is down.
const UNAVAILABLE: &str = "Token state store unavailable, try again later";
const USER: &str = "test@example.com";
const ADMIN: &str = "admin@example.com";

/// Run `f`, panicking when it takes longer than [`REQUEST_LIMIT`].
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(REQUEST_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {REQUEST_LIMIT:?}"))
}

/// Run a whole test body with [`TEST_LIMIT`].
async fn within_test(f: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_LIMIT:?}"));
}

/// Probe until it returns `Ok`, at most `limit`; panics with the last observation.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match bounded(what, probe()).await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last observation: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The `store:` value for a Redis store.
fn redis_store(redis: &RedisServer, prefix: &str, mode: &str) -> String {
    format!(
        "{{ url: \"{}\", prefix: \"{prefix}\", on_unavailable: {mode} }}",
        redis.url()
    )
}

/// Wait until the gateway's `gateway_store_connected` gauge reads `want`.
async fn wait_store_connected(gw: &Gateway, want: f64, limit: Duration) {
    eventually(
        &format!("gateway_store_connected == {want}"),
        limit,
        || async {
            let value = gw.metric("gateway_store_connected").await;
            if value == want {
                Ok(())
            } else {
                Err(format!("gateway_store_connected {value}"))
            }
        },
    )
    .await;
}

/// Start a replica on the shared store and wait until it is connected and synchronized.
async fn replica(upstream: &Upstream, store: &str) -> Gateway {
    let gw = bounded(
        "gateway start",
        Gateway::start(&lifecycle_yaml(&upstream.url(), store)),
    )
    .await;
    wait_store_connected(&gw, 1.0, Duration::from_secs(10)).await;
    gw
}

fn token(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .to_owned()
}

/// Log in and return (access token, refresh token).
async fn login(gw: &Gateway, email: &str) -> (String, String) {
    let body = bounded("login", gw.login_pair(email)).await;
    (token(&body, "access_token"), token(&body, "refresh_token"))
}

/// GET /properties with a bearer token.
async fn get(gw: &Gateway, access: &str) -> (u16, Value) {
    bounded("GET /properties", gw.get_with("/properties", access)).await
}

/// GET /properties on a reused client (no new TLS handshake per probe).
async fn get_on(client: &reqwest::Client, gw: &Gateway, access: &str) -> (u16, Value) {
    let response = client
        .get(gw.url("/properties"))
        .bearer_auth(access)
        .timeout(REQUEST_LIMIT)
        .send()
        .await
        .expect("GET /properties");
    bounded("response body", support::status_json(response)).await
}

/// Poll until `gw` refuses `access` as revoked.
async fn eventually_revoked(what: &str, gw: &Gateway, access: &str) {
    eventually(what, PROPAGATION_LIMIT, || async {
        let (status, body) = gw.get_with("/properties", access).await;
        if status == 401 && body["msg"] == REVOKED {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
}

/// Log in on A, check the token on A and B, log out on A, then poll B every 5 ms until it
/// answers 401. Returns the time from the logout response to that 401, and how many
/// answers B gave with 200 in between.
async fn logout_and_watch(
    a: &Gateway,
    b: &Gateway,
    client_a: &reqwest::Client,
    client_b: &reqwest::Client,
) -> (Duration, usize) {
    let (access, refresh) = login(a, USER).await;
    let (status, body) = get_on(client_a, a, &access).await;
    assert_eq!(status, 200, "A refuses a fresh token: {body}");
    let (status, body) = get_on(client_b, b, &access).await;
    assert_eq!(status, 200, "B refuses a fresh token from A: {body}");

    let (status, body) = bounded("logout on A", a.logout(&access, Some(&refresh))).await;
    let logged_out = Instant::now();
    assert_eq!(
        (status, &body),
        (200, &json!({ "msg": "Successfully logged out" }))
    );

    let mut stale = 0;
    let delay = loop {
        let (status, body) = get_on(client_b, b, &access).await;
        if status == 401 {
            assert_eq!(body["msg"], REVOKED, "B's 401: {body}");
            break logged_out.elapsed();
        }
        assert_eq!(status, 200, "B, polling after the logout: {body}");
        stale += 1;
        assert!(
            logged_out.elapsed() < PROPAGATION_LIMIT,
            "B still accepts the token {:?} after the logout on A ({stale} answers with 200)",
            logged_out.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (status, body) = get_on(client_a, a, &access).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (401, Some(REVOKED)),
        "A itself after the logout"
    );
    (delay, stale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_replica_is_enforced_on_the_other() {
    within_test(async {
        let upstream = Upstream::start();
        let redis = RedisServer::start();
        let store = redis_store(&redis, "t1:", "fail_closed");
        let a = replica(&upstream, &store).await;
        let b = replica(&upstream, &store).await;
        let (client_a, client_b) = (a.client(), b.client());

        let (delay, stale) = logout_and_watch(&a, &b, &client_a, &client_b).await;
        println!("cross-replica revocation delay: {delay:?} (B answered 200 {stale} times before)");

        let mut delays = Vec::new();
        let mut stale_total = 0;
        for _ in 0..20 {
            let (delay, stale) = logout_and_watch(&a, &b, &client_a, &client_b).await;
            delays.push(delay);
            stale_total += stale;
        }
        delays.sort();
        let median = (delays[9] + delays[10]) / 2;
        println!(
            "cross-replica revocation delay over {} logouts: min {:?}, median {:?}, max {:?}; \
             B answered 200 after the logout response {stale_total} times in all",
            delays.len(),
            delays[0],
            median,
            delays[delays.len() - 1]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_later_sees_earlier_revocations() {
    within_test(async {
        let upstream = Upstream::start();
        let redis = RedisServer::start();
        let store = redis_store(&redis, "t2:", "fail_closed");
        let a = replica(&upstream, &store).await;
        let (revoked, refresh) = login(&a, USER).await;
        let (kept, _) = login(&a, USER).await;
        let (status, body) = bounded("logout on A", a.logout(&revoked, Some(&refresh))).await;
        assert_eq!(
            (status, &body),
            (200, &json!({ "msg": "Successfully logged out" }))
        );

        // C starts after the logout: no message reaches it, only the resync can.
        let c = replica(&upstream, &store).await;
        let (status, body) = get(&c, &revoked).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (401, Some(REVOKED)),
            "C, connected, accepts a token revoked before it started: {body}"
        );
        let (status, body) = get(&c, &kept).await;
        assert_eq!(
            status, 200,
            "C refuses a token that was not revoked: {body}"
        );
        let (status, body) = bounded("refresh on C", c.refresh(&refresh)).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (401, Some(REVOKED)),
            "{body}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_and_reuse_across_replicas() {
    within_test(async {
        let upstream = Upstream::start();
        let redis = RedisServer::start();
        let store = redis_store(&redis, "t3:", "fail_closed");
        let a = replica(&upstream, &store).await;
        let b = replica(&upstream, &store).await;

        let (access0, refresh0) = login(&a, USER).await;
        let (status, second) = bounded("refresh on B", b.refresh(&refresh0)).await;
        assert_eq!(
            status, 200,
            "rotation on B of a family started on A: {second}"
        );
        let (access1, refresh1) = (
            token(&second, "access_token"),
            token(&second, "refresh_token"),
        );
        assert_ne!(refresh1, refresh0);
        assert_eq!(get(&a, &access1).await.0, 200);
        assert_eq!(get(&b, &access1).await.0, 200);

        // The rotated-out refresh token again, on the other replica: reuse.
        let (status, body) = bounded("reuse on A", a.refresh(&refresh0)).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (401, Some(REVOKED)),
            "reuse of the old refresh token on A: {body}"
        );
        // The family's newest refresh token is dead too, on B.
        let (status, body) = bounded("new refresh on B", b.refresh(&refresh1)).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (401, Some(REVOKED)),
            "the newest refresh token on B after the reuse: {body}"
        );
        // And the family's access tokens, on both replicas.
        eventually_revoked("new access token on A", &a, &access1).await;
        eventually_revoked("new access token on B", &b, &access1).await;
        eventually_revoked("first access token on B", &b, &access0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_counts_failures_across_replicas() {
    within_test(async {
        let upstream = Upstream::start();
        let redis = RedisServer::start();
        let store = redis_store(&redis, "t4:", "fail_closed");
        let a = replica(&upstream, &store).await;
        let b = replica(&upstream, &store).await;

        for (gw, name) in [(&a, "A"), (&a, "A"), (&b, "B")] {
            let (status, _, body) =
                bounded("wrong password", gw.try_login(USER, "wrong-password")).await;
            assert_eq!(
                (status, body["msg"].as_str()),
                (401, Some("Invalid credentials")),
                "wrong password on {name}: {body}"
            );
        }
        for (gw, name) in [(&a, "A"), (&b, "B")] {
            let (status, retry_after, body) =
                bounded("right password", gw.try_login(USER, "password")).await;
            assert_eq!(
                status, 429,
                "right password on {name} after 3 failures: {body}"
            );
            assert!(
                retry_after.is_some_and(|s| s > 0),
                "Retry-After on {name}: {retry_after:?}"
            );
            assert!(
                body["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "429 body on {name}: {body}"
            );
        }
        // The limit is per account: another account logs in from the same address.
        let (status, _, body) = bounded("other account", b.try_login(ADMIN, "password")).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revocation_of_a_subject_reaches_all_replicas() {
    within_test(async {
        let upstream = Upstream::start();
        let redis = RedisServer::start();
        let store = redis_store(&redis, "t5:", "fail_closed");
        let a = replica(&upstream, &store).await;
        let b = replica(&upstream, &store).await;

        let (on_a, _) = login(&a, USER).await;
        let (on_b, _) = login(&b, USER).await;
        let (admin_token, _) = login(&a, ADMIN).await;
        for (gw, name) in [(&a, "A"), (&b, "B")] {
            for access in [&on_a, &on_b, &admin_token] {
                let (status, body) = get(gw, access).await;
                assert_eq!(status, 200, "{name} before the revocation: {body}");
            }
        }

        let client = reqwest::Client::builder()
            .timeout(REQUEST_LIMIT)
            .no_proxy()
            .build()
            .expect("client");
        let revoke = |bearer: &'static str| {
            client
                .post(a.admin_url("/revocations"))
                .bearer_auth(bearer)
                .json(&json!({ "sub": USER }))
                .send()
        };

        let response = revoke("wrong-admin-token-0123456789")
            .await
            .expect("POST /revocations");
        let (status, body) = support::status_json(response).await;
        assert_eq!(status, 403, "wrong admin token: {body}");
        assert_eq!(
            get(&b, &on_a).await.0,
            200,
            "a refused admin call revoked something"
        );

        let response = revoke(ADMIN_TOKEN).await.expect("POST /revocations");
        let (status, body) = support::status_json(response).await;
        assert_eq!(status, 200, "admin revocation: {body}");
        assert_eq!(body["sub"], USER, "{body}");

        for (gw, name) in [(&a, "A"), (&b, "B")] {
            for (access, issued) in [(&on_a, "A"), (&on_b, "B")] {
                let what = format!("token issued on {issued}, on {name}");
                eventually_revoked(&what, gw, access).await;
            }
            let (status, body) = get(gw, &admin_token).await;
            assert_eq!(status, 200, "another subject's token on {name}: {body}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_down_and_recovers() {
    within_test(async {
        let upstream = Upstream::start();
        let mut redis = RedisServer::start();
        let store = redis_store(&redis, "t6:", "fail_closed");
        let gw = replica(&upstream, &store).await;
        let (access, _) = login(&gw, USER).await;
        assert_eq!(get(&gw, &access).await.0, 200);

        redis.stop();
        eventually(
            "503 while redis is down",
            Duration::from_secs(10),
            || async {
                let (status, body) = gw.get_with("/properties", &access).await;
                if status == 503 && body["msg"] == UNAVAILABLE {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        )
        .await;
        let (status, _, body) = bounded("login, redis down", gw.try_login(USER, "password")).await;
        assert_eq!(
            (status, body["msg"].as_str()),
            (503, Some(UNAVAILABLE)),
            "login while the limits cannot be checked: {body}"
        );

        redis.restart();
        eventually(
            "200 after redis is back",
            Duration::from_secs(20),
            || async {
                let (status, body) = gw.get_with("/properties", &access).await;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            },
        )
        .await;
        let (status, _, body) = bounded("login, redis back", gw.try_login(USER, "password")).await;
        assert_eq!(status, 200, "login after recovery: {body}");

        let refused = r#"gateway_store_unavailable_total{mode="fail_closed",operation="check"}"#;
        let count = bounded("metrics", gw.metric(refused)).await;
        assert!(count > 0.0, "{refused} = {count}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_serving_while_redis_is_down() {
    within_test(async {
        let upstream = Upstream::start();
        let mut redis = RedisServer::start();
        let store = redis_store(&redis, "t7:", "fail_open");
        let gw = replica(&upstream, &store).await;
        let (access, refresh) = login(&gw, USER).await;
        assert_eq!(get(&gw, &access).await.0, 200);

        redis.stop();
        wait_store_connected(&gw, 0.0, Duration::from_secs(10)).await;

        let (get_status, get_body) = get(&gw, &access).await;
        let (login_status, _, login_body) =
            bounded("login, redis down", gw.try_login(USER, "password")).await;
        let (logout_status, logout_body) =
            bounded("logout, redis down", gw.logout(&access, Some(&refresh))).await;
        // Which store operations were attempted while unavailable (to explain a failure).
        let mut unavailable = Vec::new();
        for operation in ["check", "login_limit", "refresh", "revoke"] {
            let sample = format!(
                r#"gateway_store_unavailable_total{{mode="fail_open",operation="{operation}"}}"#
            );
            let count = bounded("metrics", gw.metric(&sample)).await;
            unavailable.push(format!("{operation}={count}"));
        }
        assert_eq!(
            (get_status, login_status, logout_status),
            (200, 200, 503),
            "with redis down and fail_open: GET {get_body}, login {login_body}, \
             logout {logout_body}; gateway_store_unavailable_total by operation: {}",
            unavailable.join(", ")
        );
        assert_eq!(logout_body["msg"], UNAVAILABLE, "{logout_body}");

        let served = r#"gateway_store_unavailable_total{mode="fail_open",operation="check"}"#;
        let count = bounded("metrics", gw.metric(served)).await;
        assert!(count > 0.0, "{served} = {count}");
    })
    .await;
}
