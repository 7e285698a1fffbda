//! The VM backing hook: lets a test host stand in for a VM the emulator creates.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

/// What the emulator knows about a VM (or scale-set instance) being created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCreated {
    /// ARM resource id of the VM (for scale-set instances: the instance id path).
    pub resource_id: String,
    /// The VM's resource name (scale-set instances: `<vmss>_<n>`).
    pub name: String,
    /// `osProfile.computerName` (or the scale set's prefix plus instance suffix).
    pub computer_name: String,
    /// The resource group.
    pub resource_group: String,
    /// The scale set, for scale-set instances.
    pub scale_set: Option<String>,
    /// `osProfile.adminUsername`.
    pub admin_username: Option<String>,
    /// `osProfile.linuxConfiguration.ssh.publicKeys[].keyData`.
    pub ssh_public_keys: Vec<String>,
    /// `osProfile.customData`, base64-decoded (lossy UTF-8).
    pub custom_data: Option<String>,
    /// The private address the VNet gave the VM's primary NIC (a backing host should take it).
    pub private_ip: Option<IpAddr>,
    /// The subnet of that NIC (its VNet is the id's parent): hosts of one VNet can reach each
    /// other's private addresses.
    pub subnet_id: Option<String>,
}

/// The addresses to report for a backed VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmBacking {
    /// Reported as the primary NIC's private IP address.
    pub private_ip: IpAddr,
    /// Reported as the public IP's address; `None` reports `private_ip` there too.
    pub public_ip: Option<IpAddr>,
}

/// A power action on a backed VM (or scale-set instance), as Compute's POST actions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerChange {
    /// `powerOff`: the host stops (the VM stays allocated).
    PowerOff,
    /// `deallocate`: the host stops (and the VM is deallocated).
    Deallocate,
    /// `start`: the host starts.
    Start,
    /// `restart`: the host stops and starts again.
    Restart,
    /// `reimage`: the OS disk goes back to the image; the VM runs afterwards.
    Reimage,
}

/// Called when a VM is created; the create operation finishes once this returns.
/// An `Err` makes the operation end `Failed` with code `VMProvisioningFailed`.
pub trait VmBackingHook: Send + Sync + 'static {
    /// Start (or find) a host for `vm`; return its addresses.
    fn vm_created(
        &self,
        vm: VmCreated,
    ) -> Pin<Box<dyn Future<Output = Result<VmBacking, String>> + Send + '_>>;

    /// Called when a VM (or scale-set instance) the hook backed is deleted (a scale-in, a
    /// delete): the host should go away with it. By default nothing happens.
    fn vm_deleted(&self, _resource_id: String) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// Called when a power action on a VM (or scale-set instance) the hook backed runs; the
    /// action's operation finishes once this returns, and fails on an `Err`. By default
    /// nothing happens.
    fn vm_power(
        &self,
        _resource_id: String,
        _change: PowerChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

struct FnHook<F>(F);

struct FnHooks<F, D>(F, D);

struct PowerHooks<F, D, P>(F, D, P);

impl<F, Fut, D, DFut, P, PFut> VmBackingHook for PowerHooks<F, D, P>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
    D: Fn(String) -> DFut + Send + Sync + 'static,
    DFut: Future<Output = ()> + Send + 'static,
    P: Fn(String, PowerChange) -> PFut + Send + Sync + 'static,
    PFut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn vm_created(
        &self,
        vm: VmCreated,
    ) -> Pin<Box<dyn Future<Output = Result<VmBacking, String>> + Send + '_>> {
        Box::pin((self.0)(vm))
    }

    fn vm_deleted(&self, resource_id: String) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin((self.1)(resource_id))
    }

    fn vm_power(
        &self,
        resource_id: String,
        change: PowerChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin((self.2)(resource_id, change))
    }
}

/// Wraps three async closures as a [`VmBackingHook`]: one backs created VMs, one releases
/// deleted ones, one carries out power actions on their hosts.
pub fn hook_fns_with_power<F, Fut, D, DFut, P, PFut>(
    created: F,
    deleted: D,
    power: P,
) -> Arc<dyn VmBackingHook>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
    D: Fn(String) -> DFut + Send + Sync + 'static,
    DFut: Future<Output = ()> + Send + 'static,
    P: Fn(String, PowerChange) -> PFut + Send + Sync + 'static,
    PFut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(PowerHooks(created, deleted, power))
}

