//! The ARM client against the emulator: client-secret login, plain requests, LROs, errors.

use serde_json::json;
use siteflow_azure::{
    ArmClient, Begun, ClientOptions, CloudConfig, CredentialConfig, CredentialKind, LroStatus,
    Service,
};
use siteflow_azure_emulator::{Emulator, EmulatorHandle, Fault, FaultRule};
use siteflow_step::{ErrorClass, Secret, StepError};
use std::collections::HashMap;
use std::time::Duration;

fn options(emu: &EmulatorHandle) -> ClientOptions {
    let mut o = ClientOptions::new(
        CloudConfig::custom(emu.base_url(), emu.ca_pem_path().to_str()),
        CredentialConfig {
            kind: CredentialKind::ClientSecret,
            tenant_id: Some(emu.tenant_id().to_string()),
            client_id: Some("22222222-2222-2222-2222-222222222222".into()),
            client_secret: Some(Secret::new("fake-secret".into())),
            ..Default::default()
        },
        emu.subscription_id(),
    );
    o.env = Some(HashMap::new());
    o
}

/// An emulator at `time_scale`, a client of it, its subscription, and resource group `rg1`.
async fn with_group(time_scale: f64) -> (EmulatorHandle, ArmClient, String) {
    let emu = Emulator::builder()
        .time_scale(time_scale)
        .start()
        .await
        .unwrap();
    let client = ArmClient::new(options(&emu)).unwrap();
    let sub = emu.subscription_id().to_string();
    let rg = client.arm_url(
        &format!("/subscriptions/{sub}/resourcegroups/rg1"),
        "2025-04-01",
    );
    client
        .send(
            Service::Arm,
            "PUT",
            &rg,
            Some(&json!({"location": "westeurope"})),
        )
        .await
        .unwrap();
    (emu, client, sub)
}

async fn poll_to_end(
    client: &ArmClient,
    begun: Begun,
) -> Result<Option<serde_json::Value>, siteflow_azure::AzureError> {
    let (poller, mut wait) = match begun {
        Begun::Done(r) => return Ok(r.json_value()),
        Begun::Pending(p, w) => (p, w),
    };
    for _ in 0..200 {
        assert!(
            wait <= Duration::from_secs(2),
            "emulator asks for short waits: {wait:?}"
        );
        tokio::time::sleep(wait).await;
        match client.poll(&poller).await? {
            LroStatus::InProgress(w) => wait = w,
            LroStatus::Succeeded(v) => return Ok(v),
        }
    }
    panic!("operation never ended");
}

#[tokio::test]
async fn client_secret_login_and_requests_work_end_to_end() {
    let emu = Emulator::builder().time_scale(0.01).start().await.unwrap();
    let client = ArmClient::new(options(&emu)).unwrap();
    let sub = emu.subscription_id().to_string();
    let rg = client.arm_url(
        &format!("/subscriptions/{sub}/resourcegroups/rg1"),
        "2025-04-01",
    );
    let missing: Option<serde_json::Value> = client.get_opt(&rg).await.unwrap();
    assert!(missing.is_none());
    let r = client
        .send(
            Service::Arm,
            "PUT",
            &rg,
            Some(&json!({"location": "westeurope"})),
        )
        .await
        .unwrap();
    assert!(r.status == 201 || r.status == 200, "{}", r.status);
    let log = emu.request_log().entries();
    let entra: Vec<_> = log.iter().filter(|e| e.service == "entra").collect();
    assert_eq!(entra.len(), 1, "one token request, then cached: {log:?}");
    let arm: Vec<_> = log.iter().filter(|e| e.service == "arm").collect();
    assert!(arm.iter().all(|e| e.correlation_id.is_some()));
    assert_ne!(arm[0].correlation_id, arm[1].correlation_id);
    emu.shutdown().await;
}

