//! Configuration loading: the reference gateway.yaml through the real `gateway check`
//! binary, every kind of invalid configuration with its exact message, `${VAR}`
//! interpolation, and unreadable files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway::config::{from_yaml, load, Config, ConfigError};
use gateway::routing::AuthMode;

/// A 40-character JWT secret for the reference configuration.
const JWT_SECRET: &str = "0123456789abcdefghij0123456789ABCDEFGHIJ";

/// argon2id (m=19456, t=2, p=1) hash of "password", as in the repo's users.yaml.
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Ps4Uxv+gTwrI54Rt5O6Jsg$w0FdW+8A7fB8Zfmx1p/KmcssOGVhUP7lZf0I7hBLRN0";

/// The repository's reference configuration.
fn reference_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.yaml")
}

/// What a finished `gateway` process reported.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Run the real `gateway` binary with `args`, `env` set and `unset` removed, killing it
/// (and failing) if it runs longer than 30 s. Output goes to files, so a chatty child
/// can never block on a full pipe.
fn run_gateway(args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in env {
        command.env(k, v);
    }
    for k in unset {
        command.env_remove(k);
    }
    let mut child = command.spawn().expect("start the gateway binary");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gateway") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gateway {args:?} did not exit within 30s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path).expect("read stdout"),
        stderr: std::fs::read_to_string(&err_path).expect("read stderr"),
    }
}

/// A valid configuration; each invalid one below is this with one edit.
fn base() -> String {
    format!(
        r#"
server:
  shutdown_grace: 5s
listeners:
  - name: main
    address: 127.0.0.1:0
    plaintext: true
upstreams:
  properties:
    url: http://127.0.0.1:5000
    timeout: 30s
auth:
  users:
    - email: test@example.com
      password_hash: "{PASSWORD_HASH}"
      roles: [user]
  keys:
    - kid: main
      algorithm: HS256
      secret: "{JWT_SECRET}"
routes:
  - name: properties
    path: /properties
    upstream: properties
  - name: health
    exact: /health
    methods: [GET]
    upstream: properties
    auth: public
"#
    )
}

/// `text` with its one occurrence of `from` replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} must occur exactly once in the base config"
    );
    text.replacen(from, to, 1)
}

/// Load `text` as `gateway.yaml`, expecting it to be valid.
fn valid(text: &str) -> Config {
    from_yaml(text, Path::new("gateway.yaml"))
        .unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

/// Load `text` as `gateway.yaml`, expecting problems, and return them.
fn problems(text: &str) -> Vec<String> {
    match from_yaml(text, Path::new("gateway.yaml")) {
        Ok(_) => panic!("expected the config to be refused:\n{text}"),
        Err(ConfigError { problems }) => {
            assert!(!problems.is_empty(), "an error lists its problems");
            problems
        }
    }
}

/// Assert `problems` is exactly the one problem `expected`.
fn assert_only(problems: &[String], expected: &str) {
    assert_eq!(problems, [expected.to_owned()], "problems: {problems:#?}");
}

#[test]
fn reference_config_passes_gateway_check_and_prints_the_route_table() {
    let path = reference_config();
    let out = run_gateway(
        &["check", "--config", path.to_str().unwrap()],
        &[("JWT_SECRET_KEY", JWT_SECRET)],
        &["UPSTREAM_URL"],
    );
    assert!(
        out.success,
        "gateway check failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let stdout = &out.stdout;
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("routes (in match order):"), "{stdout}");
    for name in ["health", "properties-read", "properties-write", "echo"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "route {name} missing from the table:\n{stdout}"
        );
    }
    for detail in [
        "/properties/**",
        "/echo/**",
        "GET,HEAD",
        "role:user",
        "public",
    ] {
        assert!(stdout.contains(detail), "{detail:?} missing:\n{stdout}");
    }
    // ${UPSTREAM_URL:-http://127.0.0.1:5000} fell back to its default; users.yaml was
    // found relative to the config file.
    assert!(stdout.contains("http://127.0.0.1:5000"), "{stdout}");
    assert!(
        stdout.contains("login: POST /users/login (1 users)"),
        "{stdout}"
    );
}

