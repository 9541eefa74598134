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
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                tracing::debug!(
                    "no platform CA certificates found; using the bundled webpki roots"
                );
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            config_with_roots(roots).map(Arc::new)
        })
        .clone()
        .map_err(Error::TlsConfig)
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
