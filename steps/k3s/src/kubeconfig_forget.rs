//! `k3s.kubeconfig-forget`: removes a site's cluster, user and context (the entries
//! `k3s.kubeconfig` merged under `name`) from a local kubeconfig, keeping every other entry;
//! `current-context` is cleared when it named the site.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use siteflow_steps_kube::kubeconfig_file::{default_merge_target, read_yaml, update_locked};
use std::path::PathBuf;

/// Input of `k3s.kubeconfig-forget`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigForgetInput {
    /// The name `k3s.kubeconfig` gave the cluster, user and context.
    pub name: String,
    /// The kubeconfig (default: `$KUBECONFIG`'s first file, else `~/.kube/config`).
    pub kubeconfig: Option<String>,
}

/// Output of `k3s.kubeconfig-forget`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KubeconfigForgetOutput {
    /// The kubeconfig the entries are gone from.
    pub kubeconfig: String,
}

/// The step kind.
pub struct K3sKubeconfigForget;

fn path(input: &KubeconfigForgetInput, cx: &StepContext) -> PathBuf {
    match &input.kubeconfig {
        Some(p) if PathBuf::from(p).is_absolute() => PathBuf::from(p),
        Some(p) => cx.working_dir.join(p),
        None => default_merge_target(),
    }
}

/// Whether `cfg` has an entry named `name`.
fn mentions(cfg: &Value, name: &str) -> bool {
    ["clusters", "users", "contexts"].iter().any(|k| {
        cfg[*k]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["name"] == name))
    })
}

/// `cfg` without the entries named `name`.
pub fn forget(mut cfg: Value, name: &str) -> Value {
    for k in ["clusters", "users", "contexts"] {
        if let Some(l) = cfg[k].as_array_mut() {
            l.retain(|e| e["name"] != name);
        }
    }
    if cfg["current-context"] == name {
        cfg["current-context"] = json!("");
    }
    cfg
}

impl Step for K3sKubeconfigForget {
    const KIND: &'static str = "k3s.kubeconfig-forget";
    type Input = KubeconfigForgetInput;
    type Output = KubeconfigForgetOutput;

    fn description(&self) -> &'static str {
        "Removes a site's cluster, user and context from a local kubeconfig"
    }

    fn validate(&self, input: &KubeconfigForgetInput) -> Result<(), StepError> {
        if input.name.is_empty() {
            return Err(crate::host::invalid("name is empty"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &KubeconfigForgetInput,
    ) -> Result<Observed<KubeconfigForgetOutput>, StepError> {
        let p = path(input, cx);
        match read_yaml(&p)? {
            Some(cfg) if mentions(&cfg, &input.name) => Ok(Observed::missing()),
            _ => Ok(Observed::Satisfied(KubeconfigForgetOutput {
                kubeconfig: p.display().to_string(),
            })),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &KubeconfigForgetInput,
    ) -> Result<Progress<KubeconfigForgetOutput>, StepError> {
        let p = path(input, cx);
        update_locked(&p, |cfg| cfg.map(|c| forget(c, &input.name)))?;
        cx.info(&format!("removed {} from {}", input.name, p.display()));
        Ok(Progress::Done(KubeconfigForgetOutput {
            kubeconfig: p.display().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_only_the_sites_entries() {
        let cfg = json!({
            "clusters": [{"name": "a"}, {"name": "b"}],
            "users": [{"name": "a"}, {"name": "b"}],
            "contexts": [{"name": "a"}, {"name": "b"}],
            "current-context": "a"
        });
        let out = forget(cfg, "a");
        assert_eq!(out["clusters"], json!([{"name": "b"}]));
        assert_eq!(out["users"], json!([{"name": "b"}]));
        assert_eq!(out["contexts"], json!([{"name": "b"}]));
        assert_eq!(out["current-context"], "");
        assert!(!mentions(&out, "a") && mentions(&out, "b"));
    }
}
