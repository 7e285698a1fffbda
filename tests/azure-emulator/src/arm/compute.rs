//! Microsoft.Compute: virtual machines (NIC references, power actions, instance view, the
//! backing hook) and scale sets (capacity, instances, per-instance NICs and addresses).

use base64::Engine;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::kinds::{self, Kind};
use super::path::ResPath;
use super::rp::{base_body, new_op, not_found, visible};
use super::state::{ArmState, HookJob, HookWhat, PowerJob, Resource, key};
use super::{ArmError, Ctx, list_body};
use crate::hook::{PowerChange, VmBacking, VmCreated};
use crate::http::Resp;
use crate::lro::{OpAction, add_retry_after};

const VMS: &str = "Microsoft.Compute/virtualMachines";
const VMSS: &str = "Microsoft.Compute/virtualMachineScaleSets";
const INSTANCES: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines";

pub(super) fn prepare(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    id: &str,
    body: Value,
    existing: Option<&Resource>,
) -> Result<Value, ArmError> {
    let mut b = base_body(kind, id, p.name(), body);
    let size = if kind.ty == VMS {
        b.pointer("/properties/hardwareProfile/vmSize")
    } else {
        b.pointer("/sku/name")
    };
    if let Some(size) = size.and_then(Value::as_str)
        && !super::vm_size::valid(size)
    {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "The value {size} provided for the VM size is not valid. The valid sizes in the current region are listed by GET /subscriptions/{{subscriptionId}}/providers/Microsoft.Compute/locations/{{location}}/vmSizes."
            ),
        )
        .target("vmSize"));
    }
    let profile = if kind.ty == VMS {
        "/properties"
    } else {
        "/properties/virtualMachineProfile"
    };
    check_priority(&mut b, profile)?;
    check_os_disk_size(&b, profile)?;
    let old = existing.map(|r| r.body.clone()).unwrap_or(json!({}));
    super::rp::system_identity(ctx, &mut b, &old);
    let props = b["properties"].as_object_mut().expect("object");
    props.remove("provisioningState");
    props.remove("instanceView");
    let time_created = old
        .pointer("/properties/timeCreated")
        .cloned()
        .unwrap_or_else(|| json!(crate::clock::rfc3339_now()));
    props.insert("timeCreated".into(), time_created);
    if kind.ty == VMS {
        let vm_id = old
            .pointer("/properties/vmId")
            .cloned()
            .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
        props.insert("vmId".into(), vm_id);
        let nics = b
            .pointer("/properties/networkProfile/networkInterfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let inline = b
            .pointer("/properties/networkProfile/networkInterfaceConfigurations")
            .is_some();
        if nics.is_empty() && !inline {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                "At least one network interface is required for a virtual machine.",
            )
            .target("networkProfile"));
        }
        for nic in &nics {
            let Some(nic_id) = nic.get("id").and_then(Value::as_str) else {
                continue;
            };
            let Some(n) = visible(st, &key(nic_id)) else {
                return Err(ArmError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("Resource {nic_id} not found."),
                ));
            };
            if let Some(other) = n
                .body
                .pointer("/properties/virtualMachine/id")
                .and_then(Value::as_str)
                && !other.eq_ignore_ascii_case(id)
            {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "NicInUse",
                    format!(
                        "Network Interface {nic_id} is used by existing resource {other}. In order to use this network interface for another resource, please detach it from the existing resource."
                    ),
                ));
            }
        }
        let linux = b
            .pointer("/properties/osProfile/linuxConfiguration")
            .is_some();
        if let Some(os_disk) = b
            .pointer_mut("/properties/storageProfile/osDisk")
            .and_then(Value::as_object_mut)
        {
            os_disk
                .entry("osType")
                .or_insert(json!(if linux { "Linux" } else { "Windows" }));
            let disk_name = format!("{}_OsDisk_1_{}", p.name(), uuid::Uuid::new_v4().simple());
            os_disk.entry("name").or_insert(json!(disk_name));
        }
        if let Some(sp) = b
            .pointer_mut("/properties/storageProfile")
            .and_then(Value::as_object_mut)
        {
            sp.entry("dataDisks").or_insert(json!([]));
        }
        if let Some(os) = b
            .pointer_mut("/properties/osProfile")
            .and_then(Value::as_object_mut)
        {
            os.entry("secrets").or_insert(json!([]));
            os.entry("computerName").or_insert(json!(p.name()));
        }
    } else {
        let unique = old
            .pointer("/properties/uniqueId")
            .cloned()
            .unwrap_or_else(|| json!(uuid::Uuid::new_v4().to_string()));
        props.insert("uniqueId".into(), unique);
        props.entry("singlePlacementGroup").or_insert(json!(true));
        if b.pointer("/sku/capacity").is_none() {
            b["sku"]["capacity"] = old.pointer("/sku/capacity").cloned().unwrap_or(json!(0));
        }
    }
    Ok(b)
}

