//! `arc.connect`, `arc.extension` and `arc.flux-configuration` against the Azure emulator and
//! a real OpenSSH test host running the k3s simulator: the cluster is Connected only because
//! the agents chart siteflow installed proved the onboarding key, and the Flux configuration is
//! Compliant only because the simulated cluster fetched a real git repository (served by
//! `git daemon` on the test net) and applied its manifests. Needs root (test hosts) and the
//! `k3s-sim` binary (`cargo build -p siteflow-testhosts`; `--workspace` builds it).

use siteflow_azure_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use siteflow_engine::plan::{SourceText, Sources, compile};
use siteflow_engine::registry::Registry;
use siteflow_engine::runner::{NoObserver, Outcome, RunOptions, Runner};
use siteflow_engine::state::StateStore;
use siteflow_testhosts::TestNet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "fake-secret";
const GIT_TOKEN: &str = "gho-flux-token-4242";

struct Env {
    emu: EmulatorHandle,
    dir: tempfile::TempDir,
    store: StateStore,
    registry: Arc<Registry>,
}

impl Env {
    fn runner(&self) -> Runner {
        let opts = RunOptions {
            heartbeat: Duration::ZERO,
            working_dir: self.dir.path().to_path_buf(),
            ..RunOptions::default()
        };
        Runner::new(
            self.registry.clone(),
            self.store.clone(),
            opts,
            Arc::new(NoObserver),
        )
    }

    async fn run(&self, yaml: &str) -> Outcome {
        let sources = Sources {
            workflow: SourceText {
                path: "wf.yaml".into(),
                text: yaml.into(),
            },
            site: Some(SourceText {
                path: "site.yaml".into(),
                text: "name: edge-arc\n".into(),
            }),
            groups: vec![],
            sets: vec![],
        };
        let plan = compile(&sources, &self.registry).unwrap_or_else(|e| panic!("{e:?}"));
        tokio::time::timeout(Duration::from_secs(240), self.runner().start(plan, sources))
            .await
            .expect("the run finishes in bounded time")
            .unwrap()
    }

