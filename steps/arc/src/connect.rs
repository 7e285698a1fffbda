//! `arc.connect`: connects a cluster (a k3s server over SSH, or any cluster with a HelmChart
//! controller through a kubeconfig) to Azure Arc with the OIDC issuer and workload
//! identity, and waits until its agents are connected and the issuer URL is published.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::models::Tags;
use siteflow_azure::{CloudName, Service};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use siteflow_steps_azure::common::{
    AzureConnection, Drive, Pending, cancellable, drive, is_ours, not_owned, owner_tags,
    resource_path,
};
use std::time::Duration;

use crate::onboarding;

/// API version of Microsoft.Kubernetes/connectedClusters (with `oidcIssuerProfile` and
/// `securityProfile.workloadIdentity`).
pub const API: &str = "2026-05-01";
/// API version of the agents' helm settings call.
pub const HELM_SETTINGS_API: &str = "2024-07-01-preview";
/// Where k3s's deploy controller picks up manifests.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// The agents' `HelmChart` (JSON, which is YAML) in k3s's auto-deploy folder.
pub const CHART_FILE: &str = "/var/lib/rancher/k3s/server/manifests/azure-arc.yaml";
const VALUES_SECRET: &str = "azure-arc-onboarding";
const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

fn yes() -> bool {
    true
}
fn k3s() -> String {
    "k3s".into()
}
fn generic() -> String {
    "generic".into()
}
fn stable() -> String {
    "stable".into()
}
fn five_s() -> siteflow_step::Duration {
    std::time::Duration::from_secs(5).into()
}

/// The cluster the agents go into: a k3s server reached over SSH.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sTarget {
    /// A k3s server.
    pub ssh: SshTargetInput,
}

/// Input of `arc.connect`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArcConnectInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// The connected cluster's name.
    pub name: String,
    /// Kubernetes distribution (`k3s`).
    #[serde(default = "k3s")]
    pub distribution: String,
    /// Infrastructure (`generic`, `azure`, …).
    #[serde(default = "generic")]
    pub infrastructure: String,
    /// Publish an OIDC issuer for the cluster.
    #[serde(default = "yes")]
    pub oidc_issuer: bool,
    /// Enable workload identity.
    #[serde(default = "yes")]
    pub workload_identity: bool,
    /// The agents' release train (`stable` or `preview`).
    #[serde(default = "stable")]
    pub release_train: String,
    /// The Arc data plane the helm settings come from (default: the region's, or the
    /// cloud's ARM URL for a custom cloud).
    pub helm_settings_url: Option<String>,
    /// A PEM file of CA certificates the agents trust (`global.proxyCert`; default: the
    /// cloud's `ca_pem_file`).
    pub proxy_cert_file: Option<String>,
    /// The cluster, when it is a k3s server reached over SSH (the agents chart goes into k3s's
    /// auto-deploy folder).
    #[serde(default)]
    pub k3s: Option<K3sTarget>,
    /// The cluster, when it is reached through a kubeconfig (an existing cluster): the values
    /// Secret and the `HelmChart` are applied through the API, so the cluster needs a
    /// `helm.cattle.io/v1` HelmChart controller (k3s and RKE2 have one).
    #[serde(default)]
    pub kubeconfig: Option<siteflow_steps_kube::KubeconfigTarget>,
    /// How often to check whether the agents connected.
    #[serde(default = "five_s")]
    pub interval: siteflow_step::Duration,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over a cluster resource that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `arc.connect`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArcConnectOutput {
    /// The connected cluster's resource id.
    pub id: String,
    /// The OIDC issuer URL (with its trailing slash), when the issuer is enabled.
    pub issuer_url: Option<String>,
    /// `Connected`.
    pub connectivity_status: String,
    /// The agents' version.
    pub agent_version: Option<String>,
    /// The Kubernetes version the agents reported.
    pub kubernetes_version: Option<String>,
    /// The cluster identity's principal id.
    pub principal_id: Option<String>,
}

/// The `arc.connect` kind.
pub struct ArcConnect {
    pool: StepPool,
}

