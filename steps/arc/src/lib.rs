//! siteflow step kinds for Azure Arc-enabled Kubernetes.
//!
//! - `arc.connect`: what `az connectedk8s connect` does, natively: an RSA-4096 onboarding key
//!   (kept in a 0600 file, never in the state database), the `connectedClusters` resource with
//!   the OIDC issuer and workload identity, the agents' helm settings, then the agents chart
//!   installed into a k3s cluster over SSH (a `HelmChart` in k3s's auto-deploy folder whose
//!   private values come from a Secret applied over stdin); it waits until the agents have
//!   connected and the issuer URL is published.
//! - `arc.enable-features`: custom locations (with the Custom Locations RP's object id) and
//!   cluster connect, in the agents' values.
//! - `arc.extension`: a cluster extension (e.g. `microsoft.flux`).
//! - `arc.flux-configuration`: a Flux configuration (git source, kustomizations, https
//!   credentials as protected settings), waiting until the cluster reports it compliant.

pub mod config;
pub mod connect;
pub mod features;
mod onboarding;

use siteflow_ssh::steps::StepPool;
use siteflow_step::DynStep;
use std::sync::Arc;

/// The Arc step kinds; cluster targets reached over SSH share `pool` with the k3s kinds.
pub fn steps(pool: StepPool) -> Vec<Arc<dyn DynStep>> {
    vec![
        Arc::new(connect::ArcConnect::new(pool.clone())),
        Arc::new(features::ArcEnableFeatures::new(pool)),
        Arc::new(config::ArcExtension),
        Arc::new(config::ArcFluxConfiguration),
    ]
}
