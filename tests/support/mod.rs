//! Shared test harness: the real example upstream as a child process, the gateway
//! in-process on a `127.0.0.1:0` listener with its self-signed certificate, and an HTTPS
//! client (reqwest over rustls) that trusts exactly that certificate.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use gateway::config::{Config, TlsSetting};
use gateway::server::Server;
use rustls::pki_types::pem::PemObject;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The HS256 secret of test configurations (Flask-JWT-Extended's JWT_SECRET_KEY).
pub const SECRET: &str = "test-secret-key-that-is-long-enough-0123456789";

/// argon2id (m=19456, t=2, p=1) hash of "password", as in the repo's users.yaml.
pub const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Ps4Uxv+gTwrI54Rt5O6Jsg$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0";

/// The example upstream, running as a real process on a free port.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Upstream {
    /// Start `upstream-example --listen 127.0.0.1:0` and wait for its `listening on` line.
    pub fn start() -> Upstream {
        let (child, addr) = spawn_upstream("127.0.0.1:0");
        Upstream { addr, child }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop the process (to test an unreachable upstream).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run `upstream-example --listen LISTEN` and return it with the address it printed.
pub fn spawn_upstream(listen: &str) -> (Child, SocketAddr) {
    let exe = upstream_binary();
    let mut child = Command::new(&exe)
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("upstream prints its address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected upstream output {line:?}"))
        .parse()
        .expect("a socket address");
    (child, addr)
}

/// The upstream-example binary next to this test's build (cargo test --workspace builds it).
pub fn upstream_binary() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let exe = dir.join(format!("upstream-example{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} not found: run the tests with `cargo test --workspace` (or `cargo build -p upstream-example` first)",
        exe.display()
    );
    exe
}

/// A test configuration: one self-signed TLS listener on port 0, the upstream, inline
/// users, the HS256 test key, and routes like the reference gateway.yaml.
pub fn config_yaml(upstream: &str) -> String {
    format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: test
    address: 127.0.0.1:0
    tls: {{ self_signed: true }}
upstreams:
  properties:
    url: {upstream}
    connect_timeout: 1s
    timeout: 2s
auth:
  # Tests send many failed logins from one address; tests/lifecycle.rs tests the limits.
  login_limits: {{ enabled: false }}
  users:
    - email: test@example.com
      password_hash: "{PASSWORD_HASH}"
      roles: [user]
    - email: admin@example.com
      password_hash: "{PASSWORD_HASH}"
      roles: [user, admin]
      claims: {{ tenant: acme }}
    - email: disabled@example.com
      password_hash: "{PASSWORD_HASH}"
      disabled: true
  keys:
    - algorithm: HS256
      secret: "{SECRET}"
routes:
  - name: health
    exact: /health
    methods: [GET]
    upstream: properties
    auth: public
  - name: properties-read
    path: /properties
    methods: [GET, HEAD]
    upstream: properties
  - name: properties-write
    path: /properties
    methods: [POST]
    upstream: properties
    require: {{ roles: [user] }}
  - name: admin
    path: /echo/admin
    upstream: properties
    require: {{ roles: [admin], claims: {{ tenant: acme }} }}
  - name: echo
    path: /echo
    upstream: properties
  - name: public-echo
    path: /public
    upstream: properties
    auth: public
    rewrite: /echo
  - name: slow
    path: /slow
    upstream: properties
    auth: public
  - name: stream
    path: /stream
    upstream: properties
    auth: public
"#
    )
}

/// A gateway running in-process on an ephemeral port.
pub struct Gateway {
    /// The listener's address.
    pub addr: SocketAddr,
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// PEM of the self-signed certificate, for clients to trust.
    pub cert_pem: String,
    /// The admin listener's address, when the config enables it.
    pub admin: Option<SocketAddr>,
    /// The request handler (current config, metrics).
    pub app: gateway::App,
    /// Reloads the running configuration.
    pub reloader: gateway::reload::Reloader,
    /// The config file the gateway was started from (rewrite it, then reload).
    pub config_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Start a gateway from YAML (written to a temp dir, so relative paths resolve there).
    pub async fn start(yaml: &str) -> Gateway {
        // reqwest's plain clients (admin endpoints) need a process-wide rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let config =
            Arc::new(gateway::config::load(&path).unwrap_or_else(|e| panic!("config: {e}")));
        let cert_pem = match &config.listeners[0].tls {
            TlsSetting::SelfSigned(s) => s.cert_pem.clone(),
            _ => String::new(),
        };
        let server = Server::bind(config.clone()).await.expect("bind");
        let addr = server.local_addrs()[0];
        let admin = server.admin_addr();
        let app = server.app();
        let reloader = server.reloader();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            config,
            cert_pem,
            admin,
            app,
            reloader,
            config_path: path,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Start the default test configuration in front of `upstream`.
    pub async fn start_default(upstream: &Upstream) -> Gateway {
        Gateway::start(&config_yaml(&upstream.url())).await
    }

    /// `https://localhost:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// An HTTPS client trusting the gateway's certificate, offering h2 and http/1.1.
    pub fn client(&self) -> reqwest::Client {
        self.client_with_alpn(&[b"h2", b"http/1.1"])
    }

    /// An HTTPS client offering only http/1.1.
    pub fn client_http1(&self) -> reqwest::Client {
        self.client_with_alpn(&[b"http/1.1"])
    }

    fn client_with_alpn(&self, alpn: &[&[u8]]) -> reqwest::Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.expect("certificate PEM")).expect("add root");
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve("localhost", self.addr)
            .no_proxy()
            .build()
            .expect("client")
    }

    /// Log in through the gateway and return the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, _, body) = self.try_login(email, password).await;
        assert_eq!(status, 200, "login of {email} failed: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// `http://admin{path}` (panics when the admin listener is off).
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.admin.expect("admin listener enabled")
        )
    }

    /// The current value of one sample of `/metrics`, e.g.
    /// `gateway_requests_total{method="GET",route="health",status_class="2xx"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.trim().parse().expect("sample value"))
    }

    /// Signal shutdown without waiting (to test draining).
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Wait for the server task to finish (after `signal_shutdown`).
    pub async fn wait_stopped(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Signal shutdown and wait for the server to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sign arbitrary header and claims JSON with HS256 and `secret`, bypassing the gateway.
pub fn sign_hs256(header: &serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
    sign_hmac(jsonwebtoken::Algorithm::HS256, header, claims, secret)
}

/// Sign arbitrary header and claims JSON with an HMAC algorithm, bypassing the gateway.
fn sign_hmac(
    algorithm: jsonwebtoken::Algorithm,
    header: &serde_json::Value,
    claims: &serde_json::Value,
    secret: &str,
) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        algorithm,
    )
    .expect("sign");
    format!("{input}.{signature}")
}

