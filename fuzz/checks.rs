//! The checks behind each fuzz target, shared by the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_regressions.rs` (which includes this file with
//! `#[path]`), so the seed corpus and every minimized crash run through exactly the same
//! code in the normal, stable `cargo test`.
//!
//! Each function takes the raw fuzz input and panics when a property is violated; errors
//! returned by the gateway are expected and fine.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway::auth::jwt::{KeySet, TokenRules, TokenType};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

/// The HMAC secret every token is verified against.
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The fixed verification time (2026-12-04T00:00:00Z), so runs are reproducible and the
/// seed tokens stay valid forever.
pub const NOW: u64 = 1_796_342_400;

/// `max_lifetime_secs` of [`rules`]: a day, as the gateway's own unit tests use.
pub const MAX_LIFETIME_SECS: u64 = 86_400;

/// The claim rules of the `authorization` target.
pub fn rules() -> TokenRules {
    TokenRules {
        ttl_secs: 900,
        issuer: Some("iss".into()),
        audience: Some("aud".into()),
        leeway_secs: 0,
        max_lifetime_secs: MAX_LIFETIME_SECS,
    }
}

/// Whether config text names a device or kernel file (`/dev/zero`, `/proc/self/fd/0`, ...)
/// that `from_yaml` would read for `users_file`, key or certificate files and that can
/// block or never end. Such inputs are skipped: they test the machine, not the parser.
pub fn names_special_file(text: &str) -> bool {
    ["dev/", "proc/", "sys/", "fd/", "/dev", "/proc", "/sys"]
        .iter()
        .any(|s| text.contains(s))
}

/// `config`: `from_yaml` on arbitrary UTF-8 must return (Ok or Err), never panic.
/// Returns whether the configuration was accepted (`None`: input skipped).
pub fn config(data: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(data).ok()?;
    if names_special_file(text) {
        return None;
    }
    Some(gateway::config::from_yaml(text, Path::new("fuzz.yaml")).is_ok())
}

/// What [`authorization`] saw, for the regression tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AuthOutcome {
    /// The token `bearer_token` extracted, if any.
    pub bearer: Option<String>,
    /// Whether that token verified.
    pub bearer_verified: bool,
    /// Whether the whole input, as a token, verified.
    pub raw_verified: bool,
    /// Whether the input's `header.payload`, signed with [`SECRET`], verified.
    pub resigned_verified: bool,
}

/// `authorization`: the input is one or two `Authorization` values separated by a newline
/// (values `HeaderValue` rejects are left out). `bearer_token` must not panic and any token
/// it returns is one non-empty field without whitespace or commas; `verify` must not panic
/// on that token, on the whole input as a token, nor on the input's `header.payload`
/// re-signed with the right key (which lets the fuzzer reach the claim checks). Whatever
/// verifies must carry `alg: HS256`, no `crit`, the claims the rules require, and a
/// lifetime (`exp - iat`) within [`MAX_LIFETIME_SECS`].
pub fn authorization(data: &[u8]) -> AuthOutcome {
    let keys = KeySet::hmac(SECRET, None);
    let rules = rules();
    let mut outcome = AuthOutcome::default();

    let mut headers = HeaderMap::new();
    for value in data.splitn(2, |b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(AUTHORIZATION, v);
        }
    }
    if let Ok(token) = gateway::auth::bearer_token(&headers) {
        assert!(!token.is_empty(), "empty bearer token from {headers:?}");
        assert!(
            !token.contains(|c: char| c.is_whitespace() || c == ','),
            "bearer token {token:?} holds whitespace or a comma"
        );
        outcome.bearer = Some(token.to_owned());
        if let Ok(id) = keys.verify(token, &rules, NOW, TokenType::Access) {
            check_verified(token, &id);
            outcome.bearer_verified = true;
        }
    }

    let Ok(raw) = std::str::from_utf8(data) else {
        return outcome;
    };
    if let Ok(id) = keys.verify(raw, &rules, NOW, TokenType::Access) {
        check_verified(raw, &id);
        outcome.raw_verified = true;
    }
    if let Some((signing_input, _)) = raw.rsplit_once('.') {
        if signing_input.contains('.') {
            let signature = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(SECRET),
                jsonwebtoken::Algorithm::HS256,
            )
            .expect("HS256 signing cannot fail");
            let token = format!("{signing_input}.{signature}");
            if let Ok(id) = keys.verify(&token, &rules, NOW, TokenType::Access) {
                check_verified(&token, &id);
                outcome.resigned_verified = true;
            }
        }
    }
    outcome
}

