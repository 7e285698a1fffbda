//! Identity steps against the emulator: a service principal with its password kept in Key
//! Vault and a Contributor role on the resource group (seed 000's management-tool
//! principal), re-runs that write nothing, `PrincipalNotFound` retried while the principal
//! replicates, and a managed identity with a federated credential for a service account.

mod common;

use common::Env;
use siteflow_azure::Service;
use siteflow_azure_emulator::{Emulator, EmulatorConfig};
use siteflow_engine::runner::RunStatus;

const RG: &str = "rg-rancher";

fn rg_and_sp(env: &Env, sp_extra: &str) -> String {
    format!(
        "  - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: {RG}, location: westeurope }}\n\
         \x20 - id: sp\n    uses: azure.service-principal\n    with: {{ azure: {a}, display_name: rancher-mgmt{sp_extra} }}\n",
        a = env.azure()
    )
}

fn contributor(env: &Env, extra: &str, retry: &str) -> String {
    format!(
        "  - id: contributor\n    uses: azure.role-assignment\n    needs: [rg, sp]\n{retry}    with: {{ azure: {}, principal_id: \"${{{{ steps.sp.outputs.object_id }}}}\", role: Contributor, resource_group: {RG}{extra} }}\n",
        env.azure()
    )
}

/// The value of a Key Vault secret of the emulator.
async fn vault_value(env: &Env, name: &str) -> String {
    let url = format!("{}/secrets/{name}?api-version=7.6", env.emu.base_url());
    let v: serde_json::Value = env
        .client()
        .send(Service::KeyVault, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    v["value"].as_str().unwrap().to_string()
}

async fn assert_succeeded(env: &Env, out: &siteflow_engine::runner::Outcome) {
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        env.store.steps(&out.run_id).await.unwrap()
    );
}

