//! `k3s.uninstall`: runs the uninstall scripts the k3s installer left on the host.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_ssh::steps::{SshTargetInput, StepPool};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};

/// Input of `k3s.uninstall`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sUninstallInput {
    /// The node.
    pub ssh: SshTargetInput,
}

/// Output of `k3s.uninstall`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct K3sUninstallOutput {
    /// The host k3s is gone from.
    pub host: String,
}

/// The `k3s.uninstall` kind.
pub struct K3sUninstall {
    pool: StepPool,
}

impl K3sUninstall {
    /// The kind over `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

const PRESENT: &str = "[ -e /usr/local/bin/k3s ] || [ -e /usr/local/bin/k3s-uninstall.sh ] || \
                       [ -e /usr/local/bin/k3s-agent-uninstall.sh ]";

impl Step for K3sUninstall {
    const KIND: &'static str = "k3s.uninstall";
    type Input = K3sUninstallInput;
    type Output = K3sUninstallOutput;

    fn description(&self) -> &'static str {
        "Uninstall k3s (server or agent) with the installer's uninstall scripts"
    }

    fn validate(&self, input: &K3sUninstallInput) -> Result<(), StepError> {
        input.ssh.validate()
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &K3sUninstallInput,
    ) -> Result<Observed<K3sUninstallOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        let out = remote.exec(&remote.request(PRESENT)).await?;
        Ok(if out.success() {
            Observed::NotSatisfied {
                reason: Some("k3s is installed".into()),
            }
        } else {
            Observed::Satisfied(K3sUninstallOutput {
                host: input.ssh.host.clone(),
            })
        })
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &K3sUninstallInput,
    ) -> Result<Progress<K3sUninstallOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.ssh, true).await?;
        remote
            .run(
                "set -e\nfor s in /usr/local/bin/k3s-agent-uninstall.sh /usr/local/bin/k3s-uninstall.sh; do\n  \
                 if [ -x \"$s\" ]; then \"$s\"; fi\ndone\n\
                 if [ -e /usr/local/bin/k3s ]; then echo 'k3s is still installed: no uninstall script removed it' >&2; exit 1; fi",
            )
            .await?;
        Ok(Progress::Done(K3sUninstallOutput {
            host: input.ssh.host.clone(),
        }))
    }
}
