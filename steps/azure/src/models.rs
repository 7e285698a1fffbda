//! Typed request and response models for the resources siteflow uses, after the REST specs
//! (REST names, camelCase). Unknown response fields are ignored; request bodies carry only
//! the fields set (every optional field is skipped when `None`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resource tags.
pub type Tags = BTreeMap<String, String>;

/// ARM's error wrapper.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: Option<ErrorDetail>,
}

/// An ARM error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Error code.
    pub code: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// Target.
    pub target: Option<String>,
    /// Nested details.
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

impl ErrorDetail {
    /// The message with its target and nested details (the actual cause of many errors, e.g.
    /// which quota or which property), each detail on a line of its own: at most 10, 2 KiB.
    pub fn describe(&self) -> String {
        fn walk(d: &ErrorDetail, depth: usize, out: &mut Vec<String>) {
            for n in &d.details {
                if out.len() == 10 {
                    return;
                }
                let mut line = format!(
                    "{}- {}: {}",
                    "  ".repeat(depth),
                    n.code.as_deref().unwrap_or("?"),
                    n.message.as_deref().unwrap_or("").trim()
                );
                if let Some(t) = &n.target {
                    line.push_str(&format!(" (target `{t}`)"));
                }
                out.push(line);
                walk(n, depth + 1, out);
            }
        }
        let mut text = self.message.clone().unwrap_or_default();
        if let Some(t) = &self.target {
            text.push_str(&format!(" (target `{t}`)"));
        }
        let mut lines = Vec::new();
        walk(self, 0, &mut lines);
        for l in lines {
            text.push('\n');
            text.push_str(&l);
        }
        if text.len() > 2048 {
            let mut cut = 2048;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }
}

/// An `Azure-AsyncOperation` status document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// Operation id.
    pub id: Option<String>,
    /// Operation name.
    pub name: Option<String>,
    /// `InProgress`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    /// Start time.
    pub start_time: Option<String>,
    /// End time.
    pub end_time: Option<String>,
    /// Completion percentage.
    pub percent_complete: Option<f64>,
    /// The error when Failed or Canceled.
    pub error: Option<ErrorDetail>,
}

/// A reference to another resource by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubResource {
    /// Resource id.
    pub id: String,
}

/// Common provisioning state holder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningOnly {
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// ARM's envelope of a tracked resource: identity and placement around the resource's own
/// `properties` (`P`), with the optional parts some resources have (`S` is the SKU's shape).
/// `type` is read from responses and never sent (ARM sets it from the URL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(
        serialize = "P: Serialize + ArmProperties, S: Serialize",
        deserialize = "P: Deserialize<'de>, S: Deserialize<'de>"
    )
)]
pub struct Tracked<P, S = Sku> {
    /// Id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Resource type, e.g. `Microsoft.Network/virtualNetworks` (read-only).
    #[serde(rename = "type", default, skip_serializing)]
    pub kind: Option<String>,
    /// Location.
    #[serde(default)]
    pub location: String,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// SKU (public IPs; size and capacity of scale sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<S>,
    /// Managed identity (VMs, scale sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Zones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// The resource's own properties.
    #[serde(skip_serializing_if = "ArmProperties::is_absent")]
    pub properties: P,
}

/// What may stand in a [`Tracked`] resource's `properties`: a properties struct (always
/// sent) or an optional one (left out of the body when `None`).
pub trait ArmProperties {
    /// Whether the body leaves `properties` out.
    fn is_absent(&self) -> bool {
        false
    }
}

impl<T> ArmProperties for Option<T> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

impl ArmProperties for VirtualNetworkProperties {}
impl ArmProperties for NetworkSecurityGroupProperties {}
impl ArmProperties for PublicIpProperties {}
impl ArmProperties for NetworkInterfaceProperties {}
impl ArmProperties for VirtualMachineProperties {}
impl ArmProperties for ScaleSetProperties {}

/// A resource group (Microsoft.Resources 2025-04-01).
pub type ResourceGroup = Tracked<Option<ProvisioningOnly>>;

/// A resource provider (registration state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// Id.
    pub id: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// `NotRegistered`, `Registering`, `Registered`, …
    pub registration_state: Option<String>,
}

/// Virtual network (Microsoft.Network 2026-03-01).
pub type VirtualNetwork = Tracked<VirtualNetworkProperties>;

/// Virtual network properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetworkProperties {
    /// Address space.
    pub address_space: AddressSpace,
    /// Subnets.
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Address prefixes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    /// CIDRs.
    #[serde(default)]
    pub address_prefixes: Vec<String>,
}

