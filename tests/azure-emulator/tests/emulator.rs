//! Behaviour of the emulator over HTTPS: LROs, errors, api-versions, faults, auth flows,
//! request log, time scaling, VM hook, scale sets.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use siteflow_azure_emulator::{Fault, FaultRule, VmBacking, VmCreated, WriteLimit, hook_fns};

use common::{Client, TestResp, eventually, start};

const NET: &str = "api-version=2026-03-01";
const CMP: &str = "api-version=2026-04-01";

fn vnet_body() -> Value {
    json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
        "subnets": [{"name": "default", "properties": {"addressPrefix": "10.0.1.0/24"}}]}})
}

#[tokio::test]
async fn lro_headers_and_provisioning_state_progression() {
    // 4 s emulated LRO * 0.5 (network) * 0.25 scale = 0.5 s real.
    let (_emu, c) = start(0.25, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg1").await;
    let vnet = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/vnet1",
        c.rg_path("rg1")
    );
    let r = c
        .arm_with(&t, Method::PUT, &format!("{vnet}?{NET}"), Some(vnet_body()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["properties"]["provisioningState"], "Updating");
    let async_op = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation header");
    assert!(
        async_op.starts_with(&c.base) && async_op.contains("api-version=2026-03-01"),
        "{async_op}"
    );
    // 0.5 s remain: the delay comes as retry-after-ms (Retry-After is whole seconds).
    let ms: u64 = r
        .header("retry-after-ms")
        .expect("retry-after-ms")
        .parse()
        .unwrap();
    assert!((10..=500).contains(&ms), "{ms}");
    assert!(r.header("retry-after").is_none());
    let status = c.arm_with(&t, Method::GET, &c.rel(&async_op), None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["status"], "InProgress");
    // While running the resource is visible with a non-terminal state (201 model).
    let g = c
        .arm_with(&t, Method::GET, &format!("{vnet}?{NET}"), None)
        .await;
    assert_eq!(g.json()["properties"]["provisioningState"], "Updating");
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &c.rel(&async_op), None)
                .await
                .json()["status"]
                == "Succeeded"
        })
        .await
    );
    let g = c
        .arm_with(&t, Method::GET, &format!("{vnet}?{NET}"), None)
        .await;
    assert_eq!(g.json()["properties"]["provisioningState"], "Succeeded");
    assert_eq!(g.json()["properties"]["subnets"][0]["name"], "default");

    // Compute: Location polling answers 202 then 200 with the resource.
    let nic = json!({"location": "eastus", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": format!("{vnet}/subnets/default")}}}]}});
    let nic_path = format!(
        "{}/providers/Microsoft.Network/networkInterfaces/nic1",
        c.rg_path("rg1")
    );
    let r = c
        .arm_with(&t, Method::PUT, &format!("{nic_path}?{NET}"), Some(nic))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let nic_id = r.json()["id"].as_str().unwrap().to_string();
    let vm = json!({"location": "eastus", "properties": {"hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": {"osDisk": {"createOption": "FromImage"}},
        "osProfile": {"computerName": "vm1", "adminUsername": "azureuser", "linuxConfiguration": {}},
        "networkProfile": {"networkInterfaces": [{"id": nic_id}]}}});
    let vm_path = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm1",
        c.rg_path("rg1")
    );
    let r = c
        .arm_with(&t, Method::PUT, &format!("{vm_path}?{CMP}"), Some(vm))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["properties"]["provisioningState"], "Creating");
    let loc = r.header("location").expect("Location header");
    let first = c.arm_with(&t, Method::GET, &c.rel(&loc), None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert!(first.header("retry-after-ms").is_some());
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r = c.arm_with(&t, Method::GET, &c.rel(&loc), None).await;
            r.status == StatusCode::OK && r.json()["properties"]["provisioningState"] == "Succeeded"
        })
        .await
    );
    // DELETE: 202 + Location, then 404.
    let d = c
        .arm_with(&t, Method::DELETE, &format!("{vm_path}?{CMP}"), None)
        .await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    let loc = d.header("location").expect("delete Location");
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &c.rel(&loc), None).await.status == StatusCode::NO_CONTENT
        })
        .await
    );
    let g = c
        .arm_with(&t, Method::GET, &format!("{vm_path}?{CMP}"), None)
        .await;
    assert_eq!(
        (g.status, g.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound".into())
    );
}

/// An onboarding key pair: the private key (PKCS#1 DER) and the public half as ARM wants it.
fn agent_key() -> (Vec<u8>, String) {
    use base64::Engine;
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    let mut rng = rsa::rand_core::UnwrapErr(getrandom::SysRng);
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let private = key.to_pkcs1_der().expect("der").as_bytes().to_vec();
    let public = key.to_public_key().to_pkcs1_der().expect("der");
    (
        private,
        base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
    )
}

