//! `azure.vmss`: a Linux VM scale set at a given capacity (changing `capacity` scales it),
//! with its instances, their addresses and power states as outputs.
//!
//! The power state is observed, never reconciled: a stopped or deallocated instance (a spot
//! eviction, `azure.vmss-power`) stays so, and is listed in `instances` but not in `running`,
//! the ones SSH steps can reach.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::models::{NetworkInterface, Tags, VirtualMachineScaleSet};
use siteflow_azure::{ArmClient, Service};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::common::{
    AzureConnection, Drive, Pending, cancellable, drive, is_ours, not_owned, owner_tags,
    resource_path,
};
use crate::vm::{API, Image, OsDiskType};

/// API version of the scale set NIC listing (the network RP pins it).
const NIC_LIST_API: &str = "2018-10-01";

fn default_size() -> String {
    "Standard_B2s".into()
}

fn default_user() -> String {
    "azureuser".into()
}

fn newest_vm() -> String {
    "NewestVM".into()
}

/// Input of `azure.vmss`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmssInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// Scale set name (also the instances' host name prefix).
    pub name: String,
    /// Number of instances; change it to scale.
    pub capacity: u32,
    /// Instance size.
    #[serde(default = "default_size")]
    pub size: String,
    /// Image (default Ubuntu 24.04 LTS).
    #[serde(default)]
    pub image: Image,
    /// Admin user.
    #[serde(default = "default_user")]
    pub admin_username: String,
    /// The admin's OpenSSH public key (default: a generated key pair, the private key a 0600
    /// file under `.siteflow/keys/<site>/<step>/`).
    #[serde(default)]
    pub ssh_public_key: Option<String>,
    /// Which instances a scale-in deletes first (`NewestVM`, `OldestVM`, `Default`).
    #[serde(default = "newest_vm")]
    pub scale_in_policy: String,
    /// The subnet.
    pub subnet_id: String,
    /// cloud-init user data (plain text; sent base64).
    pub custom_data: Option<String>,
    /// Azure file shares to mount (CIFS) on every instance through cloud-init.
    #[serde(default)]
    pub file_shares: Vec<crate::mounts::FileShareMount>,
    /// Spot instances (priority Spot; evicted when Azure needs the capacity back).
    #[serde(default)]
    pub spot: bool,
    /// What an eviction does to a spot instance: `Deallocate` (default) or `Delete`.
    pub eviction_policy: Option<String>,
    /// The most to pay per hour for a spot instance, in US dollars; -1 (default): up to the
    /// on-demand price, never evicted for price.
    pub max_price: Option<f64>,
    /// OS disk size in GB (default: the image's; seed 003 uses 32, an S4 disk).
    pub os_disk_size_gb: Option<u32>,
    /// OS disk type (default: Azure's for the size; seed 003 uses `Standard_LRS`, whose 32 GB
    /// tier is S4).
    pub os_disk_type: Option<OsDiskType>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over a scale set that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Instance {
    /// The instance's VM resource id.
    pub id: String,
    /// The instance id (`0`, `1`, ...).
    pub instance_id: String,
    /// Its computer name (the host name, k3s's node name).
    pub computer_name: String,
    /// Private IP.
    pub private_ip: Option<String>,
    /// `running`, `stopped`, `deallocated`, `starting`, `stopping`, `deallocating`, ...
    /// (the instance view's `PowerState/<state>`; `unknown` when it shows none).
    pub power_state: String,
}

/// The power state of an instance or VM as Compute shows it with `$expand=instanceView`.
pub(crate) fn power_state(vm: &Value) -> String {
    vm.pointer("/properties/instanceView/statuses")
        .and_then(Value::as_array)
        .and_then(|s| {
            s.iter()
                .find_map(|s| s["code"].as_str()?.strip_prefix("PowerState/"))
        })
        .unwrap_or("unknown")
        .to_string()
}

