//! `azure.vm`: a Linux VM with its NIC (optionally with a public IP), SSH admin key (given,
//! or generated and output as a secret), cloud-init, managed identity, spot and zone; it
//! generates the VM's SSH host key and installs it through cloud-init, so SSH steps can pin
//! `host_key_fingerprint`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::ArmClient;
use siteflow_azure::models::{NetworkInterface, PublicIpAddress, Tags, VirtualMachine};
use siteflow_step::{Observed, Progress, Secret, Step, StepContext, StepError, schemars};

use crate::common::{
    AzureConnection, Drive, Pending, cancellable, drive, is_ours, not_owned, owner_tags,
    provisioning_state, resource_path,
};
use crate::keys;

/// API version of Microsoft.Compute.
pub const API: &str = "2026-04-01";
/// The tag carrying the host key fingerprint the VM was created with.
pub const TAG_HOST_KEY: &str = "siteflow-host-key";

/// A marketplace image.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Publisher.
    pub publisher: String,
    /// Offer.
    pub offer: String,
    /// SKU.
    pub sku: String,
    /// Version.
    #[serde(default = "latest")]
    pub version: String,
}

fn latest() -> String {
    "latest".into()
}

impl Default for Image {
    fn default() -> Self {
        // Ubuntu 24.04 LTS.
        Image {
            publisher: "Canonical".into(),
            offer: "ubuntu-24_04-lts".into(),
            sku: "server".into(),
            version: latest(),
        }
    }
}

/// The storage of a managed OS disk: Compute's `StorageAccountTypes` less the two that only
/// data disks may use (`UltraSSD_LRS`, `PremiumV2_LRS`), so a workflow asking for them fails
/// validation instead of a PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum OsDiskType {
    /// Standard HDD, locally redundant (its 32 GB tier is S4, the smallest managed disk).
    #[serde(rename = "Standard_LRS")]
    StandardLrs,
    /// Standard SSD, locally redundant.
    #[serde(rename = "StandardSSD_LRS")]
    StandardSsdLrs,
    /// Standard SSD, zone-redundant.
    #[serde(rename = "StandardSSD_ZRS")]
    StandardSsdZrs,
    /// Premium SSD, locally redundant (sizes with premium storage, an `s` in the name).
    #[serde(rename = "Premium_LRS")]
    PremiumLrs,
    /// Premium SSD, zone-redundant.
    #[serde(rename = "Premium_ZRS")]
    PremiumZrs,
}

/// The `osDisk` of a VM or scale-set model: from the image, with an optional size and type.
pub(crate) fn os_disk(size_gb: Option<u32>, disk_type: Option<OsDiskType>) -> Value {
    let mut os_disk = json!({"createOption": "FromImage"});
    if let Some(gb) = size_gb {
        os_disk["diskSizeGB"] = json!(gb);
    }
    if let Some(t) = disk_type {
        os_disk["managedDisk"] = json!({"storageAccountType": t});
    }
    os_disk
}

/// `os_disk_size_gb`: at least the image's disk (30 GB), at most Compute's 4095 GB.
pub(crate) fn validate_os_disk_size(size_gb: Option<u32>) -> Result<(), StepError> {
    if size_gb.is_some_and(|gb| !(30..=4095).contains(&gb)) {
        return Err(StepError::permanent(
            "InvalidInput",
            "os_disk_size_gb is between 30 (the image's disk) and 4095",
        ));
    }
    Ok(())
}

fn default_size() -> String {
    "Standard_B2s".into()
}

fn default_user() -> String {
    "azureuser".into()
}

fn yes() -> bool {
    true
}

