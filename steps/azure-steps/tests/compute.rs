//! Network and VMs against the emulator: create once, re-run without writes, drift repair,
//! host keys installed through cloud-init, secrets kept out of every log, LRO resume and
//! failures.

mod common;

use common::Env;
use serde_json::json;
use siteflow_azure_emulator::{Fault, FaultRule, VmBacking, hook_fn};
use siteflow_engine::runner::RunStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn network_steps(env: &Env) -> String {
    format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg1, location: westeurope }}\n\
         \x20 - id: net\n    uses: azure.network\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: edge, admin_cidr: 203.0.113.0/24, public_ips: [server] }}\n",
        a = env.azure()
    )
}

fn vm_step(env: &Env, id: &str, name: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    uses: azure.vm\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: {name}, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\"{extra} }}\n",
        a = env.azure()
    )
}

#[tokio::test]
async fn network_is_created_once_and_drift_is_repaired() {
    let env = Env::new().await;
    let wf = env.workflow(&network_steps(&env));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let (_, o, _) = env.step_status(&out.run_id, "net").await;
    let o = o.unwrap();
    assert!(
        o["subnet_id"]
            .as_str()
            .unwrap()
            .ends_with("/virtualNetworks/edge-vnet/subnets/edge-subnet"),
        "{o}"
    );
    assert!(
        o["nsg_id"]
            .as_str()
            .unwrap()
            .ends_with("/networkSecurityGroups/edge-nsg")
    );
    assert!(
        o["public_ips"]["server"]
            .as_str()
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
        "{o}"
    );
    let nsg_put = env
        .emu
        .request_log()
        .matching("/networkSecurityGroups/edge-nsg")
        .into_iter()
        .find(|e| e.method == "PUT")
        .unwrap();
    let rules = nsg_put.body.unwrap()["properties"]["securityRules"].clone();
    let rule = |port: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["properties"]["destinationPortRange"] == port)
            .unwrap()["properties"]["sourceAddressPrefix"]
            .clone()
    };
    assert_eq!(rule("80"), "*");
    assert_eq!(rule("443"), "*");
    assert_eq!(rule("22"), "203.0.113.0/24");
    assert_eq!(rule("6443"), "203.0.113.0/24");
    let puts = env
        .emu
        .request_log()
        .entries()
        .iter()
        .filter(|e| e.method == "PUT")
        .count();

    let again = env.run(&wf, Some("edge-1")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(
        env.emu
            .request_log()
            .entries()
            .iter()
            .filter(|e| e.method == "PUT")
            .count(),
        puts,
        "no PUT on re-run"
    );

    // Someone opens SSH to the world: the next run reports the drift and closes it again.
    let c = env.client();
    let url = c.arm_url(&format!("/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups/edge-nsg", env.emu.subscription_id()), "2026-03-01");
    let mut nsg: serde_json::Value = c
        .send(siteflow_azure::Service::Arm, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    for r in nsg["properties"]["securityRules"].as_array_mut().unwrap() {
        if r["name"] == "allow-ssh-admin" {
            r["properties"]["sourceAddressPrefix"] = json!("*");
        }
    }
    let body = json!({"location": nsg["location"], "tags": nsg["tags"], "properties": {"securityRules": nsg["properties"]["securityRules"]}});
    let begun = c.begin("PUT", &url, Some(&body)).await.unwrap();
    drop(begun);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fixed = env.run(&wf, Some("edge-1")).await;
    assert_eq!(fixed.status, RunStatus::Succeeded);
    assert!(
        env.persisted(&fixed.run_id)
            .await
            .contains("drift: nsg: NSG rule allow-ssh-admin differs")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nsg: serde_json::Value = c
        .send(siteflow_azure::Service::Arm, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    let ssh = nsg["properties"]["securityRules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "allow-ssh-admin")
        .unwrap()
        .clone();
    assert_eq!(ssh["properties"]["sourceAddressPrefix"], "203.0.113.0/24");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn vm_gets_keys_and_host_key_via_cloud_init_and_secrets_stay_out_of_logs() {
    let env = Env::new().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    env.emu.set_vm_backing_hook(hook_fn(move |vm| {
        s2.lock().unwrap().push(vm);
        async {
            Ok(VmBacking {
                private_ip: "10.0.1.4".parse().unwrap(),
                public_ip: Some("198.51.100.7".parse().unwrap()),
            })
        }
    }));
    let wf = env.workflow(&format!(
        "{}{}",
        network_steps(&env),
        vm_step(&env, "server", "edge-server", ", public_ip_id: \"${{ steps.net.outputs.public_ip_ids.server }}\", custom_data: \"#!/bin/sh\\necho hi\\n\", spot: true, eviction_policy: Delete, zone: \"1\"")
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, o, _) = env.step_status(&out.run_id, "server").await;
    let o = o.unwrap();
    assert_eq!(o["private_ip"], "10.0.1.4");
    assert_eq!(o["public_ip"], "198.51.100.7");
    assert_eq!(o["admin_username"], "azureuser");
    assert!(
        o["principal_id"].as_str().is_some_and(|p| !p.is_empty()),
        "{o}"
    );
    let fp = o["host_key_fingerprint"].as_str().unwrap().to_string();
    assert!(fp.starts_with("SHA256:") && fp.len() > 40, "{fp}");
    assert!(
        o["ssh_public_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );

    // cloud-init carried our host key (whose fingerprint is the output) and the user's script.
    let vm = seen.lock().unwrap()[0].clone();
    let cd = vm.custom_data.unwrap();
    assert!(
        cd.contains("ed25519_private: |") && cd.contains("echo hi"),
        "{cd}"
    );
    let host_pub = cd
        .lines()
        .find_map(|l| l.trim().strip_prefix("ed25519_public: "))
        .unwrap();
    let key = ssh_key::PublicKey::from_openssh(host_pub).unwrap();
    assert_eq!(key.fingerprint(ssh_key::HashAlg::Sha256).to_string(), fp);
    assert_eq!(vm.ssh_public_keys.len(), 1);

    // The generated admin private key and the host private key: in 0600 files only.
    let key_dir = env.path().join(".siteflow/keys/edge-1/server");
    let admin = std::fs::read_to_string(key_dir.join("admin_ed25519")).unwrap();
    let host = std::fs::read_to_string(key_dir.join("host_ed25519")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(key_dir.join("admin_ed25519"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let body_line = |k: &str| k.lines().nth(2).unwrap().to_string();
    let persisted = env.persisted(&out.run_id).await;
    let requests = serde_json::to_string(&env.emu.request_log().entries()).unwrap();
    for (what, needle) in [
        ("admin key", body_line(&admin)),
        ("host key", body_line(&host)),
        ("client secret", common::SECRET.to_string()),
    ] {
        assert!(
            !persisted.contains(&needle),
            "{what} in the state DB or logs"
        );
        assert!(
            !requests.contains(&needle),
            "{what} in the emulator's request log"
        );
    }
    assert!(!o["ssh_private_key"].to_string().contains("PRIVATE"), "{o}");

    // Re-run: observed, no PUT; the generated key is recovered from its file.
    let puts = env.count("PUT", "/virtualMachines/edge-server");
    let again = env.run(&wf, Some("edge-1")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(env.count("PUT", "/virtualMachines/edge-server"), puts);
    assert_eq!(puts, 1);
    let (_, o2, _) = env.step_status(&again.run_id, "server").await;
    assert_eq!(o2.unwrap()["host_key_fingerprint"], fp.as_str());
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_resumed_run_keeps_polling_the_same_operation() {
    let env = Env::new().await;
    // VM creation takes long enough to interrupt the run in the middle of it.
    env.emu.faults().add(FaultRule::for_type(
        "Microsoft.Compute/virtualMachines",
        Fault::Slow { factor: 100.0 },
    ));
    let wf = env.workflow(&format!("{}{}", network_steps(&env), vm_step(&env, "server", "slow-vm", ", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d test\"")));
    let (control, handle) = env.start(&wf, Some("edge-1"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while env.count("PUT", "/virtualMachines/slow-vm") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the VM PUT never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    control.stop(Duration::ZERO);
    let first = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.status, RunStatus::Succeeded);

    let resumed = tokio::time::timeout(
        Duration::from_secs(120),
        env.runner().resume(&first.run_id, false),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        resumed.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&first.run_id).await.unwrap()
    );
    assert_eq!(
        env.count("PUT", "/virtualMachines/slow-vm"),
        1,
        "the resumed run polled the same operation"
    );
    let polls = env
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.contains("/operations/"))
        .count();
    assert!(polls >= 2, "polled: {polls}");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn lro_polling_honours_retry_after_and_failed_operations_are_permanent() {
    let config = siteflow_azure_emulator::EmulatorConfig {
        lro_retry_after_secs: Some(1),
        ..Default::default()
    };
    let env = Env::with(
        siteflow_azure_emulator::Emulator::builder()
            .time_scale(0.01)
            .config(config),
    )
    .await;
    env.emu.faults().add(FaultRule::for_type(
        "Microsoft.Compute/virtualMachines",
        Fault::Slow { factor: 60.0 },
    ));
    env.emu.faults().add(FaultRule::for_type(
        "Microsoft.Compute/virtualMachines",
        Fault::FailOperation {
            code: "AllocationFailed".into(),
            message: Some("no capacity in zone 1".into()),
            count: Some(1),
        },
    ));
    let wf = env.workflow(&format!(
        "{}{}",
        network_steps(&env),
        vm_step(&env, "server", "vm1", "")
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(out.status, RunStatus::Failed);
    let (_, _, err) = env.step_status(&out.run_id, "server").await;
    let err = err.unwrap();
    assert_eq!(err.code, "AllocationFailed");
    assert!(err.message.contains("no capacity"), "{}", err.message);
    assert_eq!(err.class, siteflow_step::ErrorClass::Permanent);
    // Polls of the VM's operation are spaced by the 1 s Retry-After.
    let polls: Vec<_> = env
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.contains("Microsoft.Compute/locations"))
        .collect();
    assert!(!polls.is_empty());
    let times: Vec<_> = polls
        .iter()
        .map(|e| {
            time::OffsetDateTime::parse(
                &e.timestamp,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    for w in times.windows(2) {
        assert!(
            (w[1] - w[0]) >= time::Duration::milliseconds(900),
            "polls too close: {times:?}"
        );
    }
    env.emu.shutdown().await;
}

fn vmss_wf(env: &Env, capacity: u32) -> String {
    env.workflow(&format!(
        "{}  - id: pool\n    uses: azure.vmss\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: pool, capacity: {capacity}, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d t\" }}\n",
        network_steps(env),
        a = env.azure()
    ))
}

#[tokio::test]
async fn scale_set_is_created_listed_rerun_without_writes_and_scaled() {
    let env = Env::new().await;
    let out = env.run(&vmss_wf(&env, 2), Some("edge-1")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, o, _) = env.step_status(&out.run_id, "pool").await;
    let o = o.unwrap();
    assert_eq!(o["capacity"], 2);
    let instances = o["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{o}");
    assert!(
        instances.iter().all(|i| i["private_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.1."))),
        "{o}"
    );
    assert_eq!(env.count("PUT", "/virtualMachineScaleSets/pool"), 1);

    let again = env.run(&vmss_wf(&env, 2), Some("edge-1")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(
        env.count("PUT", "/virtualMachineScaleSets/pool"),
        1,
        "no PUT on re-run"
    );

    let scaled = env.run(&vmss_wf(&env, 3), Some("edge-1")).await;
    assert_eq!(scaled.status, RunStatus::Succeeded);
    assert_eq!(env.count("PUT", "/virtualMachineScaleSets/pool"), 2);
    let (_, o, _) = env.step_status(&scaled.run_id, "pool").await;
    assert_eq!(o.unwrap()["instances"].as_array().unwrap().len(), 3);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn network_adopts_a_tagged_nsg_made_elsewhere_and_refuses_an_untagged_vm() {
    let env = Env::new().await;
    let c = env.client();
    let sub = env.emu.subscription_id().to_string();
    let rg = c.arm_url(
        &format!("/subscriptions/{sub}/resourcegroups/rg1"),
        "2025-04-01",
    );
    c.send(
        siteflow_azure::Service::Arm,
        "PUT",
        &rg,
        Some(&json!({"location": "westeurope", "tags": {"siteflow-site": "edge-1", "siteflow-step": "rg"}})),
    )
    .await
    .unwrap();
    let rule = |name: &str, port: &str, from: &str, priority: u32| {
        json!({"name": name, "properties": {
        "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": port, "sourceAddressPrefix": from,
        "destinationAddressPrefix": "*", "access": "Allow", "priority": priority, "direction": "Inbound"}})
    };
    let nsg = c.arm_url(&format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups/edge-nsg"), "2026-03-01");
    let body = json!({"location": "westeurope", "tags": {"siteflow-site": "edge-1", "siteflow-step": "net", "siteflow-run": "elsewhere"},
        "properties": {"securityRules": [rule("allow-http", "80", "*", 100), rule("allow-https", "443", "*", 110),
            rule("allow-ssh-admin", "22", "203.0.113.0/24", 120), rule("allow-kube-api-admin", "6443", "203.0.113.0/24", 130)]}});
    c.begin("PUT", &nsg, Some(&body)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.emu.request_log().clear();

    let wf = env.workflow(&network_steps(&env).replace(", public_ips: [server]", ""));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    assert_eq!(
        env.count("PUT", "/networkSecurityGroups/edge-nsg"),
        0,
        "the tagged NSG is adopted as is"
    );
    assert_eq!(env.count("PUT", "/virtualNetworks/edge-vnet"), 1);

    // An untagged VM of the same name is not taken over.
    let vm = c.arm_url(&format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/taken"), "2026-04-01");
    let nic = c.arm_url(&format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/other-nic"), "2026-03-01");
    let (_, o, _) = env.step_status(&out.run_id, "net").await;
    let subnet = o.unwrap()["subnet_id"].as_str().unwrap().to_string();
    c.begin("PUT", &nic, Some(&json!({"location": "westeurope", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.begin("PUT", &vm, Some(&json!({"location": "westeurope", "properties": {"hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": {"osDisk": {"createOption": "FromImage"}}, "networkProfile": {"networkInterfaces": [{"id": nic.split('?').next().unwrap().trim_start_matches(env.emu.base_url())}]}}}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wf = env.workflow(&format!(
        "{}{}",
        network_steps(&env).replace(", public_ips: [server]", ""),
        vm_step(&env, "server", "taken", "")
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_eq!(out.status, RunStatus::Failed);
    let (_, _, err) = env.step_status(&out.run_id, "server").await;
    assert_eq!(err.unwrap().code, "ResourceNotOwned");
    assert_eq!(
        env.count("PUT", "/virtualMachines/taken"),
        1,
        "only the outsider's PUT"
    );
    env.emu.shutdown().await;
}
