//! The `k3s-cluster` workflow end to end on real OpenSSH test hosts with the k3s simulator:
//! one server and two agents, an agent cut off during the join (the run fails, `resume`
//! finishes without touching the server), a second run that finds everything satisfied and
//! restarts nothing, the node token kept out of argv, logs and the state database, and the
//! kubeconfig merged next to two existing contexts.

mod support;

use serde_json::Value;
use siteflow_engine::runner::RunStatus;
use siteflow_testhosts::{INSTALL_SCRIPT, ServiceStats, TestNet};
use support::{CmdlineSampler, Engine, bounded, net_with_k3s, workflows_dir};

const EXISTING_KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: prod
clusters:
- name: prod
  cluster: {server: 'https://prod.example.net:6443'}
- name: staging
  cluster: {server: 'https://staging.example.net:6443'}
users:
- name: prod
  user: {token: prod-token}
- name: staging
  user: {token: staging-token}
contexts:
- name: prod
  context: {cluster: prod, user: prod}
- name: staging
  context: {cluster: staging, user: staging}
";

fn site(net: &TestNet, kubeconfig: &str) -> String {
    let (s, a1, a2) = (net.host(0), net.host(1), net.host(2));
    format!(
        "name: edge-test
inputs:
  server_host: '{}'
  server_host_key_fingerprint: '{}'
  user: azureuser
  private_key_file: '{}'
  install_script_path: '{INSTALL_SCRIPT}'
  kubeconfig: '{kubeconfig}'
  context: edge-test
  agents:
    - {{ host: '{}', host_key_fingerprint: '{}', node_taints: ['observability=true:NoSchedule'], node_labels: ['role=observability'] }}
    - {{ host: '{}', host_key_fingerprint: '{}' }}
steps:
  agents:
    retry: {{ max_attempts: 1 }}
",
        s.ip,
        s.host_key_fingerprint,
        net.client_key_path.display(),
        a1.ip,
        a1.host_key_fingerprint,
        a2.ip,
        a2.host_key_fingerprint,
    )
}