impl ArcConnect {
    /// The kind; its SSH targets go through `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

fn output(v: &Value) -> ArcConnectOutput {
    ArcConnectOutput {
        id: str_at(v, "/id").unwrap_or_default().to_string(),
        issuer_url: str_at(v, "/properties/oidcIssuerProfile/issuerUrl").map(str::to_string),
        connectivity_status: str_at(v, "/properties/connectivityStatus")
            .unwrap_or_default()
            .to_string(),
        agent_version: str_at(v, "/properties/agentVersion").map(str::to_string),
        kubernetes_version: str_at(v, "/properties/kubernetesVersion").map(str::to_string),
        principal_id: str_at(v, "/identity/principalId").map(str::to_string),
    }
}

/// Whether the live resource has what the input asks for (the key aside).
fn settings_match(input: &ArcConnectInput, v: &Value) -> Option<String> {
    let flag = |p: &str| v.pointer(p).and_then(Value::as_bool).unwrap_or(false);
    if flag("/properties/oidcIssuerProfile/enabled") != input.oidc_issuer {
        return Some("oidcIssuerProfile.enabled differs".into());
    }
    if flag("/properties/securityProfile/workloadIdentity/enabled") != input.workload_identity {
        return Some("securityProfile.workloadIdentity.enabled differs".into());
    }
    None
}

/// Connected, and the issuer URL is out when asked for.
fn connected(input: &ArcConnectInput, v: &Value) -> bool {
    str_at(v, "/properties/connectivityStatus") == Some("Connected")
        && (!input.oidc_issuer || str_at(v, "/properties/oidcIssuerProfile/issuerUrl").is_some())
}

/// Helm's `--set a.b=c` keys as nested values.
fn nest(dotted: &serde_json::Map<String, Value>) -> Value {
    let mut out = json!({});
    for (k, v) in dotted {
        let mut at = &mut out;
        let parts: Vec<&str> = k.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            if !at.get(*p).is_some_and(Value::is_object) {
                at[*p] = json!({});
            }
            at = &mut at[*p];
        }
        at[parts[parts.len() - 1]] = v.clone();
    }
    out
}

impl ArcConnect {
    async fn get(
        &self,
        cx: &StepContext,
        input: &ArcConnectInput,
    ) -> Result<(siteflow_azure::ArmClient, String, Option<Value>), StepError> {
        let client = input.azure.client()?;
        let url = client.arm_url(
            &resource_path(
                client.subscription(),
                &input.resource_group,
                &format!("Microsoft.Kubernetes/connectedClusters/{}", input.name),
            ),
            API,
        );
        let live: Option<Value> = cancellable(cx, client.get_opt(&url)).await?;
        Ok((client, url, live))
    }

