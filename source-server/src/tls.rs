//! Mutual TLS with registered client certificates (RFC 8705 §2.2, the self-signed certificate
//! method): a client certificate is accepted only when the registry knows it (its DER, not a
//! chain to a CA) and it is inside its validity; rustls verifies the handshake signature with its
//! key. Used by the reference source server and by the gateway's partner listener.

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Decides whether a client certificate (DER) is registered.
pub type CertificateRegistry = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A server configuration (HTTP/1.1) that requires a registered client certificate.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    registry: CertificateRegistry,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RegisteredClientCerts {
        registry,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier of [`server_config`].
struct RegisteredClientCerts {
    registry: CertificateRegistry,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for RegisteredClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegisteredClientCerts")
    }
}

impl rustls::server::danger::ClientCertVerifier for RegisteredClientCerts {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        use rustls::CertificateError;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let invalid = rustls::Error::InvalidCertificate;
        if !(self.registry)(end_entity.as_ref()) {
            return Err(invalid(CertificateError::UnknownIssuer));
        }
        let (_, cert) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| invalid(CertificateError::BadEncoding))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if cert.validity().not_before.timestamp() > now {
            return Err(invalid(CertificateError::NotValidYet));
        }
        if cert.validity().not_after.timestamp() < now {
            return Err(invalid(CertificateError::Expired));
        }
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
