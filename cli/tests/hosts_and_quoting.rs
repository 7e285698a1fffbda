//! `siteflow hosts list|forget` over the keys `accept-new` learned (shared by every run of a
//! state database), and `validate` warning about values rendered into scripts unquoted.

mod support;

use serde_json::{Value, json};
use siteflow_engine::state::StateStore;
use support::Sandbox;

fn key_line(sb: &Sandbox) -> String {
    let path = sb.path("hostkey");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    sb.read("hostkey.pub").trim().to_string()
}

#[tokio::test]
async fn hosts_list_and_forget() {
    let sb = Sandbox::new();
    // Reading never creates a database.
    let r = sb.run(&["hosts", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("no host keys learned"), "{}", r.stdout);
    assert!(!sb.db().exists());

    let line = key_line(&sb);
    let fp = {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(sb.path("hostkey.pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    {
        std::fs::create_dir_all(sb.path(".siteflow")).unwrap();
        let store = StateStore::open(&sb.db()).unwrap();
        store
            .set_shared_value("ssh.host_keys", "10.0.1.4:22", json!([line]), Some("r1"))
            .await
            .unwrap();
        store
            .set_shared_value("ssh.host_keys", "[fd00::5]:2222", json!([line]), Some("r2"))
            .await
            .unwrap();
    }
    let r = sb.run(&["hosts", "list"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("10.0.1.4:22") && r.stdout.contains(&fp),
        "{}",
        r.stdout
    );
    let r = sb.run(&["hosts", "list", "--output", "json"]);
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 2);
    assert_eq!(doc[1]["keys"][0]["fingerprint"], fp.as_str());

    let r = sb.run(&["hosts", "forget", "10.0.1.4"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = sb.run(&["hosts", "forget", "[fd00::5]:2222"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = sb.run(&["hosts", "forget", "10.0.1.4:22"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("no key is known for 10.0.1.4:22"),
        "{}",
        r.stdout
    );
    let r = sb.run(&["hosts", "list", "--output", "json"]);
    assert_eq!(r.stdout.trim(), "[]");
}

#[test]
fn validate_warns_about_unquoted_values_in_scripts() {
    let sb = Sandbox::new();
    let wf = sb.write(
        "wf.yaml",
        "name: w\ninputs:\n  name: { type: string, default: x }\n  count: { type: integer, default: 2 }\nsecrets:\n  tok: { env: TOK, required: false }\nsteps:\n  - id: bad\n    uses: shell\n    with:\n      run: echo ${{ inputs.name }} ${{ secrets.tok }} ${{ inputs.count }}\n  - id: good\n    uses: shell\n    with:\n      env: { NAME: \"${{ inputs.name }}\" }\n      run: echo \"$NAME\" ${{ inputs.name | shell_quote }} ${{ inputs.count }}\n",
    );
    let r = sb.run(&["validate", wf.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("ok:"), "{}", r.stdout);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`${{ inputs.name }}` is rendered into `run:` unquoted")
    );
    assert!(r.stderr.contains("`${{ secrets.tok }}`"));
    assert!(r.stderr.contains("wf.yaml:11:"), "{}", r.stderr);
    assert!(!r.stderr.contains("step `good`"), "{}", r.stderr);
}

#[test]
fn run_ids_by_prefix_and_last_and_json_listing_and_broken_pipes() {
    let sb = Sandbox::new();
    let wf = sb.write("wf.yaml", "name: tiny\nsteps:\n  - id: a\n    uses: noop\n");
    let wf = wf.to_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(sb.run(&["run", &wf]).code, 0);
    }
    let r = sb.run(&["runs", "list", "--output", "json"]);
    let runs: Value = serde_json::from_str(&r.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let newest = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["status"], "Succeeded");
    // `last` is the newest run; a unique prefix names a run; a shared prefix is refused.
    let r = sb.run(&["runs", "show", "last", "--output", "json"]);
    assert_eq!(r.json()["run_id"], newest.as_str());
    let r = sb.run(&[
        "runs",
        "show",
        &newest[..newest.len() - 2],
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["run_id"], newest.as_str());
    let r = sb.run(&["logs", "r0"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("matches several runs"), "{}", r.stderr);
    let r = sb.run(&["resume", "nope"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no run `nope`"), "{}", r.stderr);
    // A closed pipe ends the output quietly, not with a panic.
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} schema | head -c 10 >/dev/null",
            env!("CARGO_BIN_EXE_siteflow")
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
