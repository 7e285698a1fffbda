//! siteflow step kinds for Azure: resource groups, provider registration, networks, VMs, scale
//! sets and their power actions, AKS managed clusters, storage accounts and file shares, Key
//! Vault secrets, Graph service principals, applications with passwords, role assignments,
//! managed identities with federated credentials, and ACR tokens.
//!
//! Every kind observes before it applies (GET first), adopts what carries its siteflow tags,
//! reports drift in the step log, tags what it creates (`siteflow-site`, `siteflow-run`,
//! `siteflow-step`) and keeps long-running operations' poll URLs in its durable progress.

pub mod acr;
pub mod aks;
pub mod common;
pub mod forget_keys;
pub mod graph;
pub mod keys;
pub mod keyvault;
pub mod managed_identity;
pub mod mounts;
pub mod network;
pub mod providers;
pub mod resource_group;
pub mod role_assignment;
pub mod service_principal;
pub mod storage;
pub mod vm;
pub mod vmss;
pub mod vmss_power;

use siteflow_step::DynStep;
use std::sync::Arc;

/// Every Azure step kind, for the engine's registry.
pub fn steps() -> Vec<Arc<dyn DynStep>> {
    vec![
        Arc::new(resource_group::ResourceGroupStep),
        Arc::new(providers::RegisterProvidersStep),
        Arc::new(network::NetworkStep),
        Arc::new(vm::VmStep),
        Arc::new(vmss::VmssStep),
        Arc::new(vmss_power::VmssPowerStep),
        Arc::new(storage::StorageAccountStep),
        Arc::new(storage::FileShareStep),
        Arc::new(forget_keys::ForgetKeysStep),
        Arc::new(keyvault::KeyVaultSecretStep),
        Arc::new(graph::GraphServicePrincipalStep),
        Arc::new(acr::AcrTokenStep),
        Arc::new(aks::AksStep),
        Arc::new(service_principal::ServicePrincipalStep),
        Arc::new(role_assignment::RoleAssignmentStep),
        Arc::new(managed_identity::ManagedIdentityStep),
        Arc::new(managed_identity::FederatedCredentialStep),
    ]
}
