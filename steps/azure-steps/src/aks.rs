//! `azure.aks`: an AKS managed cluster (seed 004's target, without a Cluster API management
//! cluster): a System pool and User pools, the OIDC issuer and workload identity, managed
//! Microsoft Entra ID (admin groups, Azure RBAC) with local accounts disabled, and the cluster's
//! credentials merged into the local kubeconfig (a `kubelogin` user for Entra clusters, the
//! admin account's token otherwise). Pools are scaled through `agentPools` PUTs, as AKS
//! recommends; a second run with nothing changed writes nothing to ARM.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::Service;
use siteflow_azure::models::Tags;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use siteflow_steps_kube::kubeconfig_file::{default_merge_target, merge_locked, read_yaml};

use crate::common::{
    AzureConnection, Drive, Pending, adopted_tags, cancellable, drive, is_ours, not_owned,
    owner_tags, provisioning_state, resource_path, same,
};

/// api-version of Microsoft.ContainerService (azure-mgmt-containerservice 41.8).
pub const API: &str = "2026-08-01";

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

fn one() -> u32 {
    1
}
fn system() -> String {
    "system".into()
}
fn default_size() -> String {
    "Standard_D2s_v5".into()
}
fn yes() -> bool {
    true
}

/// An agent pool.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolInput {
    /// Name: 1–12 lower-case letters and digits, starting with a letter.
    #[serde(default = "system")]
    pub name: String,
    /// Nodes.
    #[serde(default = "one")]
    pub count: u32,
    /// VM size of the nodes.
    #[serde(default = "default_size")]
    pub vm_size: String,
    /// Labels on every node.
    #[serde(default)]
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Taints on every node (`key=value:NoSchedule`).
    #[serde(default)]
    pub node_taints: Vec<String>,
}

impl Default for PoolInput {
    fn default() -> Self {
        Self {
            name: system(),
            count: 1,
            vm_size: default_size(),
            node_labels: Default::default(),
            node_taints: Vec::new(),
        }
    }
}

/// Managed Microsoft Entra ID integration.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AadInput {
    /// Entra groups whose members are cluster admins (a management tool's service principal
    /// goes in one of them when local accounts are disabled).
    #[serde(default)]
    pub admin_group_object_ids: Vec<String>,
    /// Authorize with Azure RBAC role assignments instead of Kubernetes RBAC alone.
    #[serde(default)]
    pub azure_rbac: bool,
    /// The tenant (default: the subscription's).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Where the cluster's credentials go.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigOut {
    /// The kubeconfig to merge into (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[serde(default)]
    pub merge_into: Option<String>,
    /// The context's name (default: the cluster's name; `-admin` appended for `admin`).
    #[serde(default)]
    pub context: Option<String>,
    /// The local admin account's credential (`listClusterAdminCredential`) instead of the
    /// user credential; refused by clusters with local accounts disabled.
    #[serde(default)]
    pub admin: bool,
}

/// Input of `azure.aks`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AksInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Cluster name.
    pub name: String,
    /// Azure region.
    pub location: String,
    /// Kubernetes version (`1.33` or `1.33.5`; default: AKS's default).
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    /// DNS prefix of the API server's name (default: the cluster's name).
    #[serde(default)]
    pub dns_prefix: Option<String>,
    /// The System pool (AKS needs one).
    #[serde(default)]
    pub system_pool: PoolInput,
    /// User pools.
    #[serde(default)]
    pub pools: Vec<PoolInput>,
    /// The OIDC issuer (on by default; it cannot be turned off once on).
    #[serde(default = "yes")]
    pub oidc_issuer: bool,
    /// Workload identity (needs the OIDC issuer).
    #[serde(default)]
    pub workload_identity: bool,
    /// Managed Entra ID integration.
    #[serde(default)]
    pub aad: Option<AadInput>,
    /// Disable the local admin account (needs `aad`).
    #[serde(default)]
    pub disable_local_accounts: bool,
    /// Merge the credentials into a kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigOut>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over a cluster that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.aks`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AksOutput {
    /// Resource id.
    pub id: String,
    /// The API server's host name.
    pub fqdn: String,
    /// The service-account issuer (empty without the OIDC issuer): federated credentials for
    /// workload identity name it.
    pub oidc_issuer_url: String,
    /// The resource group of the nodes' resources.
    pub node_resource_group: String,
    /// The Kubernetes version running.
    pub kubernetes_version: String,
    /// The kubelet identity's client id (grant it `AcrPull` on a registry).
    pub kubelet_client_id: String,
    /// The kubelet identity's object id.
    pub kubelet_object_id: String,
    /// The cluster identity's principal id.
    pub principal_id: String,
    /// The kubeconfig context merged (empty when none).
    pub context: String,
    /// The kubeconfig merged into (empty when none).
    pub merged_into: String,
}