/// Input of `azure.vm`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// VM name (also the host name; the NIC is `{name}-nic`).
    pub name: String,
    /// Size.
    #[serde(default = "default_size")]
    pub size: String,
    /// Image (default Ubuntu 24.04 LTS).
    #[serde(default)]
    pub image: Image,
    /// OS disk size in GB (default: the image's).
    pub os_disk_size_gb: Option<u32>,
    /// OS disk type (default: Azure's for the size).
    pub os_disk_type: Option<OsDiskType>,
    /// Admin user.
    #[serde(default = "default_user")]
    pub admin_username: String,
    /// The admin's OpenSSH public key; when absent one is generated and output as a secret.
    pub ssh_public_key: Option<String>,
    /// The subnet (from `azure.network`).
    pub subnet_id: String,
    /// A public IP to attach (from `azure.network`).
    pub public_ip_id: Option<String>,
    /// cloud-init user data (plain text; sent base64).
    pub custom_data: Option<String>,
    /// Azure file shares to mount (CIFS) through cloud-init.
    #[serde(default)]
    pub file_shares: Vec<crate::mounts::FileShareMount>,
    /// A system-assigned managed identity.
    #[serde(default = "yes")]
    pub managed_identity: bool,
    /// Spot priority.
    #[serde(default)]
    pub spot: bool,
    /// Spot eviction policy (`Deallocate` or `Delete`).
    pub eviction_policy: Option<String>,
    /// Availability zone.
    pub zone: Option<String>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over a VM that exists without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.vm`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VmOutput {
    /// VM id.
    pub id: String,
    /// Private IP.
    pub private_ip: String,
    /// Public IP, when one is attached.
    pub public_ip: Option<String>,
    /// Admin user.
    pub admin_username: String,
    /// The admin's public key.
    pub ssh_public_key: String,
    /// The generated admin private key (absent when a public key was given).
    pub ssh_private_key: Option<Secret<String>>,
    /// The 0600 file holding the generated admin private key (for SSH steps'
    /// `private_key_file`; absent when a public key was given).
    pub ssh_private_key_file: Option<String>,
    /// The VM's SSH host key fingerprint (`SHA256:…`), to pin.
    pub host_key_fingerprint: String,
    /// The managed identity's principal id.
    pub principal_id: Option<String>,
}

/// The step kind.
pub struct VmStep;

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// cloud-init installing the host key, merged with the user's data and the file share mounts
/// as MIME multipart.
pub(crate) fn user_data(
    host: &keys::KeyPair,
    user: Option<&str>,
    mounts: &[crate::mounts::FileShareMount],
) -> String {
    let ours = format!(
        "#cloud-config\nssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n{}  ed25519_public: {}\n",
        indent(host.private.expose(), "    "),
        host.public
    );
    let mounts = crate::mounts::cloud_config(mounts);
    if user.is_none() && mounts.is_none() {
        return ours;
    }
    let b = "==SITEFLOW-BOUNDARY==";
    let part = |ty: &str, body: &str| {
        format!("--{b}\nContent-Type: {ty}; charset=\"us-ascii\"\n\n{body}\n")
    };
    let mut out = format!(
        "Content-Type: multipart/mixed; boundary=\"{b}\"\nMIME-Version: 1.0\n\n{}",
        part("text/cloud-config", &ours)
    );
    if let Some(user) = user {
        let user_type = if user.starts_with("#!") {
            "text/x-shellscript"
        } else {
            "text/cloud-config"
        };
        out.push_str(&part(user_type, user));
    }
    if let Some(m) = mounts {
        out.push_str(&part("text/cloud-config", &m));
    }
    out.push_str(&format!("--{b}--\n"));
    out
}

fn urls(client: &ArmClient, input: &VmInput) -> (String, String) {
    let sub = client.subscription();
    (
        client.arm_url(
            &resource_path(
                sub,
                &input.resource_group,
                &format!("Microsoft.Network/networkInterfaces/{}-nic", input.name),
            ),
            crate::network::API,
        ),
        client.arm_url(
            &resource_path(
                sub,
                &input.resource_group,
                &format!("Microsoft.Compute/virtualMachines/{}", input.name),
            ),
            API,
        ),
    )
}

fn nic_body(cx: &StepContext, input: &VmInput) -> Value {
    let mut ipc = json!({
        "subnet": {"id": input.subnet_id},
        "privateIPAllocationMethod": "Dynamic",
        "primary": true,
    });
    if let Some(pip) = &input.public_ip_id {
        ipc["publicIPAddress"] = json!({"id": pip});
    }
    json!({
        "location": input.location,
        "tags": owner_tags(cx, &input.tags),
        "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": ipc}]},
    })
}

fn vm_body(
    cx: &StepContext,
    input: &VmInput,
    nic_id: &str,
    admin_pub: &str,
    host: &keys::KeyPair,
) -> Value {
    let mut tags = owner_tags(cx, &input.tags);
    tags.insert(TAG_HOST_KEY.into(), host.fingerprint.clone());
    let mut os_disk = os_disk(input.os_disk_size_gb, input.os_disk_type);
    os_disk["deleteOption"] = json!("Delete");
    let custom = base64::engine::general_purpose::STANDARD.encode(user_data(
        host,
        input.custom_data.as_deref(),
        &input.file_shares,
    ));
    let mut props = json!({
        "hardwareProfile": {"vmSize": input.size},
        "storageProfile": {"imageReference": input.image, "osDisk": os_disk},
        "osProfile": {
            "computerName": input.name,
            "adminUsername": input.admin_username,
            "customData": custom,
            "linuxConfiguration": {
                "disablePasswordAuthentication": true,
                "ssh": {"publicKeys": [{
                    "path": format!("/home/{}/.ssh/authorized_keys", input.admin_username),
                    "keyData": admin_pub,
                }]},
            },
        },
        "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": true}}]},
    });
    if input.spot {
        props["priority"] = json!("Spot");
        props["evictionPolicy"] = json!(
            input
                .eviction_policy
                .clone()
                .unwrap_or_else(|| "Deallocate".into())
        );
        props["billingProfile"] = json!({"maxPrice": -1});
    }
    let mut body = json!({"location": input.location, "tags": tags, "properties": props});
    if input.managed_identity {
        body["identity"] = json!({"type": "SystemAssigned"});
    }
    if let Some(z) = &input.zone {
        body["zones"] = json!([z]);
    }
    body
}

/// The admin key: the given public key, or the generated pair.
async fn admin_key(
    cx: &StepContext,
    input: &VmInput,
    create: bool,
) -> Result<(String, Option<Secret<String>>), StepError> {
    if let Some(k) = &input.ssh_public_key {
        return Ok((k.trim().to_string(), None));
    }
    let pair = if create {
        Some(
            keys::load_or_create(cx, "admin", &format!("{}@siteflow", input.admin_username))
                .await?,
        )
    } else {
        keys::load(cx, "admin").await?
    };
    match pair {
        Some(p) => Ok((p.public, Some(p.private))),
        None => Err(StepError::permanent(
            "GeneratedKeyLost",
            format!(
                "VM {} exists but the admin key generated for it is no longer under {}/.siteflow/keys; \
                 give `ssh_public_key`, or delete the VM so it is created again",
                input.name,
                cx.working_dir.display()
            ),
        )),
    }
}

async fn outputs(
    cx: &StepContext,
    client: &ArmClient,
    input: &VmInput,
    vm: VirtualMachine,
    admin: (String, Option<Secret<String>>),
) -> Result<VmOutput, StepError> {
    let (nic_url, _) = urls(client, input);
    let nic: Option<NetworkInterface> = cancellable(cx, client.get_opt(&nic_url)).await?;
    let ipc = nic
        .and_then(|n| n.properties.ip_configurations.into_iter().next())
        .and_then(|c| c.properties)
        .unwrap_or_default();
    let public_ip = match &ipc.public_ip_address {
        Some(p) => {
            let url = client.arm_url(&p.id, crate::network::API);
            let pip: Option<PublicIpAddress> = cancellable(cx, client.get_opt(&url)).await?;
            pip.and_then(|p| p.properties.ip_address)
        }
        None => None,
    };
    Ok(VmOutput {
        id: vm.id.unwrap_or_default(),
        private_ip: ipc.private_ip_address.unwrap_or_default(),
        public_ip,
        admin_username: input.admin_username.clone(),
        ssh_public_key: admin.0,
        ssh_private_key_file: admin
            .1
            .as_ref()
            .map(|_| keys::dir(cx).join("admin_ed25519").display().to_string()),
        ssh_private_key: admin.1,
        host_key_fingerprint: vm
            .tags
            .as_ref()
            .and_then(|t| t.get(TAG_HOST_KEY).cloned())
            .unwrap_or_default(),
        principal_id: vm.identity.and_then(|i| i.principal_id),
    })
}

impl Step for VmStep {
    const KIND: &'static str = "azure.vm";
    type Input = VmInput;
    type Output = VmOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) a Linux VM with its NIC, SSH keys, pinned host key and cloud-init"
    }

    fn validate(&self, input: &VmInput) -> Result<(), StepError> {
        let name_ok = !input.name.is_empty()
            && input.name.len() <= 64
            && input
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !name_ok {
            return Err(StepError::permanent(
                "InvalidInput",
                format!("`{}` is not a valid Linux VM name", input.name),
            ));
        }
        if let Some(p) = &input.eviction_policy
            && !(input.spot && (p == "Deallocate" || p == "Delete"))
        {
            return Err(StepError::permanent(
                "InvalidInput",
                "eviction_policy needs `spot: true` and is Deallocate or Delete",
            ));
        }
        validate_os_disk_size(input.os_disk_size_gb)?;
        crate::mounts::validate_all(&input.file_shares)?;
        if let Some(k) = &input.ssh_public_key
            && !k.trim_start().starts_with("ssh-")
            && !k.trim_start().starts_with("ecdsa-")
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
        input: &VmInput,
    ) -> Result<Observed<VmOutput>, StepError> {
        let client = input.azure.client()?;
        let (_, vm_url) = urls(&client, input);
        let vm: Option<VirtualMachine> = cancellable(cx, client.get_opt(&vm_url)).await?;
        let Some(vm) = vm else {
            return Ok(Observed::missing());
        };
        if !is_ours(cx, vm.tags.as_ref()) && !input.adopt_untagged {
            return Err(not_owned("VM", vm.id.as_deref().unwrap_or(&input.name)));
        }
        let state = vm.properties.provisioning_state.clone().unwrap_or_default();
        if !state.eq_ignore_ascii_case("Succeeded") {
            return Ok(Observed::NotSatisfied {
                reason: Some(format!("VM is {state}")),
            });
        }
        let size = vm
            .properties
            .hardware_profile
            .as_ref()
            .map(|h| h.vm_size.clone())
            .unwrap_or_default();
        if !size.eq_ignore_ascii_case(&input.size) {
            cx.info(&format!(
                "drift: VM {} is {size}, the workflow asks for {} (not resized)",
                input.name, input.size
            ));
        }
        let admin = admin_key(cx, input, false).await?;
        Ok(Observed::Satisfied(
            outputs(cx, &client, input, vm, admin).await?,
        ))
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &VmInput,
    ) -> Result<Progress<VmOutput>, StepError> {
        let client = input.azure.client()?;
        let (nic_url, vm_url) = urls(&client, input);
        let mut pending = Pending::load(cx);
        let admin = admin_key(cx, input, true).await?;
        let host = keys::load_or_create(cx, "host", &input.name).await?;

        // The NIC.
        let mut nic_ready = false;
        if !pending.ops.contains_key("nic") {
            let got: Option<Value> = cancellable(cx, client.get_opt(&nic_url)).await?;
            if let Some(got) = &got {
                let tags: Option<Tags> = got
                    .get("tags")
                    .and_then(|t| serde_json::from_value(t.clone()).ok());
                if !is_ours(cx, tags.as_ref()) && !input.adopt_untagged {
                    return Err(not_owned("NIC", got["id"].as_str().unwrap_or(&nic_url)));
                }
                nic_ready =
                    provisioning_state(got).is_none_or(|s| s.eq_ignore_ascii_case("Succeeded"));
            }
        }
        if !nic_ready
            && let Drive::Wait(after) = drive(
                cx,
                &client,
                &mut pending,
                "nic",
                "PUT",
                &nic_url,
                Some(&nic_body(cx, input)),
            )
            .await?
        {
            return Ok(Progress::Wait {
                recheck_after: after,
            });
        }
        let nic_id = resource_path(
            client.subscription(),
            &input.resource_group,
            &format!("Microsoft.Network/networkInterfaces/{}-nic", input.name),
        );

        // The VM.
        if !pending.ops.contains_key("vm") {
            let got: Option<VirtualMachine> = cancellable(cx, client.get_opt(&vm_url)).await?;
            if let Some(vm) = got {
                if !is_ours(cx, vm.tags.as_ref()) && !input.adopt_untagged {
                    return Err(not_owned("VM", vm.id.as_deref().unwrap_or(&input.name)));
                }
                let state = vm.properties.provisioning_state.clone().unwrap_or_default();
                if state.eq_ignore_ascii_case("Succeeded") {
                    return Ok(Progress::Done(
                        outputs(cx, &client, input, vm, admin).await?,
                    ));
                }
                if !state.eq_ignore_ascii_case("Failed") {
                    // Someone's operation is still running: look again later.
                    return Ok(Progress::Wait {
                        recheck_after: std::time::Duration::from_secs(5),
                    });
                }
            }
        }
        let body = vm_body(cx, input, &nic_id, &admin.0, &host);
        match drive(cx, &client, &mut pending, "vm", "PUT", &vm_url, Some(&body)).await? {
            Drive::Wait(after) => Ok(Progress::Wait {
                recheck_after: after,
            }),
            Drive::Done(_) => {
                let vm: VirtualMachine = cancellable(
                    cx,
                    client.send(siteflow_azure::Service::Arm, "GET", &vm_url, None),
                )
                .await?
                .json()
                .map_err(StepError::from)?;
                Ok(Progress::Done(
                    outputs(cx, &client, input, vm, admin).await?,
                ))
            }
        }
    }
}
