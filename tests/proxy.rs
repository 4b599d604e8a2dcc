//! Forwarding over real sockets: TLS, HTTP/1.1 and HTTP/2, streaming, header hygiene,
//! forwarding headers and upstream failures.

mod support;

use support::{Gateway, Upstream};

#[tokio::test]
async fn public_route_is_forwarded_over_tls() {
    let upstream = Upstream::start();
    let gw = Gateway::start_default(&upstream).await;
    let response = gw.client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}
