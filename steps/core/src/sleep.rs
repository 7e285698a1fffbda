//! `sleep`: waits for a duration (cancellable).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};

/// Waits for a duration.
pub struct Sleep;

/// Input of `sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long: `30s`, `5m`, `250ms`.
    pub duration: siteflow_step::Duration,
}

/// `sleep` has no outputs.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl Step for Sleep {
    const KIND: &'static str = "sleep";
    type Input = SleepInput;
    type Output = Empty;

    fn description(&self) -> &'static str {
        "Wait for a duration"
    }

    async fn observe(&self, _: &StepContext, _: &SleepInput) -> Result<Observed<Empty>, StepError> {
        Ok(Observed::missing())
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &SleepInput,
    ) -> Result<Progress<Empty>, StepError> {
        let d = input.duration.get();
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(Progress::Done(Empty {})),
            _ = cx.cancel.cancelled() => Err(StepError::cancelled("sleep cancelled")),
        }
    }
}
