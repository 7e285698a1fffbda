//! `azure.aks` against the emulator: seed 004's cluster (managed Entra ID, local accounts off,
//! OIDC issuer, workload identity, a System and a User pool) created once, its user credential
//! merged as a kubelogin context; a second run writes nothing; a scale is one agentPools PUT.

mod common;

use common::Env;
use siteflow_azure_emulator::{Emulator, EmulatorConfig};
use siteflow_engine::runner::RunStatus;

/// PUTs of the cluster itself (not its pools).
fn cluster_puts(env: &Env) -> usize {
    env.emu
        .request_log()
        .entries()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.ends_with("/managedClusters/capz-managed-aks"))
        .count()
}

async fn env() -> Env {
    let mut cfg = EmulatorConfig::default();
    cfg.registered_providers
        .push("Microsoft.ContainerService".into());
    cfg.registration_propagation_secs = 0.0;
    Env::with(Emulator::builder().time_scale(0.005).config(cfg)).await
}

fn workflow(env: &Env, apps: u32) -> String {
    let kubeconfig = env.path().join("kubeconfig");
    env.workflow(&format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg-aks, location: westeurope }}\n\
         \x20 - id: aks\n    uses: azure.aks\n    needs: [rg]\n    with:\n      azure: {a}\n      resource_group: rg-aks\n      name: capz-managed-aks\n      location: westeurope\n      kubernetes_version: \"1.33\"\n      workload_identity: true\n      aad: {{ admin_group_object_ids: [00000000-0000-0000-0000-0000000000aa], azure_rbac: true }}\n      disable_local_accounts: true\n      system_pool: {{ name: pool0, count: 1, vm_size: Standard_D2s_v5 }}\n      pools: [{{ name: pool1, count: {apps}, vm_size: Standard_D4as_v6, node_labels: {{ tier: apps }} }}]\n      kubeconfig: {{ merge_into: \"{k}\" }}\n",
        a = env.azure(),
        k = kubeconfig.display(),
    ))
}

#[tokio::test]
async fn seed_004_cluster_once_then_nothing_then_one_pool_put() {
    let env = env().await;
    let out = env.run(&workflow(&env, 2), Some("seed-004")).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, o, _) = env.step_status(&out.run_id, "aks").await;
    let o = o.unwrap();
    assert!(
        o["oidc_issuer_url"]
            .as_str()
            .unwrap()
            .starts_with("https://westeurope.oic.prod-aks.azure.com/"),
        "{o}"
    );
    assert_eq!(
        o["node_resource_group"],
        "MC_rg-aks_capz-managed-aks_westeurope"
    );
    assert!(
        o["kubelet_client_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(o["context"], "capz-managed-aks");
    assert_eq!(cluster_puts(&env), 1);
    assert_eq!(env.count("POST", "/listClusterUserCredential"), 1);
    assert_eq!(env.count("POST", "/listClusterAdminCredential"), 0);

    // The merged context signs in with kubelogin (no static credential exists).
    let text = std::fs::read_to_string(env.path().join("kubeconfig")).unwrap();
    let kc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(kc["current-context"], "capz-managed-aks");
    let user = &kc["users"][0]["user"];
    assert_eq!(user["exec"]["command"], "kubelogin", "{kc}");
    assert!(user.get("token").is_none());

    // Again: nothing written (no PUT, no POST), the step is satisfied.
    env.emu.request_log().clear();
    let again = env.run(&workflow(&env, 2), Some("seed-004")).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    let writes: Vec<String> = env
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.service == "arm" && e.method != "GET")
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // A scale of the User pool: one agentPools PUT, the cluster is not rewritten.
    env.emu.request_log().clear();
    let scaled = env.run(&workflow(&env, 3), Some("seed-004")).await;
    assert_eq!(scaled.status, RunStatus::Succeeded);
    assert_eq!(env.count("PUT", "/agentPools/pool1"), 1);
    assert_eq!(cluster_puts(&env), 0);
    let c: serde_json::Value = env
        .client()
        .send(
            siteflow_azure::Service::Arm,
            "GET",
            &format!(
                "{}/subscriptions/{}/resourceGroups/rg-aks/providers/Microsoft.ContainerService/managedClusters/capz-managed-aks/agentPools/pool1?api-version=2026-08-01",
                env.emu.base_url(),
                env.emu.subscription_id()
            ),
            None,
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(c["properties"]["count"], 3);
}

#[tokio::test]
async fn local_accounts_off_without_entra_id_is_refused_before_any_request() {
    let env = env().await;
    let wf = env.workflow(&format!(
        "  - id: aks\n    uses: azure.aks\n    with: {{ azure: {a}, resource_group: rg, name: c, location: westeurope, disable_local_accounts: true }}\n",
        a = env.azure()
    ));
    let sources = env.sources(&wf, None);
    let err = siteflow_engine::plan::compile(&sources, &env.registry)
        .err()
        .map(|d| format!("{d:?}"));
    let out = if err.is_none() {
        Some(env.run(&wf, None).await)
    } else {
        None
    };
    // Refused at validation (compile) or as a permanent input error, with nothing sent.
    match (err, out) {
        (Some(e), _) => assert!(e.contains("aad"), "{e}"),
        (None, Some(o)) => {
            assert_eq!(o.status, RunStatus::Failed);
            let (_, _, e) = env.step_status(&o.run_id, "aks").await;
            assert_eq!(e.unwrap().code, "InvalidInput");
        }
        _ => unreachable!(),
    }
    assert_eq!(env.count("PUT", "managedClusters"), 0);
}
