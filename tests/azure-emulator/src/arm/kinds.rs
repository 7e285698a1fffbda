//! The resource types the emulator serves: api-versions, schemas and LRO shape per type.

use crate::schema::SchemaFile;

/// Which module implements the type's specifics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Network,
    Compute,
    Cluster,
    K8sConfig,
    /// Microsoft.ContainerService managed clusters (AKS) and their agent pools.
    Aks,
    /// Microsoft.Authorization (synchronous; no registration needed).
    Authorization,
    /// Microsoft.ManagedIdentity (synchronous).
    ManagedIdentity,
    /// Microsoft.Storage (`storage.rs`: its own request flow).
    Storage,
}

/// Headers on a long-running PUT/PATCH/DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LroHeaders {
    /// `Azure-AsyncOperation` (network, connectedClusters, extensions, flux PUT).
    AsyncOperation,
    /// `Location` plus `Azure-AsyncOperation` (compute, which also sends the operation URL).
    LocationAndAsync,
}

/// How PATCH behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchStyle {
    /// Synchronous tags update (network `update_tags`).
    SyncTags,
    /// 200 with the updating resource plus LRO headers (compute `begin_update`).
    Lro200,
    /// 202 with `Location` (connectedClusters).
    Lro202Location,
    /// 202 with `Azure-AsyncOperation` (extensions, flux).
    Lro202Async,
}

pub(crate) struct Kind {
    /// Canonical `Namespace/type[/child]`.
    pub(crate) ty: &'static str,
    pub(crate) api_versions: &'static [&'static str],
    pub(crate) schema: Option<(SchemaFile, &'static str)>,
    pub(crate) patch_schema: Option<(SchemaFile, &'static str)>,
    pub(crate) family: Family,
    pub(crate) put_headers: LroHeaders,
    pub(crate) delete_async_header: bool,
    pub(crate) patch: PatchStyle,
    /// `provisioningState` values while a create runs, in order.
    pub(crate) create_stages: &'static [&'static str],
    /// Multiplier on the configured LRO duration.
    pub(crate) duration_factor: f64,
    /// Has `location` and `tags`.
    pub(crate) tracked: bool,
    /// Only the emulator creates these (scale-set instances).
    pub(crate) read_only: bool,
}

impl Kind {
    pub(crate) fn namespace(&self) -> &'static str {
        self.ty.split('/').next().unwrap_or(self.ty)
    }

    /// Canonical type segments after the namespace.
    pub(crate) fn type_segments(&self) -> Vec<&'static str> {
        self.ty.split('/').skip(1).collect()
    }
}

