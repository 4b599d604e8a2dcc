//! JSON Web Tokens: keys, issuing access tokens, and verifying bearer tokens.
//!
//! Verification follows PyJWT (which Flask-JWT-Extended uses) step by step, so a client
//! sees the same `msg` for the same failure: segments, header, payload and signature are
//! decoded first, then the algorithm is checked against the allow-list from config (never
//! from the token), then the signature, then the registered claims. Signature checks use
//! jsonwebtoken's crypto; the token layout is parsed here to keep control of each step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::config::{raw::RawKey, resolve_path, Problems};
use crate::error::TokenError;

/// Claims the gateway sets itself; user-configured claims may not use these names.
pub const RESERVED_CLAIMS: &[&str] = &[
    "sub", "iat", "nbf", "exp", "jti", "type", "fresh", "iss", "aud", "roles", "fam",
];

/// One configured key.
pub struct Key {
    /// `kid` header value; when set, tokens carrying a `kid` must match it exactly.
    pub kid: Option<String>,
    /// The only algorithm this key is used with.
    pub algorithm: Algorithm,
    /// What checks signatures made with this key.
    verifier: Verifier,
    encoding: Option<EncodingKey>,
    /// The public key PEM (asymmetric keys), for the JWK set.
    public_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

/// The configured keys: one signs, all verify.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<Key>,
    signer: Option<usize>,
    allowed: Vec<Algorithm>,
    /// Access tokens already verified with an asymmetric key (the whole token is the
    /// key), so presenting the same RS256/ES256 token again costs a lookup instead of a
    /// signature check. Bounded; an entry is used only while the token is unexpired.
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Identity>>,
    /// Header segments already decoded, parsed and accepted. An issuer puts the same
    /// header in every token, and parsing it is a pure function of its bytes, so each
    /// distinct one is parsed once; the signature is still checked on every token.
    headers: std::sync::Mutex<Vec<Arc<AcceptedHeader>>>,
}

/// How a key checks signatures.
#[derive(Clone)]
enum Verifier {
    /// HMAC, keyed once: verifying then costs the message's blocks only.
    Hmac(Box<HmacKey>),
    /// A public key, through jsonwebtoken.
    Public(DecodingKey),
}

impl Verifier {
    /// The verifier of an HMAC secret (HS256/384/512; any other algorithm is left to
    /// jsonwebtoken, which refuses a secret for it).
    fn hmac(algorithm: Algorithm, secret: &[u8]) -> Verifier {
        match HmacKey::new(algorithm, secret) {
            Some(key) => Verifier::Hmac(Box::new(key)),
            None => Verifier::Public(DecodingKey::from_secret(secret)),
        }
    }

    /// Whether `signature` (base64url, as in the token) signs `message`.
    fn verify(&self, message: &[u8], signature: &str, algorithm: Algorithm) -> bool {
        match self {
            Verifier::Hmac(key) => key.verify(message, signature),
            Verifier::Public(key) => {
                jsonwebtoken::crypto::verify(signature, message, key, algorithm).unwrap_or(false)
            }
        }
    }
}

/// An HMAC key with its inner and outer pads already hashed (RFC 2104), cloned for each
/// verification instead of being keyed again.
#[derive(Clone)]
enum HmacKey {
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

impl HmacKey {
    fn new(algorithm: Algorithm, secret: &[u8]) -> Option<HmacKey> {
        Some(match algorithm {
            Algorithm::HS256 => HmacKey::Sha256(Hmac::new_from_slice(secret).ok()?),
            Algorithm::HS384 => HmacKey::Sha384(Hmac::new_from_slice(secret).ok()?),
            Algorithm::HS512 => HmacKey::Sha512(Hmac::new_from_slice(secret).ok()?),
            _ => return None,
        })
    }

