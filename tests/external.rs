//! External issuers: tokens of another identity provider, verified with the keys it
//! publishes at its JWKS URL (a real HTTP server here), including key rotation by `kid`,
//! a bounded refetch rate, and the last good keys kept while the provider is down.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{config_yaml, Gateway, Upstream};
use tokio::sync::oneshot;

/// A JWKS endpoint whose document can be changed, counting fetches.
struct Provider {
    url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl Provider {
    async fn start(document: String) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = oneshot::channel::<()>();
        let (doc, count) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut rx => return,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                let (doc, count) = (doc.clone(), count.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |_req: http::Request<Incoming>| {
                            count.fetch_add(1, Ordering::SeqCst);
                            let body = doc.lock().unwrap().clone();
                            async move {
                                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Provider {
            url,
            document,
            fetches,
            stop: Some(tx),
        }
    }

    fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An ES256 signing key of the provider, with its public JWK.
struct ProviderKey {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl ProviderKey {
    fn new(kid: &str) -> ProviderKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let encoding =
            jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES256)
                .unwrap(),
        )
        .unwrap();
        jwk["kid"] = kid.into();
        ProviderKey {
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    fn token(&self, iss: &str, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = serde_json::json!({
            "iss": iss, "sub": sub, "aud": "gateway", "exp": support::now() + 600,
            "iat": support::now(), "jti": uuid::Uuid::new_v4().to_string(), "roles": ["user"],
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn jwks(keys: &[&ProviderKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
        .to_string()
}

const ISSUER: &str = "https://idp.example.test/";

async fn gateway_for(upstream: &Upstream, provider: &Provider) -> Gateway {
    let yaml = config_yaml(&upstream.url()).replace(
        "  keys:\n",
        &format!(
            "  external_issuers:\n    - {{ issuer: \"{ISSUER}\", jwks_url: \"{}\", audience: gateway, algorithms: [ES256], min_refetch_interval: 2s }}\n  keys:\n",
            provider.url
        ),
    );
    Gateway::start(&yaml).await
}

#[tokio::test]
async fn tokens_of_an_external_issuer_are_verified_with_its_published_keys() {
    let upstream = Upstream::start();
    let k1 = ProviderKey::new("k1");
    let provider = Provider::start(jwks(&[&k1])).await;
    let gw = gateway_for(&upstream, &provider).await;

    let (status, echoed) = gw.get_with("/echo", &k1.token(ISSUER, "alice@idp")).await;
    assert_eq!(status, 200, "{echoed}");
    let subject = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-auth-subject")
        .cloned();
    assert_eq!(subject.unwrap()[1], "alice@idp");

    // Same key, another issuer name: routed to the gateway's own keys (HS256 only).
    let (status, body) = gw
        .get_with("/echo", &k1.token("https://other.test/", "mallory"))
        .await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some("The specified alg value is not allowed"))
    );
    // The issuer's name on a token signed by a key it never published.
    let rogue = ProviderKey::new("k1");
    let (status, body) = gw.get_with("/echo", &rogue.token(ISSUER, "mallory")).await;
    assert_eq!(
        (status, body["msg"].as_str()),
        (422, Some("Signature verification failed"))
    );
    // An HS256 token claiming the issuer: its algorithm list is ES256 only.
    let hs = support::sign_hs256(
        &serde_json::json!({"alg": "HS256"}),
        &serde_json::json!({"iss": ISSUER, "sub": "x", "aud": "gateway", "exp": support::now() + 60}),
        support::SECRET,
    );
    assert_eq!(gw.get_with("/echo", &hs).await.0, 422);
}

#[tokio::test]
async fn key_rotation_refetches_at_a_bounded_rate_and_survives_an_outage() {
    let upstream = Upstream::start();
    let k1 = ProviderKey::new("k1");
    let mut provider = Provider::start(jwks(&[&k1])).await;
    let gw = gateway_for(&upstream, &provider).await;
    assert_eq!(gw.get_with("/echo", &k1.token(ISSUER, "a")).await.0, 200);
    let after_first = provider.fetches();
    assert!(after_first >= 1);

    // The provider rotates to k2: the unknown kid triggers one fetch, then it verifies.
    let k2 = ProviderKey::new("k2");
    provider.set(jwks(&[&k1, &k2]));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // past min_refetch_interval
    assert_eq!(gw.get_with("/echo", &k2.token(ISSUER, "b")).await.0, 200);
    let after_rotation = provider.fetches();
    assert_eq!(after_rotation, after_first + 1);

    // A flood of unknown kids cannot make the gateway hammer the provider.
    let stranger = ProviderKey::new("unknown-kid");
    for _ in 0..20 {
        assert_eq!(
            gw.get_with("/echo", &stranger.token(ISSUER, "c")).await.0,
            422
        );
    }
    assert!(
        provider.fetches() <= after_rotation + 1,
        "{} fetches for 20 unknown kids",
        provider.fetches() - after_rotation
    );

    // The provider goes away: the last good keys keep working.
    provider.stop();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        gw.get_with("/echo", &stranger.token(ISSUER, "d")).await.0,
        422
    );
    assert_eq!(gw.get_with("/echo", &k1.token(ISSUER, "e")).await.0, 200);
    assert_eq!(gw.get_with("/echo", &k2.token(ISSUER, "f")).await.0, 200);
}

#[test]
fn external_issuer_config_errors_are_reported() {
    let yaml = config_yaml("http://127.0.0.1:1").replace(
        "  keys:\n",
        "  external_issuers:\n    - { issuer: x, jwks_url: \"ftp://nope\", algorithms: [HS256] }\n  keys:\n",
    );
    let err = gateway::config::from_yaml(&yaml, std::path::Path::new("gateway.yaml")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("auth.external_issuers[0].jwks_url: \"ftp://nope\" is not an http(s) URL"),
        "{text}"
    );
    assert!(
        text.contains("auth.external_issuers[0].algorithms: \"HS256\" is not an asymmetric"),
        "{text}"
    );
}
