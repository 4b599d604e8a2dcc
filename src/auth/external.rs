//! External issuers: tokens from another identity provider (an OIDC issuer, say),
//! verified with the public keys it publishes at its JWKS URL.
//!
//! A token is routed here by its (not yet verified) `iss`; it is then verified only with
//! that issuer's keys and algorithms, and its `iss` (and `aud`, when configured) checked as
//! usual, so the unverified peek cannot widen what is accepted. Keys are fetched ahead of
//! need and every `refresh_interval`; a token with an unknown `kid` triggers a fetch, at
//! most once per `min_refetch_interval`; when the issuer is unreachable the last good keys
//! stay in use. Key caches are shared process-wide by URL, so a config reload keeps them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;

use super::jwt::{parse_algorithm, Identity, KeySet, TokenRules, TokenType};
use crate::config::{duration_or, raw::RawExternalIssuer, resolve_path, Problems};
use crate::error::TokenError;

/// Largest JWK set accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured external issuer.
#[derive(Debug)]
pub struct ExternalIssuer {
    /// Its `iss`.
    pub issuer: String,
    /// Claim rules for its tokens (`iss` required, `aud` when configured).
    rules: TokenRules,
    cache: Arc<KeyCache>,
}

/// The fetched keys of one JWKS URL.
struct KeyCache {
    url: Uri,
    algorithms: Vec<Algorithm>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    keys: ArcSwap<KeySet>,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    /// When the keys were last fetched successfully, and when a fetch was last tried.
    times: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Single flight: one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

fn caches() -> &'static Mutex<HashMap<String, Arc<KeyCache>>> {
    static CACHES: OnceLock<Mutex<HashMap<String, Arc<KeyCache>>>> = OnceLock::new();
    CACHES.get_or_init(Mutex::default)
}

/// Build the external issuers, recording every problem.
pub fn build(
    problems: &mut Problems,
    base_dir: &Path,
    raw: Vec<RawExternalIssuer>,
    leeway_secs: u64,
    max_lifetime_secs: u64,
) -> Vec<ExternalIssuer> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("auth.external_issuers[{i}]");
        let start = problems.count();
        let url: Option<Uri> = r.jwks_url.parse().ok().filter(|u: &Uri| {
            matches!(u.scheme_str(), Some("https") | Some("http")) && u.authority().is_some()
        });
        if url.is_none() {
            problems.push(
                format!("{key}.jwks_url"),
                format!("{:?} is not an http(s) URL", r.jwks_url),
            );
        }
        let mut algorithms = Vec::new();
        for name in &r.algorithms {
            match parse_algorithm(name) {
                Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | None => problems.push(
                    format!("{key}.algorithms"),
                    format!("{name:?} is not an asymmetric signature algorithm (RS*, PS*, ES256, ES384, EdDSA)"),
                ),
                Some(a) => algorithms.push(a),
            }
        }
        if r.algorithms.is_empty() {
            problems.push(
                format!("{key}.algorithms"),
                "list the accepted algorithms, e.g. [RS256]",
            );
        }
        let refresh_interval = duration_or(
            problems,
            format!("{key}.refresh_interval"),
            r.refresh_interval.as_deref(),
            Duration::from_secs(600),
        );
        let min_refetch_interval = duration_or(
            problems,
            format!("{key}.min_refetch_interval"),
            r.min_refetch_interval.as_deref(),
            Duration::from_secs(30),
        );
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = &r.ca_file {
            use rustls::pki_types::pem::PemObject;
            let path = resolve_path(base_dir, ca);
            match rustls::pki_types::CertificateDer::pem_file_iter(&path)
                .map(|it| it.collect::<Result<Vec<_>, _>>())
            {
                Ok(Ok(certs)) if !certs.is_empty() => {
                    for c in certs {
                        let _ = roots.add(c);
                    }
                }
                _ => problems.push(
                    format!("{key}.ca_file"),
                    format!("cannot read certificates from {}", path.display()),
                ),
            }
        }
        let Some(url) = url.filter(|_| problems.count() == start) else {
            continue;
        };
        let cache_key = format!("{url} {algorithms:?} {:?}", r.ca_file);
        let cache = caches()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cache_key)
            .or_insert_with(|| {
                Arc::new(KeyCache::new(
                    url,
                    algorithms.clone(),
                    roots,
                    refresh_interval,
                    min_refetch_interval,
                ))
            })
            .clone();
        out.push(ExternalIssuer {
            rules: TokenRules {
                ttl_secs: 0,
                issuer: Some(r.issuer.clone()),
                audience: r.audience,
                leeway_secs,
                max_lifetime_secs,
            },
            issuer: r.issuer,
            cache,
        });
    }
    out
}

