//! Emulator configuration: tenant, subscriptions, principals, delays and defaults.

use serde::{Deserialize, Serialize};

/// A service principal that may log in with the client-credentials grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// The application (client) id.
    pub client_id: String,
    /// The client secret the token endpoint accepts.
    pub client_secret: String,
    /// The service principal's object id (the token's `oid`).
    pub object_id: String,
    /// Display name, as Graph reports it.
    #[serde(default)]
    pub display_name: String,
}

/// A service principal Graph knows about (besides the configured login principals).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphServicePrincipal {
    /// Object id.
    pub id: String,
    /// Application id.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
}

/// Everything the emulator can be told at start. Durations are in seconds of *emulated*
/// time; the builder's time scale multiplies them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmulatorConfig {
    /// The Entra tenant id.
    pub tenant_id: String,
    /// Subscriptions visible to every principal (the first is the default).
    pub subscriptions: Vec<String>,
    /// Principals allowed to log in.
    pub principals: Vec<ServicePrincipal>,
    /// Extra service principals Graph returns.
    pub graph_service_principals: Vec<GraphServicePrincipal>,
    /// Answer every Graph request with 403 `Authorization_RequestDenied`.
    pub graph_forbidden: bool,
    /// Provider namespaces that start out `Registered`; all other known ones start `NotRegistered`.
    pub registered_providers: Vec<String>,
    /// How long `Registering` / `Unregistering` last (seconds).
    pub provider_registration_secs: f64,
    /// After a registration completes, how long the provider's own front end still answers
    /// `MissingSubscriptionRegistration` (seconds), as real ARM does for a short while.
    pub registration_propagation_secs: f64,
    /// How long a service principal created at run time (an application's, a managed
    /// identity's) stays unknown to ARM (seconds): role assignments naming it fail with
    /// `PrincipalNotFound` meanwhile unless they give `principalType`, as with Entra replication.
    pub principal_replication_secs: f64,
    /// Base duration of a long-running operation (seconds); each resource type scales it.
    pub lro_secs: f64,
    /// A fixed `Retry-After` (seconds) for LRO responses. `None`: at time scale 1, as real ARM
    /// answers, `Retry-After` only, never below `min_retry_after_secs`; on a faster time scale,
    /// `retry-after-ms` with the remaining (scaled) time, plus `Retry-After` (whole seconds)
    /// when at least 1 s remains.
    pub lro_retry_after_secs: Option<u64>,
    /// The least `Retry-After` (seconds) of an LRO response at time scale 1 (ARM: 10 to 60).
    pub min_retry_after_secs: u64,
    /// Resource types (e.g. `Microsoft.Network/publicIPAddresses`) whose create PUT answers
    /// `202 Accepted` (the RPC's old model): the resource then 404s until the create ends.
    pub accepted_create_types: Vec<String>,
    /// Reads per subscription per rate window (ARM: 12,000 an hour).
    pub read_limit: u32,
    /// Writes per subscription per rate window (ARM: 1,200 an hour).
    pub write_limit: u32,
    /// The rate window in seconds (ARM: 3,600).
    pub rate_window_secs: f64,
    /// Seed of the fault RNG (5xx rates).
    pub fault_seed: u64,
    /// Where to write the CA certificate (PEM); `None`: a fresh file under the temp dir.
    pub ca_pem_path: Option<std::path::PathBuf>,
}

/// The default tenant id.
pub const DEFAULT_TENANT: &str = "00000000-0000-0000-0000-0000000000aa";
/// The default subscription id.
pub const DEFAULT_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT.into(),
            subscriptions: vec![DEFAULT_SUBSCRIPTION.into()],
            principals: vec![ServicePrincipal {
                client_id: "22222222-2222-2222-2222-222222222222".into(),
                client_secret: "fake-secret".into(),
                object_id: "33333333-3333-3333-3333-333333333333".into(),
                display_name: "siteflow-test".into(),
            }],
            graph_service_principals: vec![GraphServicePrincipal {
                id: "51dfe1e8-70c6-4de5-a08e-e18aff23d815".into(),
                app_id: "bc313c14-388c-4e7d-a58e-70017303ee3b".into(),
                display_name: "Custom Locations RP".into(),
            }],
            graph_forbidden: false,
            registered_providers: vec![
                "Microsoft.Resources".into(),
                "Microsoft.Network".into(),
                "Microsoft.Compute".into(),
                // Registered on new subscriptions by default, as in Azure.
                "Microsoft.Storage".into(),
            ],
            provider_registration_secs: 20.0,
            registration_propagation_secs: 10.0,
            principal_replication_secs: 10.0,
            lro_secs: 4.0,
            lro_retry_after_secs: None,
            min_retry_after_secs: 10,
            accepted_create_types: Vec::new(),
            read_limit: 12_000,
            write_limit: 1_200,
            rate_window_secs: 3_600.0,
            fault_seed: 42,
            ca_pem_path: None,
        }
    }
}

impl EmulatorConfig {
    /// The principal with this client id.
    pub(crate) fn principal(&self, client_id: &str) -> Option<&ServicePrincipal> {
        self.principals
            .iter()
            .find(|p| p.client_id.eq_ignore_ascii_case(client_id))
    }
}
