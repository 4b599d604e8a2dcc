//! Authentication: the user store, login, JWT keys and verification, route policies.
//!
//! - [`users`]: argon2id user store, verified on a bounded blocking pool.
//! - [`login`]: the `POST /users/login` handler.
//! - [`jwt`]: keys, token issuance and verification with PyJWT-compatible errors.
//! - [`policy`]: per-route role, scope and claim requirements.
//! - [`session`]: refresh-token rotation and logout.
//! - [`limits`]: brute-force protection of login.
//! - [`jwks`]: the public keys as a JWK set.
//!
//! [`Auth::authenticate`] is the step the request path runs for every protected route:
//! it reads the `Authorization` header exactly as Flask-JWT-Extended does and returns the
//! verified [`Identity`](jwt::Identity) or the error Flask-JWT-Extended would give.

pub mod external;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod login;
pub mod policy;
pub mod session;
pub mod users;

use std::path::Path;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, StatusCode};

use crate::config::{duration_or, raw::RawAuth, Problems};
use crate::error::{ErrorMode, TokenError};
use jwt::{Identity, KeySet, TokenRules};
use users::UserStore;

/// Longest `Authorization` header decoded; longer ones are refused unread.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Everything authentication needs, prepared at config load.
#[derive(Debug)]
pub struct Auth {
    /// Path of the login endpoint.
    pub login_path: String,
    /// Users who may log in.
    pub users: UserStore,
    /// Signing and verification keys.
    pub keys: KeySet,
    /// Claim rules (lifetime, iss, aud, leeway).
    pub rules: TokenRules,
    /// How token failures are reported.
    pub error_mode: ErrorMode,
    /// Header carrying `sub` upstream.
    pub subject_header: HeaderName,
    /// Header carrying the roles upstream.
    pub roles_header: HeaderName,
    /// Files read to build this (users file, key files), watched for reloads.
    pub files: Vec<std::path::PathBuf>,
    /// Refresh tokens, when enabled.
    pub refresh: Option<RefreshSettings>,
    /// Path of the logout endpoint.
    pub logout_path: String,
    /// Brute-force limits of login.
    pub limits: limits::LoginLimits,
    /// `GET /.well-known/jwks.json` body, when there are asymmetric keys.
    pub jwks: Option<bytes::Bytes>,
    /// Other issuers whose tokens are accepted.
    pub external: Vec<external::ExternalIssuer>,
}

/// `auth.refresh`: refresh tokens are opt-in.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Path of the refresh endpoint.
    pub path: String,
    /// Refresh token lifetime in seconds.
    pub ttl_secs: u64,
}

/// Path of the JWK set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The longest refresh-token lifetime accepted: subject revocations are kept this long.
pub const MAX_REFRESH_TTL_SECS: u64 = 90 * 86400;

