//! What the k3s kinds share about a k3s host: well-known paths, the service unit, restarts
//! and reading node status through `k3s kubectl`.

use serde_json::Value;
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::Remote;
use siteflow_step::StepError;

/// k3s's configuration directory.
pub const CONFIG_DIR: &str = "/etc/rancher/k3s";
/// The main configuration file.
pub const CONFIG_FILE: &str = "/etc/rancher/k3s/config.yaml";
/// Drop-in configuration directory.
pub const CONFIG_DROPIN_DIR: &str = "/etc/rancher/k3s/config.yaml.d";
/// The admin kubeconfig k3s writes on servers.
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// The join token on servers.
pub const NODE_TOKEN: &str = "/var/lib/rancher/k3s/server/node-token";
/// Private registry configuration.
pub const REGISTRIES_FILE: &str = "/etc/rancher/k3s/registries.yaml";

/// A permanent `InvalidInput` error.
pub fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

/// The k3s unit installed on the host (`k3s` or `k3s-agent`), if any.
pub async fn installed_unit(remote: &Remote) -> Result<Option<String>, StepError> {
    let out = remote
        .run_quiet(
            "for u in k3s k3s-agent; do \
             if [ -f /etc/systemd/system/$u.service ]; then echo $u; exit 0; fi; done",
        )
        .await?;
    let unit = out.stdout_text().trim().to_string();
    Ok((!unit.is_empty()).then_some(unit))
}

/// Restarts `unit`, logging why.
pub async fn restart(remote: &Remote, unit: &str, why: &str) -> Result<(), StepError> {
    remote.cx().info(&format!(
        "restarting {unit} on {}: {why}",
        remote.target.host
    ));
    remote
        .run(&format!("systemctl restart {}", shell_quote(unit)))
        .await?;
    Ok(())
}

/// One node as `kubectl get nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
    /// Its `InternalIP`, if reported.
    pub internal_ip: Option<String>,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
}

/// The cluster's nodes as this server sees them; `None` when the API does not answer yet.
pub async fn nodes(remote: &Remote) -> Result<Option<Vec<NodeStatus>>, StepError> {
    let mut req = remote.request(format!(
        "KUBECONFIG={} k3s kubectl get nodes -o json",
        shell_quote(KUBECONFIG)
    ));
    req.quiet = true;
    let out = remote.exec(&req).await?;
    if !out.success() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        StepError::retryable(
            "KubectlOutput",
            format!("`k3s kubectl get nodes -o json` printed no JSON: {e}"),
        )
    })?;
    Ok(Some(parse_nodes(&v)))
}

/// Parses a `NodeList`.
pub fn parse_nodes(v: &Value) -> Vec<NodeStatus> {
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|n| {
                    let conds = n["status"]["conditions"].as_array();
                    let ready = conds.is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    let internal_ip = n["status"]["addresses"].as_array().and_then(|a| {
                        a.iter()
                            .find(|x| x["type"] == "InternalIP")
                            .and_then(|x| x["address"].as_str())
                            .map(str::to_string)
                    });
                    NodeStatus {
                        name: n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        ready,
                        internal_ip,
                        labels: serde_json::from_value(n["metadata"]["labels"].clone())
                            .unwrap_or_default(),
                        unschedulable: n["spec"]["unschedulable"].as_bool().unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_list() {
        let v = serde_json::json!({"items": [
            {"metadata": {"name": "a"}, "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.4"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"}]}}
        ]});
        let n = parse_nodes(&v);
        assert_eq!(n.len(), 2);
        assert!(n[0].ready);
        assert_eq!(n[0].internal_ip.as_deref(), Some("10.0.0.4"));
        assert!(!n[1].ready);
    }
}