    fn helm_settings_url(
        &self,
        input: &ArcConnectInput,
        client: &siteflow_azure::ArmClient,
    ) -> String {
        let base = match &input.helm_settings_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if input.azure.cloud.name == CloudName::Custom => {
                client.endpoints().arm_url.clone()
            }
            None => config_dp_endpoint(&client.endpoints().authority_host, &input.location),
        };
        format!(
            "{base}/azure-arc-k8sagents/GetHelmSettings?api-version={HELM_SETTINGS_API}&releaseTrain={}",
            input.release_train
        )
    }

    /// Installs (or keeps) the agents chart on the k3s server.
    async fn install_agents(
        &self,
        cx: &StepContext,
        input: &ArcConnectInput,
        client: &siteflow_azure::ArmClient,
        cluster_id: &str,
        key: &onboarding::OnboardingKey,
    ) -> Result<(), StepError> {
        let settings = cancellable(
            cx,
            client.send(
                Service::Arm,
                "POST",
                &self.helm_settings_url(input, client),
                None,
            ),
        )
        .await?
        .json_value()
        .unwrap_or_default();
        let repo = str_at(&settings, "/repositoryPath").ok_or_else(|| {
            StepError::retryable("HelmSettings", "the helm settings have no repositoryPath")
        })?;
        let (chart, version) = repo.rsplit_once(':').unwrap_or((repo, ""));
        let mut values = nest(
            settings
                .get("helmValuesContent")
                .and_then(Value::as_object)
                .unwrap_or(&serde_json::Map::new()),
        );
        let sub = client.subscription().to_string();
        values["global"]["subscriptionId"] = json!(sub);
        values["global"]["resourceGroupName"] = json!(input.resource_group);
        values["global"]["resourceName"] = json!(input.name);
        values["global"]["location"] = json!(input.location);
        values["global"]["resourceId"] = json!(cluster_id);
        values["global"]["kubernetesDistro"] = json!(input.distribution);
        values["global"]["kubernetesInfra"] = json!(input.infrastructure);
        values["global"]["isProxyEnabled"] = json!(false);
        // The private values travel in a Secret applied over stdin.
        let mut private = json!({"global": {"onboardingPrivateKey": key.private_pem.expose()}});
        let proxy_cert = input
            .proxy_cert_file
            .clone()
            .or_else(|| input.azure.cloud.ca_pem_file.clone());
        if let Some(p) = proxy_cert {
            let path = cx.resolve_path(&p);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                StepError::permanent("SourceUnreadable", format!("read {}: {e}", path.display()))
            })?;
            private["global"]["proxyCert"] = json!(pem);
        }
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": VALUES_SECRET, "namespace": "kube-system"},
            "data": {"values.yaml": base64::engine::general_purpose::STANDARD.encode(private.to_string())}
        });
        let chart_doc = json!({
            "apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
            "metadata": {"name": "azure-arc", "namespace": "kube-system"},
            "spec": {
                "chart": format!("oci://{chart}"),
                "version": version,
                "targetNamespace": "azure-arc-release",
                "createNamespace": true,
                "valuesContent": serde_json::to_string_pretty(&values).unwrap_or_default(),
                "valuesSecrets": [{"name": VALUES_SECRET, "keys": ["values.yaml"]}]
            }
        });
        let k3s = match (&input.k3s, &input.kubeconfig) {
            (Some(k3s), _) => k3s,
            (None, Some(target)) => {
                let kube = siteflow_steps_kube::KubeClient::new(cx, target).await?;
                kube.resource("helm.cattle.io/v1", "HelmChart")
                    .await
                    .map_err(|e| {
                        StepError::permanent(
                            "NoHelmController",
                            format!("{}: the cluster has no HelmChart controller (k3s and RKE2 have one), so siteflow cannot install the Arc agents chart without helm", e.message),
                        )
                    })?;
                kube.apply(&secret).await?;
                let live = kube.get(&chart_doc).await?;
                if !live
                    .as_ref()
                    .is_some_and(|l| siteflow_steps_kube::holds(&chart_doc, l))
                {
                    cx.info("applying the Arc agents HelmChart");
                    kube.apply(&chart_doc).await?;
                }
                return Ok(());
            }
            (None, None) => return Err(invalid("give `k3s` or `kubeconfig`")),
        };
        let remote = self.pool.remote(cx, &k3s.ssh, true).await?;
        let req = remote
            .request(format!(
                "KUBECONFIG={} k3s kubectl apply --server-side --field-manager=siteflow -f -",
                shell_quote(KUBECONFIG)
            ))
            .stdin(secret.to_string().into_bytes());
        remote.exec(&req).await?.check(&remote.target)?;
        // JSON is YAML: k3s's deploy controller reads it as is.
        let text = format!(
            "{}\n",
            serde_json::to_string_pretty(&chart_doc).unwrap_or_default()
        );
        let want = siteflow_step::sha256_hex(text.as_bytes());
        if remote.file_state(CHART_FILE).await?.map(|s| s.sha256) != Some(want) {
            cx.info(&format!("writing {CHART_FILE} (the Arc agents chart)"));
            remote
                .run_quiet(&format!("mkdir -p {}", shell_quote(MANIFESTS_DIR)))
                .await?;
            remote
                .write_file(CHART_FILE, text.as_bytes(), 0o600, Some("root:root"))
                .await?;
        }
        Ok(())
    }
}

impl Step for ArcConnect {
    const KIND: &'static str = "arc.connect";
    type Input = ArcConnectInput;
    type Output = ArcConnectOutput;

