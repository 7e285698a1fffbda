//! `k3s.kubeconfig`: fetches a server's admin kubeconfig, points it at a reachable address,
//! names its cluster, user and context, and writes it to a 0600 file and/or merges it into
//! the local kubeconfig, replacing only same-named entries.

use crate::host::{KUBECONFIG, invalid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use siteflow_steps_kube::kubeconfig_file::{
    contains, default_merge_target, merge_locked, read_yaml, write_yaml,
};
use std::path::PathBuf;

/// Input of `k3s.kubeconfig`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sKubeconfigInput {
    /// The server.
    pub ssh: SshTargetInput,
    /// The address clients reach the API server at (default: the SSH host).
    #[serde(default)]
    pub server_address: Option<String>,
    /// The API server port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Name of the cluster, user and context (default: the site name, else `default`).
    #[serde(default)]
    pub name: Option<String>,
    /// Write the kubeconfig on its own to this local file (0600).
    #[serde(default)]
    pub path: Option<String>,
    /// Merge into the local kubeconfig (`merge_into`, else `$KUBECONFIG`, else `~/.kube/config`).
    #[serde(default = "default_true")]
    pub merge: bool,
    /// The kubeconfig to merge into.
    #[serde(default)]
    pub merge_into: Option<String>,
    /// Also add a user and context `{name}-oidc` that log in through an OIDC provider
    /// (Microsoft Entra ID) with the `kubectl oidc-login` plugin (int128/kubelogin), for API
    /// servers set up with `--oidc-*` flags.
    #[serde(default)]
    pub oidc_login: Option<OidcLogin>,
}

/// A `kubectl oidc-login get-token` exec user (the form int128/kubelogin documents; not
/// Azure's `kubelogin`, which takes other flags).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcLogin {
    /// The issuer (`https://sts.windows.net/<tenant>/` for Entra ID).
    pub issuer_url: String,
    /// The client (application) id the API server trusts.
    pub client_id: String,
    /// More `oidc-login get-token` arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// The `{name}-oidc` user and context for `login`, added to a renamed kubeconfig.
fn add_oidc_user(cfg: &mut Value, name: &str, login: &OidcLogin) {
    let user = format!("{name}-oidc");
    let mut args = vec![
        json!("oidc-login"),
        json!("get-token"),
        json!(format!("--oidc-issuer-url={}", login.issuer_url)),
        json!(format!("--oidc-client-id={}", login.client_id)),
    ];
    args.extend(login.extra_args.iter().map(|a| json!(a)));
    let exec = json!({
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "kubectl",
        "args": args,
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": false
    });
    if let Some(users) = cfg["users"].as_array_mut() {
        users.push(json!({"name": user, "user": {"exec": exec}}));
    }
    if let Some(contexts) = cfg["contexts"].as_array_mut() {
        contexts.push(json!({"name": user, "context": {"cluster": name, "user": user}}));
    }
}

fn default_port() -> u16 {
    6443
}

fn default_true() -> bool {
    true
}

/// Output of `k3s.kubeconfig`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sKubeconfigOutput {
    /// The context name.
    pub context: String,
    /// The API server URL written.
    pub server: String,
    /// The standalone file, or empty.
    pub path: String,
    /// The kubeconfig merged into, or empty.
    pub merged_into: String,
}

/// The `k3s.kubeconfig` kind.
pub struct K3sKubeconfig {
    pool: StepPool,
}