pub(crate) const NETWORK_VERSIONS: &[&str] = &[
    "2018-10-01",
    "2020-11-01",
    "2021-02-01",
    "2021-05-01",
    "2021-08-01",
    "2022-01-01",
    "2022-05-01",
    "2022-07-01",
    "2022-09-01",
    "2022-11-01",
    "2023-02-01",
    "2023-04-01",
    "2023-05-01",
    "2023-06-01",
    "2023-09-01",
    "2023-11-01",
    "2024-01-01",
    "2024-03-01",
    "2024-05-01",
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-03-01",
    "2025-05-01",
    "2026-03-01",
];
pub(crate) const COMPUTE_VERSIONS: &[&str] = &[
    "2017-03-30",
    "2018-10-01",
    "2021-03-01",
    "2021-07-01",
    "2021-11-01",
    "2022-03-01",
    "2022-08-01",
    "2022-11-01",
    "2023-03-01",
    "2023-07-01",
    "2023-09-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-04-01",
    "2026-04-01",
];
pub(crate) const CLUSTER_VERSIONS: &[&str] = &[
    "2021-03-01",
    "2021-10-01",
    "2022-05-01-preview",
    "2022-10-01-preview",
    "2023-11-01-preview",
    "2024-01-01",
    "2024-02-01-preview",
    "2024-06-01-preview",
    "2024-07-01-preview",
    "2024-07-15-preview",
    "2024-12-01-preview",
    "2025-08-01-preview",
    "2026-05-01",
];
pub(crate) const EXTENSION_VERSIONS: &[&str] = &[
    "2020-07-01-preview",
    "2021-09-01",
    "2022-03-01",
    "2022-11-01",
    "2023-05-01",
    "2024-11-01",
    "2025-03-01",
];
pub(crate) const FLUX_VERSIONS: &[&str] = &[
    "2021-11-01-preview",
    "2022-03-01",
    "2022-07-01",
    "2022-11-01",
    "2023-05-01",
    "2024-11-01",
    "2025-04-01",
];
/// Microsoft.ContainerService managedClusters (stable folders; azure-mgmt-containerservice
/// 41.8 sends 2026-08-01).
pub(crate) const AKS_VERSIONS: &[&str] = &[
    "2017-08-31",
    "2019-04-01",
    "2020-03-01",
    "2021-05-01",
    "2022-04-01",
    "2023-01-01",
    "2023-08-01",
    "2024-02-01",
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-05-01",
    "2025-08-01",
    "2025-10-01",
    "2026-01-01",
    "2026-03-01",
    "2026-08-01",
];
/// Microsoft.Authorization role assignments and definitions (the spec folder's newest stable
/// is 2022-04-01, which az and azure-mgmt-authorization 4 send).
pub(crate) const AUTHORIZATION_VERSIONS: &[&str] = &[
    "2015-07-01",
    "2018-01-01-preview",
    "2018-09-01-preview",
    "2020-04-01-preview",
    "2020-10-01-preview",
    "2022-04-01",
];
/// Microsoft.ManagedIdentity (newest stable in the spec folder: 2026-05-31; azure-mgmt-msi
/// 7.1 sends 2024-11-30).
pub(crate) const MSI_VERSIONS: &[&str] = &[
    "2015-08-31-preview",
    "2018-11-30",
    "2021-09-30-preview",
    "2022-01-31-preview",
    "2023-01-31",
    "2023-07-31-preview",
    "2024-11-30",
    "2025-01-31-preview",
    "2026-04-30",
    "2026-05-31",
];
/// Microsoft.Storage: the published stable range, up to azure-mgmt-storage 25.3's default.
pub(crate) const STORAGE_VERSIONS: &[&str] = &[
    "2016-01-01",
    "2019-06-01",
    "2021-09-01",
    "2022-09-01",
    "2023-01-01",
    "2023-05-01",
    "2024-01-01",
    "2025-01-01",
    "2025-06-01",
    "2026-09-01",
];
/// Microsoft.Resources: resource groups and providers (old versions too: azure-mgmt-core
/// auto-registration uses 2016-02-01, az 2.91 uses 2024-11-01).
pub(crate) const RESOURCES_VERSIONS: &[&str] = &[
    "2015-01-01",
    "2015-11-01",
    "2016-02-01",
    "2016-06-01",
    "2016-07-01",
    "2016-09-01",
    "2017-05-10",
    "2018-02-01",
    "2018-05-01",
    "2019-05-01",
    "2019-05-10",
    "2019-07-01",
    "2019-08-01",
    "2019-10-01",
    "2020-06-01",
    "2020-08-01",
    "2020-10-01",
    "2021-01-01",
    "2021-04-01",
    "2022-09-01",
    "2022-12-01",
    "2023-07-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
    "2025-03-01",
    "2025-04-01",
];
/// `/subscriptions` and `/tenants` (Microsoft.Resources subscriptions API).
pub(crate) const SUBSCRIPTION_VERSIONS: &[&str] = &[
    "2014-04-01-preview",
    "2015-11-01",
    "2016-06-01",
    "2018-06-01",
    "2019-06-01",
    "2019-11-01",
    "2020-01-01",
    "2021-01-01",
    "2022-01-01",
    "2022-12-01",
    "2024-11-01",
];
/// `/metadata/endpoints`.
pub(crate) const METADATA_VERSIONS: &[&str] = &[
    "2015-01-01",
    "2018-01-01",
    "2019-05-01",
    "2020-06-01",
    "2022-09-01",
];

const NET_STAGES: &[&str] = &["Updating"];
const CREATE_STAGES: &[&str] = &["Creating"];