/// The step kind.
pub struct AksStep;

fn cluster_url(client: &siteflow_azure::ArmClient, input: &AksInput, rest: &str) -> String {
    client.arm_url(
        &resource_path(
            client.subscription(),
            &input.resource_group,
            &format!(
                "Microsoft.ContainerService/managedClusters/{}{rest}",
                input.name
            ),
        ),
        API,
    )
}

fn pool_profile(p: &PoolInput, mode: &str) -> Value {
    let mut v = json!({
        "name": p.name, "count": p.count, "vmSize": p.vm_size, "mode": mode,
        "osType": "Linux", "type": "VirtualMachineScaleSets",
    });
    if !p.node_labels.is_empty() {
        v["nodeLabels"] = json!(p.node_labels);
    }
    if !p.node_taints.is_empty() {
        v["nodeTaints"] = json!(p.node_taints);
    }
    v
}

/// Every pool with its mode, System first.
fn pools(input: &AksInput) -> Vec<(&PoolInput, &'static str)> {
    std::iter::once((&input.system_pool, "System"))
        .chain(input.pools.iter().map(|p| (p, "User")))
        .collect()
}

fn body(input: &AksInput, tags: Tags) -> Value {
    let mut props = json!({
        "dnsPrefix": input.dns_prefix.clone().unwrap_or_else(|| input.name.clone()),
        "agentPoolProfiles": pools(input).iter().map(|(p, m)| pool_profile(p, m)).collect::<Vec<_>>(),
        "enableRBAC": true,
        "oidcIssuerProfile": {"enabled": input.oidc_issuer},
        "securityProfile": {"workloadIdentity": {"enabled": input.workload_identity}},
        "disableLocalAccounts": input.disable_local_accounts,
    });
    if let Some(v) = &input.kubernetes_version {
        props["kubernetesVersion"] = json!(v);
    }
    if let Some(aad) = &input.aad {
        let mut a = json!({"managed": true, "enableAzureRBAC": aad.azure_rbac,
            "adminGroupObjectIDs": aad.admin_group_object_ids});
        if let Some(t) = &aad.tenant_id {
            a["tenantID"] = json!(t);
        }
        props["aadProfile"] = a;
    }
    json!({
        "location": input.location,
        "tags": tags,
        "identity": {"type": "SystemAssigned"},
        "properties": props,
    })
}

