//! Three k3s servers (embedded-etcd HA shape) on test hosts: `k3s.service-account-issuer`
//! changes and restarts them one at a time, verifies the `iss` claim, and a second run
//! restarts nothing.

mod support;

use siteflow_engine::runner::RunStatus;
use siteflow_testhosts::{INSTALL_SCRIPT, TestNet};
use support::{Engine, bounded, net_with_k3s};

const ISSUER: &str = "https://oidc.test.example/tenant/ha-site/";

fn ssh(net: &TestNet, i: usize) -> String {
    let h = net.host(i);
    format!(
        "{{ host: '{}', user: azureuser, private_key_file: '{}', host_key: pinned, host_key_fingerprint: '{}' }}",
        h.ip,
        net.client_key_path.display(),
        h.host_key_fingerprint
    )
}

fn workflow(net: &TestNet) -> String {
    let url = format!("https://{}:6443", net.host(0).ip);
    format!(
        "name: ha
defaults:
  timeout: 2m
steps:
  - id: s1
    uses: k3s.install
    with: {{ ssh: {s1}, cluster_init: true, token: ha-shared-token-0123456789abcdef, install_script_path: {INSTALL_SCRIPT} }}
  - id: s2
    uses: k3s.install
    needs: [s1]
    with: {{ ssh: {s2}, server_url: '{url}', token: ha-shared-token-0123456789abcdef, install_script_path: {INSTALL_SCRIPT} }}
  - id: s3
    uses: k3s.install
    needs: [s2]
    with: {{ ssh: {s3}, server_url: '{url}', token: ha-shared-token-0123456789abcdef, install_script_path: {INSTALL_SCRIPT} }}
  - id: issuer
    uses: k3s.service-account-issuer
    needs: [s3]
    with:
      servers: [{s1}, {s2}, {s3}]
      issuer: '{ISSUER}'
      interval: 200ms
",
        s1 = ssh(net, 0),
        s2 = ssh(net, 1),
        s3 = ssh(net, 2),
    )
}

/// Nanoseconds since the epoch of a file's mtime on a host.
async fn mtime(net: &TestNet, i: usize, path: &str) -> u128 {
    net.host(i)
        .exec_local_ok(&format!("date -r {path} +%s%N"))
        .await
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issuer_restarts_servers_one_at_a_time_and_verifies_iss() {
    bounded(180, async {
        let net = net_with_k3s(3).await;
        let engine = Engine::new();
        let wf = workflow(&net);
        let run = engine.start(("ha.yaml", &wf), None).await;
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{}",
            engine.log_text(&run.run_id).await
        );
        let steps = engine.store.steps(&run.run_id).await.unwrap();
        let issuer = steps.iter().find(|s| s.key == "issuer").unwrap();
        assert_eq!(issuer.outputs.as_ref().unwrap()["issuer"], ISSUER);

        let args = "/var/lib/rancher/k3s/server/sim/kube-apiserver-args";
        let restarts = "/var/lib/systemd-sim/k3s.service.restarts";
        let mut started = Vec::new();
        let mut restarted = Vec::new();
        for i in 0..3 {
            let st = net.host(i).service_stats("k3s").await.unwrap();
            // The install script starts k3s with `systemctl restart` (1), the issuer step
            // restarts it once more (2).
            assert_eq!(st.restarts, 2, "server {i}: {st:?}");
            let a = String::from_utf8(net.host(i).read_file(args).await.unwrap()).unwrap();
            assert!(
                a.contains(&format!("--service-account-issuer={ISSUER}")),
                "{a}"
            );
            assert!(
                a.contains("--service-account-max-token-expiration=24h"),
                "{a}"
            );
            // A token issued by this very server carries the issuer.
            let token = net
                .host(i)
                .exec_local_ok("k3s kubectl create token default -n default")
                .await
                .unwrap();
            let payload = token.trim().split('.').nth(1).unwrap();
            let claims = net
                .host(i)
                .exec_local_ok(&format!(
                    "printf '%s' '{payload}' | tr '_-' '/+' | base64 -d 2>/dev/null; true"
                ))
                .await
                .unwrap();
            assert!(claims.contains(ISSUER), "{claims}");
            restarted.push(mtime(&net, i, restarts).await);
            started.push(mtime(&net, i, args).await);
        }
        // One at a time: each restart began after the previous server was up again.
        assert!(restarted[1] > started[0], "{restarted:?} {started:?}");
        assert!(restarted[2] > started[1], "{restarted:?} {started:?}");

        // Again: everything satisfied, no restart.
        let again = engine.start(("ha.yaml", &wf), None).await;
        assert_eq!(again.status, RunStatus::Succeeded);
        for (key, o) in engine.outcomes(&again.run_id).await {
            assert_eq!(o, vec!["satisfied".to_string()], "{key}");
        }
        for i in 0..3 {
            assert_eq!(net.host(i).service_stats("k3s").await.unwrap().restarts, 2);
        }
    })
    .await;
}
