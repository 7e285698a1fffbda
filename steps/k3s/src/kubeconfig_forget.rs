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

/// `cfg` without the site's entries: the contexts `name`, `name-admin` and `name-oidc`
/// (k3s.kubeconfig's OIDC user, azure.aks's admin credential), the clusters and users named
/// so, and the clusters and users those contexts used (AKS names its users
/// `clusterUser_<group>_<cluster>`) unless another context still uses them.
pub fn forget(mut cfg: Value, name: &str) -> Value {
    let names = [
        name.to_string(),
        format!("{name}-admin"),
        format!("{name}-oidc"),
    ];
    let ours = |e: &Value| names.iter().any(|n| e["name"] == n.as_str());
    let mut clusters: Vec<Value> = names.iter().map(|n| json!(n)).collect();
    let mut users = clusters.clone();
    if let Some(l) = cfg["contexts"].as_array_mut() {
        for c in l.iter().filter(|c| ours(c)) {
            clusters.push(c["context"]["cluster"].clone());
            users.push(c["context"]["user"].clone());
        }
        l.retain(|c| !ours(c));
    }
    let still_used = |key: &str, v: &Value| {
        cfg["contexts"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["context"][key] == *v))
    };
    let clusters: Vec<Value> = clusters
        .into_iter()
        .filter(|c| !still_used("cluster", c))
        .collect();
    let users: Vec<Value> = users
        .into_iter()
        .filter(|u| !still_used("user", u))
        .collect();
    if let Some(l) = cfg["clusters"].as_array_mut() {
        l.retain(|e| !clusters.contains(&e["name"]));
    }
    if let Some(l) = cfg["users"].as_array_mut() {
        l.retain(|e| !users.contains(&e["name"]));
    }
    if names.iter().any(|n| cfg["current-context"] == n.as_str()) {
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
        match read_yaml(&p).await? {
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
        let name = input.name.clone();
        update_locked(&p, move |cfg| cfg.map(|c| forget(c, &name))).await?;
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

    #[test]
    fn forgets_an_aks_context_with_its_differently_named_user_and_keeps_shared_entries() {
        let cfg = json!({
            "clusters": [{"name": "aks"}, {"name": "shared"}],
            "users": [{"name": "clusterUser_rg-aks_aks"}, {"name": "clusterAdmin_rg-aks_aks"}, {"name": "u"}],
            "contexts": [
                {"name": "aks", "context": {"cluster": "aks", "user": "clusterUser_rg-aks_aks"}},
                {"name": "aks-admin", "context": {"cluster": "aks", "user": "clusterAdmin_rg-aks_aks"}},
                {"name": "other", "context": {"cluster": "shared", "user": "u"}}
            ],
            "current-context": "aks-admin"
        });
        let out = forget(cfg, "aks");
        assert_eq!(out["clusters"], json!([{"name": "shared"}]));
        assert_eq!(out["users"], json!([{"name": "u"}]));
        assert_eq!(out["contexts"].as_array().unwrap().len(), 1);
        assert_eq!(out["current-context"], "");
    }
}