    /// Whether `signature` (base64url, as in the token) is the MAC of `message`; the
    /// comparison is constant-time (`Mac::verify_slice`).
    fn verify(&self, message: &[u8], signature: &str) -> bool {
        let mut sig = [0u8; 64];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(signature, &mut sig) else {
            return false;
        };
        let sig = &sig[..len];
        match self {
            HmacKey::Sha256(key) => key.clone().chain_update(message).verify_slice(sig).is_ok(),
            HmacKey::Sha384(key) => key.clone().chain_update(message).verify_slice(sig).is_ok(),
            HmacKey::Sha512(key) => key.clone().chain_update(message).verify_slice(sig).is_ok(),
        }
    }
}

/// Most entries of the verified-token cache.
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Most distinct token headers remembered (an issuer uses one per key and algorithm).
const HEADER_CACHE_MAX: usize = 16;

/// A token header: seen and accepted before, or just parsed.
enum SeenHeader {
    Known(Arc<AcceptedHeader>),
    Parsed(Map<String, Value>),
}

/// What verification takes from an accepted token header.
#[derive(Debug, Clone)]
struct AcceptedHeader {
    /// The header segment exactly as it appeared in the token (base64url).
    segment: Box<str>,
    algorithm: Algorithm,
    kid: Option<Box<str>>,
}

/// Rules for the registered claims.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Access token lifetime in seconds.
    pub ttl_secs: u64,
    /// `iss` issued and required, when set.
    pub issuer: Option<String>,
    /// `aud` issued and required, when set.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Longest access-token lifetime accepted (`exp - iat`, or `exp - now` without `iat`).
    pub max_lifetime_secs: u64,
}

/// The two kinds of token, by their `type` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Presented on every protected route.
    Access,
    /// Presented only to the refresh endpoint.
    Refresh,
}

impl TokenType {
    /// The `type` claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Access => "access",
            TokenType::Refresh => "refresh",
        }
    }
}

/// A verified token's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sub`: who the token was issued to.
    pub sub: String,
    /// `roles`, when present.
    pub roles: Vec<String>,
    /// `jti`, when present (revocation targets it).
    pub jti: Option<String>,
    /// `iat`, when present (subject revocations compare it).
    pub iat: Option<i64>,
    /// `exp` (revocations of this token can be forgotten after it).
    pub exp: i64,
    /// `fam`: the refresh family the token belongs to, if any.
    pub family: Option<String>,
    /// All claims, for policies.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The identifiers revocation can target.
    pub fn ids(&self) -> crate::store::TokenIds<'_> {
        crate::store::TokenIds {
            jti: self.jti.as_deref(),
            family: self.family.as_deref(),
            subject: &self.sub,
            issued_at: self.iat,
        }
    }
}

fn token_error(status: StatusCode, msg: impl Into<String>, reason: &'static str) -> TokenError {
    TokenError::new(status, msg, reason)
}

fn unprocessable(msg: impl Into<String>, reason: &'static str) -> TokenError {
    token_error(StatusCode::UNPROCESSABLE_ENTITY, msg, reason)
}

