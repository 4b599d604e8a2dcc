//! Token lifecycle endpoints: issuing token pairs, refresh-token rotation with reuse
//! detection, and logout.
//!
//! Every refresh token belongs to a *family* started at login (`fam` claim, also put in
//! the family's access tokens). The store remembers the family's current refresh `jti`;
//! presenting it rotates the family to a new pair, presenting an older one means the token
//! was stolen or replayed, so the whole family (and its access tokens) is revoked.

use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::jwt::{now, token_claims, Identity, NewToken, TokenType};
use super::users::User;
use super::Auth;
use crate::body::Body;
use crate::error::{json_response, GatewayError, TokenError};
use crate::metrics::Metrics;
use crate::store::{FailMode, Refusal, Revocation, RevocationKind, Rotation, Store};

/// Flask-JWT-Extended's answer for a revoked token.
pub fn revoked() -> GatewayError {
    GatewayError::Token(TokenError::new(
        StatusCode::UNAUTHORIZED,
        "Token has been revoked",
        "revoked",
    ))
}

/// The per-request revocation check (local view; fail mode while the store is down).
pub fn check_revocation(
    store: &Store,
    metrics: &Metrics,
    identity: &Identity,
    token_type: TokenType,
) -> Result<(), GatewayError> {
    match store.check(&identity.ids()) {
        Ok(()) => Ok(()),
        Err(Refusal::Revoked) => {
            metrics
                .revoked_tokens
                .with_label_values(&[token_type.as_str()])
                .inc();
            Err(revoked())
        }
        Err(Refusal::Unavailable) => Err(GatewayError::StoreUnavailable),
    }
}

fn sign(auth: &Auth, spec: &NewToken<'_>, now: u64) -> Result<(String, String), GatewayError> {
    let (claims, jti) = token_claims(spec, &auth.rules, now);
    let token = auth.keys.sign(&claims).map_err(GatewayError::Internal)?;
    Ok((token, jti))
}

/// Sign an access token (and, with refresh on, a refresh token) for `user` in `family`.
/// Returns the response body and the new refresh jti.
fn pair(
    auth: &Auth,
    user: &User,
    family: Option<&str>,
) -> Result<(Value, Option<String>), GatewayError> {
    let now = now();
    let access = NewToken {
        token_type: TokenType::Access,
        sub: &user.email,
        ttl_secs: auth.rules.ttl_secs,
        family,
        roles: &user.roles,
        extra: &user.claims,
    };
    let (access_token, _) = sign(auth, &access, now)?;
    match (&auth.refresh, family) {
        (Some(settings), Some(_)) => {
            let refresh = NewToken {
                token_type: TokenType::Refresh,
                ttl_secs: settings.ttl_secs,
                ..access
            };
            let (refresh_token, jti) = sign(auth, &refresh, now)?;
            Ok((
                json!({ "access_token": access_token, "refresh_token": refresh_token }),
                Some(jti),
            ))
        }
        _ => Ok((json!({ "access_token": access_token }), None)),
    }
}

/// The login response body for an authenticated user: a new family when refresh is on
/// (with the store down and fail_open, an access token only).
pub async fn issue(auth: &Auth, store: &Store, user: &User) -> Result<Value, GatewayError> {
    let Some(settings) = &auth.refresh else {
        return Ok(pair(auth, user, None)?.0);
    };
    let family = uuid::Uuid::new_v4().to_string();
    let (body, jti) = pair(auth, user, Some(&family))?;
    let ttl = std::time::Duration::from_secs(settings.ttl_secs);
    match store
        .start_family(&family, jti.as_deref().unwrap_or_default(), ttl)
        .await
    {
        Ok(()) => Ok(body),
        // fail_open: the family cannot be recorded, so no refresh token, but the user
        // still gets an access token.
        Err(_) if store.mode() == FailMode::Open => {
            tracing::warn!(
                "state store unavailable (fail_open): login issues an access token only"
            );
            Ok(pair(auth, user, None)?.0)
        }
        Err(_) => Err(GatewayError::StoreUnavailable),
    }
}

