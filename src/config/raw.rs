//! Stage one of configuration: the YAML file as plain serde structs.
//!
//! Nothing here is validated beyond types; unknown keys are refused so a typo never goes
//! unnoticed. [`super::Config`] is built from these by [`super::load`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// The top-level keys of `gateway.yaml`; each section is deserialized on its own so that
/// problems in several sections are all reported in one run.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "log",
    "listeners",
    "upstreams",
    "routes",
    "auth",
    "store",
];

/// `store:` in its long form; the short forms are `store: memory` and `store: redis://...`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory`, or a `redis://` / `rediss://` URL.
    pub url: Option<String>,
    /// Prefix of every Redis key and channel (default `gateway:`).
    pub prefix: Option<String>,
    /// `fail_closed` (default) or `fail_open`.
    pub on_unavailable: Option<String>,
    /// Deadline of one Redis operation (default `500ms`).
    pub timeout: Option<String>,
}

/// `admin:` — the plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `IP:port` (default `127.0.0.1:9901`).
    pub address: Option<String>,
    /// Set false to run without the admin listener.
    pub enabled: Option<bool>,
    /// Bearer token required by the admin endpoints that change state (revocation);
    /// without it they are disabled.
    pub token: Option<String>,
}

/// `log:` — how log lines are written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
}

/// `server:` settings that apply to the whole process.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads of the runtime (default: number of cores).
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown, e.g. `30s`.
    pub shutdown_grace: Option<String>,
    /// How long a client may take to finish the TLS handshake, e.g. `10s`.
    pub tls_handshake_timeout: Option<String>,
    /// How long a client may take to send the request head, e.g. `10s`.
    pub header_read_timeout: Option<String>,
    /// How often the config, users, key and certificate files are checked for changes
    /// (default `2s`; `0s` turns watching off, SIGHUP still reloads).
    pub reload_interval: Option<String>,
    /// Open client connections in total (default 10000); more are closed at accept.
    pub max_connections: Option<usize>,
    /// Open client connections per client IP address (default 256).
    pub max_connections_per_ip: Option<usize>,
    /// Largest HTTP/1 request head in bytes (default 16384); larger gets 431.
    pub max_header_bytes: Option<usize>,
    /// Most request header fields (default 100); more gets 431.
    pub max_headers: Option<usize>,
    /// Longest request target (path and query) in bytes (default 8192); longer gets 414.
    pub max_uri_bytes: Option<usize>,
    /// Largest request body in bytes for routes that do not set their own (default 32 MiB).
    pub max_body_bytes: Option<u64>,
    /// Deadline for receiving a whole request body (default `60s`); then 408.
    pub body_read_timeout: Option<String>,
    /// Close a connection with no request in flight after this long (default `60s`).
    pub idle_timeout: Option<String>,
    /// HTTP/2 streams a client may have open at once (default 100).
    pub h2_max_concurrent_streams: Option<u32>,
    /// Largest HTTP/2 header list in bytes (default 16384).
    pub h2_max_header_list_bytes: Option<u32>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// A name for logs (default `listener<N>`).
    pub name: Option<String>,
    /// `IP:port` to bind.
    pub address: String,
    /// TLS settings; required unless `plaintext: true`.
    pub tls: Option<RawTls>,
    /// Serve plain HTTP on this listener; must be said explicitly.
    #[serde(default)]
    pub plaintext: bool,
    /// Keep client-sent `X-Forwarded-*` values (only behind a trusted load balancer).
    #[serde(default)]
    pub trust_forwarded_headers: bool,
}

/// `tls:` of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: Option<String>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// Generate a localhost certificate at start (development only).
    #[serde(default)]
    pub self_signed: bool,
}

/// One entry of `upstreams:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// A single base URL (`http://host:port[/base]`).
    pub url: Option<String>,
    /// Several base URLs, used round-robin.
    pub urls: Option<Vec<String>>,
    /// TCP connect timeout, e.g. `2s`.
    pub connect_timeout: Option<String>,
    /// How long to wait for the response head, e.g. `30s`.
    pub timeout: Option<String>,
    /// Connection failures after which an instance is skipped (default 3; 0 never skips).
    pub max_failures: Option<u32>,
    /// How long a failing instance is skipped before it is tried again (default `10s`).
    pub cooldown: Option<String>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Path prefix, matched on segment boundaries (`/a` matches `/a` and `/a/b`, not `/ab`).
    pub path: Option<String>,
    /// Exact path; the alternative to `path`.
    pub exact: Option<String>,
    /// Allowed methods; absent means all.
    pub methods: Option<Vec<String>>,
    /// Name of an entry of `upstreams:`.
    pub upstream: String,
    /// Replace the matched prefix with this before forwarding.
    pub rewrite: Option<String>,
    /// `required` (default) or `public`.
    pub auth: Option<String>,
    /// What an authenticated identity must have.
    pub require: Option<RawRequire>,
    /// Forward the client's `Authorization` header upstream (default true).
    pub forward_authorization: Option<bool>,
    /// Upstream response timeout for this route, overriding the upstream's.
    pub timeout: Option<String>,
    /// Largest request body for this route, in bytes (default `server.max_body_bytes`).
    pub max_body_bytes: Option<u64>,
}

