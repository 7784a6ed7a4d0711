//! TLS server configuration (rustls with the `ring` provider; TLS 1.2 and 1.3, HTTP/1.1 by ALPN).

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("TLS certificate {path}: {reason}")]
    Certificate {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read or holds no key.
    #[error("TLS key {path}: {reason}")]
    Key {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and key.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key_der) = read_pem(cert, key)?;
    from_der(chain, key_der)
}

/// Loads a PEM certificate chain and key for the partner listener (see [`partner_from_der`]).
pub fn load_partner(
    cert: &Path,
    key: &Path,
    registry: CertificateRegistry,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key_der) = read_pem(cert, key)?;
    partner_from_der(chain, key_der, registry)
}

/// Reads a PEM certificate chain and private key.
fn read_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((chain, key_der))
}

/// Builds the configuration from DER.
pub fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Decides whether a client certificate (DER) belongs to a registered partner or source.
pub use iphr_source::tls::CertificateRegistry;

/// The partner listener's configuration: mutual TLS with a client certificate required and
/// accepted only when `registry` knows it (RFC 8705 §2.2, self-signed certificate method: the
/// certificate is registered per client, not chained to a CA).
pub fn partner_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    registry: CertificateRegistry,
) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(iphr_source::tls::server_config(chain, key, registry)?)
}