    fn writes(&self) -> Vec<String> {
        self.emu
            .request_log()
            .entries()
            .into_iter()
            .filter(|e| e.service == "arm" && e.method != "GET")
            .map(|e| format!("{} {}", e.method, e.path))
            .collect()
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stops `git daemon` when the test ends, passing or not.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A bare repository with `clusters/edge/app.yaml`, served by `git daemon` on `ip`.
fn fleet_repo(root: &Path, ip: std::net::Ipv4Addr) -> (Daemon, String, String) {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("clusters/edge")).unwrap();
    std::fs::write(
        work.join("clusters/edge/app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello-from-git\n  namespace: default\ndata:\n  greeting: flux\n",
    )
    .unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "fleet"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    git(root, &["clone", "-q", "--bare", "work", "fleet.git"]);
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            &format!("--base-path={}", root.display()),
            &format!("--listen={ip}"),
            &format!("--port={port}"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Daemon)
        .expect("git daemon");
    std::thread::sleep(Duration::from_millis(300));
    (child, format!("git://{ip}:{port}/fleet.git"), sha)
}

fn workflow(env: &Env, net: &TestNet, repo_url: &str) -> String {
    let host = &net.hosts[0];
    let azure = format!(
        "{{ subscription: \"{sub}\", cloud: {{ name: custom, arm_url: \"{b}\", authority_host: \"{b}\", graph_url: \"{b}\", ca_pem_file: \"{ca}\" }}, credential: {{ kind: client_secret, tenant_id: \"{t}\", client_id: 22222222-2222-2222-2222-222222222222, client_secret: \"${{{{ secrets.sp }}}}\" }} }}",
        sub = env.emu.subscription_id(),
        b = env.emu.base_url(),
        ca = env.emu.ca_pem_path().display(),
        t = env.emu.tenant_id(),
    );
    format!(
        r#"name: arc
secrets:
  sp: {{ file: {sp} }}
  git: {{ file: {git} }}
defaults:
  timeout: 3m
steps:
  - id: rg
    uses: azure.resource-group
    with: {{ azure: {azure}, name: rg-arc, location: eastus }}
  - id: arc
    uses: arc.connect
    needs: [rg]
    with:
      azure: {azure}
      resource_group: rg-arc
      location: eastus
      name: edge-arc
      interval: 20ms
      k3s:
        ssh: {{ host: "{ip}", user: {user}, private_key_file: "{key}", host_key: pinned, host_key_fingerprint: "{fp}" }}
  - id: flux-ext
    uses: arc.extension
    with:
      azure: {azure}
      cluster_id: ${{{{ steps.arc.outputs.id }}}}
      name: flux
      extension_type: microsoft.flux
      release_namespace: flux-system
  - id: flux
    uses: arc.flux-configuration
    needs: [flux-ext]
    with:
      azure: {azure}
      cluster_id: ${{{{ steps.arc.outputs.id }}}}
      name: cluster-config
      url: "{repo_url}"
      branch: main
      https_token: ${{{{ secrets.git }}}}
      interval: 500ms
      kustomizations:
        apps: {{ path: ./clusters/edge }}
"#,
        sp = env.dir.path().join("sp-secret").display(),
        git = env.dir.path().join("git-token").display(),
        ip = host.ip,
        user = host.user_nopasswd,
        key = host.client_key_path.display(),
        fp = host.host_key_fingerprint,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arc_connects_through_its_agent_and_flux_reconciles_a_real_repository() {
    let net = TestNet::new(1).await.expect("test hosts (needs root)");
    let host = &net.hosts[0];
    host.install_k3s_simulator().await.expect("k3s simulator");
    host.install_k3s(&[], &[]).await.expect("k3s server");

    let mut cfg = EmulatorConfig::default();
    cfg.registered_providers.extend([
        "Microsoft.Kubernetes".to_string(),
        "Microsoft.KubernetesConfiguration".to_string(),
    ]);
    // The agents on the test host reach the emulator at the net's gateway address.
    let emu = Emulator::builder()
        .config(cfg)
        .time_scale(0.01)
        .listen_ip(net.gateway_ip.into())
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sp-secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("git-token"), GIT_TOKEN).unwrap();
    let store = StateStore::open(&dir.path().join("state.db")).unwrap();
    let registry = Arc::new(Registry::new().with(siteflow_steps_azure::steps()).with(
        siteflow_steps_arc::steps(siteflow_ssh::steps::StepPool::new()),
    ));
    let env = Env {
        emu,
        dir,
        store,
        registry,
    };
    let repo_dir = tempfile::tempdir().unwrap();
    let (_daemon, repo_url, sha) = fleet_repo(repo_dir.path(), net.gateway_ip);
    let yaml = workflow(&env, &net, &repo_url);

    let out = env.run(&yaml).await;
    let steps = env.store.steps(&out.run_id).await.unwrap();
    let status: Vec<(String, String)> = steps
        .iter()
        .map(|s| (s.step_id.clone(), format!("{} {:?}", s.status, s.error)))
        .collect();
    assert_eq!(out.status.name(), "Succeeded", "{status:?}");

    // Connected because the agent signed the challenge with the key arc.connect generated.
    let arc = steps.iter().find(|s| s.step_id == "arc").unwrap();
    let outputs = arc.outputs.clone().unwrap();
    assert_eq!(outputs["connectivity_status"], "Connected");
    let issuer = outputs["issuer_url"].as_str().expect("issuer_url");
    assert!(
        issuer.starts_with(env.emu.base_url()) && issuer.ends_with('/'),
        "{issuer}"
    );
    let connects: Vec<_> = env
        .emu
        .request_log()
        .entries()
        .into_iter()
        .filter(|e| e.path == "/arc-agents/v1/connect")
        .map(|e| e.status)
        .collect();
    assert!(
        connects.contains(&200),
        "the agent never connected: {connects:?}"
    );
    // The agents were installed once: the rechecks while they connected only read the
    // cluster (no new helm settings request, no new chart).
    let entries = env.emu.request_log().entries();
    let helm_settings = entries
        .iter()
        .filter(|e| e.path.ends_with("/GetHelmSettings"))
        .count();
    let cluster_reads = entries
        .iter()
        .filter(|e| e.method == "GET" && e.path.ends_with("/connectedClusters/edge-arc"))
        .count();
    assert!(
        cluster_reads > 3,
        "the step rechecked: {cluster_reads} cluster reads"
    );
    assert_eq!(helm_settings, 1, "{cluster_reads} cluster reads");

    // The onboarding key is a 0600 file, and in no persisted byte.
    let key_path = env
        .dir
        .path()
        .join(".siteflow/keys/edge-arc/arc/arc-onboarding_rsa.pem");
    let pem = std::fs::read_to_string(&key_path).expect("onboarding key file");
    assert!(pem.contains("BEGIN RSA PRIVATE KEY"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_line = pem.lines().nth(1).unwrap();
    let mut persisted = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        persisted.extend(std::fs::read(env.dir.path().join(f)).unwrap_or_default());
    }
    let persisted = String::from_utf8_lossy(&persisted);
    assert!(
        !persisted.contains(key_line),
        "the onboarding key is in the state db"
    );
    assert!(
        !persisted.contains(GIT_TOKEN),
        "the git token is in the state db"
    );
    let log = serde_json::to_string(&env.emu.request_log().entries()).unwrap();
    assert!(!log.contains(GIT_TOKEN) && !log.contains(key_line));
    // The chart manifest on the server names the Secret; the key itself is not in it.
    let chart = host
        .read_file("/var/lib/rancher/k3s/server/manifests/azure-arc.yaml")
        .await
        .unwrap();
    let chart = String::from_utf8_lossy(&chart);
    assert!(chart.contains("azure-arc-onboarding") && !chart.contains(key_line));

    // Flux: Compliant at the repository's commit, and the cluster has the repo's objects.
    let flux = steps.iter().find(|s| s.step_id == "flux").unwrap();
    let fo = flux.outputs.clone().unwrap();
    assert_eq!(fo["compliance_state"], "Compliant");
    assert_eq!(fo["revision"], format!("main@sha1:{sha}"));
    let cm = host
        .exec_local_ok("k3s kubectl get configmap hello-from-git -n default -o json")
        .await
        .expect("the repository's ConfigMap is in the cluster");
    assert!(cm.contains("\"greeting\""), "{cm}");

    // A second run observes everything in place: no ARM writes at all.
    let before = env.writes().len();
    let again = env.run(&yaml).await;
    assert_eq!(again.status.name(), "Succeeded");
    let writes = env.writes();
    assert_eq!(
        writes.len(),
        before,
        "second run wrote: {:?}",
        &writes[before..]
    );

    // A rotated token is sent again (the service never returns it: a salted fingerprint in
    // the state db says it changed), and so is a changed `prune`: one PUT each, then nothing.
    let config_puts = |from: usize| {
        env.writes()[from..]
            .iter()
            .filter(|w| w.starts_with("PUT ") && w.ends_with("/fluxConfigurations/cluster-config"))
            .count()
    };
    const ROTATED: &str = "gho-rotated-token-777";
    std::fs::write(env.dir.path().join("git-token"), ROTATED).unwrap();
    let before = env.writes().len();
    let rotated = env.run(&yaml).await;
    assert_eq!(
        rotated.status.name(),
        "Succeeded",
        "{:?}",
        env.store.steps(&rotated.run_id).await.unwrap()
    );
    assert_eq!(config_puts(before), 1, "{:?}", &env.writes()[before..]);
    let pruned = yaml.replace(
        "apps: { path: ./clusters/edge }",
        "apps: { path: ./clusters/edge, prune: true }",
    );
    assert_ne!(pruned, yaml);
    let before = env.writes().len();
    assert_eq!(env.run(&pruned).await.status.name(), "Succeeded");
    assert_eq!(config_puts(before), 1, "{:?}", &env.writes()[before..]);
    let before = env.writes().len();
    assert_eq!(env.run(&pruned).await.status.name(), "Succeeded");
    assert_eq!(env.writes().len(), before, "{:?}", &env.writes()[before..]);
    let mut persisted = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        persisted.extend(std::fs::read(env.dir.path().join(f)).unwrap_or_default());
    }
    assert!(!String::from_utf8_lossy(&persisted).contains(ROTATED));

    // An ssh source without a key: the service made a key pair; the step says, once, which
    // public key the repository must accept while it waits (here it never does).
    let azure_line = pruned
        .lines()
        .find(|l| l.trim_start().starts_with("azure: "))
        .expect("the connection line");
    let with_ssh = format!(
        "{pruned}  - id: ssh-source\n    uses: arc.flux-configuration\n    needs: [flux]\n    timeout: 3s\n    continue_on_error: true\n    with:\n{azure_line}\n      cluster_id: ${{{{ steps.arc.outputs.id }}}}\n      name: ssh-config\n      url: ssh://git@{gw}/fleet.git\n      interval: 100ms\n      kustomizations:\n        apps: {{ path: ./clusters/edge }}\n",
        gw = net.gateway_ip,
    );
    let out = env.run(&with_ssh).await;
    let events = env
        .store
        .events(&out.run_id, Some("ssh-source"))
        .await
        .unwrap();
    let shown: Vec<&str> = events
        .iter()
        .map(|e| e.message.as_str())
        .filter(|m| m.contains("as a read-only deploy key: ssh-ed25519 "))
        .collect();
    assert_eq!(shown.len(), 1, "{events:?}");
}
