//! Path normalization and the prepared route table.
//!
//! The path a route is chosen for is the path the upstream receives: requests are matched
//! on the normalized path (unreserved percent-escapes decoded, dot segments removed,
//! repeated slashes merged) and that same normalized path is forwarded. Encodings whose
//! meaning differs between servers (`%2F`, `%5C`, `%00`, `%25`, control bytes, a raw
//! backslash) are refused with 400, so no upstream can read a path the policy did not see.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_yaml::Value;

use crate::auth::policy::Requirements;
use crate::auth::Auth;
use crate::config::{duration_or, raw::RawRoute, sequence, Problems};
use crate::error::GatewayError;
use crate::proxy::Upstream;

/// Whether a route requires a valid access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid access token is required (the default).
    Required,
    /// Forwarded without authentication.
    Public,
}

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path or anything below it, on segment boundaries.
    Prefix(String),
    /// Exactly this path.
    Exact(String),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) if p == "/" => true,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        }
    }

    fn pattern(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) if p == "/" => write!(f, "/**"),
            PathMatch::Prefix(p) => write!(f, "{p}/**"),
            PathMatch::Exact(p) => write!(f, "{p}"),
        }
    }
}

/// A route, prepared at config load.
#[derive(Debug)]
pub struct Route {
    /// Unique name, used in logs and metrics (a bounded label, unlike the path).
    pub name: String,
    /// The name again, shared cheaply with each request's access-log record.
    pub label: Arc<str>,
    /// Which paths it takes.
    pub matcher: PathMatch,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Vec<Method>>,
    /// Where matching requests go.
    pub upstream: Arc<Upstream>,
    /// Replacement for the matched prefix when forwarding.
    pub rewrite: Option<String>,
    /// Whether a token is needed.
    pub auth: AuthMode,
    /// What the token's identity must have.
    pub require: Requirements,
    /// Whether the client's `Authorization` header is passed upstream.
    pub forward_authorization: bool,
    /// How long to wait for the upstream's response head.
    pub timeout: Duration,
    /// Largest request body forwarded (413 beyond, checked while streaming).
    pub max_body_bytes: u64,
}

impl Route {
    /// Whether this route takes `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// The path to send upstream for the normalized request `path`.
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let Some(rewrite) = &self.rewrite else {
            return path.into();
        };
        let rest = match &self.matcher {
            PathMatch::Exact(_) => "",
            PathMatch::Prefix(p) if p == "/" => path,
            PathMatch::Prefix(p) => &path[p.len()..],
        };
        // `rest` is empty or starts with '/'.
        if rest.is_empty() {
            rewrite.clone().into()
        } else {
            format!("{}{rest}", rewrite.trim_end_matches('/')).into()
        }
    }

    /// The methods for an `Allow` header.
    fn allow_list(&self) -> Vec<String> {
        match &self.methods {
            Some(m) => m.iter().map(|m| m.as_str().to_owned()).collect(),
            None => vec!["*".to_owned()],
        }
    }
}

/// All routes, ordered so the first match is the most specific: exact paths first, then
/// longer prefixes before shorter ones.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// The routes in lookup order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Find the route for a normalized path and method: 404 when no route takes the path,
    /// 405 (with the allowed methods) when routes take the path but not the method.
    pub fn resolve(&self, method: &Method, path: &str) -> Result<&Arc<Route>, GatewayError> {
        let mut pattern: Option<&PathMatch> = None;
        let mut allow: Vec<String> = Vec::new();
        for route in &self.routes {
            if let Some(p) = pattern {
                if *p != route.matcher {
                    break;
                }
            } else if !route.matcher.matches(path) {
                continue;
            }
            pattern = Some(&route.matcher);
            if route.allows(method) {
                return Ok(route);
            }
            allow.extend(route.allow_list());
        }
        match pattern {
            None => Err(GatewayError::NoRoute),
            Some(_) => Err(GatewayError::MethodNotAllowed {
                allow: allow.join(", "),
            }),
        }
    }
}

