//! `gateway explain`: which route a request would take and whether it would be allowed,
//! computed by the same functions the request path uses.

use http::{HeaderMap, HeaderValue, Method};

use crate::config::Config;
use crate::error::{ErrorMode, GatewayError};
use crate::routing::{normalize_path, AuthMode};

/// The verdict on one hypothetical request.
#[derive(Debug)]
pub struct Explanation {
    /// Whether the request would be forwarded (or answered by login).
    pub allowed: bool,
    /// Step-by-step reasons, one per line.
    pub steps: Vec<String>,
}

fn refused(steps: &mut Vec<String>, error: GatewayError, mode: ErrorMode) -> Explanation {
    let reason = error.to_string();
    let status = error.into_response(mode).status();
    steps.push(format!("refused: {} ({reason})", status.as_u16()));
    Explanation {
        allowed: false,
        steps: std::mem::take(steps),
    }
}

/// Explain how `config` would treat `method path` with an optional bearer `token`.
pub fn explain(config: &Config, method: &Method, path: &str, token: Option<&str>) -> Explanation {
    let mode = config
        .auth
        .as_ref()
        .map_or(ErrorMode::Flask, |a| a.error_mode);
    let mut steps = Vec::new();
    let (raw_path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    let normalized = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(e) => return refused(&mut steps, e, mode),
    };
    steps.push(format!("normalized path: {normalized}"));
    if let Some(auth) = config
        .auth
        .as_deref()
        .filter(|a| a.is_local_path(&normalized))
    {
        let allowed = if normalized == crate::auth::JWKS_PATH {
            Method::GET
        } else {
            Method::POST
        };
        if method != allowed {
            return refused(
                &mut steps,
                GatewayError::MethodNotAllowed {
                    allow: allowed.to_string(),
                },
                mode,
            );
        }
        let what = if normalized == auth.login_path {
            "login"
        } else if normalized == auth.logout_path {
            "logout"
        } else if normalized == crate::auth::JWKS_PATH {
            "JWK set"
        } else {
            "refresh"
        };
        steps.push(format!("answered by the gateway itself ({what} endpoint)"));
        return Explanation {
            allowed: true,
            steps,
        };
    }
    let route = match config.routes.resolve(method, &normalized) {
        Ok(r) => r,
        Err(e) => return refused(&mut steps, e, mode),
    };
    steps.push(format!(
        "route: {} ({} {})",
        route.name,
        route.matcher,
        route.methods.as_ref().map_or("any method".to_owned(), |m| m
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(","))
    ));
    match (route.auth, config.auth.as_deref()) {
        (AuthMode::Public, _) => steps.push("auth: public, no token needed".into()),
        (AuthMode::Required, None) => {
            return refused(
                &mut steps,
                GatewayError::Internal("no auth section".into()),
                mode,
            )
        }
        (AuthMode::Required, Some(auth)) => {
            let mut headers = HeaderMap::new();
            if let Some(t) = token {
                match HeaderValue::from_str(&format!("Bearer {t}")) {
                    Ok(v) => {
                        headers.insert(http::header::AUTHORIZATION, v);
                    }
                    Err(_) => steps.push("the token is not a valid header value".into()),
                }
            }
            let identity = match auth.authenticate(&headers) {
                Ok(i) => i,
                Err(e) => return refused(&mut steps, GatewayError::Token(e), mode),
            };
            steps.push(format!(
                "token: valid, sub {:?}, roles {:?}",
                identity.sub, identity.roles
            ));
            if let Err(e) = route.require.check(&identity) {
                return refused(&mut steps, e, mode);
            }
            if !route.require.is_empty() {
                steps.push("policy: requirements met".into());
            }
        }
    }
    let upstream_path = route.upstream_path(&normalized);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    steps.push(format!(
        "forwarded to upstream {} as {method} {upstream_path}{query} ({})",
        route.upstream.name,
        route.upstream.urls().join(", ")
    ));
    Explanation {
        allowed: true,
        steps,
    }
}