/// The smallest OS disk the emulator's images have (GB): Ubuntu's marketplace images are 30 GB.
const IMAGE_DISK_GB: u64 = 30;
/// The largest OS disk Compute accepts (GB).
const MAX_OS_DISK_GB: u64 = 4095;

/// Spot rules of Compute: `evictionPolicy` and `billingProfile.maxPrice` only with Spot (or
/// Low) priority; maxPrice is -1 (pay up to the on-demand price) or a positive price; a Spot
/// VM without an eviction policy gets `Deallocate`, as Compute defaults it.
fn check_priority(b: &mut Value, profile: &str) -> Result<(), ArmError> {
    let Some(p) = b.pointer_mut(profile).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let spot = p
        .get("priority")
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("Spot") || v.eq_ignore_ascii_case("Low"));
    let invalid = |target: &str, message: String| {
        ArmError::new(StatusCode::BAD_REQUEST, "InvalidParameter", message).target(target)
    };
    if !spot {
        if p.get("evictionPolicy").is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "evictionPolicy",
                "Eviction policy can be set only on Azure Spot Virtual Machines. Please set the priority to 'Spot' or remove the eviction policy.".into(),
            ));
        }
        if p.get("billingProfile")
            .and_then(|bp| bp.get("maxPrice"))
            .is_some_and(|v| !v.is_null())
        {
            return Err(invalid(
                "billingProfile.maxPrice",
                "Max price can be set only on Azure Spot Virtual Machines. Please set the priority to 'Spot' or remove the max price.".into(),
            ));
        }
        return Ok(());
    }
    if let Some(max) = p.get("billingProfile").and_then(|bp| bp.get("maxPrice")) {
        let ok = max.as_f64().is_some_and(|m| m == -1.0 || m > 0.0);
        if !ok && !max.is_null() {
            return Err(invalid(
                "billingProfile.maxPrice",
                format!(
                    "The value {max} of parameter 'billingProfile.maxPrice' is invalid. Allowed values are -1 or a decimal greater than zero."
                ),
            ));
        }
    }
    p.entry("evictionPolicy").or_insert(json!("Deallocate"));
    Ok(())
}

/// `osDisk.diskSizeGB`: at least the image's disk, at most 4095 GB.
fn check_os_disk_size(b: &Value, profile: &str) -> Result<(), ArmError> {
    let Some(size) = b.pointer(&format!("{profile}/storageProfile/osDisk/diskSizeGB")) else {
        return Ok(());
    };
    let Some(gb) = size.as_u64() else {
        return Ok(());
    };
    if gb < IMAGE_DISK_GB {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "The specified disk size {gb} GB is smaller than the size of the corresponding disk in the VM image: {IMAGE_DISK_GB} GB. This is not allowed. Please choose equal or greater size or do not specify an explicit size."
            ),
        )
        .target("osDisk.diskSizeGB"));
    }
    if gb > MAX_OS_DISK_GB {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!("The value {gb} of parameter 'osDisk.diskSizeGB' is out of range. Value must be between 1 and {MAX_OS_DISK_GB}."),
        )
        .target("osDisk.diskSizeGB"));
    }
    Ok(())
}

