//! siteflow step kinds that install and operate k3s over SSH: `k3s.install`,
//! `k3s.node-token`, `k3s.ready`, `k3s.kubeconfig`, `k3s.service-account-issuer`,
//! `k3s.registries`, `k3s.registry-credential`, `k3s.apply` and `k3s.uninstall`.
//!
//! Every kind takes an `ssh` target (see [`siteflow_ssh::steps::SshTargetInput`]), runs
//! through `sudo -n` unless told otherwise, is idempotent through `observe`, and restarts
//! k3s only when a file it owns changed. All kinds share the SSH pool given to [`steps`].

mod apply;
mod host;
mod install;
mod issuer;
mod kubeconfig;
mod kubeconfig_forget;
mod nodes;
mod ready;
mod registries;
mod registry_credential;
mod token;
mod uninstall;

pub use apply::{K3sApply, K3sApplyInput, K3sApplyOutput};
pub use install::{K3sInstall, K3sInstallInput, K3sInstallOutput, Role};
pub use issuer::{IssuerMode, K3sIssuer, K3sIssuerInput, K3sIssuerOutput};
pub use kubeconfig::{K3sKubeconfig, K3sKubeconfigInput, K3sKubeconfigOutput, OidcLogin};
pub use nodes::{
    K3sDrain, K3sDrainInput, K3sDrainOutput, K3sPruneNodes, K3sPruneNodesInput, K3sPruneNodesOutput,
};
pub use ready::{K3sReady, K3sReadyInput, K3sReadyOutput};
pub use registries::{K3sRegistries, K3sRegistriesInput, K3sRegistriesOutput};
pub use registry_credential::{
    K3sRegistryCredential, K3sRegistryCredentialInput, K3sRegistryCredentialOutput,
};
pub use siteflow_steps_kube::kubeconfig_file::merge_kubeconfig;
pub use token::{K3sNodeToken, K3sNodeTokenInput, K3sNodeTokenOutput};
pub use uninstall::{K3sUninstall, K3sUninstallInput, K3sUninstallOutput};

use siteflow_ssh::steps::StepPool;
use siteflow_step::DynStep;
use std::sync::Arc;

/// The k3s step kinds over `pool` (the binary's one pool, shared with the other kinds that
/// reach the same hosts).
pub fn steps(pool: StepPool) -> Vec<Arc<dyn DynStep>> {
    vec![
        Arc::new(K3sInstall::new(pool.clone())),
        Arc::new(K3sNodeToken::new(pool.clone())),
        Arc::new(K3sReady::new(pool.clone())),
        Arc::new(K3sKubeconfig::new(pool.clone())),
        Arc::new(K3sIssuer::new(pool.clone())),
        Arc::new(K3sRegistries::new(pool.clone())),
        Arc::new(K3sRegistryCredential::new(pool.clone())),
        Arc::new(K3sApply::new(pool.clone())),
        Arc::new(K3sDrain::new(pool.clone())),
        Arc::new(K3sPruneNodes::new(pool.clone())),
        Arc::new(K3sUninstall::new(pool)),
        Arc::new(kubeconfig_forget::K3sKubeconfigForget),
    ]
}
