//! The events a run reports as it goes, and the observers that receive them.

use crate::state::StepStatus;
use siteflow_step::{LogStream, StepError};
use std::time::Duration;

/// What happened, for progress displays.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run holds its lease and is about to schedule its steps.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// Whether an existing run goes on (`resume`, `rerun`) rather than a new one.
        resumed: bool,
    },
    /// An attempt started.
    Started {
        /// Instance key.
        key: String,
        /// Kind.
        kind: String,
        /// Attempt.
        attempt: u32,
    },
    /// An attempt failed and another follows after `delay`.
    Retrying {
        /// Instance key.
        key: String,
        /// The attempt that failed.
        attempt: u32,
        /// Delay.
        delay: Duration,
        /// Why.
        error: StepError,
    },
    /// The step waits for an operation in flight.
    Waiting {
        /// Instance key.
        key: String,
        /// Until the recheck.
        recheck_after: Duration,
    },
    /// A line of output (redacted).
    Log {
        /// Instance key.
        key: String,
        /// Stream.
        stream: LogStream,
        /// The line.
        line: String,
    },
    /// A step instance finished.
    Finished {
        /// Instance key.
        key: String,
        /// Final status.
        status: StepStatus,
        /// Note (reused, satisfied, skipped reason, error).
        note: Option<String>,
    },
}

/// Receives run events (the CLI's progress display).
pub trait RunObserver: Send + Sync {
    /// Called for each event, from any task.
    fn event(&self, e: &RunEvent);
}

/// An observer that ignores everything.
pub struct NoObserver;

impl RunObserver for NoObserver {
    fn event(&self, _: &RunEvent) {}
}
