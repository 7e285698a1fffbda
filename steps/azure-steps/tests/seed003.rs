//! Seed 003 against the emulator: a spot scale set with a 32 GB OS disk mounting a file share
//! of a new storage account (its key a secret that stays out of every log), power actions on
//! the set's instances that write nothing when already done, and a site's group deleted.

mod common;

use common::Env;
use siteflow_azure_emulator::{VmBacking, VmCreated, hook_fn};
use siteflow_engine::runner::RunStatus;
use std::sync::{Arc, Mutex};

fn site_steps(env: &Env, capacity: u32) -> String {
    format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg3, location: westeurope }}\n\
         \x20 - id: net\n    uses: azure.network\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg3, location: westeurope, name: edge, admin_cidr: 203.0.113.0/24 }}\n\
         \x20 - id: sa\n    uses: azure.storage-account\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg3, location: westeurope, name: edge3files }}\n\
         \x20 - id: share\n    uses: azure.file-share\n    needs: [sa]\n    with: {{ azure: {a}, resource_group: rg3, account: edge3files, name: data, quota_gb: 50 }}\n\
         \x20 - id: pool\n    uses: azure.vmss\n    needs: [net, share]\n    with: {{ azure: {a}, resource_group: rg3, location: westeurope, name: pool, capacity: {capacity}, size: Standard_B1ls, spot: true, eviction_policy: Delete, os_disk_size_gb: 32, os_disk_type: Standard_LRS, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d t\", file_shares: [{{ account: edge3files, share: \"${{{{ steps.share.outputs.name }}}}\", key: \"${{{{ steps.sa.outputs.key }}}}\", mount_point: /mnt/data }}] }}\n",
        a = env.azure()
    )
}

fn power_step(env: &Env, operation: &str, ids: &str) -> String {
    format!(
        "  - id: power\n    uses: azure.vmss-power\n    with: {{ azure: {a}, resource_group: rg3, name: pool, operation: {operation}{ids} }}\n",
        a = env.azure()
    )
}

fn backing_hook(env: &Env) -> Arc<Mutex<Vec<VmCreated>>> {
    let seen: Arc<Mutex<Vec<VmCreated>>> = Arc::default();
    let s2 = seen.clone();
    env.emu.set_vm_backing_hook(hook_fn(move |vm: VmCreated| {
        s2.lock().unwrap().push(vm.clone());
        async move {
            Ok(VmBacking {
                private_ip: vm.private_ip.unwrap(),
                public_ip: None,
            })
        }
    }));
    seen
}

