//! `kube.service-account-token` and `kube.apply` through a kubeconfig, against the k3s
//! simulator on a real test host serving its API over TLS with its own cluster CA (seed 002:
//! an existing cluster reached only by its kubeconfig). Needs root (test hosts).

use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, RunOptions, RunStatus, Runner};
use siteflow_engine::state::StateStore;
use siteflow_testhosts::TestNet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn curl(ca: &std::path::Path, token: &str, url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn service_account_token_and_apply_through_a_kubeconfig_over_tls() {
    let net = TestNet::new(1).await.expect("test hosts (needs root)");
    let host = net.host(0);
    host.install_k3s_simulator().await.expect("k3s simulator");
    host.install_k3s(&[], &[]).await.expect("k3s server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = String::from_utf8(
        host.read_file("/etc/rancher/k3s/k3s.yaml")
            .await
            .expect("k3s.yaml"),
    )
    .unwrap()
    .replace("127.0.0.1", &host.ip.to_string());
    std::fs::write(dir.path().join("existing.yaml"), &kubeconfig).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        host.read_file("/var/lib/rancher/k3s/server/tls/server-ca.crt")
            .await
            .unwrap(),
    )
    .unwrap();

    let registry = Arc::new(Registry::new().with(siteflow_steps_kube::steps()));
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let yaml = "name: existing\nsteps:\n  - id: admin\n    uses: kube.service-account-token\n    with:\n      kubeconfig: { path: existing.yaml }\n  - id: app\n    uses: kube.apply\n    with:\n      kubeconfig: { path: existing.yaml }\n      manifests:\n        - |\n          apiVersion: v1\n          kind: Namespace\n          metadata: { name: edge }\n          ---\n          apiVersion: v1\n          kind: ConfigMap\n          metadata: { name: settings, namespace: edge }\n          data: { site: seed-002 }\n";
    let run = || async {
        let sources = Sources {
            workflow: SourceText {
                path: "wf.yaml".into(),
                text: yaml.into(),
            },
            site: None,
            sets: vec![],
        };
        let plan = compile(&sources, &registry).unwrap_or_else(|e| panic!("{e:?}"));
        let runner = Runner::new(
            registry.clone(),
            store.clone(),
            RunOptions {
                heartbeat: Duration::ZERO,
                working_dir: dir.path().to_path_buf(),
                ..RunOptions::default()
            },
            Arc::new(NoObserver),
        );
        tokio::time::timeout(Duration::from_secs(60), runner.start(plan, sources))
            .await
            .expect("bounded")
            .unwrap()
    };
    let out = run().await;
    assert_eq!(
        out.status,
        RunStatus::Succeeded,
        "{:?}",
        store.steps(&out.run_id).await.unwrap()
    );
    let cm = host
        .exec_local_ok("k3s kubectl get configmap settings -n edge -o json")
        .await
        .unwrap();
    assert!(cm.contains("seed-002"), "{cm}");

    // The token the token controller made: it authenticates as a cluster-admin, over TLS
    // verified against the cluster's CA; it is in no persisted byte.
    let secret = host
        .exec_local_ok("k3s kubectl get secret siteflow-admin-token -n kube-system -o json")
        .await
        .unwrap();
    let secret: serde_json::Value = serde_json::from_str(&secret).unwrap();
    use base64::Engine as _;
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().expect("token filled"))
            .unwrap(),
    )
    .unwrap();
    let url = format!(
        "https://{}:6443/api/v1/namespaces/edge/configmaps/settings",
        host.ip
    );
    assert_eq!(curl(&ca, &token, &url), (0, "200".into()));
    assert_eq!(curl(&ca, "not-a-token", &url).1, "401");
    let wrong_ca = dir.path().join("wrong.crt");
    std::fs::write(&wrong_ca, include_str!("wrong-ca.pem")).unwrap();
    assert_eq!(curl(&wrong_ca, &token, &url).0, 60, "TLS is verified");
    let mut db = std::fs::read(dir.path().join("state.db")).unwrap();
    db.extend(std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default());
    assert!(
        !String::from_utf8_lossy(&db).contains(&token),
        "the token is in the state db"
    );

    // Again: observed in place.
    let again = run().await;
    assert_eq!(again.status, RunStatus::Succeeded);
    let attempts = store.attempts(&again.run_id).await.unwrap();
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome.as_deref() == Some("satisfied")),
        "{attempts:?}"
    );

    // A kubeconfig whose user logs in with an exec plugin gets a clear error, not a hang.
    let exec_kc = kubeconfig.replace(
        "    token: ",
        "    exec: {command: kubelogin}\n    x-token: ",
    );
    std::fs::write(dir.path().join("existing.yaml"), exec_kc).unwrap();
    let failed = run().await;
    assert_eq!(failed.status, RunStatus::Failed);
    let steps = format!("{:?}", store.steps(&failed.run_id).await.unwrap());
    assert!(steps.contains("InvalidKubeconfig"), "{steps}");
    net.shutdown();
}
