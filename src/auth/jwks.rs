//! The public keys as a JWK set (RFC 7517), served at `/.well-known/jwks.json` so that
//! other services can verify the gateway's tokens, and keys can rotate by `kid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// The JWK of a public key PEM used with `algorithm`.
pub fn public_jwk(algorithm: Algorithm, kid: Option<&str>, pem: &[u8]) -> Result<Value, String> {
    let pem = std::str::from_utf8(pem).map_err(|_| "public key PEM is not UTF-8".to_owned())?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let alg = format!("{algorithm:?}");
    let mut jwk = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::pkcs8::DecodePublicKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPublicKey::from_public_key_pem(pem)
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
                .map_err(|e| format!("not an RSA public key: {e}"))?;
            json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
        }
        Algorithm::ES256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            use p256::pkcs8::DecodePublicKey;
            let key = p256::PublicKey::from_public_key_pem(pem)
                .map_err(|e| format!("not a P-256 public key: {e}"))?;
            let point = key.to_encoded_point(false);
            let (x, y) = (point.x().ok_or("no x")?, point.y().ok_or("no y")?);
            json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
        }
        Algorithm::ES384 => {
            use p384::elliptic_curve::sec1::ToEncodedPoint;
            use p384::pkcs8::DecodePublicKey;
            let key = p384::PublicKey::from_public_key_pem(pem)
                .map_err(|e| format!("not a P-384 public key: {e}"))?;
            let point = key.to_encoded_point(false);
            let (x, y) = (point.x().ok_or("no x")?, point.y().ok_or("no y")?);
            json!({"kty": "EC", "crv": "P-384", "x": b64(x), "y": b64(y)})
        }
        Algorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePublicKey;
            let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
                .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.as_bytes())})
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            return Err("HMAC secrets are never published".into())
        }
    };
    jwk["alg"] = alg.into();
    jwk["use"] = "sig".into();
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    Ok(jwk)
}