/// What the Arc agent in a cluster does: asks for a nonce and signs it with `private`.
async fn agent_connect(c: &Client, id: &str, private: &[u8]) -> TestResp {
    use base64::Engine;
    let r = c
        .send(
            Method::POST,
            "/arc-agents/v1/challenge",
            &[("content-type", "application/json")],
            Some(json!({"resourceId": id}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let nonce = r.json()["nonce"].as_str().expect("nonce").to_string();
    let pair = ring::signature::RsaKeyPair::from_der(private).expect("pkcs1");
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        nonce.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    let body = json!({"resourceId": id, "nonce": nonce,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig),
        "kubernetesVersion": "v1.31.4+k3s1", "totalNodeCount": 2, "totalCoreCount": 4});
    c.send(
        Method::POST,
        "/arc-agents/v1/connect",
        &[("content-type", "application/json")],
        Some(body.to_string().into_bytes()),
    )
    .await
}

#[tokio::test]
async fn connected_cluster_connects_only_when_its_agent_proves_the_key() {
    let (_emu, c) = start(0.1, |cfg| {
        cfg.registered_providers.push("Microsoft.Kubernetes".into());
        cfg.registered_providers
            .push("Microsoft.KubernetesConfiguration".into());
    })
    .await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let (private, public) = agent_key();
    let cc = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/arc1?api-version=2026-05-01",
        c.rg_path("rg")
    );
    let body = json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {
        "agentPublicKeyCertificate": public, "distribution": "k3s", "oidcIssuerProfile": {"enabled": true}}});
    let r = c.arm_with(&t, Method::PUT, &cc, Some(body)).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["properties"]["provisioningState"], "Accepted");
    assert_eq!(r.json()["properties"]["connectivityStatus"], "Connecting");
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.arm_with(&t, Method::GET, &cc, None).await.json()["properties"]["provisioningState"]
                == "Succeeded"
        })
        .await
    );
    // Time alone connects nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = c.arm_with(&t, Method::GET, &cc, None).await.json();
    assert_eq!(j["properties"]["connectivityStatus"], "Connecting");
    assert!(
        j["properties"]["oidcIssuerProfile"]
            .get("issuerUrl")
            .is_none()
    );

    // The helm settings `connectedk8s connect` reads name the agents' endpoint.
    let hs = c
        .send(
            Method::POST,
            "/azure-arc-k8sagents/GetHelmSettings?api-version=2024-07-01-preview&releaseTrain=stable",
            &[("authorization", &format!("Bearer {t}"))],
            None,
        )
        .await;
    assert_eq!(hs.status, StatusCode::OK);
    assert!(
        hs.json()["helmValuesContent"]["global.agentDataPlaneEndpoint"]
            .as_str()
            .is_some_and(|u| u.ends_with("/arc-agents/v1"))
    );
    let anon = c
        .send(
            Method::POST,
            "/azure-arc-k8sagents/GetHelmSettings",
            &[],
            None,
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);

    // Another key is refused, and a nonce is good once.
    let (other, _) = agent_key();
    let r = agent_connect(&c, &id, &other).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "InvalidAgentSignature".into())
    );
    let j = c.arm_with(&t, Method::GET, &cc, None).await.json();
    assert_eq!(j["properties"]["connectivityStatus"], "Connecting");

    let r = agent_connect(&c, &id, &private).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let agent_token = r.json()["agentToken"].as_str().expect("token").to_string();
    let j = c.arm_with(&t, Method::GET, &cc, None).await.json();
    assert_eq!(j["properties"]["connectivityStatus"], "Connected");
    assert_eq!(j["properties"]["totalNodeCount"], 2);
    assert_eq!(j["properties"]["kubernetesVersion"], "v1.31.4+k3s1");
    let issuer = j["properties"]["oidcIssuerProfile"]["issuerUrl"]
        .as_str()
        .expect("issuer")
        .to_string();
    assert!(issuer.ends_with('/'));
    let doc = c
        .send(
            Method::GET,
            &format!("{}.well-known/openid-configuration", c.rel(&issuer)),
            &[],
            None,
        )
        .await;
    assert_eq!(doc.json()["issuer"], issuer.as_str());

    // A Flux configuration stays Pending until the agent reports what it fetched.
    let ext = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/arc1/providers/Microsoft.KubernetesConfiguration/extensions/flux?api-version=2025-03-01",
        c.rg_path("rg")
    );
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &ext,
            Some(json!({"properties": {"extensionType": "microsoft.flux", "autoUpgradeMinorVersion": true}})),
        )
        .await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let fc = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/arc1/providers/Microsoft.KubernetesConfiguration/fluxConfigurations/cluster-config?api-version=2025-04-01",
        c.rg_path("rg")
    );
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &fc,
            Some(json!({"properties": {"scope": "cluster", "namespace": "flux-system", "sourceKind": "GitRepository",
                "gitRepository": {"url": "https://git.example/fleet", "repositoryRef": {"branch": "main"}, "httpsUser": "git"},
                "kustomizations": {"apps": {"path": "./clusters/edge"}},
                "configurationProtectedSettings": {"httpsKey": "c2VjcmV0LXRva2Vu"}}})),
        )
        .await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let fc_id = r.json()["id"].as_str().expect("id").to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.arm_with(&t, Method::GET, &fc, None).await.json()["properties"]["provisioningState"]
                == "Succeeded"
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = c.arm_with(&t, Method::GET, &fc, None).await.json();
    assert_eq!(j["properties"]["complianceState"], "Pending");
    assert!(
        j["properties"]
            .get("configurationProtectedSettings")
            .is_none()
    );

    let bearer = format!("Bearer {agent_token}");
    let conf = c
        .send(
            Method::GET,
            "/arc-agents/v1/configurations",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(conf.status, StatusCode::OK);
    let flux = &conf.json()["fluxConfigurations"][0];
    assert_eq!(
        flux["properties"]["gitRepository"]["url"],
        "https://git.example/fleet"
    );
    assert_eq!(
        flux["properties"]["configurationProtectedSettings"]["httpsKey"],
        "secret-token"
    );
    assert_eq!(
        conf.json()["extensions"][0]["properties"]["extensionType"],
        "microsoft.flux"
    );
    let bad = c
        .send(
            Method::GET,
            "/arc-agents/v1/configurations",
            &[("authorization", "Bearer nope")],
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);

    let report = json!({"fluxConfigurations": [{"id": fc_id, "complianceState": "Compliant", "revision": "main@sha1:0123abcd"}]});
    let r = c
        .send(
            Method::POST,
            "/arc-agents/v1/status",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            Some(report.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = c.arm_with(&t, Method::GET, &fc, None).await.json();
    assert_eq!(j["properties"]["complianceState"], "Compliant");
    assert_eq!(
        j["properties"]["sourceSyncedCommitId"],
        "main@sha1:0123abcd"
    );
}

#[tokio::test]
async fn api_versions_are_required_and_checked_per_type() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    let rg = c.rg_path("rg");
    let r = c.arm_with(&t, Method::GET, &rg, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter".into())
    );
    let r = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{rg}?api-version=2099-01-01"),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidApiVersionParameter".into())
    );
    c.create_rg(&t, "rg").await;
    // An Arc api-version is past compute's newest.
    let vm = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2026-05-01");
    let r = c.arm_with(&t, Method::GET, &vm, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "NoRegisteredProviderFound".into())
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2026-04-01")
    );
    // Old api-versions stay accepted where real clients use them.
    let p = format!(
        "/subscriptions/{}/providers/Microsoft.Kubernetes?api-version=2016-02-01",
        c.sub
    );
    assert_eq!(
        c.arm_with(&t, Method::GET, &p, None).await.status,
        StatusCode::OK
    );
    let r = c
        .send(
            Method::GET,
            "/metadata/endpoints?api-version=2022-09-01",
            &[],
            None,
        )
        .await;
    assert_eq!(r.json()["resourceManager"], format!("{}/", c.base));
    assert!(r.json()["suffixes"]["keyVaultDns"].is_string());
}

