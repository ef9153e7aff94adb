//! HTTPS for the listener: rustls with a certificate and key from PEM files, and
//! optionally mutual TLS that requires a client certificate signed by a CA bundle.
//! Plain HTTP stays the default, for a sidecar on loopback.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio_rustls::TlsAcceptor;

/// A TLS setup that could not be built; names the file and the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TlsError {
    pub file: String,
    pub message: String,
}

/// The listener's TLS acceptor. Cloning shares the configuration.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// Whether client certificates are required (mTLS).
    pub client_auth: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        file: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError {
            file: path.display().to_string(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            file: path.display().to_string(),
            message: "no certificate in this file".to_string(),
        });
    }
    Ok(certs)
}

impl Tls {
    /// Builds the acceptor from a certificate chain and key (PEM), and, for mTLS, the
    /// CA bundle client certificates must chain to.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let chain = certificates(cert)?;
        let key_pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError {
            file: key.display().to_string(),
            message: format!("no PEM private key: {e}"),
        })?;
        // One crypto provider, chosen here, so the process does not depend on which
        // provider some other dependency happens to install as the default.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: cert.display().to_string(),
                message: e.to_string(),
            })?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots.add(c).map_err(|e| TlsError {
                        file: ca.display().to_string(),
                        message: format!("unusable CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError {
                            file: ca.display().to_string(),
                            message: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key_der)
            .map_err(|e| TlsError {
                file: key.display().to_string(),
                message: format!("certificate and key do not form a usable pair: {e}"),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_auth: client_ca.is_some(),
        })
    }
}