#[test]
fn gateway_check_uses_upstream_url_from_the_environment() {
    let path = reference_config();
    let out = run_gateway(
        &["check", "--config", path.to_str().unwrap()],
        &[
            ("JWT_SECRET_KEY", JWT_SECRET),
            ("UPSTREAM_URL", "http://10.1.2.3:5055"),
        ],
        &[],
    );
    assert!(out.success, "stderr:\n{}", out.stderr);
    assert!(
        out.stdout.contains("http://10.1.2.3:5055"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("127.0.0.1:5000"), "{}", out.stdout);
}

#[test]
fn gateway_check_without_jwt_secret_key_fails_naming_the_variable() {
    let path = reference_config();
    let out = run_gateway(
        &["check", "--config", path.to_str().unwrap()],
        &[],
        &["JWT_SECRET_KEY"],
    );
    assert!(!out.success, "check must fail; stdout:\n{}", out.stdout);
    assert!(
        out.stderr.contains(
            "gateway.yaml: auth.keys[0].secret: environment variable JWT_SECRET_KEY is not set"
        ),
        "stderr:\n{}",
        out.stderr
    );
    // The literal "${JWT_SECRET_KEY}" is not then also reported as a too-short secret.
    assert!(!out.stderr.contains("HMAC secret is"), "{}", out.stderr);
    assert!(!out.stdout.contains("configuration is valid"));
}

#[test]
fn gateway_check_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = run_gateway(
        &["check", "--config", missing.to_str().unwrap()],
        &[("JWT_SECRET_KEY", JWT_SECRET)],
        &[],
    );
    assert!(!out.success);
    assert!(
        out.stderr
            .contains(&format!("{}: cannot read file", missing.display())),
        "stderr:\n{}",
        out.stderr
    );
}

#[test]
fn base_config_is_valid() {
    let config = valid(&base());
    let names: Vec<&str> = config
        .routes
        .routes()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    // Exact routes are looked up first.
    assert_eq!(names, ["health", "properties"]);
    assert_eq!(config.listeners.len(), 1);
    assert!(config.auth.is_some());
}

#[test]
fn unknown_upstream_in_a_route() {
    let text = edit(
        &base(),
        "path: /properties\n    upstream: properties",
        "path: /properties\n    upstream: propertes",
    );
    assert_only(
        &problems(&text),
        r#"gateway.yaml: routes[0].upstream: unknown upstream "propertes" (known: properties)"#,
    );
}

