//! A blocking HTTPS/1.1 client (one request per connection, JSON bodies) for the Arc agent,
//! trusting a given CA (the chart's `global.proxyCert`) or the system's bundle.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let system;
    let pem = match ca_pem {
        Some(p) => p.as_bytes(),
        None => {
            system = std::fs::read(SYSTEM_BUNDLE).context("reading the system CA bundle")?;
            &system[..]
        }
    };
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.context("bad CA certificate")?)
            .context("unusable CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends one request to `url` (`https://host:port/path?query`) and returns (status, body).
pub fn request(
    url: &str,
    method: &str,
    auth: Option<&str>,
    body: Option<&serde_json::Value>,
    ca_pem: Option<&str>,
) -> Result<(u16, Vec<u8>)> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("not an https URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().context("bad port")?),
        _ => (authority, 443u16),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .context("no address")?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("dial tcp {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from(host.to_string()).context("bad server name")?;
    let conn = rustls::ClientConnection::new(config(ca_pem)?, name)?;
    let tls = rustls::StreamOwned::new(conn, tcp);
    crate::sim::http::exchange(tls, method, authority, path, auth, body)
}