async fn stats(net: &TestNet) -> Vec<ServiceStats> {
    let mut out = vec![net.host(0).service_stats("k3s").await.unwrap()];
    for i in 1..3 {
        out.push(net.host(i).service_stats("k3s-agent").await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_workflow_fails_on_cut_agent_resumes_and_reruns_satisfied() {
    bounded(240, async {
        let net = net_with_k3s(3).await;
        let engine = Engine::new();
        let kubeconfig = engine.dir.path().join("kube/config");
        std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
        std::fs::write(&kubeconfig, EXISTING_KUBECONFIG).unwrap();
        let wf_path = workflows_dir().join("k3s-cluster.yaml");
        let wf = std::fs::read_to_string(&wf_path).unwrap();
        let site = site(&net, &kubeconfig.display().to_string());
        let sampler = CmdlineSampler::start();

        // Run 1: the second agent is unreachable while the agents join.
        net.host(2).cut().await.unwrap();
        let first = engine
            .start((wf_path.to_str().unwrap(), &wf), Some(&site))
            .await;
        assert_eq!(first.status, RunStatus::Failed);
        let steps = engine.store.steps(&first.run_id).await.unwrap();
        let status = |key: &str| {
            steps
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.status.to_string())
                .unwrap_or_default()
        };
        assert_eq!(status("server"), "Succeeded");
        assert_eq!(status("agents[0]"), "Succeeded");
        assert_eq!(status("agents[1]"), "Failed");
        let err = steps
            .iter()
            .find(|s| s.key == "agents[1]")
            .and_then(|s| s.error.clone())
            .unwrap();
        assert!(err.class.is_retryable(), "{err:?}");
        let server_after_fail = net.host(0).service_stats("k3s").await.unwrap();
        assert_eq!(server_after_fail.starts, 1, "{server_after_fail:?}");

        // Restore and resume: the failed agent joins; the server is not reinstalled.
        net.host(2).restore().await.unwrap();
        let resumed = engine.resume(&first.run_id).await;
        assert_eq!(
            resumed.status,
            RunStatus::Succeeded,
            "{}",
            engine.log_text(&first.run_id).await
        );
        let outcomes = engine.outcomes(&first.run_id).await;
        assert_eq!(
            outcomes["server"],
            vec!["succeeded"],
            "server ran once: {outcomes:?}"
        );
        assert_eq!(
            net.host(0).service_stats("k3s").await.unwrap(),
            server_after_fail,
            "resume touched the server's k3s"
        );
        let before = stats(&net).await;
        assert!(before[1].starts >= 1 && before[2].starts >= 1, "{before:?}");

        // The taint and label reached the observability agent's config.
        let cfg = String::from_utf8(
            net.host(1)
                .read_file("/etc/rancher/k3s/config.yaml")
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(cfg.contains("observability=true:NoSchedule"), "{cfg}");
        assert!(cfg.contains("role=observability"), "{cfg}");
        assert!(cfg.contains("token-file"), "{cfg}");
        let mode = net
            .host(1)
            .exec_local_ok("stat -c %a /etc/rancher/k3s/config.yaml /etc/rancher/k3s/cluster-token")
            .await
            .unwrap();
        assert_eq!(mode, "600\n600\n");

        // Run 2: same inputs, a new run: every step is already satisfied, nothing restarts.
        let second = engine
            .start((wf_path.to_str().unwrap(), &wf), Some(&site))
            .await;
        assert_eq!(second.status, RunStatus::Succeeded);
        let outcomes = engine.outcomes(&second.run_id).await;
        assert!(outcomes.len() >= 6, "{outcomes:?}");
        for (key, o) in &outcomes {
            assert_eq!(
                o,
                &vec!["satisfied".to_string()],
                "step {key}: {outcomes:?}"
            );
        }
        assert_eq!(stats(&net).await, before, "a re-run restarted k3s");

        // The node token: in no argv on the hosts, no log, no state file.
        let seen = sampler.finish().await;
        let token = String::from_utf8(
            net.host(0)
                .read_file("/var/lib/rancher/k3s/server/node-token")
                .await
                .unwrap(),
        )
        .unwrap();
        let token = token.trim();
        let secret_part = token.rsplit(':').next().unwrap();
        assert!(secret_part.len() >= 16, "{token}");
        assert!(
            seen.len() > 20,
            "the sampler saw few processes: {}",
            seen.len()
        );
        assert!(
            seen.iter().any(|c| c.contains("k3s-sim")
                || c.contains("install.sh")
                || c.contains("k3s agent")),
            "the sampler never saw k3s processes"
        );
        for c in &seen {
            assert!(!c.contains(secret_part), "token in argv: {c}");
        }
        for i in 1..3 {
            let unit = net
                .host(i)
                .exec_local_ok(
                    "cat /etc/systemd/system/k3s-agent.service /etc/systemd/system/k3s-agent.service.env",
                )
                .await
                .unwrap();
            assert!(!unit.contains(secret_part), "token in agent {i}'s unit or env file");
            assert!(!unit.contains("K3S_TOKEN"), "{unit}");
        }
        for run in [&first.run_id, &second.run_id] {
            let log = engine.log_text(run).await;
            assert!(!log.contains(secret_part), "token in the log of {run}");
        }
        let db = engine.db_bytes();
        assert!(!db.is_empty());
        assert!(
            !db.windows(secret_part.len())
                .any(|w| w == secret_part.as_bytes()),
            "token in the state database"
        );

        // The kubeconfig: merged, the two other contexts intact.
        let merged: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
        let names = |k: &str| -> Vec<String> {
            merged[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("contexts"), ["prod", "staging", "edge-test"]);
        assert_eq!(names("clusters"), ["prod", "staging", "edge-test"]);
        assert_eq!(merged["current-context"], "prod");
        assert_eq!(
            merged["clusters"][1]["cluster"]["server"],
            "https://staging.example.net:6443"
        );
        assert_eq!(merged["users"][0]["user"]["token"], "prod-token");
        assert_eq!(
            merged["clusters"][2]["cluster"]["server"],
            format!("https://{}:6443", net.host(0).ip)
        );
        let mode = std::fs::metadata(&kubeconfig).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        // It works: the simulator's kubectl reaches the server through it.
        let nodes = net
            .host(1)
            .exec_local_with_input(
                "cat > /tmp/kc && KUBECONFIG=/tmp/kc kubectl get nodes -o json",
                edge_only(&merged).as_bytes(),
            )
            .await
            .unwrap();
        assert!(nodes.status.success(), "{nodes:?}");
        let list: Value = serde_json::from_slice(&nodes.stdout).unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 3);
    })
    .await;
}

/// The merged kubeconfig reduced to the new context (the simulator's kubectl reads the
/// first cluster and user).
fn edge_only(merged: &Value) -> String {
    let pick = |k: &str| {
        Value::Array(
            merged[k]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == "edge-test")
                .cloned()
                .collect(),
        )
    };
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "edge-test",
        "clusters": pick("clusters"), "users": pick("users"), "contexts": pick("contexts"),
    });
    serde_json::to_string(&v).unwrap()
}
