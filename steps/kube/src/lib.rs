//! siteflow step kinds that act on any Kubernetes cluster through a kubeconfig (an existing,
//! non-Azure cluster: seed 002): `kube.apply` (server-side apply of manifests) and
//! `kube.service-account-token` (a service account bound to a cluster role, its long-lived
//! token Secret, and the token as a secret output). [`KubeClient`] is the client other step
//! crates use for their kubeconfig targets.

mod client;
mod exec;
pub mod kubeconfig_file;

pub use client::{FIELD_MANAGER, KubeClient, KubeconfigTarget, holds};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_step::{DynStep, Observed, Progress, Secret, Step, StepContext, StepError};
use std::sync::Arc;
use std::time::Duration;

/// The kube step kinds.
pub fn steps() -> Vec<Arc<dyn DynStep>> {
    vec![Arc::new(KubeApply), Arc::new(KubeServiceAccountToken)]
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

/// Parses manifests (YAML documents, or JSON) into objects.
pub fn parse_manifests(manifests: &[String]) -> Result<Vec<Value>, StepError> {
    let mut out = Vec::new();
    for (i, text) in manifests.iter().enumerate() {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| invalid(format!("manifests[{i}]: not YAML: {e}")))?;
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            if d.get("kind").and_then(Value::as_str).is_none()
                || d.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_none()
                || d.get("apiVersion").and_then(Value::as_str).is_none()
            {
                return Err(invalid(format!(
                    "manifests[{i}]: every object needs apiVersion, kind and metadata.name"
                )));
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// Input of `kube.apply`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeApplyInput {
    /// The cluster.
    pub kubeconfig: KubeconfigTarget,
    /// YAML (multi-document) or JSON manifests.
    pub manifests: Vec<String>,
}

/// Output of `kube.apply`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KubeApplyOutput {
    /// `Kind/name` of every object applied.
    pub objects: Vec<String>,
}

/// `kube.apply`.
pub struct KubeApply;

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })
        .collect()
}

impl Step for KubeApply {
    const KIND: &'static str = "kube.apply";
    type Input = KubeApplyInput;
    type Output = KubeApplyOutput;

    fn description(&self) -> &'static str {
        "Server-side apply manifests to a cluster through a kubeconfig"
    }

    fn validate(&self, input: &KubeApplyInput) -> Result<(), StepError> {
        input.kubeconfig.validate()?;
        parse_manifests(&input.manifests).map(|_| ())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &KubeApplyInput,
    ) -> Result<Observed<KubeApplyOutput>, StepError> {
        let objects = parse_manifests(&input.manifests)?;
        let client = KubeClient::new(cx, &input.kubeconfig).await?;
        for o in &objects {
            match client.get(o).await? {
                Some(live) if holds(o, &live) => {}
                _ => {
                    return Ok(Observed::NotSatisfied {
                        reason: Some(format!("{} differs", names(std::slice::from_ref(o))[0])),
                    });
                }
            }
        }
        Ok(Observed::Satisfied(KubeApplyOutput {
            objects: names(&objects),
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &KubeApplyInput,
    ) -> Result<Progress<KubeApplyOutput>, StepError> {
        let objects = parse_manifests(&input.manifests)?;
        let client = KubeClient::new(cx, &input.kubeconfig).await?;
        for o in &objects {
            client.apply(o).await?;
        }
        Ok(Progress::Done(KubeApplyOutput {
            objects: names(&objects),
        }))
    }
}

fn kube_system() -> String {
    "kube-system".into()
}
fn admin_name() -> String {
    "siteflow-admin".into()
}
fn cluster_admin() -> String {
    "cluster-admin".into()
}

/// Input of `kube.service-account-token`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeServiceAccountTokenInput {
    /// The cluster.
    pub kubeconfig: KubeconfigTarget,
    /// The service account's namespace.
    #[serde(default = "kube_system")]
    pub namespace: String,
    /// The service account's name.
    #[serde(default = "admin_name")]
    pub name: String,
    /// The cluster role bound to it.
    #[serde(default = "cluster_admin")]
    pub cluster_role: String,
}

/// Output of `kube.service-account-token`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KubeServiceAccountTokenOutput {
    /// The service account (`namespace/name`).
    pub service_account: String,
    /// The token Secret's name.
    pub secret_name: String,
    /// The long-lived token (a secret output: never stored; read again on resume).
    pub token: Secret<String>,
    /// The API server's URL.
    pub server: String,
}

