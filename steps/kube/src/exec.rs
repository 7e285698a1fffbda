//! Exec credential plugins (`users[].user.exec`, `client.authentication.k8s.io/v1` and
//! `v1beta1`), as kubectl runs them: `kubelogin`, `aws eks get-token`,
//! `gke-gcloud-auth-plugin`. The plugin runs non-interactively (no stdin) with
//! `KUBERNETES_EXEC_INFO`, and prints an `ExecCredential` whose token (or client certificate)
//! the client uses. A credential is kept in the process until its `expirationTimestamp`
//! (less a minute), or until the API server refuses it, so a polling step does not run the
//! plugin on every check, and concurrent steps on one cluster run it once.

use serde_json::{Value, json};
use siteflow_step::{StepContext, StepError};
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// How long a plugin may take (an interactive one would wait for ever; ours gets no stdin).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A credential this close to its expiry is fetched again.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// What a plugin returned.
#[derive(Debug, PartialEq)]
pub(crate) enum Credential {
    /// A bearer token.
    Token(String),
    /// A client certificate chain and its key (PEM).
    Certificate { cert: Vec<u8>, key: Vec<u8> },
}

impl Credential {
    fn secrets(&self) -> Vec<&[u8]> {
        match self {
            Credential::Token(t) => vec![t.as_bytes()],
            Credential::Certificate { key, .. } => vec![key],
        }
    }
}