fn decode_custom_data(body: &Value) -> Option<String> {
    let cd = body
        .pointer("/properties/osProfile/customData")
        .and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cd.trim())
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn ssh_keys(os_profile: Option<&Value>) -> Vec<String> {
    os_profile
        .and_then(|o| o.pointer("/linuxConfiguration/ssh/publicKeys"))
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("keyData").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn rg_of(id: &str) -> String {
    id.split('/').nth(4).unwrap_or_default().to_string()
}

/// Hook jobs, NIC back-references and scale-set instances after a PUT.
pub(super) fn after_put(ctx: &Ctx<'_>, st: &mut ArmState, rkey: &str, op_id: &str, is_new: bool) {
    let Some(r) = st.resources.get(rkey) else {
        return;
    };
    let (id, body, ty) = (r.id.clone(), r.body.clone(), r.kind.ty);
    if ty == VMS {
        for nic in body
            .pointer("/properties/networkProfile/networkInterfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(n) = nic
                .get("id")
                .and_then(Value::as_str)
                .and_then(|nid| st.resources.get_mut(&key(nid)))
            {
                n.props_mut()
                    .insert("virtualMachine".into(), json!({"id": id}));
            }
        }
        if is_new && ctx.hook_set {
            let nic = body
                .pointer("/properties/networkProfile/networkInterfaces/0/id")
                .and_then(Value::as_str)
                .and_then(|nid| st.resources.get(&key(nid)));
            let ipc = |p: &str| {
                nic.and_then(|n| {
                    n.body
                        .pointer(&format!("/properties/ipConfigurations/0/properties/{p}"))
                        .and_then(Value::as_str)
                })
            };
            let private_ip = ipc("privateIPAddress").and_then(|ip| ip.parse().ok());
            let subnet_id = ipc("subnet/id").map(str::to_string);
            let os = body.pointer("/properties/osProfile");
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let vm = VmCreated {
                resource_id: id.clone(),
                computer_name: os
                    .and_then(|o| o.get("computerName"))
                    .and_then(Value::as_str)
                    .unwrap_or(&name)
                    .to_string(),
                name,
                resource_group: rg_of(&id),
                scale_set: None,
                admin_username: os
                    .and_then(|o| o.get("adminUsername"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                ssh_public_keys: ssh_keys(os),
                custom_data: decode_custom_data(&body),
                private_ip,
                subnet_id,
            };
            queue_hook(st, op_id, rkey, vm);
        }
    } else if ty == VMSS {
        sync_instances(ctx, st, rkey, op_id);
    }
}

fn queue_hook(st: &mut ArmState, op_id: &str, rkey: &str, vm: VmCreated) {
    if let Some(op) = st.ops.get_mut(op_id) {
        op.hooks_pending += 1;
    }
    st.pending_hooks.push(HookJob {
        op_id: op_id.to_string(),
        resource_key: rkey.to_string(),
        what: HookWhat::Vm(vm),
    });
}

fn base36_6(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = digits[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Adds or removes instances to match `sku.capacity`.
fn sync_instances(ctx: &Ctx<'_>, st: &mut ArmState, rkey: &str, op_id: &str) {
    let Some(r) = st.resources.get(rkey) else {
        return;
    };
    let (id, body) = (r.id.clone(), r.body.clone());
    let capacity = body
        .pointer("/sku/capacity")
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize;
    let mut existing: Vec<(u64, String)> = st
        .children_of(rkey, INSTANCES)
        .filter_map(|i| {
            i.body
                .get("instanceId")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .map(|n| (n, key(&i.id)))
        })
        .collect();
    existing.sort();
    while existing.len() > capacity {
        if let Some((_, k)) = existing.pop() {
            st.remove_tree(&k);
        }
    }
    let kind = kinds::lookup(INSTANCES).expect("instances kind");
    let vmss_name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let profile = body
        .pointer("/properties/virtualMachineProfile")
        .cloned()
        .unwrap_or(json!({}));
    let os = profile.get("osProfile").cloned();
    let prefix = os
        .as_ref()
        .and_then(|o| o.get("computerNamePrefix"))
        .and_then(Value::as_str)
        .unwrap_or(&vmss_name)
        .to_string();
    let nic_cfg = profile
        .pointer("/networkProfile/networkInterfaceConfigurations/0")
        .cloned()
        .unwrap_or(json!({}));
    let subnet_id = nic_cfg
        .pointer("/properties/ipConfigurations/0/properties/subnet/id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let first_new = existing.last().map_or(0, |(n, _)| n + 1);
    let location = body.get("location").cloned().unwrap_or(json!("eastus"));
    let missing = capacity.saturating_sub(existing.len()) as u64;
    for n in first_new..first_new + missing {
        let iid = format!("{id}/virtualMachines/{n}");
        let computer_name = format!("{prefix}{}", base36_6(n));
        let nic_name = nic_cfg
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("nic")
            .to_string();
        let ikey = key(&iid);
        let mut res = Resource {
            id: iid.clone(),
            kind,
            body: json!({
                "id": iid,
                "name": format!("{vmss_name}_{n}"),
                "type": INSTANCES,
                "instanceId": n.to_string(),
                "location": location,
                "sku": body.get("sku").cloned().unwrap_or(json!({})),
                "properties": {
                    "latestModelApplied": true,
                    "vmId": uuid::Uuid::new_v4().to_string(),
                    "hardwareProfile": {"vmSize": body.pointer("/sku/name").cloned().unwrap_or(json!(""))},
                    "osProfile": {
                        "computerName": computer_name,
                        "adminUsername": os.as_ref().and_then(|o| o.get("adminUsername")).cloned().unwrap_or(Value::Null),
                        "secrets": []
                    },
                    "networkProfile": {"networkInterfaces": [{"id": format!("{iid}/networkInterfaces/{nic_name}")}]},
                    "timeCreated": crate::clock::rfc3339_now()
                }
            }),
            visible: true,
            op: None,
            power_state: "starting",
        };
        res.set_provisioning_state("Creating");
        st.resources.insert(ikey.clone(), res);
        let mut instance_ip = None;
        if let Some(subnet) = &subnet_id {
            let prefix_cidr = st
                .resources
                .get(&key(subnet))
                .and_then(|s| {
                    s.body
                        .pointer("/properties/addressPrefix")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "10.0.0.0/24".into());
            let ip = st.allocate_private_ip(&key(subnet), &prefix_cidr);
            instance_ip = ip.parse().ok();
            if let Ok(addr) = ip.parse() {
                st.backings.insert(
                    ikey.clone(),
                    VmBacking {
                        private_ip: addr,
                        public_ip: None,
                    },
                );
            }
        }
        if ctx.hook_set {
            let vm = VmCreated {
                resource_id: iid.clone(),
                name: format!("{vmss_name}_{n}"),
                computer_name,
                resource_group: rg_of(&id),
                scale_set: Some(vmss_name.clone()),
                admin_username: os
                    .as_ref()
                    .and_then(|o| o.get("adminUsername"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                ssh_public_keys: ssh_keys(os.as_ref()),
                custom_data: profile
                    .pointer("/osProfile/customData")
                    .and_then(Value::as_str)
                    .and_then(|c| {
                        base64::engine::general_purpose::STANDARD
                            .decode(c.trim())
                            .ok()
                    })
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
                private_ip: instance_ip,
                subnet_id: subnet_id.clone(),
            };
            queue_hook(st, op_id, &ikey, vm);
        }
    }
}

/// Completion effects: addresses from the hook land on the NIC and public IP.
pub(super) fn on_succeeded(st: &mut ArmState, rkey: &str, action: OpAction) {
    let Some(r) = st.resources.get_mut(rkey) else {
        return;
    };
    if r.power_state == "starting" {
        r.power_state = "running";
    }
    let (ty, body) = (r.kind.ty, r.body.clone());
    if ty == VMSS {
        let instances: Vec<String> = st
            .children_of(rkey, INSTANCES)
            .map(|i| key(&i.id))
            .collect();
        for k in instances {
            if let Some(i) = st.resources.get_mut(&k) {
                i.set_provisioning_state("Succeeded");
                if i.power_state == "starting" {
                    i.power_state = "running";
                }
            }
        }
        return;
    }
    if ty != VMS || action != OpAction::Create {
        return;
    }
    let Some(backing) = st.backings.get(rkey).copied() else {
        return;
    };
    let Some(nic_id) = body
        .pointer("/properties/networkProfile/networkInterfaces/0/id")
        .and_then(Value::as_str)
    else {
        return;
    };
    let mut pip_id = None;
    if let Some(nic) = st.resources.get_mut(&key(nic_id))
        && let Some(cfg) = nic
            .body
            .pointer_mut("/properties/ipConfigurations/0/properties")
    {
        cfg["privateIPAddress"] = json!(backing.private_ip.to_string());
        pip_id = cfg
            .pointer("/publicIPAddress/id")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(pip) = pip_id.and_then(|p| st.resources.get_mut(&key(&p))) {
        let ip = backing.public_ip.unwrap_or(backing.private_ip);
        pip.props_mut()
            .insert("ipAddress".into(), json!(ip.to_string()));
    }
}

fn instance_view(r: &Resource) -> Value {
    let ps = r.provisioning_state().unwrap_or("Succeeded");
    let power = r.power_state;
    json!({
        "computerName": r.body.pointer("/properties/osProfile/computerName").cloned().unwrap_or(Value::Null),
        "osName": "ubuntu",
        "vmAgent": {"vmAgentVersion": "2.10.0.8", "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready"}]},
        "statuses": [
            {"code": format!("ProvisioningState/{}", ps.to_ascii_lowercase()), "level": "Info", "displayStatus": format!("Provisioning {}", ps.to_ascii_lowercase())},
            {"code": format!("PowerState/{power}"), "level": "Info", "displayStatus": format!("VM {power}")}
        ]
    })
}

/// GET shape: write-only secrets removed, instance view on `$expand=instanceView`.
pub(super) fn render(ctx: &Ctx<'_>, _st: &ArmState, r: &Resource) -> Value {
    let mut b = r.body.clone();
    if let Some(os) = b
        .pointer_mut("/properties/osProfile")
        .and_then(Value::as_object_mut)
    {
        os.remove("customData");
        os.remove("adminPassword");
    }
    if let Some(os) = b
        .pointer_mut("/properties/virtualMachineProfile/osProfile")
        .and_then(Value::as_object_mut)
    {
        os.remove("customData");
        os.remove("adminPassword");
    }
    if ctx
        .req
        .query_param("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"))
    {
        b["properties"]["instanceView"] = instance_view(r);
    }
    b
}

/// POST actions (start, powerOff, deallocate, restart) and GET instanceView.
pub(super) fn action(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
    kind: &'static Kind,
    rkey: &str,
    action: &str,
    api_version: &str,
) -> Result<Resp, ArmError> {
    let Some(r) = visible(st, rkey) else {
        return Err(not_found(st, p, kind, rkey));
    };
    let a = action.to_ascii_lowercase();
    if a == "instanceview" && ctx.req.method == Method::GET {
        return Ok(Resp::json(StatusCode::OK, &instance_view(r)));
    }
    let (power, change) = match (ctx.req.method.clone(), a.as_str()) {
        (Method::POST, "start") => ("running", Some(PowerChange::Start)),
        (Method::POST, "restart") => ("running", Some(PowerChange::Restart)),
        (Method::POST, "reimage" | "reimageall") => ("running", Some(PowerChange::Reimage)),
        (Method::POST, "redeploy") => ("running", None),
        (Method::POST, "poweroff") => ("stopped", Some(PowerChange::PowerOff)),
        (Method::POST, "deallocate") => ("deallocated", Some(PowerChange::Deallocate)),
        _ => {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                format!(
                    "The resource type '{}/{action}' could not be found in the namespace 'Microsoft.Compute' for api version '{api_version}'.",
                    p.types.join("/")
                ),
            ));
        }
    };
    if r.op.is_some() {
        return Err(ArmError::another_operation(&r.id));
    }
    let id = r.id.clone();
    let location = r
        .body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("eastus")
        .to_string();
    // The VMs the action acts on: the VM, or the scale set's instances (all, or the
    // `instanceIds` of the body, as VirtualMachineScaleSetVMInstanceIDs).
    let targets: Vec<String> = if kind.ty == VMSS {
        scale_set_targets(ctx, st, rkey, &p.names[0])?
    } else {
        vec![rkey.to_string()]
    };
    let mut op = new_op(
        ctx,
        &p.sub,
        "Microsoft.Compute",
        &location,
        &id,
        OpAction::Action(power),
        vec!["Updating"],
        0.5,
        kind.ty,
        api_version,
    );
    if let Some(r) = st.resources.get_mut(rkey) {
        r.op = Some(op.id.clone());
        r.set_provisioning_state("Updating");
    }
    for t in &targets {
        let Some(i) = st.resources.get_mut(t) else {
            continue;
        };
        op.targets.push((t.clone(), i.power_state));
        i.power_state = transition(power, change);
        // The backing host follows: stopped on powerOff/deallocate, started on start, ...
        if let Some(change) = change
            && ctx.hook_set
            && st.backings.contains_key(t)
        {
            let resource_id = i.id.clone();
            op.hooks_pending += 1;
            st.pending_power.push(PowerJob {
                op_id: op.id.clone(),
                resource_id,
                change,
            });
        }
    }
    let mut resp = Resp::empty(StatusCode::ACCEPTED)
        .with_header("Location", ctx.url(&op.result_path(), api_version))
        .with_header(
            "Azure-AsyncOperation",
            ctx.url(&op.status_path(), api_version),
        );
    add_retry_after(&mut resp, op.remaining(ctx.now), ctx.shared.wait_hint);
    st.ops.insert(op.id.clone(), op);
    Ok(resp)
}

/// The power state an instance view shows while an action runs (`PowerState/stopping`, ...).
fn transition(power: &'static str, change: Option<PowerChange>) -> &'static str {
    match (power, change) {
        ("stopped", _) => "stopping",
        ("deallocated", _) => "deallocating",
        (_, Some(PowerChange::Start | PowerChange::Restart | PowerChange::Reimage)) => "starting",
        (p, _) => p,
    }
}

/// The instance keys a scale-set action targets: every instance, or the body's `instanceIds`
/// (each must be an instance of the set).
fn scale_set_targets(
    ctx: &Ctx<'_>,
    st: &ArmState,
    rkey: &str,
    vmss_name: &str,
) -> Result<Vec<String>, ArmError> {
    let all: Vec<(String, String)> = st
        .children_of(rkey, INSTANCES)
        .map(|i| {
            (
                i.body
                    .get("instanceId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                key(&i.id),
            )
        })
        .collect();
    let wanted: Option<Vec<String>> = if ctx.req.body.is_empty() {
        None
    } else {
        let body: Value = serde_json::from_slice(&ctx.req.body)
            .map_err(|e| ArmError::invalid_content(e.to_string()))?;
        match body.get("instanceIds") {
            None | Some(Value::Null) => None,
            Some(Value::Array(ids)) => Some(
                ids.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        ArmError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidParameter",
                            "instanceIds must be an array of strings.",
                        )
                        .target("instanceIds")
                    })?,
            ),
            Some(_) => {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "instanceIds must be an array of strings.",
                )
                .target("instanceIds"));
            }
        }
    };
    let Some(wanted) = wanted else {
        return Ok(all.into_iter().map(|(_, k)| k).collect());
    };
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|(iid, _)| iid == w)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| {
                    ArmError::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        format!(
                            "The provided instanceId {w} is not an active Virtual Machine Scale Set VM instanceId of '{vmss_name}'."
                        ),
                    )
                    .target("instanceIds")
                })
        })
        .collect()
}

