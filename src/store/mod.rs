//! Shared token state: revocations, refresh-token families and login failure counters.
//!
//! Two backends with one interface: [`memory`] for a single instance (the default), and
//! [`redis`] for several replicas. Either way, the per-request revocation check reads only
//! a local in-process view ([`Revocations`]), so no request pays a round trip; with Redis
//! the view is kept current by pub/sub (and a full resync after every reconnect), so a
//! logout on one replica is enforced on the others as soon as the message arrives.
//!
//! While Redis is unreachable the view may be stale; `on_unavailable` decides:
//! `fail_closed` (default) refuses authenticated requests with 503, `fail_open` keeps
//! serving from the last known view. Both are logged and counted.

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::metrics::Metrics;

/// What to do while the shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse what needs the store (503): nothing revoked can slip through.
    #[default]
    Closed,
    /// Serve from the last known state; logins skip rate limiting.
    Open,
}

impl FailMode {
    /// The config and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "fail_closed",
            FailMode::Open => "fail_open",
        }
    }
}

/// The store could not be used.
#[derive(Debug, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// Why a token is refused by the revocation check.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It, its refresh family or its subject was revoked.
    Revoked,
    /// The store is down and the mode is fail_closed.
    Unavailable,
}

/// The identifiers of a token that revocation can target.
#[derive(Debug, Clone, Copy)]
pub struct TokenIds<'a> {
    /// `jti`.
    pub jti: Option<&'a str>,
    /// The refresh family (`fam`), when the token belongs to one.
    pub family: Option<&'a str>,
    /// `sub`.
    pub subject: &'a str,
    /// `iat`; a subject revocation covers tokens issued at or before its time.
    pub issued_at: Option<i64>,
}

/// Outcome of presenting a refresh token for rotation.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was the family's current token; the new one is now current.
    Rotated,
    /// It was already rotated: the family is now revoked (reuse detection).
    Reused,
    /// The family is unknown (expired, revoked, or never issued here).
    Unknown,
}

/// A revocation as stored and published: what, which, and until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    /// `jti`, `fam` or `sub`.
    pub kind: RevocationKind,
    /// The jti, family id or subject.
    pub id: String,
    /// jti/fam: when the revoked token expires (then the entry can go). sub: the time of
    /// the revocation (tokens issued at or before it are refused).
    pub at: i64,
}

/// What a revocation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token.
    Jti,
    /// A refresh-token family and the access tokens issued from it.
    Fam,
    /// Every token of a subject issued up to a time.
    Sub,
}

/// The local view of all live revocations, read on every request.
#[derive(Debug, Default)]
pub struct Revocations {
    maps: RwLock<RevocationMaps>,
    /// How long a subject revocation must be remembered (the longest token lifetime).
    subject_ttl: i64,
}

#[derive(Debug, Default)]
struct RevocationMaps {
    jti: HashMap<String, i64>,
    fam: HashMap<String, i64>,
    sub: HashMap<String, i64>,
    last_purge: i64,
}

impl Revocations {
    /// An empty view remembering subject revocations for `subject_ttl` seconds.
    pub fn new(subject_ttl: i64) -> Self {
        Self {
            maps: RwLock::default(),
            subject_ttl,
        }
    }

    /// Whether the token is revoked.
    pub fn is_revoked(&self, ids: &TokenIds<'_>) -> bool {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        ids.jti.is_some_and(|j| maps.jti.contains_key(j))
            || ids.family.is_some_and(|f| maps.fam.contains_key(f))
            || maps
                .sub
                .get(ids.subject)
                .is_some_and(|at| ids.issued_at.is_none_or(|iat| iat <= *at))
    }

