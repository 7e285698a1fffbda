//! A small HTTPS client over the emulator's CA, for the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use siteflow_azure_emulator::{Emulator, EmulatorConfig, EmulatorHandle};

pub struct TestResp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub struct Client {
    config: Arc<rustls::ClientConfig>,
    port: u16,
    pub base: String,
    pub tenant: String,
    pub sub: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Client {
    pub fn new(emu: &EmulatorHandle) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
            roots.add(cert.expect("pem")).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let p = &emu.config().principals[0];
        Self {
            config: Arc::new(config),
            port: emu.local_addr().port(),
            base: emu.base_url().to_string(),
            tenant: emu.tenant_id().to_string(),
            sub: emu.subscription_id().to_string(),
            client_id: p.client_id.clone(),
            client_secret: p.client_secret.clone(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> TestResp {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, tcp).await.expect("tls handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        TestResp {
            status,
            headers,
            body,
        }
    }

    pub async fn token(&self, scope: &str) -> String {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            self.client_id,
            self.client_secret,
            scope.replace(':', "%3A").replace('/', "%2F")
        );
        let r = self
            .send(
                Method::POST,
                &format!("/{}/oauth2/v2.0/token", self.tenant),
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(form.into_bytes()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "token: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn arm_token(&self) -> String {
        self.token("https://management.azure.com/.default").await
    }

    /// An ARM call with a fresh token.
    pub async fn arm(&self, method: Method, path: &str, body: Option<Value>) -> TestResp {
        let token = self.arm_token().await;
        self.arm_with(&token, method, path, body).await
    }

    pub async fn arm_with(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResp {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send(
            method,
            path,
            &headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    pub fn rg_path(&self, rg: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{rg}", self.sub)
    }

    /// Creates a resource group (api-version 2025-04-01).
    pub async fn create_rg(&self, token: &str, rg: &str) {
        let r = self
            .arm_with(
                token,
                Method::PUT,
                &format!("{}?api-version=2025-04-01", self.rg_path(rg)),
                Some(serde_json::json!({"location": "eastus"})),
            )
            .await;
        assert!(
            r.status.is_success(),
            "rg: {}",
            String::from_utf8_lossy(&r.body)
        );
    }

    /// Strips the base URL from an absolute URL the emulator returned.
    pub fn rel(&self, url: &str) -> String {
        url.strip_prefix(&self.base).unwrap_or(url).to_string()
    }
}

/// Starts an emulator with a time scale and an optional config tweak.
pub async fn start(
    scale: f64,
    tweak: impl FnOnce(&mut EmulatorConfig),
) -> (EmulatorHandle, Client) {
    let mut config = EmulatorConfig::default();
    tweak(&mut config);
    let emu = Emulator::builder()
        .time_scale(scale)
        .config(config)
        .start()
        .await
        .expect("start emulator");
    let client = Client::new(&emu);
    (emu, client)
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