#[test]
fn unknown_key_in_a_route() {
    let text = edit(
        &base(),
        "path: /properties\n",
        "path: /properties\n    timout: 5s\n",
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    // The key path points at the typo, and the valid keys (including the intended
    // `timeout`) are listed.
    assert!(
        problems[0].starts_with(
            "gateway.yaml: routes[0].timout: unknown field `timout`, expected one of `name`, "
        ),
        "{problems:#?}"
    );
    assert!(problems[0].contains("`timeout`"), "{problems:#?}");
}

#[test]
fn unknown_top_level_section() {
    let text = format!("{}metrics:\n  enabled: true\n", base());
    let known = gateway::config::raw::TOP_LEVEL_KEYS;
    for section in ["server", "listeners", "upstreams", "routes", "auth"] {
        assert!(known.contains(&section), "{known:?}");
    }
    assert_only(
        &problems(&text),
        &format!(
            "gateway.yaml: metrics: unknown section (expected one of: {})",
            known.join(", ")
        ),
    );
}

#[test]
fn invalid_listener_address() {
    let text = edit(&base(), "address: 127.0.0.1:0", "address: localhost:8443");
    assert_only(
        &problems(&text),
        r#"gateway.yaml: listeners[0].address: invalid address "localhost:8443" (expected IP:port, e.g. 0.0.0.0:8443)"#,
    );
}

#[test]
fn listener_without_tls_or_plaintext() {
    let text = edit(&base(), "    plaintext: true\n", "");
    assert_only(
        &problems(&text),
        "gateway.yaml: listeners[0]: no tls section: configure tls (cert_file and key_file, or self_signed: true) or say plaintext: true",
    );
}

#[test]
fn listener_with_both_tls_and_plaintext() {
    let text = edit(
        &base(),
        "    plaintext: true\n",
        "    plaintext: true\n    tls: { self_signed: true }\n",
    );
    assert_only(
        &problems(&text),
        "gateway.yaml: listeners[0]: set either tls or plaintext: true, not both",
    );
}

#[test]
fn invalid_duration() {
    let text = edit(&base(), "timeout: 30s", "timeout: 30 seconds");
    assert_only(
        &problems(&text),
        r#"gateway.yaml: upstreams.properties.timeout: invalid duration "30 seconds" (expected e.g. 500ms, 30s, 15m, 1h, 30d)"#,
    );
    // A number without a unit (quoted, so it is a string) is refused too.
    let text = edit(&base(), "shutdown_grace: 5s", "shutdown_grace: \"5\"");
    assert_only(
        &problems(&text),
        r#"gateway.yaml: server.shutdown_grace: invalid duration "5" (expected e.g. 500ms, 30s, 15m, 1h, 30d)"#,
    );
}

#[test]
fn missing_environment_variable() {
    let text = edit(
        &base(),
        &format!("secret: \"{JWT_SECRET}\""),
        "secret: ${GATEWAY_CONFIG_TEST_NEVER_SET_7F3A}",
    );
    // Reported once, with the key that uses it; the uninterpolated text is not then also
    // judged as a (too short) secret.
    assert_only(
        &problems(&text),
        "gateway.yaml: auth.keys[0].secret: environment variable GATEWAY_CONFIG_TEST_NEVER_SET_7F3A is not set",
    );
}

#[test]
fn hmac_secret_under_32_bytes() {
    let secret = |s: &str| {
        edit(
            &base(),
            &format!("secret: \"{JWT_SECRET}\""),
            &format!("secret: \"{s}\""),
        )
    };
    assert_only(
        &problems(&secret("short")),
        "gateway.yaml: auth.keys[0].secret: HMAC secret is 5 bytes; at least 32 are required",
    );
    assert_only(
        &problems(&secret(&"k".repeat(31))),
        "gateway.yaml: auth.keys[0].secret: HMAC secret is 31 bytes; at least 32 are required",
    );
    valid(&secret(&"k".repeat(32)));
}

#[test]
fn plaintext_password_in_users() {
    let text = edit(&base(), PASSWORD_HASH, "password");
    assert_only(
        &problems(&text),
        "gateway.yaml: auth.users[0].password_hash: is not a PHC hash string (plaintext passwords are refused); generate one with `gateway hash-password`",
    );
}

#[test]
fn argon2_parameters_below_owasp_minimum() {
    let with_params = |params: &str| {
        edit(
            &base(),
            PASSWORD_HASH,
            &PASSWORD_HASH.replace("m=19456,t=2,p=1", params),
        )
    };
    assert_only(
        &problems(&with_params("m=1024,t=1,p=1")),
        "gateway.yaml: auth.users[0].password_hash: argon2id parameters m=1024,t=1 are below the OWASP minimum (e.g. m=19456,t=2)",
    );
    // Enough memory, too few passes for it.
    assert_only(
        &problems(&with_params("m=7168,t=1,p=1")),
        "gateway.yaml: auth.users[0].password_hash: argon2id parameters m=7168,t=1 are below the OWASP minimum (e.g. m=19456,t=2)",
    );
    // OWASP's m=7 MiB, t=5 option is accepted.
    valid(&with_params("m=7168,t=5,p=1"));
    // Only argon2id.
    let argon2i = edit(
        &base(),
        PASSWORD_HASH,
        &PASSWORD_HASH.replace("$argon2id$", "$argon2i$"),
    );
    assert_only(
        &problems(&argon2i),
        "gateway.yaml: auth.users[0].password_hash: uses argon2i; only argon2id is accepted",
    );
}

#[test]
fn unsupported_algorithm() {
    for alg in ["none", "HS1", "hs256"] {
        let text = edit(&base(), "algorithm: HS256", &format!("algorithm: {alg}"));
        assert_only(
            &problems(&text),
            &format!("gateway.yaml: auth.keys[0].algorithm: unsupported algorithm {alg:?} (expected one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"),
        );
    }
}

#[test]
fn duplicate_route_names() {
    let text = edit(&base(), "name: health", "name: properties");
    assert_only(
        &problems(&text),
        r#"gateway.yaml: routes[1].name: duplicate route name "properties""#,
    );
}

#[test]
fn route_requiring_auth_without_auth_section() {
    let base = base();
    let start = base.find("auth:\n").expect("auth section");
    let end = base.find("routes:\n").expect("routes section");
    let text = format!("{}{}", &base[..start], &base[end..]);
    // Only the protected route is reported; the public one is fine without auth.
    assert_only(
        &problems(&text),
        "gateway.yaml: routes[0].auth: the route requires authentication but there is no auth section (add one, or set auth: public)",
    );
    // With every route public, no auth section is needed.
    let public = edit(
        &text,
        "upstream: properties\n  - name: health",
        "upstream: properties\n    auth: public\n  - name: health",
    );
    let config = valid(&public);
    assert!(config.auth.is_none());
    assert!(config
        .routes
        .routes()
        .iter()
        .all(|r| r.auth == AuthMode::Public));
}

#[test]
fn invalid_yaml_syntax() {
    let problems = problems("listeners:\n  - name: [unclosed\nroutes: {\n");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("gateway.yaml: invalid YAML: "),
        "{problems:#?}"
    );
}

