//! Brute-force protection of the login endpoint: failures counted per account and per
//! client address in the shared store, checked before any password hash is computed.
//!
//! A key that reached its limit answers `429` with `Retry-After` until its window (which
//! starts at the first failure) ends. A successful login resets the account's counter,
//! not the address's: otherwise one valid account would let an address keep guessing
//! the passwords of others.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{duration_or, raw::RawLoginLimits, Problems};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::store::{FailMode, Store};

/// One limit: this many failures per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures allowed before logins are refused.
    pub max_failures: u64,
    /// How long failures are counted, from the first one.
    pub window: Duration,
}

/// The login limits.
#[derive(Debug, Clone, Default)]
pub struct LoginLimits {
    /// Per lowercased email.
    pub per_account: Option<Limit>,
    /// Per client IP address.
    pub per_address: Option<Limit>,
}

impl LoginLimits {
    /// From `auth.login_limits` (on by default: 5 per account, 50 per address, per 15m).
    pub fn build(problems: &mut Problems, raw: Option<RawLoginLimits>) -> LoginLimits {
        let raw = raw.unwrap_or_default();
        if raw.enabled == Some(false) {
            return LoginLimits::default();
        }
        let mut limit = |key: &str, raw: Option<crate::config::raw::RawLimit>, max: u64| {
            let (max_failures, window) = match raw {
                Some(r) => (r.max_failures, Some(r.window)),
                None => (max, None),
            };
            if max_failures == 0 {
                problems.push(
                    format!("auth.login_limits.{key}.max_failures"),
                    "must be at least 1",
                );
            }
            let window = duration_or(
                problems,
                format!("auth.login_limits.{key}.window"),
                window.as_deref(),
                Duration::from_secs(900),
            );
            Some(Limit {
                max_failures,
                window: window.max(Duration::from_secs(1)),
            })
        };
        LoginLimits {
            per_account: limit("per_account", raw.per_account, 5),
            per_address: limit("per_address", raw.per_address, 50),
        }
    }

    fn keys(&self, email: &str, ip: Option<IpAddr>) -> Vec<(&'static str, String, Limit)> {
        let mut keys = Vec::new();
        if let Some(l) = self.per_account {
            keys.push((
                "account",
                format!("acct:{}", email.trim().to_lowercase()),
                l,
            ));
        }
        if let (Some(l), Some(ip)) = (self.per_address, ip) {
            keys.push(("address", format!("addr:{ip}"), l));
        }
        keys
    }

    /// Refuse with 429 when a limit is reached; with the store down, fail_closed refuses
    /// with 503 and fail_open lets the attempt through.
    pub async fn check(
        &self,
        store: &Store,
        metrics: &Metrics,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), GatewayError> {
        for (label, key, limit) in self.keys(email, ip) {
            match store.failures(&key).await {
                Ok((count, retry_after)) if count >= limit.max_failures => {
                    metrics.login_limited.with_label_values(&[label]).inc();
                    return Err(GatewayError::TooManyRequests {
                        retry_after: retry_after.max(1),
                    });
                }
                Ok(_) => {}
                Err(_) if store.mode() == FailMode::Open => {}
                Err(_) => return Err(GatewayError::StoreUnavailable),
            }
        }
        Ok(())
    }

    /// Count a failed login against the account and the address.
    pub async fn record_failure(&self, store: &Store, email: &str, ip: Option<IpAddr>) {
        for (_, key, limit) in self.keys(email, ip) {
            let _ = store.add_failure(&key, limit.window).await;
        }
    }

    /// Forget the account's failures after a successful login.
    pub async fn record_success(&self, store: &Store, email: &str) {
        if self.per_account.is_some() {
            let _ = store
                .reset_failures(&format!("acct:{}", email.trim().to_lowercase()))
                .await;
        }
    }
}
