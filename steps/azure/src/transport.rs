//! The HTTPS transport: reqwest on rustls with the ring provider, trusting the web PKI roots
//! plus an optional extra CA (the emulator's).

use crate::AzureError;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Builds the HTTP client shared by the ARM pipelines and the credentials.
pub(crate) fn http_client(ca_pem_file: Option<&Path>) -> Result<reqwest::Client, AzureError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_pem_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| AzureError::Config(format!("{}: {e}", path.display())))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| AzureError::Config(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| AzureError::Config(format!("{}: {e}", path.display())))?;
            n += 1;
        }
        if n == 0 {
            return Err(AzureError::Config(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AzureError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| AzureError::Config(format!("HTTP client: {e}")))
}
