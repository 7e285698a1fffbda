//! Microsoft.Network: virtual networks and subnets, NSGs (six default rules) and their rules,
//! public IPs and NICs, with address allocation and cross-resource references.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::kinds::{self, Kind};
use super::path::ResPath;
use super::rp::{base_body, visible};
use super::state::{ArmState, Resource, key};
use super::{ArmError, Ctx};

const VNETS: &str = "Microsoft.Network/virtualNetworks";
const SUBNETS: &str = "Microsoft.Network/virtualNetworks/subnets";
const NSGS: &str = "Microsoft.Network/networkSecurityGroups";
const RULES: &str = "Microsoft.Network/networkSecurityGroups/securityRules";
const PIPS: &str = "Microsoft.Network/publicIPAddresses";
const NICS: &str = "Microsoft.Network/networkInterfaces";

fn etag() -> Value {
    json!(format!("W/\"{}\"", uuid::Uuid::new_v4()))
}

fn invalid_reference(reference: &str, by: &str) -> ArmError {
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidResourceReference",
        format!(
            "Resource {reference} referenced by resource {by} was not found. Please make sure that the referenced resource exists, and that both resources are in the same region."
        ),
    )
}

/// Builds the stored body for a network PUT.
pub(super) fn prepare(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    body: Value,
    existing: Option<&Resource>,
) -> Result<Value, ArmError> {
    let _ = ctx;
    let mut b = base_body(kind, id, p.name(), body);
    b["etag"] = etag();
    let props = b["properties"].as_object_mut().expect("object");
    props.remove("provisioningState");
    let old_props = existing
        .and_then(|r| r.body.get("properties"))
        .cloned()
        .unwrap_or(json!({}));
    match kind.ty {
        VNETS | NSGS | PIPS | NICS => {
            let guid = old_props
                .get("resourceGuid")
                .cloned()
                .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
            props.insert("resourceGuid".into(), guid);
        }
        _ => {}
    }
    if kind.ty == VNETS && existing.is_some() {
        check_vnet_subnets(st, &key(id), &b)?;
    }
    let props = b["properties"].as_object_mut().expect("object");
    match kind.ty {
        VNETS => {
            props.entry("virtualNetworkPeerings").or_insert(json!([]));
            props.entry("enableDdosProtection").or_insert(json!(false));
            // Inline subnets become child resources in after_put.
            props.entry("subnets").or_insert(json!([]));
        }
        SUBNETS => {
            b.as_object_mut().map(|o| o.remove("location"));
            if let Some(nsg) = b
                .pointer("/properties/networkSecurityGroup/id")
                .and_then(Value::as_str)
                && visible(st, &key(nsg)).is_none()
            {
                return Err(invalid_reference(nsg, id));
            }
        }
        NSGS => {
            let defaults = default_rules(id);
            let props = b["properties"].as_object_mut().expect("object");
            props.insert("defaultSecurityRules".into(), defaults);
            props.entry("securityRules").or_insert(json!([]));
            props.entry("flushConnection").or_insert(json!(false));
        }
        RULES => {
            b.as_object_mut().map(|o| o.remove("location"));
        }
        PIPS => {
            if b.get("sku").is_none() {
                b["sku"] = json!({"name": "Basic"});
            }
            let standard = b
                .pointer("/sku/name")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case("Standard"));
            let props = b["properties"].as_object_mut().expect("object");
            props
                .entry("publicIPAddressVersion")
                .or_insert(json!("IPv4"));
            props.entry("idleTimeoutInMinutes").or_insert(json!(4));
            props
                .entry("publicIPAllocationMethod")
                .or_insert(json!(if standard { "Static" } else { "Dynamic" }));
            let ip = old_props
                .get("ipAddress")
                .and_then(Value::as_str)
                .map(str::to_string);
            let config = old_props.get("ipConfiguration").cloned();
            let static_alloc = props
                .get("publicIPAllocationMethod")
                .and_then(Value::as_str)
                .is_some_and(|m| m.eq_ignore_ascii_case("Static"));
            if let Some(ip) = ip {
                props.insert("ipAddress".into(), json!(ip));
            } else if static_alloc {
                props.insert("ipAddress".into(), json!(st.allocate_public_ip()));
            }
            if let Some(c) = config {
                props.insert("ipConfiguration".into(), c);
            }
        }
        NICS => prepare_nic(st, id, &mut b, &old_props)?,
        _ => {}
    }
    Ok(b)
}

