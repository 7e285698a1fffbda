//! The binary's step kinds share one SSH transport: an `ssh.exec`, a `k3s.*` kind and
//! another `ssh.exec` on the same host in one run hold a single connection to its sshd
//! (counted on the host, in its network namespace). Needs root (test hosts).

mod support;

use serde_json::Value;
use siteflow_testhosts::TestNet;
use support::Sandbox;

/// Counts the established TCP connections to the host's sshd port (`/proc/net/tcp`, IPv4:
/// the steps connect to the host's IPv4 address) and reports the figure as an output.
const COUNT: &str = r#"port=$(printf '%04X' "$SSHD_PORT")
n=$(awk -v p=":$port" 'NR > 1 && substr($2, length($2) - 4) == p && $4 == "01"' /proc/net/tcp | wc -l)
echo "connections=$n" >> "$SITEFLOW_OUTPUT""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_and_k3s_kinds_share_one_connection() {
    let net = TestNet::new(1).await.expect("test hosts (needs root)");
    let h = net.host(0);
    let ssh = format!(
        "{{ host: \"{}\", port: {}, user: azureuser, private_key_file: \"{}\", host_key: pinned, host_key_fingerprint: \"{}\" }}",
        h.ip,
        h.port,
        net.client_key_path.display(),
        h.host_key_fingerprint
    );
    let indented = COUNT.replace('\n', "\n        ");
    let wf = format!(
        r#"name: shared-transport
steps:
  - id: first
    uses: ssh.exec
    with:
      ssh: {ssh}
      run: "true"
  - id: k3s
    uses: k3s.uninstall
    needs: [first]
    with:
      ssh: {ssh}
  - id: count
    uses: ssh.exec
    needs: [k3s]
    with:
      ssh: {ssh}
      env: {{ SSHD_PORT: "{port}" }}
      run: |
        {indented}
"#,
        port = h.port
    );
    let sb = Sandbox::new();
    let file = sb.write("wf.yaml", &wf);
    let r = sb.run(&["run", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let outputs: String = conn
        .query_row(
            "SELECT outputs FROM steps WHERE step_id = 'count'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let outputs: Value = serde_json::from_str(&outputs).unwrap();
    assert_eq!(
        outputs["connections"], "1",
        "ssh.exec and k3s.uninstall must reuse one connection: {outputs}"
    );
}
