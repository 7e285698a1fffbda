//! `azure.network`: the site's NSG (80/443 from anywhere, 22/6443 from the admin CIDR),
//! virtual network with one subnet, and Standard static public IPs.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_azure::ArmClient;
use siteflow_azure::models::{
    NetworkSecurityGroup, PublicIpAddress, SecurityRule, SecurityRuleProperties, Tags,
    VirtualNetwork,
};
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};
use std::collections::BTreeMap;

use crate::common::{
    AzureConnection, Drive, Pending, cancellable, drive, is_ours, not_owned, owner_tags,
    provisioning_state, resource_path,
};

/// API version of Microsoft.Network.
pub const API: &str = "2026-03-01";

fn default_vnet() -> String {
    "10.0.0.0/16".into()
}

fn default_subnet() -> String {
    "10.0.1.0/24".into()
}

/// Input of `azure.network`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInput {
    /// Connection.
    #[serde(default)]
    pub azure: AzureConnection,
    /// Resource group.
    pub resource_group: String,
    /// Region.
    pub location: String,
    /// Name prefix of the resources (`{prefix}-vnet`, `{prefix}-nsg`, `{prefix}-{ip}-pip`).
    pub name: String,
    /// Virtual network CIDR.
    #[serde(default = "default_vnet")]
    pub vnet_cidr: String,
    /// Subnet CIDR.
    #[serde(default = "default_subnet")]
    pub subnet_cidr: String,
    /// Where SSH (22) and the Kubernetes API (6443) may come from.
    pub admin_cidr: String,
    /// Public IPs to create (Standard, static), by short name.
    #[serde(default)]
    pub public_ips: Vec<String>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Tags,
    /// Take over resources that exist without this step's tags.
    #[serde(default)]
    pub adopt_untagged: bool,
}

/// Output of `azure.network`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NetworkOutput {
    /// Virtual network id.
    pub vnet_id: String,
    /// Subnet id.
    pub subnet_id: String,
    /// NSG id.
    pub nsg_id: String,
    /// Public IP ids by short name.
    pub public_ip_ids: BTreeMap<String, String>,
    /// Public IP addresses by short name.
    pub public_ips: BTreeMap<String, String>,
}

/// The step kind.
pub struct NetworkStep;

fn rules(admin_cidr: &str) -> Vec<SecurityRule> {
    let rule = |name: &str, port: &str, from: &str, priority: u32| SecurityRule {
        id: None,
        name: name.into(),
        properties: SecurityRuleProperties {
            protocol: "Tcp".into(),
            source_port_range: "*".into(),
            destination_port_range: port.into(),
            source_address_prefix: from.into(),
            destination_address_prefix: "*".into(),
            access: "Allow".into(),
            priority,
            direction: "Inbound".into(),
            provisioning_state: None,
        },
    };
    vec![
        rule("allow-http", "80", "*", 100),
        rule("allow-https", "443", "*", 110),
        rule("allow-ssh-admin", "22", admin_cidr, 120),
        rule("allow-kube-api-admin", "6443", admin_cidr, 130),
    ]
}

struct Names {
    nsg: String,
    vnet: String,
    subnet: String,
}

fn names(input: &NetworkInput) -> Names {
    Names {
        nsg: format!("{}-nsg", input.name),
        vnet: format!("{}-vnet", input.name),
        subnet: format!("{}-subnet", input.name),
    }
}

fn path(client: &ArmClient, input: &NetworkInput, rest: &str) -> String {
    resource_path(
        client.subscription(),
        &input.resource_group,
        &format!("Microsoft.Network/{rest}"),
    )
}

