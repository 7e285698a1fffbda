//! The project's one shell-quoting function lives in `siteflow-step` (the expression filter
//! `shell_quote` uses it too); SSH re-exports it.

pub(crate) use siteflow_step::quote::is_env_name;
pub use siteflow_step::quote::shell_quote;
