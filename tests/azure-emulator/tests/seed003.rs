//! Seed 003's Azure surface: scale-set power actions (per instance, with the backing hook),
//! spot and OS disk rules, storage accounts, `listKeys`, file shares, and a resource-group
//! delete that releases the backed hosts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use siteflow_azure_emulator::{PowerChange, VmBacking, VmCreated, hook_fns_with_power};

use common::{Client, eventually, start};

const NET: &str = "api-version=2026-03-01";
const CMP: &str = "api-version=2026-04-01";
const STG: &str = "api-version=2025-06-01";

async fn network(c: &Client, t: &str, rg: &str) -> String {
    c.create_rg(t, rg).await;
    let rgp = c.rg_path(rg);
    c.arm_with(
        t,
        Method::PUT,
        &format!("{rgp}/providers/Microsoft.Network/virtualNetworks/v?{NET}"),
        Some(json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.0.1.0/24"}}]}})),
    )
    .await;
    format!("{rgp}/providers/Microsoft.Network/virtualNetworks/v/subnets/default")
}

fn vmss_body(subnet: &str, profile_extra: Value) -> Value {
    let mut profile = json!({
        "osProfile": {"computerNamePrefix": "agent", "adminUsername": "azureuser"},
        "storageProfile": {"osDisk": {"createOption": "FromImage"}},
        "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]}
    });
    for (k, v) in profile_extra.as_object().cloned().unwrap_or_default() {
        if k == "osDisk" {
            profile["storageProfile"]["osDisk"] = v;
        } else {
            profile[k] = v;
        }
    }
    json!({"location": "eastus", "sku": {"name": "Standard_B1ls", "capacity": 2},
        "properties": {"virtualMachineProfile": profile}})
}

/// Polls an LRO's `Location` until it stops answering 202; returns the final status.
async fn wait_location(c: &Client, t: &str, location: &str) -> StatusCode {
    for _ in 0..200 {
        let r = c.arm_with(t, Method::GET, &c.rel(location), None).await;
        if r.status != StatusCode::ACCEPTED {
            return r.status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the operation did not finish");
}

async fn power_states(c: &Client, t: &str, vmss: &str) -> Vec<(String, String)> {
    let vms = c
        .arm_with(
            t,
            Method::GET,
            &format!("{vmss}/virtualMachines?{CMP}&$expand=instanceView"),
            None,
        )
        .await
        .json();
    vms["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let power = v["properties"]["instanceView"]["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|s| s["code"].as_str()?.strip_prefix("PowerState/"))
                .unwrap()
                .to_string();
            (v["instanceId"].as_str().unwrap().to_string(), power)
        })
        .collect()
}

#[tokio::test]
async fn scale_set_power_actions_follow_instance_ids_and_drive_the_hosts() {
    let (emu, c) = start(0.05, |_| {}).await;
    let power: Arc<Mutex<Vec<(String, PowerChange)>>> = Arc::default();
    let released: Arc<Mutex<Vec<String>>> = Arc::default();
    let (p2, r2) = (power.clone(), released.clone());
    emu.set_vm_backing_hook(hook_fns_with_power(
        |vm: VmCreated| async move {
            Ok(VmBacking {
                private_ip: vm.private_ip.unwrap(),
                public_ip: None,
            })
        },
        move |id: String| {
            let r2 = r2.clone();
            async move { r2.lock().unwrap().push(id) }
        },
        move |id: String, change: PowerChange| {
            let p2 = p2.clone();
            async move {
                // The operation waits for the host.
                tokio::time::sleep(Duration::from_millis(200)).await;
                p2.lock().unwrap().push((id, change));
                Ok(())
            }
        },
    ));
    let t = c.arm_token().await;
    let subnet = network(&c, &t, "rg3").await;
    let vmss = format!(
        "{}/providers/Microsoft.Compute/virtualMachineScaleSets/pool",
        c.rg_path("rg3")
    );
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{vmss}?{CMP}"),
            Some(vmss_body(&subnet, json!({}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(
        eventually(Duration::from_secs(5), || async {
            power_states(&c, &t, &vmss).await
                == [
                    ("0".into(), "running".into()),
                    ("1".into(), "running".into()),
                ]
        })
        .await
    );

    // Power off instance 1 only: 202 with Location, stopping while it runs, then stopped.
    let r = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{vmss}/poweroff?{CMP}"),
            Some(json!({"instanceIds": ["1"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").unwrap();
    assert!(r.header("azure-asyncoperation").is_some());
    assert_eq!(
        power_states(&c, &t, &vmss).await[1].1,
        "stopping",
        "the transition shows while the operation runs"
    );
    assert_eq!(
        wait_location(&c, &t, &location).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        power_states(&c, &t, &vmss).await,
        [
            ("0".into(), "running".into()),
            ("1".into(), "stopped".into())
        ]
    );
    {
        let p = power.lock().unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].0
                .ends_with("/virtualMachineScaleSets/pool/virtualMachines/1")
        );
        assert_eq!(p[0].1, PowerChange::PowerOff);
    }

    // An instance id the set does not have is refused.
    let r = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{vmss}/start?{CMP}"),
            Some(json!({"instanceIds": ["7"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidParameter");

    // Deallocate the whole set (no body), then start it again.
    let r = c
        .arm_with(&t, Method::POST, &format!("{vmss}/deallocate?{CMP}"), None)
        .await;
    wait_location(&c, &t, &r.header("location").unwrap()).await;
    assert!(
        power_states(&c, &t, &vmss)
            .await
            .iter()
            .all(|(_, p)| p == "deallocated")
    );
    let r = c
        .arm_with(&t, Method::POST, &format!("{vmss}/start?{CMP}"), None)
        .await;
    wait_location(&c, &t, &r.header("location").unwrap()).await;
    assert!(
        power_states(&c, &t, &vmss)
            .await
            .iter()
            .all(|(_, p)| p == "running")
    );
    let changes: Vec<PowerChange> = power.lock().unwrap().iter().map(|(_, c)| *c).collect();
    assert_eq!(
        changes
            .iter()
            .filter(|c| **c == PowerChange::Deallocate)
            .count(),
        2
    );
    assert_eq!(
        changes.iter().filter(|c| **c == PowerChange::Start).count(),
        2
    );

    // Deleting the group deletes the set and releases both instances' hosts.
    let r = c
        .arm_with(
            &t,
            Method::DELETE,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg3")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_location(&c, &t, &r.header("location").unwrap()).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            released.lock().unwrap().len() == 2
        })
        .await,
        "{:?}",
        released.lock().unwrap()
    );
    let r = c
        .arm_with(&t, Method::GET, &format!("{vmss}?{CMP}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    emu.shutdown().await;
}

#[tokio::test]
async fn spot_and_os_disk_size_are_checked_as_compute_does() {
    let (emu, c) = start(0.05, |_| {}).await;
    let t = c.arm_token().await;
    let subnet = network(&c, &t, "rgs").await;
    let put = |name: &'static str, extra: Value| {
        let (c, t, subnet) = (&c, &t, &subnet);
        async move {
            c.arm_with(
                t,
                Method::PUT,
                &format!(
                    "{}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}?{CMP}",
                    c.rg_path("rgs")
                ),
                Some(vmss_body(subnet, extra)),
            )
            .await
        }
    };
    let r = put("a", json!({"evictionPolicy": "Delete"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["target"], "evictionPolicy");
    let r = put(
        "b",
        json!({"priority": "Spot", "billingProfile": {"maxPrice": -2}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["target"], "billingProfile.maxPrice");
    let r = put(
        "c",
        json!({"priority": "Spotty", "evictionPolicy": "Delete"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "the schema's enum");
    let r = put(
        "d",
        json!({"osDisk": {"createOption": "FromImage", "diskSizeGB": 20}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["target"], "osDisk.diskSizeGB");
    // Spot without an eviction policy gets Deallocate; S4's 32 GB is a valid OS disk.
    let r = put(
        "e",
        json!({"priority": "Spot", "billingProfile": {"maxPrice": -1},
               "osDisk": {"createOption": "FromImage", "diskSizeGB": 32}}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let p = &r.json()["properties"]["virtualMachineProfile"];
    assert_eq!(p["evictionPolicy"], "Deallocate");
    assert_eq!(p["storageProfile"]["osDisk"]["diskSizeGB"], 32);
    emu.shutdown().await;
}

#[tokio::test]
async fn storage_accounts_keys_and_file_shares() {
    let (emu, c) = start(0.05, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rga").await;
    c.create_rg(&t, "rgb").await;
    let acct = |rg: &str, name: &str| {
        format!(
            "{}/providers/Microsoft.Storage/storageAccounts/{name}",
            c.rg_path(rg)
        )
    };
    let body = json!({"location": "eastus", "kind": "StorageV2", "sku": {"name": "Standard_LRS"},
        "properties": {"allowSharedKeyAccess": true, "minimumTlsVersion": "TLS1_2"}});

    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{}?{STG}", acct("rga", "Bad-Name")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "AccountNameInvalid");
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{}?{STG}", acct("rga", "edgefiles")),
            Some(json!({"location": "eastus", "kind": "StorageV2"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "sku is required");

    // Create: 202 with Location, invisible until done.
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{}?{STG}", acct("rga", "edgefiles")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_empty());
    let location = r.header("location").unwrap();
    let got = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{}?{STG}", acct("rga", "edgefiles")),
            None,
        )
        .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(wait_location(&c, &t, &location).await, StatusCode::OK);
    let a = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{}?{STG}", acct("rga", "edgefiles")),
            None,
        )
        .await
        .json();
    assert_eq!(a["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        a["properties"]["primaryEndpoints"]["file"],
        "https://edgefiles.file.core.windows.net/"
    );
    assert_eq!(a["sku"]["tier"], "Standard");

    // The name is global: another group cannot take it.
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{}?{STG}", acct("rgb", "edgefiles")),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "StorageAccountAlreadyTaken");

    // Keys: two, stable, never in the account's body nor in the request log.
    let keys = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{}/listKeys?{STG}", acct("rga", "edgefiles")),
            None,
        )
        .await
        .json();
    let key1 = keys["keys"][0]["value"].as_str().unwrap().to_string();
    assert_eq!(keys["keys"][0]["keyName"], "key1");
    assert_eq!(key1.len(), 88, "{key1}");
    assert_ne!(keys["keys"][1]["value"], key1.as_str());
    let again = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{}/listKeys?{STG}", acct("rga", "edgefiles")),
            None,
        )
        .await
        .json();
    assert_eq!(again["keys"][0]["value"], key1.as_str());
    assert!(!a.to_string().contains(&key1));

    // A file share: 201, then 200 on update; its parent must exist.
    let share = format!(
        "{}/fileServices/default/shares/data?{STG}",
        acct("rga", "edgefiles")
    );
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &share,
            Some(json!({"properties": {"shareQuota": 100}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["properties"]["shareQuota"], 100);
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &share,
            Some(json!({"properties": {"shareQuota": 200}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!(
                "{}/fileServices/default/shares/data?{STG}",
                acct("rga", "nosuchacct")
            ),
            Some(json!({"properties": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let log = serde_json::to_string(&emu.request_log().entries()).unwrap();
    assert!(!log.contains(&key1), "a storage key in the request log");

    // Delete is synchronous: 200, then 204; the share goes with the account.
    let del = format!("{}?{STG}", acct("rga", "edgefiles"));
    assert_eq!(
        c.arm_with(&t, Method::DELETE, &del, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.arm_with(&t, Method::DELETE, &del, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.arm_with(&t, Method::GET, &share, None).await.status,
        StatusCode::NOT_FOUND
    );
    emu.shutdown().await;
}
