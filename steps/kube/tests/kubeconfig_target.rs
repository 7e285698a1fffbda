//! `kube.service-account-token` and `kube.apply` through a kubeconfig, against the k3s
//! simulator on a real test host serving its API over TLS with its own cluster CA (seed 002:
//! an existing cluster reached only by its kubeconfig), with a token and with an exec
//! credential plugin. Needs root (test hosts).

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
            groups: vec![],
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

    // A user that logs in with an exec plugin (kubelogin's way): the plugin runs without a
    // terminal, once for both steps (its credential is kept until it expires), and its token
    // is in no persisted byte.
    std::fs::write(dir.path().join("token"), &token).unwrap();
    let plugin = dir.path().join("login.sh");
    std::fs::write(
        &plugin,
        r#"#!/bin/bash
set -eu
cd "$(dirname "$0")"
echo "$*" >> calls
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "interactive?" >&2; exit 9 ;; esac
case "${1:-}" in
  expired) echo "AADSTS70043: The refresh token has expired due to inactivity." >&2; exit 1 ;;
  # The first answer for `rotated` is a token the server refuses; the next one is good.
  rotated) if [ "$(grep -c rotated calls)" = 1 ]; then tok=not-a-token; else tok=$(cat token); fi ;;
  *) tok=$(cat token) ;;
esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"2099-01-01T00:00:00Z"}}' "$tok"
"#,
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    let with_plugin = |args: &str| {
        kubeconfig.replace(
            "    token: ",
            &format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./login.sh\n      args: [{args}]\n      interactiveMode: IfAvailable\n      installHint: install it from https://example.invalid/login\n    x-token: "
            ),
        )
    };
    let calls = || {
        std::fs::read_to_string(dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Runs the workflow with `kc` as its kubeconfig: the status and the steps' rows.
    let run_with = |kc: String| {
        std::fs::write(dir.path().join("existing.yaml"), kc).unwrap();
        async {
            let out = run().await;
            let steps = format!("{:?}", store.steps(&out.run_id).await.unwrap());
            (out.status, steps)
        }
    };
    let (status, steps) = run_with(with_plugin("fresh")).await;
    assert_eq!(status, RunStatus::Succeeded, "{steps}");
    assert_eq!(calls(), ["fresh"], "one plugin run for both steps");
    let mut db = std::fs::read(dir.path().join("state.db")).unwrap();
    db.extend(std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default());
    assert!(!String::from_utf8_lossy(&db).contains(&token));

    // A token the server refuses (401): the plugin is asked again, the request sent again.
    let (status, steps) = run_with(with_plugin("rotated")).await;
    assert_eq!(status, RunStatus::Succeeded, "{steps}");
    assert_eq!(calls(), ["fresh", "rotated", "rotated"]);

    // A plugin that fails: its stderr says why; a missing one: its install hint.
    let (status, steps) = run_with(with_plugin("expired")).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(steps.contains("KubeCredentialPlugin"), "{steps}");
    assert!(steps.contains("AADSTS70043"), "{steps}");
    let missing = with_plugin("fresh").replace("./login.sh", "./kubelogin-missing");
    let (status, steps) = run_with(missing).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(steps.contains("example.invalid/login"), "{steps}");

    // An auth-provider user (dropped by kubectl 1.26) gets a clear error, not a hang.
    let provider = kubeconfig.replace(
        "    token: ",
        "    auth-provider: {name: azure}\n    x-token: ",
    );
    let (status, steps) = run_with(provider).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(steps.contains("InvalidKubeconfig"), "{steps}");
    net.shutdown();
}
