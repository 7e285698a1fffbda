//! Classified step errors with stable codes.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the engine should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth another attempt, optionally not before `after`.
    Retryable {
        #[serde(default, with = "opt_millis")]
        after: Option<Duration>,
    },
    /// The remote side asked us to slow down (429); retried, honouring `after`.
    Throttled {
        #[serde(default, with = "opt_millis")]
        after: Option<Duration>,
    },
    /// Another attempt cannot help; the message says what to do.
    Permanent,
    /// The attempt was cancelled (Ctrl-C, `siteflow cancel`); resumable.
    Cancelled,
}

impl ErrorClass {
    /// The class name as stored and shown: `retryable`, `throttled`, `permanent`, `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorClass::Retryable { .. } => "retryable",
            ErrorClass::Throttled { .. } => "throttled",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Cancelled => "cancelled",
        }
    }

    /// The delay the error itself asks for (e.g. `Retry-After`).
    pub fn after(&self) -> Option<Duration> {
        match self {
            ErrorClass::Retryable { after } | ErrorClass::Throttled { after } => *after,
            _ => None,
        }
    }

    /// Whether another attempt may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorClass::Retryable { .. } | ErrorClass::Throttled { .. }
        )
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// An error a step reports: a class, a stable code (`ExitStatus`, `HostKeyMismatch`,
/// `AuthorizationFailed`) and a message that says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StepError {
    /// How the engine treats it.
    #[serde(flatten)]
    pub class: ErrorClass,
    /// A stable identifier, matched by `retry.non_retryable_errors`.
    pub code: String,
    /// Human-readable; never contains secret values.
    pub message: String,
}

impl StepError {
    /// An error worth retrying.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Retryable { after: None }, code, message)
    }

    /// An error no retry can fix.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, code, message)
    }

    /// The remote side throttled us.
    pub fn throttled(after: Option<Duration>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Throttled { after }, "Throttled", message)
    }

    /// The attempt was cancelled.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Cancelled, "Cancelled", message)
    }

    /// Any class.
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code: code.into(),
            message: message.into(),
        }
    }

    /// The same error, asking not to be retried before `after` (e.g. `Retry-After`).
    pub fn with_after(mut self, after: Duration) -> Self {
        match &mut self.class {
            ErrorClass::Retryable { after: a } | ErrorClass::Throttled { after: a } => {
                *a = Some(after)
            }
            _ => {}
        }
        self
    }
}