fn prepare_nic(
    st: &mut ArmState,
    id: &str,
    b: &mut Value,
    old_props: &Value,
) -> Result<(), ArmError> {
    let configs = b
        .pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if configs.is_empty() {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
            format!("Network interface {id} must have at least one IP configuration."),
        ));
    }
    let old_configs = old_props
        .get("ipConfigurations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, c) in configs.into_iter().enumerate() {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("ipconfig1")
            .to_string();
        let cid = format!("{id}/ipConfigurations/{name}");
        let mut cp = c.get("properties").cloned().unwrap_or(json!({}));
        let subnet_id = cp
            .pointer("/subnet/id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(subnet_id) = subnet_id else {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestFormat",
                format!(
                    "Cannot parse the request: ipConfigurations[{i}].properties.subnet.id is required."
                ),
            ));
        };
        let Some(subnet) = visible(st, &key(&subnet_id)) else {
            return Err(invalid_reference(&subnet_id, id));
        };
        let prefix = subnet
            .body
            .pointer("/properties/addressPrefix")
            .and_then(Value::as_str)
            .or_else(|| {
                subnet
                    .body
                    .pointer("/properties/addressPrefixes/0")
                    .and_then(Value::as_str)
            })
            .unwrap_or("10.0.0.0/24")
            .to_string();
        if let Some(pip) = cp.pointer("/publicIPAddress/id").and_then(Value::as_str)
            && visible(st, &key(pip)).is_none()
        {
            return Err(invalid_reference(pip, id));
        }
        let old_ip = old_configs
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .and_then(|o| o.pointer("/properties/privateIPAddress"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let static_ip = cp
            .get("privateIPAllocationMethod")
            .and_then(Value::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case("Static"));
        if !static_ip || cp.get("privateIPAddress").is_none() {
            let ip = old_ip.unwrap_or_else(|| st.allocate_private_ip(&key(&subnet_id), &prefix));
            cp["privateIPAddress"] = json!(ip);
            cp["privateIPAllocationMethod"] = json!(if static_ip { "Static" } else { "Dynamic" });
        }
        cp["privateIPAddressVersion"] = json!("IPv4");
        if cp.get("primary").is_none() {
            cp["primary"] = json!(i == 0);
        }
        out.push(json!({"name": name, "id": cid, "etag": etag(), "type": "Microsoft.Network/networkInterfaces/ipConfigurations", "properties": cp}));
    }
    b["properties"]["ipConfigurations"] = Value::Array(out);
    if let Some(vm) = old_props.get("virtualMachine") {
        b["properties"]["virtualMachine"] = vm.clone();
    }
    if let Some(nsg) = b
        .pointer("/properties/networkSecurityGroup/id")
        .and_then(Value::as_str)
        && visible(st, &key(nsg)).is_none()
    {
        return Err(invalid_reference(nsg, id));
    }
    b["properties"]["enableAcceleratedNetworking"] = b["properties"]
        .get("enableAcceleratedNetworking")
        .cloned()
        .unwrap_or(json!(false));
    b["properties"]["enableIPForwarding"] = b["properties"]
        .get("enableIPForwarding")
        .cloned()
        .unwrap_or(json!(false));
    Ok(())
}