/// Whether a path is already normalized: nothing to decode, merge or remove (the common
/// case, answered without building a new path).
fn is_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.first() == Some(&b'/')
        && !bytes
            .iter()
            .any(|&c| c == b'%' || c == b'\\' || c < 0x20 || c == 0x7f)
        && !raw.contains("//")
        && !raw
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Normalize a raw (still percent-encoded) request path, or refuse it.
pub fn normalize_path(raw: &str) -> Result<String, GatewayError> {
    if is_normal(raw) {
        return Ok(raw.to_owned());
    }
    let bad = |why: &str| GatewayError::BadRequest(format!("Bad request path: {why}"));
    if !raw.starts_with('/') {
        return Err(bad("must start with /"));
    }
    let bytes = raw.as_bytes();
    // Bytes, not chars: a non-ASCII character is copied byte for byte and stays intact.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or_else(|| bad("truncated percent-escape"))?;
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad("invalid percent-escape"))?;
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(value);
                } else if matches!(value, b'/' | b'\\' | b'%' | b';')
                    || value < 0x20
                    || value == 0x7f
                {
                    return Err(bad("ambiguous percent-encoding"));
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    decoded.extend_from_slice(&[
                        b'%',
                        HEX[usize::from(value >> 4)],
                        HEX[usize::from(value & 15)],
                    ]);
                }
                i += 3;
            }
            b'\\' => return Err(bad("backslash")),
            0..=0x1f | 0x7f => return Err(bad("control character")),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // Valid: the input was a str, and escapes only ever add ASCII.
    let decoded = String::from_utf8(decoded).map_err(|_| bad("invalid UTF-8"))?;
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Build the route table from `routes:`, recording every problem found. `auth` is `None`
/// without an `auth:` section, `Some(None)` when the section is there but invalid.
pub fn build_routes(
    problems: &mut Problems,
    value: Option<Value>,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    auth: Option<Option<&Auth>>,
    default_max_body: u64,
) -> RouteTable {
    let items = sequence(problems, "routes", value);
    if items.is_empty() {
        problems.push("routes", "at least one route is required");
    }
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (key, v) in items {
        let Some(raw) = problems.parse::<RawRoute>(&key, v) else {
            continue;
        };
        if let Some(route) = build_route(problems, &key, raw, upstreams, auth, default_max_body) {
            if !names.insert(route.name.clone()) {
                problems.push(
                    format!("{key}.name"),
                    format!("duplicate route name {:?}", route.name),
                );
            }
            routes.push(Arc::new(route));
        }
    }
    // Exact routes first, then longer prefixes first; routes with the same pattern keep
    // their file order (they differ by method).
    routes.sort_by_key(|r| {
        let exact = matches!(r.matcher, PathMatch::Exact(_));
        (!exact, std::cmp::Reverse(r.matcher.pattern().len()))
    });
    if let Some(Some(auth)) = auth {
        for r in &routes {
            if r.matcher.matches(&auth.login_path) && matches!(r.matcher, PathMatch::Exact(_)) {
                problems.push(
                    format!("route {:?}", r.name),
                    format!(
                        "exact path {} is the login endpoint, answered by the gateway",
                        auth.login_path
                    ),
                );
            }
        }
    }
    RouteTable { routes }
}