impl KeyCache {
    fn new(
        url: Uri,
        algorithms: Vec<Algorithm>,
        roots: rustls::RootCertStore,
        refresh_interval: Duration,
        min_refetch_interval: Duration,
    ) -> KeyCache {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        KeyCache {
            client: Client::builder(TokioExecutor::new()).build(connector),
            keys: ArcSwap::from_pointee(KeySet::from_jwks(
                &jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
                &algorithms,
            )),
            url,
            algorithms,
            refresh_interval,
            min_refetch_interval,
            times: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn times(&self) -> (Option<Instant>, Option<Instant>) {
        *self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetch now unless another fetch ran within `min_gap`; keep the old keys on failure.
    async fn fetch(&self, min_gap: Duration) {
        let _single = self.fetching.lock().await;
        if self.times().1.is_some_and(|t| t.elapsed() < min_gap) {
            return;
        }
        self.times.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(Instant::now());
        match tokio::time::timeout(FETCH_TIMEOUT, self.get()).await {
            Ok(Ok(keys)) => {
                tracing::info!(url = %self.url, keys = keys.len(), "fetched external issuer keys");
                self.keys.store(Arc::new(keys));
                self.times.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch external issuer keys; keeping the last good ones")
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "fetching external issuer keys timed out; keeping the last good ones")
            }
        }
    }

    async fn get(&self) -> Result<KeySet, String> {
        let response = self
            .client
            .get(self.url.clone())
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok(KeySet::from_jwks(&jwks, &self.algorithms))
    }

    /// Make sure keys are there (wait for the first fetch) and fresh (refresh in the
    /// background when stale).
    async fn ensure(self: &Arc<Self>) {
        match self.times().0 {
            None => self.fetch(Duration::from_secs(1)).await,
            Some(at) if at.elapsed() > self.refresh_interval => {
                let this = self.clone();
                tokio::spawn(async move { this.fetch(Duration::ZERO).await });
            }
            Some(_) => {}
        }
    }
}

/// The unverified `iss` of a compact JWS, only to choose which keys verify it.
fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

/// The unverified `kid` of a compact JWS.
fn peek_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}

/// The external issuer a token claims to come from, if it is one of `issuers`.
pub fn issuer_of<'a>(issuers: &'a [ExternalIssuer], token: &str) -> Option<&'a ExternalIssuer> {
    if issuers.is_empty() {
        return None;
    }
    let iss = peek_issuer(token)?;
    issuers.iter().find(|i| i.issuer == iss)
}

impl ExternalIssuer {
    /// Verify an access token of this issuer, fetching keys as needed.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        self.cache.ensure().await;
        if let Some(kid) = peek_kid(token) {
            if !self.cache.keys.load().has_kid(&kid) {
                self.cache.fetch(self.cache.min_refetch_interval).await;
            }
        }
        self.cache
            .keys
            .load()
            .verify(token, &self.rules, now, TokenType::Access)
    }

    /// Start fetching the keys (at server start, so the first request need not wait).
    pub fn prefetch(&self) {
        let cache = self.cache.clone();
        tokio::spawn(async move { cache.ensure().await });
    }
}
