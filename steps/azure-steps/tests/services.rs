//! Key Vault, Graph and ACR steps against the emulator, and a 20-VM workflow under a 429
//! storm and 5% server errors.

mod common;

use common::Env;
use siteflow_azure_emulator::{Fault, FaultRule};
use siteflow_engine::runner::RunStatus;

#[tokio::test]
async fn keyvault_ensure_creates_once_then_reads_and_the_value_stays_secret() {
    let env = Env::new().await;
    let wf = env.workflow(&format!(
        "  - id: token\n    uses: azure.keyvault-secret\n    with: {{ azure: {a}, vault_url: \"{b}\", name: k3s-token, mode: ensure, length: 48, charset: hex }}\n\
         \x20 - id: use\n    uses: shell\n    with: {{ run: \"test ${{{{ steps.token.outputs.value | length }}}} = 48\" }}\n",
        a = env.azure(),
        b = env.emu.base_url()
    ));
    let env = env.with_core_steps();
    let out = env.run(&wf, None).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    assert_eq!(env.count("PUT", "/secrets/k3s-token"), 1);
    let challenge = env
        .emu
        .request_log()
        .matching("/secrets/k3s-token")
        .into_iter()
        .filter(|e| e.status == 401)
        .count();
    assert_eq!(
        challenge, 1,
        "one unauthenticated request answered by the 401 challenge"
    );

    let again = env.run(&wf, None).await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(
        env.count("PUT", "/secrets/k3s-token"),
        1,
        "ensure creates once, then reads"
    );

    // The value never reaches the state DB, the event log or the emulator's request log.
    let c = env.client();
    let url = format!("{}/secrets/k3s-token?api-version=7.6", env.emu.base_url());
    let v: serde_json::Value = c
        .send(siteflow_azure::Service::KeyVault, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    let value = v["value"].as_str().unwrap().to_string();
    assert_eq!(value.len(), 48);
    for run in [&out.run_id, &again.run_id] {
        assert!(!env.persisted(run).await.contains(&value));
    }
    assert!(
        !serde_json::to_string(&env.emu.request_log().entries())
            .unwrap()
            .contains(&value)
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn graph_lookup_works_and_403_advises_an_entra_user() {
    let env = Env::new().await;
    let wf = env.workflow(&format!(
        "  - id: sp\n    uses: azure.graph-service-principal\n    with: {{ azure: {}, app_id: bc313c14-388c-4e7d-a58e-70017303ee3b }}\n    retry: {{ max_attempts: 3, initial_interval: 10ms }}\n",
        env.azure()
    ));
    let out = env.run(&wf, None).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    let (_, o, _) = env.step_status(&out.run_id, "sp").await;
    assert_eq!(
        o.unwrap()["object_id"],
        "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
    );

    env.emu.set_graph_forbidden(true);
    let out = env.run(&wf, None).await;
    assert_eq!(out.status, RunStatus::Failed);
    let (_, _, err) = env.step_status(&out.run_id, "sp").await;
    let err = err.unwrap();
    assert_eq!(err.code, "GraphAccessDenied");
    assert_eq!(err.class, siteflow_step::ErrorClass::Permanent);
    assert!(
        err.message.contains("Microsoft Entra user"),
        "{}",
        err.message
    );
    let attempts = env.store.attempts(&out.run_id).await.unwrap();
    assert_eq!(attempts.len(), 1, "a permanent error is not retried");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn acr_token_exchange_yields_secret_tokens() {
    let env = Env::new().await;
    let wf = env.workflow(&format!(
        "  - id: acr\n    uses: azure.acr-token\n    with: {{ azure: {}, registry: edge.azurecr.io, registry_url: \"{}\" }}\n",
        env.azure(),
        env.emu.base_url()
    ));
    let out = env.run(&wf, None).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    let (_, o, _) = env.step_status(&out.run_id, "acr").await;
    let o = o.unwrap();
    assert_eq!(o["username"], "00000000-0000-0000-0000-000000000000");
    assert!(
        !o.to_string().contains("ey"),
        "tokens are not persisted: {o}"
    );
    assert_eq!(env.count("POST", "/oauth2/exchange"), 1);
    assert_eq!(env.count("POST", "/oauth2/token"), 1);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn acr_token_keeps_the_current_token_until_renewal_is_due() {
    let env = Env::new().await;
    let acr = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    uses: azure.acr-token\n    with: {{ azure: {}, registry: edge.azurecr.io, registry_url: \"{}\"{extra} }}\n",
            env.azure(),
            env.emu.base_url()
        )
    };
    let current = ", current: \"${{ steps.first.outputs.refresh_token }}\"";
    let steps = [
        acr("first", ""),
        acr("keep", &format!("{current}, renew_before: 1h")),
        // ACR refresh tokens live 3 h: renewing 4 h ahead is always due.
        acr("renew", &format!("{current}, renew_before: 4h")),
        acr("other", ", current: \"${{ steps.first.outputs.access_token }}\""),
        "  - id: check\n    uses: shell\n    with:\n      run: |\n        test ${{ steps.keep.outputs.refresh_token | shell_quote }} = ${{ steps.first.outputs.refresh_token | shell_quote }}\n        test ${{ steps.renew.outputs.refresh_token | shell_quote }} != ${{ steps.first.outputs.refresh_token | shell_quote }}\n".to_string(),
    ]
    .concat();
    let wf = env.workflow(&steps);
    let env = env.with_core_steps();
    let out = env.run(&wf, None).await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
    // first, renew and other mint; keep only checks that the registry still takes the current
    // one. other's current is the registry's and unexpired, but an access token: the registry
    // refuses it as a refresh token, so it is minted again.
    assert_eq!(env.count("POST", "/oauth2/exchange"), 3);
    assert_eq!(env.count("POST", "/oauth2/token"), 5);
    let (_, keep, _) = env.step_status(&out.run_id, "keep").await;
    let (_, first, _) = env.step_status(&out.run_id, "first").await;
    let (keep, first) = (keep.unwrap(), first.unwrap());
    assert_eq!(keep["expires_at"], first["expires_at"]);
    assert!(first["expires_at"].as_u64().unwrap() > 1_700_000_000);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn twenty_vms_survive_a_429_storm_and_server_errors() {
    let env = Env::new().await;
    env.emu.faults().add(FaultRule::any(Fault::Throttle {
        count: 30,
        retry_after_secs: 1,
    }));
    env.emu.faults().add(FaultRule::any(Fault::ServerError {
        rate: 0.05,
        status: 503,
        count: None,
    }));
    env.emu.faults().add(
        FaultRule::any(Fault::ServerError {
            rate: 1.0,
            status: 500,
            count: Some(2),
        })
        .methods(&["POST"]),
    );
    let a = env.azure();
    let wf = env.workflow(&format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: rg1, location: westeurope }}\n    retry: {{ max_attempts: 8, initial_interval: 50ms, maximum_interval: 1s }}\n\
         \x20 - id: providers\n    uses: azure.register-providers\n    with: {{ azure: {a}, poll_interval_secs: 0.05 }}\n    retry: {{ max_attempts: 8, initial_interval: 50ms, maximum_interval: 1s }}\n\
         \x20 - id: net\n    uses: azure.network\n    needs: [rg]\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: edge, admin_cidr: 203.0.113.0/24 }}\n    retry: {{ max_attempts: 8, initial_interval: 50ms, maximum_interval: 1s }}\n\
         \x20 - id: vms\n    uses: azure.vm\n    for_each: ${{{{ range(20) | list }}}}\n    max_parallel: 10\n    with: {{ azure: {a}, resource_group: rg1, location: westeurope, name: \"vm-${{{{ item }}}}\", subnet_id: \"${{{{ steps.net.outputs.subnet_id }}}}\", ssh_public_key: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbSh0e9l1n7Y5CnK8tP0mVvYb0rqgqDxj0i6oZb8k3d t\" }}\n    retry: {{ max_attempts: 10, initial_interval: 50ms, maximum_interval: 1s }}\n"
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    let steps = env.store.steps(&out.run_id).await.unwrap();
    assert_eq!(out.status, RunStatus::Succeeded, "{steps:?}");
    let log = env.emu.request_log().entries();
    let throttled = log.iter().filter(|e| e.status == 429).count();
    let errors = log.iter().filter(|e| e.status >= 500).count();
    assert_eq!(throttled, 30, "the whole storm was met");
    assert!(errors > 0, "some 5xx were injected");
    for i in 0..20 {
        let n = env.count("PUT", &format!("/virtualMachines/vm-{i}"));
        assert!(n >= 1);
    }
    // Each logical POST went out once per attempt: transport retries never repeat one.
    let posts: Vec<_> = log.iter().filter(|e| e.method == "POST").collect();
    let mut by_corr = std::collections::HashMap::new();
    for p in &posts {
        *by_corr.entry(p.correlation_id.clone()).or_insert(0) += 1;
    }
    assert!(
        by_corr.values().all(|n| *n == 1),
        "a POST was repeated by the transport: {by_corr:?}"
    );
    let attempts = env.store.attempts(&out.run_id).await.unwrap();
    let failed = attempts
        .iter()
        .filter(|a| a.outcome.as_deref() == Some("failed"))
        .count();
    eprintln!(
        "attempts: {}, failed: {failed}, 429s: {throttled}, 5xx: {errors}",
        attempts.len()
    );
    assert!(attempts.len() >= 23);
    assert!(failed >= 1, "the failed POSTs show up as retried attempts");
    let retried: Vec<_> = attempts
        .iter()
        .filter(|a| a.outcome.as_deref() == Some("failed"))
        .collect();
    assert!(
        retried
            .iter()
            .any(|a| a.error_class.as_deref() == Some("retryable")),
        "{retried:?}"
    );
    env.emu.shutdown().await;
}
