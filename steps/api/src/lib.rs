//! The siteflow Step contract: what every step kind implements and what the engine calls.
//!
//! A step kind is a type implementing [`Step`]: typed input (unknown fields denied) and
//! output, a pure [`Step::validate`], a read-only [`Step::observe`] ("already satisfied?")
//! and an idempotent, cancel-safe [`Step::apply`] that may ask to be rechecked later
//! ([`Progress::Wait`]) instead of sleeping. Errors are classified where they happen
//! ([`StepError`]); the engine alone owns retries, time and cancellation.

mod blocking;
mod context;
mod digest;
pub mod duration;
mod dyn_step;
mod error;
pub mod quote;
pub mod script;
mod secret;

pub use blocking::blocking;
pub use context::{LogStream, NoopHost, StepContext, StepHost};
pub use digest::{sha256_file_hex, sha256_hex};
pub use duration::{Duration, parse_duration};
pub use dyn_step::{DynStep, InputError, PreparedInput};
pub use error::{ErrorClass, StepError};
pub use quote::shell_quote;
pub use secret::{SECRET_MARKER, Secret, reveal_secrets};

pub use async_trait::async_trait;
pub use schemars;
pub use tokio_util::sync::CancellationToken;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;

/// What `observe` found: the wanted state is already there, or it is not.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed<O> {
    /// Nothing to do: the outputs describe the existing state.
    Satisfied(O),
    /// `apply` must run; the reason is logged (e.g. drift found).
    NotSatisfied { reason: Option<String> },
}

impl<O> Observed<O> {
    /// Not satisfied, without a particular reason.
    pub fn missing() -> Self {
        Observed::NotSatisfied { reason: None }
    }
}

/// What one `apply` call achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<O> {
    /// Finished, with outputs.
    Done(O),
    /// Not finished yet (an operation in flight): the engine observes again after the delay
    /// and calls `apply` again if still not satisfied. Not a retry: no attempt is consumed.
    Wait {
        /// How long to wait before the recheck.
        recheck_after: std::time::Duration,
    },
}

/// One kind of step, e.g. `shell` or `k3s.install`.
pub trait Step: Send + Sync + 'static {
    /// The name workflows use in `uses:`.
    const KIND: &'static str;
    /// Typed input (`with:`); derive with `#[serde(deny_unknown_fields)]`.
    type Input: DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static;
    /// Typed output, persisted by the engine (fields of type [`Secret`] are not).
    type Output: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync;

    /// One line saying what the kind does, for `siteflow steps`.
    fn description(&self) -> &'static str;

    /// Pure checks beyond the input's shape; runs at validation time, before anything runs.
    fn validate(&self, _input: &Self::Input) -> Result<(), StepError> {
        Ok(())
    }

    /// Read-only: is the wanted state already there?
    fn observe(
        &self,
        cx: &StepContext,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Observed<Self::Output>, StepError>> + Send;

    /// Make it so. Idempotent, and safe to run again after cancellation at any `.await`.
    fn apply(
        &self,
        cx: &StepContext,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Progress<Self::Output>, StepError>> + Send;
}
