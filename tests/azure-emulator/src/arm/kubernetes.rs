//! Microsoft.Kubernetes connected clusters (agent connection, OIDC issuer URL) and the
//! Microsoft.KubernetesConfiguration extensions and Flux configurations under them.

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::Kind;
use super::path::ResPath;
use super::rp::{base_body, not_found, system_data, visible};
use super::state::{AdvanceCtx, ArmState, Resource};
use super::{ArmError, Ctx};
use crate::arcdp::AgentReport;
use crate::clock::rfc3339_now;
use crate::http::Resp;

pub(super) fn prepare_cluster(
    ctx: &Ctx<'_>,
    _st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    body: Value,
    existing: Option<&Resource>,
) -> Result<Value, ArmError> {
    let mut b = base_body(kind, id, p.name(), body);
    let old = existing.map(|r| r.body.clone()).unwrap_or(json!({}));
    b["systemData"] = system_data(ctx, existing);
    super::rp::system_identity(ctx, &mut b, &old);
    let props = b["properties"].as_object_mut().expect("object");
    for ro in [
        "connectivityStatus",
        "agentVersion",
        "kubernetesVersion",
        "totalNodeCount",
        "totalCoreCount",
        "lastConnectivityTime",
        "offering",
        "managedIdentityCertificateExpirationTime",
        "miscellaneousProperties",
    ] {
        props.remove(ro);
    }
    let keep = [
        "connectivityStatus",
        "agentVersion",
        "kubernetesVersion",
        "totalNodeCount",
        "totalCoreCount",
        "lastConnectivityTime",
        "offering",
        "managedIdentityCertificateExpirationTime",
    ];
    for k in keep {
        if let Some(v) = old.pointer(&format!("/properties/{k}")) {
            props.insert(k.into(), v.clone());
        }
    }
    props
        .entry("connectivityStatus")
        .or_insert(json!("Connecting"));
    props.entry("privateLinkState").or_insert(json!("Disabled"));
    props
        .entry("azureHybridBenefit")
        .or_insert(json!("NotApplicable"));
    // The issuer URL only appears once the agents are connected.
    let old_issuer = old
        .pointer("/properties/oidcIssuerProfile/issuerUrl")
        .cloned();
    if let Some(oidc) = props
        .get_mut("oidcIssuerProfile")
        .and_then(Value::as_object_mut)
    {
        oidc.remove("issuerUrl");
        if let Some(i) = old_issuer
            && oidc.get("enabled").and_then(Value::as_bool) == Some(true)
        {
            oidc.insert("issuerUrl".into(), i);
        }
    }
    Ok(b)
}

pub(super) fn prepare_config(
    ctx: &Ctx<'_>,
    _st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    body: Value,
    existing: Option<&Resource>,
) -> Result<Value, ArmError> {
    let mut b = base_body(kind, id, p.name(), body);
    b.as_object_mut().map(|o| o.remove("location"));
    b["systemData"] = system_data(ctx, existing);
    let is_flux = kind.ty.ends_with("fluxConfigurations");
    let props = b["properties"].as_object_mut().expect("object");
    props.remove("provisioningState");
    if is_flux {
        props.entry("scope").or_insert(json!("cluster"));
        props.entry("namespace").or_insert(json!("default"));
        props.entry("sourceKind").or_insert(json!("GitRepository"));
        props.entry("suspend").or_insert(json!(false));
        props.insert("complianceState".into(), json!("Pending"));
        props.insert("statuses".into(), json!([]));
        props.insert("errorMessage".into(), json!(""));
        let ssh = props
            .get("gitRepository")
            .and_then(|g| g.get("url"))
            .and_then(Value::as_str)
            .is_some_and(|u| u.starts_with("ssh://") || u.starts_with("git@"));
        if ssh {
            let old = existing
                .and_then(|r| r.body.pointer("/properties/repositoryPublicKey"))
                .cloned();
            let key = old.unwrap_or_else(|| {
                let mut raw = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut raw);
                let mut blob = Vec::new();
                blob.extend_from_slice(&11u32.to_be_bytes());
                blob.extend_from_slice(b"ssh-ed25519");
                blob.extend_from_slice(&32u32.to_be_bytes());
                blob.extend_from_slice(&raw);
                json!(format!(
                    "ssh-ed25519 {}",
                    base64::engine::general_purpose::STANDARD.encode(blob)
                ))
            });
            props.insert("repositoryPublicKey".into(), key);
        }
    } else {
        props
            .entry("autoUpgradeMinorVersion")
            .or_insert(json!(true));
        props.entry("releaseTrain").or_insert(json!("Stable"));
        props.entry("isSystemExtension").or_insert(json!(false));
        props.insert("statuses".into(), json!([]));
        let version = props.get("version").cloned().unwrap_or(json!("1.0.0"));
        props.insert("currentVersion".into(), Value::Null);
        props.insert("version".into(), version);
        if props
            .get("extensionType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("microsoft.flux"))
        {
            props
                .entry("scope")
                .or_insert(json!({"cluster": {"releaseNamespace": "flux-system"}}));
        }
        props.insert(
            "aksAssignedIdentity".into(),
            json!({"type": "SystemAssigned", "principalId": uuid::Uuid::new_v4().to_string(), "tenantId": ctx.shared.config.tenant_id}),
        );
    }
    Ok(b)
}