/// Properties of a token that `verify` accepted.
fn check_verified(token: &str, id: &gateway::auth::jwt::Identity) {
    let header_b64 = token.split('.').next().unwrap_or_default();
    let header = URL_SAFE_NO_PAD
        .decode(header_b64.trim_end_matches('='))
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok());
    let Some(serde_json::Value::Object(header)) = header else {
        panic!("verified token {token:?} has no JSON object header");
    };
    assert_eq!(
        header.get("alg").and_then(|a| a.as_str()),
        Some("HS256"),
        "verified token {token:?} is not HS256"
    );
    assert!(
        !header.contains_key("crit"),
        "verified token {token:?} has crit"
    );
    assert!(
        id.exp > NOW as i64,
        "verified token {token:?} expired at {}",
        id.exp
    );
    // Computed wide, so an overflow in the gateway's own arithmetic cannot hide here.
    let lifetime = i128::from(id.exp) - i128::from(id.iat.unwrap_or(NOW as i64));
    assert!(
        lifetime <= i128::from(MAX_LIFETIME_SECS),
        "verified token {token:?} lives {lifetime}s, over the maximum"
    );
    assert_eq!(
        id.claims.get("sub").and_then(|s| s.as_str()),
        Some(id.sub.as_str()),
        "sub of {token:?}"
    );
    assert_eq!(
        id.claims.get("iss").and_then(|s| s.as_str()),
        Some("iss"),
        "iss of {token:?}"
    );
    let aud_ok = match id.claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == "aud",
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a == "aud"),
        _ => false,
    };
    assert!(aud_ok, "aud of {token:?}");
    assert!(
        id.claims.get("type").is_none_or(|t| t == "access"),
        "type of {token:?}"
    );
}

/// `path`: `normalize_path` must not panic, and a path it accepts must start with `/`,
/// hold no empty, `.` or `..` segment (no `//`, `/./`, `/../`), no `%2F`, `%5C` or `%25`
/// in any case, normalize to itself, hold no non-ASCII character the input lacks, and be
/// what the input with "/." appended normalizes to (but for a trailing slash). Returns
/// the normalized path (`None`: refused or not UTF-8).
pub fn path(data: &[u8]) -> Option<String> {
    let raw = std::str::from_utf8(data).ok()?;
    let p = gateway::routing::normalize_path(raw).ok()?;
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}: no leading /");
    assert!(!p.contains("//"), "{raw:?} -> {p:?}: holds //");
    // Every segment but a trailing empty one ("/a/" is fine) must be a real name.
    let inner = p.strip_suffix('/').unwrap_or(&p);
    for segment in inner.split('/').skip(1) {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{raw:?} -> {p:?}: holds segment {segment:?}"
        );
    }
    let upper = p.to_ascii_uppercase();
    for escape in ["%2F", "%5C", "%25"] {
        assert!(!upper.contains(escape), "{raw:?} -> {p:?}: holds {escape}");
    }
    let again = gateway::routing::normalize_path(&p);
    assert_eq!(
        again.as_deref().ok(),
        Some(p.as_str()),
        "{raw:?} -> {p:?}: not idempotent ({again:?})"
    );
    // Normalizing removes segments and decodes ASCII escapes: it never makes up a
    // non-ASCII character.
    if let Some(c) = p.chars().find(|c| !c.is_ascii() && !raw.contains(*c)) {
        panic!("{raw:?} -> {p:?}: {c:?} is not in the input");
    }
    // A trailing "/." is a no-op segment: it may drop a trailing slash, nothing else. (It
    // also takes an already-normal path off any fast path, so both paths are compared.)
    let dotted = format!("{raw}/.");
    let expected = match p.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    let with_dot = gateway::routing::normalize_path(&dotted);
    assert_eq!(
        with_dot.as_deref().ok(),
        Some(expected),
        "{raw:?} -> {p:?}, but {dotted:?} -> {with_dot:?}"
    );
    Some(p)
}
