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
