//! The real `gateway` binary: JSON access logs that never contain a token or password,
//! SIGHUP reload (accepted and rejected), and SIGTERM draining an in-flight request before
//! exiting 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{config_yaml, Upstream};

/// Wait for a stderr line containing `needle`, keeping every line seen in `all`.
fn wait_line(rx: &mpsc::Receiver<String>, all: &mut Vec<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                all.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no log line containing {needle:?}; got:\n{}",
        all.join("\n")
    );
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {pid}")])
        .status()
        .expect("sh");
    assert!(status.success(), "kill -{sig} failed");
}

#[tokio::test]
async fn binary_logs_json_reloads_on_sighup_and_drains_on_sigterm() {
    binary_lifecycle("").await;
}

/// The same with `server.workers: 1`, which runs a single-threaded runtime.
#[tokio::test]
async fn binary_with_one_worker_logs_reloads_and_drains() {
    binary_lifecycle("server:\n  workers: 1\n").await;
}

/// JSON logs without secrets, SIGHUP reloads, SIGTERM draining, for the binary started
/// with `settings` (YAML) before the test configuration.
async fn binary_lifecycle(settings: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let yaml = format!(
        "{settings}log:\n  format: json\n{}",
        config_yaml(&upstream.url())
    );
    std::fs::write(&path, &yaml).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gateway");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let listening = wait_line(&rx, &mut lines, "\"message\":\"listening\"");
    let address: serde_json::Value = serde_json::from_str(&listening).unwrap();
    let addr: std::net::SocketAddr = address["address"].as_str().unwrap().parse().unwrap();

    // The binary generated its own self-signed certificate; this test is about logs and
    // signals, so the client skips certificate verification.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let url = |p: &str| format!("https://localhost:{}{p}", addr.port());
    let password = "password";
    let login: serde_json::Value = client
        .post(url("/users/login"))
        .json(&serde_json::json!({"email": "test@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let secret_query = "api_key=supersecretvalue";
    let r = client
        .get(url(&format!("/properties?{secret_query}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(url("/properties"))
        .header("cookie", "session=cookievalue")
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let access = wait_line(&rx, &mut lines, "\"status\":422");
    let access: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(access["route"], "properties-read");
    assert!(access["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    // SIGHUP with a valid change, then with an invalid file.
    std::fs::write(&path, yaml.replace("name: slow", "name: slow-renamed")).unwrap();
    signal(child.id(), "HUP");
    wait_line(&rx, &mut lines, "configuration reloaded");
    std::fs::write(
        &path,
        yaml.replace(
            "upstream: properties\n    auth: public\n    rewrite",
            "upstream: propertes\n    auth: public\n    rewrite",
        ),
    )
    .unwrap();
    signal(child.id(), "HUP");
    let rejected = wait_line(&rx, &mut lines, "reload rejected");
    assert!(
        rejected.contains("routes[5].upstream: unknown upstream \\\"propertes\\\""),
        "{rejected}"
    );
    assert_eq!(
        client.get(url("/health")).send().await.unwrap().status(),
        200,
        "old config not serving"
    );

    // SIGTERM with a request in flight: it completes, then the process exits 0.
    let slow = tokio::spawn(client.get(url("/slow?ms=1000")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(child.id(), "TERM");
    let slow = slow.await.unwrap().expect("in-flight request failed");
    assert_eq!(slow.status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        lines.push(line);
    }

    // Every line is JSON; none carries a secret.
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for secret in [
            token.as_str(),
            "supersecretvalue",
            "cookievalue",
            "a.b.c",
            support::SECRET,
            "\"password\"",
        ] {
            assert!(!line.contains(secret), "log line leaks {secret:?}: {line}");
        }
    }
    assert!(lines.iter().any(|l| l.contains("\"message\":\"stopped\"")));
}
