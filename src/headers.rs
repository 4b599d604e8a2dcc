//! Header hygiene: hop-by-hop removal (RFC 9110 section 7.6.1) and the forwarding headers.
//!
//! Applied in both directions by [`crate::proxy`]. The order matters and is fixed there:
//! authentication has already been decided on the client's headers; then hop-by-hop
//! headers (including any nominated by `Connection`) and client-sent identity headers are
//! removed; the gateway's own headers are set last, so a client can neither remove a
//! credential the policy saw nor smuggle an identity of its own.

use http::header::{
    HeaderName, HeaderValue, CONNECTION, FORWARDED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

/// Hop-by-hop headers always removed, besides those named in `Connection`.
static HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Remove hop-by-hop headers and every header the `Connection` header nominates.
///
/// One pass over the names present decides whether there is anything to remove, so the
/// common request, which has none of them, costs no lookups.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let nominated: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Remove every header whose name equals one of `names` once `_` is read as `-`, so
/// `X_Auth_Subject` cannot pass for `X-Auth-Subject` at a backend that folds them.
pub fn remove_spellings_of(headers: &mut HeaderMap, names: &[&HeaderName]) {
    let same = |name: &str, target: &str| {
        name.len() == target.len()
            && name
                .bytes()
                .zip(target.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
    };
    let doomed = |k: &HeaderName| names.iter().any(|n| same(k.as_str(), n.as_str()));
    if !headers.keys().any(doomed) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|k| doomed(k)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// What the gateway knows about the client connection, for the forwarding headers.
#[derive(Debug, Clone)]
pub struct Forwarding<'a> {
    /// The client's IP address as a header value (rendered once per connection).
    pub client_ip: Option<&'a HeaderValue>,
    /// `https` or `http`.
    pub proto: &'static str,
    /// The host the client asked for (`Host` or `:authority`).
    pub host: Option<&'a HeaderValue>,
    /// Keep and extend client-sent values (the listener sits behind a trusted proxy).
    pub trust: bool,
}

/// Set `X-Forwarded-For`, `-Proto` and `-Host`; client-sent values are dropped unless the
/// listener trusts them, in which case the client address is appended to the chain.
pub fn set_forwarded(headers: &mut HeaderMap, fwd: &Forwarding<'_>) {
    let previous_for = if fwd.trust {
        let joined: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        None
    };
    if !fwd.trust {
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(FORWARDED);
    }
    headers.remove(&X_FORWARDED_FOR);
    if let Some(ip) = fwd.client_ip {
        let value = match previous_for {
            Some(prev) => {
                HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or(""))).ok()
            }
            None => Some(ip.clone()),
        };
        if let Some(v) = value {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(v) = fwd.host {
            headers.insert(&X_FORWARDED_HOST, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_nominations_and_hop_by_hop_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("X-Secret, keep-alive"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn underscore_spellings_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x_auth_subject", HeaderValue::from_static("evil"));
        h.insert("x-auth-subject", HeaderValue::from_static("evil"));
        h.insert("x-other", HeaderValue::from_static("ok"));
        remove_spellings_of(&mut h, &[&HeaderName::from_static("x-auth-subject")]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn untrusted_forwarded_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        let (ip, host) = (
            HeaderValue::from_static("127.0.0.1"),
            HeaderValue::from_static("example.com"),
        );
        let fwd = Forwarding {
            client_ip: Some(&ip),
            proto: "https",
            host: Some(&host),
            trust: false,
        };
        set_forwarded(&mut h, &fwd);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        let mut h2 = HeaderMap::new();
        h2.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        set_forwarded(&mut h2, &Forwarding { trust: true, ..fwd });
        assert_eq!(h2[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
    }
}