/// Output of `azure.vmss`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmssOutput {
    /// Scale set id.
    pub id: String,
    /// Capacity.
    pub capacity: u32,
    /// Every instance with its address and power state, by instance id.
    pub instances: Vec<Instance>,
    /// The instances whose power state is `running`: the ones to reach over SSH and to expect
    /// as Ready nodes (the others are stopped, deallocated or on their way).
    pub running: Vec<Instance>,
    /// The admin user.
    pub admin_username: String,
    /// The generated admin key's private key file, when no `ssh_public_key` was given.
    pub ssh_private_key_file: Option<String>,
    /// SHA256 fingerprint of the instances' SSH host key (one key, from the scale set's
    /// cloud-init), for SSH steps to pin.
    pub host_key_fingerprint: String,
}

/// The step kind.
pub struct VmssStep;

fn url(client: &ArmClient, input: &VmssInput, suffix: &str, api: &str) -> String {
    client.arm_url(
        &format!(
            "{}{suffix}",
            resource_path(
                client.subscription(),
                &input.resource_group,
                &format!("Microsoft.Compute/virtualMachineScaleSets/{}", input.name)
            )
        ),
        api,
    )
}

/// The admin public key: given, or generated (`create`) / loaded.
async fn admin_key(
    cx: &StepContext,
    input: &VmssInput,
    create: bool,
) -> Result<(String, bool), StepError> {
    if let Some(k) = &input.ssh_public_key {
        return Ok((k.trim().to_string(), false));
    }
    let pair = if create {
        Some(
            crate::keys::load_or_create(cx, "admin", &format!("{}@siteflow", input.admin_username))
                .await?,
        )
    } else {
        crate::keys::load(cx, "admin").await?
    };
    pair.map(|p| (p.public, true)).ok_or_else(|| {
        StepError::permanent(
            "GeneratedKeyLost",
            format!(
                "scale set {} exists but the admin key generated for it is no longer under {}/.siteflow/keys; give `ssh_public_key`",
                input.name,
                cx.working_dir.display()
            ),
        )
    })
}

fn body(
    cx: &StepContext,
    input: &VmssInput,
    admin_pub: &str,
    host: &crate::keys::KeyPair,
) -> Value {
    let mut tags = owner_tags(cx, &input.tags);
    tags.insert(crate::vm::TAG_HOST_KEY.into(), host.fingerprint.clone());
    let mut os = json!({
        "computerNamePrefix": input.name,
        "adminUsername": input.admin_username,
        "linuxConfiguration": {
            "disablePasswordAuthentication": true,
            "ssh": {"publicKeys": [{
                "path": format!("/home/{}/.ssh/authorized_keys", input.admin_username),
                "keyData": admin_pub,
            }]},
        },
    });
    // Every instance gets the same host key from cloud-init (so SSH can pin it).
    os["customData"] = json!(base64::engine::general_purpose::STANDARD.encode(
        crate::vm::user_data(host, input.custom_data.as_deref(), &input.file_shares)
    ));
    let os_disk = crate::vm::os_disk(input.os_disk_size_gb, input.os_disk_type);
    let mut profile = json!({
        "osProfile": os,
        "storageProfile": {"imageReference": input.image, "osDisk": os_disk},
        "networkProfile": {"networkInterfaceConfigurations": [{
            "name": format!("{}-nic", input.name),
            "properties": {"primary": true, "ipConfigurations": [{
                "name": "ipconfig1",
                "properties": {"subnet": {"id": input.subnet_id}, "primary": true},
            }]},
        }]},
    });
    if input.spot {
        profile["priority"] = json!("Spot");
        profile["evictionPolicy"] = json!(input.eviction_policy.as_deref().unwrap_or("Deallocate"));
        profile["billingProfile"] = json!({"maxPrice": input.max_price.unwrap_or(-1.0)});
    }
    json!({
        "location": input.location,
        "tags": tags,
        "sku": {"name": input.size, "tier": "Standard", "capacity": input.capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "scaleInPolicy": {"rules": [input.scale_in_policy]},
            "upgradePolicy": {"mode": "Manual"},
            "overprovision": false,
            "virtualMachineProfile": profile,
        },
    })
}