/// Build [`Auth`] from `auth:`, recording every problem.
pub fn build(problems: &mut Problems, base_dir: &Path, raw: RawAuth) -> Option<Auth> {
    let start = problems.count();
    let login_path = raw.login_path.unwrap_or_else(|| "/users/login".to_owned());
    if crate::routing::normalize_path(&login_path).ok().as_deref() != Some(login_path.as_str()) {
        problems.push(
            "auth.login_path",
            "must be a normalized absolute path such as /users/login",
        );
    }
    let error_mode = match raw.errors.as_deref() {
        None | Some("flask") => ErrorMode::Flask,
        Some("rfc6750") => ErrorMode::Rfc6750,
        Some(other) => {
            problems.push(
                "auth.errors",
                format!("unknown value {other:?} (expected flask or rfc6750)"),
            );
            ErrorMode::Flask
        }
    };
    let rules = TokenRules {
        ttl_secs: duration_or(
            problems,
            "auth.access_token_ttl",
            raw.access_token_ttl.as_deref(),
            std::time::Duration::from_secs(900),
        )
        .as_secs(),
        issuer: raw.issuer,
        audience: raw.audience,
        leeway_secs: duration_or(
            problems,
            "auth.leeway",
            raw.leeway.as_deref(),
            std::time::Duration::ZERO,
        )
        .as_secs(),
        max_lifetime_secs: duration_or(
            problems,
            "auth.max_token_lifetime",
            raw.max_token_lifetime.as_deref(),
            std::time::Duration::from_secs(86400),
        )
        .as_secs(),
    };
    if rules.ttl_secs == 0 {
        problems.push("auth.access_token_ttl", "must be at least 1s");
    }
    if rules.ttl_secs > rules.max_lifetime_secs {
        problems.push(
            "auth.access_token_ttl",
            "is longer than auth.max_token_lifetime (default 24h): tokens would be refused",
        );
    }
    let headers = raw.identity_headers;
    let mut header = |key: &str, value: Option<String>, default: &'static str| {
        let name = value.unwrap_or_else(|| default.to_owned());
        HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| {
            problems.push(
                format!("auth.identity_headers.{key}"),
                format!("invalid header name {name:?}"),
            );
            HeaderName::from_static("x-invalid")
        })
    };
    let subject_header = header(
        "subject",
        headers.as_ref().and_then(|h| h.subject.clone()),
        "x-auth-subject",
    );
    let roles_header = header(
        "roles",
        headers.as_ref().and_then(|h| h.roles.clone()),
        "x-auth-roles",
    );
    let mut files: Vec<std::path::PathBuf> = raw
        .keys
        .iter()
        .flat_map(|k| [&k.secret_file, &k.private_key_file, &k.public_key_file])
        .flatten()
        .chain(&raw.users_file)
        .map(|f| crate::config::resolve_path(base_dir, f))
        .collect();
    files.dedup();
    let keys = KeySet::build(problems, base_dir, raw.keys);
    let jwks = keys.as_ref().and_then(|k| k.jwks(problems));
    let path_of = |problems: &mut Problems, key: &str, value: Option<String>, default: &str| {
        let path = value.unwrap_or_else(|| default.to_owned());
        if crate::routing::normalize_path(&path).ok().as_deref() != Some(path.as_str()) {
            problems.push(key, "must be a normalized absolute path");
        }
        path
    };
    let logout_path = path_of(
        problems,
        "auth.logout_path",
        raw.logout_path,
        "/users/logout",
    );
    let refresh = raw.refresh.map(|r| {
        let path = path_of(problems, "auth.refresh.path", r.path, "/users/refresh");
        let ttl = duration_or(
            problems,
            "auth.refresh.ttl",
            r.ttl.as_deref(),
            std::time::Duration::from_secs(30 * 86400),
        );
        if ttl.as_secs() == 0 || ttl.as_secs() > MAX_REFRESH_TTL_SECS {
            problems.push("auth.refresh.ttl", "must be between 1s and 90d");
        }
        RefreshSettings {
            path,
            ttl_secs: ttl.as_secs(),
        }
    });
    let limits = limits::LoginLimits::build(problems, raw.login_limits);
    let external = external::build(
        problems,
        base_dir,
        raw.external_issuers.unwrap_or_default(),
        rules.leeway_secs,
        rules.max_lifetime_secs,
    );
    if raw.users.is_none() && raw.users_file.is_none() {
        problems.push("auth", "configure users (inline) or users_file");
    }
    let concurrency = raw
        .login_concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let users = UserStore::build(
        problems,
        base_dir,
        raw.users,
        raw.users_file.as_deref(),
        concurrency,
    );
    if let Some(k) = &keys {
        if !k.can_sign() {
            problems.push(
                "auth.keys",
                "no key can sign tokens for login (add secret or private_key_file)",
            );
        }
    }
    if problems.count() != start {
        return None;
    }
    Some(Auth {
        login_path,
        users: users?,
        keys: keys?,
        rules,
        error_mode,
        subject_header,
        roles_header,
        files,
        refresh,
        logout_path,
        limits,
        jwks,
        external,
    })
}

fn bad_header() -> TokenError {
    TokenError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'",
        "malformed",
    )
}