/// Create/update finished. The agents have not proven anything yet: the cluster stays
/// `Connecting` until one signs a challenge (see `arcdp`). A cluster that is already
/// connected gets its issuer URL when the issuer was just enabled.
pub(super) fn on_cluster_succeeded(st: &mut ArmState, rkey: &str, ctx: &AdvanceCtx<'_>) {
    let Some(r) = st.resources.get_mut(rkey) else {
        return;
    };
    if r.body
        .pointer("/properties/connectivityStatus")
        .and_then(Value::as_str)
        == Some("Connected")
    {
        set_issuer(r, ctx);
    }
}

fn set_issuer(r: &mut Resource, ctx: &AdvanceCtx<'_>) {
    let enabled = r
        .body
        .pointer("/properties/oidcIssuerProfile/enabled")
        .and_then(Value::as_bool)
        == Some(true);
    if !enabled
        || r.body
            .pointer("/properties/oidcIssuerProfile/issuerUrl")
            .is_some()
    {
        return;
    }
    let guid = uuid::Uuid::new_v4();
    let url = format!("{}/oidc/{}/{guid}/", ctx.base_url, ctx.tenant);
    r.body["properties"]["oidcIssuerProfile"]["issuerUrl"] = json!(url);
}

/// An agent proved the onboarding key: status, versions, node counts and the issuer URL.
pub(crate) fn connect(st: &mut ArmState, rkey: &str, ctx: &AdvanceCtx<'_>, report: &AgentReport) {
    let Some(r) = st.resources.get_mut(rkey) else {
        return;
    };
    let props = r.props_mut();
    props.insert("connectivityStatus".into(), json!("Connected"));
    props.insert("lastConnectivityTime".into(), json!(rfc3339_now()));
    props.insert("agentVersion".into(), json!(report.agent_version));
    if let Some(v) = &report.kubernetes_version {
        props.insert("kubernetesVersion".into(), json!(v));
        if v.contains("k3s") {
            props.insert("offering".into(), json!("K3s"));
        }
    }
    if let Some(n) = report.nodes {
        props.insert("totalNodeCount".into(), json!(n));
    }
    if let Some(n) = report.cores {
        props.insert("totalCoreCount".into(), json!(n));
    }
    set_issuer(r, ctx);
}

/// A Flux configuration finished its ARM write: the cluster has not reconciled it yet.
pub(super) fn on_config_succeeded(st: &mut ArmState, rkey: &str) {
    let Some(r) = st.resources.get_mut(rkey) else {
        return;
    };
    if r.kind.ty.ends_with("fluxConfigurations") {
        return;
    }
    let props = r.props_mut();
    let v = props.get("version").cloned().unwrap_or(json!("1.0.0"));
    props.insert("currentVersion".into(), v);
}

