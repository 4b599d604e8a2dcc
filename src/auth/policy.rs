//! Per-route requirements on a verified identity: roles, scopes and exact claim values.

use std::collections::BTreeMap;

use serde_json::Value;

use super::jwt::Identity;
use crate::config::raw::RawRequire;
use crate::error::GatewayError;

/// What an identity must have to use a route; every listed condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// Each of these must be in the `roles` claim.
    pub roles: Vec<String>,
    /// Each of these must be in `scope` (space separated) or `scp` (list or string).
    pub scopes: Vec<String>,
    /// Each of these claims must equal the given value.
    pub claims: BTreeMap<String, Value>,
}

impl Requirements {
    /// From the route's `require:` section.
    pub fn from_raw(raw: RawRequire) -> Self {
        Self {
            roles: raw.roles,
            scopes: raw.scopes,
            claims: raw.claims,
        }
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.scopes.is_empty() && self.claims.is_empty()
    }

    /// Allow the identity, or say (403) which requirement it misses.
    pub fn check(&self, identity: &Identity) -> Result<(), GatewayError> {
        if let Some(role) = self.roles.iter().find(|r| !identity.roles.contains(r)) {
            return Err(GatewayError::Forbidden(format!(
                "Missing required role: {role}"
            )));
        }
        if !self.scopes.is_empty() {
            let granted = scopes(identity);
            if let Some(scope) = self.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
                return Err(GatewayError::Forbidden(format!(
                    "Missing required scope: {scope}"
                )));
            }
        }
        for (name, expected) in &self.claims {
            if identity.claims.get(name) != Some(expected) {
                return Err(GatewayError::Forbidden(format!(
                    "Claim {name} does not have the required value"
                )));
            }
        }
        Ok(())
    }
}

/// The scopes granted by `scope` (OAuth 2, space separated) and `scp` (list or string).
fn scopes(identity: &Identity) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match identity.claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace()),
            Some(Value::Array(list)) => out.extend(list.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(claims: Value) -> Identity {
        let claims = claims.as_object().cloned().unwrap_or_default();
        let roles = claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Identity {
            sub: "u".into(),
            roles,
            jti: None,
            iat: None,
            exp: 0,
            family: None,
            claims,
        }
    }

    #[test]
    fn roles_scopes_and_claims_are_all_required() {
        let req = Requirements {
            roles: vec!["admin".into()],
            scopes: vec!["write".into()],
            claims: BTreeMap::from([("tenant".to_owned(), json!("acme"))]),
        };
        let ok = identity(json!({"roles": ["admin"], "scope": "read write", "tenant": "acme"}));
        assert!(req.check(&ok).is_ok());
        let scp = identity(json!({"roles": ["admin"], "scp": ["write"], "tenant": "acme"}));
        assert!(req.check(&scp).is_ok());
        for bad in [
            json!({"roles": ["user"], "scope": "write", "tenant": "acme"}),
            json!({"roles": ["admin"], "scope": "read", "tenant": "acme"}),
            json!({"roles": ["admin"], "scope": "write", "tenant": "other"}),
        ] {
            assert!(matches!(
                req.check(&identity(bad)),
                Err(GatewayError::Forbidden(_))
            ));
        }
    }
}