/// `require:` of a route; all listed conditions must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    /// Every one of these roles (claim `roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Every one of these scopes (claim `scope`, space separated, or `scp`, a list).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claims that must have exactly these values.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// `auth:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Path of the login endpoint (default `/users/login`).
    pub login_path: Option<String>,
    /// A YAML file with `users:` (relative to gateway.yaml).
    pub users_file: Option<String>,
    /// Users given inline.
    pub users: Option<Vec<RawUser>>,
    /// Signing and verification keys; the one with `sign: true` (or the first that can) signs.
    pub keys: Vec<RawKey>,
    /// Access token lifetime (default `15m`).
    pub access_token_ttl: Option<String>,
    /// `iss` to issue and require.
    pub issuer: Option<String>,
    /// `aud` to issue and require.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf` (default `0s`).
    pub leeway: Option<String>,
    /// Longest access-token lifetime accepted, `exp - iat` (default `24h`).
    pub max_token_lifetime: Option<String>,
    /// `flask` (default) or `rfc6750`.
    pub errors: Option<String>,
    /// Headers carrying the verified identity to the upstream.
    pub identity_headers: Option<RawIdentityHeaders>,
    /// How many password hashes may be computed at once (default: number of cores).
    pub login_concurrency: Option<usize>,
    /// Refresh tokens (opt-in): login also returns one; rotation at the refresh path.
    pub refresh: Option<RawRefresh>,
    /// Path of the logout endpoint (default `/users/logout`).
    pub logout_path: Option<String>,
    /// Brute-force protection of the login endpoint.
    pub login_limits: Option<RawLoginLimits>,
    /// Other issuers whose tokens are accepted, verified with keys from their JWKS URL.
    pub external_issuers: Option<Vec<RawExternalIssuer>>,
}

/// One entry of `auth.external_issuers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExternalIssuer {
    /// The `iss` value of its tokens (required in them).
    pub issuer: String,
    /// Where its JWK set is published (`https://...`, or `http://` on a private network).
    pub jwks_url: String,
    /// `aud` its tokens must carry for this gateway, if any.
    pub audience: Option<String>,
    /// Accepted algorithms (asymmetric only), e.g. `[RS256]`.
    pub algorithms: Vec<String>,
    /// How often the keys are fetched again (default `10m`).
    pub refresh_interval: Option<String>,
    /// Least time between fetches caused by an unknown `kid` (default `30s`).
    pub min_refetch_interval: Option<String>,
    /// Extra CA certificates (PEM) trusted for the JWKS URL, besides the public roots.
    pub ca_file: Option<String>,
}

/// `auth.refresh:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    /// Path of the refresh endpoint (default `/users/refresh`).
    pub path: Option<String>,
    /// Refresh token lifetime (default `30d`, as Flask-JWT-Extended).
    pub ttl: Option<String>,
}

/// `auth.login_limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoginLimits {
    /// Set false to turn the limits off.
    pub enabled: Option<bool>,
    /// Failures allowed per account (email) in a window (default 5 per 15m).
    pub per_account: Option<RawLimit>,
    /// Failures allowed per client address in a window (default 50 per 15m).
    pub per_address: Option<RawLimit>,
}

/// One failure limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Failures allowed; the next attempt gets 429 until the window ends.
    pub max_failures: u64,
    /// The window, starting at the first failure, e.g. `15m`.
    pub window: String,
}

/// `auth.identity_headers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    /// Header for `sub` (default `X-Auth-Subject`).
    pub subject: Option<String>,
    /// Header for the comma-joined roles (default `X-Auth-Roles`).
    pub roles: Option<String>,
}

/// One key of `auth.keys:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Key id put in the `kid` header and matched exactly on verification.
    pub kid: Option<String>,
    /// HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA.
    pub algorithm: String,
    /// HMAC secret (use `${ENV}`), at least 32 bytes.
    pub secret: Option<String>,
    /// File holding the HMAC secret.
    pub secret_file: Option<String>,
    /// PEM private key (signing).
    pub private_key_file: Option<String>,
    /// PEM public key (verification).
    pub public_key_file: Option<String>,
    /// This key signs new tokens.
    #[serde(default)]
    pub sign: bool,
}

/// One user of the user store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// Login name, matched ignoring case.
    pub email: String,
    /// Argon2id PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// Roles put in the `roles` claim.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra claims put in every token of this user.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
    /// A disabled user cannot log in.
    #[serde(default)]
    pub disabled: bool,
}

/// The users file: `users: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsersFile {
    /// The users.
    pub users: Vec<RawUser>,
}
