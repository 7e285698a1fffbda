//! The other k3s kinds on one test host, called directly: an air-gapped install (local
//! install script and k3s binary uploaded), `k3s.registries` restarting only on change,
//! `k3s.apply` with server-side apply and a satisfied re-observe, a standalone kubeconfig
//! file, and `k3s.uninstall`.

mod support;

use serde_json::{Value, json};
use siteflow_step::{DynStep, Observed, Progress};
use siteflow_testhosts::{TestNet, k3s_sim_binary};
use std::sync::Arc;
use support::{MemHost, bounded, context, net_with_k3s};

fn kind(steps: &[Arc<dyn DynStep>], name: &str) -> Arc<dyn DynStep> {
    steps.iter().find(|s| s.kind() == name).unwrap().clone()
}

fn ssh(net: &TestNet) -> Value {
    let h = net.host(0);
    json!({
        "host": h.ip.to_string(),
        "user": "azureuser",
        "private_key_file": net.client_key_path,
        "host_key": "pinned",
        "host_key_fingerprint": h.host_key_fingerprint,
    })
}

async fn run_to_done(
    step: &Arc<dyn DynStep>,
    cx: &siteflow_step::StepContext,
    input: &Value,
) -> Value {
    step.check_input(input).unwrap();
    for _ in 0..50 {
        if let Observed::Satisfied(o) = step.observe(cx, input).await.unwrap() {
            return o;
        }
        match step.apply(cx, input).await.unwrap() {
            Progress::Done(o) => return o,
            Progress::Wait { recheck_after } => tokio::time::sleep(recheck_after).await,
        }
    }
    panic!("{} never finished", step.kind());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airgap_install_registries_apply_kubeconfig_uninstall() {
    bounded(120, async {
        let net = net_with_k3s(1).await;
        let h = net.host(0);
        let dir = tempfile::tempdir().unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/testhosts/assets/k3s-install.sh");
        let cx = context(Arc::new(MemHost::default()), dir.path());
        let steps = siteflow_steps_k3s::steps(siteflow_ssh::steps::StepPool::new());

        // Air gap: no "download" at all; the binary and the script come from here.
        h.exec_local_ok("rm -f /usr/local/lib/k3s-sim/k3s-sim").await.unwrap();
        let images = dir.path().join("k3s-airgap-images-amd64.tar.zst");
        let image_bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&images, &image_bytes).unwrap();
        let install = kind(&steps, "k3s.install");
        let input = json!({
            "ssh": ssh(&net),
            "install_script_file": script,
            "airgap_binary_file": k3s_sim_binary().unwrap(),
            "airgap_images": [images],
            "write_kubeconfig_mode": "0600",
            "disable": ["traefik"],
            "extra_config": {"kube-apiserver-arg": ["audit-log-maxage=7"]},
        });
        let out = run_to_done(&install, &cx, &input).await;
        assert!(out["version"].as_str().unwrap().starts_with('v'), "{out}");
        assert_eq!(out["server_url"], format!("https://{}:6443", h.ip));
        let args = String::from_utf8(
            h.read_file("/var/lib/rancher/k3s/server/sim/kube-apiserver-args").await.unwrap(),
        )
        .unwrap();
        assert!(args.contains("--audit-log-maxage=7"), "{args}");
        // The image tarball is where k3s imports air-gap images from, byte for byte.
        let uploaded = h
            .read_file("/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst")
            .await
            .unwrap();
        assert!(uploaded == image_bytes, "the air-gap image tarball differs after upload");
        let base = h.service_stats("k3s").await.unwrap();

        // Registries: written 0600, one restart; the same again changes nothing.
        let registries = kind(&steps, "k3s.registries");
        let reg = json!({
            "ssh": ssh(&net),
            "mirrors": {"docker.io": {"endpoint": ["https://mirror.example.net"]}},
            "configs": {"mirror.example.net": {"username": "puller", "password": "registry-pass-123"}}
        });
        run_to_done(&registries, &cx, &reg).await;
        assert_eq!(h.service_stats("k3s").await.unwrap().restarts, base.restarts + 1);
        let st = h.exec_local_ok("stat -c %a /etc/rancher/k3s/registries.yaml").await.unwrap();
        assert_eq!(st, "600\n");
        assert!(matches!(registries.observe(&cx, &reg).await.unwrap(), Observed::Satisfied(_)));
        run_to_done(&registries, &cx, &reg).await;
        assert_eq!(h.service_stats("k3s").await.unwrap().restarts, base.restarts + 1);

        // The install is still satisfied (registries.yaml is not its file).
        assert!(matches!(install.observe(&cx, &input).await.unwrap(), Observed::Satisfied(_)));

        // Apply manifests, then find them satisfied.
        let apply = kind(&steps, "k3s.apply");
        let manifests = json!({
            "ssh": ssh(&net),
            "manifests": ["apiVersion: v1\nkind: Namespace\nmetadata:\n  name: observability\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: observability\ndata:\n  level: \"debug $x 'q'\"\n"]
        });
        assert!(matches!(apply.observe(&cx, &manifests).await.unwrap(), Observed::NotSatisfied { .. }));
        let Progress::Done(out) = apply.apply(&cx, &manifests).await.unwrap() else { panic!() };
        assert_eq!(out["objects"], json!(["namespace/observability", "configmap/settings"]));
        assert!(matches!(apply.observe(&cx, &manifests).await.unwrap(), Observed::Satisfied(_)));

        // A standalone kubeconfig file, 0600, pointing at the host.
        let kc = kind(&steps, "k3s.kubeconfig");
        let path = dir.path().join("edge.kubeconfig");
        let kci = json!({"ssh": ssh(&net), "path": path, "merge": false, "name": "edge"});
        let out = run_to_done(&kc, &cx, &kci).await;
        assert_eq!(out["context"], "edge");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("https://{}:6443", h.ip)), "{text}");
        assert!(matches!(kc.observe(&cx, &kci).await.unwrap(), Observed::Satisfied(_)));

        // The issuer in `prepend` mode on this single server: the new issuer goes first,
        // the default one still validates.
        let issuer = kind(&steps, "k3s.service-account-issuer");
        let iss = json!({
            "servers": [ssh(&net)],
            "issuer": "https://oidc.test.example/prepended/",
            "mode": "prepend",
            "max_token_expiration": "12h",
            "interval": "200ms",
        });
        let before = h.service_stats("k3s").await.unwrap();
        let out = run_to_done(&issuer, &cx, &iss).await;
        assert_eq!(out["issuer"], "https://oidc.test.example/prepended/");
        assert_eq!(h.service_stats("k3s").await.unwrap().restarts, before.restarts + 1);
        let args = String::from_utf8(
            h.read_file("/var/lib/rancher/k3s/server/sim/kube-apiserver-args")
                .await
                .unwrap(),
        )
        .unwrap();
        let issuers: Vec<&str> = args
            .lines()
            .filter(|l| l.starts_with("--service-account-issuer="))
            .collect();
        assert!(issuers.len() >= 2, "{args}");
        assert_eq!(issuers[0], "--service-account-issuer=https://oidc.test.example/prepended/");
        assert!(args.contains("--service-account-max-token-expiration=12h"), "{args}");
        assert!(matches!(issuer.observe(&cx, &iss).await.unwrap(), Observed::Satisfied(_)));

        // Uninstall.
        let un = kind(&steps, "k3s.uninstall");
        let uni = json!({"ssh": ssh(&net)});
        assert!(matches!(un.observe(&cx, &uni).await.unwrap(), Observed::NotSatisfied { .. }));
        run_to_done(&un, &cx, &uni).await;
        assert!(!h.root_path("/usr/local/bin/k3s").exists());
        assert!(matches!(un.observe(&cx, &uni).await.unwrap(), Observed::Satisfied(_)));
        assert!(matches!(install.observe(&cx, &input).await.unwrap(), Observed::NotSatisfied { .. }));
    })
    .await;
}
