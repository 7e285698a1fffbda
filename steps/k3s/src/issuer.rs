//! `k3s.service-account-issuer`: a drop-in under `/etc/rancher/k3s/config.yaml.d/` that
//! sets kube-apiserver's service-account issuer (workload identity); servers are changed and
//! restarted one at a time, each back to Ready before the next, and the result is verified
//! by the `iss` claim of a freshly issued service-account token.

use crate::host::{CONFIG_DROPIN_DIR, KUBECONFIG, invalid, nodes, restart};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{Remote, SshTargetInput, StepPool};
use siteflow_step::sha256_hex;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::time::Duration;

/// How the issuer is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IssuerMode {
    /// `service-account-issuer=`: the new issuer replaces the default (old tokens stop
    /// validating).
    #[default]
    Replace,
    /// `service-account-issuer-=`: the new issuer goes first, the old one still validates.
    Prepend,
}

/// Input of `k3s.service-account-issuer`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sIssuerInput {
    /// Every server of the cluster, changed in this order.
    pub servers: Vec<SshTargetInput>,
    /// The issuer URL (Arc's `oidcIssuerProfile.issuerUrl`, trailing slash included).
    pub issuer: String,
    /// `service-account-max-token-expiration` (default `24h`).
    #[serde(default)]
    pub max_token_expiration: Option<siteflow_step::Duration>,
    /// `replace` (default) or `prepend`.
    #[serde(default)]
    pub mode: IssuerMode,
    /// The drop-in's file name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Recheck interval while a server restarts (default 2s).
    #[serde(default)]
    pub interval: Option<siteflow_step::Duration>,
}

/// Output of `k3s.service-account-issuer`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sIssuerOutput {
    /// The issuer every server's tokens now carry.
    pub issuer: String,
}

/// The `k3s.service-account-issuer` kind.
pub struct K3sIssuer {
    pool: StepPool,
}

impl K3sIssuer {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

impl K3sIssuerInput {
    fn path(&self) -> String {
        format!(
            "{CONFIG_DROPIN_DIR}/{}",
            self.file_name
                .as_deref()
                .unwrap_or("90-siteflow-service-account-issuer.yaml")
        )
    }

    fn dropin(&self) -> String {
        let flag = match self.mode {
            IssuerMode::Replace => "service-account-issuer",
            IssuerMode::Prepend => "service-account-issuer-",
        };
        let exp = self
            .max_token_expiration
            .unwrap_or(Duration::from_secs(24 * 3600).into());
        format!(
            "# Written by siteflow (k3s.service-account-issuer).\nkube-apiserver-arg+:\n  - {}\n  - {}\n",
            json!(format!("{flag}={}", self.issuer)),
            json!(format!("service-account-max-token-expiration={exp}"))
        )
    }

    fn interval(&self) -> Duration {
        self.interval.map_or(Duration::from_secs(2), |i| i.get())
    }
}

/// One server's state.
struct ServerState {
    file_ok: bool,
    ready: bool,
    iss: Option<String>,
}

/// The `iss` claim of a JWT, unverified.
fn iss_claim(jwt: &str) -> Option<String> {
    let payload = jwt.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["iss"].as_str().map(str::to_string)
}

async fn server_state(remote: &Remote, input: &K3sIssuerInput) -> Result<ServerState, StepError> {
    let want = sha256_hex(input.dropin().as_bytes());
    let file_ok = remote
        .file_state(&input.path())
        .await?
        .is_some_and(|f| f.sha256 == want);
    let hostname = remote
        .run_quiet("hostname")
        .await?
        .stdout_text()
        .trim()
        .to_string();
    let ready = match nodes(remote).await? {
        None => false,
        Some(list) => list
            .iter()
            .find(|n| n.name == hostname)
            .is_none_or(|n| n.ready),
    };
    let iss = if ready {
        let mut req = remote.request(format!(
            "KUBECONFIG={} k3s kubectl create token default -n default --duration 10m",
            shell_quote(KUBECONFIG)
        ));
        req.quiet = true;
        let out = remote.exec(&req).await?;
        if out.success() {
            iss_claim(&out.stdout_text())
        } else {
            None
        }
    } else {
        None
    };
    Ok(ServerState {
        file_ok,
        ready,
        iss,
    })
}

impl Step for K3sIssuer {
    const KIND: &'static str = "k3s.service-account-issuer";
    type Input = K3sIssuerInput;
    type Output = K3sIssuerOutput;

    fn description(&self) -> &'static str {
        "Set kube-apiserver's service-account issuer on every k3s server, one restart at a time, verified by a token's iss claim"
    }