struct Cached {
    credential: Arc<Credential>,
    expires: Option<SystemTime>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// One slot per plugin configuration: concurrent steps wait for one run of the plugin.
static CACHE: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(Mutex::default);

/// A kubeconfig user's exec plugin.
#[derive(Debug, Clone)]
pub(crate) struct ExecPlugin {
    api_version: String,
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    install_hint: Option<String>,
    /// `spec.cluster` of `KUBERNETES_EXEC_INFO`, when the user asks `provideClusterInfo`.
    cluster: Option<Value>,
}

const API_VERSIONS: &[&str] = &[
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

impl ExecPlugin {
    /// The plugin `exec` (a kubeconfig user's `exec` map) describes; `base` is the
    /// kubeconfig's directory (a relative command with a `/` is relative to it, as in
    /// kubectl); `cluster` is the context's cluster entry.
    pub(crate) fn parse(base: &Path, exec: &Value, cluster: &Value) -> Result<Self, String> {
        let api_version = exec["apiVersion"].as_str().unwrap_or_default();
        if !API_VERSIONS.contains(&api_version) {
            return Err(format!(
                "exec plugin apiVersion {api_version:?} is not supported: use one of {}",
                API_VERSIONS.join(", ")
            ));
        }
        let command = exec["command"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or("the exec plugin has no `command`")?;
        let command = if command.contains('/') && !command.starts_with('/') {
            base.join(command).to_string_lossy().into_owned()
        } else {
            command.to_string()
        };
        let strings = |v: &Value, what: &str| -> Result<Vec<String>, String> {
            match v {
                Value::Null => Ok(Vec::new()),
                Value::Array(a) => a
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("exec plugin `{what}` must be a list of strings")),
                _ => Err(format!("exec plugin `{what}` must be a list of strings")),
            }
        };
        let args = strings(&exec["args"], "args")?;
        let env = match &exec["env"] {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .map(|e| {
                    Some((
                        e["name"].as_str()?.to_string(),
                        e["value"].as_str()?.to_string(),
                    ))
                })
                .collect::<Option<_>>()
                .ok_or("exec plugin `env` must be a list of {name, value}")?,
            _ => return Err("exec plugin `env` must be a list of {name, value}".into()),
        };
        match exec["interactiveMode"].as_str() {
            None | Some("Never" | "IfAvailable") => {}
            Some("Always") => {
                return Err(
                    "the exec plugin's interactiveMode is Always, but siteflow runs unattended: \
                     use a non-interactive login (for kubelogin: `-l azurecli`, `-l spn`, \
                     `-l workloadidentity` or `-l msi`)"
                        .into(),
                );
            }
            Some(m) => {
                return Err(format!(
                    "exec plugin interactiveMode {m:?} is not one of Never, IfAvailable, Always"
                ));
            }
        }
        let cluster = (exec["provideClusterInfo"].as_bool() == Some(true)).then(|| {
            let mut c = json!({ "server": cluster["server"] });
            for key in ["certificate-authority-data", "tls-server-name", "proxy-url"] {
                if let Some(v) = cluster.get(key) {
                    c[key] = v.clone();
                }
            }
            if let Some(config) = cluster["extensions"].as_array().and_then(|a| {
                a.iter()
                    .find(|e| e["name"] == "client.authentication.k8s.io/exec")
                    .map(|e| e["extension"].clone())
            }) {
                c["config"] = config;
            }
            c
        });
        Ok(Self {
            api_version: api_version.to_string(),
            command,
            args,
            env,
            install_hint: exec["installHint"].as_str().map(str::to_string),
            cluster,
        })
    }

    fn cache_key(&self) -> String {
        format!(
            "{}\0{}\0{:?}\0{:?}\0{:?}",
            self.api_version, self.command, self.args, self.env, self.cluster
        )
    }

    /// The plugin's credential: the one kept from an earlier run unless it expires within a
    /// minute or is `refused` (the API server said 401 to it). Registered as a secret of the
    /// step.
    pub(crate) async fn credential(
        &self,
        cx: &StepContext,
        refused: Option<&Credential>,
    ) -> Result<Arc<Credential>, StepError> {
        let slot = {
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(self.cache_key()).or_default().clone()
        };
        let mut held = slot.lock().await;
        let fresh = held.as_ref().filter(|c| {
            refused != Some(&*c.credential)
                && c.expires
                    .is_none_or(|t| t > SystemTime::now() + EXPIRY_MARGIN)
        });
        let credential = match fresh {
            Some(c) => c.credential.clone(),
            None => {
                let (credential, expires) = self.run(cx).await?;
                let credential = Arc::new(credential);
                *held = Some(Cached {
                    credential: credential.clone(),
                    expires,
                });
                credential
            }
        };
        for s in credential.secrets() {
            cx.add_secret(&String::from_utf8_lossy(s));
        }
        Ok(credential)
    }

    async fn run(&self, cx: &StepContext) -> Result<(Credential, Option<SystemTime>), StepError> {
        let mut spec = json!({ "interactive": false });
        if let Some(c) = &self.cluster {
            spec["cluster"] = c.clone();
        }
        let info =
            json!({ "apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec });
        let mut cmd = tokio::process::Command::new(&self.command);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", info.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            let hint = self
                .install_hint
                .as_deref()
                .map(|h| format!("\n{}", h.trim()))
                .unwrap_or_default();
            let msg = format!("exec plugin `{}` could not start: {e}{hint}", self.command);
            if e.kind() == std::io::ErrorKind::NotFound {
                StepError::permanent("KubeCredentialPlugin", msg)
            } else {
                StepError::retryable("KubeCredentialPlugin", msg)
            }
        })?;
        let out = tokio::select! {
            out = child.wait_with_output() => out.map_err(|e| plugin_error(&self.command, e))?,
            () = tokio::time::sleep(PLUGIN_TIMEOUT) => {
                return Err(plugin_error(&self.command, format!(
                    "no answer within {} s (does it wait for an interactive login?)",
                    PLUGIN_TIMEOUT.as_secs()
                )));
            }
            () = cx.cancel.cancelled() => {
                return Err(StepError::cancelled("the exec credential plugin was stopped"));
            }
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail: String = lines[lines.len().saturating_sub(5)..]
                .join("\n")
                .chars()
                .take(1000)
                .collect();
            return Err(plugin_error(
                &self.command,
                format!("{}: {tail}", out.status),
            ));
        }
        parse_credential(&self.api_version, &out.stdout).map_err(|e| {
            StepError::permanent(
                "KubeCredentialPlugin",
                format!("exec plugin `{}`: {e}", self.command),
            )
        })
    }
}

fn plugin_error(command: &str, e: impl std::fmt::Display) -> StepError {
    StepError::retryable(
        "KubeCredentialPlugin",
        format!("exec plugin `{command}` failed: {e}"),
    )
}

/// The credential and expiry in a plugin's `ExecCredential` output.
fn parse_credential(
    api_version: &str,
    stdout: &[u8],
) -> Result<(Credential, Option<SystemTime>), String> {
    let v: Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("its output is not an ExecCredential ({e})"))?;
    if v["kind"] != "ExecCredential" {
        return Err("its output is not an ExecCredential (kind)".into());
    }
    if v["apiVersion"] != api_version {
        return Err(format!(
            "it answered with apiVersion {}, the kubeconfig asks for {api_version}",
            v["apiVersion"]
        ));
    }
    let status = &v["status"];
    let credential = match (
        status["token"].as_str().filter(|t| !t.is_empty()),
        status["clientCertificateData"].as_str(),
        status["clientKeyData"].as_str(),
    ) {
        (Some(t), _, _) => Credential::Token(t.to_string()),
        (None, Some(c), Some(k)) => Credential::Certificate {
            cert: c.as_bytes().to_vec(),
            key: k.as_bytes().to_vec(),
        },
        _ => {
            return Err(
                "its ExecCredential has neither a token nor a client certificate and key".into(),
            );
        }
    };
    // An expiry we cannot read: use the credential once, fetch it again next time.
    let expires = status["expirationTimestamp"]
        .as_str()
        .map(|t| parse_timestamp(t).unwrap_or(SystemTime::UNIX_EPOCH));
    Ok((credential, expires))
}

/// An RFC 3339 timestamp in UTC (`Z` or `+00:00`), as Go's `metav1.Time` writes it.
fn parse_timestamp(t: &str) -> Option<SystemTime> {
    let utc = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
    humantime::parse_rfc3339_weak(utc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_config_as_kubectl_reads_it() {
        let cluster = json!({
            "server": "https://10.0.0.1:6443",
            "certificate-authority-data": "Zm9v",
            "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "x"}}]
        });
        let p = ExecPlugin::parse(
            Path::new("/kc"),
            &json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "bin/login",
                "args": ["get-token", "-l", "azurecli"],
                "env": [{"name": "A", "value": "1"}],
                "interactiveMode": "IfAvailable",
                "provideClusterInfo": true
            }),
            &cluster,
        )
        .unwrap();
        assert_eq!(p.command, "/kc/bin/login", "relative to the kubeconfig");
        assert_eq!(p.args, ["get-token", "-l", "azurecli"]);
        assert_eq!(p.env, [("A".to_string(), "1".to_string())]);
        let c = p.cluster.unwrap();
        assert_eq!(c["server"], "https://10.0.0.1:6443");
        assert_eq!(c["certificate-authority-data"], "Zm9v");
        assert_eq!(c["config"], json!({"audience": "x"}));
        let on_path = ExecPlugin::parse(
            Path::new("/kc"),
            &json!({"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "kubelogin"}),
            &cluster,
        )
        .unwrap();
        assert_eq!(on_path.command, "kubelogin");
        assert!(on_path.cluster.is_none());

        for (exec, wanted) in [
            (
                json!({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}),
                "not supported",
            ),
            (
                json!({"apiVersion": "client.authentication.k8s.io/v1"}),
                "no `command`",
            ),
            (
                json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "x", "interactiveMode": "Always"}),
                "unattended",
            ),
            (
                json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "x", "args": "a b"}),
                "list of strings",
            ),
        ] {
            let e = ExecPlugin::parse(Path::new("/"), &exec, &cluster).unwrap_err();
            assert!(e.contains(wanted), "{exec}: {e}");
        }
    }

    #[test]
    fn exec_credentials_are_read_like_client_go() {
        let v1 = "client.authentication.k8s.io/v1";
        let (c, exp) = parse_credential(
            v1,
            br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0k","expirationTimestamp":"2030-01-02T03:04:05Z"}}"#,
        )
        .unwrap();
        assert_eq!(c, Credential::Token("t0k".into()));
        assert_eq!(
            exp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        let (c, exp) = parse_credential(
            v1,
            br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"C","clientKeyData":"K"}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Credential::Certificate {
                cert: b"C".to_vec(),
                key: b"K".to_vec()
            }
        );
        assert_eq!(exp, None, "no expiry: kept until refused");
        let (_, odd) = parse_credential(
            v1,
            br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"soon"}}"#,
        )
        .unwrap();
        assert_eq!(odd, Some(SystemTime::UNIX_EPOCH), "used once, not kept");
        for (out, wanted) in [
            (&br#"login failed"#[..], "not an ExecCredential"),
            (br#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}"#, "answered with apiVersion"),
            (br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{}}"#, "neither a token"),
        ] {
            let e = parse_credential(v1, out).unwrap_err();
            assert!(e.contains(wanted), "{e}");
        }
    }
}