#[tokio::test]
async fn error_bodies_use_arm_codes() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    let r = c
        .arm_with(
            &t,
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Network/virtualNetworks/v?{NET}",
                c.rg_path("nope")
            ),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound".into())
    );
    assert!(r.json()["error"]["message"].is_string() && r.json()["error"]["details"].is_array());
    c.create_rg(&t, "rg").await;
    let r = c
        .arm_with(
            &t,
            Method::GET,
            &format!(
                "{}/providers/Microsoft.Network/virtualNetworks/v?{NET}",
                c.rg_path("rg")
            ),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound".into())
    );
    let cc = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/a?api-version=2026-05-01",
        c.rg_path("rg")
    );
    let r = c
        .arm_with(&t, Method::PUT, &cc, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::CONFLICT,
            "MissingSubscriptionRegistration".into()
        )
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("for how to register subscriptions.")
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'Microsoft.Kubernetes'")
    );
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/n?{NET}",
        c.rg_path("rg")
    );
    let bad_enum = json!({"location": "eastus", "properties": {"securityRules": [{"name": "r", "properties": {"protocol": "Carrier-Pigeon", "access": "Allow", "direction": "Inbound", "priority": 100}}]}});
    let r = c.arm_with(&t, Method::PUT, &nsg, Some(bad_enum)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidParameter".into())
    );
    assert_eq!(
        r.json()["error"]["target"],
        "properties.securityRules[0].properties.protocol"
    );
    let missing = json!({"location": "eastus", "properties": {"securityRules": [{"name": "r", "properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound"}}]}});
    let r = c.arm_with(&t, Method::PUT, &nsg, Some(missing)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidParameter".into())
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("priority")
    );
    let r = c
        .arm_with(&t, Method::PUT, &nsg, Some(json!({"properties": {}})))
        .await;
    assert_eq!(r.code(), "LocationRequired");
    let r = c
        .send(
            Method::GET,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg")),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed".into())
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer authorization_uri=")
    );
    let vault = c.token("https://vault.azure.net/.default").await;
    let r = c
        .arm_with(
            &vault,
            Method::GET,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg")),
            None,
        )
        .await;
    assert_eq!(r.code(), "InvalidAuthenticationTokenAudience");
}

