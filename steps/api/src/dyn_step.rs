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

/// A step's input deserialized and validated once (by [`DynStep::prepare`]), for every
/// observe and apply of one attempt.
pub struct PreparedInput(Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for PreparedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedInput(..)")
    }
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
    /// Deserializes and validates a rendered input once, for the calls of one attempt
    /// (a permanent `InvalidInput` when it does not fit).
    fn prepare(&self, input: &Value) -> Result<PreparedInput, StepError>;
    /// [`Step::observe`] on a prepared input; outputs serialized with secrets marked.
    async fn observe_prepared(
        &self,
        cx: &StepContext,
        input: &PreparedInput,
    ) -> Result<Observed<Value>, StepError>;
    /// [`Step::apply`] on a prepared input; outputs serialized with secrets marked.
    async fn apply_prepared(
        &self,
        cx: &StepContext,
        input: &PreparedInput,
    ) -> Result<Progress<Value>, StepError>;
    /// [`Step::observe`] on a JSON input (prepared for this one call).
    async fn observe(&self, cx: &StepContext, input: &Value) -> Result<Observed<Value>, StepError> {
        let prepared = self.prepare(input)?;
        self.observe_prepared(cx, &prepared).await
    }
    /// [`Step::apply`] on a JSON input (prepared for this one call).
    async fn apply(&self, cx: &StepContext, input: &Value) -> Result<Progress<Value>, StepError> {
        let prepared = self.prepare(input)?;
        self.apply_prepared(cx, &prepared).await
    }
}

fn typed<S: Step>(input: &PreparedInput) -> Result<&S::Input, StepError> {
    input.0.downcast_ref::<S::Input>().ok_or_else(|| {
        StepError::permanent(
            "InvalidInput",
            format!(
                "an input prepared for another kind was given to {}",
                S::KIND
            ),
        )
    })
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

    fn prepare(&self, input: &Value) -> Result<PreparedInput, StepError> {
        let typed = parse::<S>(input).map_err(invalid_input)?;
        // The rendered input: `validate` at compile time could not see what expressions gave.
        self.validate(&typed)?;
        Ok(PreparedInput(Box::new(typed)))
    }

    async fn observe_prepared(
        &self,
        cx: &StepContext,
        input: &PreparedInput,
    ) -> Result<Observed<Value>, StepError> {
        match Step::observe(self, cx, typed::<S>(input)?).await? {
            Observed::Satisfied(o) => Ok(Observed::Satisfied(to_json(&o)?)),
            Observed::NotSatisfied { reason } => Ok(Observed::NotSatisfied { reason }),
        }
    }

    async fn apply_prepared(
        &self,
        cx: &StepContext,
        input: &PreparedInput,
    ) -> Result<Progress<Value>, StepError> {
        match Step::apply(self, cx, typed::<S>(input)?).await? {
            Progress::Done(o) => Ok(Progress::Done(to_json(&o)?)),
            Progress::Wait { recheck_after } => Ok(Progress::Wait { recheck_after }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static PARSED: AtomicUsize = AtomicUsize::new(0);

    /// An input that counts how often it is deserialized.
    #[derive(schemars::JsonSchema)]
    struct Counted {
        #[allow(dead_code)]
        n: u32,
    }

    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            #[derive(serde::Deserialize)]
            struct Raw {
                n: u32,
            }
            PARSED.fetch_add(1, Ordering::SeqCst);
            Raw::deserialize(d).map(|r| Counted { n: r.n })
        }
    }

    struct Kind;

    impl Step for Kind {
        const KIND: &'static str = "test.counted";
        type Input = Counted;
        type Output = serde_json::Value;
        fn description(&self) -> &'static str {
            "counts its input's deserializations"
        }
        async fn observe(
            &self,
            _: &StepContext,
            _: &Counted,
        ) -> Result<Observed<serde_json::Value>, StepError> {
            Ok(Observed::NotSatisfied { reason: None })
        }
        async fn apply(
            &self,
            _: &StepContext,
            _: &Counted,
        ) -> Result<Progress<serde_json::Value>, StepError> {
            Ok(Progress::Done(serde_json::json!({})))
        }
    }

    #[tokio::test]
    async fn a_prepared_input_is_deserialized_once_for_every_call_of_an_attempt() {
        let cx = StepContext::new(
            "r",
            None,
            "s",
            "test.counted",
            1,
            std::env::temp_dir(),
            Default::default(),
            Arc::new(crate::context::NoopHost),
        );
        let kind: Arc<dyn DynStep> = Arc::new(Kind);
        let input = serde_json::json!({"n": 1});
        let before = PARSED.load(Ordering::SeqCst);
        let prepared = kind.prepare(&input).unwrap();
        for _ in 0..3 {
            kind.observe_prepared(&cx, &prepared).await.unwrap();
            kind.apply_prepared(&cx, &prepared).await.unwrap();
        }
        assert_eq!(PARSED.load(Ordering::SeqCst) - before, 1);
        // The one-call form prepares each time.
        kind.observe(&cx, &input).await.unwrap();
        assert_eq!(PARSED.load(Ordering::SeqCst) - before, 2);
        // A bad input is the permanent InvalidInput error.
        let err = kind.prepare(&serde_json::json!({"n": "x"})).unwrap_err();
        assert_eq!(err.code, "InvalidInput");
    }
}