    /// Record a revocation; entries past their time are dropped now and then.
    pub fn apply(&self, r: &Revocation, now: i64) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let map = match r.kind {
            RevocationKind::Jti => &mut maps.jti,
            RevocationKind::Fam => &mut maps.fam,
            RevocationKind::Sub => &mut maps.sub,
        };
        let entry = map.entry(r.id.clone()).or_insert(r.at);
        *entry = (*entry).max(r.at);
        if now - maps.last_purge > 60 {
            let ttl = self.subject_ttl;
            maps.jti.retain(|_, until| *until > now);
            maps.fam.retain(|_, until| *until > now);
            maps.sub.retain(|_, at| *at + ttl > now);
            maps.last_purge = now;
        }
    }

    /// Replace the whole view (after a resync from the shared store).
    pub fn replace(&self, all: Vec<Revocation>, now: i64) {
        {
            let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
            *maps = RevocationMaps {
                last_purge: now,
                ..Default::default()
            };
        }
        for r in &all {
            self.apply(r, now);
        }
    }

    /// Number of entries (for tests and logs).
    pub fn len(&self) -> usize {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.jti.len() + maps.fam.len() + maps.sub.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings of the store, from `store:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `None` for the memory store; the Redis URL otherwise.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and of the pub/sub channel.
    pub prefix: String,
    /// What to do while Redis is unreachable.
    pub on_unavailable: FailMode,
    /// Deadline of one Redis operation.
    pub timeout: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            prefix: "gateway:".into(),
            on_unavailable: FailMode::Closed,
            timeout: Duration::from_millis(500),
        }
    }
}

enum Backend {
    Memory(memory::MemoryBackend),
    Redis(redis::RedisBackend),
}

/// The shared state store. Created once per process; survives config reloads.
pub struct Store {
    backend: Backend,
    view: Arc<Revocations>,
    /// Whether the backend is reachable (always true for memory).
    healthy: Arc<AtomicBool>,
    mode: FailMode,
    metrics: Metrics,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field(
                "backend",
                &match self.backend {
                    Backend::Memory(_) => "memory",
                    Backend::Redis(_) => "redis",
                },
            )
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .field("mode", &self.mode)
            .finish()
    }
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    crate::auth::jwt::now() as i64
}

impl Store {
    /// An in-process store for one instance.
    pub fn memory(metrics: Metrics, subject_ttl: i64) -> Store {
        metrics.store_connected.set(1);
        Store {
            backend: Backend::Memory(memory::MemoryBackend::default()),
            view: Arc::new(Revocations::new(subject_ttl)),
            healthy: Arc::new(AtomicBool::new(true)),
            mode: FailMode::Closed,
            metrics,
        }
    }

    /// The store the settings ask for. With Redis, this connects and subscribes in the
    /// background: a Redis that is down at start is retried, not fatal.
    pub fn open(
        settings: &StoreSettings,
        metrics: Metrics,
        subject_ttl: i64,
    ) -> Result<Store, StoreError> {
        let Some(url) = &settings.redis_url else {
            return Ok(Store::memory(metrics, subject_ttl));
        };
        let view = Arc::new(Revocations::new(subject_ttl));
        let healthy = Arc::new(AtomicBool::new(false));
        let backend = redis::RedisBackend::open(
            url,
            settings,
            view.clone(),
            healthy.clone(),
            metrics.clone(),
        )?;
        Ok(Store {
            backend: Backend::Redis(backend),
            view,
            healthy,
            mode: settings.on_unavailable,
            metrics,
        })
    }

    /// Whether the backend is reachable now.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// The local revocation view.
    pub fn revocations(&self) -> &Revocations {
        &self.view
    }

    /// Count and log a use of the store while it is unavailable.
    fn unavailable(&self, operation: &'static str) {
        self.metrics
            .store_unavailable
            .with_label_values(&[operation, self.mode.as_str()])
            .inc();
        tracing::warn!(
            operation,
            mode = self.mode.as_str(),
            "state store unavailable"
        );
    }

    /// The per-request check: local view only, plus the fail mode while unreachable.
    pub fn check(&self, ids: &TokenIds<'_>) -> Result<(), Refusal> {
        if !self.is_healthy() {
            self.unavailable("check");
            if self.mode == FailMode::Closed {
                return Err(Refusal::Unavailable);
            }
        }
        if self.view.is_revoked(ids) {
            Err(Refusal::Revoked)
        } else {
            Ok(())
        }
    }

    /// Revoke a token, a family or a subject, everywhere.
    pub async fn revoke(&self, revocation: Revocation) -> Result<(), StoreError> {
        let result = match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.revoke(&revocation).await,
        };
        match result {
            Ok(()) => {
                self.view.apply(&revocation, now());
                Ok(())
            }
            Err(e) => {
                self.unavailable("revoke");
                Err(e)
            }
        }
    }

    /// Start a refresh family whose current token is `jti`.
    pub async fn start_family(
        &self,
        family: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let result = match &self.backend {
            Backend::Memory(m) => {
                m.start_family(family, jti, ttl);
                Ok(())
            }
            Backend::Redis(r) => r.start_family(family, jti, ttl).await,
        };
        result.inspect_err(|_| self.unavailable("refresh"))
    }

    /// Present `old_jti` of `family`; on success `new_jti` becomes current. A token that
    /// was already rotated revokes the whole family.
    pub async fn rotate(
        &self,
        family: &str,
        old_jti: &str,
        new_jti: &str,
        ttl: Duration,
    ) -> Result<Rotation, StoreError> {
        let result = match &self.backend {
            Backend::Memory(m) => Ok(m.rotate(family, old_jti, new_jti, ttl)),
            Backend::Redis(r) => r.rotate(family, old_jti, new_jti, ttl).await,
        };
        let rotation = result.inspect_err(|_| self.unavailable("refresh"))?;
        if rotation == Rotation::Reused {
            let until = now() + ttl.as_secs() as i64;
            self.revoke(Revocation {
                kind: RevocationKind::Fam,
                id: family.to_owned(),
                at: until,
            })
            .await?;
        }
        Ok(rotation)
    }

    /// Current failure count of a login-limit key and the seconds until it resets.
    pub async fn failures(&self, key: &str) -> Result<(u64, u64), StoreError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.failures(key)),
            Backend::Redis(r) => r.failures(key).await,
        }
        .inspect_err(|_| self.unavailable("login_limit"))
    }

    /// Count one failure against a key whose window is `window`.
    pub async fn add_failure(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(m) => {
                m.add_failure(key, window);
                Ok(())
            }
            Backend::Redis(r) => r.add_failure(key, window).await,
        }
        .inspect_err(|_| self.unavailable("login_limit"))
    }

    /// Forget the failures of a key (after a successful login).
    pub async fn reset_failures(&self, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(m) => {
                m.reset_failures(key);
                Ok(())
            }
            Backend::Redis(r) => r.reset_failures(key).await,
        }
        .inspect_err(|_| self.unavailable("login_limit"))
    }

    /// The fail mode.
    pub fn mode(&self) -> FailMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_cover_jti_family_and_subject_up_to_a_time() {
        let view = Revocations::new(3600);
        let ids = |jti, family, iat| TokenIds {
            jti: Some(jti),
            family,
            subject: "alice",
            issued_at: Some(iat),
        };
        assert!(!view.is_revoked(&ids("a", None, 100)));
        view.apply(
            &Revocation {
                kind: RevocationKind::Jti,
                id: "a".into(),
                at: 200,
            },
            100,
        );
        assert!(view.is_revoked(&ids("a", None, 100)));
        view.apply(
            &Revocation {
                kind: RevocationKind::Fam,
                id: "f".into(),
                at: 200,
            },
            100,
        );
        assert!(view.is_revoked(&ids("b", Some("f"), 100)));
        view.apply(
            &Revocation {
                kind: RevocationKind::Sub,
                id: "alice".into(),
                at: 150,
            },
            100,
        );
        assert!(view.is_revoked(&ids("c", None, 150)));
        assert!(
            !view.is_revoked(&ids("c", None, 151)),
            "tokens issued after the revocation stay valid"
        );
    }
}