/// `POST /users/refresh` with `Authorization: Bearer <refresh token>`.
pub async fn refresh(
    auth: &Auth,
    store: &Store,
    metrics: &Metrics,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let Some(settings) = &auth.refresh else {
        return Err(GatewayError::NoRoute);
    };
    let identity = auth
        .verify_bearer(headers, TokenType::Refresh)
        .map_err(GatewayError::Token)?;
    check_revocation(store, metrics, &identity, TokenType::Refresh)?;
    // A refresh token from elsewhere (no family, no jti) cannot be rotated safely.
    let (Some(family), Some(old_jti)) = (&identity.family, &identity.jti) else {
        return Err(revoked());
    };
    // The user's current roles and status apply, not those of the original login.
    let user = auth
        .users
        .get(&identity.sub)
        .filter(|u| !u.disabled)
        .ok_or_else(revoked)?;
    let (body, new_jti) = pair(auth, &user, Some(family))?;
    let ttl = std::time::Duration::from_secs(settings.ttl_secs);
    let rotation = store
        .rotate(family, old_jti, new_jti.as_deref().unwrap_or_default(), ttl)
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    match rotation {
        Rotation::Rotated => Ok(json_response(StatusCode::OK, &body)),
        Rotation::Reused => {
            tracing::warn!(subject = %identity.sub, "refresh token reuse detected; family revoked");
            metrics
                .revoked_tokens
                .with_label_values(&["refresh_reuse"])
                .inc();
            Err(revoked())
        }
        Rotation::Unknown => Err(revoked()),
    }
}

/// `POST /users/logout` with the access token; optionally `{"refresh_token": "..."}`.
/// Revokes the access token, its family, and the given refresh token's family.
pub async fn logout(
    auth: &Auth,
    store: &Store,
    metrics: &Metrics,
    request: Request<Body>,
) -> Result<Response<Body>, GatewayError> {
    let identity = auth
        .authenticate(request.headers())
        .map_err(GatewayError::Token)?;
    check_revocation(store, metrics, &identity, TokenType::Access)?;
    let Some(jti) = identity.jti.clone() else {
        return Err(GatewayError::Token(TokenError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing claim: jti",
            "malformed",
        )));
    };
    let has_body = http_body::Body::size_hint(request.body()).upper() != Some(0);
    let refresh_token = if has_body {
        let body = super::login::read_json_body(request).await?;
        match body.get("refresh_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => {
                return Err(GatewayError::BadRequest(
                    "Field \"refresh_token\" must be a string".into(),
                ))
            }
        }
    } else {
        None
    };
    let refresh_until = now() as i64 + auth.refresh.as_ref().map_or(0, |r| r.ttl_secs as i64);
    let mut revocations = vec![Revocation {
        kind: RevocationKind::Jti,
        id: jti,
        at: identity.exp,
    }];
    if let Some(family) = &identity.family {
        revocations.push(Revocation {
            kind: RevocationKind::Fam,
            id: family.clone(),
            at: refresh_until,
        });
    }
    if let Some(token) = refresh_token {
        let refresh = auth
            .keys
            .verify(&token, &auth.rules, now(), TokenType::Refresh)
            .map_err(GatewayError::Token)?;
        if refresh.sub != identity.sub {
            return Err(GatewayError::Forbidden(
                "The refresh token belongs to another subject".into(),
            ));
        }
        if let Some(family) = refresh.family {
            revocations.push(Revocation {
                kind: RevocationKind::Fam,
                id: family,
                at: refresh.exp,
            });
        }
        if let Some(jti) = refresh.jti {
            revocations.push(Revocation {
                kind: RevocationKind::Jti,
                id: jti,
                at: refresh.exp,
            });
        }
    }
    for r in revocations {
        store
            .revoke(r)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "msg": "Successfully logged out" }),
    ))
}