/// `kube.service-account-token`.
pub struct KubeServiceAccountToken;

fn account_objects(input: &KubeServiceAccountTokenInput) -> Vec<Value> {
    let (ns, name) = (&input.namespace, &input.name);
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("{name}-{}", input.cluster_role)},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": input.cluster_role},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
               "metadata": {"name": format!("{name}-token"), "namespace": ns,
                            "annotations": {"kubernetes.io/service-account.name": name}}}),
    ]
}

impl KubeServiceAccountToken {
    /// The token, when every object is in place and the token controller has filled it.
    async fn read(
        &self,
        cx: &StepContext,
        client: &KubeClient,
        input: &KubeServiceAccountTokenInput,
    ) -> Result<Result<KubeServiceAccountTokenOutput, String>, StepError> {
        let objects = account_objects(input);
        for o in &objects[..2] {
            match client.get(o).await? {
                Some(live) if holds(o, &live) => {}
                _ => {
                    return Ok(Err(format!(
                        "{} differs",
                        names(std::slice::from_ref(o))[0]
                    )));
                }
            }
        }
        let Some(secret) = client.get(&objects[2]).await? else {
            return Ok(Err("the token Secret is missing".into()));
        };
        let Some(token) = secret
            .pointer("/data/token")
            .and_then(Value::as_str)
            .and_then(|t| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(t).ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| !t.is_empty())
        else {
            return Ok(Err(
                "the token controller has not filled the Secret yet".into()
            ));
        };
        cx.add_secret(&token);
        Ok(Ok(KubeServiceAccountTokenOutput {
            service_account: format!("{}/{}", input.namespace, input.name),
            secret_name: format!("{}-token", input.name),
            token: Secret::new(token),
            server: client.server().to_string(),
        }))
    }
}

impl Step for KubeServiceAccountToken {
    const KIND: &'static str = "kube.service-account-token";
    type Input = KubeServiceAccountTokenInput;
    type Output = KubeServiceAccountTokenOutput;

    fn description(&self) -> &'static str {
        "A service account bound to a cluster role, its token Secret, and the token (a secret output)"
    }

    fn validate(&self, input: &KubeServiceAccountTokenInput) -> Result<(), StepError> {
        input.kubeconfig.validate()?;
        if input.name.is_empty() || input.namespace.is_empty() || input.cluster_role.is_empty() {
            return Err(invalid(
                "`name`, `namespace` and `cluster_role` must not be empty",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &KubeServiceAccountTokenInput,
    ) -> Result<Observed<KubeServiceAccountTokenOutput>, StepError> {
        let client = KubeClient::new(cx, &input.kubeconfig).await?;
        Ok(match self.read(cx, &client, input).await? {
            Ok(out) => Observed::Satisfied(out),
            Err(why) => Observed::NotSatisfied { reason: Some(why) },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &KubeServiceAccountTokenInput,
    ) -> Result<Progress<KubeServiceAccountTokenOutput>, StepError> {
        let client = KubeClient::new(cx, &input.kubeconfig).await?;
        for o in account_objects(input) {
            client.apply(&o).await?;
        }
        Ok(match self.read(cx, &client, input).await? {
            Ok(out) => Progress::Done(out),
            Err(why) => {
                cx.info(&format!("waiting: {why}"));
                Progress::Wait {
                    recheck_after: Duration::from_millis(500),
                }
            }
        })
    }
}