const fn network(ty: &'static str, root: &'static str, tracked: bool) -> Kind {
    Kind {
        ty,
        api_versions: NETWORK_VERSIONS,
        schema: Some((SchemaFile::Network, root)),
        patch_schema: None,
        family: Family::Network,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: true,
        patch: PatchStyle::SyncTags,
        create_stages: NET_STAGES,
        duration_factor: 0.5,
        tracked,
        read_only: false,
    }
}

const fn compute(ty: &'static str, root: Option<&'static str>, read_only: bool) -> Kind {
    Kind {
        ty,
        api_versions: COMPUTE_VERSIONS,
        schema: match root {
            Some(r) => Some((SchemaFile::Compute, r)),
            None => None,
        },
        patch_schema: None,
        family: Family::Compute,
        put_headers: LroHeaders::LocationAndAsync,
        delete_async_header: true,
        patch: PatchStyle::Lro200,
        create_stages: CREATE_STAGES,
        duration_factor: 1.5,
        tracked: !read_only,
        read_only,
    }
}

const fn storage(ty: &'static str, root: Option<&'static str>, tracked: bool) -> Kind {
    Kind {
        ty,
        api_versions: STORAGE_VERSIONS,
        schema: match root {
            Some(r) => Some((SchemaFile::Storage, r)),
            None => None,
        },
        patch_schema: None,
        family: Family::Storage,
        // Storage answers a create with 202 and `Location` only (storage.rs sends it).
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: false,
        patch: PatchStyle::SyncTags,
        create_stages: &["Creating", "ResolvingDNS"],
        duration_factor: 0.5,
        tracked,
        read_only: false,
    }
}

pub(crate) static KINDS: &[Kind] = &[
    network("Microsoft.Network/virtualNetworks", "VirtualNetwork", true),
    network("Microsoft.Network/virtualNetworks/subnets", "Subnet", false),
    network(
        "Microsoft.Network/networkSecurityGroups",
        "NetworkSecurityGroup",
        true,
    ),
    network(
        "Microsoft.Network/networkSecurityGroups/securityRules",
        "SecurityRule",
        false,
    ),
    network(
        "Microsoft.Network/publicIPAddresses",
        "PublicIPAddress",
        true,
    ),
    network(
        "Microsoft.Network/networkInterfaces",
        "NetworkInterface",
        true,
    ),
    compute(
        "Microsoft.Compute/virtualMachines",
        Some("VirtualMachine"),
        false,
    ),
    compute(
        "Microsoft.Compute/virtualMachineScaleSets",
        Some("VirtualMachineScaleSet"),
        false,
    ),
    compute(
        "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        None,
        true,
    ),
    Kind {
        ty: "Microsoft.Kubernetes/connectedClusters",
        api_versions: CLUSTER_VERSIONS,
        schema: Some((SchemaFile::HybridKubernetes, "ConnectedCluster")),
        patch_schema: Some((SchemaFile::HybridKubernetes, "ConnectedClusterPatch")),
        family: Family::Cluster,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: false,
        patch: PatchStyle::Lro202Location,
        create_stages: &["Accepted", "Provisioning"],
        duration_factor: 1.0,
        tracked: true,
        read_only: false,
    },
    Kind {
        ty: "Microsoft.ContainerService/managedClusters",
        api_versions: AKS_VERSIONS,
        schema: Some((SchemaFile::ContainerService, "ManagedCluster")),
        patch_schema: None,
        family: Family::Aks,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: true,
        patch: PatchStyle::Lro200,
        create_stages: CREATE_STAGES,
        // A managed cluster takes minutes where a VM takes one.
        duration_factor: 3.0,
        tracked: true,
        read_only: false,
    },
    Kind {
        ty: "Microsoft.ContainerService/managedClusters/agentPools",
        api_versions: AKS_VERSIONS,
        schema: Some((SchemaFile::ContainerService, "AgentPool")),
        patch_schema: None,
        family: Family::Aks,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: true,
        patch: PatchStyle::Lro200,
        create_stages: CREATE_STAGES,
        duration_factor: 2.0,
        tracked: false,
        read_only: false,
    },
    Kind {
        ty: "Microsoft.KubernetesConfiguration/extensions",
        api_versions: EXTENSION_VERSIONS,
        schema: Some((SchemaFile::Extensions, "Extension")),
        patch_schema: Some((SchemaFile::Extensions, "PatchExtension")),
        family: Family::K8sConfig,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: true,
        patch: PatchStyle::Lro202Async,
        create_stages: CREATE_STAGES,
        duration_factor: 1.0,
        tracked: false,
        read_only: false,
    },
    Kind {
        ty: "Microsoft.KubernetesConfiguration/fluxConfigurations",
        api_versions: FLUX_VERSIONS,
        schema: Some((SchemaFile::Flux, "FluxConfiguration")),
        patch_schema: Some((SchemaFile::Flux, "FluxConfigurationPatch")),
        family: Family::K8sConfig,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: true,
        patch: PatchStyle::Lro202Async,
        create_stages: CREATE_STAGES,
        duration_factor: 1.0,
        tracked: false,
        read_only: false,
    },
    storage(
        "Microsoft.Storage/storageAccounts",
        Some("StorageAccountCreateParameters"),
        true,
    ),
    storage(
        "Microsoft.Storage/storageAccounts/fileServices",
        None,
        false,
    ),
    storage(
        "Microsoft.Storage/storageAccounts/fileServices/shares",
        Some("FileShare"),
        false,
    ),
];