impl<F, Fut, D, DFut> VmBackingHook for FnHooks<F, D>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
    D: Fn(String) -> DFut + Send + Sync + 'static,
    DFut: Future<Output = ()> + Send + 'static,
{
    fn vm_created(
        &self,
        vm: VmCreated,
    ) -> Pin<Box<dyn Future<Output = Result<VmBacking, String>> + Send + '_>> {
        Box::pin((self.0)(vm))
    }

    fn vm_deleted(&self, resource_id: String) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin((self.1)(resource_id))
    }
}

/// Wraps two async closures as a [`VmBackingHook`]: one backs created VMs, the other
/// releases deleted ones.
pub fn hook_fns<F, Fut, D, DFut>(created: F, deleted: D) -> Arc<dyn VmBackingHook>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
    D: Fn(String) -> DFut + Send + Sync + 'static,
    DFut: Future<Output = ()> + Send + 'static,
{
    Arc::new(FnHooks(created, deleted))
}

impl<F, Fut> VmBackingHook for FnHook<F>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
{
    fn vm_created(
        &self,
        vm: VmCreated,
    ) -> Pin<Box<dyn Future<Output = Result<VmBacking, String>> + Send + '_>> {
        Box::pin((self.0)(vm))
    }
}

/// Wraps an async closure as a [`VmBackingHook`].
pub fn hook_fn<F, Fut>(f: F) -> Arc<dyn VmBackingHook>
where
    F: Fn(VmCreated) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<VmBacking, String>> + Send + 'static,
{
    Arc::new(FnHook(f))
}

/// One agent pool of a managed cluster, as the cluster hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The pool's name (its nodes are `aks-<pool>-<n>`).
    pub name: String,
    /// Nodes wanted.
    pub count: u32,
    /// `System` or `User`.
    pub mode: String,
    /// `nodeLabels`.
    pub node_labels: Vec<(String, String)>,
    /// `nodeTaints` (`key=value:Effect`).
    pub node_taints: Vec<String>,
}

/// What a managed cluster (AKS) should look like: sent when it is created and whenever its
/// pools change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedClusterSpec {
    /// ARM resource id of the managed cluster.
    pub resource_id: String,
    /// Its name.
    pub name: String,
    /// The resource group.
    pub resource_group: String,
    /// The Kubernetes version asked for.
    pub kubernetes_version: String,
    /// The API server's host name (`fqdn`).
    pub fqdn: String,
    /// The service-account issuer the API server must use (OIDC issuer enabled), else `None`.
    pub oidc_issuer_url: Option<String>,
    /// Agent pools.
    pub pools: Vec<PoolSpec>,
    /// The credential AKS's extension manager in the cluster uses with the extension data
    /// plane (`extension_endpoint`): it pulls the cluster's extensions and Flux
    /// configurations and reports their compliance, as the Arc agent does for a connected
    /// cluster (a secret: give it to the cluster only).
    pub extension_agent_token: String,
    /// The extension data plane.
    pub extension_endpoint: String,
}

/// Where a backed managed cluster's API server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBacking {
    /// `https://host:port` of the API server.
    pub server_url: String,
    /// PEM of the CA its serving certificate chains to.
    pub ca_pem: String,
    /// A cluster-admin bearer token (the local admin account's credential).
    pub admin_token: String,
}

/// Backs managed clusters with real (simulated) Kubernetes API servers. The create or pool
/// change finishes once [`ClusterBackingHook::cluster_reconciled`] returns; an `Err` fails it.
pub trait ClusterBackingHook: Send + Sync + 'static {
    /// Create the cluster, or bring its nodes to `spec`'s pools.
    fn cluster_reconciled(
        &self,
        spec: ManagedClusterSpec,
    ) -> Pin<Box<dyn Future<Output = Result<ClusterBacking, String>> + Send + '_>>;

    /// The managed cluster was deleted: its hosts should go away with it.
    fn cluster_deleted(
        &self,
        _resource_id: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}