/// The cluster's agent reports what it did with a Flux configuration: the revision it
/// fetched and whether the kustomizations applied. Returns whether `rkey` is a Flux
/// configuration of that cluster.
pub(crate) fn report_flux(st: &mut ArmState, rkey: &str, report: &Value) -> bool {
    let Some(r) = st.resources.get_mut(rkey) else {
        return false;
    };
    if !r.kind.ty.ends_with("fluxConfigurations") {
        return false;
    }
    let name = r
        .body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let compliance = report
        .get("complianceState")
        .and_then(Value::as_str)
        .filter(|c| ["Compliant", "Non-Compliant", "Pending"].contains(c))
        .unwrap_or("Non-Compliant")
        .to_string();
    let message = report
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let revision = report
        .get("revision")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ready = if compliance == "Compliant" {
        "True"
    } else {
        "False"
    };
    let now = rfc3339_now();
    let props = r.props_mut();
    props.insert("complianceState".into(), json!(compliance));
    props.insert("statusUpdatedAt".into(), json!(now));
    props.insert(
        "errorMessage".into(),
        json!(if ready == "True" {
            ""
        } else {
            message.as_str()
        }),
    );
    if !revision.is_empty() {
        props.insert("sourceSyncedCommitId".into(), json!(revision));
        props.insert("sourceUpdatedAt".into(), json!(now));
    }
    props.insert(
        "statuses".into(),
        json!([{"name": name, "namespace": "flux-system", "kind": "GitRepository",
                "complianceState": compliance,
                "statusConditions": [{"type": "Ready", "status": ready,
                    "reason": if ready == "True" { "Succeeded" } else { "ReconciliationFailed" },
                    "message": if message.is_empty() { format!("stored artifact for revision '{revision}'") } else { message.clone() },
                    "lastTransitionTime": now}]}]),
    );
    true
}

pub(super) fn render(r: &Resource) -> Value {
    let mut b = r.body.clone();
    if let Some(props) = b.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("configurationProtectedSettings");
    }
    b
}

/// `listClusterUserCredential`.
pub(super) fn cluster_action(
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
    if ctx.req.method != Method::POST || !action.eq_ignore_ascii_case("listClusterUserCredential") {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type 'connectedClusters/{action}' could not be found in the namespace 'Microsoft.Kubernetes'."
            ),
        ));
    }
    if r.body
        .pointer("/properties/connectivityStatus")
        .and_then(Value::as_str)
        != Some("Connected")
    {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "ClusterNotConnected",
            "The connected cluster is not connected; its agents have not reported yet.",
        ));
    }
    let name = r
        .body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://127.0.0.1:47011/proxies/{name}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: clusterUser\ncurrent-context: {name}\nusers:\n- name: clusterUser\n  user:\n    token: emulator\n"
    );
    Ok(Resp::json(
        StatusCode::OK,
        &json!({
            "hybridConnectionConfig": {"expirationTime": 0, "hybridConnectionName": name, "relay": "emulator", "token": "emulator"},
            "kubeconfigs": [{"name": "credentialUser", "value": base64::engine::general_purpose::STANDARD.encode(kubeconfig)}]
        }),
    ))
}

/// Serves `/oidc/{tenant}/{guid}/.well-known/openid-configuration` and the (empty) JWKS for
/// issuer URLs handed out to connected clusters.
pub(crate) fn oidc_document(base_url: &str, segs: &[String]) -> Option<Value> {
    if segs.len() < 4 || !segs[0].eq_ignore_ascii_case("oidc") {
        return None;
    }
    let issuer = format!("{base_url}/oidc/{}/{}/", segs[1], segs[2]);
    match segs[3..]
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
        .as_str()
    {
        ".well-known/openid-configuration" => Some(json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"]
        })),
        "openid/v1/jwks" => Some(json!({"keys": []})),
        _ => None,
    }
}