#[tokio::test]
async fn spot_pool_mounts_a_file_share_and_the_key_stays_out_of_logs() {
    let env = Env::new().await;
    let seen = backing_hook(&env);
    let wf = env.workflow(&site_steps(&env, 2));
    let out = env.run(&wf, Some("edge-3")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, share, _) = env.step_status(&out.run_id, "share").await;
    let share = share.unwrap();
    assert_eq!(share["unc"], "//edge3files.file.core.windows.net/data");
    assert_eq!(share["quota_gb"], 50);
    let (_, sa, _) = env.step_status(&out.run_id, "sa").await;
    assert_eq!(
        sa.unwrap()["file_endpoint"],
        "https://edge3files.file.core.windows.net/"
    );

    // The key, as Azure gives it.
    let c = env.client();
    let keys: serde_json::Value = c
        .send(
            siteflow_azure::Service::Arm,
            "POST",
            &c.arm_url(
                &format!(
                    "/subscriptions/{}/resourceGroups/rg3/providers/Microsoft.Storage/storageAccounts/edge3files/listKeys",
                    env.emu.subscription_id()
                ),
                "2025-06-01",
            ),
            None,
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let key = keys["keys"][0]["value"].as_str().unwrap().to_string();

    // Every instance's cloud-init: a 0600 credentials file with the key and a mount unit.
    let vms = seen.lock().unwrap().clone();
    assert_eq!(vms.len(), 2);
    for vm in &vms {
        let cd = vm.custom_data.clone().unwrap();
        assert!(
            cd.contains(&format!(
                "  - path: /etc/smbcredentials/edge3files-data.cred\n    owner: root:root\n    permissions: '0600'\n    content: |\n      username=edge3files\n      password={key}\n"
            )),
            "{cd}"
        );
        assert!(cd.contains("What=//edge3files.file.core.windows.net/data\n"));
        assert!(cd.contains("Where=/mnt/data\n"));
        assert!(cd.contains("[systemctl, enable, --now, mnt-data.mount]"));
        assert!(cd.contains("ed25519_private: |"), "the host key part stays");
    }

    // The set: spot, evicted by deletion, pay up to on-demand, a 32 GB Standard HDD OS disk
    // (S4).
    let put = env
        .emu
        .request_log()
        .matching("/virtualMachineScaleSets/pool")
        .into_iter()
        .find(|e| e.method == "PUT")
        .unwrap();
    let profile = &put.body.as_ref().unwrap()["properties"]["virtualMachineProfile"];
    assert_eq!(profile["priority"], "Spot");
    assert_eq!(profile["evictionPolicy"], "Delete");
    assert_eq!(profile["billingProfile"]["maxPrice"], -1.0);
    assert_eq!(profile["storageProfile"]["osDisk"]["diskSizeGB"], 32);
    assert_eq!(
        profile["storageProfile"]["osDisk"]["managedDisk"]["storageAccountType"],
        "Standard_LRS"
    );
    assert_eq!(profile["osProfile"]["customData"], "<redacted>");

    // The key is nowhere in the state DB, the run's logs or the emulator's request log.
    let persisted = env.persisted(&out.run_id).await;
    let requests = serde_json::to_string(&env.emu.request_log().entries()).unwrap();
    assert!(!persisted.contains(&key), "storage key in the state DB");
    assert!(!requests.contains(&key), "storage key in the request log");

    // A re-run changes nothing.
    let writes = |env: &Env| {
        env.emu
            .request_log()
            .entries()
            .iter()
            .filter(|e| ["PUT", "PATCH", "DELETE"].contains(&e.method.as_str()))
            .count()
    };
    let before = writes(&env);
    let again = env.run(&wf, Some("edge-3")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(writes(&env), before, "no write on re-run");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn power_actions_skip_instances_already_there() {
    let env = Env::new().await;
    backing_hook(&env);
    let site = site_steps(&env, 2);
    let out = env.run(&env.workflow(&site), Some("edge-3")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let with = |step: String| {
        env.workflow(&format!(
            "{site}{}",
            step.replace("id: power\n", "id: power\n    needs: [pool]\n")
        ))
    };

    // Power off instance 1.
    let off1 = with(power_step(&env, "power_off", ", instance_ids: [\"1\"]"));
    let out = env.run(&off1, Some("edge-3")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, o, _) = env.step_status(&out.run_id, "power").await;
    assert_eq!(
        o.unwrap()["instances"],
        serde_json::json!([{"instance_id": "1", "power_state": "stopped"}])
    );
    assert_eq!(
        env.count("POST", "/virtualMachineScaleSets/pool/poweroff"),
        1
    );
    let body = env
        .emu
        .request_log()
        .matching("/virtualMachineScaleSets/pool/poweroff")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(body["instanceIds"], serde_json::json!(["1"]));

    // Again: already stopped, nothing sent. The set's step lists both instances with their
    // power states, and only the running one as `running`.
    let again = env.run(&off1, Some("edge-3")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(
        env.count("POST", "/virtualMachineScaleSets/pool/poweroff"),
        1
    );
    let (_, pool, _) = env.step_status(&again.run_id, "pool").await;
    let pool = pool.unwrap();
    let states: Vec<(&str, &str)> = pool["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap(),
                i["power_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("0", "running"), ("1", "stopped")]);
    let running: Vec<&str> = pool["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["0"]);
    let lists: Vec<String> = env
        .emu
        .request_log()
        .matching("/virtualMachineScaleSets/pool/virtualMachines")
        .into_iter()
        .filter(|e| e.path.ends_with("/virtualMachines"))
        .map(|e| e.query.unwrap_or_default())
        .collect();
    assert!(
        !lists.is_empty() && lists.iter().all(|q| q.contains("expand=instanceView")),
        "instances listed without their instance view: {lists:?}"
    );

    // Power off the whole set: only instance 0 is still running.
    let off_all = with(power_step(&env, "power_off", ""));
    let out = env.run(&off_all, Some("edge-3")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let posts = env
        .emu
        .request_log()
        .matching("/virtualMachineScaleSets/pool/poweroff");
    assert_eq!(posts.len(), 2);
    assert_eq!(
        posts[1].body.as_ref().unwrap()["instanceIds"],
        serde_json::json!(["0"])
    );

    // Start them all, then restart (an event: sent each time). Before the start, the set's
    // step saw no instance running.
    let start = with(power_step(&env, "start", ""));
    let out = env.run(&start, Some("edge-3")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let (_, pool, _) = env.step_status(&out.run_id, "pool").await;
    let pool = pool.unwrap();
    assert_eq!(pool["running"], serde_json::json!([]));
    assert_eq!(pool["instances"].as_array().unwrap().len(), 2);
    let (_, o, _) = env.step_status(&out.run_id, "power").await;
    assert!(
        o.unwrap()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["power_state"] == "running")
    );
    let restart = with(power_step(&env, "restart", ""));
    env.run(&restart, Some("edge-3")).await;
    env.run(&restart, Some("edge-3")).await;
    assert_eq!(
        env.count("POST", "/virtualMachineScaleSets/pool/restart"),
        2
    );

    // An instance the set does not have: a permanent input error.
    let bad = with(power_step(&env, "deallocate", ", instance_ids: [\"9\"]"));
    let out = env.run(&bad, Some("edge-3")).await;
    assert_eq!(out.status, RunStatus::Failed);
    let (_, _, e) = env.step_status(&out.run_id, "power").await;
    assert_eq!(e.unwrap().code, "InvalidInput");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn destroying_a_site_deletes_its_group_releases_hosts_and_forgets_its_keys() {
    let env = Env::new().await;
    let released: Arc<Mutex<Vec<String>>> = Arc::default();
    let r2 = released.clone();
    env.emu
        .set_vm_backing_hook(siteflow_azure_emulator::hook_fns(
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
        ));
    let a = env.azure();
    let provision = env.workflow(&format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg-edge-3, location: westeurope }}\n\
         \x20 - id: net\n    uses: azure.network\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg-edge-3, location: westeurope, name: edge, admin_cidr: 203.0.113.0/24 }}\n\
         \x20 - id: server\n    uses: azure.vm\n    needs: [net]\n    with: {{ azure: {a}, resource_group: rg-edge-3, location: westeurope, name: edge-server, subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\" }}\n"
    ));
    let out = env.run(&provision, Some("edge-3")).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let keys = env.path().join(".siteflow/keys/edge-3");
    assert!(keys.join("server/admin_ed25519").exists());

    // destroy-site's Azure and key steps (its kubeconfig step is a k3s kind, tested there).
    let wf = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/destroy-site.yaml"),
    )
    .unwrap();
    let steps = &wf[wf.find("steps:\n").unwrap() + 7..wf.find("  - id: kubeconfig").unwrap()];
    let destroy = env.workflow(
        &steps
            .replace("${{ inputs.azure }}", &a)
            .replace("${{ inputs.name }}", "edge-3")
            .replace("${{ inputs.location }}", "westeurope"),
    );
    let writes = |env: &Env| {
        env.emu
            .request_log()
            .entries()
            .iter()
            .filter(|e| e.service == "arm" && e.method != "GET" && e.method != "HEAD")
            .count()
    };
    let out = env.run(&destroy, Some("edge-3")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    assert_eq!(env.count("DELETE", "/resourcegroups/rg-edge-3"), 1);
    // The group and everything in it is gone, and the VM's host was released.
    let c = env.client();
    let sub = env.emu.subscription_id().to_string();
    let rg_url = c.arm_url(
        &format!("/subscriptions/{sub}/resourcegroups/rg-edge-3"),
        "2025-04-01",
    );
    assert!(
        c.get_opt::<serde_json::Value>(&rg_url)
            .await
            .unwrap()
            .is_none()
    );
    let vm_url = c.arm_url(
        &format!("/subscriptions/{sub}/resourceGroups/rg-edge-3/providers/Microsoft.Compute/virtualMachines/edge-server"),
        "2026-04-01",
    );
    let vm = c
        .send_raw(siteflow_azure::Service::Arm, "GET", &vm_url, None, &[])
        .await
        .unwrap();
    assert_eq!(vm.status, 404);
    for _ in 0..100 {
        if !released.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gone = released.lock().unwrap().clone();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0].ends_with("/virtualMachines/edge-server"));
    assert!(!keys.exists(), "the site's keys are forgotten");

    // Again: nothing to delete, no write to ARM.
    let before = writes(&env);
    let again = env.run(&destroy, Some("edge-3")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(writes(&env), before, "a second destroy makes no write");
    env.emu.shutdown().await;
}
