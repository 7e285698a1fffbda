//! The Arc data plane: the helm settings `az connectedk8s connect` fetches, and the endpoints
//! the agents installed in a cluster call. A connected cluster becomes `Connected` only when
//! an agent proves it holds the private key whose public half the cluster resource carries
//! (`agentPublicKeyCertificate`): it asks for a nonce and signs it (RSASSA-PKCS1-v1_5 with
//! SHA-256). The connected agent then pulls the cluster's extensions and Flux configurations
//! and reports back what it reconciled; a Flux configuration is `Compliant` only on such a
//! report. An AKS cluster's extension manager (see `arm/aks.rs`) holds a token from the start
//! and uses the same two endpoints.
//!
//! | method | path | auth |
//! |---|---|---|
//! | POST | `/azure-arc-k8sagents/GetHelmSettings?releaseTrain=stable` | ARM token |
//! | POST | `/arc-agents/v1/challenge` `{resourceId}` | none |
//! | POST | `/arc-agents/v1/connect` `{resourceId, nonce, signature, agentVersion, kubernetesVersion, totalNodeCount, totalCoreCount}` | the signature |
//! | GET | `/arc-agents/v1/configurations` | `Bearer <agentToken>` from connect |
//! | POST | `/arc-agents/v1/status` `{fluxConfigurations: [{id, complianceState, revision, message}]}` | `Bearer <agentToken>` |

use std::sync::Arc;

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::arm::state::key;
use crate::http::{Req, Resp};
use crate::server::Shared;
use crate::token::bearer;

/// The version of the agents chart the emulator hands out.
pub(crate) const AGENT_CHART_VERSION: &str = "1.21.10";

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    Resp::json(
        status,
        &json!({"error": {"code": code, "message": message.into()}}),
    )
}

/// Whether a path belongs to the Arc data plane.
pub(crate) fn is_arc_path(segs: &[String]) -> bool {
    segs.first().is_some_and(|s| {
        s.eq_ignore_ascii_case("azure-arc-k8sagents") || s.eq_ignore_ascii_case("arc-agents")
    })
}

pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Resp {
    let segs: Vec<String> = req.segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let agent_call = segs.first() == Some(&"arc-agents");
    if agent_call && shared.arc_refuse.load(std::sync::atomic::Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The Arc data plane is not accepting agents right now (injected fault).",
        )
        .with_header("Retry-After", "2");
    }
    match (req.method.clone(), segs.as_slice()) {
        (Method::POST, ["azure-arc-k8sagents", "gethelmsettings"]) => helm_settings(shared, req),
        (Method::POST, ["arc-agents", "v1", "challenge"]) => challenge(shared, req),
        (Method::POST, ["arc-agents", "v1", "connect"]) => connect(shared, req),
        (Method::GET, ["arc-agents", "v1", "configurations"]) => configurations(shared, req),
        (Method::POST, ["arc-agents", "v1", "status"]) => status(shared, req),
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No Arc data-plane endpoint at '{}'.", req.path),
        ),
    }
}

fn helm_settings(shared: &Arc<Shared>, req: &Req) -> Resp {
    if let Some(denied) = crate::arm::authenticate(shared, req) {
        return denied;
    }
    let train = req.query_param("releaseTrain").unwrap_or("stable");
    if !["stable", "preview"].contains(&train.to_ascii_lowercase().as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidReleaseTrain",
            format!("Unknown release train '{train}'; use stable or preview."),
        );
    }
    Resp::json(
        StatusCode::OK,
        &json!({
            "repositoryPath": format!("mcr.microsoft.com/azurearck8s/azure-arc-k8sagents:{AGENT_CHART_VERSION}"),
            "helmValuesContent": {
                "global.agentDataPlaneEndpoint": format!("{}/arc-agents/v1", shared.base_url),
                "systemDefaultValues.azureArcAgents.releaseTrain": train,
                "systemDefaultValues.azureArcAgents.autoUpdate": "true",
                "systemDefaultValues.clusterconnect-agent.enabled": "true"
            }
        }),
    )
}

fn body(req: &Req) -> Result<Value, Resp> {
    serde_json::from_slice(&req.body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request content is not valid JSON: {e}"),
        )
    })
}

/// The JSON body of an agent call and the cluster it names (`resourceId`).
fn body_with_id(req: &Req) -> Result<(Value, String), Resp> {
    let b = body(req)?;
    let id = b
        .get("resourceId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                "resourceId is required",
            )
        })?;
    Ok((b, id))
}

fn cluster_missing(id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The connected cluster '{id}' was not found."),
    )
}

