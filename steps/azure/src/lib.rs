//! The siteflow ARM client: credentials, clouds, long-running operations, retries, throttling.
//!
//! Requests go through an `azure_core` pipeline (bearer-token policy, siteflow's User-Agent)
//! on a rustls transport that also trusts a custom CA (the local emulator is just another
//! cloud). Idempotent requests (GET, PUT, DELETE, HEAD) are retried at the transport level on
//! 408/429/5xx and connection errors, honouring `Retry-After`; POSTs never are. Every request
//! carries an `x-ms-correlation-request-id`, also recorded on its span. Failures become
//! [`AzureError`]s, which convert into classified [`siteflow_step::StepError`]s.

mod client;
mod cloud;
mod credential;
mod error;
mod lro;
pub mod models;
mod throttle;
mod transport;

pub use client::{ArmClient, ArmResponse, ClientOptions, Service};
pub use cloud::{CloudConfig, CloudName, Endpoints};
pub use credential::{CredentialConfig, CredentialKind, CredentialSource, chain_from};
pub use error::AzureError;
pub use lro::{Begun, LroKind, LroPoller, LroStatus};
pub use throttle::{Limiter, limiter_for};