#[test]
fn several_mistakes_are_reported_together() {
    let text = edit(
        &base(),
        "path: /properties\n    upstream: properties",
        "path: /properties\n    upstream: propertes",
    );
    let text = edit(&text, "timeout: 30s", "timeout: soon");
    let text = edit(&text, &format!("secret: \"{JWT_SECRET}\""), "secret: tiny");
    let problems = problems(&text);
    assert!(problems.len() >= 3, "{problems:#?}");
    for expected in [
        r#"gateway.yaml: routes[0].upstream: unknown upstream "propertes" (known: properties)"#,
        r#"gateway.yaml: upstreams.properties.timeout: invalid duration "soon" (expected e.g. 500ms, 30s, 15m, 1h, 30d)"#,
        "gateway.yaml: auth.keys[0].secret: HMAC secret is 4 bytes; at least 32 are required",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "missing {expected:?} in {problems:#?}"
        );
    }
    // The Display form lists them one per line.
    let shown = from_yaml(&text, Path::new("gateway.yaml"))
        .expect_err("still invalid")
        .to_string();
    assert_eq!(shown.lines().count(), problems.len());
}

#[test]
fn interpolation_defaults_and_values() {
    let unset = "GATEWAY_CONFIG_TEST_NEVER_SET_51C2";
    let set = "GATEWAY_CONFIG_TEST_UPSTREAM_51C2";
    std::env::set_var(set, "http://127.0.0.1:6001");

    let text = edit(
        &base(),
        "url: http://127.0.0.1:5000",
        &format!("url: ${{{unset}:-http://127.0.0.1:5999}}"),
    );
    let config = valid(&text);
    assert_eq!(
        config.upstreams["properties"].urls(),
        ["http://127.0.0.1:5999"]
    );

    // A set variable wins over its default.
    let text = edit(
        &base(),
        "url: http://127.0.0.1:5000",
        &format!("url: ${{{set}:-http://127.0.0.1:5999}}"),
    );
    let config = valid(&text);
    assert_eq!(
        config.upstreams["properties"].urls(),
        ["http://127.0.0.1:6001"]
    );

    // `$${` is a literal `${`, and interpolation works inside a longer string.
    let text = edit(
        &base(),
        "name: health",
        &format!("name: \"h-$${{x}}-${{{unset}:-d}}-end\""),
    );
    let config = valid(&text);
    assert!(
        config
            .routes
            .routes()
            .iter()
            .any(|r| r.name == "h-${x}-d-end"),
        "{:?}",
        config.routes.routes()
    );
}

