//! Operations over real sockets: exact metric changes, health and readiness, graceful
//! shutdown with requests in flight, hot reload under load (routes and certificates).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{config_yaml, Gateway, Upstream};
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn metrics_change_exactly_after_a_known_sequence() {
    let mut upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    let client = gw.client();
    let get = |path: &str, auth: Option<&str>| {
        let mut r = client.get(gw.url(path));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(get("/health", None).await.unwrap().status(), 200);
    assert_eq!(get("/properties", None).await.unwrap().status(), 401);
    assert_eq!(
        get("/properties", Some("Bearer abc"))
            .await
            .unwrap()
            .status(),
        422
    );
    let token = gw.login("test@example.com", "password").await;
    let wrong = client
        .post(gw.url("/users/login"))
        .json(&serde_json::json!({"email": "test@example.com", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        get("/properties", Some(&format!("Bearer {token}")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/echo/admin", Some(&format!("Bearer {token}")))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(get("/nowhere", None).await.unwrap().status(), 404);

    let expect = [
        (
            r#"gateway_requests_total{method="GET",route="health",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="GET",route="properties-read",status_class="4xx"}"#,
            2.0,
        ),
        (
            r#"gateway_requests_total{method="GET",route="properties-read",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="POST",route="login",status_class="2xx"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="POST",route="login",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="GET",route="admin",status_class="4xx"}"#,
            1.0,
        ),
        (
            r#"gateway_requests_total{method="GET",route="none",status_class="4xx"}"#,
            1.0,
        ),
        (r#"gateway_auth_failures_total{reason="missing"}"#, 1.0),
        (r#"gateway_auth_failures_total{reason="malformed"}"#, 1.0),
        (r#"gateway_auth_failures_total{reason="forbidden"}"#, 1.0),
        (r#"gateway_login_attempts_total{outcome="success"}"#, 1.0),
        (
            r#"gateway_login_attempts_total{outcome="invalid_credentials"}"#,
            1.0,
        ),
        (
            r#"gateway_upstream_duration_seconds_count{upstream="properties"}"#,
            2.0,
        ),
        (
            r#"gateway_request_duration_seconds_count{route="properties-read"}"#,
            3.0,
        ),
        (r#"gateway_build_info{version="0.1.0"}"#, 1.0),
    ];
    for (sample, value) in expect {
        assert_eq!(gw.metric(sample).await, value, "{sample}");
    }

    // Upstream errors by kind, and a failed TLS handshake.
    upstream.stop();
    assert_eq!(get("/health", None).await.unwrap().status(), 502);
    // Two: a GET without a body that fails to connect is retried once.
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{kind="connect",upstream="properties"}"#)
            .await,
        2.0
    );
    let mut raw = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut sink),
    )
    .await;
    let failures = r#"gateway_tls_handshake_failures_total{listener="test"}"#;
    assert_eq!(gw.metric(failures).await, 1.0);

    // No raw path or subject ever becomes a label.
    let text = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("nowhere") && !text.contains("test@example.com"));
}

#[tokio::test]
async fn open_connections_gauge_follows_connections() {
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    let gauge = r#"gateway_open_connections{listener="test"}"#;
    assert_eq!(gw.metric(gauge).await, 0.0);
    let client = gw.client_http1();
    assert_eq!(
        client.get(gw.url("/health")).send().await.unwrap().status(),
        200
    );
    // The keep-alive connection stays open in the client's pool.
    assert_eq!(gw.metric(gauge).await, 1.0);
    drop(client);
    let mut value = 1.0;
    for _ in 0..100 {
        value = gw.metric(gauge).await;
        if value == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(value, 0.0, "closed connection still counted");
}

#[tokio::test]
async fn health_endpoints_and_draining_with_requests_in_flight() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start_default(&upstream).await;
    let admin = reqwest::Client::new();
    assert_eq!(
        admin
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = admin.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    // Two requests in flight at the moment of the signal: a slow one and a streamed body.
    let client = gw.client();
    let slow = tokio::spawn(client.get(gw.url("/slow?ms=1500")).send());
    let stream_client = gw.client_http1();
    let url = gw.url("/stream?bytes=2000000&chunk=50000&delay_ms=25");
    let streamed = tokio::spawn(async move {
        let mut response = stream_client.get(url).send().await?;
        let mut total = 0usize;
        while let Some(chunk) = response.chunk().await? {
            total += chunk.len();
        }
        Ok::<_, reqwest::Error>((response.status(), total))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Draining: not ready, and no new connections are accepted.
    let ready = admin.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "listener still accepting"
    );

    let slow = tokio::time::timeout(LIMIT, slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(
        slow.json::<serde_json::Value>().await.unwrap()["slept_ms"],
        1500
    );
    let (status, total) = tokio::time::timeout(LIMIT, streamed)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(total, 2_000_000, "streamed body cut short by shutdown");
    tokio::time::timeout(LIMIT, gw.wait_stopped())
        .await
        .expect("server did not stop");
}

/// The test config with one extra exact route `/v{n}` rewriting to the upstream's /echo.
fn config_with_version(upstream: &str, n: usize) -> String {
    config_yaml(upstream).replace(
        "routes:\n",
        &format!("routes:\n  - name: v{n}\n    exact: /v{n}\n    upstream: properties\n    auth: public\n    rewrite: /echo/v{n}\n"),
    )
}

#[tokio::test]
async fn twenty_reloads_under_load_lose_no_request() {
    let upstream = Upstream::start();
    let gw = Arc::new(Gateway::start(&config_with_version(&upstream.url(), 0)).await);
    let token = gw.login("test@example.com", "password").await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let (gw, stop, ok, failed, token) = (
            gw.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            token.clone(),
        );
        load.push(tokio::spawn(async move {
            let client = if i % 2 == 0 {
                gw.client()
            } else {
                gw.client_http1()
            };
            while !stop.load(Ordering::Relaxed) {
                let path = if i < 2 { "/health" } else { "/properties/1" };
                let r = client.get(gw.url(path)).bearer_auth(&token).send().await;
                match r {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let client = gw.client();
    let mut current = 0;
    for round in 1..=20 {
        if round % 2 == 0 {
            // Invalid: unknown upstream. Rejected; the previous routes keep working.
            let broken = config_with_version(&upstream.url(), round).replace(
                "upstream: properties\n    auth: public\n    rewrite",
                "upstream: nowhere\n    auth: public\n    rewrite",
            );
            std::fs::write(&gw.config_path, broken).unwrap();
            let err = gw
                .reloader
                .reload()
                .await
                .expect_err("invalid config accepted");
            assert!(
                err.to_string()
                    .contains("routes[0].upstream: unknown upstream \"nowhere\""),
                "{err}"
            );
        } else {
            std::fs::write(&gw.config_path, config_with_version(&upstream.url(), round)).unwrap();
            gw.reloader.reload().await.expect("valid config rejected");
            current = round;
        }
        let r = client
            .get(gw.url(&format!("/v{current}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}: /v{current} not served");
        let echoed: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echoed["path"], format!("/echo/v{current}"));
        if current > 1 {
            let old = client
                .get(gw.url(&format!("/v{}", current - 2)))
                .send()
                .await
                .unwrap();
            assert_eq!(
                old.status(),
                404,
                "round {round}: removed route still served"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little load to mean anything"
    );
    assert_eq!(
        gw.metric(r#"gateway_config_reloads_total{outcome="success"}"#)
            .await,
        10.0
    );
    assert_eq!(
        gw.metric(r#"gateway_config_reloads_total{outcome="failure"}"#)
            .await,
        10.0
    );
}

#[tokio::test]
async fn a_changed_file_is_reloaded_by_the_watcher() {
    let upstream = Upstream::start();
    let with_interval = |n| {
        config_with_version(&upstream.url(), n)
            .replace("admin:\n", "server:\n  reload_interval: 100ms\nadmin:\n")
    };
    let gw = Gateway::start(&with_interval(1)).await;
    tokio::spawn(gw.reloader.clone().watch());
    let client = gw.client();
    assert_eq!(
        client.get(gw.url("/v1")).send().await.unwrap().status(),
        200
    );
    std::fs::write(&gw.config_path, with_interval(2)).unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = client
            .get(gw.url("/v2"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "watcher did not pick up the change");
    assert_eq!(
        client.get(gw.url("/v1")).send().await.unwrap().status(),
        404
    );
}

/// A self-signed localhost certificate and key as PEM.
fn make_cert() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

/// The leaf certificate (DER) the gateway presents on a new TLS connection.
async fn presented_cert(addr: std::net::SocketAddr, trusted: &[&str]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn certificates_are_swapped_on_reload() {
    use rustls::pki_types::pem::PemObject;
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_cert();
    let (cert_b, key_b) = make_cert();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();
    let yaml = config_yaml(&upstream.url()).replace(
        "tls: { self_signed: true }",
        &format!(
            "tls: {{ cert_file: {}, key_file: {} }}",
            cert_path.display(),
            key_path.display()
        ),
    );
    let gw = Gateway::start(&yaml).await;
    let der = |pem: &str| {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    assert_eq!(
        presented_cert(gw.addr, &[&cert_a, &cert_b]).await,
        der(&cert_a)
    );

    std::fs::write(&cert_path, &cert_b).unwrap();
    std::fs::write(&key_path, &key_b).unwrap();
    gw.reloader
        .reload()
        .await
        .expect("reload with new certificate");
    assert_eq!(
        presented_cert(gw.addr, &[&cert_a, &cert_b]).await,
        der(&cert_b)
    );

    // A key that does not match the certificate is rejected; B keeps being served.
    std::fs::write(&key_path, &key_a).unwrap();
    let err = gw
        .reloader
        .reload()
        .await
        .expect_err("mismatched key accepted");
    assert!(
        err.to_string().contains("listeners[0].tls.key_file"),
        "{err}"
    );
    assert_eq!(
        presented_cert(gw.addr, &[&cert_a, &cert_b]).await,
        der(&cert_b)
    );
}
