//! Scale-in of a node pool: `k3s.drain` drains the nodes a scale-in to `keep` removes (the
//! highest `instance_label` values: a scale set's newest instances, which a `NewestVM`
//! scale-in policy deletes) before their VMs go; `k3s.prune-nodes` deletes the Node objects
//! of a pool whose machines are gone (draining first any that were not), so departed nodes
//! neither linger NotReady nor keep pods.

use crate::host::{KUBECONFIG, NodeStatus, nodes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_ssh::shell_quote;
use siteflow_ssh::steps::{Remote, SshTargetInput, StepPool};
use siteflow_step::{Duration, Observed, Progress, Step, StepContext, StepError};

fn five_minutes() -> Duration {
    std::time::Duration::from_secs(300).into()
}

fn invalid(msg: impl Into<String>) -> StepError {
    StepError::permanent("InvalidInput", msg)
}

/// `key=value` of a label selector.
fn parse_selector(s: &str) -> Result<(String, String), StepError> {
    s.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| invalid(format!("`selector` is `key=value`, got {s:?}")))
}

/// What both pool kinds check before they run.
fn validate_pool(ssh: &SshTargetInput, selector: &str) -> Result<(), StepError> {
    ssh.validate()?;
    parse_selector(selector)?;
    Ok(())
}

async fn pool(remote: &Remote, selector: &(String, String)) -> Result<Vec<NodeStatus>, StepError> {
    let all = nodes(remote).await?.ok_or_else(|| {
        StepError::retryable("ApiServerDown", "the API server does not answer yet")
    })?;
    Ok(all
        .into_iter()
        .filter(|n| n.labels.get(&selector.0) == Some(&selector.1))
        .collect())
}

/// Drains node `name`. Pods whose deletion began over a minute ago are not waited for: on a
/// node that is off (a stopped or evicted instance) they never finish terminating.
async fn drain(remote: &Remote, name: &str, timeout: Duration) -> Result<(), StepError> {
    remote
        .run(&format!(
            "KUBECONFIG={} k3s kubectl drain {} --ignore-daemonsets --delete-emptydir-data --force --skip-wait-for-delete-timeout=60 --timeout={}",
            shell_quote(KUBECONFIG),
            shell_quote(name),
            shell_quote(&timeout.to_string())
        ))
        .await?;
    Ok(())
}

/// Input of `k3s.drain`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sDrainInput {
    /// A server.
    pub ssh: SshTargetInput,
    /// The pool's nodes: `key=value`.
    pub selector: String,
    /// How many of them stay (the lowest `instance_label` values).
    pub keep: u32,
    /// A numeric label ordering the pool's nodes (a scale set's instance id).
    pub instance_label: String,
    /// `kubectl drain --timeout`.
    #[serde(default = "five_minutes")]
    pub timeout: Duration,
}

/// Output of `k3s.drain`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sDrainOutput {
    /// The nodes drained (sorted).
    pub drained: Vec<String>,
}

/// `k3s.drain`.
pub struct K3sDrain {
    pool: StepPool,
}

impl K3sDrain {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

/// The pool's nodes a scale-in to `keep` removes.
fn departing(input: &K3sDrainInput, pool: &[NodeStatus]) -> Vec<NodeStatus> {
    let mut ordered: Vec<(u64, NodeStatus)> = pool
        .iter()
        .map(|n| {
            let id = n
                .labels
                .get(&input.instance_label)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            (id, n.clone())
        })
        .collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    ordered
        .into_iter()
        .skip(input.keep as usize)
        .map(|(_, n)| n)
        .collect()
}

impl Step for K3sDrain {
    const KIND: &'static str = "k3s.drain";
    type Input = K3sDrainInput;
    type Output = K3sDrainOutput;

    fn description(&self) -> &'static str {
        "Drain the nodes of a pool that a scale-in to `keep` removes (highest instance ids first)"
    }

