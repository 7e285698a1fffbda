//! `azure.vmss`: a Linux VM scale set at a given capacity (changing `capacity` scales it),
//! with its instances and their addresses as outputs.

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
use crate::vm::{API, Image};

/// API version of the scale set NIC listing (the network RP pins it).
const NIC_LIST_API: &str = "2018-10-01";

fn default_size() -> String {
    "Standard_B2s".into()
}

fn default_user() -> String {
    "azureuser".into()
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
    /// The admin's OpenSSH public key.
    pub ssh_public_key: String,
    /// The subnet.
    pub subnet_id: String,
    /// cloud-init user data (plain text; sent base64).
    pub custom_data: Option<String>,
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
    /// Private IP.
    pub private_ip: Option<String>,
}

/// Output of `azure.vmss`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmssOutput {
    /// Scale set id.
    pub id: String,
    /// Capacity.
    pub capacity: u32,
    /// Instances with their addresses.
    pub instances: Vec<Instance>,
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

fn body(cx: &StepContext, input: &VmssInput) -> Value {
    let mut os = json!({
        "computerNamePrefix": input.name,
        "adminUsername": input.admin_username,
        "linuxConfiguration": {
            "disablePasswordAuthentication": true,
            "ssh": {"publicKeys": [{
                "path": format!("/home/{}/.ssh/authorized_keys", input.admin_username),
                "keyData": input.ssh_public_key.trim(),
            }]},
        },
    });
    if let Some(cd) = &input.custom_data {
        os["customData"] = json!(base64::engine::general_purpose::STANDARD.encode(cd));
    }
    json!({
        "location": input.location,
        "tags": owner_tags(cx, &input.tags),
        "sku": {"name": input.size, "tier": "Standard", "capacity": input.capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "overprovision": false,
            "virtualMachineProfile": {
                "osProfile": os,
                "storageProfile": {"imageReference": input.image, "osDisk": {"createOption": "FromImage"}},
                "networkProfile": {"networkInterfaceConfigurations": [{
                    "name": format!("{}-nic", input.name),
                    "properties": {"primary": true, "ipConfigurations": [{
                        "name": "ipconfig1",
                        "properties": {"subnet": {"id": input.subnet_id}, "primary": true},
                    }]},
                }]},
            },
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
    let mut out: Vec<Instance> = nics
        .into_iter()
        .map(|n| {
            let id = n.id.unwrap_or_default();
            let vm = id
                .rsplit_once("/networkInterfaces/")
                .map(|(vm, _)| vm.to_string())
                .unwrap_or_default();
            Instance {
                id: vm,
                private_ip: n
                    .properties
                    .ip_configurations
                    .into_iter()
                    .next()
                    .and_then(|c| c.properties)
                    .and_then(|p| p.private_ip_address),
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
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
        if !input.ssh_public_key.trim_start().starts_with("ssh-") {
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
        Ok(Observed::Satisfied(VmssOutput {
            id: s.id.unwrap_or_default(),
            capacity,
            instances,
        }))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &VmssInput,
    ) -> Result<Progress<VmssOutput>, StepError> {
        let client = input.azure.client()?;
        let u = url(&client, input, "", API);
        let mut pending = Pending::load(cx);
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
            Some(&body(cx, input)),
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
                Ok(Progress::Done(VmssOutput {
                    id: s.id.unwrap_or_default(),
                    capacity: s.sku.and_then(|k| k.capacity).unwrap_or(input.capacity),
                    instances,
                }))
            }
        }
    }
}