#[tokio::test]
async fn paths_are_case_insensitive_and_headers_present() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!(
                "/subscriptions/{}/resourcegroups/Rg-Case?api-version=2024-11-01",
                c.sub
            ),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = c
        .send(
            Method::GET,
            &format!(
                "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/rg-case?api-version=2025-04-01",
                c.sub
            ),
            &[
                ("authorization", &format!("Bearer {t}")),
                ("x-ms-correlation-request-id", "corr-123"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["name"], "Rg-Case");
    assert_eq!(
        r.header("x-ms-correlation-request-id").as_deref(),
        Some("corr-123")
    );
    assert!(r.header("x-ms-request-id").is_some());
    assert!(
        r.header("x-ms-ratelimit-remaining-subscription-reads")
            .unwrap()
            .parse::<u32>()
            .unwrap()
            > 11_000
    );
    let put = c.arm_with(&t, Method::PUT, &format!("/subscriptions/{}/resourceGroups/rg-case/providers/microsoft.network/VIRTUALNETWORKS/v1?{NET}", c.sub), Some(vnet_body())).await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert!(
        put.header("x-ms-ratelimit-remaining-subscription-writes")
            .is_some()
    );
    assert_eq!(put.json()["type"], "Microsoft.Network/virtualNetworks");
    let g = c.arm_with(&t, Method::GET, &format!("/subscriptions/{}/resourcegroups/RG-CASE/providers/Microsoft.Network/virtualNetworks/V1?{NET}", c.sub), None).await;
    assert_eq!(g.status, StatusCode::OK);
}

#[tokio::test]
async fn retry_after_on_429_storm() {
    let (emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    emu.faults().add(
        FaultRule::for_type(
            "Microsoft.Network/virtualNetworks",
            Fault::Throttle {
                count: 3,
                retry_after_secs: 7,
            },
        )
        .methods(&["GET"]),
    );
    let path = format!(
        "{}/providers/Microsoft.Network/virtualNetworks/v?{NET}",
        c.rg_path("rg")
    );
    for _ in 0..3 {
        let r = c.arm_with(&t, Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after").as_deref(), Some("7"));
        assert_eq!(r.code(), "TooManyRequests");
    }
    // Other types are untouched, and the storm is over after three.
    let rg = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg")),
            None,
        )
        .await;
    assert_eq!(rg.status, StatusCode::OK);
    assert_eq!(
        c.arm_with(&t, Method::GET, &path, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(emu.faults().rules().is_empty());
}

#[tokio::test]
async fn server_errors_follow_a_seeded_rate() {
    let (emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    let path = format!("{}?api-version=2025-04-01", c.rg_path("rg"));
    let run = |seed: u64| {
        let (emu, c, t, path) = (&emu, &c, &t, &path);
        async move {
            emu.faults().clear();
            emu.faults().set_seed(seed);
            emu.faults().add(FaultRule::any(Fault::ServerError {
                rate: 0.5,
                status: 503,
                count: None,
            }));
            let mut pattern = Vec::new();
            for _ in 0..30 {
                let r = c.arm_with(t, Method::GET, path, None).await;
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(r.code(), "ServiceUnavailable");
                }
                pattern.push(r.status == StatusCode::SERVICE_UNAVAILABLE);
            }
            pattern
        }
    };
    let a = run(7).await;
    let b = run(7).await;
    assert_eq!(a, b, "same seed, same failures");
    let failures = a.iter().filter(|f| **f).count();
    assert!((5..=25).contains(&failures), "{failures} of 30");
}

#[tokio::test]
async fn write_limit_counts_down_then_throttles() {
    let (emu, c) = start(1.0, |_| {}).await;
    let t = c.arm_token().await;
    emu.faults().set_write_limit(Some(WriteLimit {
        writes: 3,
        window_secs: 600.0,
    }));
    let mut remaining = Vec::new();
    for i in 0..3 {
        let r = c
            .arm_with(
                &t,
                Method::PUT,
                &format!("{}?api-version=2025-04-01", c.rg_path(&format!("rg{i}"))),
                Some(json!({"location": "eastus"})),
            )
            .await;
        assert!(r.status.is_success());
        remaining.push(
            r.header("x-ms-ratelimit-remaining-subscription-writes")
                .unwrap(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg9")),
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            "SubscriptionRequestsThrottled".into()
        )
    );
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((590..=600).contains(&after), "{after}");
    // Reads have their own budget.
    assert_eq!(
        c.arm_with(
            &t,
            Method::GET,
            &format!("{}?api-version=2025-04-01", c.rg_path("rg0")),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn injected_operation_failure_ends_failed() {
    let (emu, c) = start(0.05, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    emu.faults().add(FaultRule::for_type(
        "Microsoft.Network/publicIPAddresses",
        Fault::FailOperation {
            code: "PublicIpQuotaExceeded".into(),
            message: None,
            count: Some(1),
        },
    ));
    let pip = format!(
        "{}/providers/Microsoft.Network/publicIPAddresses/p?{NET}",
        c.rg_path("rg")
    );
    let r = c
        .arm_with(&t, Method::PUT, &pip, Some(json!({"location": "eastus"})))
        .await;
    let op = r.header("azure-asyncoperation").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &c.rel(&op), None).await.json()["status"] == "Failed"
        })
        .await
    );
    let s = c.arm_with(&t, Method::GET, &c.rel(&op), None).await.json();
    assert_eq!(s["error"]["code"], "PublicIpQuotaExceeded");
    assert_eq!(
        c.arm_with(&t, Method::GET, &pip, None).await.json()["properties"]["provisioningState"],
        "Failed"
    );
}

#[tokio::test]
async fn accepted_create_is_invisible_until_done() {
    let (_emu, c) = start(0.2, |cfg| {
        cfg.accepted_create_types
            .push("Microsoft.Network/publicIPAddresses".into())
    })
    .await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let pip = format!(
        "{}/providers/Microsoft.Network/publicIPAddresses/p?{NET}",
        c.rg_path("rg")
    );
    let r = c
        .arm_with(&t, Method::PUT, &pip, Some(json!({"location": "eastus"})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_empty() && r.header("location").is_some());
    assert_eq!(
        c.arm_with(&t, Method::GET, &pip, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &pip, None).await.status == StatusCode::OK
        })
        .await
    );
}

#[tokio::test]
async fn time_scale_shortens_provider_registration() {
    for (scale, expect_done) in [(0.005, true), (1.0, false)] {
        let (_emu, c) = start(scale, |_| {}).await;
        let t = c.arm_token().await;
        let p = format!(
            "/subscriptions/{}/providers/Microsoft.KubernetesConfiguration",
            c.sub
        );
        let r = c
            .arm_with(
                &t,
                Method::POST,
                &format!("{p}/register?api-version=2025-04-01"),
                None,
            )
            .await;
        assert_eq!(r.json()["registrationState"], "Registering");
        let started = Instant::now();
        let done = eventually(Duration::from_millis(600), || async {
            c.arm_with(
                &t,
                Method::GET,
                &format!("{p}?api-version=2025-04-01"),
                None,
            )
            .await
            .json()["registrationState"]
                == "Registered"
        })
        .await;
        assert_eq!(done, expect_done, "scale {scale}");
        if done {
            assert!(started.elapsed() < Duration::from_millis(600));
        }
    }
}

#[tokio::test]
async fn key_vault_challenge_then_secret_round_trip() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let r = c
        .send(Method::PUT, "/secrets/k3s-token?api-version=7.6", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains(&format!("authorization=\"{}/{}\"", c.base, c.tenant)),
        "{challenge}"
    );
    assert!(challenge.contains("resource=\"https://vault.azure.net\""));
    let arm = c.arm_token().await;
    let auth = format!("Bearer {arm}");
    let r = c
        .send(
            Method::GET,
            "/secrets/x?api-version=7.6",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "an ARM token is not a vault token"
    );
    let vt = c.token("https://vault.azure.net/.default").await;
    let auth = format!("Bearer {vt}");
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = c
        .send(
            Method::PUT,
            "/secrets/k3s-token?api-version=7.6",
            &h,
            Some(br#"{"value":"hunter2"}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("{}/secrets/k3s-token/", c.base)));
    let r = c
        .send(
            Method::GET,
            "/secrets/k3s-token/?api-version=2025-07-01",
            &h,
            None,
        )
        .await;
    assert_eq!(r.json()["value"], "hunter2");
    let r = c
        .send(Method::GET, "/secrets/k3s-token?api-version=1.0", &h, None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "BadParameter".into())
    );
    let r = c
        .send(Method::GET, "/secrets/nope?api-version=7.6", &h, None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "SecretNotFound".into())
    );
}

#[tokio::test]
async fn graph_answers_then_forbids() {
    let (emu, c) = start(0.01, |_| {}).await;
    let gt = c.token("https://graph.microsoft.com/.default").await;
    let auth = format!("Bearer {gt}");
    let path =
        "/v1.0/servicePrincipals?$filter=appId%20eq%20'bc313c14-388c-4e7d-a58e-70017303ee3b'";
    let r = c
        .send(Method::GET, path, &[("authorization", &auth)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["value"][0]["id"],
        "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
    );
    emu.set_graph_forbidden(true);
    let r = c
        .send(Method::GET, path, &[("authorization", &auth)], None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "Authorization_RequestDenied".into())
    );
    // The control endpoint flips it back.
    c.send(
        Method::PUT,
        "/_emulator/graph",
        &[],
        Some(br#"{"forbidden":false}"#.to_vec()),
    )
    .await;
    assert_eq!(
        c.send(Method::GET, path, &[("authorization", &auth)], None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn entra_rejects_bad_secret_and_acr_exchange_works() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret=wrong&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        c.client_id
    );
    let r = c
        .send(
            Method::POST,
            &format!("/{}/oauth2/v2.0/token", c.tenant),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "invalid_client");
    let oidc = c
        .send(
            Method::GET,
            &format!("/{}/v2.0/.well-known/openid-configuration", c.tenant),
            &[],
            None,
        )
        .await;
    assert_eq!(
        oidc.json()["token_endpoint"],
        format!("{}/{}/oauth2/v2.0/token", c.base, c.tenant)
    );
    let arm = c.arm_token().await;
    let ct = [("content-type", "application/x-www-form-urlencoded")];
    let r = c
        .send(
            Method::POST,
            "/oauth2/exchange",
            &ct,
            Some(
                format!(
                    "grant_type=access_token&service=reg.azurecr.io&tenant={}&access_token={arm}",
                    c.tenant
                )
                .into_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = c.send(Method::POST, "/oauth2/token", &ct, Some(format!("grant_type=refresh_token&service=reg.azurecr.io&scope=repository:app:pull&refresh_token={refresh}").into_bytes())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["access_token"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3
    );
    let r = c.send(Method::POST, "/oauth2/token", &ct, Some(format!("grant_type=refresh_token&service=other.azurecr.io&scope=repository:app:pull&refresh_token={refresh}").into_bytes())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn request_log_has_requests_but_no_secrets() {
    let (emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let vt = c.token("https://vault.azure.net/.default").await;
    let auth = format!("Bearer {vt}");
    c.send(
        Method::PUT,
        "/secrets/s1?api-version=7.6",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(br#"{"value":"hunter2-secret"}"#.to_vec()),
    )
    .await;
    let vm = json!({"location": "eastus", "properties": {"osProfile": {"adminPassword": "P@ssw0rd-secret", "customData": "c2VjcmV0"}, "networkProfile": {"networkInterfaces": []}}});
    c.arm_with(
        &t,
        Method::PUT,
        &format!(
            "{}/providers/Microsoft.Compute/virtualMachines/v?{CMP}",
            c.rg_path("rg")
        ),
        Some(vm),
    )
    .await;
    let entries = emu.request_log().entries();
    let rg_put = entries
        .iter()
        .find(|e| e.method == "PUT" && e.path.ends_with("/resourceGroups/rg"))
        .expect("rg put logged");
    assert_eq!(rg_put.api_version.as_deref(), Some("2025-04-01"));
    assert_eq!(rg_put.body, Some(json!({"location": "eastus"})));
    assert_eq!(rg_put.status, 201);
    let token_req = entries
        .iter()
        .find(|e| e.service == "entra")
        .expect("token request logged");
    assert!(token_req.body.is_none() && token_req.body_withheld);
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [
        t.as_str(),
        vt.as_str(),
        &c.client_secret,
        "hunter2-secret",
        "P@ssw0rd-secret",
        "c2VjcmV0",
    ] {
        assert!(!text.contains(secret), "log leaks {secret}");
    }
    assert!(!text.to_ascii_lowercase().contains("bearer"));
    let remote = c
        .send(Method::GET, "/_emulator/requests", &[], None)
        .await
        .json();
    assert_eq!(remote["value"].as_array().unwrap().len(), entries.len());
}

#[tokio::test]
async fn vm_hook_backs_vm_and_scale_set_instances() {
    let calls: Arc<Mutex<Vec<VmCreated>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let released: Arc<Mutex<Vec<String>>> = Arc::default();
    let gone = Arc::clone(&released);
    let (emu, c) = start(0.05, |_| {}).await;
    emu.set_vm_backing_hook(hook_fns(
        move |vm: VmCreated| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let n = {
                    let mut s = seen.lock().unwrap();
                    s.push(vm);
                    s.len()
                };
                Ok(VmBacking {
                    private_ip: format!("192.0.2.{}", 10 + n).parse().unwrap(),
                    public_ip: None,
                })
            }
        },
        move |id: String| {
            let gone = Arc::clone(&gone);
            async move { gone.lock().unwrap().push(id) }
        },
    ));
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let rg = c.rg_path("rg");
    c.arm_with(
        &t,
        Method::PUT,
        &format!("{rg}/providers/Microsoft.Network/virtualNetworks/v?{NET}"),
        Some(vnet_body()),
    )
    .await;
    let subnet = format!("{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/default");
    let pip = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{rg}/providers/Microsoft.Network/publicIPAddresses/p?{NET}"),
            Some(json!({"location": "eastus"})),
        )
        .await
        .json();
    let nic = json!({"location": "eastus", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}, "publicIPAddress": {"id": pip["id"]}}}]}});
    let nic = c
        .arm_with(
            &t,
            Method::PUT,
            &format!("{rg}/providers/Microsoft.Network/networkInterfaces/n?{NET}"),
            Some(nic),
        )
        .await
        .json();
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.0.1.4"
    );
    let vm = json!({"location": "eastus", "properties": {"osProfile": {"computerName": "node1", "adminUsername": "siteflow", "customData": "I2Nsb3VkLWNvbmZpZw==",
        "linuxConfiguration": {"ssh": {"publicKeys": [{"path": "/home/siteflow/.ssh/authorized_keys", "keyData": "ssh-ed25519 AAAA key1"}]}}},
        "storageProfile": {"osDisk": {"createOption": "FromImage"}}, "networkProfile": {"networkInterfaces": [{"id": nic["id"]}]}}});
    let vm_path = format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1?{CMP}");
    c.arm_with(&t, Method::PUT, &vm_path, Some(vm)).await;
    assert!(eventually(Duration::from_secs(5), || async {
        c.arm_with(&t, Method::GET, &vm_path, None).await.json()["properties"]["provisioningState"] == "Succeeded"
    })
    .await);
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].computer_name, "node1");
        assert_eq!(calls[0].admin_username.as_deref(), Some("siteflow"));
        assert_eq!(
            calls[0].ssh_public_keys,
            vec!["ssh-ed25519 AAAA key1".to_string()]
        );
        assert_eq!(calls[0].custom_data.as_deref(), Some("#cloud-config"));
    }
    let nic = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{rg}/providers/Microsoft.Network/networkInterfaces/n?{NET}"),
            None,
        )
        .await
        .json();
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "192.0.2.11"
    );
    let pip = c
        .arm_with(
            &t,
            Method::GET,
            &format!("{rg}/providers/Microsoft.Network/publicIPAddresses/p?{NET}"),
            None,
        )
        .await
        .json();
    assert_eq!(pip["properties"]["ipAddress"], "192.0.2.11");

    // Scale set: two instances, addresses from the hook, then scale to three.
    let vmss_path =
        format!("{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/agents?{CMP}");
    let vmss = json!({"location": "eastus", "sku": {"name": "Standard_B1ls", "capacity": 2}, "properties": {"virtualMachineProfile": {
        "osProfile": {"computerNamePrefix": "agent", "adminUsername": "siteflow"},
        "storageProfile": {"osDisk": {"createOption": "FromImage"}},
        "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]}}]}}}});
    let r = c
        .arm_with(&t, Method::PUT, &vmss_path, Some(vmss.clone()))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(eventually(Duration::from_secs(5), || async {
        c.arm_with(&t, Method::GET, &vmss_path, None).await.json()["properties"]["provisioningState"] == "Succeeded"
    })
    .await);
    let vms = c.arm_with(&t, Method::GET, &format!("{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/agents/virtualMachines?{CMP}"), None).await.json();
    let names: Vec<&str> = vms["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["properties"]["osProfile"]["computerName"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["agent000000", "agent000001"]);
    let nics = c.arm_with(&t, Method::GET, &format!("{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/agents/networkInterfaces?api-version=2018-10-01"), None).await.json();
    let mut ips: Vec<String> = nics["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ips.sort();
    assert_eq!(ips, ["192.0.2.12", "192.0.2.13"]);
    let mut bigger = vmss;
    bigger["sku"]["capacity"] = json!(3);
    c.arm_with(&t, Method::PUT, &vmss_path, Some(bigger.clone()))
        .await;
    assert!(eventually(Duration::from_secs(5), || async {
        c.arm_with(&t, Method::GET, &format!("{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/agents/virtualMachines?{CMP}"), None).await.json()["value"].as_array().map(Vec::len) == Some(3)
    })
    .await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            calls.lock().unwrap().len() == 4
        })
        .await
    );
    assert!(released.lock().unwrap().is_empty());
    // Scale in to one: the two newest instances go, and their hosts are released.
    let mut smaller = bigger;
    smaller["sku"]["capacity"] = json!(1);
    c.arm_with(&t, Method::PUT, &vmss_path, Some(smaller)).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            released.lock().unwrap().len() == 2
        })
        .await
    );
    let mut gone = released.lock().unwrap().clone();
    gone.sort();
    assert!(
        gone[0].ends_with("/virtualMachines/1") && gone[1].ends_with("/virtualMachines/2"),
        "{gone:?}"
    );
}