/// What differs between the live cluster and the input (empty: nothing), cluster-level
/// settings and pools apart.
fn differences(input: &AksInput, live: &Value) -> (Vec<String>, Vec<String>) {
    let p = &live["properties"];
    let mut cluster = Vec::new();
    if !same(live["location"].as_str().unwrap_or(""), &input.location) {
        cluster.push("location".to_string());
    }
    if let Some(v) = &input.kubernetes_version {
        let running = p["currentKubernetesVersion"].as_str().unwrap_or("");
        if !(running == v || running.starts_with(&format!("{v}."))) {
            cluster.push(format!("kubernetes version {running} (wanted {v})"));
        }
    }
    let flag = |ptr: &str| p.pointer(ptr).and_then(Value::as_bool).unwrap_or(false);
    if flag("/oidcIssuerProfile/enabled") != input.oidc_issuer {
        cluster.push("OIDC issuer".into());
    }
    if flag("/securityProfile/workloadIdentity/enabled") != input.workload_identity {
        cluster.push("workload identity".into());
    }
    if flag("/disableLocalAccounts") != input.disable_local_accounts {
        cluster.push("local accounts".into());
    }
    match (&input.aad, flag("/aadProfile/managed")) {
        (None, false) => {}
        (Some(a), true) => {
            let groups: Vec<&str> = p
                .pointer("/aadProfile/adminGroupObjectIDs")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut want: Vec<&str> = a
                .admin_group_object_ids
                .iter()
                .map(String::as_str)
                .collect();
            let mut have = groups.clone();
            want.sort_unstable();
            have.sort_unstable();
            if want != have || flag("/aadProfile/enableAzureRBAC") != a.azure_rbac {
                cluster.push("Entra ID settings".into());
            }
        }
        _ => cluster.push("Entra ID integration".into()),
    }
    let live_pools = p["agentPoolProfiles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut pool_diffs = Vec::new();
    for (want, mode) in pools(input) {
        match live_pools.iter().find(|l| l["name"] == want.name.as_str()) {
            None => pool_diffs.push(want.name.clone()),
            Some(l) => {
                let same_pool = l["count"].as_u64() == Some(u64::from(want.count))
                    && l["vmSize"]
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(&want.vm_size))
                    && l["mode"]
                        .as_str()
                        .is_some_and(|m| m.eq_ignore_ascii_case(mode))
                    && l.get("nodeLabels").cloned().unwrap_or(json!({})) == json!(want.node_labels)
                    && l.get("nodeTaints").cloned().unwrap_or(json!([])) == json!(want.node_taints);
                if !same_pool {
                    pool_diffs.push(want.name.clone());
                }
            }
        }
    }
    (cluster, pool_diffs)
}

fn output(live: &Value, context: &str, merged_into: &str) -> AksOutput {
    let p = &live["properties"];
    let s = |ptr: &str| {
        live.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    AksOutput {
        id: s("/id"),
        fqdn: s("/properties/fqdn"),
        oidc_issuer_url: s("/properties/oidcIssuerProfile/issuerURL"),
        node_resource_group: s("/properties/nodeResourceGroup"),
        kubernetes_version: p["currentKubernetesVersion"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        kubelet_client_id: s("/properties/identityProfile/kubeletidentity/clientId"),
        kubelet_object_id: s("/properties/identityProfile/kubeletidentity/objectId"),
        principal_id: s("/identity/principalId"),
        context: context.to_string(),
        merged_into: merged_into.to_string(),
    }
}

/// The context name and the kubeconfig to merge into.
fn target(cx: &StepContext, input: &AksInput) -> Option<(String, std::path::PathBuf)> {
    let k = input.kubeconfig.as_ref()?;
    let context = k.context.clone().unwrap_or_else(|| {
        if k.admin {
            format!("{}-admin", input.name)
        } else {
            input.name.clone()
        }
    });
    let path = k
        .merge_into
        .as_deref()
        .map(|p| cx.resolve_path(p))
        .unwrap_or_else(default_merge_target);
    Some((context, path))
}

/// Whether the kubeconfig has this context, with a cluster that names a server.
async fn merged(path: &std::path::Path, context: &str) -> Result<bool, StepError> {
    let Some(have) = read_yaml(path).await? else {
        return Ok(false);
    };
    let cluster = have["contexts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == context))
        .and_then(|c| c["context"]["cluster"].as_str().map(str::to_string));
    Ok(cluster.is_some_and(|name| {
        have["clusters"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["name"] == name.as_str() && c["cluster"]["server"].is_string())
        })
    }))
}

impl AksStep {
    async fn live(
        &self,
        cx: &StepContext,
        client: &siteflow_azure::ArmClient,
        input: &AksInput,
    ) -> Result<Option<Value>, StepError> {
        let got: Option<Value> =
            cancellable(cx, client.get_opt(&cluster_url(client, input, ""))).await?;
        if let Some(c) = &got {
            let tags: Option<Tags> = serde_json::from_value(c["tags"].clone()).ok();
            if !is_ours(cx, tags.as_ref()) && !input.adopt_untagged {
                return Err(not_owned(
                    "managed cluster",
                    c["id"].as_str().unwrap_or(&input.name),
                ));
            }
        }
        Ok(got)
    }

    /// Fetches the credentials and merges them under `context`.
    async fn merge_credentials(
        &self,
        cx: &StepContext,
        client: &siteflow_azure::ArmClient,
        input: &AksInput,
        context: &str,
        path: &std::path::Path,
    ) -> Result<(), StepError> {
        let admin = input.kubeconfig.as_ref().is_some_and(|k| k.admin);
        let action = if admin {
            "/listClusterAdminCredential"
        } else {
            "/listClusterUserCredential"
        };
        let resp = cancellable(
            cx,
            client.send(
                Service::Arm,
                "POST",
                &cluster_url(client, input, action),
                None,
            ),
        )
        .await?;
        let v: Value = resp.json().map_err(StepError::from)?;
        let encoded = v
            .pointer("/kubeconfigs/0/value")
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::retryable("NoCredential", "AKS returned no kubeconfig"))?;
        let text = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| StepError::retryable("NoCredential", e.to_string()))?;
        let text = String::from_utf8_lossy(&text).to_string();
        let mut cfg: Value = serde_saphyr::from_str(&text)
            .map_err(|e| StepError::retryable("NoCredential", format!("kubeconfig: {e}")))?;
        // The admin token is a secret: never in logs or outputs.
        if let Some(users) = cfg["users"].as_array() {
            for u in users {
                if let Some(t) = u.pointer("/user/token").and_then(Value::as_str) {
                    cx.add_secret(t);
                }
            }
        }
        let cluster_name = cfg["clusters"][0]["name"]
            .as_str()
            .unwrap_or(&input.name)
            .to_string();
        let user_name = cfg["users"][0]["name"].as_str().unwrap_or("").to_string();
        cfg["contexts"] =
            json!([{"name": context, "context": {"cluster": cluster_name, "user": user_name}}]);
        cfg["current-context"] = json!(context);
        merge_locked(path, &cfg).await?;
        cx.info(&format!(
            "merged context {context} into {}",
            path_display(input, cx)
        ));
        Ok(())
    }
}