/// The algorithm of a JWS `alg` value or config name, if supported.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// Load `auth.keys`, recording every problem.
    pub fn build(problems: &mut Problems, base_dir: &Path, raw: Vec<RawKey>) -> Option<KeySet> {
        if raw.is_empty() {
            problems.push("auth.keys", "at least one key is required");
            return None;
        }
        let start = problems.count();
        let expected = raw.len();
        let mut keys = Vec::new();
        let mut signer = None;
        for (i, rk) in raw.into_iter().enumerate() {
            let key = format!("auth.keys[{i}]");
            let sign = rk.sign;
            if let Some(k) = load_key(problems, base_dir, &key, rk) {
                if sign {
                    if k.encoding.is_none() {
                        problems.push(&key, "sign: true needs secret or private_key_file");
                    } else if signer.replace(keys.len()).is_some() {
                        problems.push(&key, "only one key may have sign: true");
                    }
                }
                keys.push(k);
            }
        }
        let signer = signer.or_else(|| keys.iter().position(|k| k.encoding.is_some()));
        let mut kids = std::collections::HashSet::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                if !kids.insert(kid.clone()) {
                    problems.push(
                        format!("auth.keys[{i}].kid"),
                        format!("duplicate kid {kid:?}"),
                    );
                }
            }
        }
        if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) && problems.count() == start {
            problems.push("auth.keys", "with several keys every key needs a kid");
        }
        let mut allowed: Vec<Algorithm> = Vec::new();
        for k in &keys {
            if !allowed.contains(&k.algorithm) {
                allowed.push(k.algorithm);
            }
        }
        (problems.count() == start && keys.len() == expected).then_some(KeySet {
            keys,
            signer,
            allowed,
            verified: Default::default(),
            headers: Default::default(),
        })
    }

    /// A key set of one HMAC key (tests and benches).
    pub fn hmac(secret: &[u8], kid: Option<String>) -> KeySet {
        KeySet {
            keys: vec![Key {
                kid,
                algorithm: Algorithm::HS256,
                verifier: Verifier::hmac(Algorithm::HS256, secret),
                encoding: Some(EncodingKey::from_secret(secret)),
                public_pem: None,
            }],
            signer: Some(0),
            allowed: vec![Algorithm::HS256],
            verified: Default::default(),
            headers: Default::default(),
        }
    }

    /// The JWK set of the asymmetric keys, serialized; `None` when there are none.
    pub fn jwks(&self, problems: &mut Problems) -> Option<bytes::Bytes> {
        let mut keys = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let Some(pem) = &k.public_pem else { continue };
            match super::jwks::public_jwk(k.algorithm, k.kid.as_deref(), pem) {
                Ok(jwk) => keys.push(jwk),
                Err(e) => problems.push(format!("auth.keys[{i}].public_key_file"), e),
            }
        }
        (!keys.is_empty())
            .then(|| bytes::Bytes::from(serde_json::json!({ "keys": keys }).to_string()))
    }

    /// A verify-only key set from a JWK set, restricted to `algorithms`. A JWK without
    /// `alg` is used with every allowed algorithm of its key type. Unusable keys are skipped.
    pub fn from_jwks(jwks: &jsonwebtoken::jwk::JwkSet, algorithms: &[Algorithm]) -> KeySet {
        use jsonwebtoken::jwk::AlgorithmParameters;
        let mut keys = Vec::new();
        for jwk in &jwks.keys {
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let family_ok = |a: &Algorithm| match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => matches!(
                    a,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
                AlgorithmParameters::EllipticCurve(_) => {
                    matches!(a, Algorithm::ES256 | Algorithm::ES384)
                }
                AlgorithmParameters::OctetKeyPair(_) => *a == Algorithm::EdDSA,
                AlgorithmParameters::OctetKey(_) => false,
            };
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            // A declared alg that is not a signature algorithm we know: not for us.
            let declared = match jwk.common.key_algorithm {
                None => None,
                Some(k) => match parse_algorithm(&k.to_string()) {
                    Some(a) => Some(a),
                    None => continue,
                },
            };
            for a in algorithms
                .iter()
                .filter(|a| family_ok(a) && declared.is_none_or(|d| d == **a))
            {
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm: *a,
                    verifier: Verifier::Public(decoding.clone()),
                    encoding: None,
                    public_pem: None,
                });
            }
        }
        KeySet {
            keys,
            signer: None,
            allowed: algorithms.to_vec(),
            verified: Default::default(),
            headers: Default::default(),
        }
    }

    /// Whether some key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key can sign (login needs one).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Sign `claims` with the signing key.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let key = self
            .signer
            .map(|i| &self.keys[i])
            .ok_or_else(|| "no signing key configured".to_owned())?;
        let mut header = Header::new(key.algorithm);
        header.kid = key.kid.clone();
        let encoding = key
            .encoding
            .as_ref()
            .ok_or("signing key has no private part")?;
        jsonwebtoken::encode(&header, claims, encoding)
            .map_err(|e| format!("cannot sign token: {e}"))
    }

    /// Verify a compact JWS and its claims; returns the identity of a valid access token.
    pub fn verify(
        &self,
        token: &str,
        rules: &TokenRules,
        now: u64,
        expect: TokenType,
    ) -> Result<Identity, TokenError> {
        if expect == TokenType::Access {
            if let Some(identity) = self.cached(token, rules, now) {
                return Ok(identity);
            }
        }
        // Layout, as PyJWT splits it: header.payload.signature, payload may not contain '.'.
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| unprocessable("Not enough segments", "malformed"))?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or_else(|| unprocessable("Not enough segments", "malformed"))?;
        let header = match self.known_header(header_b64) {
            Some(known) => SeenHeader::Known(known),
            None => SeenHeader::Parsed(parse_header(header_b64)?),
        };
        let payload_bytes = URL_SAFE_NO_PAD
            .decode(payload_b64.trim_end_matches('='))
            .map_err(|_| unprocessable("Invalid payload padding", "malformed"))?;
        // The signature is decoded once, by the verifier; here only its alphabet is checked.
        let sig = signature.trim_end_matches('=');
        if sig.len() % 4 == 1
            || !sig
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(unprocessable("Invalid crypto padding", "malformed"));
        }
        let accepted = match header {
            SeenHeader::Known(known) => known,
            SeenHeader::Parsed(members) => self.accept_header(header_b64, &members)?,
        };
        let (algorithm, kid) = (accepted.algorithm, accepted.kid.as_deref());
        let mut verified = false;
        for key in self.keys.iter().filter(|k| k.algorithm == algorithm) {
            if kid.is_some() && key.kid.as_deref() != kid && key.kid.is_some() {
                continue;
            }
            if key
                .verifier
                .verify(signing_input.as_bytes(), signature, algorithm)
            {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(unprocessable(
                "Signature verification failed",
                "bad_signature",
            ));
        }

        let claims = match parse_object(&payload_bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(unprocessable(
                    "Invalid payload string: must be a json object",
                    "malformed",
                ))
            }
            Err(e) => {
                return Err(unprocessable(
                    format!("Invalid payload string: {e}"),
                    "malformed",
                ))
            }
        };
        let identity = validate_claims(claims, rules, now, expect)?;
        let asymmetric = !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        if asymmetric && expect == TokenType::Access {
            self.remember(token, &identity, now);
        }
        Ok(identity)
    }

    /// The accepted header with this exact segment, if seen before.
    fn known_header(&self, segment: &str) -> Option<Arc<AcceptedHeader>> {
        let headers = self.headers.lock().unwrap_or_else(|e| e.into_inner());
        headers.iter().find(|h| &*h.segment == segment).cloned()
    }

    /// The header checks of PyJWT's order (alg allowed, no `crit`, `kid` a string); an
    /// accepted header is remembered.
    fn accept_header(
        &self,
        segment: &str,
        header: &Map<String, Value>,
    ) -> Result<Arc<AcceptedHeader>, TokenError> {
        let algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(parse_algorithm)
            .filter(|a| self.allowed.contains(a))
            .ok_or_else(|| {
                unprocessable("The specified alg value is not allowed", "alg_not_allowed")
            })?;
        if header.contains_key("crit") {
            return Err(unprocessable(
                "Unsupported critical header parameter",
                "malformed",
            ));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str().into()),
            Some(_) => {
                return Err(unprocessable(
                    "Invalid kid header: must be a string",
                    "malformed",
                ))
            }
        };
        let accepted = Arc::new(AcceptedHeader {
            segment: segment.into(),
            algorithm,
            kid,
        });
        let mut headers = self.headers.lock().unwrap_or_else(|e| e.into_inner());
        if headers.len() >= HEADER_CACHE_MAX {
            headers.remove(0);
        }
        headers.push(accepted.clone());
        Ok(accepted)
    }

    /// A previously verified token, while it is unexpired. Its other claims were checked
    /// then and do not change with time (nbf and iat only become more valid).
    fn cached(&self, token: &str, rules: &TokenRules, now: u64) -> Option<Identity> {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.is_empty() {
            return None;
        }
        match cache.get(token) {
            Some(id) if id.exp > now as i64 - rules.leeway_secs as i64 => Some(id.clone()),
            Some(_) => {
                // Expired: forget it; the full check gives the proper error.
                cache.remove(token);
                None
            }
            None => None,
        }
    }

    fn remember(&self, token: &str, identity: &Identity, now: u64) {
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, id| id.exp > now as i64);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token.into(), identity.clone());
    }
}