async fn instances(
    cx: &StepContext,
    client: &ArmClient,
    input: &VmssInput,
) -> Result<Vec<Instance>, StepError> {
    let list: Value = cancellable(
        cx,
        client.send(
            Service::Arm,
            "GET",
            &url(client, input, "/networkInterfaces", NIC_LIST_API),
            None,
        ),
    )
    .await?
    .json()
    .map_err(StepError::from)?;
    let nics: Vec<NetworkInterface> =
        serde_json::from_value(list.get("value").cloned().unwrap_or_default()).map_err(|e| {
            StepError::permanent(
                "UnexpectedResponse",
                format!("scale set network interfaces: {e}"),
            )
        })?;
    let vms: Value = cancellable(
        cx,
        client.send(
            Service::Arm,
            "GET",
            &format!(
                "{}&$expand=instanceView",
                url(client, input, "/virtualMachines", API)
            ),
            None,
        ),
    )
    .await?
    .json()
    .map_err(StepError::from)?;
    let ip_of = |vm_id: &str| {
        nics.iter()
            .find(|n| {
                n.id.as_deref().is_some_and(|id| {
                    id.to_ascii_lowercase().starts_with(&format!(
                        "{}/networkinterfaces/",
                        vm_id.to_ascii_lowercase()
                    ))
                })
            })
            .and_then(|n| n.properties.ip_configurations.first())
            .and_then(|c| c.properties.as_ref())
            .and_then(|p| p.private_ip_address.clone())
    };
    let mut out: Vec<Instance> = vms["value"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let id = v["id"].as_str().unwrap_or_default().to_string();
            Instance {
                private_ip: ip_of(&id),
                power_state: power_state(&v),
                instance_id: v["instanceId"].as_str().unwrap_or_default().to_string(),
                computer_name: v
                    .pointer("/properties/osProfile/computerName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                id,
            }
        })
        .collect();
    out.sort_by_key(|i| i.instance_id.parse::<u64>().unwrap_or(u64::MAX));
    Ok(out)
}

fn output(
    cx: &StepContext,
    input: &VmssInput,
    s: VirtualMachineScaleSet,
    instances: Vec<Instance>,
    generated: bool,
) -> VmssOutput {
    let running = instances
        .iter()
        .filter(|i| i.power_state == "running")
        .cloned()
        .collect();
    VmssOutput {
        id: s.id.unwrap_or_default(),
        capacity: s.sku.and_then(|k| k.capacity).unwrap_or(input.capacity),
        instances,
        running,
        admin_username: input.admin_username.clone(),
        ssh_private_key_file: generated.then(|| {
            crate::keys::dir(cx)
                .join("admin_ed25519")
                .display()
                .to_string()
        }),
        host_key_fingerprint: s
            .tags
            .as_ref()
            .and_then(|t| t.get(crate::vm::TAG_HOST_KEY).cloned())
            .unwrap_or_default(),
    }
}