/// A subnet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// Id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Properties.
    pub properties: Option<SubnetProperties>,
}

/// Subnet properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetProperties {
    /// CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
    /// The NSG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<SubResource>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// A network security group.
pub type NetworkSecurityGroup = Tracked<NetworkSecurityGroupProperties>;

/// NSG properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurityGroupProperties {
    /// Our rules.
    #[serde(default)]
    pub security_rules: Vec<SecurityRule>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// An NSG rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    /// Id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Properties.
    pub properties: SecurityRuleProperties,
}

/// NSG rule properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRuleProperties {
    /// `Tcp`, `Udp`, `*`.
    pub protocol: String,
    /// Source ports.
    pub source_port_range: String,
    /// Destination ports.
    pub destination_port_range: String,
    /// Source CIDR or tag.
    pub source_address_prefix: String,
    /// Destination CIDR or tag.
    pub destination_address_prefix: String,
    /// `Allow` or `Deny`.
    pub access: String,
    /// 100–4096.
    pub priority: u32,
    /// `Inbound` or `Outbound`.
    pub direction: String,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// A SKU by name (and tier).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// Name.
    pub name: String,
    /// Tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A public IP address.
pub type PublicIpAddress = Tracked<PublicIpProperties>;

/// Public IP properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicIpProperties {
    /// `Static` or `Dynamic`.
    #[serde(
        rename = "publicIPAllocationMethod",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_allocation_method: Option<String>,
    /// `IPv4` or `IPv6`.
    #[serde(
        rename = "publicIPAddressVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_address_version: Option<String>,
    /// The address (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// A network interface.
pub type NetworkInterface = Tracked<NetworkInterfaceProperties>;

/// NIC properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceProperties {
    /// IP configurations.
    #[serde(default)]
    pub ip_configurations: Vec<IpConfiguration>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// A NIC IP configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfiguration {
    /// Id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Properties.
    pub properties: Option<IpConfigurationProperties>,
}

/// NIC IP configuration properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfigurationProperties {
    /// The subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubResource>,
    /// `Dynamic` or `Static`.
    #[serde(
        rename = "privateIPAllocationMethod",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_allocation_method: Option<String>,
    /// The private address (read-only when dynamic).
    #[serde(rename = "privateIPAddress", skip_serializing_if = "Option::is_none")]
    pub private_ip_address: Option<String>,
    /// The public IP.
    #[serde(rename = "publicIPAddress", skip_serializing_if = "Option::is_none")]
    pub public_ip_address: Option<SubResource>,
    /// Primary configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

/// A managed identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// `SystemAssigned`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Principal id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant id (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// A virtual machine (Microsoft.Compute 2026-04-01).
pub type VirtualMachine = Tracked<VirtualMachineProperties>;

/// VM properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineProperties {
    /// Size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_profile: Option<HardwareProfile>,
    /// Image and disks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_profile: Option<StorageProfile>,
    /// OS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
    /// NICs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<NetworkProfile>,
    /// `Regular` or `Spot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// `Deallocate` or `Delete` (spot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<String>,
    /// Spot max price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_profile: Option<BillingProfile>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Spot max price (-1: up to on-demand).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingProfile {
    /// Max price.
    pub max_price: f64,
}

/// VM size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// `Standard_B2s`.
    pub vm_size: String,
}

/// Image and OS disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    /// Image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<ImageReference>,
    /// OS disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_disk: Option<OsDisk>,
}

/// A marketplace image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    /// Publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Offer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// SKU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// OS disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    /// Disk name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `FromImage`.
    pub create_option: String,
    /// Size in GB.
    #[serde(rename = "diskSizeGB", skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u32>,
    /// `Delete` or `Detach` with the VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<String>,
    /// Managed disk settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_disk: Option<ManagedDisk>,
}

/// Managed disk settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDisk {
    /// `Standard_LRS`, `Premium_LRS`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_account_type: Option<String>,
}

/// OS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    /// Host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computer_name: Option<String>,
    /// Admin user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_username: Option<String>,
    /// Base64 cloud-init (write-only: never returned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    /// Linux settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_configuration: Option<LinuxConfiguration>,
}

/// Linux settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxConfiguration {
    /// SSH keys only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_password_authentication: Option<bool>,
    /// SSH keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfiguration>,
}

/// SSH keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfiguration {
    /// Keys.
    #[serde(default)]
    pub public_keys: Vec<SshPublicKey>,
}

/// One authorized key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKey {
    /// `/home/{user}/.ssh/authorized_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// OpenSSH public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_data: Option<String>,
}

/// NICs of a VM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    /// NIC references.
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterfaceReference>,
}