#[tokio::test]
async fn lro_polls_to_success_and_failure_carries_the_arm_code() {
    let (emu, client, sub) = with_group(0.01).await;
    let vnet = client.arm_url(
        &format!(
            "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/v1"
        ),
        "2026-03-01",
    );
    let body = json!({"location": "westeurope", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}}});
    let begun = client.begin("PUT", &vnet, Some(&body)).await.unwrap();
    assert!(matches!(begun, Begun::Pending(..)));
    let v = poll_to_end(&client, begun).await.unwrap().unwrap();
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");

    emu.faults().add(FaultRule::for_type(
        "Microsoft.Network/virtualNetworks",
        Fault::FailOperation {
            code: "AllocationFailed".into(),
            message: Some("no room".into()),
            count: Some(1),
        },
    ));
    let vnet2 = vnet.replace("/v1?", "/v2?");
    let begun = client.begin("PUT", &vnet2, Some(&body)).await.unwrap();
    let err = poll_to_end(&client, begun).await.unwrap_err();
    let step: StepError = err.into();
    assert_eq!(step.code, "AllocationFailed");
    assert_eq!(step.class, ErrorClass::Permanent);
    assert!(step.message.contains("no room"), "{}", step.message);
    emu.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_ride_out_5xx_and_429_but_posts_are_not_repeated() {
    let emu = Emulator::builder().time_scale(0.01).start().await.unwrap();
    let client = ArmClient::new(options(&emu)).unwrap();
    let sub = emu.subscription_id().to_string();
    let rg = client.arm_url(
        &format!("/subscriptions/{sub}/resourcegroups/rg1"),
        "2025-04-01",
    );
    emu.faults().add(FaultRule::any(Fault::ServerError {
        rate: 1.0,
        status: 503,
        count: Some(2),
    }));
    emu.faults().add(FaultRule::any(Fault::Throttle {
        count: 1,
        retry_after_secs: 1,
    }));
    client
        .send(
            Service::Arm,
            "PUT",
            &rg,
            Some(&json!({"location": "westeurope"})),
        )
        .await
        .unwrap();
    let puts: Vec<_> = emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 4, "503, 503, 429, then success: {puts:?}");
    assert_eq!(puts[3].status / 100, 2);
    assert!(
        puts.windows(2)
            .all(|w| w[0].correlation_id == w[1].correlation_id),
        "one logical request"
    );

    emu.request_log().clear();
    emu.faults().add(
        FaultRule::any(Fault::ServerError {
            rate: 1.0,
            status: 500,
            count: Some(1),
        })
        .methods(&["POST"]),
    );
    let reg = client.arm_url(
        &format!("/subscriptions/{sub}/providers/Microsoft.Kubernetes/register"),
        "2025-04-01",
    );
    let err = client
        .send(Service::Arm, "POST", &reg, None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    let posts = emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.method == "POST")
        .count();
    assert_eq!(posts, 1, "a POST is never retried by the transport");
    let step: StepError = err.into();
    assert!(step.class.is_retryable());
    emu.shutdown().await;
}

#[tokio::test]
async fn the_chain_reports_every_source_that_failed() {
    let emu = Emulator::builder().time_scale(0.01).start().await.unwrap();
    let mut o = options(&emu);
    o.credential = CredentialConfig {
        kind: CredentialKind::Default,
        source_timeout_secs: Some(3),
        ..Default::default()
    };
    // No variables: the environment and workload identity sources are unavailable, managed
    // identity has no endpoint to reach, and there is no `az`/`azd` here.
    o.env = Some(HashMap::new());
    let client = ArmClient::new(o).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        client.token("https://management.azure.com/.default"),
    )
    .await
    .expect("the chain gives up in bounded time")
    .unwrap_err();
    let msg = err.to_string();
    for name in [
        "EnvironmentCredential",
        "WorkloadIdentityCredential",
        "ManagedIdentityCredential",
        "AzureCliCredential",
        "AzureDeveloperCliCredential",
    ] {
        assert!(msg.contains(name), "{name} missing from: {msg}");
    }
    assert!(msg.contains("AZURE_CLIENT_SECRET not set"), "{msg}");

    // With the variables, the first source (environment) logs in.
    let mut o = options(&emu);
    o.credential = CredentialConfig::default();
    o.env = Some(HashMap::from([
        ("AZURE_TENANT_ID".to_string(), emu.tenant_id().to_string()),
        (
            "AZURE_CLIENT_ID".to_string(),
            "22222222-2222-2222-2222-222222222222".to_string(),
        ),
        ("AZURE_CLIENT_SECRET".to_string(), "fake-secret".to_string()),
    ]));
    let client = ArmClient::new(o).unwrap();
    let t = client
        .token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert!(!t.is_empty());
    let wrong = {
        let mut o = options(&emu);
        o.credential.client_secret = Some(Secret::new("wrong".into()));
        ArmClient::new(o).unwrap()
    };
    let e = wrong
        .token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    let step: StepError = e.into();
    assert_eq!(step.code, "CredentialUnavailable");
    assert!(!step.message.contains("wrong"));
    emu.shutdown().await;
}

/// A request for a namespace the subscription has not registered registers it first, as
/// Azure's SDKs do: one POST `register`, polls until `Registered` (and past the provider's
/// propagation delay), then the request succeeds.
#[tokio::test]
async fn a_missing_provider_registration_is_made_then_the_request_succeeds() {
    let (emu, client, sub) = with_group(0.02).await;
    let identity = client.arm_url(
        &format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
        "2024-11-30",
    );
    let r = client
        .send(
            Service::Arm,
            "PUT",
            &identity,
            Some(&json!({"location": "westeurope"})),
        )
        .await
        .expect("created after the registration");
    assert!(r.status == 200 || r.status == 201, "{}", r.status);
    let log = emu.request_log().entries();
    let registers: Vec<_> = log
        .iter()
        .filter(|e| e.method == "POST" && e.path.ends_with("/Microsoft.ManagedIdentity/register"))
        .collect();
    assert_eq!(registers.len(), 1, "{log:?}");
    let puts: Vec<u16> = log
        .iter()
        .filter(|e| e.method == "PUT" && e.path.ends_with("/userAssignedIdentities/id1"))
        .map(|e| e.status)
        .collect();
    assert_eq!(
        puts.first(),
        Some(&409),
        "refused before the registration: {puts:?}"
    );
    assert!(matches!(puts.last(), Some(200 | 201)), "{puts:?}");
    // Registered now: the next request goes straight through.
    let before = emu.request_log().entries().len();
    client
        .send(Service::Arm, "GET", &identity, None)
        .await
        .unwrap();
    assert_eq!(emu.request_log().entries().len(), before + 1);
    emu.shutdown().await;
}