#[tokio::test]
async fn binary_prints_url_and_serves() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_siteflow-azure-emulator"))
        .args(["--port", "0", "--time-scale", "0.01"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn binary");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("line in time")
        .unwrap()
        .expect("a line");
    let info: Value = serde_json::from_str(&line).expect("JSON line");
    let base = info["baseUrl"].as_str().unwrap();
    let ca = std::fs::read_to_string(info["caPemPath"].as_str().unwrap()).unwrap();
    assert!(base.starts_with("https://127.0.0.1:") && ca.contains("BEGIN CERTIFICATE"));
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(tcp.is_ok());
    child.kill().await.ok();
}

#[tokio::test]
async fn unscaled_wait_hints_are_real_arms_retry_after_only() {
    // Unscaled (time scale 1), as real ARM: `Retry-After` only, never below 10 s, however
    // short the operation; the operation's own status answers the same way.
    let (_emu, c) = start(1.0, |cfg| {
        cfg.registered_providers.push("Microsoft.Kubernetes".into())
    })
    .await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let cc = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/a?api-version=2026-05-01",
        c.rg_path("rg")
    );
    let body = json!({"location": "eastus", "identity": {"type": "SystemAssigned"}, "properties": {"agentPublicKeyCertificate": "x"}});
    let r = c.arm_with(&t, Method::PUT, &cc, Some(body)).await;
    let secs: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert_eq!(secs, 10);
    assert!(r.header("retry-after-ms").is_none());
    let op = r
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation");
    let status = c.arm_with(&t, Method::GET, &c.rel(&op), None).await;
    assert_eq!(status.json()["status"], "InProgress");
    assert_eq!(status.header("retry-after").as_deref(), Some("10"));
    assert!(status.header("retry-after-ms").is_none());
}

