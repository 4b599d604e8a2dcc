//! Configuration: `gateway.yaml` read, interpolated, and validated into a typed [`Config`].
//!
//! Two stages, as in rust-rpxy: [`raw`] holds plain serde structs (unknown keys refused),
//! and [`load`] turns them into a [`Config`] whose parts are ready for the request path:
//! the route table is sorted, keys are parsed, users are indexed. Every problem found is
//! collected with the file and key path it concerns, and all are reported together:
//! `gateway.yaml: routes[2].upstream: unknown upstream "propertes" (known: properties)`.

mod interpolate;
pub mod raw;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::auth::Auth;
use crate::proxy::Upstream;
use crate::routing::RouteTable;

/// A fully validated configuration, prepared for the request path.
#[derive(Debug)]
pub struct Config {
    /// The file it was loaded from (for messages and reloads).
    pub file: PathBuf,
    /// Process-wide settings.
    pub server: ServerSettings,
    /// The admin listener (metrics, health, revocation), if enabled.
    pub admin: Option<AdminSettings>,
    /// Where revocations, refresh families and login counters live (read at start).
    pub store: crate::store::StoreSettings,
    /// Log line format (read at start; a reload does not change it).
    pub log_format: LogFormat,
    /// Where to accept connections.
    pub listeners: Vec<ListenerConfig>,
    /// Upstreams by name, shared by the routes that use them.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Routes, ordered for lookup.
    pub routes: RouteTable,
    /// Authentication: users, keys, token rules. `None` when the file has no `auth:`, in
    /// which case every route must be `auth: public`.
    pub auth: Option<Arc<Auth>>,
}

/// `server:` settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Deadline for a client's TLS handshake, so idle sockets cannot pin memory.
    pub tls_handshake_timeout: Duration,
    /// Deadline for a client to send a complete request head (slowloris defence).
    pub header_read_timeout: Duration,
    /// How often watched files are checked for changes; `None` turns watching off.
    pub reload_interval: Option<Duration>,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections per client IP.
    pub max_connections_per_ip: usize,
    /// Largest HTTP/1 request head (431 beyond).
    pub max_header_bytes: usize,
    /// Most request header fields (431 beyond).
    pub max_headers: usize,
    /// Longest request target (414 beyond).
    pub max_uri_bytes: usize,
    /// Default largest request body of a route (413 beyond).
    pub max_body_bytes: u64,
    /// Deadline for a whole request body (408 after).
    pub body_read_timeout: Duration,
    /// Idle connections (nothing in flight) are closed after this.
    pub idle_timeout: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list.
    pub h2_max_header_list_bytes: u32,
}

/// `admin:` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address of the plain-HTTP admin listener.
    pub address: SocketAddr,
    /// Bearer token for state-changing admin endpoints; `None` disables them.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminSettings")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name for logs.
    pub name: String,
    /// Address to bind; port 0 picks a free port (tests).
    pub address: SocketAddr,
    /// How connections are secured.
    pub tls: TlsSetting,
    /// Whether client-sent `X-Forwarded-*` values are kept and appended to.
    pub trust_forwarded_headers: bool,
}

/// TLS mode of a listener, with the certificate already loaded (so `gateway check`
/// catches a bad certificate, and a reload can swap it).
#[derive(Debug, Clone)]
pub enum TlsSetting {
    /// Certificate chain and key from PEM files.
    Files {
        /// Certificate chain PEM.
        cert_file: PathBuf,
        /// Private key PEM.
        key_file: PathBuf,
        /// What they hold.
        key: Arc<rustls::sign::CertifiedKey>,
    },
    /// A certificate for `localhost` generated at load.
    SelfSigned(Arc<crate::tls::SelfSigned>),
    /// No TLS: plain HTTP, only when the listener says `plaintext: true`.
    Plaintext,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem: `file: key.path: what is wrong`.
    pub problems: Vec<String>,
}

/// Collects problems while validating, each tagged with its file and key path.
#[derive(Debug)]
pub struct Problems {
    file: String,
    list: Vec<String>,
    /// Keys already reported as unusable (e.g. a missing `${VAR}`); follow-on problems
    /// under them would only repeat the first one, so they are not recorded.
    reported: Vec<String>,
}

