//! Fuzz regressions on stable: every seed of the cargo-fuzz targets (fuzz/seeds/<target>/)
//! and every minimized crash (fuzz/regressions/<target>/) goes through the same checks as
//! the fuzzers, which live in fuzz/checks.rs and are included here unchanged. Running the
//! fuzzers themselves is described in fuzz/README.md.
//!
//! The findings F1 and F2 (fuzz/README.md) are fixed; their inputs are replayed here.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, sorted, with their bytes.
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", kind, target]
        .iter()
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (file_name(&path), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// One regression input by name.
fn regression(target: &str, name: &str) -> Vec<u8> {
    inputs("regressions", target)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("fuzz/regressions/{target}/{name} is missing"))
        .1
}

#[test]
fn config_seeds_never_panic_and_the_valid_ones_load() {
    let mut accepted = Vec::new();
    for (name, data) in inputs("seeds", "config") {
        if checks::config(&data) == Some(true) {
            accepted.push(name);
        }
    }
    // The seeds meant to be valid really are, so the fuzzer starts from configurations
    // that reach key, user, route and listener building, not just the YAML parser.
    for name in ["full-auth.yaml", "minimal-public.yaml", "self-signed.yaml"] {
        assert!(
            accepted.iter().any(|a| a == name),
            "seed {name} no longer loads (accepted: {accepted:?}); update it"
        );
    }
}

#[test]
fn config_skips_device_files() {
    assert_eq!(
        checks::config(b"auth: { users_file: /dev/zero, keys: [] }"),
        None
    );
    assert_eq!(checks::config(&[0xff, 0xfe]), None);
}

#[test]
fn authorization_seeds_never_panic_and_only_good_tokens_verify() {
    for (name, data) in inputs("seeds", "authorization") {
        if name == "token-exp-negative" || name == "bearer-exp-negative" {
            // F1 (open): exp = i64::MIN overflows the lifetime check; see the ignored test.
            continue;
        }
        let out = checks::authorization(&data);
        let valid = name.contains("-valid");
        match name.split_once('-').map(|(kind, _)| kind) {
            Some("token") => {
                assert_eq!(out.raw_verified, valid, "{name}: {out:?}");
                assert_eq!(out.bearer, None, "{name}: {out:?}");
            }
            Some("bearer") => {
                assert!(out.bearer.is_some(), "{name}: {out:?}");
                assert_eq!(out.bearer_verified, valid, "{name}: {out:?}");
                assert!(!out.raw_verified, "{name}: {out:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn authorization_headers_are_read_like_flask_jwt_extended() {
    let seed = |name: &str| {
        let (_, data) = inputs("seeds", "authorization")
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("seed {name} is missing"));
        checks::authorization(&data)
    };
    assert_eq!(seed("header-bearer-abc").bearer.as_deref(), Some("abc"));
    for verifies in [
        "header-bearer-lowercase",
        "header-bearer-extra-spaces",
        "header-bearer-commas",
        "header-basic-then-bearer",
    ] {
        assert!(seed(verifies).bearer_verified, "{verifies}");
    }
    for refused in [
        "header-two-headers",
        "header-two-bearer-fields",
        "header-bearer-only",
        "header-bearer-two-words",
        "header-basic",
        "header-empty",
        "header-non-ascii",
    ] {
        assert_eq!(seed(refused).bearer, None, "{refused}");
    }
}

#[test]
fn resigning_reaches_the_claim_checks() {
    // The signature segment is replaced by a good one, so only the claims decide.
    let valid = checks::authorization(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiaXNzIjoiaXNzIiwiYXVkIjoiYXVkIiwiaWF0IjoxNzk2MzQyNDAwLCJleHAiOjE3OTYzNDMzMDB9.bad");
    assert!(valid.resigned_verified && !valid.raw_verified, "{valid:?}");
    // alg none stays refused even with a good HS256 signature appended.
    let none = checks::authorization(b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiaXNzIjoiaXNzIiwiYXVkIjoiYXVkIiwiaWF0IjoxNzk2MzQyNDAwLCJleHAiOjE3OTYzNDMzMDB9.");
    assert!(!none.resigned_verified, "{none:?}");
}

#[test]
fn path_seeds_keep_their_properties() {
    let mut accepted = 0;
    for (_, data) in inputs("seeds", "path") {
        accepted += usize::from(checks::path(&data).is_some());
    }
    assert!(accepted >= 10, "only {accepted} path seeds normalize");
    assert_eq!(
        checks::path(b"/users/login/../../properties").as_deref(),
        Some("/properties")
    );
    assert_eq!(checks::path(b"/a%2Fb"), None);
}

/// F1: `exp - iat` in `validate_claims` (src/auth/jwt.rs) overflows i64 for
/// `exp = i64::MIN` ("attempt to subtract with overflow" in debug builds). Minimized by
/// `cargo fuzz tmin` from the `token-exp-negative` seed.
#[test]
fn f1_exp_i64_min_does_not_panic() {
    checks::authorization(&regression(
        "authorization",
        "exp-i64-min-lifetime-overflow",
    ));
}

/// F1, the other direction: `exp = i64::MAX, iat = -1`. Debug builds panic; release builds
/// wrap to a negative lifetime and accept a token that lives far past the maximum, which
/// the harness's lifetime property reports.
#[test]
fn f1_exp_i64_max_is_refused() {
    let out = checks::authorization(&regression("authorization", "exp-i64-max-iat-negative"));
    assert!(!out.resigned_verified, "{out:?}");
}

/// F2: `normalize_path` (src/routing.rs) turns each byte of a non-ASCII character into a
/// char of its own, so `/ʝ/.` becomes `/Ê\u{9d}` (and, before the already-normal fast path,
/// `/ʝ` did too, and normalized again to something else).
#[test]
fn f2_non_ascii_paths_keep_their_characters() {
    checks::path(&regression("path", "non-ascii-not-idempotent"));
}
