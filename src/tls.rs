//! TLS: loading PEM certificates and keys, the development self-signed certificate, and
//! the rustls server configuration (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
//!
//! Certificates are served through [`CertResolver`], whose key can be swapped while
//! connections are open, so a reload never needs a new listener.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// A certificate chain and key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("cannot load certificates from {path}: {reason}")]
    Certificates {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable, holds no key, or the key is of an unsupported type.
    #[error("cannot load private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating the development certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// Load a PEM certificate chain and private key.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |reason: String| TlsError::Certificates {
        path: cert_file.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate found in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    certified(certs, key).map_err(|reason| TlsError::Key {
        path: key_file.display().to_string(),
        reason,
    })
}

fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing_key = ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    let ck = CertifiedKey::new(certs, signing_key);
    ck.keys_match()
        .map_err(|e| format!("key does not match certificate: {e}"))?;
    Ok(Arc::new(ck))
}

/// A development certificate for `localhost`, `127.0.0.1` and `::1`, with its PEM (for
/// clients to trust) and SHA-256 fingerprint (to log).
pub struct SelfSigned {
    /// The certificate and key for rustls.
    pub key: Arc<CertifiedKey>,
    /// The certificate as PEM.
    pub cert_pem: String,
    /// SHA-256 of the certificate DER, as colon-separated hex.
    pub fingerprint: String,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Generate a self-signed localhost certificate.
pub fn self_signed() -> Result<SelfSigned, TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let der = generated.cert.der().clone();
    let fingerprint = fingerprint(&der);
    let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let key = certified(vec![der], key).map_err(TlsError::Generate)?;
    Ok(SelfSigned {
        key,
        cert_pem: generated.cert.pem(),
        fingerprint,
    })
}

/// SHA-256 fingerprint of a certificate, `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Serves the current certificate; [`CertResolver::set`] swaps it for new handshakes.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// A resolver serving `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(key),
        })
    }

    /// Serve `key` from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration: ring provider, TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