/// The token of `Bearer <token>` (scheme in any case, one space) when the token is
/// nothing but base64url characters and dots.
fn plain_bearer(value: &[u8]) -> Option<&str> {
    let (scheme, token) = value.split_at_checked(7)?;
    let token_chars = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !scheme.eq_ignore_ascii_case(b"bearer ")
        || token.is_empty()
        || !token.iter().all(token_chars)
    {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// Extract the token from the `Authorization` header the way Flask-JWT-Extended does
/// (comma-separated credentials, exactly one `Bearer` one), with the scheme word matched
/// case-insensitively.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization Header",
            "missing",
        ));
    };
    if values.next().is_some() || value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(bad_header());
    }
    // The common case, `Bearer <token>` with a token of base64url and dots, needs none
    // of the general parsing below (which gives the same answer for it).
    if let Some(token) = plain_bearer(value.as_bytes()) {
        return Ok(token);
    }
    let value = value.to_str().map_err(|_| bad_header())?;
    let value = value.trim().trim_matches(',');
    if value.is_empty() {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization Header",
            "missing",
        ));
    }
    let mut bearer = value.split(',').map(str::trim).filter(|field| {
        field
            .split_whitespace()
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
    });
    let (Some(field), None) = (bearer.next(), bearer.next()) else {
        return Err(TokenError::new(
            StatusCode::UNAUTHORIZED,
            "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'",
            "missing",
        ));
    };
    let mut parts = field.split_whitespace().skip(1);
    match (parts.next(), parts.next()) {
        (Some(token), None) => Ok(token),
        _ => Err(bad_header()),
    }
}

impl Auth {
    /// Verify the request's bearer access token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, TokenError> {
        self.verify_bearer(headers, jwt::TokenType::Access)
    }

    /// Verify the request's bearer access token, from this gateway or an external issuer
    /// (whose keys may have to be fetched first).
    pub async fn authenticate_request(&self, headers: &HeaderMap) -> Result<Identity, TokenError> {
        let token = bearer_token(headers)?;
        match external::issuer_of(&self.external, token) {
            Some(issuer) => issuer.verify(token, jwt::now()).await,
            None => self
                .keys
                .verify(token, &self.rules, jwt::now(), jwt::TokenType::Access),
        }
    }

    /// Verify the request's bearer token, which must be of type `expect`.
    pub fn verify_bearer(
        &self,
        headers: &HeaderMap,
        expect: jwt::TokenType,
    ) -> Result<Identity, TokenError> {
        let token = bearer_token(headers)?;
        self.keys.verify(token, &self.rules, jwt::now(), expect)
    }

    /// Whether `path` is answered by the gateway itself (login, refresh, logout, JWKS).
    pub fn is_local_path(&self, path: &str) -> bool {
        path == self.login_path
            || path == self.logout_path
            || self.refresh.as_ref().is_some_and(|r| r.path == path)
            || (self.jwks.is_some() && path == JWKS_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_parsing() {
        let general = |value: &str| {
            // A trailing space keeps the value off the fast path; the parsing trims it.
            let mut h = HeaderMap::new();
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("{value} ")).unwrap(),
            );
            bearer_token(&h).map(str::to_owned).ok()
        };
        for value in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER a-b_c.d",
            "Bearer abc",
            "Bearer  a.b.c",
            "Bearer a.b.c,",
            "Bearer a b",
            "Bearer a+b/c=",
            "Basic a.b.c",
            "Bearer ",
            "Bearer",
            "Token x, Bearer a.b.c",
        ] {
            if let Some(fast) = plain_bearer(value.as_bytes()) {
                assert_eq!(Some(fast.to_owned()), general(value), "{value:?}");
            }
            assert_eq!(
                bearer_token(&with(&[value])).map(str::to_owned).ok(),
                general(value),
                "{value:?}"
            );
        }
        assert_eq!(plain_bearer(b"Bearer a.b.c"), Some("a.b.c"));
        assert_eq!(plain_bearer(b"Bearer a b"), None);
        assert_eq!(plain_bearer(b"Bearer a.b.c,"), None);
    }

    #[test]
    fn bearer_parsing_matches_flask_jwt_extended() {
        assert_eq!(bearer_token(&with(&["Bearer abc"])).unwrap(), "abc");
        assert_eq!(bearer_token(&with(&["bearer abc"])).unwrap(), "abc");
        assert_eq!(
            bearer_token(&with(&["Basic xyz, Bearer abc"])).unwrap(),
            "abc"
        );
        let err = |v: &[&'static str]| bearer_token(&with(v)).unwrap_err();
        assert_eq!(err(&[]).msg, "Missing Authorization Header");
        assert_eq!(err(&[]).status, StatusCode::UNAUTHORIZED);
        assert_eq!(err(&["Token abc"]).status, StatusCode::UNAUTHORIZED);
        assert!(err(&["Token abc"]).msg.starts_with("Missing 'Bearer' type"));
        assert_eq!(err(&["Bearer"]).status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err(&["Bearer a b"]).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            err(&["Bearer a", "Bearer b"]).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
