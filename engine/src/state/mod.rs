//! The SQLite state store: runs, steps, attempts, events, run values.

mod schema;
mod status;
mod store;

pub use status::{AttemptOutcome, RunStatus, StepStatus};
pub use store::{
    AttemptRow, EventRow, LEASE_TTL, Lease, LeaseError, RunRow, StateStore, StepRow, StoreError,
    Unlock, Write, now_ms,
};