    fn description(&self) -> &'static str {
        "Connect a cluster (k3s over SSH, or a kubeconfig) to Azure Arc (OIDC issuer, workload identity) and wait until it is Connected"
    }

    fn validate(&self, input: &ArcConnectInput) -> Result<(), StepError> {
        match (&input.k3s, &input.kubeconfig) {
            (Some(k3s), None) => k3s.ssh.validate()?,
            (None, Some(target)) => target.validate()?,
            _ => {
                return Err(invalid(
                    "give exactly one cluster target: `k3s` (a server over SSH) or `kubeconfig`",
                ));
            }
        }
        if input.name.is_empty() || input.resource_group.is_empty() {
            return Err(invalid("`name` and `resource_group` must not be empty"));
        }
        if !["stable", "preview"].contains(&input.release_train.as_str()) {
            return Err(invalid("`release_train` is `stable` or `preview`"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ArcConnectInput,
    ) -> Result<Observed<ArcConnectOutput>, StepError> {
        let (_, _, live) = self.get(cx, input).await?;
        let Some(live) = live else {
            return Ok(Observed::missing());
        };
        let tags: Option<Tags> = live
            .get("tags")
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        if !input.adopt_untagged && !is_ours(cx, tags.as_ref()) {
            return Err(not_owned(
                "connected cluster",
                str_at(&live, "/id").unwrap_or(""),
            ));
        }
        if let Some(why) = settings_match(input, &live) {
            return Ok(Observed::NotSatisfied { reason: Some(why) });
        }
        if !connected(input, &live) {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!(
                    "connectivityStatus is {}",
                    str_at(&live, "/properties/connectivityStatus").unwrap_or("unknown")
                )),
            });
        }
        Ok(Observed::Satisfied(output(&live)))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ArcConnectInput,
    ) -> Result<Progress<ArcConnectOutput>, StepError> {
        let interval = input.interval.get();
        let key = onboarding::load_or_create(cx).await?;
        let (client, url, live) = self.get(cx, input).await?;
        let mut pending = Pending::load(cx);
        let key_matches = live
            .as_ref()
            .and_then(|v| str_at(v, "/properties/agentPublicKeyCertificate"))
            == Some(key.public_b64.as_str());
        let needs_put = pending.ops.contains_key("cluster")
            || live
                .as_ref()
                .is_none_or(|v| !key_matches || settings_match(input, v).is_some());
        let live = if needs_put {
            let mut tags = live
                .as_ref()
                .and_then(|v| v.get("tags"))
                .and_then(|t| serde_json::from_value::<Tags>(t.clone()).ok())
                .unwrap_or_default();
            tags.extend(owner_tags(cx, &input.tags));
            let body = json!({
                "location": input.location,
                "identity": {"type": "SystemAssigned"},
                "tags": tags,
                "properties": {
                    "agentPublicKeyCertificate": key.public_b64,
                    "distribution": input.distribution,
                    "infrastructure": input.infrastructure,
                    "oidcIssuerProfile": {"enabled": input.oidc_issuer},
                    "securityProfile": {"workloadIdentity": {"enabled": input.workload_identity}}
                }
            });
            match drive(
                cx,
                &client,
                &mut pending,
                "cluster",
                "PUT",
                &url,
                Some(&body),
            )
            .await?
            {
                Drive::Wait(after) => {
                    return Ok(Progress::Wait {
                        recheck_after: after.max(Duration::from_millis(10)),
                    });
                }
                Drive::Done(v) => v,
            }
        } else {
            live
        };
        let live = match live {
            Some(v) if v.get("id").is_some() => v,
            _ => cancellable(cx, client.get_opt::<Value>(&url))
                .await?
                .ok_or_else(|| {
                    StepError::retryable("NotFound", "the connected cluster disappeared")
                })?,
        };
        if connected(input, &live) {
            return Ok(Progress::Done(output(&live)));
        }
        let id = str_at(&live, "/id").unwrap_or_default().to_string();
        // The agents are installed once per cluster, key and settings: the rechecks while
        // they connect only read the cluster.
        let installed = siteflow_step::sha256_hex(
            json!([
                id,
                key.public_b64,
                self.helm_settings_url(input, &client),
                input.distribution,
                input.infrastructure,
                input.proxy_cert_file,
                input.k3s.as_ref().map(|k| &k.ssh.host),
                input.kubeconfig.as_ref().map(|k| (&k.path, &k.context)),
            ])
            .to_string()
            .as_bytes(),
        );
        if pending.done.get("agents") != Some(&installed) {
            self.install_agents(cx, input, &client, &id, &key).await?;
            pending.done.insert("agents".into(), installed);
            pending.save(cx).await?;
        }
        cx.info(&format!(
            "waiting for the Arc agents to connect (connectivityStatus {})",
            str_at(&live, "/properties/connectivityStatus").unwrap_or("unknown")
        ));
        Ok(Progress::Wait {
            recheck_after: interval,
        })
    }
}

/// Arc's configuration data plane in the cloud whose Entra authority is `authority_host`,
/// as `az connectedk8s` derives it: the authority's top-level domain picks the cloud
/// (`login.microsoftonline.com` → `https://<region>.dp.kubernetesconfiguration.azure.com`,
/// `.us` for US Government, `.cn` for China).
fn config_dp_endpoint(authority_host: &str, location: &str) -> String {
    let host = authority_host
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let tld = host
        .rsplit('.')
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or("com");
    format!(
        "https://{}.dp.kubernetesconfiguration.azure.{tld}",
        location.replace(' ', "").to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_data_plane_follows_the_cloud() {
        for (authority, endpoint) in [
            (
                "https://login.microsoftonline.com",
                "https://westeurope.dp.kubernetesconfiguration.azure.com",
            ),
            (
                "https://login.microsoftonline.us",
                "https://westeurope.dp.kubernetesconfiguration.azure.us",
            ),
            (
                "https://login.chinacloudapi.cn/",
                "https://westeurope.dp.kubernetesconfiguration.azure.cn",
            ),
        ] {
            assert_eq!(config_dp_endpoint(authority, "West Europe"), endpoint);
        }
    }

    #[test]
    fn dotted_helm_values_nest() {
        let m = json!({"global.agentDataPlaneEndpoint": "https://x", "global.a.b": 1, "top": true});
        let v = nest(m.as_object().unwrap());
        assert_eq!(v["global"]["agentDataPlaneEndpoint"], "https://x");
        assert_eq!(v["global"]["a"]["b"], 1);
        assert_eq!(v["top"], true);
    }
}
