//! A Kubernetes API client from a kubeconfig: the context's cluster (its CA only, as kubectl
//! trusts it), a bearer token, a client certificate or an exec credential plugin
//! (`kubelogin`, …), discovery of resource paths, GET and server-side apply.

use crate::exec::{Credential, ExecPlugin};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::Value;
use siteflow_step::{StepContext, StepError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "siteflow";

/// Which cluster: a kubeconfig file and a context in it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigTarget {
    /// The kubeconfig file (relative paths resolve against the working directory).
    pub path: String,
    /// The context (default: the file's `current-context`).
    #[serde(default)]
    pub context: Option<String>,
}

impl KubeconfigTarget {
    /// Checks what can be checked without reading the file.
    pub fn validate(&self) -> Result<(), StepError> {
        if self.path.is_empty() {
            return Err(invalid("`kubeconfig.path` must not be empty"));
        }
        Ok(())
    }
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

fn bad_kubeconfig(path: &Path, msg: impl std::fmt::Display) -> StepError {
    StepError::permanent(
        "InvalidKubeconfig",
        format!("kubeconfig {}: {msg}", path.display()),
    )
}

/// The parts of a kubeconfig the client uses.
#[derive(Debug)]
struct Resolved {
    server: String,
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    token: Option<String>,
    client_cert_key: Option<(Vec<u8>, Vec<u8>)>,
    exec: Option<ExecPlugin>,
}

fn data_or_file(
    base: &Path,
    obj: &Value,
    data: &str,
    file: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(d) = obj.get(data).and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|e| format!("`{data}` is not base64: {e}"));
    }
    if let Some(f) = obj.get(file).and_then(Value::as_str) {
        let p = base.join(f);
        return std::fs::read(&p)
            .map(Some)
            .map_err(|e| format!("`{file}` {}: {e}", p.display()));
    }
    Ok(None)
}

