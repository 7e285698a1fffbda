//! `k3s.ready`: waits (by asking to be rechecked, never sleeping) until the expected nodes
//! are `Ready`, as `k3s kubectl get nodes -o json` on a server reports them.

use crate::host::{invalid, nodes};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::time::Duration;

/// Input of `k3s.ready`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sReadyInput {
    /// A server to ask.
    pub ssh: SshTargetInput,
    /// Node names that must be Ready.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Or at least this many Ready nodes.
    #[serde(default)]
    pub count: Option<usize>,
    /// Recheck interval (default 2s).
    #[serde(default)]
    pub interval: Option<siteflow_step::Duration>,
}

/// Output of `k3s.ready`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sReadyOutput {
    /// The Ready nodes' names, sorted.
    pub nodes: Vec<String>,
}

/// The `k3s.ready` kind.
pub struct K3sReady {
    pool: StepPool,
}

impl K3sReady {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }

    async fn check(
        &self,
        cx: &StepContext,
        input: &K3sReadyInput,
    ) -> Result<Result<K3sReadyOutput, String>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let Some(list) = nodes(&remote).await? else {
            return Ok(Err("the API server does not answer yet".into()));
        };
        let mut ready: Vec<String> = list
            .iter()
            .filter(|n| n.ready)
            .map(|n| n.name.clone())
            .collect();
        ready.sort();
        let missing: Vec<&String> = input.nodes.iter().filter(|n| !ready.contains(n)).collect();
        if !missing.is_empty() {
            return Ok(Err(format!(
                "not Ready yet: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(c) = input.count
            && ready.len() < c
        {
            return Ok(Err(format!("{} of {c} nodes Ready", ready.len())));
        }
        Ok(Ok(K3sReadyOutput { nodes: ready }))
    }
}

impl Step for K3sReady {
    const KIND: &'static str = "k3s.ready";
    type Input = K3sReadyInput;
    type Output = K3sReadyOutput;

    fn description(&self) -> &'static str {
        "Wait until the expected k3s nodes are Ready"
    }

    fn validate(&self, input: &K3sReadyInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        if input.nodes.is_empty() && input.count.is_none() {
            return Err(invalid("give `nodes` or `count`"));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sReadyInput,
    ) -> Result<Observed<K3sReadyOutput>, StepError> {
        Ok(match self.check(cx, input).await? {
            Ok(o) => Observed::Satisfied(o),
            Err(reason) => Observed::NotSatisfied {
                reason: Some(reason),
            },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sReadyInput,
    ) -> Result<Progress<K3sReadyOutput>, StepError> {
        Ok(match self.check(cx, input).await? {
            Ok(o) => Progress::Done(o),
            Err(reason) => {
                cx.info(&reason);
                Progress::Wait {
                    recheck_after: input.interval.map_or(Duration::from_secs(2), |i| i.get()),
                }
            }
        })
    }
}
