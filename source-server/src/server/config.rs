//! The reference server's configuration file (TOML; `IPHR_SOURCE_*` variables override it) and
//! the reading of the certificate and key files it names. Relative paths are relative to the
//! configuration file's directory.

use super::{Enrollment, RegisteredGateway, SourceConfig};
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A gateway entry: its audience and client certificate file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEntry {
    /// Audience (the gateway's id).
    pub audience: String,
    /// Its TLS client certificate (PEM or DER).
    pub certificate: PathBuf,
}

/// The file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Service id.
    pub service_id: String,
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `<data_dir>/<pseudonym>/<files>`.
    pub data_dir: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Server certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// Server key (PEM).
    pub tls_key: PathBuf,
    /// PHR card issuer CA certificate (PEM or DER).
    #[serde(default)]
    pub phr_issuer_ca: Option<PathBuf>,
    /// JPKI 利用者証明用 CA certificates (PEM or DER).
    #[serde(default)]
    pub jpki_cas: Vec<PathBuf>,
    /// Registered gateways.
    #[serde(default)]
    pub gateways: Vec<GatewayEntry>,
    /// Enrollment codes.
    #[serde(default)]
    pub enrollments: Vec<Enrollment>,
    #[serde(skip)]
    base: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9443))
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A named file could not be read or is not what it should be.
    #[error("{path}: {reason}")]
    File {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl FileConfig {
    /// Reads the file, then `IPHR_SOURCE_*` variables.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let mut config: FileConfig = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("IPHR_SOURCE_"))
            .extract()
            .map_err(Box::new)?;
        config.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The server's settings, with every certificate read.
    pub fn source_config(&self) -> Result<SourceConfig, ConfigError> {
        let gateways = self
            .gateways
            .iter()
            .map(|g| {
                Ok(RegisteredGateway {
                    audience: g.audience.clone(),
                    certificate: read_cert(&self.path(&g.certificate))?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(SourceConfig {
            service_id: self.service_id.clone(),
            data_dir: self.path(&self.data_dir),
            state_dir: self.path(&self.state_dir),
            phr_issuer_ca: self
                .phr_issuer_ca
                .as_ref()
                .map(|p| read_cert(&self.path(p)))
                .transpose()?,
            jpki_cas: self
                .jpki_cas
                .iter()
                .map(|p| read_cert(&self.path(p)))
                .collect::<Result<_, _>>()?,
            gateways,
            enrollments: self.enrollments.clone(),
        })
    }

    /// The server certificate chain and key.
    pub fn tls_material(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
        let cert = self.path(&self.tls_cert);
        let key = self.path(&self.tls_key);
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| ConfigError::File {
                path: cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(ConfigError::File {
                path: cert,
                reason: "no certificate".into(),
            });
        }
        let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| ConfigError::File {
            path: key,
            reason: e.to_string(),
        })?;
        Ok((chain, key_der))
    }
}

/// Reads a PEM or DER certificate file.
pub fn read_cert(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(&bytes)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| error(e.to_string()))
    } else {
        Ok(bytes)
    }
}

/// Checks a My Number 利用者証明用 certificate: issued and signed by one of `cas`, inside its
/// validity, with digitalSignature. Returns its SubjectPublicKeyInfo (DER).
pub fn verify_jpki_certificate(der: &[u8], cas: &[Vec<u8>], now: i64) -> Result<Vec<u8>, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    if cas.is_empty() {
        return Err("this source does not accept My Number cards".into());
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("JPKI certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("JPKI certificate: trailing bytes".into());
    }
    let signed_by_a_ca = cas.iter().any(|ca| {
        X509Certificate::from_der(ca).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == cert.issuer().as_raw()
                && cert.verify_signature(Some(ca.public_key())).is_ok()
        })
    });
    if !signed_by_a_ca {
        return Err("JPKI certificate: not issued by a trusted CA".into());
    }
    let validity = cert.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err("JPKI certificate: outside its validity".into());
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        _ => return Err("JPKI certificate: key usage lacks digitalSignature".into()),
    }
    Ok(cert.public_key().raw.to_vec())
}
