//! The user store: emails, argon2id hashes, roles and claims, loaded with the config.
//!
//! Passwords are checked on tokio's blocking pool behind a semaphore, so a flood of logins
//! queues there instead of starving the reactor that serves proxied traffic. Unknown and
//! disabled users are checked against a dummy hash with the same parameters, so their
//! answer takes as long as a wrong password's.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::jwt::RESERVED_CLAIMS;
use crate::config::raw::{RawUser, RawUsersFile};
use crate::config::{resolve_path, Problems};

/// OWASP's minimum argon2id cost: memory (KiB) times passes must reach this...
const MIN_MEMORY_TIMES_PASSES: u64 = 7168 * 5;
/// ...and memory alone must reach this (KiB).
const MIN_MEMORY_KIB: u32 = 7168;
/// Largest memory cost accepted (KiB): 1 GiB.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Most passes accepted.
const MAX_PASSES: u32 = 64;
/// Most lanes accepted.
const MAX_LANES: u32 = 16;

/// A user who may log in.
#[derive(Debug)]
pub struct User {
    /// The email as configured (the token's `sub`).
    pub email: String,
    /// Argon2id PHC string.
    password_hash: String,
    /// Roles for the `roles` claim.
    pub roles: Vec<String>,
    /// Extra claims for every token of this user.
    pub claims: BTreeMap<String, Value>,
    /// Disabled users are refused like unknown ones.
    pub disabled: bool,
}

/// All users, indexed by lowercased email.
#[derive(Debug)]
pub struct UserStore {
    by_email: HashMap<String, Arc<User>>,
    /// Verified against when the user is unknown or disabled, to equalize timing.
    dummy_hash: String,
    /// Bounds how many hashes are computed at once.
    permits: Arc<Semaphore>,
}

/// OWASP-recommended argon2id parameters (m=19 MiB, t=2, p=1).
pub fn recommended_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters")
}

/// Hash a password into a PHC string with the recommended parameters.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    hash_with(password, recommended_params())
}

fn hash_with(password: &[u8], params: Params) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// Check a PHC string: argon2id, parseable, at least OWASP's minimum cost.
fn check_hash(phc: &str) -> Result<Params, String> {
    if !phc.starts_with('$') {
        return Err("is not a PHC hash string (plaintext passwords are refused); generate one with `gateway hash-password`".into());
    }
    let parsed =
        PasswordHash::new(phc).map_err(|e| format!("is not a valid PHC hash string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "uses {}; only argon2id is accepted",
            parsed.algorithm
        ));
    }
    let params =
        Params::try_from(&parsed).map_err(|e| format!("has invalid argon2 parameters: {e}"))?;
    if params.m_cost() < MIN_MEMORY_KIB
        || u64::from(params.m_cost()) * u64::from(params.t_cost()) < MIN_MEMORY_TIMES_PASSES
    {
        return Err(format!(
            "argon2id parameters m={},t={} are below the OWASP minimum (e.g. m=19456,t=2)",
            params.m_cost(),
            params.t_cost()
        ));
    }
    // A hash is also a work order: refuse ones that would make every login (and the
    // config load's dummy hash) take gigabytes or minutes.
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_PASSES
        || params.p_cost() > MAX_LANES
    {
        return Err(format!(
            "argon2id parameters m={},t={},p={} are above the accepted maximum (m<={MAX_MEMORY_KIB},t<={MAX_PASSES},p<={MAX_LANES})",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(params)
}

impl UserStore {
    /// Build the store from inline users and/or a users file, recording every problem.
    pub fn build(
        problems: &mut Problems,
        base_dir: &Path,
        inline: Option<Vec<RawUser>>,
        users_file: Option<&str>,
        concurrency: usize,
    ) -> Option<UserStore> {
        let start = problems.count();
        let mut by_email = HashMap::new();
        let mut dummy_params = None;
        let mut add = |target: &mut Problems, key_base: &str, users: Vec<RawUser>| {
            for (i, u) in users.into_iter().enumerate() {
                let key = format!("{key_base}[{i}]");
                let email = u.email.trim().to_lowercase();
                if email.is_empty() {
                    target.push(format!("{key}.email"), "must not be empty");
                    continue;
                }
                match check_hash(&u.password_hash) {
                    Ok(p) => {
                        dummy_params.get_or_insert(p);
                    }
                    Err(e) => target.push(format!("{key}.password_hash"), e),
                }
                for claim in u.claims.keys() {
                    if RESERVED_CLAIMS.contains(&claim.as_str()) {
                        target.push(
                            format!("{key}.claims.{claim}"),
                            "is a reserved claim set by the gateway",
                        );
                    }
                }
                let user = User {
                    email: u.email.trim().to_owned(),
                    password_hash: u.password_hash,
                    roles: u.roles,
                    claims: u.claims,
                    disabled: u.disabled,
                };
                if by_email.insert(email.clone(), Arc::new(user)).is_some() {
                    target.push(format!("{key}.email"), format!("duplicate user {email:?}"));
                }
            }
        };
        if let Some(users) = inline {
            add(problems, "auth.users", users);
        }
        if let Some(f) = users_file {
            let path = resolve_path(base_dir, f);
            match std::fs::read_to_string(&path) {
                Err(e) => problems.push(
                    "auth.users_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
                Ok(text) => {
                    let mut file_problems = Problems::new(path.display().to_string());
                    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                        Err(e) => file_problems.push_file(format!("invalid YAML: {e}")),
                        Ok(v) => {
                            if let Some(parsed) = file_problems.parse::<RawUsersFile>("", v) {
                                add(&mut file_problems, "users", parsed.users);
                            }
                        }
                    }
                    problems.absorb(file_problems);
                }
            }
        }
        if problems.count() != start {
            return None;
        }
        let dummy_hash = match hash_with(
            uuid::Uuid::new_v4().as_bytes(),
            dummy_params.unwrap_or_else(recommended_params),
        ) {
            Ok(h) => h,
            Err(e) => {
                problems.push("auth", e);
                return None;
            }
        };
        Some(UserStore {
            by_email,
            dummy_hash,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// The user with this email (any case).
    pub fn get(&self, email: &str) -> Option<Arc<User>> {
        self.by_email.get(&email.trim().to_lowercase()).cloned()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_email.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.by_email.is_empty()
    }

    /// Check an email and password; `Some(user)` only for an enabled user with that password.
    /// Always computes exactly one hash, whatever the outcome.
    pub async fn authenticate(&self, email: &str, password: String) -> Option<Arc<User>> {
        let user = self.by_email.get(&email.trim().to_lowercase()).cloned();
        let hash = match &user {
            Some(u) if !u.disabled => u.password_hash.clone(),
            _ => self.dummy_hash.clone(),
        };
        let _permit = self.permits.clone().acquire_owned().await.ok()?;
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        user.filter(|u| matches && !u.disabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_at_load() {
        assert!(check_hash("password").unwrap_err().contains("plaintext"));
        let weak = hash_with(b"pw", Params::new(1024, 1, 1, None).unwrap()).unwrap();
        assert!(check_hash(&weak).unwrap_err().contains("OWASP"));
        let good = hash_password(b"pw").unwrap();
        assert!(check_hash(&good).is_ok());
        let huge = good.replace("m=19456,t=2,p=1", "m=4194304,t=2,p=1");
        assert!(check_hash(&huge)
            .unwrap_err()
            .contains("above the accepted maximum"));
    }
}
