//! `k3s.node-token`: the join token from a server's `node-token` file, as a secret output
//! (never persisted; a resumed run observes this step again to get it back).

use crate::host::NODE_TOKEN;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError};
use std::time::Duration;

/// Input of `k3s.node-token`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sNodeTokenInput {
    /// The server.
    pub ssh: SshTargetInput,
    /// Recheck this often while the server has not written the token yet.
    #[serde(default)]
    pub interval: Option<siteflow_step::Duration>,
}

/// Output of `k3s.node-token`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sNodeTokenOutput {
    /// The join token.
    pub token: Secret<String>,
}

/// The `k3s.node-token` kind.
pub struct K3sNodeToken {
    pool: StepPool,
}

impl K3sNodeToken {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }

    async fn read(
        &self,
        cx: &StepContext,
        input: &K3sNodeTokenInput,
    ) -> Result<Option<K3sNodeTokenOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let Some(bytes) = remote.read_file(NODE_TOKEN).await? else {
            return Ok(None);
        };
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        if token.is_empty() {
            return Ok(None);
        }
        cx.add_secret(&token);
        Ok(Some(K3sNodeTokenOutput {
            token: Secret::new(token),
        }))
    }
}

impl Step for K3sNodeToken {
    const KIND: &'static str = "k3s.node-token";
    type Input = K3sNodeTokenInput;
    type Output = K3sNodeTokenOutput;

    fn description(&self) -> &'static str {
        "Read a k3s server's node token (a secret output)"
    }

    fn validate(&self, input: &K3sNodeTokenInput) -> Result<(), StepError> {
        input.ssh.validate()?;
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sNodeTokenInput,
    ) -> Result<Observed<K3sNodeTokenOutput>, StepError> {
        Ok(match self.read(cx, input).await? {
            Some(o) => Observed::Satisfied(o),
            None => Observed::NotSatisfied {
                reason: Some(format!("{NODE_TOKEN} does not exist yet")),
            },
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sNodeTokenInput,
    ) -> Result<Progress<K3sNodeTokenOutput>, StepError> {
        Ok(match self.read(cx, input).await? {
            Some(o) => Progress::Done(o),
            None => Progress::Wait {
                recheck_after: input.interval.map_or(Duration::from_secs(2), |i| i.get()),
            },
        })
    }
}
