//! `noop`: does nothing; a join point and a benchmark workload.

use crate::sleep::Empty;
use schemars::JsonSchema;
use serde::Deserialize;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};

/// Does nothing.
pub struct Noop;

/// `noop` takes no input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopInput {}

impl Step for Noop {
    const KIND: &'static str = "noop";
    type Input = NoopInput;
    type Output = Empty;

    fn description(&self) -> &'static str {
        "Do nothing (a join point)"
    }

    async fn observe(&self, _: &StepContext, _: &NoopInput) -> Result<Observed<Empty>, StepError> {
        Ok(Observed::missing())
    }

    async fn apply(&self, _: &StepContext, _: &NoopInput) -> Result<Progress<Empty>, StepError> {
        Ok(Progress::Done(Empty {}))
    }
}