/// A token signed with HS512 and the test secret (HS512 is not an allowed algorithm).
pub fn hs512_token(claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "HS512", "typ": "JWT"});
    sign_hmac(jsonwebtoken::Algorithm::HS512, &header, claims, SECRET)
}

/// An unsigned `alg: none` token with an empty signature.
pub fn none_token(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// `claims` with `changes` merged in (a `null` removes the claim).
pub fn with(mut claims: serde_json::Value, changes: serde_json::Value) -> serde_json::Value {
    let map = claims.as_object_mut().expect("claims object");
    for (k, v) in changes.as_object().expect("changes object") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    claims
}

/// The usual header of an HS256 token.
pub fn hs256_header() -> serde_json::Value {
    serde_json::json!({"alg": "HS256", "typ": "JWT"})
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    gateway::auth::jwt::now() as i64
}

/// A real `redis-server` on a free loopback port, with no persistence.
pub struct RedisServer {
    /// The TCP port.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start redis-server (installed by `.ci/run`: `apt-get install -y redis-server`).
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (to test an unreachable store).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): apt-get install -y redis-server")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if Self::ping(self.port) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on port {}", self.port);
    }

    fn ping(port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The default test config with refresh tokens (1h), login limits (3 failures per account,
/// 10 per address, per minute), an admin token, and the given `store:` value.
pub fn lifecycle_yaml(upstream: &str, store: &str) -> String {
    let yaml = config_yaml(upstream)
        .replace(
            "  login_limits: { enabled: false }\n",
            "  login_limits:\n    per_account: { max_failures: 3, window: 1m }\n    per_address: { max_failures: 10, window: 1m }\n  refresh: { ttl: 1h }\n",
        )
        .replace("admin:\n  address: 127.0.0.1:0\n", &format!("admin:\n  address: 127.0.0.1:0\n  token: {ADMIN_TOKEN}\n"));
    format!("store: {store}\n{yaml}")
}

/// The admin token of [`lifecycle_yaml`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A JSON response's status and body.
pub async fn status_json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

impl Gateway {
    /// Log in and return the whole JSON body (access and refresh tokens).
    pub async fn login_pair(&self, email: &str) -> serde_json::Value {
        let response = self
            .client()
            .post(self.url("/users/login"))
            .json(&serde_json::json!({ "email": email, "password": "password" }))
            .send()
            .await
            .expect("login request");
        let (status, body) = status_json(response).await;
        assert_eq!(status, 200, "login of {email}: {body}");
        body
    }

    /// GET `path` with a bearer token; status and JSON body.
    pub async fn get_with(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        status_json(
            self.client()
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// POST /users/refresh with a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> (u16, serde_json::Value) {
        status_json(
            self.client()
                .post(self.url("/users/refresh"))
                .bearer_auth(refresh_token)
                .send()
                .await
                .expect("refresh"),
        )
        .await
    }

    /// POST /users/logout with an access token and optionally the refresh token.
    pub async fn logout(&self, access: &str, refresh: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self
            .client()
            .post(self.url("/users/logout"))
            .bearer_auth(access);
        if let Some(r) = refresh {
            request = request.json(&serde_json::json!({ "refresh_token": r }));
        }
        status_json(request.send().await.expect("logout")).await
    }

    /// A login attempt with a password; status, Retry-After, body.
    pub async fn try_login(
        &self,
        email: &str,
        password: &str,
    ) -> (u16, Option<u64>, serde_json::Value) {
        let response = self
            .client()
            .post(self.url("/users/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (status, body) = status_json(response).await;
        (status, retry_after, body)
    }
}