impl Problems {
    /// A collector for problems in `file` (as the user named it).
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            list: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Record that `key` has a problem.
    pub fn push(&mut self, key: impl Display, msg: impl Display) {
        let key = key.to_string();
        let covered = self.reported.iter().any(|r| {
            key.strip_prefix(r.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        });
        if !covered {
            self.list.push(format!("{}: {key}: {msg}", self.file));
        }
    }

    /// Record a problem and silence later problems under the same key.
    pub fn push_final(&mut self, key: impl Display, msg: impl Display) {
        let key = key.to_string();
        self.push(&key, msg);
        self.reported.push(key);
    }

    /// Record a problem that concerns the whole file.
    pub fn push_file(&mut self, msg: impl Display) {
        self.list.push(format!("{}: {msg}", self.file));
    }

    /// Move the problems of another collector (another file) into this one.
    pub fn absorb(&mut self, other: Problems) {
        self.list.extend(other.list);
    }

    /// How many problems were found so far.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Deserialize `value` (found at `key`) into `T`, recording a problem on failure. The
    /// key path of the error inside `value` is appended to `key`.
    pub fn parse<T: DeserializeOwned>(&mut self, key: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = match (key.is_empty(), inner.as_str()) {
                    (true, _) => inner.clone(),
                    (false, ".") => key.to_owned(),
                    (false, p) if p.starts_with('[') => format!("{key}{p}"),
                    (false, p) => format!("{key}.{p}"),
                };
                self.push(path, strip_serde_position(&e.into_inner().to_string()));
                None
            }
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.list,
            })
        }
    }
}

