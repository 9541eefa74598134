//! TLS for `wss://`: rustls with the platform's roots, webpki-roots as the
//! fallback.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

use crate::error::Error;

/// The default client configuration, built once per process: the platform
/// store (rustls-native-certs), or the bundled webpki roots when the platform
/// has none.
pub fn default_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| config_with_roots(platform_roots()).map(Arc::new))
        .clone()
        .map_err(|what| Error::TlsConfig { what, source: None })
}

/// The platform's CA certificates (rustls-native-certs), or the bundled
/// webpki roots when the platform has none. The one place roots are loaded.
fn platform_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        tracing::debug!("no platform CA certificates found; using the bundled webpki roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// A client configuration that trusts exactly `roots`.
pub fn config_with_roots(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Says why a TLS session failed, in words an operator can act on.
pub(crate) fn describe(err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "certificate signed by an unknown issuer (add its CA)".into(),
            C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate is not valid for this host name (name mismatch)".into()
            }
            C::Revoked => "certificate has been revoked".into(),
            C::BadSignature => "certificate has a bad signature".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

pub use crate::options::TlsOptions;

impl TlsOptions {
    /// Builds the client configuration these options describe.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = platform_roots();
        for file in &self.ca_files {
            let mut found = 0;
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| config_error(format!("cannot read CA file {}", file.display()), e))?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    config_error(format!("bad certificate in {}", file.display()), e)
                })?;
                roots.add(cert).map_err(|e| {
                    config_error(format!("unusable CA certificate in {}", file.display()), e)
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::TlsConfig {
                    what: format!("no PEM certificate found in CA file {}", file.display()),
                    source: None,
                });
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("no usable TLS protocol version".into(), e))?;
        let builder = if self.insecure {
            tracing::warn!("TLS certificate verification is OFF (--insecure): the connection can be read and changed by anyone on the path");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
                    .map_err(|e| {
                        let what =
                            format!("cannot read client certificate {}", cert_file.display());
                        config_error(what, e)
                    })?
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        let what = format!("bad client certificate {}", cert_file.display());
                        config_error(what, e)
                    })?;
                if chain.is_empty() {
                    return Err(Error::TlsConfig {
                        what: format!("no PEM certificate in {}", cert_file.display()),
                        source: None,
                    });
                }
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                    config_error(format!("cannot read private key {}", key_file.display()), e)
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    config_error("client certificate and key do not fit together".into(), e)
                })?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A configuration error that keeps its cause.
fn config_error(what: String, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::TlsConfig {
        what,
        source: Some(Box::new(source)),
    }
}

/// Accepts any server certificate (for `--insecure`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the session: the server's certificate, or the
    /// handshake itself.
    #[error("{}", crate::tls::describe(.0))]
    Rustls(#[source] rustls::Error),
    /// The host is neither a DNS name nor an IP address TLS can check.
    #[error("invalid server name")]
    InvalidName(#[source] rustls_pki_types::InvalidDnsNameError),
    /// The server ended the connection during the handshake: often a
    /// `wss://` URL that points at a port without TLS.
    #[error("the server ended the connection during the TLS handshake (is this a TLS port?)")]
    ClosedInHandshake,
}

/// What was wrong with the server's certificate, for a caller to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Signed by a CA that is not trusted: add it with a CA file.
    UnknownIssuer,
    /// Past its end of validity.
    Expired,
    /// Before its start of validity (or the local clock is wrong).
    NotValidYet,
    /// Issued for another name than the URL's host.
    NameMismatch,
    /// Revoked by its issuer.
    Revoked,
    /// Its signature does not verify.
    BadSignature,
    /// Another problem: see the rustls error.
    Other,
}

impl TlsError {
    /// The certificate problem, when the server's certificate was refused.
    pub fn certificate_problem(&self) -> Option<CertificateProblem> {
        use rustls::CertificateError as C;
        let TlsError::Rustls(rustls::Error::InvalidCertificate(c)) = self else {
            return None;
        };
        Some(match c {
            C::UnknownIssuer => CertificateProblem::UnknownIssuer,
            C::Expired | C::ExpiredContext { .. } => CertificateProblem::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => CertificateProblem::NotValidYet,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                CertificateProblem::NameMismatch
            }
            C::Revoked => CertificateProblem::Revoked,
            C::BadSignature => CertificateProblem::BadSignature,
            _ => CertificateProblem::Other,
        })
    }
}
