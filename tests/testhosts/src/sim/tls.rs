//! The API server's TLS, as k3s has it: a cluster CA made at the first start and kept in
//! `server/tls/server-ca.{crt,key}` (its hash is in every join token), and a serving
//! certificate signed by it at every start for `127.0.0.1`, `localhost`, `kubernetes`, the
//! node's addresses and the `--tls-san` values.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "k3s-server-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

/// The cluster CA's PEM, made on the first start (`tls/server-ca.crt` and `.key`, 0600).
pub fn ensure_ca(tls_dir: &Path) -> Result<String> {
    let crt = tls_dir.join("server-ca.crt");
    let key = tls_dir.join("server-ca.key");
    if let (Ok(pem), true) = (std::fs::read_to_string(&crt), key.exists())
        && pem.contains("BEGIN CERTIFICATE")
    {
        return Ok(pem);
    }
    let key_pair = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key_pair)?;
    crate::sim::server::write_secret(&key, &key_pair.serialize_pem())?;
    std::fs::write(&crt, cert.pem())?;
    Ok(cert.pem())
}

/// A server configuration presenting a fresh serving certificate signed by the cluster CA.
pub fn server_config(
    tls_dir: &Path,
    ips: &[IpAddr],
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>> {
    let ca_key = KeyPair::from_pem(
        &std::fs::read_to_string(tls_dir.join("server-ca.key")).context("the cluster CA key")?,
    )?;
    // The same subject and key as the stored CA certificate: what a verifier checks.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut sans: Vec<String> = vec![
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    sans.extend(ips.iter().map(IpAddr::to_string));
    sans.extend(names.iter().cloned());
    sans.sort();
    sans.dedup();
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "k3s");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let key = KeyPair::generate()?;
    let leaf = params.signed_by(&key, &issuer)?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
