//! Managed clusters (AKS) in the emulator: the create's checks, what AKS fills in, pools kept in
//! step with `agentPoolProfiles`, the credential actions, and the cluster backing hook (a
//! create or scale ends only once the hook reconciled the cluster).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{Client, TestResp, start};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use siteflow_azure_emulator::{
    ClusterBacking, ClusterBackingHook, Emulator, EmulatorConfig, ManagedClusterSpec,
};

const V: &str = "api-version=2026-08-01";

fn config(c: &mut EmulatorConfig) {
    c.registered_providers
        .push("Microsoft.ContainerService".into());
    c.registration_propagation_secs = 0.0;
}

fn cluster_url(c: &Client, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.ContainerService/managedClusters/{name}",
        c.rg_path("rg-aks")
    )
}

fn cluster_body() -> Value {
    json!({
        "location": "westeurope",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "dnsPrefix": "edge",
            "kubernetesVersion": "1.33",
            "agentPoolProfiles": [{"name": "system", "count": 1, "vmSize": "Standard_D2s_v5", "mode": "System"}],
            "oidcIssuerProfile": {"enabled": true},
            "securityProfile": {"workloadIdentity": {"enabled": true}},
            "aadProfile": {"managed": true, "enableAzureRBAC": true, "adminGroupObjectIDs": ["00000000-0000-0000-0000-0000000000aa"]},
            "disableLocalAccounts": true
        }
    })
}

async fn put(c: &Client, t: &str, url: &str, body: Value) -> TestResp {
    c.arm_with(t, Method::PUT, &format!("{url}?{V}"), Some(body))
        .await
}

