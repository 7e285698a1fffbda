//! `k3s.registry-credential`: the credential `/etc/rancher/k3s/registries.yaml` holds for one
//! registry, as a secret output (empty when the file or the entry is absent). Read only: a
//! rotation step compares it with what it would write, so an unexpired credential is kept and
//! k3s is not restarted.

use crate::host::REGISTRIES_FILE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError};

/// Input of `k3s.registry-credential`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sRegistryCredentialInput {
    /// The node.
    pub ssh: SshTargetInput,
    /// The registry host, as a key of `configs` (`myreg.azurecr.io`).
    pub registry: String,
}

/// Output of `k3s.registry-credential`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sRegistryCredentialOutput {
    /// The user name (empty when there is none).
    pub username: String,
    /// The password or token (empty when there is none).
    pub password: Secret<String>,
}

/// The `k3s.registry-credential` kind.
pub struct K3sRegistryCredential {
    pool: StepPool,
}

impl K3sRegistryCredential {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }

    async fn read(
        &self,
        cx: &StepContext,
        input: &K3sRegistryCredentialInput,
    ) -> Result<K3sRegistryCredentialOutput, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let text = remote
            .read_file(REGISTRIES_FILE)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let (username, password) = credential_of(&text, &input.registry);
        if !password.is_empty() {
            cx.add_secret(&password);
        }
        Ok(K3sRegistryCredentialOutput {
            username,
            password: Secret::new(password),
        })
    }
}

/// `configs.<registry>.auth.{username,password}` of a registries.yaml text; empty strings when
/// absent or unreadable (a file we cannot parse is rewritten by `k3s.registries` anyway).
fn credential_of(text: &str, registry: &str) -> (String, String) {
    let doc: Value = serde_saphyr::from_str(text).unwrap_or(Value::Null);
    let auth = doc
        .get("configs")
        .and_then(|c| c.get(registry))
        .and_then(|c| c.get("auth"));
    let field = |k: &str| {
        auth.and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (field("username"), field("password"))
}

impl Step for K3sRegistryCredential {
    const KIND: &'static str = "k3s.registry-credential";
    type Input = K3sRegistryCredentialInput;
    type Output = K3sRegistryCredentialOutput;

    fn description(&self) -> &'static str {
        "Read the credential registries.yaml holds for one registry (a secret output; read only)"
    }

    fn validate(&self, input: &K3sRegistryCredentialInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.registry.is_empty() {
            return Err(StepError::permanent(
                "InvalidInput",
                "`registry` is a registry host such as myreg.azurecr.io",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sRegistryCredentialInput,
    ) -> Result<Observed<K3sRegistryCredentialOutput>, StepError> {
        self.read(cx, input).await.map(Observed::Satisfied)
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sRegistryCredentialInput,
    ) -> Result<Progress<K3sRegistryCredentialOutput>, StepError> {
        self.read(cx, input).await.map(Progress::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_entry_of_one_registry() {
        let text = "# Written by siteflow\nconfigs:\n  a.azurecr.io:\n    auth:\n      username: u\n      password: p1\n  b.azurecr.io:\n    tls:\n      insecure_skip_verify: true\nmirrors: {}\n";
        assert_eq!(
            credential_of(text, "a.azurecr.io"),
            ("u".to_string(), "p1".to_string())
        );
        assert_eq!(
            credential_of(text, "b.azurecr.io"),
            (String::new(), String::new())
        );
        assert_eq!(
            credential_of("", "a.azurecr.io"),
            (String::new(), String::new())
        );
        assert_eq!(
            credential_of(": : bad", "a.azurecr.io"),
            (String::new(), String::new())
        );
    }
}