/// serde_yaml appends " at line L column C" positions that refer to the re-serialized
/// value, not the file; the key path we add is the useful locator.
fn strip_serde_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Parse a duration such as `500ms`, `30s`, `15m`, `1h` or `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("invalid duration {text:?} (expected e.g. 500ms, 30s, 15m, 1h, 30d)")
    })?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "invalid duration {text:?} (expected e.g. 500ms, 30s, 15m, 1h, 30d)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Parse an optional duration field, recording a problem under `key` when it is malformed.
pub fn duration_or(
    problems: &mut Problems,
    key: impl Display,
    value: Option<&str>,
    default: Duration,
) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.push(key, e);
            default
        }
    }
}

/// Resolve a path from the config relative to the config file's directory.
pub fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Read, interpolate and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("{}: cannot read file: {e}", path.display())],
    })?;
    from_yaml(&text, path)
}

/// Validate configuration text as if it were read from `path` (relative paths inside it are
/// resolved against `path`'s directory).
pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut problems = Problems::new(file);

    let mut doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push_file(format!("invalid YAML: {e}"));
            return problems.into_result(unreachable_config());
        }
    };
    interpolate::interpolate(&mut doc, "", &mut problems);
    let Value::Mapping(mut top) = doc else {
        problems.push_file("the top level must be a mapping of sections");
        return problems.into_result(unreachable_config());
    };
    for key in top.keys() {
        let name = key.as_str().unwrap_or("?");
        if !raw::TOP_LEVEL_KEYS.contains(&name) {
            problems.push(
                name,
                format!(
                    "unknown section (expected one of: {})",
                    raw::TOP_LEVEL_KEYS.join(", ")
                ),
            );
        }
    }
    let mut take = |key: &str| top.remove(key);

    let server = build_server(&mut problems, take("server"));
    let admin = build_admin(&mut problems, take("admin"));
    let store = build_store(&mut problems, take("store"));
    let log_format = build_log(&mut problems, take("log"));
    let listeners = build_listeners(&mut problems, &base_dir, take("listeners"));
    let upstreams = crate::proxy::build_upstreams(&mut problems, take("upstreams"));
    let auth_raw = take("auth");
    let auth_present = !matches!(auth_raw, None | Some(Value::Null));
    let auth = match auth_raw {
        None | Some(Value::Null) => None,
        Some(v) => problems
            .parse::<raw::RawAuth>("auth", v)
            .and_then(|raw| crate::auth::build(&mut problems, &base_dir, raw))
            .map(Arc::new),
    };
    let routes = crate::routing::build_routes(
        &mut problems,
        take("routes"),
        &upstreams,
        auth_present.then_some(auth.as_deref()),
        server.max_body_bytes,
    );

    let config = Config {
        file: path.to_path_buf(),
        server,
        admin,
        store,
        log_format,
        listeners,
        upstreams,
        routes,
        auth,
    };
    problems.into_result(config)
}

/// Placeholder returned alongside errors; never observed because `into_result` fails.
fn unreachable_config() -> Config {
    Config {
        file: PathBuf::new(),
        server: build_server(&mut Problems::new(""), None),
        admin: None,
        store: crate::store::StoreSettings::default(),
        log_format: LogFormat::Text,
        listeners: Vec::new(),
        upstreams: BTreeMap::new(),
        routes: RouteTable::default(),
        auth: None,
    }
}

/// Split a sequence section into its items, each with its key path (`routes[2]`).
pub fn sequence(problems: &mut Problems, key: &str, value: Option<Value>) -> Vec<(String, Value)> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{key}[{i}]"), v))
            .collect(),
        Some(_) => {
            problems.push(key, "expected a list");
            Vec::new()
        }
    }
}

fn build_server(problems: &mut Problems, value: Option<Value>) -> ServerSettings {
    let raw = match value {
        None | Some(Value::Null) => raw::RawServer::default(),
        Some(v) => problems.parse("server", v).unwrap_or_default(),
    };
    if raw.workers == Some(0) {
        problems.push("server.workers", "must be at least 1");
    }
    let dur = |problems: &mut Problems, name: &str, value: &Option<String>, default_secs: u64| {
        duration_or(
            problems,
            format!("server.{name}"),
            value.as_deref(),
            Duration::from_secs(default_secs),
        )
    };
    ServerSettings {
        workers: raw.workers.filter(|w| *w > 0),
        shutdown_grace: dur(problems, "shutdown_grace", &raw.shutdown_grace, 30),
        tls_handshake_timeout: dur(
            problems,
            "tls_handshake_timeout",
            &raw.tls_handshake_timeout,
            10,
        ),
        header_read_timeout: dur(
            problems,
            "header_read_timeout",
            &raw.header_read_timeout,
            10,
        ),
        reload_interval: Some(dur(problems, "reload_interval", &raw.reload_interval, 2))
            .filter(|d| !d.is_zero()),
        max_connections: at_least(
            problems,
            "server.max_connections",
            raw.max_connections,
            10_000,
            1,
        ),
        max_connections_per_ip: at_least(
            problems,
            "server.max_connections_per_ip",
            raw.max_connections_per_ip,
            256,
            1,
        ),
        max_header_bytes: at_least(
            problems,
            "server.max_header_bytes",
            raw.max_header_bytes,
            16 * 1024,
            8192,
        ),
        max_headers: at_least(problems, "server.max_headers", raw.max_headers, 100, 8),
        max_uri_bytes: at_least(
            problems,
            "server.max_uri_bytes",
            raw.max_uri_bytes,
            8 * 1024,
            64,
        ),
        max_body_bytes: raw.max_body_bytes.unwrap_or(32 * 1024 * 1024),
        body_read_timeout: dur(problems, "body_read_timeout", &raw.body_read_timeout, 60),
        idle_timeout: dur(problems, "idle_timeout", &raw.idle_timeout, 60),
        h2_max_concurrent_streams: at_least(
            problems,
            "server.h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams,
            100,
            1,
        ),
        h2_max_header_list_bytes: at_least(
            problems,
            "server.h2_max_header_list_bytes",
            raw.h2_max_header_list_bytes,
            16 * 1024,
            1024,
        ),
    }
}

/// A number setting with a default and a floor.
fn at_least<T: PartialOrd + Copy + Display>(
    problems: &mut Problems,
    key: &str,
    value: Option<T>,
    default: T,
    min: T,
) -> T {
    match value {
        None => default,
        Some(v) if v < min => {
            problems.push(key, format!("must be at least {min}"));
            default
        }
        Some(v) => v,
    }
}

fn build_store(problems: &mut Problems, value: Option<Value>) -> crate::store::StoreSettings {
    use crate::store::{FailMode, StoreSettings};
    let raw = match value {
        None | Some(Value::Null) => raw::RawStore::default(),
        Some(Value::String(url)) => raw::RawStore {
            url: Some(url),
            ..Default::default()
        },
        Some(v) => problems.parse("store", v).unwrap_or_default(),
    };
    let defaults = StoreSettings::default();
    let redis_url = match raw.url.as_deref() {
        None | Some("memory") => None,
        Some(u)
            if u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+unix://") =>
        {
            Some(u.to_owned())
        }
        Some(other) => {
            let shown = other.split('@').next_back().unwrap_or(other);
            problems.push(
                "store",
                format!("expected memory or a redis:// URL, got {shown:?}"),
            );
            None
        }
    };
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None | Some("fail_closed") => FailMode::Closed,
        Some("fail_open") => FailMode::Open,
        Some(other) => {
            problems.push(
                "store.on_unavailable",
                format!("unknown value {other:?} (expected fail_closed or fail_open)"),
            );
            FailMode::Closed
        }
    };
    StoreSettings {
        redis_url,
        prefix: raw.prefix.unwrap_or(defaults.prefix),
        on_unavailable,
        timeout: duration_or(
            problems,
            "store.timeout",
            raw.timeout.as_deref(),
            defaults.timeout,
        ),
    }
}

fn build_admin(problems: &mut Problems, value: Option<Value>) -> Option<AdminSettings> {
    let raw: raw::RawAdmin = match value {
        None | Some(Value::Null) => raw::RawAdmin::default(),
        Some(v) => problems.parse("admin", v)?,
    };
    if raw.enabled == Some(false) {
        return None;
    }
    if raw.token.as_ref().is_some_and(|t| t.len() < 16) {
        problems.push("admin.token", "must be at least 16 characters");
    }
    let address = raw.address.unwrap_or_else(|| "127.0.0.1:9901".to_owned());
    match address.parse::<SocketAddr>() {
        Ok(address) => Some(AdminSettings {
            address,
            token: raw.token,
        }),
        Err(_) => {
            problems.push(
                "admin.address",
                format!("invalid address {address:?} (expected IP:port)"),
            );
            None
        }
    }
}

fn build_log(problems: &mut Problems, value: Option<Value>) -> LogFormat {
    let raw: raw::RawLog = match value {
        None | Some(Value::Null) => raw::RawLog::default(),
        Some(v) => problems.parse("log", v).unwrap_or_default(),
    };
    match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.push(
                "log.format",
                format!("unknown value {other:?} (expected text or json)"),
            );
            LogFormat::Text
        }
    }
}

impl Config {
    /// Every file this configuration was built from; a change to any of them triggers a
    /// reload when watching is on.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        for l in &self.listeners {
            if let TlsSetting::Files {
                cert_file,
                key_file,
                ..
            } = &l.tls
            {
                files.push(cert_file.clone());
                files.push(key_file.clone());
            }
        }
        if let Some(auth) = &self.auth {
            files.extend(auth.files.iter().cloned());
        }
        files
    }
}

fn build_listeners(
    problems: &mut Problems,
    base_dir: &Path,
    value: Option<Value>,
) -> Vec<ListenerConfig> {
    let items = sequence(problems, "listeners", value);
    if items.is_empty() {
        problems.push("listeners", "at least one listener is required");
    }
    let mut out = Vec::new();
    for (i, (key, v)) in items.into_iter().enumerate() {
        let Some(raw) = problems.parse::<raw::RawListener>(&key, v) else {
            continue;
        };
        let address = match raw.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                problems.push(
                    format!("{key}.address"),
                    format!(
                        "invalid address {:?} (expected IP:port, e.g. 0.0.0.0:8443)",
                        raw.address
                    ),
                );
                continue;
            }
        };
        let tls = match (raw.tls, raw.plaintext) {
            (Some(_), true) => {
                problems.push(&key, "set either tls or plaintext: true, not both");
                continue;
            }
            (None, false) => {
                problems.push(
                    &key,
                    "no tls section: configure tls (cert_file and key_file, or self_signed: true) or say plaintext: true",
                );
                continue;
            }
            (None, true) => TlsSetting::Plaintext,
            (Some(tls), false) => match (tls.self_signed, tls.cert_file, tls.key_file) {
                (true, None, None) => match crate::tls::self_signed() {
                    Ok(s) => TlsSetting::SelfSigned(Arc::new(s)),
                    Err(e) => {
                        problems.push(format!("{key}.tls"), e);
                        continue;
                    }
                },
                (false, Some(c), Some(k)) => {
                    let cert_file = resolve_path(base_dir, &c);
                    let key_file = resolve_path(base_dir, &k);
                    match crate::tls::load_certified_key(&cert_file, &key_file) {
                        Ok(loaded) => TlsSetting::Files {
                            cert_file,
                            key_file,
                            key: loaded,
                        },
                        Err(e) => {
                            let field = match e {
                                crate::tls::TlsError::Certificates { .. } => "cert_file",
                                _ => "key_file",
                            };
                            problems.push(format!("{key}.tls.{field}"), e);
                            continue;
                        }
                    }
                }
                (true, _, _) => {
                    problems.push(
                        format!("{key}.tls"),
                        "self_signed: true cannot be combined with cert_file or key_file",
                    );
                    continue;
                }
                _ => {
                    problems.push(
                        format!("{key}.tls"),
                        "both cert_file and key_file are required (or self_signed: true)",
                    );
                    continue;
                }
            },
        };
        out.push(ListenerConfig {
            name: raw.name.unwrap_or_else(|| format!("listener{i}")),
            address,
            tls,
            trust_forwarded_headers: raw.trust_forwarded_headers,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("1y").is_err());
    }
}