fn path_display(input: &AksInput, cx: &StepContext) -> String {
    target(cx, input)
        .map(|(_, p)| p.display().to_string())
        .unwrap_or_default()
}

impl Step for AksStep {
    const KIND: &'static str = "azure.aks";
    type Input = AksInput;
    type Output = AksOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) an AKS managed cluster with its pools, OIDC issuer, workload identity and Entra ID; merges its credentials into a kubeconfig"
    }

    fn validate(&self, input: &AksInput) -> Result<(), StepError> {
        let mut names = std::collections::BTreeSet::new();
        for (p, mode) in pools(input) {
            let ok = (1..=12).contains(&p.name.len())
                && p.name.starts_with(|c: char| c.is_ascii_lowercase())
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            if !ok {
                return Err(invalid(format!(
                    "pool name {:?}: 1 to 12 lower-case letters and digits, starting with a letter",
                    p.name
                )));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(format!("pool name {:?} is used twice", p.name)));
            }
            if mode == "System" && p.count == 0 {
                return Err(invalid("the System pool needs at least one node"));
            }
        }
        if input.workload_identity && !input.oidc_issuer {
            return Err(invalid("`workload_identity` needs `oidc_issuer: true`"));
        }
        if input.disable_local_accounts && input.aad.is_none() {
            return Err(invalid(
                "`disable_local_accounts` needs `aad` (managed Entra ID): without local accounts Entra ID is the only way in",
            ));
        }
        if input.disable_local_accounts && input.kubeconfig.as_ref().is_some_and(|k| k.admin) {
            return Err(invalid(
                "`kubeconfig.admin` needs local accounts: drop `admin` (the user credential signs in with kubelogin) or `disable_local_accounts`",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &AksInput,
    ) -> Result<Observed<AksOutput>, StepError> {
        let client = input.azure.client()?;
        let Some(live) = self.live(cx, &client, input).await? else {
            return Ok(Observed::missing());
        };
        let state = provisioning_state(&live).unwrap_or("").to_string();
        if !state.eq_ignore_ascii_case("Succeeded") {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("the managed cluster is {state}")),
            });
        }
        // A write of this step still running (a pool scale: the profiles already say the new
        // count while the nodes join) is not done until its operation ends.
        if let Some(op) = Pending::load(cx).ops.keys().next() {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("its {op} operation is still running")),
            });
        }
        if let Some(pool) = live
            .pointer("/properties/agentPoolProfiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| {
                p["provisioningState"]
                    .as_str()
                    .is_some_and(|s| !s.eq_ignore_ascii_case("Succeeded"))
            })
        {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!(
                    "pool {} is {}",
                    pool["name"].as_str().unwrap_or("?"),
                    pool["provisioningState"].as_str().unwrap_or("?")
                )),
            });
        }
        let (cluster, pool_diffs) = differences(input, &live);
        if !cluster.is_empty() || !pool_diffs.is_empty() {
            let mut all = cluster;
            all.extend(pool_diffs.iter().map(|p| format!("pool {p}")));
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("differs: {}", all.join(", "))),
            });
        }
        let (context, merged_into) = match target(cx, input) {
            Some((context, path)) => {
                if !merged(&path, &context).await? {
                    return Ok(Observed::NotSatisfied {
                        reason: Some(format!("{} lacks context {context}", path.display())),
                    });
                }
                (context, path.display().to_string())
            }
            None => Default::default(),
        };
        Ok(Observed::Satisfied(output(&live, &context, &merged_into)))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &AksInput,
    ) -> Result<Progress<AksOutput>, StepError> {
        let client = input.azure.client()?;
        let mut pending = Pending::load(cx);
        let url = cluster_url(&client, input, "");
        let live = if pending.ops.is_empty() {
            self.live(cx, &client, input).await?
        } else {
            None
        };
        // The cluster: created, or updated when a cluster-level setting differs.
        let cluster_write = match &live {
            _ if pending.ops.contains_key("cluster") => true,
            None => pending.ops.is_empty(),
            Some(l) => !differences(input, l).0.is_empty(),
        };
        if cluster_write {
            let tags = match &live {
                Some(l) => adopted_tags(
                    cx,
                    serde_json::from_value(l["tags"].clone()).unwrap_or_default(),
                    &input.tags,
                ),
                None => owner_tags(cx, &input.tags),
            };
            match drive(
                cx,
                &client,
                &mut pending,
                "cluster",
                "PUT",
                &url,
                Some(&body(input, tags)),
            )
            .await?
            {
                Drive::Wait(after) => {
                    return Ok(Progress::Wait {
                        recheck_after: after,
                    });
                }
                Drive::Done(_) => {}
            }
        }
        // Pools that differ: one agentPools PUT each.
        let live: Value = cancellable(cx, client.send(Service::Arm, "GET", &url, None))
            .await?
            .json()
            .map_err(StepError::from)?;
        let (_, pool_diffs) = differences(input, &live);
        let in_flight: Vec<String> = pending
            .ops
            .keys()
            .filter_map(|k| k.strip_prefix("pool-").map(str::to_string))
            .collect();
        for (p, mode) in pools(input) {
            if !pool_diffs.contains(&p.name) && !in_flight.contains(&p.name) {
                continue;
            }
            let mut profile = pool_profile(p, mode);
            if let Some(o) = profile.as_object_mut() {
                o.remove("name");
            }
            match drive(
                cx,
                &client,
                &mut pending,
                &format!("pool-{}", p.name),
                "PUT",
                &cluster_url(&client, input, &format!("/agentPools/{}", p.name)),
                Some(&json!({"properties": profile})),
            )
            .await?
            {
                Drive::Wait(after) => {
                    return Ok(Progress::Wait {
                        recheck_after: after,
                    });
                }
                Drive::Done(_) => cx.info(&format!("pool {} is as asked", p.name)),
            }
        }
        let live: Value = cancellable(cx, client.send(Service::Arm, "GET", &url, None))
            .await?
            .json()
            .map_err(StepError::from)?;
        let (context, merged_into) = match target(cx, input) {
            Some((context, path)) => {
                // A pool scale leaves the credentials as they were: fetched again only when
                // the cluster itself was written or the kubeconfig lacks them.
                if cluster_write || !merged(&path, &context).await? {
                    self.merge_credentials(cx, &client, input, &context, &path)
                        .await?;
                }
                (context, path.display().to_string())
            }
            None => Default::default(),
        };
        Ok(Progress::Done(output(&live, &context, &merged_into)))
    }
}
