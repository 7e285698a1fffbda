//! SSH trust across runs (a key `accept-new` learned is the only key later runs accept, until
//! it is forgotten) and safe interpolation (a hostile value reaches local and remote scripts
//! byte for byte through `env:` and through `| shell_quote`), through the engine against a
//! real OpenSSH test host.

mod support;

use siteflow_testhosts::TestNet;
use support::{Engine, bounded};

const AWKWARD: &str = "it's \"quoted\" $HOME `id` $(id) \\ back\\slash\nsecond line\n\ttab 'end'";

fn target(net: &TestNet, host_key: &str) -> String {
    let h = net.host(0);
    format!(
        "{{ host: \"{}\", user: azureuser, private_key_file: \"{}\", host_key: {host_key} }}",
        h.ip,
        net.client_key_path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_arrives_byte_for_byte_through_env_and_shell_quote_locally_and_over_ssh() {
    bounded(120, async {
        let net = TestNet::new(1).await.unwrap();
        let engine = Engine::new();
        let value = serde_json::to_string(AWKWARD).unwrap();
        let ssh = target(&net, "accept-new");
        let wf = format!(
            r#"name: quoting
inputs:
  value: {{ type: string, default: {value} }}
steps:
  - id: local-env
    uses: shell
    with:
      env: {{ V: "${{{{ inputs.value }}}}" }}
      run: printf '%s' "$V" > local-env.txt
  - id: local-quote
    uses: shell
    with:
      run: printf '%s' ${{{{ inputs.value | shell_quote }}}} > local-quote.txt
  - id: remote-env
    uses: ssh.exec
    with:
      ssh: {ssh}
      env: {{ V: "${{{{ inputs.value }}}}" }}
      run: printf '%s' "$V" > "$HOME/remote-env.txt"
  - id: remote-quote
    uses: ssh.exec
    needs: [remote-env]
    with:
      ssh: {ssh}
      run: printf '%s' ${{{{ inputs.value | shell_quote }}}} > "$HOME/remote-quote.txt"
"#
        );
        let out = engine.start(("quoting.yaml", &wf), None).await;
        let steps = engine.store.steps(&out.run_id).await.unwrap();
        assert_eq!(
            out.status.name(),
            "Succeeded",
            "{:?}",
            steps.iter().map(|s| (&s.key, &s.error)).collect::<Vec<_>>()
        );
        for f in ["local-env.txt", "local-quote.txt"] {
            let got = std::fs::read_to_string(engine.dir.path().join(f)).unwrap();
            assert_eq!(got, AWKWARD, "{f}");
        }
        for f in ["remote-env.txt", "remote-quote.txt"] {
            let got = net
                .host(0)
                .read_file(&format!("/home/azureuser/{f}"))
                .await
                .unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), AWKWARD, "{f}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_trusts_across_runs_and_refuses_a_changed_key_until_forgotten() {
    bounded(150, async {
        let net = TestNet::new(1).await.unwrap();
        let host = net.host(0);
        let engine = Engine::new();
        let wf = format!(
            "name: trust\nsteps:\n  - id: hello\n    uses: ssh.exec\n    with:\n      ssh: {}\n      run: \"true\"\n",
            target(&net, "accept-new")
        );
        let first = engine.start(("trust.yaml", &wf), None).await;
        assert_eq!(first.status.name(), "Succeeded");
        let learned = engine
            .store
            .shared_values(siteflow_ssh::RunStateHostKeyStore::NAMESPACE)
            .await
            .unwrap();
        let key = format!("{}:22", host.ip);
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].0, key);
        assert_eq!(learned[0].3.as_deref(), Some(first.run_id.as_str()));

        // The host is re-keyed (or impersonated): a new run refuses it, naming both keys.
        host.exec_local_ok(
            "rm -f /etc/ssh/ssh_host_*key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key",
        )
        .await
        .unwrap();
        let new_pub = host
            .read_file("/etc/ssh/ssh_host_ed25519_key.pub")
            .await
            .unwrap();
        let new_fp =
            siteflow_ssh::line_fingerprint(String::from_utf8_lossy(&new_pub).trim()).unwrap();
        host.restart().await.unwrap();
        let second = engine.start(("trust.yaml", &wf), None).await;
        assert_eq!(second.status.name(), "Failed");
        let steps = engine.store.steps(&second.run_id).await.unwrap();
        let err = steps[0].error.clone().expect("an error");
        assert_eq!(err.code, "HostKeyMismatch", "{err:?}");
        assert!(err.message.contains(&new_fp), "{}", err.message);
        assert!(err.message.contains(&host.host_key_fingerprint), "{}", err.message);
        assert!(err.message.contains("siteflow hosts forget"), "{}", err.message);

        // Forgotten, the next run learns the new key.
        assert!(
            engine
                .store
                .delete_shared_value(siteflow_ssh::RunStateHostKeyStore::NAMESPACE, &key)
                .await
                .unwrap()
        );
        let third = engine.start(("trust.yaml", &wf), None).await;
        assert_eq!(third.status.name(), "Succeeded");
        let learned = engine
            .store
            .shared_values(siteflow_ssh::RunStateHostKeyStore::NAMESPACE)
            .await
            .unwrap();
        let keys = learned[0].1.as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            siteflow_ssh::line_fingerprint(keys[0].as_str().unwrap()).unwrap(),
            new_fp
        );
    })
    .await;
}
