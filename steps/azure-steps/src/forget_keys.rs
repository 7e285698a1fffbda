//! `azure.forget-keys`: removes the keys siteflow generated for a site's VMs and scale sets
//! (`.siteflow/keys/<site>/`: admin and host key pairs), once the site's resources are gone.
//! Nothing remote: the step only touches the working directory.

use serde::{Deserialize, Serialize};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

/// Input of `azure.forget-keys`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetKeysInput {}

/// Output of `azure.forget-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ForgetKeysOutput {
    /// The directory that was removed (or was already absent).
    pub removed: String,
}

/// The step kind.
pub struct ForgetKeysStep;

fn output(cx: &StepContext) -> ForgetKeysOutput {
    ForgetKeysOutput {
        removed: crate::keys::site_dir(cx).display().to_string(),
    }
}

impl Step for ForgetKeysStep {
    const KIND: &'static str = "azure.forget-keys";
    type Input = ForgetKeysInput;
    type Output = ForgetKeysOutput;

    fn description(&self) -> &'static str {
        "Removes the SSH keys siteflow generated for the site's VMs (.siteflow/keys/<site>/)"
    }

    fn validate(&self, _input: &ForgetKeysInput) -> Result<(), StepError> {
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        _input: &ForgetKeysInput,
    ) -> Result<Observed<ForgetKeysOutput>, StepError> {
        if cx.site.is_none() {
            return Err(StepError::permanent(
                "InvalidInput",
                "azure.forget-keys needs a site (run with --site): it removes that site's keys",
            ));
        }
        // As `Path::exists`: any error reads as absent.
        if tokio::fs::metadata(crate::keys::site_dir(cx)).await.is_ok() {
            return Ok(Observed::missing());
        }
        Ok(Observed::Satisfied(output(cx)))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        _input: &ForgetKeysInput,
    ) -> Result<Progress<ForgetKeysOutput>, StepError> {
        let dir = crate::keys::site_dir(cx);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => cx.info(&format!("removed {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StepError::permanent(
                    "LocalStateError",
                    format!("cannot remove {}: {e}", dir.display()),
                ));
            }
        }
        Ok(Progress::Done(output(cx)))
    }
}
