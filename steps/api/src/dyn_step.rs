//! The object-safe face of a [`Step`], seen by the engine: JSON in, JSON out.

use crate::{Observed, Progress, Step, StepContext, StepError, reveal_secrets};
use serde_json::Value;

/// An input that does not fit the kind: where (a path into `with`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// Path segments into the `with` value: field names and list indices.
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
}

/// A step kind behind a pointer: what the engine's registry holds.
#[async_trait::async_trait]
pub trait DynStep: Send + Sync {
    /// The kind name (`shell`).
    fn kind(&self) -> &'static str;
    /// One-line description.
    fn description(&self) -> &'static str;
    /// JSON Schema of the input.
    fn input_schema(&self) -> Value;
    /// JSON Schema of the output.
    fn output_schema(&self) -> Value;
    /// Deserializes and validates an input without running anything.
    fn check_input(&self, input: &Value) -> Result<(), InputError>;
    /// [`Step::observe`] on a JSON input; outputs serialized with secrets marked.
    async fn observe(&self, cx: &StepContext, input: &Value) -> Result<Observed<Value>, StepError>;
    /// [`Step::apply`] on a JSON input; outputs serialized with secrets marked.
    async fn apply(&self, cx: &StepContext, input: &Value) -> Result<Progress<Value>, StepError>;
}

fn parse<S: Step>(input: &Value) -> Result<S::Input, InputError> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        InputError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

fn invalid_input(e: InputError) -> StepError {
    let at = if e.path.is_empty() {
        String::new()
    } else {
        format!(" at `{}`", e.path.join("."))
    };
    StepError::permanent("InvalidInput", format!("invalid input{at}: {}", e.message))
}

fn to_json<O: serde::Serialize>(o: &O) -> Result<Value, StepError> {
    reveal_secrets(|| serde_json::to_value(o))
        .map_err(|e| StepError::permanent("InvalidOutput", format!("output not serializable: {e}")))
}

fn schema_of<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

#[async_trait::async_trait]
impl<S: Step> DynStep for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn description(&self) -> &'static str {
        Step::description(self)
    }

    fn input_schema(&self) -> Value {
        schema_of::<S::Input>()
    }

    fn output_schema(&self) -> Value {
        schema_of::<S::Output>()
    }

    fn check_input(&self, input: &Value) -> Result<(), InputError> {
        let typed = parse::<S>(input)?;
        self.validate(&typed).map_err(|e| InputError {
            path: vec![],
            message: e.message,
        })
    }

    async fn observe(&self, cx: &StepContext, input: &Value) -> Result<Observed<Value>, StepError> {
        let typed = parse::<S>(input).map_err(invalid_input)?;
        // The rendered input: `validate` at compile time could not see what expressions gave.
        self.validate(&typed)?;
        match Step::observe(self, cx, &typed).await? {
            Observed::Satisfied(o) => Ok(Observed::Satisfied(to_json(&o)?)),
            Observed::NotSatisfied { reason } => Ok(Observed::NotSatisfied { reason }),
        }
    }

    async fn apply(&self, cx: &StepContext, input: &Value) -> Result<Progress<Value>, StepError> {
        let typed = parse::<S>(input).map_err(invalid_input)?;
        self.validate(&typed)?;
        match Step::apply(self, cx, &typed).await? {
            Progress::Done(o) => Ok(Progress::Done(to_json(&o)?)),
            Progress::Wait { recheck_after } => Ok(Progress::Wait { recheck_after }),
        }
    }
}