fn default_rules(nsg_id: &str) -> Value {
    let rules = [
        (
            "AllowVnetInBound",
            "Allow inbound traffic from all VMs in VNET",
            "Allow",
            "Inbound",
            65000,
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        (
            "AllowAzureLoadBalancerInBound",
            "Allow inbound traffic from azure load balancer",
            "Allow",
            "Inbound",
            65001,
            "AzureLoadBalancer",
            "*",
        ),
        (
            "DenyAllInBound",
            "Deny all inbound traffic",
            "Deny",
            "Inbound",
            65500,
            "*",
            "*",
        ),
        (
            "AllowVnetOutBound",
            "Allow outbound traffic from all VMs to all VMs in VNET",
            "Allow",
            "Outbound",
            65000,
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        (
            "AllowInternetOutBound",
            "Allow outbound traffic from all VMs to Internet",
            "Allow",
            "Outbound",
            65001,
            "*",
            "Internet",
        ),
        (
            "DenyAllOutBound",
            "Deny all outbound traffic",
            "Deny",
            "Outbound",
            65500,
            "*",
            "*",
        ),
    ];
    Value::Array(
        rules
            .iter()
            .map(|(name, desc, access, dir, prio, src, dst)| {
                json!({
                    "name": name,
                    "id": format!("{nsg_id}/defaultSecurityRules/{name}"),
                    "type": "Microsoft.Network/networkSecurityGroups/defaultSecurityRules",
                    "properties": {
                        "description": desc,
                        "access": access,
                        "destinationAddressPrefix": dst,
                        "destinationPortRange": "*",
                        "direction": dir,
                        "priority": prio,
                        "provisioningState": "Succeeded",
                        "sourceAddressPrefix": src,
                        "sourcePortRange": "*",
                        "protocol": "*"
                    }
                })
            })
            .collect(),
    )
}

/// Side effects of a PUT: inline children and back-references.
pub(super) fn after_put(ctx: &Ctx<'_>, st: &mut ArmState, rkey: &str) -> Result<(), ArmError> {
    let _ = ctx;
    let Some(r) = st.resources.get_mut(rkey) else {
        return Ok(());
    };
    let kind = r.kind;
    let id = r.id.clone();
    match kind.ty {
        VNETS => {
            let inline = r
                .props_mut()
                .insert("subnets".into(), json!([]))
                .unwrap_or(json!([]));
            replace_children(st, rkey, &id, SUBNETS, "subnets", inline);
        }
        NSGS => {
            let inline = r
                .props_mut()
                .insert("securityRules".into(), json!([]))
                .unwrap_or(json!([]));
            replace_children(st, rkey, &id, RULES, "securityRules", inline);
        }
        NICS => {
            let configs = r
                .body
                .pointer("/properties/ipConfigurations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for c in configs {
                let (Some(pip), Some(cid)) = (
                    c.pointer("/properties/publicIPAddress/id")
                        .and_then(Value::as_str),
                    c.get("id").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Some(pr) = st.resources.get_mut(&key(pip)) {
                    let alloc = pr.props_mut().get("ipAddress").is_none();
                    pr.props_mut()
                        .insert("ipConfiguration".into(), json!({"id": cid}));
                    if alloc {
                        let ip = st.allocate_public_ip();
                        if let Some(pr) = st.resources.get_mut(&key(pip)) {
                            pr.props_mut().insert("ipAddress".into(), json!(ip));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Replaces the child resources of `parent` with the inline list (a PUT without the inline
/// list deletes the children, as real ARM does).
fn replace_children(
    st: &mut ArmState,
    parent_key: &str,
    parent_id: &str,
    child_ty: &str,
    seg: &str,
    inline: Value,
) {
    let kind = kinds::lookup(child_ty).expect("known child kind");
    let existing: Vec<String> = st
        .children_of(parent_key, child_ty)
        .map(|r| key(&r.id))
        .collect();
    for k in existing {
        st.resources.remove(&k);
    }
    for c in inline.as_array().cloned().unwrap_or_default() {
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            continue;
        };
        let cid = format!("{parent_id}/{seg}/{name}");
        let mut body = base_body(kind, &cid, name, c.clone());
        body["etag"] = etag();
        body.as_object_mut().map(|o| o.remove("location"));
        let mut res = Resource {
            id: cid.clone(),
            kind,
            body,
            visible: true,
            op: None,
            power_state: "",
        };
        res.set_provisioning_state("Succeeded");
        st.resources.insert(key(&cid), res);
    }
}

/// The resource as GET returns it.
pub(super) fn render(st: &ArmState, r: &Resource) -> Value {
    let mut b = r.body.clone();
    let rkey = key(&r.id);
    match r.kind.ty {
        VNETS => {
            let subnets: Vec<Value> = st
                .children_of(&rkey, SUBNETS)
                .map(|s| render(st, s))
                .collect();
            b["properties"]["subnets"] = Value::Array(subnets);
        }
        NSGS => {
            let rules: Vec<Value> = st
                .children_of(&rkey, RULES)
                .map(|s| s.body.clone())
                .collect();
            b["properties"]["securityRules"] = Value::Array(rules);
        }
        SUBNETS => {
            let refs: Vec<Value> = st
                .resources
                .values()
                .filter(|n| n.kind.ty == NICS && n.visible)
                .flat_map(|n| {
                    n.body
                        .pointer("/properties/ipConfigurations")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|c| {
                    c.pointer("/properties/subnet/id")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(&r.id))
                })
                .filter_map(|c| c.get("id").cloned())
                .map(|id| json!({"id": id}))
                .collect();
            if !refs.is_empty() {
                b["properties"]["ipConfigurations"] = Value::Array(refs);
            }
        }
        _ => {}
    }
    b
}

/// Whether `v` holds a string that is `target` (or, with `prefix`, starts with `target/`).
fn mentions(v: &Value, target: &str, prefix: bool) -> bool {
    match v {
        Value::String(s) => {
            let s = s.to_ascii_lowercase();
            s == target || (prefix && s.starts_with(&format!("{target}/")))
        }
        Value::Array(a) => a.iter().any(|x| mentions(x, target, prefix)),
        Value::Object(o) => o.values().any(|x| mentions(x, target, prefix)),
        _ => false,
    }
}

/// Whether a resource body refers to `target` (its own `id` aside).
fn body_mentions(body: &Value, target: &str, prefix: bool) -> bool {
    body.as_object().is_some_and(|o| {
        o.iter()
            .any(|(k, x)| k != "id" && mentions(x, target, prefix))
    })
}

/// Ids of the visible resources of `types` (outside `target`'s own tree) that refer to it.
fn referrers(st: &ArmState, target: &str, types: &[&str], prefix: bool) -> Vec<String> {
    let t = key(target);
    st.resources
        .iter()
        .filter(|(k, r)| {
            r.visible
                && !k.starts_with(&t)
                && types.iter().any(|ty| r.kind.ty.eq_ignore_ascii_case(ty))
                && body_mentions(&r.body, &t, prefix)
        })
        .map(|(_, r)| r.id.clone())
        .collect()
}

const VMS: &str = "Microsoft.Compute/virtualMachines";
const VMSS: &str = "Microsoft.Compute/virtualMachineScaleSets";

fn in_use_subnet(subnet_id: &str, by: &[String]) -> ArmError {
    let name = subnet_id.rsplit('/').next().unwrap_or(subnet_id);
    ArmError::new(
        StatusCode::BAD_REQUEST,
        "InUseSubnetCannotBeDeleted",
        format!(
            "Subnet {name} is in use by {} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.",
            by.join(", ")
        ),
    )
}

/// Refuses to delete a network resource something still uses, with ARM's codes.
pub(super) fn check_delete(st: &ArmState, kind: &Kind, rkey: &str) -> Result<(), ArmError> {
    let Some(r) = st.resources.get(rkey) else {
        return Ok(());
    };
    let id = r.id.clone();
    match kind.ty {
        NICS => {
            let vms = referrers(st, &id, &[VMS], false);
            if let Some(vm) = vms.first() {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "NicInUse",
                    format!(
                        "Network Interface {id} is used by existing resource {vm}. In order to delete the network interface, it must be dissociated from the resource. To learn more, see aka.ms/deletenic."
                    ),
                ));
            }
        }
        PIPS => {
            let nics = referrers(st, &id, &[NICS], false);
            if let Some(nic) = nics.first() {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "PublicIPAddressInUse",
                    format!(
                        "Public IP address {id} can not be deleted since it is still allocated to resource {nic}/ipConfigurations. In order to delete the public IP, disassociate/detach the Public IP address from the resource."
                    ),
                ));
            }
        }
        NSGS => {
            let users = referrers(st, &id, &[NICS, SUBNETS], false);
            if !users.is_empty() {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "InUseNetworkSecurityGroupCannotBeDeleted",
                    format!(
                        "Network security group {id} cannot be deleted because it is in use by the following resources: {}. In order to delete the Network security group, remove the association with the resource(s).",
                        users.join(", ")
                    ),
                ));
            }
        }
        SUBNETS => {
            let users = referrers(st, &id, &[NICS, VMSS], false);
            if !users.is_empty() {
                return Err(in_use_subnet(&id, &users));
            }
        }
        VNETS => {
            let users = referrers(st, &format!("{id}/subnets"), &[NICS, VMSS], true);
            if !users.is_empty() {
                return Err(in_use_subnet(&format!("{id}/subnets"), &users));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A virtual network PUT must not drop a subnet that is in use (ARM refuses it).
pub(super) fn check_vnet_subnets(st: &ArmState, rkey: &str, body: &Value) -> Result<(), ArmError> {
    let keep: Vec<String> = body
        .pointer("/properties/subnets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    for sub in st.children_of(rkey, SUBNETS) {
        let name = sub.id.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        if keep.contains(&name) {
            continue;
        }
        let users = referrers(st, &sub.id, &[NICS, VMSS], false);
        if !users.is_empty() {
            return Err(in_use_subnet(&sub.id, &users));
        }
    }
    Ok(())
}
