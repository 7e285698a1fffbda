//! Microsoft.ContainerService managed clusters (AKS) and their agent pools, after the
//! azure-mgmt-containerservice 41.8 models (api-version 2026-08-01): the create's checks
//! (a System pool, pool names, VM sizes, local accounts only with managed Entra ID, workload
//! identity only with the OIDC issuer, which cannot be turned off again), the read-only
//! properties AKS fills in (fqdn, node resource group, issuer URL, kubelet identity, power
//! states), pools kept in step with the cluster's `agentPoolProfiles`, and the credential
//! actions. With a [`crate::ClusterBackingHook`] installed (the sandbox), every create and pool
//! change waits for a real (simulated) cluster, and the credentials name its API server.

use base64::Engine as _;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::Ctx;
use super::error::ArmError;
use super::kinds::Kind;
use super::path::ResPath;
use super::rp::{base_body, not_found, visible};
use super::state::{ArmState, HookJob, HookWhat, Resource, key};
use crate::hook::{ManagedClusterSpec, PoolSpec};
use crate::http::Resp;

pub(super) const CLUSTERS: &str = "Microsoft.ContainerService/managedClusters";
const DEFAULT_VERSION: &str = "1.33.5";
const NODE_IMAGE: &str = "AKSUbuntu-2204gen2containerd-202511.07.0";
/// The Entra application AKS's API server accepts tokens for (kubelogin's `--server-id`).
pub const AAD_SERVER_APP_ID: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// The public client kubelogin signs users in with (`--client-id`).
const AAD_CLIENT_APP_ID: &str = "80faf920-1908-4b52-b5ef-a8e7bedfc67a";

fn bad(code: &str, msg: impl Into<String>) -> ArmError {
    ArmError::new(StatusCode::BAD_REQUEST, code, msg)
}

fn rg_of(id: &str) -> String {
    id.split('/').nth(4).unwrap_or_default().to_string()
}