fn challenge(shared: &Arc<Shared>, req: &Req) -> Resp {
    let (_, id) = match body_with_id(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut st = shared.lock_arm();
    st.advance(shared.clock.now(), &shared.advance_ctx());
    if !st.resources.get(&key(&id)).is_some_and(|r| r.visible) {
        return cluster_missing(&id);
    }
    let nonce = random_hex();
    st.agent_nonces.insert(key(&id), nonce.clone());
    Resp::json(StatusCode::OK, &json!({ "nonce": nonce }))
}

/// 32 random bytes in hex: nonces and agent tokens.
fn random_hex() -> String {
    let mut raw = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn connect(shared: &Arc<Shared>, req: &Req) -> Resp {
    let (b, id) = match body_with_id(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let field = |name: &str| b.get(name).and_then(Value::as_str).unwrap_or_default();
    let (nonce, signature) = (field("nonce"), field("signature"));
    let rkey = key(&id);
    let mut st = shared.lock_arm();
    st.advance(shared.clock.now(), &shared.advance_ctx());
    let Some(public) = st.resources.get(&rkey).filter(|r| r.visible).map(|r| {
        r.body
            .pointer("/properties/agentPublicKeyCertificate")
            .and_then(Value::as_str)
            .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
    }) else {
        return cluster_missing(&id);
    };
    // A nonce is good for one attempt.
    if st.agent_nonces.remove(&rkey).as_deref() != Some(nonce) || nonce.is_empty() {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidChallenge",
            "The nonce was not issued for this cluster or was already used; ask for a new challenge.",
        );
    }
    let sig = base64::engine::general_purpose::STANDARD.decode(signature);
    let verified = match (public, sig) {
        (Some(public), Ok(sig)) => ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(nonce.as_bytes(), &sig)
        .is_ok(),
        _ => false,
    };
    if !verified {
        return error(
            StatusCode::FORBIDDEN,
            "InvalidAgentSignature",
            "The signature does not verify with the cluster's agentPublicKeyCertificate: the agent holds a different onboarding key.",
        );
    }
    let report = AgentReport {
        agent_version: b
            .get("agentVersion")
            .and_then(Value::as_str)
            .unwrap_or(AGENT_CHART_VERSION)
            .to_string(),
        kubernetes_version: b
            .get("kubernetesVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        nodes: b.get("totalNodeCount").and_then(Value::as_u64),
        cores: b.get("totalCoreCount").and_then(Value::as_u64),
    };
    crate::arm::connect_cluster(&mut st, &rkey, &shared.advance_ctx(), &report);
    let token = random_hex();
    st.agent_tokens.insert(token.clone(), rkey);
    Resp::json(StatusCode::OK, &json!({ "agentToken": token }))
}

/// What a connecting agent reports about its cluster.
pub(crate) struct AgentReport {
    pub(crate) agent_version: String,
    pub(crate) kubernetes_version: Option<String>,
    pub(crate) nodes: Option<u64>,
    pub(crate) cores: Option<u64>,
}

fn agent_cluster(shared: &Shared, req: &Req) -> Result<String, Resp> {
    let token = bearer(&req.headers).unwrap_or_default();
    let st = shared.lock_arm();
    st.agent_tokens.get(token).cloned().ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "InvalidAgentToken",
            "Unknown agent token: connect again.",
        )
    })
}

fn configurations(shared: &Arc<Shared>, req: &Req) -> Resp {
    let rkey = match agent_cluster(shared, req) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let mut st = shared.lock_arm();
    st.advance(shared.clock.now(), &shared.advance_ctx());
    let Some(cluster) = st.resources.get_mut(&rkey) else {
        return cluster_missing(&rkey);
    };
    // (An AKS cluster's extension manager pulls here too; only Arc clusters report this.)
    if cluster
        .kind
        .ty
        .eq_ignore_ascii_case("Microsoft.Kubernetes/connectedClusters")
    {
        cluster.props_mut().insert(
            "lastConnectivityTime".into(),
            json!(crate::clock::rfc3339_now()),
        );
    }
    let prefix = format!("{rkey}/providers/microsoft.kubernetesconfiguration/");
    let mut extensions = Vec::new();
    let mut flux = Vec::new();
    for (k, r) in st.resources.range(prefix.clone()..) {
        if !k.starts_with(&prefix) {
            break;
        }
        if !r.visible || r.provisioning_state() != Some("Succeeded") {
            continue;
        }
        let props = r.body.get("properties").cloned().unwrap_or(json!({}));
        let mut item = json!({"id": r.id, "name": r.body.get("name"), "properties": props});
        if r.kind.ty.ends_with("fluxConfigurations") {
            // The agent gets the protected settings decoded (they never leave ARM otherwise).
            if let Some(ps) = props
                .get("configurationProtectedSettings")
                .and_then(Value::as_object)
            {
                let decoded: serde_json::Map<String, Value> = ps
                    .iter()
                    .map(|(k, v)| {
                        let plain = v
                            .as_str()
                            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        (k.clone(), json!(plain))
                    })
                    .collect();
                item["properties"]["configurationProtectedSettings"] = Value::Object(decoded);
            }
            flux.push(item);
        } else {
            extensions.push(item);
        }
    }
    Resp::json(
        StatusCode::OK,
        &json!({"extensions": extensions, "fluxConfigurations": flux}),
    )
}

fn status(shared: &Arc<Shared>, req: &Req) -> Resp {
    let rkey = match agent_cluster(shared, req) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let b = match body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut st = shared.lock_arm();
    st.advance(shared.clock.now(), &shared.advance_ctx());
    let mut updated = 0;
    for report in b
        .get("fluxConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(id) = report.get("id").and_then(Value::as_str) else {
            continue;
        };
        let k = key(id);
        if !k.starts_with(&rkey) {
            return error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                format!("The agent of {rkey} cannot report on {id}."),
            );
        }
        if crate::arm::report_flux(&mut st, &k, &report) {
            updated += 1;
        }
    }
    Resp::json(StatusCode::OK, &json!({"updated": updated}))
}
