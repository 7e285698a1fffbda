//! A step kind for the engine's unit tests: it exists in a registry with a given input
//! type, and does nothing (the compiler and the scheduler never run a step).

use crate::plan::{SourceText, Sources};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError};
use std::marker::PhantomData;

/// An input type that names the kind it belongs to.
pub(crate) trait KindInput:
    serde::de::DeserializeOwned + siteflow_step::schemars::JsonSchema + Send + Sync + 'static
{
    /// The kind's name.
    const KIND: &'static str;
}

/// A kind with input `I` that does nothing.
pub(crate) struct Inert<I>(PhantomData<fn() -> I>);

impl<I> Inert<I> {
    pub(crate) fn new() -> Self {
        Inert(PhantomData)
    }
}

impl<I: KindInput> Step for Inert<I> {
    const KIND: &'static str = I::KIND;
    type Input = I;
    type Output = serde_json::Value;

    fn description(&self) -> &'static str {
        "does nothing"
    }

    async fn observe(
        &self,
        _: &StepContext,
        _: &I,
    ) -> Result<Observed<serde_json::Value>, StepError> {
        Ok(Observed::missing())
    }

    async fn apply(
        &self,
        _: &StepContext,
        _: &I,
    ) -> Result<Progress<serde_json::Value>, StepError> {
        Ok(Progress::Done(serde_json::Value::Null))
    }
}

/// Sources of a workflow `wf.yaml` alone.
pub(crate) fn workflow_sources(yaml: &str) -> Sources {
    Sources {
        workflow: SourceText {
            path: "wf.yaml".into(),
            text: yaml.into(),
        },
        site: None,
        groups: vec![],
        sets: vec![],
    }
}
