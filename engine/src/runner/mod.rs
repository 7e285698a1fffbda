//! The runner: schedules a plan's steps as a DAG, persists every transition, retries,
//! waits, times out, cancels, and resumes.
//!
//! `invocation` starts, resumes and reruns a run and drives the `scheduler` (a
//! synchronous state machine), which asks for `attempt` loops; steps see the engine
//! through the `host`.

mod attempt;
mod event;
mod host;
mod invocation;
mod scheduler;

pub use crate::state::RunStatus;
pub use event::{NoObserver, RunEvent, RunObserver};
pub use invocation::{Control, Outcome, RunError, RunOptions, Runner, new_run_id, read_secrets};