fn load_key(problems: &mut Problems, base_dir: &Path, key: &str, rk: RawKey) -> Option<Key> {
    let Some(algorithm) = parse_algorithm(&rk.algorithm) else {
        problems.push(
            format!("{key}.algorithm"),
            format!(
                "unsupported algorithm {:?} (expected one of HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)",
                rk.algorithm
            ),
        );
        return None;
    };
    if let Some(kid) = &rk.kid {
        if kid.is_empty() || kid.len() > 128 {
            problems.push(format!("{key}.kid"), "must be 1 to 128 characters");
        }
    }
    let read = |problems: &mut Problems, field: &str, path: &str| -> Option<Vec<u8>> {
        let full = resolve_path(base_dir, path);
        std::fs::read(&full)
            .map_err(|e| {
                problems.push(
                    format!("{key}.{field}"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })
            .ok()
    };
    let is_hmac = matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    );
    if is_hmac {
        if rk.private_key_file.is_some() || rk.public_key_file.is_some() {
            problems.push(
                key,
                "HMAC keys take secret or secret_file, not PEM key files",
            );
            return None;
        }
        let secret = match (rk.secret, rk.secret_file) {
            (Some(s), None) => s.into_bytes(),
            (None, Some(f)) => {
                let mut bytes = read(problems, "secret_file", &f)?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            (Some(_), Some(_)) => {
                problems.push(key, "set either secret or secret_file, not both");
                return None;
            }
            (None, None) => {
                problems.push(
                    key,
                    "an HMAC key needs secret (e.g. ${JWT_SECRET_KEY}) or secret_file",
                );
                return None;
            }
        };
        if secret.len() < 32 {
            problems.push(
                format!("{key}.secret"),
                format!(
                    "HMAC secret is {} bytes; at least 32 are required",
                    secret.len()
                ),
            );
            return None;
        }
        return Some(Key {
            kid: rk.kid,
            algorithm,
            verifier: Verifier::hmac(algorithm, &secret),
            encoding: Some(EncodingKey::from_secret(&secret)),
            public_pem: None,
        });
    }
    if rk.secret.is_some() || rk.secret_file.is_some() {
        problems.push(
            key,
            format!(
                "{} keys take private_key_file/public_key_file, not a secret",
                rk.algorithm
            ),
        );
        return None;
    }
    let Some(public_file) = rk.public_key_file else {
        problems.push(key, "public_key_file is required (it verifies tokens)");
        return None;
    };
    let public = read(problems, "public_key_file", &public_file)?;
    let decoding = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&public),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&public),
        _ => DecodingKey::from_rsa_pem(&public),
    };
    let decoding = match decoding {
        Ok(d) => d,
        Err(e) => {
            problems.push(
                format!("{key}.public_key_file"),
                format!("not a {} public key PEM: {e}", rk.algorithm),
            );
            return None;
        }
    };
    let encoding = match rk.private_key_file {
        None => None,
        Some(f) => {
            let private = read(problems, "private_key_file", &f)?;
            let encoding = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&private),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
                _ => EncodingKey::from_rsa_pem(&private),
            };
            match encoding {
                Ok(e) => Some(e),
                Err(e) => {
                    problems.push(
                        format!("{key}.private_key_file"),
                        format!("not a {} private key PEM: {e}", rk.algorithm),
                    );
                    return None;
                }
            }
        }
    };
    Some(Key {
        kid: rk.kid,
        algorithm,
        verifier: Verifier::Public(decoding),
        encoding,
        public_pem: Some(public),
    })
}