/// `virtualMachineScaleSets/{n}/networkInterfaces` and
/// `virtualMachineScaleSets/{n}/virtualMachines/{i}/networkInterfaces`: the instance NICs
/// with the addresses the instances got.
pub(super) fn scale_set_nics(
    ctx: &Ctx<'_>,
    st: &mut ArmState,
    p: &ResPath,
) -> Result<Resp, ArmError> {
    let mut versions: Vec<&str> = kinds::NETWORK_VERSIONS.to_vec();
    versions.extend_from_slice(kinds::COMPUTE_VERSIONS);
    ctx.check_api_version(
        &versions,
        "Microsoft.Compute/virtualMachineScaleSets/networkInterfaces",
        true,
    )?;
    if ctx.req.method != Method::GET {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET is supported.",
        ));
    }
    let vmss_kind = kinds::lookup(VMSS).expect("vmss kind");
    let vmss_id = p.id_with(vmss_kind, &p.names[..1]);
    let Some(vmss) = visible(st, &key(&vmss_id)) else {
        return Err(ArmError::resource_not_found(
            &format!("{VMSS}/{}", p.names[0]),
            p.rg.as_deref().unwrap_or(""),
        ));
    };
    let nic_cfg = vmss
        .body
        .pointer(
            "/properties/virtualMachineProfile/networkProfile/networkInterfaceConfigurations/0",
        )
        .cloned()
        .unwrap_or(json!({}));
    let nic_name = nic_cfg
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("nic")
        .to_string();
    let ipc = nic_cfg
        .pointer("/properties/ipConfigurations/0")
        .cloned()
        .unwrap_or(json!({}));
    let ipc_name = ipc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("ipconfig1")
        .to_string();
    let subnet = ipc
        .pointer("/properties/subnet")
        .cloned()
        .unwrap_or(Value::Null);
    let only: Option<&String> = p.names.get(1);
    let items: Vec<Value> = st
        .children_of(&key(&vmss_id), INSTANCES)
        .filter(|i| {
            only.is_none_or(|o| {
                i.body.get("instanceId").and_then(Value::as_str) == Some(o.as_str())
            })
        })
        .map(|i| {
            let nic_id = format!("{}/networkInterfaces/{nic_name}", i.id);
            let ip = st
                .backings
                .get(&key(&i.id))
                .map(|b| b.private_ip.to_string());
            json!({
                "id": nic_id,
                "name": nic_name,
                "properties": {
                    "provisioningState": "Succeeded",
                    "primary": true,
                    "virtualMachine": {"id": i.id},
                    "ipConfigurations": [{
                        "id": format!("{nic_id}/ipConfigurations/{ipc_name}"),
                        "name": ipc_name,
                        "properties": {
                            "provisioningState": "Succeeded",
                            "privateIPAddress": ip,
                            "privateIPAllocationMethod": "Dynamic",
                            "privateIPAddressVersion": "IPv4",
                            "primary": true,
                            "subnet": subnet
                        }
                    }]
                }
            })
        })
        .collect();
    Ok(Resp::json(StatusCode::OK, &list_body(items)))
}