/// The desired resources, in creation order: key, URL, body.
fn desired(
    cx: &StepContext,
    client: &ArmClient,
    input: &NetworkInput,
) -> Vec<(String, String, Value)> {
    let n = names(input);
    let tags = owner_tags(cx, &input.tags);
    let nsg_path = path(client, input, &format!("networkSecurityGroups/{}", n.nsg));
    let mut out = vec![
        (
            "nsg".to_string(),
            client.arm_url(&nsg_path, API),
            json!({
                "location": input.location,
                "tags": tags,
                "properties": {"securityRules": rules(&input.admin_cidr)},
            }),
        ),
        (
            "vnet".to_string(),
            client.arm_url(
                &path(client, input, &format!("virtualNetworks/{}", n.vnet)),
                API,
            ),
            json!({
                "location": input.location,
                "tags": tags,
                "properties": {
                    "addressSpace": {"addressPrefixes": [input.vnet_cidr]},
                    "subnets": [{
                        "name": n.subnet,
                        "properties": {
                            "addressPrefix": input.subnet_cidr,
                            "networkSecurityGroup": {"id": nsg_path},
                        },
                    }],
                },
            }),
        ),
    ];
    for ip in &input.public_ips {
        out.push((
            format!("pip:{ip}"),
            client.arm_url(
                &path(
                    client,
                    input,
                    &format!("publicIPAddresses/{}-{ip}-pip", input.name),
                ),
                API,
            ),
            json!({
                "location": input.location,
                "tags": tags,
                "sku": {"name": "Standard", "tier": "Regional"},
                "properties": {
                    "publicIPAllocationMethod": "Static",
                    "publicIPAddressVersion": "IPv4",
                },
            }),
        ));
    }
    out
}

/// What differs between an existing resource and the wanted one (empty: nothing).
fn drift(key: &str, input: &NetworkInput, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if key == "nsg" {
        let nsg: NetworkSecurityGroup = serde_json::from_value(got.clone()).unwrap_or_default();
        for want in rules(&input.admin_cidr) {
            let found = nsg
                .properties
                .security_rules
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(&want.name));
            let same = found.is_some_and(|r| {
                let mut a = r.properties.clone();
                a.provisioning_state = None;
                a == want.properties
            });
            if !same {
                out.push(format!("NSG rule {} differs or is missing", want.name));
            }
        }
    } else if key == "vnet" {
        let v: VirtualNetwork = serde_json::from_value(got.clone()).unwrap_or_default();
        if v.properties.address_space.address_prefixes != vec![input.vnet_cidr.clone()] {
            out.push(format!(
                "address space is {:?}, not [{}]",
                v.properties.address_space.address_prefixes, input.vnet_cidr
            ));
        }
        let subnet = v
            .properties
            .subnets
            .iter()
            .find(|s| s.name.as_deref() == Some(names(input).subnet.as_str()));
        let prefix = subnet
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.address_prefix.clone());
        if prefix.as_deref() != Some(input.subnet_cidr.as_str()) {
            out.push(format!(
                "subnet prefix is {prefix:?}, not {}",
                input.subnet_cidr
            ));
        }
    } else {
        let p: PublicIpAddress = serde_json::from_value(got.clone()).unwrap_or_default();
        if p.properties.public_ip_allocation_method.as_deref() != Some("Static") {
            out.push("public IP is not static".into());
        }
    }
    out
}

async fn outputs(
    cx: &StepContext,
    client: &ArmClient,
    input: &NetworkInput,
) -> Result<Option<NetworkOutput>, StepError> {
    let n = names(input);
    let vnet: Option<VirtualNetwork> = cancellable(
        cx,
        client.get_opt(&client.arm_url(
            &path(client, input, &format!("virtualNetworks/{}", n.vnet)),
            API,
        )),
    )
    .await?;
    let Some(vnet) = vnet else { return Ok(None) };
    let vnet_id = vnet.id.clone().unwrap_or_default();
    let mut out = NetworkOutput {
        subnet_id: format!("{vnet_id}/subnets/{}", n.subnet),
        vnet_id,
        nsg_id: path(client, input, &format!("networkSecurityGroups/{}", n.nsg)),
        public_ip_ids: BTreeMap::new(),
        public_ips: BTreeMap::new(),
    };
    for ip in &input.public_ips {
        let p: Option<PublicIpAddress> = cancellable(
            cx,
            client.get_opt(&client.arm_url(
                &path(
                    client,
                    input,
                    &format!("publicIPAddresses/{}-{ip}-pip", input.name),
                ),
                API,
            )),
        )
        .await?;
        let Some(p) = p else { return Ok(None) };
        out.public_ip_ids
            .insert(ip.clone(), p.id.unwrap_or_default());
        if let Some(a) = p.properties.ip_address {
            out.public_ips.insert(ip.clone(), a);
        }
    }
    Ok(Some(out))
}