/// Decode and parse a token's header segment into its members.
fn parse_header(segment: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| unprocessable("Invalid header padding", "malformed"))?;
    match parse_object(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(unprocessable(
            "Invalid header string: must be a json object",
            "malformed",
        )),
        Err(e) => Err(unprocessable(
            format!("Invalid header string: {e}"),
            "malformed",
        )),
    }
}

/// Parse a JSON object, refusing duplicate member names (RFC 8725: a claim a verifier
/// reads differently from another verifier is an attack). Errors are PyJWT-like reasons.
fn parse_object(bytes: &[u8]) -> Result<Value, String> {
    use serde::de::{Deserializer as _, Error as _, MapAccess, Visitor};

    struct Strict;
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
            let mut map = Map::new();
            while let Some(key) = access.next_key::<String>()? {
                if map.contains_key(&key) {
                    return Err(A::Error::custom(format!("duplicate member {key:?}")));
                }
                let value: Value = access.next_value()?;
                map.insert(key, value);
            }
            Ok(Value::Object(map))
        }
        // Any other JSON value is "not an object" (Null stands for all of them), reported
        // as such by the caller, like PyJWT does.
        fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_str<E>(self, _: &str) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Value::Null)
        }
    }
    // One pass: strict for objects, and trailing bytes refused as serde_json::from_slice does.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_any(Strict).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Read a NumericDate claim the way PyJWT does (`int(value)`: fractions are truncated).