/// A NIC reference.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceReference {
    /// NIC id.
    pub id: String,
    /// Primary flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<NetworkInterfaceReferenceProperties>,
}

/// NIC reference properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterfaceReferenceProperties {
    /// Primary NIC.
    pub primary: bool,
}

/// A Key Vault secret (data plane).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretBundle {
    /// The value.
    pub value: Option<String>,
    /// Secret id (URL with version).
    pub id: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: Option<Tags>,
}

/// `PUT /secrets/{name}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSetParameters {
    /// The value.
    pub value: String,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A Graph service principal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphServicePrincipal {
    /// Object id.
    pub id: String,
    /// Application id.
    pub app_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
}

/// A Graph collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphList<T> {
    /// Items.
    pub value: Vec<T>,
}

/// ACR `/oauth2/exchange` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcrRefreshToken {
    /// The refresh token.
    pub refresh_token: String,
}

/// ACR `/oauth2/token` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcrAccessToken {
    /// The access token.
    pub access_token: String,
}

/// A VM scale set (Microsoft.Compute 2026-04-01).
pub type VirtualMachineScaleSet = Tracked<ScaleSetProperties, ScaleSetSku>;

/// Scale set SKU.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetSku {
    /// VM size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Standard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Instance count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Scale set properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetProperties {
    /// `Manual`, `Automatic`, `Rolling`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_policy: Option<UpgradePolicy>,
    /// `Uniform` or `Flexible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestration_mode: Option<String>,
    /// The instances' template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_machine_profile: Option<ScaleSetVmProfile>,
    /// Overprovisioning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overprovision: Option<bool>,
    /// Provisioning state (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Upgrade policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// Mode.
    pub mode: String,
}

/// The template of scale set instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetVmProfile {
    /// OS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<ScaleSetOsProfile>,
    /// Image and disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_profile: Option<StorageProfile>,
    /// NICs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<ScaleSetNetworkProfile>,
}

/// Scale set OS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetOsProfile {
    /// Host name prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computer_name_prefix: Option<String>,
    /// Admin user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_username: Option<String>,
    /// Base64 cloud-init.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<String>,
    /// Linux settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_configuration: Option<LinuxConfiguration>,
}

/// Scale set NICs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetNetworkProfile {
    /// NIC templates.
    #[serde(default)]
    pub network_interface_configurations: Vec<ScaleSetNicConfiguration>,
}

/// A NIC template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetNicConfiguration {
    /// Name.
    pub name: String,
    /// Properties.
    pub properties: ScaleSetNicProperties,
}

/// NIC template properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetNicProperties {
    /// Primary NIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// IP configurations.
    #[serde(default)]
    pub ip_configurations: Vec<ScaleSetIpConfiguration>,
}

/// An IP configuration template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetIpConfiguration {
    /// Name.
    pub name: String,
    /// Properties.
    pub properties: ScaleSetIpProperties,
}

/// IP configuration template properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetIpProperties {
    /// The subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubResource>,
    /// Primary configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errors_details_say_its_cause() {
        let e: ErrorResponse = serde_json::from_value(serde_json::json!({"error": {
            "code": "InvalidParameter",
            "message": "The request is invalid.",
            "target": "vmSize",
            "details": [
                {"code": "QuotaExceeded", "message": "Operation could not be completed as it results in exceeding approved standardDSv5Family Cores quota.",
                 "details": [{"code": "Limit", "message": "Current limit: 10."}]},
                {"code": "SkuNotAvailable", "message": "Standard_D2s_v5 is not available in westeurope.", "target": "sku"}
            ]
        }}))
        .unwrap();
        let text = e.error.unwrap().describe();
        assert_eq!(
            text,
            "The request is invalid. (target `vmSize`)\n\
             - QuotaExceeded: Operation could not be completed as it results in exceeding approved standardDSv5Family Cores quota.\n  \
             - Limit: Current limit: 10.\n\
             - SkuNotAvailable: Standard_D2s_v5 is not available in westeurope. (target `sku`)"
        );
        let plain = ErrorDetail {
            message: Some("Not found.".into()),
            ..Default::default()
        };
        assert_eq!(plain.describe(), "Not found.");
        let many = ErrorDetail {
            details: vec![
                ErrorDetail {
                    code: Some("X".into()),
                    message: Some("y".repeat(500)),
                    ..Default::default()
                };
                20
            ],
            ..Default::default()
        };
        let text = many.describe();
        assert!(
            text.chars().count() <= 2049 && text.ends_with('…'),
            "{}",
            text.len()
        );
    }
}