fn resolve(path: &Path, context: Option<&str>) -> Result<Resolved, StepError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad_kubeconfig(path, e))?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| bad_kubeconfig(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let ctx_name = context
        .map(str::to_string)
        .or_else(|| doc["current-context"].as_str().map(str::to_string))
        .ok_or_else(|| bad_kubeconfig(path, "no context given and no current-context"))?;
    let named = |list: &str, name: &str, field: &str| -> Result<Value, StepError> {
        doc[list]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name))
            .map(|e| e[field].clone())
            .ok_or_else(|| bad_kubeconfig(path, format!("no {field} named {name:?} in `{list}`")))
    };
    let ctx = named("contexts", &ctx_name, "context")?;
    let cluster = named("clusters", ctx["cluster"].as_str().unwrap_or(""), "cluster")?;
    let user = match ctx["user"].as_str() {
        Some(u) => named("users", u, "user")?,
        None => Value::Null,
    };
    if user.get("auth-provider").is_some() {
        return Err(bad_kubeconfig(
            path,
            format!(
                "context {ctx_name:?}'s user logs in with an auth-provider, which kubectl dropped in 1.26; use its exec plugin (for Azure: `kubelogin convert-kubeconfig`), a token or a client certificate"
            ),
        ));
    }
    let exec = match user.get("exec") {
        Some(e) => Some(ExecPlugin::parse(base, e, &cluster).map_err(|m| bad_kubeconfig(path, m))?),
        None => None,
    };
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| {
            bad_kubeconfig(
                path,
                format!("cluster of context {ctx_name:?} has no server"),
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let ca_pem = data_or_file(
        base,
        &cluster,
        "certificate-authority-data",
        "certificate-authority",
    )
    .map_err(|e| bad_kubeconfig(path, e))?;
    let token = match user.get("token").and_then(Value::as_str) {
        Some(t) => Some(t.to_string()),
        None => match user.get("tokenFile").and_then(Value::as_str) {
            Some(f) => Some(
                std::fs::read_to_string(base.join(f))
                    .map_err(|e| bad_kubeconfig(path, format!("tokenFile {f}: {e}")))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
    };
    let cert = data_or_file(base, &user, "client-certificate-data", "client-certificate")
        .map_err(|e| bad_kubeconfig(path, e))?;
    let key = data_or_file(base, &user, "client-key-data", "client-key")
        .map_err(|e| bad_kubeconfig(path, e))?;
    Ok(Resolved {
        server,
        ca_pem,
        insecure: cluster["insecure-skip-tls-verify"]
            .as_bool()
            .unwrap_or(false),
        token,
        client_cert_key: cert.zip(key),
        exec,
    })
}

/// One group version's resources: `(kind, plural, namespaced)`.
type Resources = Arc<Vec<(String, String, bool)>>;

/// A client for one cluster.
pub struct KubeClient {
    http: reqwest::Client,
    server: String,
    token: Mutex<Option<String>>,
    /// The exec plugin that gave the token, asked again when the server refuses it.
    exec: Option<(ExecPlugin, StepContext)>,
    /// Discovery, by `groupVersion`.
    discovery: Mutex<HashMap<String, Resources>>,
}

fn transport(msg: impl std::fmt::Display) -> StepError {
    StepError::retryable("KubeApiUnreachable", msg.to_string())
}

impl KubeClient {
    /// The client of `target` (the token, if any, is registered as a secret of the step).
    /// A user with an exec plugin gets its credential first (see [`crate::exec`]).
    pub async fn new(cx: &StepContext, target: &KubeconfigTarget) -> Result<Self, StepError> {
        let path: PathBuf = cx.resolve_path(&target.path);
        let mut r = {
            let (file, context) = (path.clone(), target.context.clone());
            tokio::task::spawn_blocking(move || resolve(&file, context.as_deref()))
                .await
                .map_err(|e| bad_kubeconfig(&path, e))??
        };
        if let Some(plugin) = &r.exec {
            match &*plugin.credential(cx, None).await? {
                Credential::Token(t) => r.token = Some(t.clone()),
                Credential::Certificate { cert, key } => {
                    r.client_cert_key = Some((cert.clone(), key.clone()));
                }
            }
        }
        if let Some(t) = &r.token {
            cx.add_secret(t);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_kubeconfig(&path, e))?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &r.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| bad_kubeconfig(&path, format!("CA: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad_kubeconfig(&path, format!("CA: {e}")))?;
            }
        }
        if r.insecure {
            return Err(bad_kubeconfig(
                &path,
                "insecure-skip-tls-verify is not supported: give the cluster's CA (certificate-authority-data)",
            ));
        }
        if roots.is_empty() && r.server.starts_with("https://") {
            return Err(bad_kubeconfig(
                &path,
                "the cluster has no certificate-authority(-data): siteflow trusts only the cluster's own CA",
            ));
        }
        let builder = builder.with_root_certificates(roots);
        let tls = match &r.client_cert_key {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad_kubeconfig(&path, format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| bad_kubeconfig(&path, format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad_kubeconfig(&path, e))?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| bad_kubeconfig(&path, e))?;
        Ok(Self {
            http,
            server: r.server,
            exec: r
                .exec
                .filter(|_| r.token.is_some())
                .map(|p| (p, cx.clone())),
            token: Mutex::new(r.token),
            discovery: Mutex::default(),
        })
    }

    /// One request (and, when an exec plugin's token is refused with 401, the plugin asked
    /// again and the request sent once more, as kubectl does).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(String, &'static str)>,
    ) -> Result<(u16, Value), StepError> {
        let token = self.token.lock().map(|t| t.clone()).unwrap_or_default();
        let (mut status, mut v) = self
            .send_once(&method, path, body.clone(), token.as_deref())
            .await?;
        if let (401, Some((plugin, cx)), Some(refused)) = (status, &self.exec, token) {
            let fresh = match &*plugin
                .credential(cx, Some(&Credential::Token(refused)))
                .await?
            {
                Credential::Token(t) => t.clone(),
                Credential::Certificate { .. } => {
                    return Err(StepError::permanent(
                        "KubeUnauthorized",
                        "the exec plugin answered a certificate where it gave a token before",
                    ));
                }
            };
            if let Ok(mut t) = self.token.lock() {
                *t = Some(fresh.clone());
            }
            (status, v) = self.send_once(&method, path, body, Some(&fresh)).await?;
        }
        match status {
            200..=299 | 404 => Ok((status, v)),
            401 | 403 => Err(StepError::permanent(
                "KubeUnauthorized",
                format!(
                    "{method} {path}: {status}: {}; check the kubeconfig's credentials",
                    message(&v)
                ),
            )),
            429 | 500..=599 => Err(StepError::retryable(
                "KubeApiError",
                format!("{method} {path}: {status}: {}", message(&v)),
            )),
            _ => Err(StepError::permanent(
                "KubeApiError",
                format!("{method} {path}: {status}: {}", message(&v)),
            )),
        }
    }

    async fn send_once(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<(String, &'static str)>,
        token: Option<&str>,
    ) -> Result<(u16, Value), StepError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.server));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((b, ct)) = body {
            req = req.header("Content-Type", ct).body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(format!("{method} {}{path}: {e}", self.server)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
        });
        Ok((status, v))
    }

    /// `(plural, namespaced)` of `kind` in `apiVersion`, from the server's discovery. A kind
    /// missing from a cached list is looked up afresh (a CRD applied since); a kind the
    /// server does not serve is a retryable `KindNotServed` (a new CRD takes a moment to be
    /// established).
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(String, bool), StepError> {
        let cached = self
            .discovery
            .lock()
            .ok()
            .and_then(|d| d.get(api_version).cloned());
        let find = |list: &Resources| {
            list.iter()
                .find(|(k, _, _)| k == kind)
                .map(|(_, plural, ns)| (plural.clone(), *ns))
        };
        if let Some(found) = cached.as_ref().and_then(find) {
            return Ok(found);
        }
        let list = self.discover(api_version).await?;
        find(&list).ok_or_else(|| {
            StepError::retryable(
                "KindNotServed",
                format!("the cluster serves no {kind} in {api_version} (discovery)"),
            )
        })
    }

    /// The resources of `api_version` the server serves now (and cached).
    async fn discover(&self, api_version: &str) -> Result<Resources, StepError> {
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let (status, v) = self.send(reqwest::Method::GET, &path, None).await?;
        let list: Vec<(String, String, bool)> = if status == 404 {
            Vec::new()
        } else {
            v["resources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| {
                            let name = r["name"].as_str()?;
                            (!name.contains('/')).then(|| {
                                (
                                    r["kind"].as_str().unwrap_or("").to_string(),
                                    name.to_string(),
                                    r["namespaced"].as_bool().unwrap_or(true),
                                )
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let list = Arc::new(list);
        if let Ok(mut d) = self.discovery.lock() {
            d.insert(api_version.to_string(), list.clone());
        }
        Ok(list)
    }

    async fn object_path(&self, obj: &Value) -> Result<(String, String), StepError> {
        let api_version = obj["apiVersion"]
            .as_str()
            .ok_or_else(|| invalid("an object has no apiVersion"))?;
        let kind = obj["kind"]
            .as_str()
            .ok_or_else(|| invalid("an object has no kind"))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("a {kind} has no metadata.name")))?;
        let (plural, namespaced) = self.resource(api_version, kind).await?;
        let prefix = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let path = if namespaced {
            let ns = obj
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            format!("{prefix}/namespaces/{ns}/{plural}/{name}")
        } else {
            format!("{prefix}/{plural}/{name}")
        };
        Ok((path, format!("{kind}/{name}")))
    }

    /// The live object `obj` names, if it exists.
    pub async fn get(&self, obj: &Value) -> Result<Option<Value>, StepError> {
        let (path, _) = self.object_path(obj).await?;
        let (status, v) = self.send(reqwest::Method::GET, &path, None).await?;
        Ok((status != 404).then_some(v))
    }

    /// Server-side applies `obj` (field manager `siteflow`, conflicts forced); the live object.
    pub async fn apply(&self, obj: &Value) -> Result<Value, StepError> {
        let (path, what) = self.object_path(obj).await?;
        let (status, v) = self
            .send(
                reqwest::Method::PATCH,
                &format!("{path}?fieldManager={FIELD_MANAGER}&force=true"),
                Some((obj.to_string(), "application/apply-patch+yaml")),
            )
            .await?;
        if status == 404 {
            return Err(StepError::retryable(
                "NotFound",
                format!("apply {what}: {}", message(&v)),
            ));
        }
        Ok(v)
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }
}

fn message(v: &Value) -> String {
    v.get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string().chars().take(300).collect())
}

/// Whether every field of `want` is in `have` with the same value (maps compared key by key,
/// other values whole): what a server-side apply of `want` would leave unchanged.
pub fn holds(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| holds(v, hv))),
        _ => want == have,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An API server whose discovery of `example.com/v1` gains the Widget kind after the
    /// first answer (a CRD established meanwhile); counts the discovery requests.
    #[tokio::test]
    async fn a_kind_established_after_discovery_is_found_and_the_wait_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = if n == 0 {
                    r#"{"resources":[]}"#
                } else {
                    r#"{"resources":[{"name":"widgets","kind":"Widget","namespaced":true},{"name":"widgets/status","kind":"Widget","namespaced":true}]}"#
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            format!("apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster: {{server: \"http://{addr}\"}}\ncontexts:\n- name: a\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: t0k}}\n"),
        )
        .unwrap();
        let cx = StepContext::new(
            "r",
            None,
            "s",
            "kube.apply",
            1,
            dir.path().to_path_buf(),
            siteflow_step::CancellationToken::new(),
            Arc::new(siteflow_step::NoopHost),
        );
        let target = KubeconfigTarget {
            path: "config".into(),
            context: None,
        };
        let client = KubeClient::new(&cx, &target).await.unwrap();
        let e = client
            .resource("example.com/v1", "Widget")
            .await
            .unwrap_err();
        assert_eq!(e.code, "KindNotServed");
        assert!(
            matches!(e.class, siteflow_step::ErrorClass::Retryable { .. }),
            "{e:?}"
        );
        assert_eq!(
            client.resource("example.com/v1", "Widget").await.unwrap(),
            ("widgets".to_string(), true),
            "the cached list lacked it: discovered again"
        );
        client.resource("example.com/v1", "Widget").await.unwrap();
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "then cached"
        );
    }
    use serde_json::json;

    #[test]
    fn holds_compares_what_apply_would_set() {
        let have = json!({"metadata": {"name": "a", "uid": "1"}, "data": {"k": "v", "x": "y"}});
        assert!(holds(
            &json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
            &have
        ));
        assert!(!holds(&json!({"data": {"k": "w"}}), &have));
        assert!(!holds(&json!({"data": {"z": "v"}}), &have));
    }

    #[test]
    fn kubeconfig_contexts_resolve_with_tokens_and_exec_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config");
        std::fs::write(
            &p,
            "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443/\n    certificate-authority-data: Zm9v\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: e}\n- name: p\n  context: {cluster: c, user: p}\n- name: x\n  context: {cluster: c, user: x}\nusers:\n- name: u\n  user: {token: t0k}\n- name: e\n  user:\n    exec: {command: kubelogin}\n- name: p\n  user:\n    auth-provider: {name: azure}\n- name: x\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: kubelogin, args: [get-token]}\n",
        )
        .unwrap();
        let r = resolve(&p, None).unwrap();
        assert_eq!(r.server, "https://10.0.0.1:6443");
        assert_eq!(r.ca_pem.as_deref(), Some(&b"foo"[..]));
        assert_eq!(r.token.as_deref(), Some("t0k"));
        let e = resolve(&p, Some("b")).unwrap_err();
        assert_eq!(e.code, "InvalidKubeconfig");
        assert!(
            e.message
                .contains("exec plugin apiVersion \"\" is not supported"),
            "{}",
            e.message
        );
        let e = resolve(&p, Some("p")).unwrap_err();
        assert!(e.message.contains("auth-provider"), "{}", e.message);
        let x = resolve(&p, Some("x")).unwrap();
        assert!(x.exec.is_some() && x.token.is_none());
        let e = resolve(&p, Some("nope")).unwrap_err();
        assert!(
            e.message.contains("no context named \"nope\""),
            "{}",
            e.message
        );
    }
}