async fn succeeded(c: &Client, t: &str, url: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .arm_with(t, Method::GET, &format!("{url}?{V}"), None)
            .await;
        let v = r.json();
        if v["properties"]["provisioningState"] == "Succeeded" {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never Succeeded: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kubeconfig(r: &TestResp) -> Value {
    let value = r.json()["kubeconfigs"][0]["value"]
        .as_str()
        .expect("a kubeconfig")
        .to_string();
    let text = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    serde_json::from_slice(&text).expect("kubeconfig JSON (YAML)")
}

#[tokio::test]
async fn create_fills_in_what_aks_reports_and_checks_the_rules() {
    let (_emu, c) = start(0.01, config).await;
    let t = c.arm_token().await;
    c.create_rg(&t, "rg-aks").await;
    let url = cluster_url(&c, "edge");

    // The rules a create must follow.
    for (change, code) in [
        (
            json!({"disableLocalAccounts": true, "aadProfile": null}),
            "BadRequest",
        ),
        (
            json!({"oidcIssuerProfile": {"enabled": false}}),
            "BadRequest",
        ),
        (
            json!({"agentPoolProfiles": [{"name": "user", "count": 1, "mode": "User"}]}),
            "InvalidParameter",
        ),
        (
            json!({"agentPoolProfiles": [{"name": "System_1", "count": 1, "mode": "System"}]}),
            "InvalidParameter",
        ),
        (
            json!({"agentPoolProfiles": [{"name": "system", "count": 1, "mode": "System", "vmSize": "Standard_Q9"}]}),
            "InvalidParameter",
        ),
        (json!({"dnsPrefix": null}), "InvalidParameter"),
        (
            json!({"kubernetesVersion": "1.12"}),
            "K8sVersionNotSupported",
        ),
    ] {
        let mut body = cluster_body();
        super_merge(&mut body["properties"], &change);
        let r = put(&c, &t, &url, body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, code.to_string()),
            "{change}: {}",
            r.json()
        );
    }

    let r = put(&c, &t, &url, cluster_body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert!(r.header("azure-asyncoperation").is_some());
    let got = succeeded(&c, &t, &url).await;
    let props = &got["properties"];
    assert!(
        props["fqdn"]
            .as_str()
            .unwrap()
            .ends_with(".hcp.westeurope.azmk8s.io"),
        "{got}"
    );
    assert_eq!(props["nodeResourceGroup"], "MC_rg-aks_edge_westeurope");
    let issuer = props["oidcIssuerProfile"]["issuerURL"].as_str().unwrap();
    assert!(issuer.starts_with("https://westeurope.oic.prod-aks.azure.com/"));
    assert_eq!(props["currentKubernetesVersion"], "1.33.5");
    assert!(props["identityProfile"]["kubeletidentity"]["clientId"].is_string());
    assert!(got["identity"]["principalId"].is_string());
    assert_eq!(
        props["agentPoolProfiles"][0]["powerState"]["code"],
        "Running"
    );

    // The issuer stays once enabled: an update keeps its URL and cannot turn it off.
    let again = put(&c, &t, &url, cluster_body()).await;
    assert_eq!(again.status, StatusCode::OK);
    let got = succeeded(&c, &t, &url).await;
    assert_eq!(got["properties"]["oidcIssuerProfile"]["issuerURL"], issuer);

    // Pools: the system pool is a child too; a new pool joins agentPoolProfiles.
    let pools = format!("{url}/agentPools");
    let list = c
        .arm_with(&t, Method::GET, &format!("{pools}?{V}"), None)
        .await;
    assert_eq!(list.json()["value"].as_array().unwrap().len(), 1);
    let r = put(
        &c,
        &t,
        &format!("{pools}/apps"),
        json!({"properties": {"count": 2, "vmSize": "Standard_D4as_v6", "mode": "User", "nodeLabels": {"tier": "apps"}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    succeeded(&c, &t, &format!("{pools}/apps")).await;
    let got = succeeded(&c, &t, &url).await;
    let names: Vec<&str> = got["properties"]["agentPoolProfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["system", "apps"]);

    // The last System pool cannot go; a User pool can.
    let r = c
        .arm_with(&t, Method::DELETE, &format!("{pools}/system?{V}"), None)
        .await;
    assert_eq!(r.code(), "OperationNotAllowed");
    let r = c
        .arm_with(&t, Method::DELETE, &format!("{pools}/apps?{V}"), None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // Credentials: no static admin credential with local accounts off; the user's kubeconfig
    // signs in with kubelogin against AKS's server application.
    let admin = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{url}/listClusterAdminCredential?{V}"),
            None,
        )
        .await;
    assert_eq!(
        (admin.status, admin.code()),
        (StatusCode::BAD_REQUEST, "BadRequest".to_string())
    );
    let user = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{url}/listClusterUserCredential?{V}"),
            None,
        )
        .await;
    assert_eq!(user.status, StatusCode::OK, "{}", user.json());
    let kc = kubeconfig(&user);
    let exec = &kc["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "kubelogin");
    let args: Vec<&str> = exec["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"6dae42f8-4368-4678-94ff-3960e28e3630"),
        "{args:?}"
    );
    assert!(
        kc["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .starts_with("https://edge-")
    );
}

/// RFC 7386 merge, for the test's variations.
fn super_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    super_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Records what it was asked and answers with a fixed API server.
struct Recorder(Arc<Mutex<Vec<ManagedClusterSpec>>>);

impl ClusterBackingHook for Recorder {
    fn cluster_reconciled(
        &self,
        spec: ManagedClusterSpec,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ClusterBacking, String>> + Send + '_>,
    > {
        let seen = self.0.clone();
        Box::pin(async move {
            // The hook takes its time: the operation must wait for it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            seen.lock().unwrap().push(spec);
            Ok(ClusterBacking {
                server_url: "https://10.250.9.9:6443".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                admin_token: "admin-token-from-the-cluster".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_backed_cluster_waits_for_its_hook_and_its_credentials_name_the_real_server() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = EmulatorConfig::default();
    config(&mut cfg);
    let emu = Emulator::builder()
        .time_scale(0.001)
        .config(cfg)
        .cluster_backing_hook(Arc::new(Recorder(seen.clone())))
        .start()
        .await
        .unwrap();
    let c = Client::new(&emu);
    let t = c.arm_token().await;
    c.create_rg(&t, "rg-aks").await;
    let url = cluster_url(&c, "plain");
    let mut body = cluster_body();
    let props = body["properties"].as_object_mut().unwrap();
    props.remove("aadProfile");
    props.insert("disableLocalAccounts".into(), json!(false));
    let r = put(&c, &t, &url, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    // The emulator's own duration is ~0: the create is still running because of the hook.
    let early = c
        .arm_with(&t, Method::GET, &format!("{url}?{V}"), None)
        .await;
    assert_eq!(early.json()["properties"]["provisioningState"], "Creating");
    succeeded(&c, &t, &url).await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].pools[0].name, "system");
        assert!(seen[0].oidc_issuer_url.is_some());
    }
    // A scale reconciles again, with the new count.
    let r = put(
        &c,
        &t,
        &format!("{url}/agentPools/system"),
        json!({"properties": {"count": 3, "mode": "System", "vmSize": "Standard_D2s_v5"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    succeeded(&c, &t, &format!("{url}/agentPools/system")).await;
    assert_eq!(seen.lock().unwrap().last().unwrap().pools[0].count, 3);

    let admin = c
        .arm_with(
            &t,
            Method::POST,
            &format!("{url}/listClusterAdminCredential?{V}"),
            None,
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    let kc = kubeconfig(&admin);
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://10.250.9.9:6443"
    );
    assert_eq!(
        kc["users"][0]["user"]["token"],
        "admin-token-from-the-cluster"
    );
    assert_eq!(kc["current-context"], "plain-admin");
    // The token is in the response, never in the request log.
    let logged = serde_json::to_string(
        &emu.request_log()
            .entries()
            .iter()
            .map(|e| e.body.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!logged.contains("admin-token-from-the-cluster"));
}