#[tokio::test]
async fn service_principal_password_lives_in_key_vault_and_reruns_write_nothing() {
    let env = Env::new().await.with_core_steps();
    let wf = env.workflow(&format!(
        "{}{}  - id: use\n    uses: shell\n    needs: [sp]\n    with: {{ run: \"test ${{{{ steps.sp.outputs.client_secret | length }}}} = 40\" }}\n",
        rg_and_sp(
            &env,
            &format!(
                ", password: true, key_vault_secret: rancher-sp, vault_url: \"{}\"",
                env.emu.base_url()
            )
        ),
        contributor(&env, ", principal_type: ServicePrincipal", ""),
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_succeeded(&env, &out).await;
    let (_, o, _) = env.step_status(&out.run_id, "sp").await;
    let o = o.unwrap();
    let client_id = o["client_id"].as_str().unwrap().to_string();
    assert_eq!(o["tenant_id"], env.emu.tenant_id());
    let (_, ra, _) = env.step_status(&out.run_id, "contributor").await;
    let ra = ra.unwrap();
    assert!(
        ra["role_definition_id"]
            .as_str()
            .unwrap()
            .ends_with("/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c")
    );
    assert!(
        ra["scope"]
            .as_str()
            .unwrap()
            .ends_with("/resourceGroups/rg-rancher"),
        "{ra}"
    );
    assert_eq!(
        env.count("POST", "/v1.0/applications"),
        2,
        "create + addPassword"
    );
    assert_eq!(env.count("POST", "/addPassword"), 1);
    assert_eq!(env.count("PUT", "/secrets/rancher-sp"), 1);
    assert_eq!(env.count("PUT", "/roleAssignments/"), 1);

    // The stored password is the application's: it logs in.
    let secret = vault_value(&env, "rancher-sp").await;
    let mut login = siteflow_azure::ClientOptions::new(
        siteflow_azure::CloudConfig::custom(env.emu.base_url(), env.emu.ca_pem_path().to_str()),
        siteflow_azure::CredentialConfig {
            kind: siteflow_azure::CredentialKind::ClientSecret,
            tenant_id: Some(env.emu.tenant_id().into()),
            client_id: Some(client_id.clone()),
            client_secret: Some(siteflow_step::Secret::new(secret.clone())),
            ..Default::default()
        },
        env.emu.subscription_id(),
    );
    login.env = Some(Default::default());
    let token = siteflow_azure::ArmClient::new(login)
        .unwrap()
        .token("https://management.azure.com/.default")
        .await;
    assert!(token.is_ok(), "the new principal cannot log in: {token:?}");

    // Again: the password comes back from Key Vault; nothing is written.
    env.emu.request_log().clear();
    let again = env.run(&wf, Some("edge-1")).await;
    assert_succeeded(&env, &again).await;
    let (_, o2, _) = env.step_status(&again.run_id, "sp").await;
    assert_eq!(o2.unwrap()["client_id"], client_id.as_str());
    let writes: Vec<_> = env
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.method != "GET" && e.service != "entra")
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert!(writes.is_empty(), "a re-run wrote: {writes:?}");

    // The secret is in neither the state DB nor the emulator's log.
    for run in [&out.run_id, &again.run_id] {
        assert!(!env.persisted(run).await.contains(&secret));
    }
    assert!(
        !serde_json::to_string(&env.emu.request_log().entries())
            .unwrap()
            .contains(&secret)
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn without_key_vault_a_rerun_rotates_the_password() {
    let env = Env::new().await;
    let wf = env.workflow(&rg_and_sp(&env, ", password: true"));
    assert_succeeded(&env, &env.run(&wf, None).await).await;
    let second = env.run(&wf, None).await;
    assert_succeeded(&env, &second).await;
    assert_eq!(env.count("POST", "/addPassword"), 2);
    assert_eq!(env.count("POST", "/removePassword"), 1);
    let (_, o, _) = env.step_status(&second.run_id, "sp").await;
    let app = o.unwrap()["application_object_id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/v1.0/applications/{app}", env.emu.base_url());
    let got: serde_json::Value = env
        .client()
        .send(Service::Graph, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        got["passwordCredentials"].as_array().unwrap().len(),
        1,
        "the application keeps one password: {got}"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn principal_not_found_is_retried_while_the_principal_replicates() {
    let config = EmulatorConfig {
        principal_replication_secs: 40.0,
        ..EmulatorConfig::default()
    };
    let env = Env::with(Emulator::builder().time_scale(0.01).config(config)).await;
    let wf = env.workflow(&format!(
        "{}{}",
        rg_and_sp(&env, ""),
        contributor(
            &env,
            "",
            "    retry: { max_attempts: 20, initial_interval: 50ms, backoff_coefficient: 1 }\n"
        )
    ));
    let out = env.run(&wf, None).await;
    assert_succeeded(&env, &out).await;
    let attempts: Vec<_> = env
        .store
        .attempts(&out.run_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.step_key.starts_with("contributor"))
        .collect();
    assert!(attempts.len() > 1, "{attempts:?}");
    assert_eq!(attempts[0].error_code.as_deref(), Some("PrincipalNotFound"));
    assert_eq!(attempts[0].error_class.as_deref(), Some("retryable"));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn managed_identity_with_a_federated_credential_for_a_service_account() {
    let env = Env::new().await;
    let a = env.azure();
    let wf = env.workflow(&format!(
        "  - id: providers\n    uses: azure.register-providers\n    with: {{ azure: {a}, namespaces: [Microsoft.ManagedIdentity] }}\n\
         \x20 - id: rg\n    uses: azure.resource-group\n    with: {{ azure: {a}, name: {RG}, location: westeurope }}\n\
         \x20 - id: mi\n    uses: azure.managed-identity\n    needs: [rg, providers]\n    retry: {{ max_attempts: 10, initial_interval: 50ms }}\n    with: {{ azure: {a}, resource_group: {RG}, name: rancher-wi, location: westeurope }}\n\
         \x20 - id: fic\n    uses: azure.federated-credential\n    needs: [mi]\n    with: {{ azure: {a}, resource_group: {RG}, identity: rancher-wi, name: rancher, issuer: \"https://oidc.example.test/edge-1/\", subject: \"system:serviceaccount:cattle-system:rancher\" }}\n\
         \x20 - id: mi-reader\n    uses: azure.role-assignment\n    needs: [mi]\n    with: {{ azure: {a}, principal_id: \"${{{{ steps.mi.outputs.principal_id }}}}\", principal_type: ServicePrincipal, role: Reader, resource_group: {RG} }}\n"
    ));
    let out = env.run(&wf, Some("edge-1")).await;
    assert_succeeded(&env, &out).await;
    let (_, mi, _) = env.step_status(&out.run_id, "mi").await;
    let mi = mi.unwrap();
    assert_eq!(mi["tenant_id"], env.emu.tenant_id());
    assert_eq!(mi["client_id"].as_str().unwrap().len(), 36);
    let url = format!(
        "{}/subscriptions/{}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rancher-wi/federatedIdentityCredentials/rancher?api-version=2024-11-30",
        env.emu.base_url(),
        env.emu.subscription_id()
    );
    let fic: serde_json::Value = env
        .client()
        .send(Service::Arm, "GET", &url, None)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        fic["properties"]["audiences"],
        serde_json::json!(["api://AzureADTokenExchange"])
    );
    assert_eq!(
        fic["properties"]["subject"],
        "system:serviceaccount:cattle-system:rancher"
    );

    let puts = |env: &Env| {
        env.count("PUT", "/userAssignedIdentities/") + env.count("PUT", "/roleAssignments/")
    };
    let before = puts(&env);
    assert_eq!(before, 3, "identity, credential, role assignment");
    let again = env.run(&wf, Some("edge-1")).await;
    assert_succeeded(&env, &again).await;
    assert_eq!(puts(&env), before, "a re-run writes nothing");

    // A changed subject is drift: the credential is rewritten.
    let moved = wf.replace("cattle-system:rancher", "cattle-system:rancher-v2");
    assert_succeeded(&env, &env.run(&moved, Some("edge-1")).await).await;
    assert_eq!(env.count("PUT", "/federatedIdentityCredentials/rancher"), 2);
    env.emu.shutdown().await;
}
