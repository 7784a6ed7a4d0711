//! Human-readable summary of an X.509 certificate (RFC 5280 §4.1), for status displays.

use sha2::{Digest, Sha256};

/// What a person or script wants to see of a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateSummary {
    /// Subject DN (RFC 4514 string).
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Whether now lies within the validity period.
    pub valid_now: bool,
    /// Public key algorithm and size, e.g. `RSA-2048`, `EC P-256`.
    pub public_key: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
}

/// A certificate that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("not an X.509 certificate: {0}")]
pub struct CertificateParseError(String);

impl CertificateSummary {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateParseError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertificateParseError(e.to_string()))?;
        let rfc3339 = |t: x509_parser::time::ASN1Time| {
            t.to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        let public_key = match cert.public_key().parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
            Ok(x509_parser::public_key::PublicKey::EC(ec)) => format!("EC-{}", ec.key_size()),
            _ => cert.public_key().algorithm.algorithm.to_id_string(),
        };
        Ok(CertificateSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
            not_before: rfc3339(cert.validity().not_before),
            not_after: rfc3339(cert.validity().not_after),
            valid_now: cert.validity().is_valid(),
            public_key,
            sha256: hex::encode(Sha256::digest(der)),
        })
    }
}
