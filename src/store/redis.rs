//! The Redis backend, for several replicas.
//!
//! - Revocations are Redis keys that expire with what they revoke, and each one is also
//!   published on `{prefix}revocations`. A background task keeps a subscription open and
//!   applies every message to the local view; after each (re)connect it first resyncs the
//!   whole view with a SCAN, so nothing published while it was away is missed.
//! - Refresh rotation and failure counting are Lua scripts: atomic across replicas.
//! - The same task pings Redis every second; until the subscription and the ping are good,
//!   the store is unhealthy and the fail mode applies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Script};

use super::{Revocation, RevocationKind, Revocations, Rotation, StoreError, StoreSettings};
use crate::metrics::Metrics;

/// Compare-and-set of a family's current refresh jti. 1 rotated, 2 reused, 0 unknown.
const ROTATE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
redis.call('DEL', KEYS[1])
return 2
";

/// Count a failure in a fixed window that starts with the first failure.
const ADD_FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// Connection and scripts shared by every operation.
pub struct RedisBackend {
    prefix: String,
    channel: String,
    timeout: Duration,
    /// Set by the background task once connected; the manager reconnects by itself.
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    rotate: Script,
    add_failure: Script,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedisBackend {
    /// Validate the URL and start the background connection and subscription task.
    pub(super) fn open(
        url: &str,
        settings: &StoreSettings,
        view: Arc<Revocations>,
        healthy: Arc<AtomicBool>,
        metrics: Metrics,
    ) -> Result<RedisBackend, StoreError> {
        let client = Client::open(url).map_err(err)?;
        let backend = RedisBackend {
            prefix: settings.prefix.clone(),
            channel: format!("{}revocations", settings.prefix),
            timeout: settings.timeout,
            conn: Arc::default(),
            rotate: Script::new(ROTATE),
            add_failure: Script::new(ADD_FAILURE),
        };
        let task = SyncTask {
            client,
            prefix: backend.prefix.clone(),
            channel: backend.channel.clone(),
            timeout: backend.timeout,
            conn: backend.conn.clone(),
            view,
            healthy,
            metrics,
        };
        tokio::spawn(task.run());
        Ok(backend)
    }

    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn
            .load_full()
            .map(|c| (*c).clone())
            .ok_or_else(|| err("not connected to redis"))
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        within(self.timeout, f).await
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    pub(super) async fn revoke(&self, r: &Revocation) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let now = crate::auth::jwt::now() as i64;
        let kind = kind_name(r.kind);
        // jti/fam entries live until the token expires; subject entries as long as the
        // longest refresh token the gateway may issue.
        let ttl = match r.kind {
            RevocationKind::Sub => crate::auth::MAX_REFRESH_TTL_SECS as i64,
            _ => (r.at - now).max(1),
        };
        let message = serde_json::to_string(r).map_err(err)?;
        let key = self.key(&["rev", kind, &r.id]);
        self.timed(async {
            redis::pipe()
                .atomic()
                .set_ex(&key, r.at, ttl as u64)
                .ignore()
                .publish(&self.channel, message)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub(super) async fn start_family(
        &self,
        family: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let key = self.key(&["fam", family]);
        self.timed(conn.set_ex::<_, _, ()>(key, jti, ttl.as_secs().max(1)))
            .await
    }

    pub(super) async fn rotate(
        &self,
        family: &str,
        old_jti: &str,
        new_jti: &str,
        ttl: Duration,
    ) -> Result<Rotation, StoreError> {
        let mut conn = self.conn()?;
        let key = self.key(&["fam", family]);
        let mut invocation = self.rotate.key(key);
        invocation
            .arg(old_jti)
            .arg(new_jti)
            .arg(ttl.as_secs().max(1));
        let outcome: i64 = self.timed(invocation.invoke_async(&mut conn)).await?;
        Ok(match outcome {
            1 => Rotation::Rotated,
            2 => Rotation::Reused,
            _ => Rotation::Unknown,
        })
    }

    pub(super) async fn failures(&self, key: &str) -> Result<(u64, u64), StoreError> {
        let mut conn = self.conn()?;
        let key = self.key(&["fail", key]);
        let (count, ttl): (Option<u64>, i64) = self
            .timed(async {
                redis::pipe()
                    .get(&key)
                    .ttl(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok((count.unwrap_or(0), ttl.max(0) as u64))
    }

    pub(super) async fn add_failure(&self, key: &str, window: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut invocation = self.add_failure.key(self.key(&["fail", key]));
        invocation.arg(window.as_secs().max(1));
        self.timed(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    pub(super) async fn reset_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        self.timed(conn.del::<_, ()>(self.key(&["fail", key])))
            .await
    }
}

/// Run a Redis future with a deadline.
async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err("redis operation timed out")),
    }
}

fn kind_name(kind: RevocationKind) -> &'static str {
    match kind {
        RevocationKind::Jti => "jti",
        RevocationKind::Fam => "fam",
        RevocationKind::Sub => "sub",
    }
}

/// The background task: connect, subscribe, resync, apply messages, ping; repeat.
struct SyncTask {
    client: Client,
    prefix: String,
    channel: String,
    timeout: Duration,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    view: Arc<Revocations>,
    healthy: Arc<AtomicBool>,
    metrics: Metrics,
}

impl SyncTask {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, "redis state store unreachable; retrying"),
            }
            if self.healthy.swap(false, Ordering::SeqCst) {
                tracing::warn!("redis state store connection lost");
                self.metrics.store_connected.set(0);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connected period; returns when the subscription or the ping fails.
    async fn session(&self) -> Result<(), StoreError> {
        let limit = self.timeout.max(Duration::from_secs(1));
        let manager = match self.conn.load_full() {
            Some(m) => (*m).clone(),
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                let m = within(
                    limit,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await?;
                self.conn.store(Some(Arc::new(m.clone())));
                m
            }
        };
        let mut pubsub = within(limit, self.client.get_async_pubsub()).await?;
        within(limit, pubsub.subscribe(&self.channel)).await?;
        self.resync(manager.clone()).await?;
        self.healthy.store(true, Ordering::SeqCst);
        self.metrics.store_connected.set(1);
        tracing::info!(
            entries = self.view.len(),
            "redis state store connected and synchronized"
        );

        let mut messages = pubsub.on_message();
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Err(err("subscription closed")) };
                    let payload: String = message.get_payload().map_err(err)?;
                    match serde_json::from_str::<Revocation>(&payload) {
                        Ok(r) => self.view.apply(&r, crate::auth::jwt::now() as i64),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed revocation message"),
                    }
                }
                _ = ping.tick() => {
                    let mut m = manager.clone();
                    within(limit, redis::cmd("PING").query_async::<String>(&mut m)).await?;
                }
            }
        }
    }

    /// Replace the local view with every revocation stored in Redis.
    async fn resync(&self, mut manager: ConnectionManager) -> Result<(), StoreError> {
        let pattern = format!("{}rev:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut manager)
                .await
                .map_err(err)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut all = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<i64>> = manager.mget(chunk).await.map_err(err)?;
            for (key, value) in chunk.iter().zip(values) {
                let Some(at) = value else { continue };
                let rest = &key[self.prefix.len() + "rev:".len()..];
                let Some((kind, id)) = rest.split_once(':') else {
                    continue;
                };
                let kind = match kind {
                    "jti" => RevocationKind::Jti,
                    "fam" => RevocationKind::Fam,
                    "sub" => RevocationKind::Sub,
                    _ => continue,
                };
                all.push(Revocation {
                    kind,
                    id: id.to_owned(),
                    at,
                });
            }
        }
        self.view.replace(all, crate::auth::jwt::now() as i64);
        Ok(())
    }
}