impl Step for NetworkStep {
    const KIND: &'static str = "azure.network";
    type Input = NetworkInput;
    type Output = NetworkOutput;

    fn description(&self) -> &'static str {
        "Creates (or adopts) the site's NSG, virtual network and subnet, and static public IPs"
    }

    fn validate(&self, input: &NetworkInput) -> Result<(), StepError> {
        for (what, cidr) in [
            ("vnet_cidr", &input.vnet_cidr),
            ("subnet_cidr", &input.subnet_cidr),
            ("admin_cidr", &input.admin_cidr),
        ] {
            let ok = cidr.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
            });
            if !ok {
                return Err(StepError::permanent(
                    "InvalidInput",
                    format!("{what} `{cidr}` is not a CIDR such as 203.0.113.0/24"),
                ));
            }
        }
        if input.admin_cidr == "0.0.0.0/0" || input.admin_cidr == "*" {
            return Err(StepError::permanent(
                "InvalidInput",
                "admin_cidr must not open SSH and the Kubernetes API to the whole internet",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &NetworkInput,
    ) -> Result<Observed<NetworkOutput>, StepError> {
        let client = input.azure.client()?;
        for (key, url, _) in desired(cx, &client, input) {
            let got: Option<Value> = cancellable(cx, client.get_opt(&url)).await?;
            let Some(got) = got else {
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!("{key} missing")),
                });
            };
            let tags: Option<Tags> = got
                .get("tags")
                .and_then(|t| serde_json::from_value(t.clone()).ok());
            if !is_ours(cx, tags.as_ref()) && !input.adopt_untagged {
                return Err(not_owned(&key, got["id"].as_str().unwrap_or(&url)));
            }
            if provisioning_state(&got).is_some_and(|s| !s.eq_ignore_ascii_case("Succeeded")) {
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!(
                        "{key} is {}",
                        provisioning_state(&got).unwrap_or_default()
                    )),
                });
            }
            let d = drift(&key, input, &got);
            if !d.is_empty() {
                for line in &d {
                    cx.info(&format!("drift: {key}: {line}"));
                }
                return Ok(Observed::NotSatisfied {
                    reason: Some(format!("{key} drifted")),
                });
            }
        }
        match outputs(cx, &client, input).await? {
            Some(o) => Ok(Observed::Satisfied(o)),
            None => Ok(Observed::missing()),
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &NetworkInput,
    ) -> Result<Progress<NetworkOutput>, StepError> {
        let client = input.azure.client()?;
        let mut pending = Pending::load(cx);
        for (key, url, body) in desired(cx, &client, input) {
            if !pending.ops.contains_key(&key) {
                let got: Option<Value> = cancellable(cx, client.get_opt(&url)).await?;
                if let Some(got) = &got {
                    let tags: Option<Tags> = got
                        .get("tags")
                        .and_then(|t| serde_json::from_value(t.clone()).ok());
                    if !is_ours(cx, tags.as_ref()) && !input.adopt_untagged {
                        return Err(not_owned(&key, got["id"].as_str().unwrap_or(&url)));
                    }
                    let state = provisioning_state(got).unwrap_or("Succeeded");
                    let done = state.eq_ignore_ascii_case("Succeeded");
                    if done && drift(&key, input, got).is_empty() {
                        continue;
                    }
                    if !done && !state.eq_ignore_ascii_case("Failed") {
                        // An operation we do not track is running on it: look again later.
                        return Ok(Progress::Wait {
                            recheck_after: std::time::Duration::from_secs(2),
                        });
                    }
                }
            }
            if let Drive::Wait(after) =
                drive(cx, &client, &mut pending, &key, "PUT", &url, Some(&body)).await?
            {
                return Ok(Progress::Wait {
                    recheck_after: after,
                });
            }
        }
        match outputs(cx, &client, input).await? {
            Some(o) => Ok(Progress::Done(o)),
            None => Err(StepError::retryable(
                "ResourceNotVisible",
                "the network was created but cannot be read back yet",
            )),
        }
    }
}
