//! `k3s.registries`: `/etc/rancher/k3s/registries.yaml` (mirrors, and credentials as
//! secrets), mode 0600; k3s restarts only when the file changed.

use crate::host::{CONFIG_DIR, REGISTRIES_FILE, installed_unit, restart};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::sha256_hex;
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError};
use std::collections::BTreeMap;

/// A mirror of a registry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Endpoints tried in order.
    pub endpoint: Vec<String>,
    /// Image-name rewrites (regex → replacement).
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Credentials and TLS settings of a registry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// User name (`00000000-0000-0000-0000-000000000000` for an ACR token).
    #[serde(default)]
    pub username: Option<String>,
    /// Password or token.
    #[serde(default)]
    pub password: Option<Secret<String>>,
    /// Skip TLS verification.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// CA bundle path on the host.
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// Input of `k3s.registries`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sRegistriesInput {
    /// The node.
    pub ssh: SshTargetInput,
    /// Mirrors by registry name (`docker.io`, `*`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Settings by registry host.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

/// Output of `k3s.registries`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sRegistriesOutput {
    /// The file written.
    pub path: String,
}

/// The `k3s.registries` kind.
pub struct K3sRegistries {
    pool: StepPool,
}

impl K3sRegistries {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

fn content(input: &K3sRegistriesInput) -> Result<String, StepError> {
    let mut mirrors = Map::new();
    for (name, m) in &input.mirrors {
        let mut v = json!({"endpoint": m.endpoint});
        if !m.rewrite.is_empty() {
            v["rewrite"] = json!(m.rewrite);
        }
        mirrors.insert(name.clone(), v);
    }
    let mut configs = Map::new();
    for (name, c) in &input.configs {
        let mut v = json!({});
        if c.username.is_some() || c.password.is_some() {
            let mut auth = json!({});
            if let Some(u) = &c.username {
                auth["username"] = json!(u);
            }
            if let Some(p) = &c.password {
                auth["password"] = json!(p.expose());
            }
            v["auth"] = auth;
        }
        if c.insecure_skip_verify || c.ca_file.is_some() {
            let mut tls = json!({});
            if c.insecure_skip_verify {
                tls["insecure_skip_verify"] = json!(true);
            }
            if let Some(ca) = &c.ca_file {
                tls["ca_file"] = json!(ca);
            }
            v["tls"] = tls;
        }
        configs.insert(name.clone(), v);
    }
    let doc = json!({"mirrors": mirrors, "configs": configs});
    let text = serde_saphyr::to_string(&doc)
        .map_err(|e| StepError::permanent("InvalidInput", format!("registries.yaml: {e}")))?;
    Ok(format!("# Written by siteflow (k3s.registries).\n{text}"))
}

impl Step for K3sRegistries {
    const KIND: &'static str = "k3s.registries";
    type Input = K3sRegistriesInput;
    type Output = K3sRegistriesOutput;

    fn description(&self) -> &'static str {
        "Write /etc/rancher/k3s/registries.yaml (mirrors, secret credentials); restarts k3s only on change"
    }

    fn validate(&self, input: &K3sRegistriesInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        content(input).map(|_| ())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sRegistriesInput,
    ) -> Result<Observed<K3sRegistriesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let want = sha256_hex(content(input)?.as_bytes());
        Ok(match remote.file_state(REGISTRIES_FILE).await? {
            Some(f) if f.sha256 == want && f.mode == 0o600 => {
                Observed::Satisfied(K3sRegistriesOutput {
                    path: REGISTRIES_FILE.into(),
                })
            }
            _ => Observed::NotSatisfied {
                reason: Some(format!("{REGISTRIES_FILE} differs")),
            },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sRegistriesInput,
    ) -> Result<Progress<K3sRegistriesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let text = content(input)?;
        let before = remote.file_state(REGISTRIES_FILE).await?;
        if before.as_ref().map(|f| f.sha256.as_str()) != Some(sha256_hex(text.as_bytes()).as_str())
            || before.as_ref().map(|f| f.mode) != Some(0o600)
        {
            remote
                .run_quiet(&format!("mkdir -p -m 0755 {}", shell_quote(CONFIG_DIR)))
                .await?;
            remote
                .write_secret(REGISTRIES_FILE, &Secret::new(text))
                .await?;
            if let Some(unit) = installed_unit(&remote).await? {
                restart(&remote, &unit, &format!("{REGISTRIES_FILE} changed")).await?;
            }
        }
        Ok(Progress::Done(K3sRegistriesOutput {
            path: REGISTRIES_FILE.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_yaml() {
        use serde_json::Value;
        let i: K3sRegistriesInput = serde_json::from_value(json!({
            "ssh": {"host": "h", "user": "u"},
            "mirrors": {"docker.io": {"endpoint": ["https://myacr.azurecr.io"]}},
            "configs": {"myacr.azurecr.io": {"username": "0000", "password": "pw"}}
        }))
        .unwrap();
        let c = content(&i).unwrap();
        assert!(c.contains("https://myacr.azurecr.io"));
        assert!(c.contains("password: pw"));
        let _: Value = serde_saphyr::from_str(&c).unwrap();
    }
}
