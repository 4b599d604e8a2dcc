//! Asymmetric signing keys from PEM files: RS256, PS256, ES256 and EdDSA tokens are issued
//! at login and verified on protected routes; a key rotation keeps older tokens valid.

mod support;

use std::path::Path;

use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use support::{Gateway, Upstream, PASSWORD_HASH};

/// Write a private/public PEM pair for `algorithm` into `dir`, named after `name`.
fn write_keys(dir: &Path, name: &str, algorithm: &str) {
    let (private, public) = match algorithm {
        "RS256" | "PS256" => {
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa key");
            let private = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string();
            let public = key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("spki");
            (private, public)
        }
        "ES256" => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
            (kp.serialize_pem(), kp.public_key_pem())
        }
        "EdDSA" => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed key");
            (kp.serialize_pem(), kp.public_key_pem())
        }
        other => panic!("no generator for {other}"),
    };
    std::fs::write(dir.join(format!("{name}.key")), private).expect("write private");
    std::fs::write(dir.join(format!("{name}.pub")), public).expect("write public");
}

fn config(upstream: &str, dir: &Path, keys: &str) -> String {
    format!(
        r#"
admin: {{ enabled: false }}
listeners: [{{ address: "127.0.0.1:0", tls: {{ self_signed: true }} }}]
upstreams: {{ properties: {{ url: "{upstream}" }} }}
auth:
  users: [{{ email: test@example.com, password_hash: "{PASSWORD_HASH}" }}]
  keys:
{keys}
routes:
  - {{ name: echo, path: /echo, upstream: properties }}
"#,
        keys = keys.replace("DIR", &dir.display().to_string())
    )
}

fn header_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let raw = token.split('.').next().expect("header segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

async fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.client()
        .get(gw.url("/echo"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn asymmetric_algorithms_issue_and_verify() {
    let upstream = Upstream::start();
    for algorithm in ["RS256", "PS256", "ES256", "EdDSA"] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_keys(dir.path(), "k", algorithm);
        let keys = format!(
            "    - {{ kid: k1, algorithm: {algorithm}, private_key_file: DIR/k.key, public_key_file: DIR/k.pub }}"
        );
        let gw = Gateway::start(&config(&upstream.url(), dir.path(), &keys)).await;
        let token = gw.login("test@example.com", "password").await;
        let header = header_of(&token);
        assert_eq!(header["alg"], algorithm, "{algorithm}");
        assert_eq!(header["kid"], "k1", "{algorithm}");
        assert_eq!(
            status_with(&gw, &token).await,
            200,
            "{algorithm}: valid token refused"
        );

        // Flip one character of the signature: refused as a bad signature.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        let response = gw
            .client()
            .get(gw.url("/echo"))
            .bearer_auth(&tampered)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 422, "{algorithm}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["msg"], "Signature verification failed", "{algorithm}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn rotation_keeps_tokens_of_the_old_key_valid() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path(), "old", "ES256");
    write_keys(dir.path(), "new", "ES256");
    let only_old = "    - { kid: old, algorithm: ES256, private_key_file: DIR/old.key, public_key_file: DIR/old.pub }";
    let gw_old = Gateway::start(&config(&upstream.url(), dir.path(), only_old)).await;
    let old_token = gw_old.login("test@example.com", "password").await;
    gw_old.stop().await;

    // New key signs; the old one only verifies.
    let rotated = "    - { kid: new, algorithm: ES256, private_key_file: DIR/new.key, public_key_file: DIR/new.pub, sign: true }\n    - { kid: old, algorithm: ES256, public_key_file: DIR/old.pub }";
    let gw = Gateway::start(&config(&upstream.url(), dir.path(), rotated)).await;
    let new_token = gw.login("test@example.com", "password").await;
    assert_eq!(header_of(&new_token)["kid"], "new");
    assert_eq!(status_with(&gw, &new_token).await, 200);
    assert_eq!(
        status_with(&gw, &old_token).await,
        200,
        "token of the rotated-out key refused"
    );

    // kid selects the key by exact match: a token signed by the old key but claiming
    // kid "new" is refused, though the old key would have verified it.
    let old_private = std::fs::read(dir.path().join("old.key")).expect("old key");
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(&old_private).expect("ec pem");
    let claims = serde_json::json!({"sub": "test@example.com", "exp": support::now() + 600, "type": "access"});
    let sign_with_kid = |kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
    };
    assert_eq!(status_with(&gw, &sign_with_kid("old")).await, 200);
    assert_eq!(status_with(&gw, &sign_with_kid("new")).await, 422);
    assert_eq!(status_with(&gw, &sign_with_kid("unknown")).await, 422);
}
