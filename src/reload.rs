//! Hot reload: on SIGHUP, or when a watched file changes, load and validate the config
//! again and swap it in for new requests. Connections stay open; requests in flight finish
//! with the config they started with. A config that does not validate is rejected whole:
//! the old one keeps serving, the error is logged exactly as `gateway check` prints it, and
//! `gateway_config_reloads_total{outcome="failure"}` counts it. Certificates from files are
//! swapped through the listeners' [`CertResolver`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::app::App;
use crate::config::{self, ConfigError, TlsSetting};
use crate::tls::CertResolver;

/// Reloads the configuration of a running server. Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    app: App,
    /// One per listener, in config order; `None` for plaintext and self-signed listeners.
    resolvers: Arc<Vec<Option<Arc<CertResolver>>>>,
    /// Serializes reloads, so a SIGHUP and a file change cannot interleave.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    /// A reloader for `app`, swapping certificates through `resolvers`.
    pub fn new(app: App, resolvers: Vec<Option<Arc<CertResolver>>>) -> Self {
        Self {
            app,
            resolvers: Arc::new(resolvers),
            lock: Arc::default(),
        }
    }

    /// Load the config file again; swap it in if it is valid.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let _guard = self.lock.lock().await;
        let current = self.app.config();
        let path = current.file.clone();
        // Loading reads files and computes a dummy password hash: keep it off the reactor.
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError {
                    problems: vec![format!("reload task failed: {e}")],
                })
            });
        let metrics = self.app.metrics();
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(
                    "configuration reload rejected, still serving the previous configuration:\n{e}"
                );
                return Err(e);
            }
        };
        let same_listeners = new.listeners.len() == current.listeners.len()
            && new.listeners.iter().zip(&current.listeners).all(|(a, b)| {
                a.address == b.address
                    && std::mem::discriminant(&a.tls) == std::mem::discriminant(&b.tls)
            });
        let admin_address = |c: &crate::config::Config| c.admin.as_ref().map(|a| a.address);
        if !same_listeners || admin_address(&new) != admin_address(&current) {
            tracing::warn!(
                "listener addresses or TLS modes changed: they take effect after a restart"
            );
        }
        if new.store != current.store {
            tracing::warn!("store settings changed: they take effect after a restart");
        }
        for (listener, resolver) in new.listeners.iter().zip(self.resolvers.iter()) {
            if let (TlsSetting::Files { key, .. }, Some(resolver)) = (&listener.tls, resolver) {
                resolver.set(key.clone());
            }
        }
        self.app.set_config(Arc::new(new));
        metrics.config_reloads.with_label_values(&["success"]).inc();
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Poll the watched files and reload when their contents change. Runs until dropped.
    pub async fn watch(self) {
        let mut last = fingerprint(&self.app.config().watched_files()).await;
        loop {
            let interval = self
                .app
                .config()
                .server
                .reload_interval
                .unwrap_or(Duration::from_secs(2));
            tokio::time::sleep(interval).await;
            let config = self.app.config();
            if config.server.reload_interval.is_none() {
                continue;
            }
            let now = fingerprint(&config.watched_files()).await;
            if now != last {
                tracing::info!("a configuration file changed; reloading");
                let _ = self.reload().await;
                // Whatever the outcome, wait for the next change before trying again (the
                // file set itself may have changed with a successful reload).
                last = fingerprint(&self.app.config().watched_files()).await;
            }
        }
    }
}

/// A hash over the paths and contents of `files` (a missing file counts as empty).
async fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let files = files.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        for f in &files {
            hasher.update(f.to_string_lossy().as_bytes());
            hasher.update([0]);
            match std::fs::read(f) {
                Ok(bytes) => {
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                }
                Err(_) => hasher.update(u64::MAX.to_le_bytes()),
            }
        }
        hasher.finalize().into()
    })
    .await
    .unwrap_or([0; 32])
}
