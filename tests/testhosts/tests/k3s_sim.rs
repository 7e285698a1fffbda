//! Tests of the k3s simulator on test hosts: install script, join with right/wrong token,
//! config.yaml.d merge into apiserver args, service-account token issuer, restart counter.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use siteflow_testhosts::{TestHost, TestNet};

async fn bounded<F: std::future::Future<Output = T>, T>(f: F) -> T {
    tokio::time::timeout(Duration::from_secs(55), f)
        .await
        .expect("test took longer than 55 s")
}

async fn nodes(server: &TestHost) -> Value {
    let out = server
        .exec_local_ok("k3s kubectl get nodes -o json")
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

async fn wait_nodes(server: &TestHost, want: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = nodes(server).await;
        if n["items"].as_array().unwrap().len() >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn server_and_two_agents_join_only_with_the_right_token() {
    bounded(async {
        let net = TestNet::new(4).await.unwrap();
        for h in &net.hosts {
            h.install_k3s_simulator().await.unwrap();
        }
        let server = net.host(0);
        // Install over SSH as the passwordless-sudo user, like siteflow does.
        let out = server
            .ssh(
                &server.user_nopasswd,
                "sudo mkdir -p /etc/rancher/k3s && printf 'write-kubeconfig-mode: \"0644\"\\ntoken: s3cret-token\\n' | sudo tee /etc/rancher/k3s/config.yaml >/dev/null && curl_free=1 sudo INSTALL_K3S_VERSION=v1.30.2+k3s1 sh /usr/local/lib/k3s-sim/install.sh",
            )
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let version = server.ssh(&server.user_nopasswd, "k3s --version").await.unwrap();
        assert!(String::from_utf8_lossy(&version.stdout).starts_with("k3s version v1.30.2+k3s1 ("));
        let node_token = String::from_utf8(server.read_file("/var/lib/rancher/k3s/server/node-token").await.unwrap()).unwrap();
        assert!(node_token.starts_with("K10") && node_token.trim().ends_with("::server:s3cret-token"), "{node_token}");
        let kubeconfig = server.exec_local_ok("stat -c %a /etc/rancher/k3s/k3s.yaml; grep server: /etc/rancher/k3s/k3s.yaml").await.unwrap();
        assert!(kubeconfig.starts_with("644\n") && kubeconfig.contains("https://127.0.0.1:6443"), "{kubeconfig}");

        let url = format!("https://{}:6443", server.ip);
        for (agent, token, labels) in [
            (net.host(1), node_token.trim(), vec!["--node-label", "role=observability", "--node-taint", "observability=true:NoSchedule"]),
            (net.host(2), "s3cret-token", vec![]),
        ] {
            agent
                .install_k3s(&[("K3S_URL", &url), ("K3S_TOKEN", token)], &labels)
                .await
                .unwrap();
        }
        // a wrong token: the agent keeps retrying and never shows up
        net.host(3)
            .install_k3s(&[("K3S_URL", &url), ("K3S_TOKEN", "wrong")], &[])
            .await
            .unwrap();
        let list = wait_nodes(server, 3).await;
        let items = list["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|n| n["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
        for n in items {
            assert_eq!(n["status"]["conditions"][0]["type"], "Ready");
            assert_eq!(n["status"]["conditions"][0]["status"], "True");
        }
        let obs = &items[1];
        assert_eq!(obs["metadata"]["labels"]["role"], "observability");
        assert_eq!(obs["spec"]["taints"][0]["key"], "observability");
        assert_eq!(obs["spec"]["taints"][0]["effect"], "NoSchedule");
        assert_eq!(obs["status"]["addresses"][0]["address"], net.host(1).ip.to_string());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(nodes(server).await["items"].as_array().unwrap().len(), 3, "wrong token must not join");
        let log = String::from_utf8(net.host(3).read_file("/var/log/k3s-agent.log").await.unwrap()).unwrap();
        assert!(log.contains("401"), "{log}");
        // an uninstall script exists for both roles
        assert!(server.exec_local("test -x /usr/local/bin/k3s-uninstall.sh").await.unwrap().status.success());
        assert!(net.host(1).exec_local("test -x /usr/local/bin/k3s-agent-uninstall.sh").await.unwrap().status.success());
        // server-side apply keeps objects
        let out = server
            .exec_local_with_input("k3s kubectl apply --server-side -f -", b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: flux\n  namespace: flux-system\n")
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = server.exec_local_ok("k3s kubectl get serviceaccount flux -n flux-system -o json").await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&got).unwrap()["metadata"]["name"], "flux");
    })
    .await
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.trim().split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A net of one host, with the simulator installed.
async fn one_simulator_host() -> TestNet {
    let net = TestNet::new(1).await.unwrap();
    net.host(0).install_k3s_simulator().await.unwrap();
    net
}

#[tokio::test]
async fn dropin_append_reaches_apiserver_args_and_token_issuer_and_restarts_are_counted() {
    bounded(async {
        let net = one_simulator_host().await;
        let h = net.host(0);
        h.write_file("/etc/rancher/k3s/config.yaml", b"kube-apiserver-arg:\n  - feature-gates=Foo=true\n", 0o600).await.unwrap();
        h.install_k3s(&[], &[]).await.unwrap();
        let stats = h.service_stats("k3s").await.unwrap();
        assert_eq!((stats.starts, stats.restarts), (1, 1), "install restarts the unit once");
        let token = h.exec_local_ok("k3s kubectl create token default").await.unwrap();
        assert_eq!(jwt_claims(&token)["iss"], "https://kubernetes.default.svc.cluster.local");

        // Re-running the install script with nothing changed does not restart k3s.
        h.install_k3s(&[], &[]).await.unwrap();
        assert_eq!(h.service_stats("k3s").await.unwrap(), stats);

        // The issuer drop-in, appended with `+:`; k3s needs a restart to see it.
        let issuer = "https://westeurope.oic.prod-arc.azure.com/tenant/cluster/";
        h.write_file(
            "/etc/rancher/k3s/config.yaml.d/50-issuer.yaml",
            format!("kube-apiserver-arg+:\n  - service-account-issuer={issuer}\n  - service-account-max-token-expiration=24h\n").as_bytes(),
            0o600,
        )
        .await
        .unwrap();
        let out = h.ssh(&h.user_passwd, &format!("echo '{}' | sudo -S -p '' systemctl restart k3s", h.password)).await.unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(h.service_stats("k3s").await.unwrap().restarts, 2);
        let args = String::from_utf8(h.read_file("/var/lib/rancher/k3s/server/sim/kube-apiserver-args").await.unwrap()).unwrap();
        assert!(args.contains("--feature-gates=Foo=true\n"), "{args}");
        assert!(args.contains(&format!("--service-account-issuer={issuer}\n")), "{args}");
        assert!(!args.contains("--service-account-issuer=https://kubernetes.default"), "plain = replaces the default: {args}");
        assert!(args.contains("--service-account-max-token-expiration=24h\n"));
        let token = h.exec_local_ok("k3s kubectl create token default -n kube-system --duration 48h").await.unwrap();
        let claims = jwt_claims(&token);
        assert_eq!(claims["iss"], issuer);
        assert_eq!(claims["sub"], "system:serviceaccount:kube-system:default");
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 24 * 3600, "capped by max expiration");
        assert!(h.exec_local("k3s kubectl create token nosuch").await.unwrap().status.code() == Some(1));

        // A reboot starts the enabled unit again (a start, not a restart).
        h.restart().await.unwrap();
        assert_eq!(h.exec_local_ok("systemctl is-active k3s").await.unwrap().trim(), "active");
        let after = h.service_stats("k3s").await.unwrap();
        assert_eq!((after.starts, after.restarts), (3, 2));
    })
    .await
}

#[tokio::test]
async fn install_k3s_keeps_env_values_off_command_lines_and_out_of_errors() {
    bounded(async {
        let net = one_simulator_host().await;
        let h = net.host(0);
        // Unique to this run: nothing else on the machine carries it.
        let marker = format!("sfthsecret{}x", std::process::id());
        let token = format!("K10{marker}::server:s3cret");
        // A sha256sum the install script calls while it runs: it records the command line of
        // every process on the machine, then does its job.
        h.write_file(
            "/usr/local/bin/sha256sum",
            b"#!/bin/sh\nfor f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <\"$f\" 2>/dev/null; echo; done >>/root/cmdlines\nexec /usr/bin/sha256sum \"$@\"\n",
            0o755,
        )
        .await
        .unwrap();
        h.install_k3s(&[("K3S_URL", "https://127.0.0.1:1"), ("K3S_TOKEN", &token)], &[])
            .await
            .unwrap();
        let seen = String::from_utf8(h.read_file("/root/cmdlines").await.unwrap()).unwrap();
        assert!(
            seen.contains(siteflow_testhosts::INSTALL_SCRIPT),
            "recorded during the install: {seen}"
        );
        assert!(!seen.contains(&marker), "the token was on a command line:\n{seen}");
        // It reached the installer all the same.
        let env = h
            .read_file("/etc/systemd/system/k3s-agent.service.env")
            .await
            .unwrap();
        let env = String::from_utf8(env).unwrap();
        assert!(env.contains(&token), "{env}");

        // A failing install: the error says what failed, without the token.
        let awkward = format!("{token} it's $x");
        let err = h
            .install_k3s(
                &[("K3S_URL", "http://127.0.0.1:1"), ("K3S_TOKEN", &awkward)],
                &["--node-label", "a=b"],
            )
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("Only https:// URLs are supported"), "{err}");
        assert!(
            err.contains("with K3S_URL K3S_TOKEN") && err.contains("install.sh --node-label a=b`"),
            "{err}"
        );
        assert!(!err.contains(&marker), "the token is in the error: {err}");
        let bad_name = h.install_k3s(&[("K3S TOKEN", "x")], &[]).await;
        assert!(bad_name.is_err(), "no variable name");
    })
    .await
}
