//! The SQLite state store: runs, steps, attempts, events, run values.

mod schema;
mod store;

pub use store::{
    AttemptRow, EventRow, LEASE_TTL, Lease, LeaseError, RunRow, StateStore, StepRow, StoreError,
    Unlock, Write, now_ms,
};
