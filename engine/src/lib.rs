//! The siteflow engine: workflow spec, DAG, expressions, state store, scheduler, retries, telemetry.
//!
//! The engine knows nothing of Azure, SSH or k3s: step kinds come in through a
//! [`registry::Registry`] of [`siteflow_step::DynStep`]s.

pub mod diag;
pub mod expr;
pub mod plan;
pub mod plan_view;
pub mod redact;
pub mod registry;
pub mod report;
pub mod retry;
pub mod runner;
pub mod schema;
pub mod spec;
pub mod state;
pub mod telemetry;
pub mod template;
#[cfg(test)]
mod test_kind;
pub mod yaml;
