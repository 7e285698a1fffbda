//! A spec-faithful local Azure emulator for siteflow tests and the sandbox.
//!
//! One HTTPS endpoint (self-signed CA generated at start) serves Entra ID tokens, the ARM
//! control plane (resource groups, providers, network, compute, Arc connected clusters,
//! cluster extensions and Flux configurations, role assignments, user-assigned identities with
//! federated credentials), the Key Vault secrets data plane, a slice of Microsoft Graph
//! (service principals, applications and their passwords) and the ACR token exchange. Behaviour follows the REST specs and the ARM
//! RPC: api-version checks, long-running operations, error bodies, throttling headers.
//! Faults (429 storms, 5xx, slow or failing operations, write limits) are injected through
//! [`FaultControl`] or `/_emulator/faults`; every request lands in a redacted request log.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use siteflow_azure_emulator::Emulator;
//! let emu = Emulator::builder().time_scale(0.01).start().await?;
//! println!("ARM at {} (trust {})", emu.base_url(), emu.ca_pem_path().display());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod acr;
mod arcdp;
mod arm;
mod clock;
mod config;
mod control;
mod entra;
mod faults;
mod graph;
mod hook;
mod http;
mod keyvault;
mod log;
mod lro;
mod redact;
mod schema;
mod server;
mod tls;
mod token;

pub use config::{EmulatorConfig, GraphServicePrincipal, ServicePrincipal};
pub use faults::{Fault, FaultControl, FaultRule, WriteLimit};
pub use hook::{
    ClusterBacking, ClusterBackingHook, ManagedClusterSpec, PoolSpec, PowerChange, VmBacking,
    VmBackingHook, VmCreated, hook_fn, hook_fns, hook_fns_with_power,
};
pub use log::{LogEntry, RequestLog};
pub use server::{Emulator, EmulatorBuilder, EmulatorHandle};