    fn validate(&self, input: &K3sIssuerInput) -> Result<(), StepError> {
        if input.servers.is_empty() {
            return Err(invalid("`servers` is empty"));
        }
        for s in &input.servers {
            s.validate()?;
        }
        if !input.issuer.starts_with("https://") {
            return Err(invalid(format!(
                "issuer {:?} must be an https:// URL",
                input.issuer
            )));
        }
        if let Some(f) = &input.file_name
            && (f.contains('/') || !f.ends_with(".yaml"))
        {
            return Err(invalid("`file_name` must be a plain name ending in .yaml"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sIssuerInput,
    ) -> Result<Observed<K3sIssuerOutput>, StepError> {
        for s in &input.servers {
            let remote = self.pool.remote(cx, s, true).await?;
            let st = server_state(&remote, input).await?;
            if !st.file_ok {
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!("{} differs on {}", input.path(), s.host)),
                });
            }
            if st.iss.as_deref() != Some(input.issuer.as_str()) {
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!(
                        "tokens from {} carry iss {:?}",
                        s.host,
                        st.iss.unwrap_or_default()
                    )),
                });
            }
        }
        Ok(Observed::Satisfied(K3sIssuerOutput {
            issuer: input.issuer.clone(),
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sIssuerInput,
    ) -> Result<Progress<K3sIssuerOutput>, StepError> {
        let wait = Progress::Wait {
            recheck_after: input.interval(),
        };
        let dropin = input.dropin();
        let path = input.path();
        for s in &input.servers {
            let remote = self.pool.remote(cx, s, true).await?;
            let st = server_state(&remote, input).await?;
            if !st.file_ok {
                remote
                    .run_quiet(&format!(
                        "mkdir -p -m 0755 {}",
                        shell_quote(CONFIG_DROPIN_DIR)
                    ))
                    .await?;
                remote
                    .write_file(&path, dropin.as_bytes(), 0o600, None)
                    .await?;
                restart(&remote, "k3s", &format!("{path} changed")).await?;
                // One server at a time: the next is changed once this one is Ready again.
                return Ok(wait);
            }
            if !st.ready {
                cx.info(&format!("waiting for {} to be Ready again", s.host));
                return Ok(wait);
            }
            if st.iss.as_deref() != Some(input.issuer.as_str()) {
                // The file is right but the running server does not use it (e.g. a crash
                // between writing and restarting): restart once, then give up.
                let mut progress = cx.progress().unwrap_or_else(|| json!({}));
                let key = format!("{}:{}", s.host, s.port);
                if progress["restarted_for_iss"][&key].as_bool() == Some(true) {
                    return Err(StepError::permanent(
                        "IssuerNotApplied",
                        format!(
                            "{} still issues tokens with iss {:?} after a restart with {path}; \
                             check the other files in {CONFIG_DROPIN_DIR} and config.yaml for \
                             a conflicting service-account-issuer",
                            s.host,
                            st.iss.unwrap_or_default()
                        ),
                    ));
                }
                progress["restarted_for_iss"][&key] = json!(true);
                cx.save_progress(progress).await?;
                restart(&remote, "k3s", "its tokens do not carry the issuer yet").await?;
                return Ok(wait);
            }
        }
        Ok(Progress::Done(K3sIssuerOutput {
            issuer: input.issuer.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropin_and_iss() {
        let i: K3sIssuerInput = serde_json::from_value(json!({
            "servers": [{"host": "h", "user": "u"}],
            "issuer": "https://oidc.example/abc/",
            "mode": "prepend"
        }))
        .unwrap();
        let d = i.dropin();
        assert!(d.contains("kube-apiserver-arg+:"));
        assert!(d.contains("\"service-account-issuer-=https://oidc.example/abc/\""));
        assert!(d.contains("service-account-max-token-expiration=24h"));
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://oidc.example/abc/","sub":"x"}"#);
        assert_eq!(
            iss_claim(&format!("e30.{payload}.sig\n")).as_deref(),
            Some("https://oidc.example/abc/")
        );
        assert_eq!(iss_claim("garbage"), None);
    }

    #[test]
    fn the_token_expiration_is_written_in_the_apiservers_syntax() {
        // humantime reads `1d`; kube-apiserver (Go) does not: the drop-in says `24h`.
        let i: K3sIssuerInput = serde_json::from_value(json!({
            "servers": [{"host": "h", "user": "u"}],
            "issuer": "https://oidc.example/abc/",
            "max_token_expiration": "1d 12h"
        }))
        .unwrap();
        assert!(
            i.dropin()
                .contains("\"service-account-max-token-expiration=36h\""),
            "{}",
            i.dropin()
        );
        let bad = serde_json::from_value::<K3sIssuerInput>(json!({
            "servers": [{"host": "h", "user": "u"}],
            "issuer": "https://oidc.example/abc/",
            "max_token_expiration": "a day"
        }))
        .unwrap_err();
        assert!(bad.to_string().contains("is not a duration"), "{bad}");
    }
}