impl Step for VmssStep {
    const KIND: &'static str = "azure.vmss";
    type Input = VmssInput;
    type Output = VmssOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) a Linux VM scale set and scales it to `capacity`; lists its instances"
    }

    fn validate(&self, input: &VmssInput) -> Result<(), StepError> {
        if input.capacity > 1000 {
            return Err(StepError::permanent(
                "InvalidInput",
                "capacity is at most 1000",
            ));
        }
        if !input.spot && (input.eviction_policy.is_some() || input.max_price.is_some()) {
            return Err(StepError::permanent(
                "InvalidInput",
                "eviction_policy and max_price need `spot: true`",
            ));
        }
        if let Some(p) = &input.eviction_policy
            && p != "Deallocate"
            && p != "Delete"
        {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("eviction_policy is Deallocate or Delete, not `{p}`"),
            ));
        }
        if let Some(m) = input.max_price
            && m != -1.0
            && m <= 0.0
        {
            return Err(StepError::permanent(
                "InvalidInput",
                "max_price is -1 (up to the on-demand price) or a price above 0",
            ));
        }
        crate::vm::validate_os_disk_size(input.os_disk_size_gb)?;
        crate::mounts::validate_all(&input.file_shares)?;
        if input
            .ssh_public_key
            .as_ref()
            .is_some_and(|k| !k.trim_start().starts_with("ssh-"))
        {
            return Err(StepError::permanent(
                "InvalidInput",
                "ssh_public_key must be an OpenSSH public key",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &VmssInput,
    ) -> Result<Observed<VmssOutput>, StepError> {
        let client = input.azure.client()?;
        let got: Option<VirtualMachineScaleSet> =
            cancellable(cx, client.get_opt(&url(&client, input, "", API))).await?;
        let Some(s) = got else {
            return Ok(Observed::missing());
        };
        if !is_ours(cx, s.tags.as_ref()) && !input.adopt_untagged {
            return Err(not_owned(
                "scale set",
                s.id.as_deref().unwrap_or(&input.name),
            ));
        }
        let state = s.properties.provisioning_state.clone().unwrap_or_default();
        if !state.eq_ignore_ascii_case("Succeeded") {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("scale set is {state}")),
            });
        }
        let capacity = s.sku.as_ref().and_then(|k| k.capacity).unwrap_or(0);
        if capacity != input.capacity {
            cx.info(&format!(
                "scale set {} has {capacity} instances, the workflow asks for {}",
                input.name, input.capacity
            ));
            return Ok(Observed::NotSatisfied {
                reason: Some("capacity differs".into()),
            });
        }
        let instances = instances(cx, &client, input).await?;
        let (_, generated) = admin_key(cx, input, false).await?;
        Ok(Observed::Satisfied(output(
            cx, input, s, instances, generated,
        )))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &VmssInput,
    ) -> Result<Progress<VmssOutput>, StepError> {
        let client = input.azure.client()?;
        let u = url(&client, input, "", API);
        let mut pending = Pending::load(cx);
        let (admin_pub, generated) = admin_key(cx, input, true).await?;
        let host = crate::keys::load_or_create(cx, "host", &input.name).await?;
        if !pending.ops.contains_key("vmss") {
            let got: Option<VirtualMachineScaleSet> = cancellable(cx, client.get_opt(&u)).await?;
            if let Some(s) = &got
                && !is_ours(cx, s.tags.as_ref())
                && !input.adopt_untagged
            {
                return Err(not_owned(
                    "scale set",
                    s.id.as_deref().unwrap_or(&input.name),
                ));
            }
        }
        match drive(
            cx,
            &client,
            &mut pending,
            "vmss",
            "PUT",
            &u,
            Some(&body(cx, input, &admin_pub, &host)),
        )
        .await?
        {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after,
            }),
            Drive::Done(_) => {
                let s: VirtualMachineScaleSet =
                    cancellable(cx, client.send(Service::Arm, "GET", &u, None))
                        .await?
                        .json()
                        .map_err(StepError::from)?;
                let instances = instances(cx, &client, input).await?;
                Ok(Progress::Done(output(cx, input, s, instances, generated)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_is_the_instance_views_power_status() {
        let vm = json!({"properties": {"instanceView": {"statuses": [
            {"code": "ProvisioningState/succeeded"},
            {"code": "PowerState/deallocated"},
        ]}}});
        assert_eq!(power_state(&vm), "deallocated");
        // Without the view (or while Compute shows no power status yet).
        assert_eq!(power_state(&json!({"properties": {}})), "unknown");
    }

    #[test]
    fn os_disk_type_takes_only_what_an_os_disk_can_be() {
        let t: OsDiskType = serde_json::from_value(json!("Standard_LRS")).unwrap();
        assert_eq!(
            crate::vm::os_disk(Some(32), Some(t)),
            json!({"createOption": "FromImage", "diskSizeGB": 32,
                   "managedDisk": {"storageAccountType": "Standard_LRS"}})
        );
        for data_only in ["UltraSSD_LRS", "PremiumV2_LRS", "standard_lrs"] {
            assert!(serde_json::from_value::<OsDiskType>(json!(data_only)).is_err());
        }
    }
}