fn build_route(
    problems: &mut Problems,
    key: &str,
    raw: RawRoute,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    auth: Option<Option<&Auth>>,
    default_max_body: u64,
) -> Option<Route> {
    let before = problems.count();
    let matcher = match (raw.path, raw.exact) {
        (Some(p), None) => check_route_path(problems, &format!("{key}.path"), &p).map(|p| {
            PathMatch::Prefix(if p.len() > 1 {
                p.trim_end_matches('/').to_owned()
            } else {
                p
            })
        }),
        (None, Some(p)) => {
            check_route_path(problems, &format!("{key}.exact"), &p).map(PathMatch::Exact)
        }
        (Some(_), Some(_)) => {
            problems.push(key, "set either path (a prefix) or exact, not both");
            None
        }
        (None, None) => {
            problems.push(key, "a route needs path (a prefix) or exact");
            None
        }
    };
    let methods = raw.methods.map(|list| {
        list.iter()
            .filter_map(|m| {
                let upper = m.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if m.chars().all(|c| c.is_ascii_alphabetic()) => Some(method),
                    _ => {
                        problems.push(format!("{key}.methods"), format!("invalid method {m:?}"));
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    });
    let upstream = match upstreams.get(&raw.upstream) {
        Some(u) => Some(u.clone()),
        None => {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            problems.push(
                format!("{key}.upstream"),
                format!(
                    "unknown upstream {:?} (known: {})",
                    raw.upstream,
                    known.join(", ")
                ),
            );
            None
        }
    };
    let auth_mode = match raw.auth.as_deref() {
        None | Some("required") => AuthMode::Required,
        Some("public") => AuthMode::Public,
        Some(other) => {
            problems.push(
                format!("{key}.auth"),
                format!("unknown value {other:?} (expected required or public)"),
            );
            AuthMode::Required
        }
    };
    if auth_mode == AuthMode::Required && auth.is_none() {
        problems.push(
            format!("{key}.auth"),
            "the route requires authentication but there is no auth section (add one, or set auth: public)",
        );
    }
    let require = Requirements::from_raw(raw.require.unwrap_or_default());
    if auth_mode == AuthMode::Public && !require.is_empty() {
        problems.push(
            format!("{key}.require"),
            "a public route cannot have requirements",
        );
    }
    if let Some(rw) = &raw.rewrite {
        if !rw.starts_with('/') || normalize_path(rw).ok().as_deref() != Some(rw.as_str()) {
            problems.push(
                format!("{key}.rewrite"),
                "must be a normalized absolute path such as /api",
            );
        }
    }
    let default_timeout = upstream
        .as_ref()
        .map_or(Duration::from_secs(30), |u| u.timeout);
    let timeout = duration_or(
        problems,
        format!("{key}.timeout"),
        raw.timeout.as_deref(),
        default_timeout,
    );
    if problems.count() != before {
        return None;
    }
    Some(Route {
        label: Arc::from(raw.name.as_str()),
        name: raw.name,
        matcher: matcher?,
        methods,
        upstream: upstream?,
        rewrite: raw.rewrite,
        auth: auth_mode,
        require,
        forward_authorization: raw.forward_authorization.unwrap_or(true),
        max_body_bytes: raw.max_body_bytes.unwrap_or(default_max_body),
        timeout,
    })
}

fn check_route_path(problems: &mut Problems, key: &str, path: &str) -> Option<String> {
    match normalize_path(path) {
        Ok(n) if n == path || (n.len() > 1 && format!("{n}/") == path) => Some(path.to_owned()),
        _ => {
            problems.push(
                key,
                format!("{path:?} is not a normalized absolute path (e.g. /properties)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_dots_slashes_and_unreserved_escapes() {
        let ok = |p: &str| normalize_path(p).unwrap();
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("//properties"), "/properties");
        assert_eq!(ok("/users/login/../properties"), "/users/properties");
        assert_eq!(ok("/users/login/../../properties"), "/properties");
        assert_eq!(ok("/a/./b/"), "/a/b/");
        assert_eq!(ok("/%70roperties"), "/properties");
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/../../x"), "/x");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%c3%a9"), "/a%C3%A9");
        assert_eq!(ok("/\u{29d}/./x//y"), "/\u{29d}/x/y");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for p in [
            "/properties%2f..",
            "/a%2Fb",
            "/a%5cb",
            "/a%00",
            "/a%252e",
            "/a\\b",
            "/a%",
            "/a%zz",
            "*",
            "/a%3bb",
        ] {
            assert!(normalize_path(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let m = PathMatch::Prefix("/properties".into());
        assert!(m.matches("/properties"));
        assert!(m.matches("/properties/3"));
        assert!(!m.matches("/propertiesX"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    }
}
