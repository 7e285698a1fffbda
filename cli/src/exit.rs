//! Exit codes (documented in `--help` and the README) and the failure that carries one.

use siteflow_engine::diag::Diagnostics;
use siteflow_engine::runner::{RunError, RunStatus};
use siteflow_engine::state::{LeaseError, StoreError};

/// The command did what it was asked; a run succeeded.
pub(crate) const OK: u8 = 0;
/// A run failed (resumable), or an operational or internal error.
pub(crate) const FAILED: u8 = 1;
/// Invalid input (workflow, site file, `--set`, arguments): nothing was run or stored.
pub(crate) const INVALID_INPUT: u8 = 2;
/// The run is held by another runner, or this runner lost its lease to one.
pub(crate) const HELD: u8 = 3;
/// Interrupted (Ctrl-C, SIGTERM, SIGHUP) or cancelled (`siteflow cancel`); resumable.
pub(crate) const CANCELLED: u8 = 130;

/// The exit code of a run that ended with `status`.
pub(crate) fn for_run(status: RunStatus) -> u8 {
    match status {
        RunStatus::Succeeded => OK,
        RunStatus::Cancelled => CANCELLED,
        RunStatus::Failed | RunStatus::Queued | RunStatus::Running => FAILED,
    }
}

/// A failure with its exit code and report.
pub(crate) struct Failure {
    /// The exit code.
    pub code: u8,
    /// The report on stderr.
    pub message: String,
}

impl Failure {
    /// A failure exiting with `code`.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::new(INVALID_INPUT, d.to_string())
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(d) => d.into(),
            RunError::Secret { .. } | RunError::Usage(_) => {
                Failure::new(INVALID_INPUT, format!("error: {e}"))
            }
            RunError::Lease(l @ LeaseError::Held { .. }) => {
                Failure::new(HELD, format!("error: {l}"))
            }
            RunError::Store(l @ StoreError::LeaseLost) => Failure::new(HELD, format!("error: {l}")),
            other => Failure::new(FAILED, format!("error: {}", chain(&other))),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = if matches!(e, StoreError::NoSuchRun(_)) {
            INVALID_INPUT
        } else {
            FAILED
        };
        Failure::new(code, format!("error: {}", chain(&e)))
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_is_not_invalid_input() {
        let f = Failure::from(RunError::Internal("the compile task panicked".into()));
        assert_eq!(f.code, FAILED, "{}", f.message);
        let f = Failure::from(StoreError::Closed);
        assert_eq!(f.code, FAILED, "{}", f.message);
        let f = Failure::from(RunError::Usage("run r1 has no step `x`".into()));
        assert_eq!(f.code, INVALID_INPUT);
    }

    #[test]
    fn the_help_text_lists_every_exit_code() {
        for code in [OK, FAILED, INVALID_INPUT, HELD, CANCELLED] {
            let line = format!("\n  {code:<5}");
            assert!(
                crate::args::EXIT_CODES.contains(&line),
                "exit code {code} missing from:\n{}",
                crate::args::EXIT_CODES
            );
        }
    }

    #[test]
    fn run_statuses_map_to_their_exit_codes() {
        assert_eq!(for_run(RunStatus::Succeeded), 0);
        assert_eq!(for_run(RunStatus::Failed), 1);
        assert_eq!(for_run(RunStatus::Cancelled), 130);
    }
}