fn numeric_claim(
    claims: &Map<String, Value>,
    name: &str,
    label: &str,
) -> Result<Option<i64>, TokenError> {
    let not_integer = || {
        unprocessable(
            format!("{label} claim ({name}) must be an integer."),
            "malformed",
        )
    };
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.0e15 => Ok(Some(f.trunc() as i64)),
            _ => Err(not_integer()),
        },
        Some(_) => Err(not_integer()),
    }
}

fn missing(name: &str) -> TokenError {
    unprocessable(
        format!("Token is missing the \"{name}\" claim"),
        "malformed",
    )
}

/// Check the registered claims in PyJWT's order (iat, nbf, exp, iss, aud, sub, jti), then
/// Flask-JWT-Extended's own checks. Like Flask-JWT-Extended, which decodes an expired
/// token a second time ignoring expiry, a problem with a later claim wins over "expired".
fn validate_claims(
    claims: Map<String, Value>,
    rules: &TokenRules,
    now: u64,
    expect: TokenType,
) -> Result<Identity, TokenError> {
    let now = now as i64;
    let leeway = rules.leeway_secs as i64;
    // The gateway requires exp; PyJWT would only if told to.
    if !claims.contains_key("exp") {
        return Err(missing("exp"));
    }
    let issued_at = numeric_claim(&claims, "iat", "Issued At")?;
    if let Some(iat) = issued_at {
        if iat > now + leeway {
            return Err(unprocessable(
                "The token is not yet valid (iat)",
                "immature",
            ));
        }
    }
    if let Some(nbf) = numeric_claim(&claims, "nbf", "Not Before")? {
        if nbf > now + leeway {
            return Err(unprocessable(
                "The token is not yet valid (nbf)",
                "immature",
            ));
        }
    }
    let exp = numeric_claim(&claims, "exp", "Expiration Time")?.ok_or_else(|| missing("exp"))?;
    let expired = exp <= now - leeway;
    // RFC 8725: refuse access tokens meant to live longer than the configured maximum.
    if expect == TokenType::Access
        && exp.saturating_sub(issued_at.unwrap_or(now))
            > (rules.max_lifetime_secs as i64).saturating_add(leeway)
    {
        return Err(unprocessable(
            "Token lifetime exceeds the allowed maximum",
            "lifetime",
        ));
    }
    if let Some(iss) = &rules.issuer {
        match claims.get("iss") {
            None => return Err(missing("iss")),
            Some(v) if v.as_str() != Some(iss.as_str()) => {
                return Err(unprocessable("Invalid issuer", "bad_issuer"))
            }
            Some(_) => {}
        }
    }
    if let Some(aud) = &rules.audience {
        let audiences: Vec<&Value> = match claims.get("aud") {
            None | Some(Value::Null) => return Err(missing("aud")),
            Some(Value::String(s)) if s.is_empty() => return Err(missing("aud")),
            Some(Value::Array(list)) if list.is_empty() => return Err(missing("aud")),
            Some(v @ Value::String(_)) => vec![v],
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => return Err(unprocessable("Invalid claim format in token", "malformed")),
        };
        if audiences.iter().any(|v| !v.is_string()) {
            return Err(unprocessable("Invalid claim format in token", "malformed"));
        }
        if !audiences.iter().any(|v| v.as_str() == Some(aud.as_str())) {
            return Err(unprocessable("Audience doesn't match", "bad_audience"));
        }
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(unprocessable("Subject must be a string", "malformed")),
        None => return Err(unprocessable("Missing claim: sub", "malformed")),
    };
    if claims.get("jti").is_some_and(|j| !j.is_string()) {
        return Err(unprocessable("JWT ID must be a string", "malformed"));
    }
    if expired {
        return Err(token_error(
            StatusCode::UNAUTHORIZED,
            "Token has expired",
            "expired",
        ));
    }
    // Flask-JWT-Extended reads a missing `type` as an access token.
    let token_type = claims.get("type").map_or(Some("access"), Value::as_str);
    match (expect, token_type) {
        (TokenType::Access, Some("access")) | (TokenType::Refresh, Some("refresh")) => {}
        (TokenType::Access, Some("refresh")) => {
            return Err(unprocessable(
                "Only non-refresh tokens are allowed",
                "wrong_token_type",
            ))
        }
        (TokenType::Access, _) => {
            return Err(unprocessable(
                "Only access tokens are allowed",
                "wrong_token_type",
            ))
        }
        (TokenType::Refresh, _) => {
            return Err(unprocessable(
                "Only refresh tokens are allowed",
                "wrong_token_type",
            ))
        }
    }
    let roles = match claims.get("roles") {
        None => Vec::new(),
        Some(Value::String(r)) => vec![r.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => return Err(unprocessable("Invalid roles claim", "malformed")),
    };
    let string_claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Identity {
        jti: string_claim("jti"),
        family: string_claim("fam"),
        iat: issued_at,
        exp,
        sub,
        roles,
        claims,
    })
}

