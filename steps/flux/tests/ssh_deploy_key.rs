//! `flux.bootstrap` over ssh with a deploy key: the push goes to a bare repository on one real
//! OpenSSH test host (the key is authorized there and nowhere else), and the k3s simulator on
//! another host fetches it with the `identity` and `known_hosts` of the `flux-system` Secret,
//! so Flux applies the commit only if both ends really used the key. Needs root (test hosts)
//! and the `k3s-sim` binary (`cargo build -p siteflow-testhosts`; `--workspace` builds it).

use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, Outcome, RunOptions, RunStatus, Runner};
use siteflow_engine::state::StateStore;
use siteflow_testhosts::{TestHost, TestNet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const REPO: &str = "/home/azureuser/fleet.git";

async fn run(store: &StateStore, registry: &Arc<Registry>, dir: &Path, yaml: &str) -> Outcome {
    let sources = Sources {
        workflow: SourceText {
            path: "wf.yaml".into(),
            text: yaml.into(),
        },
        site: None,
        groups: vec![],
        sets: vec![],
    };
    let plan = compile(&sources, registry).unwrap_or_else(|e| panic!("{e:?}"));
    let runner = Runner::new(
        registry.clone(),
        store.clone(),
        RunOptions {
            heartbeat: Duration::ZERO,
            working_dir: dir.to_path_buf(),
            ..RunOptions::default()
        },
        Arc::new(NoObserver),
    );
    tokio::time::timeout(Duration::from_secs(180), runner.start(plan, sources))
        .await
        .expect("the run finishes in bounded time")
        .unwrap()
}

fn keygen(path: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

fn workflow(git_host: &TestHost, cluster: &TestHost, key: &Path, known: &Path) -> String {
    format!(
        r#"name: flux-ssh
steps:
  - id: flux
    uses: flux.bootstrap
    timeout: 2m
    retry: {{ max_attempts: 1 }}
    with:
      interval: 500ms
      k3s:
        ssh: {{ host: "{ip}", user: {user}, private_key_file: "{ckey}", host_key: pinned, host_key_fingerprint: "{fp}" }}
      git:
        url: "ssh://azureuser@{git_ip}{REPO}"
        path: ./clusters/edge
        ssh_key_file: "{key}"
        known_hosts_file: "{known}"
"#,
        ip = cluster.ip,
        user = cluster.user_nopasswd,
        ckey = cluster.client_key_path.display(),
        fp = cluster.host_key_fingerprint,
        git_ip = git_host.ip,
        key = key.display(),
        known = known.display(),
    )
}

async fn commits(git_host: &TestHost) -> usize {
    git_host
        .exec_local_ok(&format!("git --git-dir={REPO} rev-list --count main"))
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_pushes_and_flux_fetches_with_the_deploy_key() {
    let net = TestNet::new(2).await.expect("test hosts (root needed)");
    let (git_host, cluster) = (&net.hosts[0], &net.hosts[1]);
    let dir = tempfile::tempdir().unwrap();

    // The git host: a bare repository with an app, writable by azureuser over ssh, and the
    // deploy key authorized for azureuser.
    let key = dir.path().join("deploy_key");
    let public = keygen(&key);
    git_host
        .exec_local_ok(&format!(
            "set -e
w=$(mktemp -d); mkdir -p $w/clusters/edge
printf 'apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: hello\\n---\\napiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: hello\\n  namespace: hello\\ndata:\\n  greeting: over-ssh\\n' > $w/clusters/edge/app.yaml
cd $w && git init -q -b main && git add . && git -c user.name=t -c user.email=t@example.invalid commit -q -m app
git clone -q --bare $w {REPO} && chown -R azureuser: {REPO}
echo '{public}' >> /home/azureuser/.ssh/authorized_keys"
        ))
        .await
        .unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("{} {}\n", git_host.ip, git_host.host_key_public),
    )
    .unwrap();
    cluster.install_k3s_simulator().await.unwrap();
    cluster.install_k3s(&[], &[]).await.unwrap();

    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let pool = siteflow_ssh::steps::StepPool::new();
    let registry = Arc::new(Registry::new().with(siteflow_steps_flux::steps(pool)));

    // A key the git host does not know is refused as an authentication failure (not retried).
    let stranger = dir.path().join("stranger_key");
    keygen(&stranger);
    let out = run(
        &store,
        &registry,
        dir.path(),
        &workflow(git_host, cluster, &stranger, &known),
    )
    .await;
    assert_eq!(out.status, RunStatus::Failed);
    let steps = store.steps(&out.run_id).await.unwrap();
    let err = steps[0].error.clone().expect("an error");
    assert_eq!(err.code, "GitAuthFailed", "{}", err.message);
    assert_eq!(commits(git_host).await, 1);

    // The deploy key: one commit pushed, and Flux (the simulator) applies it over ssh.
    let wf = workflow(git_host, cluster, &key, &known);
    let out = run(&store, &registry, dir.path(), &wf).await;
    let steps = store.steps(&out.run_id).await.unwrap();
    assert_eq!(out.status, RunStatus::Succeeded, "{:?}", steps[0].error);
    assert_eq!(commits(git_host).await, 2);
    let head = git_host
        .exec_local_ok(&format!("git --git-dir={REPO} rev-parse main"))
        .await
        .unwrap();
    let outputs = steps[0].outputs.clone().expect("outputs");
    assert_eq!(outputs["commit"], head.trim());
    let cm = cluster
        .exec_local_ok("k3s kubectl get configmap hello -n hello -o json")
        .await
        .unwrap();
    assert!(cm.contains("over-ssh"), "{cm}");
    // Flux got the key in its Secret; the state database never saw it.
    let secret = cluster
        .exec_local_ok("k3s kubectl get secret flux-system -n flux-system -o json")
        .await
        .unwrap();
    assert!(secret.contains("\"identity\"") && secret.contains("\"known_hosts\""));
    let private = std::fs::read_to_string(&key).unwrap();
    let body: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    drop(store);
    let db = std::fs::read(dir.path().join("state.db")).unwrap();
    let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(&body[..40]),
            "the deploy key is in the state db"
        );
    }

    // A second run pushes nothing.
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let out = run(&store, &registry, dir.path(), &wf).await;
    assert_eq!(out.status, RunStatus::Succeeded);
    assert_eq!(commits(git_host).await, 2);
}
