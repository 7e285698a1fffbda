//! Every example response in the spec pack parses into our models, with the fields we read.

use serde::de::DeserializeOwned;
use serde_json::Value;
use siteflow_azure::models::*;
use std::path::Path;

const PACK: &str = "/work/shared/azure-specs";

fn bodies(rel: &str) -> Vec<Value> {
    let path = Path::new(PACK).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let out: Vec<Value> = v["responses"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|r| r.get("body").cloned())
        .collect();
    assert!(!out.is_empty(), "{rel} has response bodies");
    out
}

fn parse_all<T: DeserializeOwned>(rel: &str) -> Vec<T> {
    bodies(rel)
        .into_iter()
        .map(|b| serde_json::from_value(b).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

#[test]
fn every_example_response_parses_into_our_models() {
    for rg in parse_all::<ResourceGroup>("resources/examples/2025-04-01/CreateResourceGroup.json")
        .into_iter()
        .chain(parse_all::<ResourceGroup>(
            "resources/examples/2025-04-01/ResourceGroups_Get.json",
        ))
    {
        assert!(rg.id.is_some() && !rg.location.is_empty());
        assert!(rg.properties.unwrap().provisioning_state.is_some());
    }
    for p in parse_all::<Provider>("resources/examples/2025-04-01/GetProvider.json") {
        assert!(p.registration_state.is_some() && p.namespace.is_some());
    }
    for n in parse_all::<NetworkSecurityGroup>(
        "network/examples/2026-03-01/NetworkSecurityGroupCreate.json",
    ) {
        assert!(n.id.is_some());
        assert!(n.properties.provisioning_state.is_some());
    }
    for p in parse_all::<PublicIpAddress>(
        "network/examples/2026-03-01/PublicIpAddressCreateDefaults.json",
    ) {
        assert!(p.sku.is_some());
    }
    for s in parse_all::<Subnet>("network/examples/2026-03-01/SubnetGet.json") {
        assert!(s.properties.unwrap().address_prefix.is_some());
    }
    for v in parse_all::<VirtualNetwork>("network/examples/2026-03-01/VirtualNetworkCreate.json") {
        assert!(!v.properties.address_space.address_prefixes.is_empty());
    }
    for s in parse_all::<VirtualMachineScaleSet>(
        "compute/examples/2026-04-01/VirtualMachineScaleSet_Create_WithSshAuthentication.json",
    ) {
        assert!(s.sku.unwrap().capacity.is_some());
        assert!(s.properties.virtual_machine_profile.is_some());
    }
    for f in [
        "compute/examples/2026-04-01/VirtualMachine_Create_LinuxVmWithPatchSettingModeOfImageDefault.json",
        "compute/examples/2026-04-01/VirtualMachine_Get.json",
    ] {
        for vm in parse_all::<VirtualMachine>(f) {
            assert!(vm.properties.hardware_profile.is_some(), "{f}");
            assert!(vm.properties.provisioning_state.is_some(), "{f}");
        }
    }
    for f in [
        "keyvault/examples/GetSecret-example.2025-06-01.json",
        "keyvault/examples/SetSecret-example.7.6.json",
    ] {
        for s in parse_all::<SecretBundle>(f) {
            assert!(s.value.is_some() && s.id.is_some());
        }
    }
    for t in parse_all::<AcrRefreshToken>("acr/examples/PostRefreshToken.json") {
        assert!(!t.refresh_token.is_empty());
    }
    for t in parse_all::<AcrAccessToken>("acr/examples/PostAccessToken.json") {
        assert!(!t.access_token.is_empty());
    }
}

#[test]
fn operation_status_and_error_bodies_parse() {
    let op: OperationStatus = serde_json::from_str(
        r#"{"id":"x","name":"n","status":"Failed","startTime":"t","error":{"code":"AllocationFailed","message":"m","details":[]}}"#,
    )
    .unwrap();
    assert_eq!(op.error.unwrap().code.as_deref(), Some("AllocationFailed"));
    let e: ErrorResponse = serde_json::from_str(
        r#"{"error":{"code":"QuotaExceeded","message":"m","target":"t","details":[{"code":"c","message":"d"}],"additionalInfo":[]}}"#,
    )
    .unwrap();
    assert_eq!(e.error.unwrap().details.len(), 1);
}

/// A body serialized again after parsing: the envelope (`Tracked`) carries the same id,
/// name, location, tags, SKU, identity and zones as the example, never sends `type`, and
/// a second round trip changes nothing.
fn round_trip<P, S>(rel: &str, body: &Value)
where
    Tracked<P, S>: DeserializeOwned + serde::Serialize,
{
    let parsed: Tracked<P, S> =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(
        parsed.kind.as_deref(),
        body["type"].as_str(),
        "{rel}: type is read"
    );
    let out = serde_json::to_value(&parsed).unwrap();
    assert!(
        out.get("type").is_none(),
        "{rel}: type is never sent: {out}"
    );
    for key in ["id", "name", "location", "tags", "zones"] {
        assert_eq!(out.get(key), body.get(key), "{rel}: `{key}`");
    }
    for key in ["sku", "identity"] {
        assert_eq!(
            out.get(key).is_some(),
            body.get(key).is_some(),
            "{rel}: `{key}`"
        );
    }
    assert!(out.get("properties").is_some(), "{rel}: properties kept");
    let again: Tracked<P, S> = serde_json::from_value(out.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        out,
        "{rel}: a fixed point"
    );
}

fn round_trip_all<P, S>(rel: &str)
where
    Tracked<P, S>: DeserializeOwned + serde::Serialize,
{
    for b in bodies(rel) {
        round_trip::<P, S>(rel, &b);
    }
}

#[test]
fn tracked_resources_round_trip_the_example_bodies() {
    round_trip_all::<Option<ProvisioningOnly>, Sku>(
        "resources/examples/2025-04-01/CreateResourceGroup.json",
    );
    round_trip_all::<Option<ProvisioningOnly>, Sku>(
        "resources/examples/2025-04-01/ResourceGroups_Get.json",
    );
    round_trip_all::<NetworkSecurityGroupProperties, Sku>(
        "network/examples/2026-03-01/NetworkSecurityGroupCreate.json",
    );
    round_trip_all::<PublicIpProperties, Sku>(
        "network/examples/2026-03-01/PublicIpAddressCreateDefaults.json",
    );
    round_trip_all::<VirtualNetworkProperties, Sku>(
        "network/examples/2026-03-01/VirtualNetworkCreate.json",
    );
    round_trip_all::<ScaleSetProperties, ScaleSetSku>(
        "compute/examples/2026-04-01/VirtualMachineScaleSet_Create_WithSshAuthentication.json",
    );
    for f in [
        "compute/examples/2026-04-01/VirtualMachine_Create_LinuxVmWithPatchSettingModeOfImageDefault.json",
        "compute/examples/2026-04-01/VirtualMachine_Get.json",
    ] {
        round_trip_all::<VirtualMachineProperties, Sku>(f);
    }
    // The pack has no network interface example; this is the shape the emulator returns.
    let nic = serde_json::json!({
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic",
        "name": "nic",
        "type": "Microsoft.Network/networkInterfaces",
        "location": "westeurope",
        "tags": {"siteflow-site": "lab"},
        "properties": {
            "provisioningState": "Succeeded",
            "ipConfigurations": [{
                "name": "ipconfig1",
                "properties": {
                    "privateIPAddress": "10.0.0.4",
                    "privateIPAllocationMethod": "Dynamic",
                    "subnet": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/default"}
                }
            }]
        }
    });
    round_trip::<NetworkInterfaceProperties, Sku>("network interface", &nic);
    let parsed: NetworkInterface = serde_json::from_value(nic).unwrap();
    assert_eq!(parsed.properties.ip_configurations.len(), 1);
}

#[test]
fn request_bodies_leave_out_what_is_not_set() {
    // A resource group's properties are read-only: a body without them leaves them out.
    let rg = ResourceGroup {
        location: "westeurope".into(),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&rg).unwrap(),
        serde_json::json!({"location": "westeurope"})
    );
    // Other resources always send their properties.
    let vnet = VirtualNetwork {
        location: "westeurope".into(),
        kind: Some("Microsoft.Network/virtualNetworks".into()),
        ..Default::default()
    };
    let v = serde_json::to_value(&vnet).unwrap();
    assert_eq!(v["location"], "westeurope");
    assert!(
        v.get("properties").is_some() && v.get("type").is_none(),
        "{v}"
    );
    assert!(v.get("sku").is_none() && v.get("zones").is_none(), "{v}");
}