#[tokio::test]
async fn api_versions_are_accepted_as_the_published_range() {
    let (_emu, c) = start(0.01, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let rg = c.rg_path("rg");
    let get =
        |v: &str| format!("{rg}/providers/Microsoft.Network/virtualNetworks/none?api-version={v}");
    // Between the oldest and the newest (the spec folder's 2026-03-01) network version, named
    // in no list: served (the VNet does not exist: 404, not 400).
    for v in ["2024-06-01", "2025-10-01-preview", "2026-03-01"] {
        let r = c.arm_with(&t, Method::GET, &get(v), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{v}: {}", r.code());
    }
    // Later than the spec, malformed, or an unknown suffix: refused with the ARM code.
    for v in [
        "2026-03-02",
        "2027-01-01",
        "2024-13-01",
        "2024-6-01",
        "2024-06-01-alpha2",
        "latest",
    ] {
        let r = c.arm_with(&t, Method::GET, &get(v), None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "NoRegisteredProviderFound".into()),
            "{v}"
        );
    }
}

#[tokio::test]
async fn network_resources_in_use_cannot_be_deleted_or_dropped() {
    let (_emu, c) = start(0.02, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let rg = c.rg_path("rg");
    let url = |p: &str, v: &str| format!("{rg}/providers/{p}?{v}");
    let put = |p: String, b: Value| {
        let c = &c;
        let t = &t;
        async move {
            let r = c.arm_with(t, Method::PUT, &p, Some(b)).await;
            assert!(
                r.status.is_success(),
                "{p}: {}",
                String::from_utf8_lossy(&r.body)
            );
            r.json()
        }
    };
    let nsg = put(
        url("Microsoft.Network/networkSecurityGroups/nsg", NET),
        json!({"location": "eastus"}),
    )
    .await;
    let mut vnet = vnet_body();
    vnet["properties"]["subnets"][0]["properties"]["networkSecurityGroup"] =
        json!({"id": nsg["id"]});
    put(
        url("Microsoft.Network/virtualNetworks/v", NET),
        vnet.clone(),
    )
    .await;
    let subnet = format!("{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/default");
    let pip = put(
        url("Microsoft.Network/publicIPAddresses/p", NET),
        json!({"location": "eastus"}),
    )
    .await;
    let nic = put(
        url("Microsoft.Network/networkInterfaces/n", NET),
        json!({"location": "eastus", "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}, "publicIPAddress": {"id": pip["id"]}}}]}}),
    )
    .await;
    let vm_url = url("Microsoft.Compute/virtualMachines/vm1", CMP);
    put(
        vm_url.clone(),
        json!({"location": "eastus", "properties": {"osProfile": {"computerName": "vm1", "adminUsername": "azureuser"},
            "storageProfile": {"osDisk": {"createOption": "FromImage"}}, "networkProfile": {"networkInterfaces": [{"id": nic["id"]}]}}}),
    )
    .await;

    for p in [
        vm_url.clone(),
        url("Microsoft.Network/networkInterfaces/n", NET),
        url("Microsoft.Network/publicIPAddresses/p", NET),
        url("Microsoft.Network/networkSecurityGroups/nsg", NET),
        url("Microsoft.Network/virtualNetworks/v", NET),
    ] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                c.arm_with(&t, Method::GET, &p, None).await.json()["properties"]
                    ["provisioningState"]
                    == "Succeeded"
            })
            .await,
            "{p}"
        );
    }
    let del = |p: String| {
        let c = &c;
        let t = &t;
        async move { c.arm_with(t, Method::DELETE, &p, None).await }
    };
    for (path, code) in [
        (
            url("Microsoft.Network/networkInterfaces/n", NET),
            "NicInUse",
        ),
        (
            url("Microsoft.Network/publicIPAddresses/p", NET),
            "PublicIPAddressInUse",
        ),
        (
            url("Microsoft.Network/networkSecurityGroups/nsg", NET),
            "InUseNetworkSecurityGroupCannotBeDeleted",
        ),
        (
            url("Microsoft.Network/virtualNetworks/v/subnets/default", NET),
            "InUseSubnetCannotBeDeleted",
        ),
        (
            url("Microsoft.Network/virtualNetworks/v", NET),
            "InUseSubnetCannotBeDeleted",
        ),
    ] {
        let r = del(path.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code.to_string()),
            "{path}"
        );
    }
    // A VNet PUT without the subnet in use is refused, and the subnet stays.
    let mut no_subnets = vnet.clone();
    no_subnets["properties"]["subnets"] = json!([]);
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &url("Microsoft.Network/virtualNetworks/v", NET),
            Some(no_subnets),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InUseSubnetCannotBeDeleted".into())
    );
    let sub = c
        .arm_with(&t, Method::GET, &format!("{subnet}?{NET}"), None)
        .await;
    assert_eq!(sub.status, StatusCode::OK);

    // Compute refuses a member its types do not have.
    let r = c
        .arm_with(
            &t,
            Method::PUT,
            &url("Microsoft.Compute/virtualMachines/vm2", CMP),
            Some(json!({"location": "eastus", "properties": {"osProfile": {"computerName": "vm2", "adminUsername": "azureuser", "adminUserName2": "x"},
                "networkProfile": {"networkInterfaces": []}}})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidRequestContent".into())
    );

    // A size no region has is refused; a current size beyond the spec's old enum is taken
    // (arm/vm_size.rs has the naming convention's unit tests).
    for (size, ok) in [("Standard_Q4s_v5", false), ("Standard_D2als_v6", true)] {
        let r = c
            .arm_with(
                &t,
                Method::PUT,
                &url("Microsoft.Compute/virtualMachines/vm3", CMP),
                Some(
                    json!({"location": "eastus", "properties": {"hardwareProfile": {"vmSize": size},
                    "networkProfile": {"networkInterfaces": []}}}),
                ),
            )
            .await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{size}");
        // A valid size gets past the size check to the next one (no NIC).
        let target = if ok { "networkProfile" } else { "vmSize" };
        assert_eq!(
            (r.code(), v["error"]["target"].as_str()),
            ("InvalidParameter".into(), Some(target)),
            "{size}: {v}"
        );
    }

    // Once the VM is gone, the NIC can go.
    assert!(del(vm_url.clone()).await.status.is_success());
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &vm_url, None).await.status == StatusCode::NOT_FOUND
        })
        .await
    );
    let r = del(url("Microsoft.Network/networkInterfaces/n", NET)).await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn a_provider_refuses_requests_briefly_after_registration() {
    // 20 s registration, 10 s propagation, at 0.02: 0.4 s then 0.2 s.
    let (_emu, c) = start(0.02, |_| {}).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg").await;
    let sub = c.rg_path("rg");
    let sub = sub.split("/resourceGroups").next().unwrap().to_string();
    let reg = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{sub}/providers/Microsoft.Kubernetes/register?api-version=2025-04-01"),
            None,
        )
        .await;
    assert!(reg.status.is_success());
    let state_url = format!("{sub}/providers/Microsoft.Kubernetes?api-version=2025-04-01");
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &state_url, None).await.json()["registrationState"]
                == "Registered"
        })
        .await
    );
    let cc = format!(
        "{}/providers/Microsoft.Kubernetes/connectedClusters/arc1?api-version=2026-05-01",
        c.rg_path("rg")
    );
    let r = c.arm_with(&t, Method::GET, &cc, None).await;
    assert_eq!(
        (r.status, r.code()),
        (
            StatusCode::CONFLICT,
            "MissingSubscriptionRegistration".into()
        ),
        "right after Registered the RP does not know it yet"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.arm_with(&t, Method::GET, &cc, None).await.status == StatusCode::NOT_FOUND
        })
        .await
    );
}