/// A type served synchronously by its own module (no operation, no provisioning stages).
const fn synchronous(
    ty: &'static str,
    api_versions: &'static [&'static str],
    family: Family,
    tracked: bool,
) -> Kind {
    Kind {
        ty,
        api_versions,
        schema: None,
        patch_schema: None,
        family,
        put_headers: LroHeaders::AsyncOperation,
        delete_async_header: false,
        patch: PatchStyle::SyncTags,
        create_stages: &[],
        duration_factor: 0.0,
        tracked,
        read_only: false,
    }
}

pub(crate) static SYNCHRONOUS_KINDS: &[Kind] = &[
    synchronous(
        "Microsoft.Authorization/roleAssignments",
        AUTHORIZATION_VERSIONS,
        Family::Authorization,
        false,
    ),
    synchronous(
        "Microsoft.Authorization/roleDefinitions",
        AUTHORIZATION_VERSIONS,
        Family::Authorization,
        false,
    ),
    synchronous(
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        MSI_VERSIONS,
        Family::ManagedIdentity,
        true,
    ),
    synchronous(
        "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        MSI_VERSIONS,
        Family::ManagedIdentity,
        false,
    ),
];

/// The kind for a `Namespace/type[/child]` string (case-insensitive).
pub(crate) fn lookup(ty: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .chain(SYNCHRONOUS_KINDS)
        .find(|k| k.ty.eq_ignore_ascii_case(ty))
}

/// Provider namespaces the emulator knows, with extra resource types for the provider body.
pub(crate) const NAMESPACES: &[(&str, &[&str])] = &[
    (
        "Microsoft.Resources",
        &["resourceGroups", "subscriptions", "deployments"],
    ),
    ("Microsoft.Network", &[]),
    ("Microsoft.Compute", &[]),
    ("Microsoft.Kubernetes", &[]),
    ("Microsoft.KubernetesConfiguration", &[]),
    ("Microsoft.ExtendedLocation", &["customLocations"]),
    ("Microsoft.ContainerRegistry", &["registries"]),
    ("Microsoft.KeyVault", &["vaults"]),
    ("Microsoft.ManagedIdentity", &[]),
    ("Microsoft.ContainerService", &[]),
    ("Microsoft.Storage", &[]),
];

/// The canonical spelling of a known namespace.
pub(crate) fn canonical_namespace(ns: &str) -> Option<&'static str> {
    NAMESPACES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.eq_ignore_ascii_case(ns))
}

/// api-versions accepted by a namespace's operation-status endpoints.
pub(crate) fn namespace_versions(ns: &str) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = KINDS
        .iter()
        .chain(SYNCHRONOUS_KINDS)
        .filter(|k| k.namespace().eq_ignore_ascii_case(ns))
        .flat_map(|k| k.api_versions.iter().copied())
        .collect();
    v.extend(RESOURCES_VERSIONS.iter().copied());
    v
}