/// Linux pool names: 1–12 lower-case letters and digits, starting with a letter.
fn valid_pool_name(name: &str) -> bool {
    (1..=12).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Checks one pool's properties and fills in what AKS reports for it.
fn prepare_pool(
    name: &str,
    props: &mut serde_json::Map<String, Value>,
    old: Option<&Value>,
    cluster_version: &str,
) -> Result<(), ArmError> {
    if !valid_pool_name(name) {
        return Err(bad(
            "InvalidParameter",
            format!(
                "The agent pool name '{name}' is not valid: Linux pool names have 1 to 12 lower-case letters and digits and start with a letter."
            ),
        )
        .target("agentPoolProfile.name"));
    }
    let count = props.get("count").and_then(Value::as_i64).unwrap_or(1);
    let mode = props
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("User")
        .to_string();
    if !(0..=1000).contains(&count) || (mode.eq_ignore_ascii_case("System") && count < 1) {
        return Err(bad(
            "InvalidParameter",
            format!(
                "The value of parameter agentPoolProfile.count is invalid: {count} (a System pool has 1 to 1000 nodes, a User pool 0 to 1000)."
            ),
        )
        .target("agentPoolProfile.count"));
    }
    if let Some(size) = props.get("vmSize").and_then(Value::as_str)
        && !super::vm_size::valid(size)
    {
        return Err(bad(
            "InvalidParameter",
            format!("The value {size} provided for the VM size is not valid."),
        )
        .target("agentPoolProfile.vmSize"));
    }
    for ro in [
        "provisioningState",
        "powerState",
        "currentOrchestratorVersion",
        "nodeImageVersion",
        "eTag",
    ] {
        props.remove(ro);
    }
    props.insert("count".into(), json!(count));
    props.insert("mode".into(), json!(mode));
    props.entry("vmSize").or_insert(json!("Standard_D2s_v5"));
    props.entry("osType").or_insert(json!("Linux"));
    props.entry("osSKU").or_insert(json!("Ubuntu"));
    props
        .entry("type")
        .or_insert(json!("VirtualMachineScaleSets"));
    props.entry("maxPods").or_insert(json!(250));
    let version = props
        .get("orchestratorVersion")
        .and_then(Value::as_str)
        .unwrap_or(cluster_version)
        .to_string();
    props.insert("orchestratorVersion".into(), json!(version));
    props.insert("currentOrchestratorVersion".into(), json!(version));
    props.insert(
        "nodeImageVersion".into(),
        old.and_then(|o| o.get("nodeImageVersion"))
            .cloned()
            .unwrap_or(json!(NODE_IMAGE)),
    );
    props.insert("powerState".into(), json!({"code": "Running"}));
    props.insert("provisioningState".into(), json!("Succeeded"));
    Ok(())
}

fn kubernetes_version(v: &str) -> Result<String, ArmError> {
    let parts: Vec<&str> = v.split('.').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts[0] == "1"
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let minor: u32 = parts.get(1).and_then(|m| m.parse().ok()).unwrap_or(0);
    if !ok || !(30..=34).contains(&minor) {
        return Err(bad(
            "K8sVersionNotSupported",
            format!(
                "Version {v} is not supported in this region. Please use [az aks get-versions] command to get the supported version list in this region."
            ),
        ));
    }
    Ok(if parts.len() == 2 {
        format!("{v}.5")
    } else {
        v.to_string()
    })
}

/// The cluster's body as stored: checks, read-only properties, pool properties.
pub(super) fn prepare(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    body: Value,
    existing: Option<&Resource>,
) -> Result<Value, ArmError> {
    let mut b = base_body(kind, id, p.name(), body);
    let old = existing.map(|r| r.body.clone()).unwrap_or(json!({}));
    if kind.ty != CLUSTERS {
        return prepare_agent_pool(st, p, b, &old);
    }
    let location = b
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("eastus")
        .to_ascii_lowercase();
    let identity = b
        .pointer("/identity/type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let has_sp = b
        .pointer("/properties/servicePrincipalProfile/clientId")
        .and_then(Value::as_str)
        .is_some_and(|c| c != "msi");
    if identity.is_none() && !has_sp {
        return Err(bad(
            "InvalidParameter",
            "The cluster needs an identity: set identity.type (SystemAssigned or UserAssigned) or a servicePrincipalProfile.",
        )
        .target("identity"));
    }
    super::rp::system_identity(ctx, &mut b, &old);
    let props = b["properties"].as_object_mut().expect("object");
    for ro in [
        "provisioningState",
        "powerState",
        "fqdn",
        "azurePortalFQDN",
        "privateFQDN",
        "maxAgentPools",
        "currentKubernetesVersion",
        "resourceUID",
    ] {
        props.remove(ro);
    }
    let dns_prefix = match props.get("dnsPrefix").and_then(Value::as_str) {
        Some(d) if !d.is_empty() => d.to_string(),
        _ if props.get("fqdnSubdomain").is_some() => p.name().to_string(),
        _ => {
            return Err(bad(
                "InvalidParameter",
                "Required parameter dnsPrefix is missing (null).",
            )
            .target("dnsPrefix"));
        }
    };
    if let Some(old_prefix) = old.pointer("/properties/dnsPrefix").and_then(Value::as_str)
        && !old_prefix.eq_ignore_ascii_case(&dns_prefix)
    {
        return Err(bad(
            "PropertyChangeNotAllowed",
            "Changing property 'dnsPrefix' is not allowed.",
        )
        .target("dnsPrefix"));
    }
    let version = kubernetes_version(
        props
            .get("kubernetesVersion")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_VERSION),
    )?;
    props.insert("kubernetesVersion".into(), json!(version));
    props.insert("currentKubernetesVersion".into(), json!(version));

    // Entra ID, local accounts.
    let aad_managed = props
        .get("aadProfile")
        .and_then(|a| a.get("managed"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let disable_local = props
        .get("disableLocalAccounts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if disable_local && !aad_managed {
        return Err(bad(
            "BadRequest",
            "Local accounts can only be disabled on clusters with managed Microsoft Entra ID integration (aadProfile.managed: true).",
        )
        .target("disableLocalAccounts"));
    }
    if let Some(aad) = props.get_mut("aadProfile").and_then(Value::as_object_mut)
        && aad_managed
    {
        aad.entry("tenantID")
            .or_insert(json!(ctx.shared.config.tenant_id));
        aad.entry("enableAzureRBAC").or_insert(json!(false));
    }
    props.entry("enableRBAC").or_insert(json!(true));

    // The OIDC issuer (kept once enabled) and workload identity.
    let oidc = props
        .get("oidcIssuerProfile")
        .and_then(|o| o.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let old_issuer = old
        .pointer("/properties/oidcIssuerProfile/issuerURL")
        .and_then(Value::as_str)
        .map(str::to_string);
    if old_issuer.is_some() && !oidc {
        return Err(bad(
            "BadRequest",
            "The OIDC issuer cannot be disabled once it is enabled.",
        )
        .target("oidcIssuerProfile.enabled"));
    }
    let workload_identity = props
        .get("securityProfile")
        .and_then(|s| s.get("workloadIdentity"))
        .and_then(|w| w.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if workload_identity && !oidc {
        return Err(bad(
            "BadRequest",
            "Enabling workload identity requires enabling the OIDC issuer (oidcIssuerProfile.enabled: true).",
        )
        .target("securityProfile.workloadIdentity"));
    }
    if oidc {
        let url = old_issuer.unwrap_or_else(|| {
            format!(
                "https://{location}.oic.prod-aks.azure.com/{}/{}/",
                ctx.shared.config.tenant_id,
                uuid::Uuid::new_v4()
            )
        });
        props.insert(
            "oidcIssuerProfile".into(),
            json!({"enabled": true, "issuerURL": url}),
        );
    }

    // Pools: at least one, one System pool, unique valid names.
    let mut pools = props
        .get("agentPoolProfiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pools.is_empty() {
        return Err(bad(
            "InvalidParameter",
            "A managed cluster needs at least one agent pool in agentPoolProfiles.",
        )
        .target("agentPoolProfiles"));
    }
    let mut names = std::collections::BTreeSet::new();
    let old_pools = old
        .pointer("/properties/agentPoolProfiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for pool in &mut pools {
        let name = pool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !names.insert(name.clone()) {
            return Err(bad(
                "InvalidParameter",
                format!("The agent pool name '{name}' is used twice."),
            )
            .target("agentPoolProfiles"));
        }
        let old_pool = old_pools.iter().find(|o| o["name"] == json!(name));
        let obj = pool.as_object_mut().ok_or_else(|| {
            bad("InvalidParameter", "agentPoolProfiles holds objects").target("agentPoolProfiles")
        })?;
        prepare_pool(&name, obj, old_pool, &version)?;
    }
    if !pools.iter().any(|p| p["mode"] == "System") {
        return Err(bad(
            "InvalidParameter",
            "A managed cluster needs at least one agent pool with mode System.",
        )
        .target("agentPoolProfiles"));
    }
    props.insert("agentPoolProfiles".into(), Value::Array(pools));

    // What AKS fills in.
    let rg = rg_of(id);
    let hash = &format!("{:016x}", fnv1a(id))[..8];
    let node_rg = props
        .get("nodeResourceGroup")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("MC_{rg}_{}_{location}", p.name()));
    props.insert("nodeResourceGroup".into(), json!(node_rg));
    props.insert(
        "fqdn".into(),
        json!(format!("{dns_prefix}-{hash}.hcp.{location}.azmk8s.io")),
    );
    props.insert(
        "azurePortalFQDN".into(),
        json!(format!(
            "{dns_prefix}-{hash}.portal.hcp.{location}.azmk8s.io"
        )),
    );
    props.insert("maxAgentPools".into(), json!(100));
    props.insert("powerState".into(), json!({"code": "Running"}));
    props.insert(
        "resourceUID".into(),
        old.pointer("/properties/resourceUID")
            .cloned()
            .unwrap_or_else(|| json!(format!("{:024x}", uuid::Uuid::new_v4().as_u128() >> 32))),
    );
    if identity.is_some() {
        let kubelet = old
            .pointer("/properties/identityProfile/kubeletidentity")
            .cloned()
            .unwrap_or_else(|| {
                json!({
                    "resourceId": format!(
                        "/subscriptions/{}/resourcegroups/{node_rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}-agentpool",
                        p.sub,
                        p.name()
                    ),
                    "clientId": uuid::Uuid::new_v4().to_string(),
                    "objectId": uuid::Uuid::new_v4().to_string(),
                })
            });
        props.insert(
            "identityProfile".into(),
            json!({"kubeletidentity": kubelet}),
        );
        props
            .entry("servicePrincipalProfile")
            .or_insert(json!({"clientId": "msi"}));
    }
    Ok(b)
}

/// A short stable hash of a string (for the fqdn's suffix, as AKS derives one).
fn fnv1a(s: &str) -> u64 {
    // Stable across runs and platforms.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn prepare_agent_pool(
    st: &ArmState,
    p: &ResPath,
    mut b: Value,
    old: &Value,
) -> Result<Value, ArmError> {
    let cluster_id = cluster_id_of(b["id"].as_str().unwrap_or_default());
    let version = visible(st, &key(&cluster_id))
        .and_then(|c| {
            c.body
                .pointer("/properties/currentKubernetesVersion")
                .and_then(Value::as_str)
        })
        .unwrap_or(DEFAULT_VERSION)
        .to_string();
    let name = p.name().to_string();
    let props = b["properties"].as_object_mut().expect("object");
    prepare_pool(&name, props, old.get("properties"), &version)?;
    Ok(b)
}

/// `/subscriptions/…/managedClusters/{name}` of a pool id.
fn cluster_id_of(pool_id: &str) -> String {
    match pool_id.to_ascii_lowercase().find("/agentpools/") {
        Some(at) => pool_id[..at].to_string(),
        None => pool_id.to_string(),
    }
}

/// The cluster's pools as the hook sees them.
fn spec(ctx: &Ctx<'_>, st: &mut ArmState, cluster_key: &str) -> Option<ManagedClusterSpec> {
    // The extension manager's credential: one per cluster, known to the extension data plane.
    let token = match st
        .agent_tokens
        .iter()
        .find(|(_, k)| k.as_str() == cluster_key)
    {
        Some((t, _)) => t.clone(),
        None => {
            let t = format!("aks-{}", uuid::Uuid::new_v4().simple());
            st.agent_tokens.insert(t.clone(), cluster_key.to_string());
            t
        }
    };
    let c = st.resources.get(cluster_key)?;
    let props = c.body.get("properties")?;
    let pools = props
        .get("agentPoolProfiles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| PoolSpec {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            count: p["count"].as_u64().unwrap_or(0) as u32,
            mode: p["mode"].as_str().unwrap_or("User").to_string(),
            node_labels: p
                .get("nodeLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            node_taints: p
                .get("nodeTaints")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Some(ManagedClusterSpec {
        resource_id: c.id.clone(),
        name: c.body["name"].as_str().unwrap_or_default().to_string(),
        resource_group: rg_of(&c.id),
        kubernetes_version: props["currentKubernetesVersion"]
            .as_str()
            .unwrap_or(DEFAULT_VERSION)
            .to_string(),
        fqdn: props["fqdn"].as_str().unwrap_or_default().to_string(),
        oidc_issuer_url: props
            .pointer("/oidcIssuerProfile/issuerURL")
            .and_then(Value::as_str)
            .map(str::to_string),
        pools,
        extension_agent_token: token,
        extension_endpoint: format!("{}/arc-agents/v1", ctx.shared.base_url),
    })
}

/// Keeps pools and the cluster's `agentPoolProfiles` in step, and asks the hook to
/// reconcile the cluster when its pools changed.
pub(super) fn after_put(ctx: &Ctx<'_>, st: &mut ArmState, rkey: &str, op_id: &str) {
    let Some(r) = st.resources.get(rkey) else {
        return;
    };
    let (id, body, ty) = (r.id.clone(), r.body.clone(), r.kind.ty);
    let cluster_key = if ty == CLUSTERS {
        // Each profile is also an agentPools child.
        let pool_kind =
            super::kinds::lookup("Microsoft.ContainerService/managedClusters/agentPools");
        for profile in body
            .pointer("/properties/agentPoolProfiles")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let (Some(name), Some(kind)) = (profile["name"].as_str(), pool_kind) else {
                continue;
            };
            let pool_id = format!("{id}/agentPools/{name}");
            let mut props = profile.clone();
            if let Some(o) = props.as_object_mut() {
                o.remove("name");
            }
            let pool_body =
                json!({"id": pool_id, "name": name, "type": kind.ty, "properties": props});
            st.resources.insert(
                key(&pool_id),
                Resource {
                    id: pool_id.clone(),
                    kind,
                    body: pool_body,
                    visible: true,
                    op: None,
                    power_state: "running",
                },
            );
        }
        rkey.to_string()
    } else {
        // A pool: its profile in the cluster follows it.
        let cluster_key = key(&cluster_id_of(&id));
        let name = body["name"].clone();
        let mut profile = body["properties"].clone();
        profile["name"] = name.clone();
        if let Some(c) = st.resources.get_mut(&cluster_key)
            && let Some(list) = c
                .body
                .pointer_mut("/properties/agentPoolProfiles")
                .and_then(Value::as_array_mut)
        {
            match list.iter_mut().find(|p| p["name"] == name) {
                Some(slot) => *slot = profile,
                None => list.push(profile),
            }
        }
        cluster_key
    };
    queue_reconcile(ctx, st, &cluster_key, op_id);
}

fn queue_reconcile(ctx: &Ctx<'_>, st: &mut ArmState, cluster_key: &str, op_id: &str) {
    if !ctx.cluster_hook_set {
        return;
    }
    let Some(spec) = spec(ctx, st, cluster_key) else {
        return;
    };
    if let Some(op) = st.ops.get_mut(op_id) {
        op.hooks_pending += 1;
    }
    st.pending_hooks.push(HookJob {
        op_id: op_id.to_string(),
        resource_key: cluster_key.to_string(),
        what: HookWhat::Cluster(spec),
    });
}

/// A pool delete: refused for the last System pool; else the profile goes too.
pub(super) fn before_delete(st: &mut ArmState, rkey: &str) -> Result<(), ArmError> {
    let Some(r) = st.resources.get(rkey) else {
        return Ok(());
    };
    if r.kind.ty == CLUSTERS {
        return Ok(());
    }
    let cluster_key = key(&cluster_id_of(&r.id));
    let name = r.body["name"].clone();
    let Some(c) = st.resources.get_mut(&cluster_key) else {
        return Ok(());
    };
    let Some(list) = c
        .body
        .pointer_mut("/properties/agentPoolProfiles")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    let systems_left = list
        .iter()
        .filter(|p| p["mode"] == "System" && p["name"] != name)
        .count();
    let is_system = list
        .iter()
        .any(|p| p["name"] == name && p["mode"] == "System");
    if is_system && systems_left == 0 {
        return Err(bad(
            "OperationNotAllowed",
            "The last System agent pool of a managed cluster cannot be deleted.",
        ));
    }
    list.retain(|p| p["name"] != name);
    Ok(())
}

/// After a pool's delete was accepted: the cluster is reconciled without it.
pub(super) fn after_delete(ctx: &Ctx<'_>, st: &mut ArmState, rkey: &str, op_id: &str) {
    let Some(r) = st.resources.get(rkey) else {
        return;
    };
    if r.kind.ty != CLUSTERS {
        let cluster_key = key(&cluster_id_of(&r.id));
        queue_reconcile(ctx, st, &cluster_key, op_id);
    }
}

/// The resource as GET returns it.
pub(super) fn render(r: &Resource) -> Value {
    r.body.clone()
}

/// `listClusterUserCredential` / `listClusterAdminCredential`.
pub(super) fn action(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    rkey: &str,
    action: &str,
) -> Result<Resp, ArmError> {
    let Some(r) = visible(st, rkey) else {
        return Err(not_found(st, p, kind, rkey));
    };
    let admin = action.eq_ignore_ascii_case("listClusterAdminCredential");
    let user = action.eq_ignore_ascii_case("listClusterUserCredential");
    if ctx.req.method != Method::POST || kind.ty != CLUSTERS || !(admin || user) {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type 'managedClusters/{action}' could not be found in the namespace 'Microsoft.ContainerService'."
            ),
        ));
    }
    let props = &r.body["properties"];
    let aad = props
        .pointer("/aadProfile/managed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let local_disabled = props
        .get("disableLocalAccounts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if admin && local_disabled {
        return Err(bad(
            "BadRequest",
            "Getting static credential is not allowed because this cluster is set to disable local accounts.",
        ));
    }
    let name = r.body["name"].as_str().unwrap_or_default().to_string();
    let rg = rg_of(&r.id);
    let fqdn = props["fqdn"].as_str().unwrap_or_default();
    let backing = st.cluster_backings.get(rkey);
    let server = backing.map_or_else(|| format!("https://{fqdn}:443"), |b| b.server_url.clone());
    let ca = backing.map_or_else(
        || std::fs::read_to_string(&ctx.shared.ca_pem_path).unwrap_or_default(),
        |b| b.ca_pem.clone(),
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (user_name, user) = if user && aad {
        let tenant = props
            .pointer("/aadProfile/tenantID")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.shared.config.tenant_id);
        (
            format!("clusterUser_{rg}_{name}"),
            json!({"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "kubelogin",
                "args": ["get-token", "--environment", "AzurePublicCloud", "--server-id", AAD_SERVER_APP_ID,
                         "--client-id", AAD_CLIENT_APP_ID, "--tenant-id", tenant, "--login", "devicecode"],
                "env": null,
                "installHint": "\nkubelogin is not installed which is required to connect to AAD enabled cluster.\n",
                "provideClusterInfo": false,
                "interactiveMode": "IfAvailable"
            }}),
        )
    } else {
        let token = backing.map_or_else(
            || {
                // No backing cluster: a per-cluster token nothing accepts.
                format!("{:032x}", fnv1a(&format!("{}{}", r.id, "token")))
            },
            |b| b.admin_token.clone(),
        );
        (
            format!(
                "{}_{rg}_{name}",
                if admin { "clusterAdmin" } else { "clusterUser" }
            ),
            json!({"token": token}),
        )
    };
    let context = if admin {
        format!("{name}-admin")
    } else {
        name.clone()
    };
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(&ca)}}],
        "contexts": [{"name": context, "context": {"cluster": name, "user": user_name}}],
        "current-context": context,
        "users": [{"name": user_name, "user": user}],
        "preferences": {},
    });
    let text = serde_json::to_string_pretty(&kubeconfig).unwrap_or_default();
    Ok(Resp::json(
        StatusCode::OK,
        &json!({"kubeconfigs": [{"name": if admin { "clusterAdmin" } else { "clusterUser" }, "value": b64(&text)}]}),
    ))
}