    fn validate(&self, input: &K3sDrainInput) -> Result<(), StepError> {
        validate_pool(&input.ssh, &input.selector)
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sDrainInput,
    ) -> Result<Observed<K3sDrainOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let nodes = pool(&remote, &parse_selector(&input.selector)?).await?;
        let leaving = departing(input, &nodes);
        if let Some(n) = leaving.iter().find(|n| !n.unschedulable) {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("{} leaves the pool and is not drained", n.name)),
            });
        }
        let mut drained: Vec<String> = leaving.into_iter().map(|n| n.name).collect();
        drained.sort();
        Ok(Observed::Satisfied(K3sDrainOutput { drained }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sDrainInput,
    ) -> Result<Progress<K3sDrainOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let nodes = pool(&remote, &parse_selector(&input.selector)?).await?;
        let mut drained = Vec::new();
        for n in departing(input, &nodes) {
            if !n.unschedulable {
                cx.info(&format!("draining {} (it leaves the pool)", n.name));
                drain(&remote, &n.name, input.timeout).await?;
            }
            drained.push(n.name);
        }
        drained.sort();
        Ok(Progress::Done(K3sDrainOutput { drained }))
    }
}

/// Input of `k3s.prune-nodes`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sPruneNodesInput {
    /// A server.
    pub ssh: SshTargetInput,
    /// The pool's nodes: `key=value`.
    pub selector: String,
    /// The pool's nodes that stay (its machines' names); the others are deleted.
    pub keep: Vec<String>,
    /// `kubectl drain --timeout`, for a departed node that was not drained.
    #[serde(default = "five_minutes")]
    pub timeout: Duration,
}

/// Output of `k3s.prune-nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sPruneNodesOutput {
    /// The pool's nodes now (sorted).
    pub nodes: Vec<String>,
    /// The nodes deleted by this step (sorted).
    pub deleted: Vec<String>,
}

/// `k3s.prune-nodes`.
pub struct K3sPruneNodes {
    pool: StepPool,
}

impl K3sPruneNodes {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

impl Step for K3sPruneNodes {
    const KIND: &'static str = "k3s.prune-nodes";
    type Input = K3sPruneNodesInput;
    type Output = K3sPruneNodesOutput;

    fn description(&self) -> &'static str {
        "Delete the Node objects of a pool whose machines are gone (drained first)"
    }

    fn validate(&self, input: &K3sPruneNodesInput) -> Result<(), StepError> {
        validate_pool(&input.ssh, &input.selector)
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sPruneNodesInput,
    ) -> Result<Observed<K3sPruneNodesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let nodes = pool(&remote, &parse_selector(&input.selector)?).await?;
        if let Some(n) = nodes.iter().find(|n| !input.keep.contains(&n.name)) {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("{} left the pool", n.name)),
            });
        }
        let mut names: Vec<String> = nodes.into_iter().map(|n| n.name).collect();
        names.sort();
        Ok(Observed::Satisfied(K3sPruneNodesOutput {
            nodes: names,
            deleted: Vec::new(),
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sPruneNodesInput,
    ) -> Result<Progress<K3sPruneNodesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let nodes = pool(&remote, &parse_selector(&input.selector)?).await?;
        let (mut stay, mut deleted) = (Vec::new(), Vec::new());
        for n in nodes {
            if input.keep.contains(&n.name) {
                stay.push(n.name);
                continue;
            }
            if !n.unschedulable {
                cx.info(&format!("draining {} before deleting it", n.name));
                drain(&remote, &n.name, input.timeout).await?;
            }
            cx.info(&format!("deleting node {} (its machine is gone)", n.name));
            remote
                .run(&format!(
                    "KUBECONFIG={} k3s kubectl delete node {}",
                    shell_quote(KUBECONFIG),
                    shell_quote(&n.name)
                ))
                .await?;
            deleted.push(n.name);
        }
        stay.sort();
        deleted.sort();
        Ok(Progress::Done(K3sPruneNodesOutput {
            nodes: stay,
            deleted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, id: &str) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            ready: true,
            internal_ip: None,
            labels: [("siteflow.io/instance-id".to_string(), id.to_string())].into(),
            unschedulable: false,
        }
    }

    #[test]
    fn a_scale_in_removes_the_highest_instance_ids() {
        let input = K3sDrainInput {
            ssh: serde_json::from_value(serde_json::json!({"host": "h", "user": "u"})).unwrap(),
            selector: "siteflow.io/pool=agents".into(),
            keep: 1,
            instance_label: "siteflow.io/instance-id".into(),
            timeout: five_minutes(),
        };
        let pool = [node("c", "10"), node("a", "2"), node("b", "9")];
        let names: Vec<String> = departing(&input, &pool)
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["b", "c"]);
        assert!(parse_selector("novalue").is_err());
    }
}