impl K3sKubeconfig {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

struct Plan {
    name: String,
    server: String,
    config: Value,
    path: Option<PathBuf>,
    merge_into: Option<PathBuf>,
}

fn bad_kubeconfig(e: impl std::fmt::Display) -> StepError {
    StepError::retryable(
        "KubeconfigInvalid",
        format!("the server's {KUBECONFIG} is not a kubeconfig: {e}"),
    )
}

/// Renames the first cluster, user and context to `name` and points the cluster at `server`.
fn rename(mut cfg: Value, name: &str, server: &str) -> Result<Value, StepError> {
    let mut cluster = cfg["clusters"][0].clone();
    let mut user = cfg["users"][0].clone();
    let mut context = cfg["contexts"][0].clone();
    if !cluster.is_object() || !user.is_object() || !context.is_object() {
        return Err(bad_kubeconfig("no cluster, user or context"));
    }
    cluster["name"] = json!(name);
    cluster["cluster"]["server"] = json!(server);
    user["name"] = json!(name);
    context["name"] = json!(name);
    context["context"]["cluster"] = json!(name);
    context["context"]["user"] = json!(name);
    cfg["clusters"] = json!([cluster]);
    cfg["users"] = json!([user]);
    cfg["contexts"] = json!([context]);
    cfg["current-context"] = json!(name);
    Ok(cfg)
}

impl K3sKubeconfig {
    async fn plan(&self, cx: &StepContext, input: &K3sKubeconfigInput) -> Result<Plan, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let bytes = remote.read_file(KUBECONFIG).await?.ok_or_else(|| {
            StepError::retryable(
                "KubeconfigMissing",
                format!("{KUBECONFIG} does not exist on {} yet", input.ssh.host),
            )
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let cfg: Value = serde_saphyr::from_str(&text).map_err(bad_kubeconfig)?;
        let name = input
            .name
            .clone()
            .or_else(|| cx.site.clone())
            .unwrap_or_else(|| "default".into());
        let addr = input
            .server_address
            .clone()
            .unwrap_or_else(|| input.ssh.host.clone());
        let host = if addr.contains(':') && !addr.starts_with('[') {
            format!("[{addr}]")
        } else {
            addr
        };
        let server = format!("https://{host}:{}", input.port);
        let mut config = rename(cfg, &name, &server)?;
        if let Some(login) = &input.oidc_login {
            add_oidc_user(&mut config, &name, login);
        }
        Ok(Plan {
            config,
            name,
            server,
            path: input.path.as_deref().map(|p| cx.resolve_path(p)),
            merge_into: input.merge.then(|| {
                input
                    .merge_into
                    .as_deref()
                    .map(|p| cx.resolve_path(p))
                    .unwrap_or_else(default_merge_target)
            }),
        })
    }
}

fn output(plan: &Plan) -> K3sKubeconfigOutput {
    let show = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    K3sKubeconfigOutput {
        context: plan.name.clone(),
        server: plan.server.clone(),
        path: show(&plan.path),
        merged_into: show(&plan.merge_into),
    }
}

impl Step for K3sKubeconfig {
    const KIND: &'static str = "k3s.kubeconfig";
    type Input = K3sKubeconfigInput;
    type Output = K3sKubeconfigOutput;

    fn description(&self) -> &'static str {
        "Fetch a k3s server's kubeconfig, point it at a reachable address, write and/or merge it locally"
    }

    fn validate(&self, input: &K3sKubeconfigInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.path.is_none() && !input.merge {
            return Err(invalid("nothing to do: give `path` or leave `merge` on"));
        }
        if input.name.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("`name` is empty"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sKubeconfigInput,
    ) -> Result<Observed<K3sKubeconfigOutput>, StepError> {
        let plan = match self.plan(cx, input).await {
            Ok(p) => p,
            Err(e) if e.code == "KubeconfigMissing" => {
                return Ok(Observed::NotSatisfied {
                    reason: Some(e.message),
                });
            }
            Err(e) => return Err(e),
        };
        if let Some(p) = &plan.path
            && read_yaml(p).await?.as_ref() != Some(&plan.config)
        {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("{} differs", p.display())),
            });
        }
        if let Some(p) = &plan.merge_into
            && !read_yaml(p)
                .await?
                .is_some_and(|have| contains(&have, &plan.config))
        {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("{} lacks context {}", p.display(), plan.name)),
            });
        }
        Ok(Observed::Satisfied(output(&plan)))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sKubeconfigInput,
    ) -> Result<Progress<K3sKubeconfigOutput>, StepError> {
        let plan = self.plan(cx, input).await?;
        if let Some(p) = &plan.path {
            write_yaml(p, &plan.config).await?;
            cx.info(&format!("wrote {}", p.display()));
        }
        if let Some(p) = &plan.merge_into {
            merge_locked(p, &plan.config).await?;
            cx.info(&format!(
                "merged context {} into {}",
                plan.name,
                p.display()
            ));
        }
        Ok(Progress::Done(output(&plan)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteflow_steps_kube::kubeconfig_file::merge_kubeconfig;

    const K3S_YAML: &str = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n    token: abc\n";

    #[test]
    fn rename_and_merge_keep_other_entries() {
        let cfg: Value = serde_saphyr::from_str(K3S_YAML).unwrap();
        let new = rename(cfg, "edge-7", "https://10.0.1.4:6443").unwrap();
        assert_eq!(
            new["clusters"][0]["cluster"]["server"],
            "https://10.0.1.4:6443"
        );
        assert_eq!(new["contexts"][0]["context"]["user"], "edge-7");
        let existing = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "prod",
            "clusters": [{"name": "prod", "cluster": {"server": "https://p"}},
                         {"name": "edge-7", "cluster": {"server": "https://old"}}],
            "users": [{"name": "prod", "user": {"token": "t"}}],
            "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]
        });
        let merged = merge_kubeconfig(Some(existing), &new);
        assert_eq!(merged["current-context"], "prod");
        assert_eq!(merged["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(merged["clusters"][0]["name"], "prod");
        assert_eq!(
            merged["clusters"][1]["cluster"]["server"],
            "https://10.0.1.4:6443"
        );
        assert!(contains(&merged, &new));
        // Idempotent.
        assert_eq!(merge_kubeconfig(Some(merged.clone()), &new), merged);
    }
}
