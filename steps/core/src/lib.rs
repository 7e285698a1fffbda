//! Built-in siteflow steps: `shell`, `sleep`, `noop`, `wait_until`.

mod noop;
mod process;
mod shell;
mod sleep;
mod wait_until;

pub use noop::Noop;
pub use process::kill_running_scripts;
pub use shell::{Shell, ShellInput, ShellOutput};
pub use sleep::Sleep;
pub use wait_until::WaitUntil;

use siteflow_step::DynStep;
use std::sync::Arc;

/// Every built-in step kind, for the CLI's registry.
pub fn steps() -> Vec<Arc<dyn DynStep>> {
    vec![
        Arc::new(Shell),
        Arc::new(Sleep),
        Arc::new(Noop),
        Arc::new(WaitUntil),
    ]
}

/// Parses a duration input (`30s`, `5m`, `250ms`; a bare number is seconds).
pub(crate) fn duration(s: &str) -> Result<std::time::Duration, siteflow_step::StepError> {
    siteflow_step::parse_duration(s).map_err(|e| {
        siteflow_step::StepError::permanent("InvalidInput", format!("invalid duration `{s}`: {e}"))
    })
}