/// What a new token is for and whom.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    /// Access or refresh.
    pub token_type: TokenType,
    /// `sub`.
    pub sub: &'a str,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// The refresh family (`fam`), when refresh tokens are on.
    pub family: Option<&'a str>,
    /// `roles` (access tokens only).
    pub roles: &'a [String],
    /// Extra claims of the user (access tokens only).
    pub extra: &'a BTreeMap<String, Value>,
}

/// The claims of a new token in Flask-JWT-Extended's shape and order
/// (`fresh, iat, jti, type, sub, nbf, exp`), then `iss`/`aud`, `fam`, `roles` and the
/// user's claims. Returns the claims and the new `jti`.
pub fn token_claims(
    spec: &NewToken<'_>,
    rules: &TokenRules,
    now: u64,
) -> (Map<String, Value>, String) {
    let jti = uuid::Uuid::new_v4().to_string();
    let mut claims = Map::new();
    claims.insert("fresh".into(), Value::Bool(false));
    claims.insert("iat".into(), now.into());
    claims.insert("jti".into(), jti.clone().into());
    claims.insert("type".into(), spec.token_type.as_str().into());
    claims.insert("sub".into(), spec.sub.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + spec.ttl_secs).into());
    if let Some(iss) = &rules.issuer {
        claims.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = &rules.audience {
        claims.insert("aud".into(), aud.clone().into());
    }
    if let Some(family) = spec.family {
        claims.insert("fam".into(), family.into());
    }
    if spec.token_type == TokenType::Access {
        if !spec.roles.is_empty() {
            claims.insert("roles".into(), spec.roles.to_vec().into());
        }
        for (k, v) in spec.extra {
            claims.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    (claims, jti)
}

/// The claims of a new access token (no refresh family): see [`token_claims`].
pub fn access_claims(
    sub: &str,
    roles: &[String],
    extra: &BTreeMap<String, Value>,
    rules: &TokenRules,
    now: u64,
) -> Map<String, Value> {
    let spec = NewToken {
        token_type: TokenType::Access,
        sub,
        ttl_secs: rules.ttl_secs,
        family: None,
        roles,
        extra,
    };
    token_claims(&spec, rules, now).0
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn rules() -> TokenRules {
        TokenRules {
            ttl_secs: 900,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            max_lifetime_secs: 86400,
        }
    }

    fn sign_raw(header: &str, payload: &str, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    #[test]
    fn prepared_hmac_keys_agree_with_jsonwebtoken() {
        for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let key = HmacKey::new(algorithm, SECRET).unwrap();
            let message = b"header.payload";
            let sig =
                jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(SECRET), algorithm)
                    .unwrap();
            assert!(key.verify(message, &sig), "{algorithm:?}");
            assert!(!key.verify(b"header.payloae", &sig), "{algorithm:?}");
            assert!(
                !key.verify(message, &format!("{sig}=")),
                "padding: {algorithm:?}"
            );
            assert!(!key.verify(message, &sig[..sig.len() - 2]), "{algorithm:?}");
            let other = HmacKey::new(algorithm, b"another-secret-another-secret-00").unwrap();
            assert!(!other.verify(message, &sig), "{algorithm:?}");
        }
        assert!(HmacKey::new(Algorithm::RS256, SECRET).is_none());
    }

    #[test]
    fn accepted_headers_are_parsed_once_and_refused_ones_every_time() {
        let keys = KeySet::hmac(SECRET, None);
        let now = 1_700_000_000;
        let payload = format!(r#"{{"sub":"a","exp":{},"iat":{now}}}"#, now + 60);
        let good = sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, SECRET);
        for _ in 0..3 {
            keys.verify(&good, &rules(), now, TokenType::Access)
                .unwrap();
        }
        assert_eq!(keys.headers.lock().unwrap().len(), 1);
        let refused = sign_raw(r#"{"alg":"HS256","crit":["exp"]}"#, &payload, SECRET);
        for _ in 0..2 {
            let e = keys
                .verify(&refused, &rules(), now, TokenType::Access)
                .unwrap_err();
            assert_eq!(e.msg, "Unsupported critical header parameter");
        }
        assert_eq!(keys.headers.lock().unwrap().len(), 1);
        // A known header does not excuse a bad signature.
        let forged = sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, b"x");
        let e = keys
            .verify(&forged, &rules(), now, TokenType::Access)
            .unwrap_err();
        assert_eq!(e.msg, "Signature verification failed");
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = KeySet::hmac(SECRET, None);
        let now = now();
        let claims = access_claims("a@b.c", &["admin".into()], &BTreeMap::new(), &rules(), now);
        let token = keys.sign(&claims).unwrap();
        let id = keys
            .verify(&token, &rules(), now, TokenType::Access)
            .unwrap();
        assert_eq!(id.sub, "a@b.c");
        assert_eq!(id.roles, vec!["admin".to_owned()]);
    }

    #[test]
    fn failures_have_pyjwt_messages() {
        let keys = KeySet::hmac(SECRET, None);
        let msg = |t: &str| {
            keys.verify(t, &rules(), 1000, TokenType::Access)
                .unwrap_err()
                .msg
        };
        assert_eq!(msg("abc"), "Not enough segments");
        assert_eq!(msg("a.b"), "Not enough segments");
        let expired = sign_raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"x","exp":999}"#,
            SECRET,
        );
        assert_eq!(msg(&expired), "Token has expired");
        let wrong = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","exp":2000}"#,
            b"another-secret-of-32-bytes-long!!",
        );
        assert_eq!(msg(&wrong), "Signature verification failed");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
        );
        assert_eq!(msg(&none), "The specified alg value is not allowed");
        let refresh = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","exp":2000,"type":"refresh"}"#,
            SECRET,
        );
        assert_eq!(msg(&refresh), "Only non-refresh tokens are allowed");
        let nbf = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","exp":2000,"nbf":1500}"#,
            SECRET,
        );
        assert_eq!(msg(&nbf), "The token is not yet valid (nbf)");
        let no_exp = sign_raw(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#, SECRET);
        assert_eq!(msg(&no_exp), "Token is missing the \"exp\" claim");
    }

    #[test]
    fn duplicate_members_and_overlong_lifetimes_are_refused() {
        let keys = KeySet::hmac(SECRET, None);
        let msg = |t: &str| {
            keys.verify(t, &rules(), 1000, TokenType::Access)
                .unwrap_err()
                .msg
        };
        let dup = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","exp":2000,"sub":"admin"}"#,
            SECRET,
        );
        assert_eq!(
            msg(&dup),
            "Invalid payload string: duplicate member \"sub\" at line 1 column 27"
        );
        let dup_header = sign_raw(
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"sub":"x","exp":2000}"#,
            SECRET,
        );
        assert!(msg(&dup_header).starts_with("Invalid header string: duplicate member"));
        let long = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","iat":1000,"exp":90000}"#,
            SECRET,
        );
        assert_eq!(msg(&long), "Token lifetime exceeds the allowed maximum");
        let ok = sign_raw(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"x","iat":1000,"exp":87400}"#,
            SECRET,
        );
        assert!(keys.verify(&ok, &rules(), 1000, TokenType::Access).is_ok());
    }
}