#[test]
fn environment_values_are_never_parsed_as_yaml() {
    let var = "GATEWAY_CONFIG_TEST_YAMLISH_9D04";
    let value = "evil: {auth: public}\n- [1, 2]\nmethods: [DELETE]";
    std::env::set_var(var, value);
    let text = edit(&base(), "name: properties", &format!("name: ${{{var}}}"));
    let config = valid(&text);
    let route = config
        .routes
        .routes()
        .iter()
        .find(|r| r.path_is_properties())
        .expect("the /properties route");
    assert_eq!(route.name, value);
    assert_eq!(route.auth, AuthMode::Required, "no structure was injected");
    assert!(route.methods.is_none());

    // A value that itself contains ${...} is not expanded again.
    let nested = "GATEWAY_CONFIG_TEST_NESTED_9D04";
    std::env::set_var(nested, "${GATEWAY_CONFIG_TEST_NEVER_SET_9D04}");
    let text = edit(&base(), "name: health", &format!("name: ${{{nested}}}"));
    let config = valid(&text);
    assert!(config
        .routes
        .routes()
        .iter()
        .any(|r| r.name == "${GATEWAY_CONFIG_TEST_NEVER_SET_9D04}"));

    // A secret with YAML-looking content stays one string (and is long enough).
    let secret_var = "GATEWAY_CONFIG_TEST_SECRET_9D04";
    std::env::set_var(secret_var, "key: {a: b} and more text to reach 32 bytes");
    let text = edit(
        &base(),
        &format!("secret: \"{JWT_SECRET}\""),
        &format!("secret: ${{{secret_var}}}"),
    );
    valid(&text);
}

/// Small extension to find a route by its matcher without relying on its name.
trait RouteExt {
    fn path_is_properties(&self) -> bool;
}

impl RouteExt for gateway::routing::Route {
    fn path_is_properties(&self) -> bool {
        self.matcher == gateway::routing::PathMatch::Prefix("/properties".into())
    }
}

#[test]
fn missing_config_file_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.yaml");
    let err = load(&missing).expect_err("a missing file is an error");
    assert_eq!(err.problems.len(), 1, "{:#?}", err.problems);
    assert!(
        err.problems[0].starts_with(&format!("{}: cannot read file", missing.display())),
        "{:#?}",
        err.problems
    );
}

#[test]
fn config_file_on_disk_resolves_users_file_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("people.yaml"),
        format!("users:\n  - email: a@example.com\n    password_hash: \"{PASSWORD_HASH}\"\n  - email: b@example.com\n    password_hash: \"{PASSWORD_HASH}\"\n"),
    )
    .unwrap();
    let users_inline = format!(
        "  users:\n    - email: test@example.com\n      password_hash: \"{PASSWORD_HASH}\"\n      roles: [user]\n"
    );
    let text = edit(&base(), &users_inline, "  users_file: people.yaml\n");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &text).unwrap();
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.as_ref().unwrap().users.len(), 2);

    // A problem inside the users file names that file.
    std::fs::write(
        dir.path().join("people.yaml"),
        "users:\n  - email: a@example.com\n    password_hash: hunter2\n",
    )
    .unwrap();
    let err = load(&path).expect_err("plaintext password refused");
    let users_path = dir.path().join("people.yaml");
    assert_eq!(
        err.problems,
        [format!(
            "{}: users[0].password_hash: is not a PHC hash string (plaintext passwords are refused); generate one with `gateway hash-password`",
            users_path.display()
        )]
    );
}
