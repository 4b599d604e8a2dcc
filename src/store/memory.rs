//! The in-process backend: refresh families and login counters in one mutex-guarded map
//! set. Revocations live only in the shared local view.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Rotation;

/// Families and counters, each with its expiry.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// family -> (current jti, expires)
    families: HashMap<String, (String, Instant)>,
    /// key -> (failures, window end)
    failures: HashMap<String, (u64, Instant)>,
}

impl MemoryBackend {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn start_family(&self, family: &str, jti: &str, ttl: Duration) {
        let mut state = self.state();
        let now = Instant::now();
        state.families.retain(|_, (_, until)| *until > now);
        state
            .families
            .insert(family.to_owned(), (jti.to_owned(), now + ttl));
    }

    pub(super) fn rotate(
        &self,
        family: &str,
        old_jti: &str,
        new_jti: &str,
        ttl: Duration,
    ) -> Rotation {
        let mut state = self.state();
        let now = Instant::now();
        match state.families.get(family) {
            Some((_, until)) if *until <= now => {
                state.families.remove(family);
                Rotation::Unknown
            }
            None => Rotation::Unknown,
            Some((current, _)) if current == old_jti => {
                state
                    .families
                    .insert(family.to_owned(), (new_jti.to_owned(), now + ttl));
                Rotation::Rotated
            }
            Some(_) => {
                state.families.remove(family);
                Rotation::Reused
            }
        }
    }

    pub(super) fn failures(&self, key: &str) -> (u64, u64) {
        let state = self.state();
        match state.failures.get(key) {
            Some((n, until)) if *until > Instant::now() => (
                *n,
                until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1),
            ),
            _ => (0, 0),
        }
    }

    pub(super) fn add_failure(&self, key: &str, window: Duration) {
        let mut state = self.state();
        let now = Instant::now();
        if state.failures.len() > 100_000 {
            state.failures.retain(|_, (_, until)| *until > now);
        }
        let entry = state
            .failures
            .entry(key.to_owned())
            .or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
    }

    pub(super) fn reset_failures(&self, key: &str) {
        self.state().failures.remove(key);
    }
}
