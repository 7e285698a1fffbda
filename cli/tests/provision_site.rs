//! The main job end to end: `siteflow run provision-site` with no subscription configured
//! starts the local sandbox (Azure emulator + a real OpenSSH test host per VM) and provisions
//! the whole site: VMs, k3s, agents joined over a jump host, kubeconfig, providers, Arc (the
//! simulated agent proves the onboarding key), the issuer, Flux (the simulated cluster fetches
//! the sandbox's git repository). Then: a second run writes nothing to ARM and restarts
//! nothing; SIGKILLed runs resume to completion without creating anything twice. Needs root.
//!
//! Crash trials: `SITEFLOW_PROVISION_CRASH_TRIALS` (default 10).

mod support;

use rand::Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::Sandbox;

fn workflows() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../workflows")
        .display()
        .to_string()
}

/// Stops the sandbox daemon when the test ends, passing or not.
struct Down<'a>(&'a Sandbox);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.command(&["sandbox", "down"]).output();
    }
}

fn siteflow(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = sb
        .command(args)
        .env("SITEFLOW_WORKFLOWS", workflows())
        .env_remove("AZURE_SUBSCRIPTION_ID")
        .env_remove("GIT_TOKEN")
        .output()
        .expect("siteflow runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn info(sb: &Sandbox) -> Value {
    serde_json::from_str(&sb.read(".siteflow/sandbox/sandbox.json")).expect("sandbox.json")
}

/// The emulator's request log.
fn requests(sb: &Sandbox) -> Vec<Value> {
    let i = info(sb);
    let out = Command::new("curl")
        .args(["-sf", "--cacert", i["caPemPath"].as_str().unwrap()])
        .arg(format!(
            "{}/_emulator/requests",
            i["baseUrl"].as_str().unwrap()
        ))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["value"].as_array().cloned().unwrap_or_default()
}

/// ARM requests that change something: every method but GET, except `listKeys`, the POST
/// action that reads a storage account's keys (a run reads the key again for the file-share
/// mounts: secret outputs are never persisted).
fn arm_writes(log: &[Value]) -> Vec<String> {
    log.iter()
        .filter(|e| {
            e["service"] == "arm"
                && e["method"] != "GET"
                && !e["path"].as_str().is_some_and(|p| p.ends_with("/listKeys"))
        })
        .map(|e| {
            format!(
                "{} {} -> {}",
                e["method"].as_str().unwrap_or(""),
                e["path"].as_str().unwrap_or(""),
                e["status"]
            )
        })
        .collect()
}

/// Runs `cmd` on a VM's host over SSH (the system client, with the admin key siteflow made).
fn on_vm(sb: &Sandbox, site: &str, vm_step: &str, ip: &str, cmd: &str) -> String {
    let key = sb.path(&format!(".siteflow/keys/{site}/{vm_step}/admin_ed25519"));
    let out = Command::new("ssh")
        .args(["-F", "none", "-i"])
        .arg(&key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("azureuser@{ip}"))
        .arg(cmd)
        .output()
        .expect("ssh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` on an agent VM (private address only) over the server as jump host.
fn on_agent(sb: &Sandbox, site: &str, server_ip: &str, agent_ip: &str, cmd: &str) -> String {
    let jump_key = sb.path(&format!(".siteflow/keys/{site}/server/admin_ed25519"));
    let key = sb.path(&format!(".siteflow/keys/{site}/agent-vms_0_/admin_ed25519"));
    let opts = "-o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR";
    let out = Command::new("ssh")
        .args(["-F", "none", "-i"])
        .arg(&key)
        .args(opts.split(' '))
        .arg("-o")
        .arg(format!(
            "ProxyCommand=ssh -F none -i {} {opts} -W %h:%p azureuser@{server_ip}",
            jump_key.display()
        ))
        .arg(format!("azureuser@{agent_ip}"))
        .arg(cmd)
        .output()
        .expect("ssh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hosts(sb: &Sandbox) -> Vec<Value> {
    serde_json::from_str(&sb.read(".siteflow/sandbox/hosts.json")).unwrap_or_default()
}

fn host_of(sb: &Sandbox, vm_name: &str) -> Value {
    hosts(sb)
        .into_iter()
        .find(|h| h["name"] == vm_name)
        .unwrap_or_else(|| panic!("no host for VM {vm_name}: {:?}", hosts(sb)))
}

/// The run's JSON document (`--output json`) at the start of `out`, whatever went to stderr
/// after it.
fn json_doc(out: &str) -> Value {
    serde_json::Deserializer::from_str(out.trim_start_matches(|c| c != '{'))
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("{out}"))
}

/// One step of a run's JSON document (`runs show --output json`, `run --output json`).
fn step_of(doc: &Value, id: &str) -> Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

fn db_text(sb: &Sandbox) -> String {
    let mut bytes = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        bytes.extend(std::fs::read(sb.path(&format!(".siteflow/{f}"))).unwrap_or_default());
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn seed_001_provisions_end_to_end_in_the_sandbox_and_again_changes_nothing() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/sites/seed-001.yaml");
    let site = site.to_str().unwrap();
    let (code, out) = siteflow(&sb, &["run", "--site", site]);
    assert_eq!(code, 0, "{out}");
    for step in ["arc", "issuer", "flux", "k3s-agents[0]", "kubeconfig"] {
        assert!(out.contains(step), "{step} missing from: {out}");
    }
    assert!(
        out.contains("Azure emulator") && out.contains("siteflow sandbox down"),
        "{out}"
    );
    let (_, show) = siteflow(&sb, &["runs", "list"]);
    let run_id = show
        .split_whitespace()
        .find(|w| w.starts_with('r') && w.len() > 12)
        .unwrap_or_else(|| panic!("{show}"))
        .to_string();
    let (_, doc) = siteflow(&sb, &["runs", "show", &run_id, "--output", "json"]);
    let doc: Value = serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let outputs = |id: &str| step_of(&doc, id)["outputs"].clone();
    let arc = outputs("arc");
    assert_eq!(arc["connectivity_status"], "Connected");
    let issuer_url = arc["issuer_url"].as_str().unwrap().to_string();
    assert_eq!(outputs("issuer")["issuer"], issuer_url.as_str());
    assert_eq!(outputs("flux")["compliance_state"], "Compliant");

    // The cluster really is one: the agent joined the server, the server's tokens carry
    // Arc's issuer, Flux applied the repository's objects.
    let server = host_of(&sb, "seed-001-server");
    let ip = server["publicIp"].as_str().unwrap();
    let nodes = on_vm(
        &sb,
        "seed-001",
        "server",
        ip,
        "sudo k3s kubectl get nodes -o json",
    );
    let nodes: Value = serde_json::from_str(&nodes).unwrap_or_else(|e| panic!("{e}: {nodes}"));
    let items = nodes["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"seed-001-server") && names.contains(&"seed-001-agent-0"),
        "{names:?}"
    );
    // Seed 001's observability node: labelled and tainted.
    let agent = items
        .iter()
        .find(|n| n["metadata"]["name"] == "seed-001-agent-0")
        .unwrap();
    assert_eq!(
        agent["metadata"]["labels"]["role"], "observability",
        "{agent}"
    );
    assert!(
        agent["spec"]["taints"]
            .to_string()
            .contains("observability"),
        "{agent}"
    );
    let args = on_vm(
        &sb,
        "seed-001",
        "server",
        ip,
        "sudo cat /var/lib/rancher/k3s/server/sim/kube-apiserver-args",
    );
    assert!(
        args.contains(&format!("--service-account-issuer={issuer_url}")),
        "{args}"
    );
    let cm = on_vm(
        &sb,
        "seed-001",
        "server",
        ip,
        "sudo k3s kubectl get configmap hello -n hello -o json",
    );
    assert!(cm.contains("reconciled by Flux"), "{cm}");
    let kubeconfig = sb.read(".siteflow/kubeconfig");
    assert!(kubeconfig.contains(ip), "{kubeconfig}");

    // ACR: every node pulls from the sandbox registry with one refresh token.
    let agent_ip = outputs("agent-vms")[0]["private_ip"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", outputs("agent-vms")))
        .to_string();
    let registries = "sudo cat /etc/rancher/k3s/registries.yaml";
    let server_reg = on_vm(&sb, "seed-001", "server", ip, registries);
    let agent_reg = on_agent(&sb, "seed-001", ip, &agent_ip, registries);
    assert_eq!(agent_reg, server_reg, "the agent's registries.yaml");
    let reg: Value =
        serde_saphyr::from_str(&server_reg).unwrap_or_else(|e| panic!("{e}: {server_reg}"));
    let acr_token = reg["configs"]["sandbox.azurecr.io"]["auth"]["password"]
        .as_str()
        .unwrap_or_else(|| panic!("{server_reg}"))
        .to_string();
    assert!(
        acr_token.starts_with("ey") && acr_token.len() > 100,
        "{server_reg}"
    );

    // Secrets: the node token (Key Vault), the onboarding key and the client secret are in no
    // persisted byte and not in the emulator's log.
    let log = requests(&sb);
    let log_text = serde_json::to_string(&log).unwrap();
    let db = db_text(&sb);
    let token = on_vm(
        &sb,
        "seed-001",
        "server",
        ip,
        "sudo cat /var/lib/rancher/k3s/server/token",
    );
    let secret_part = token.trim().rsplit(':').next().unwrap().to_string();
    assert!(secret_part.len() >= 16, "{token}");
    let onboarding = sb.read(".siteflow/keys/seed-001/arc/arc-onboarding_rsa.pem");
    let key_line = onboarding
        .lines()
        .nth(1)
        .expect("onboarding key")
        .to_string();
    let client_secret =
        std::fs::read_to_string(info(&sb)["clientSecretFile"].as_str().unwrap()).unwrap();
    for (what, s) in [
        ("node token", &secret_part),
        ("onboarding key", &key_line),
        ("client secret", &client_secret),
        ("ACR refresh token", &acr_token),
    ] {
        assert!(!db.contains(s.as_str()), "{what} in the state db");
        assert!(
            !log_text.contains(s.as_str()),
            "{what} in the emulator's log"
        );
    }

    // Again: everything is observed in place; no ARM write, no k3s restart.
    let writes_before = arm_writes(&log);
    let exchanges = |log: &[Value]| {
        log.iter()
            .filter(|e| {
                e["path"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with("/oauth2/exchange")
            })
            .count()
    };
    assert_eq!(exchanges(&log), 1, "one ACR refresh token for the site");
    let server_unit = "cat /var/lib/systemd-sim/k3s.service.json";
    let agent_unit = "cat /var/lib/systemd-sim/k3s-agent.service.json";
    let stats_before = on_vm(&sb, "seed-001", "server", ip, server_unit);
    let agent_before = on_agent(&sb, "seed-001", ip, &agent_ip, agent_unit);
    assert!(agent_before.contains("start"), "{agent_before}");
    let (code, out) = siteflow(&sb, &["run", "--site", site]);
    assert_eq!(code, 0, "{out}");
    let log = requests(&sb);
    assert_eq!(
        arm_writes(&log),
        writes_before,
        "the second run wrote to ARM"
    );
    assert_eq!(exchanges(&log), 1, "the unexpired ACR token was kept");
    let stats_after = on_vm(&sb, "seed-001", "server", ip, server_unit);
    assert_eq!(stats_after, stats_before, "the second run restarted k3s");
    assert_eq!(
        on_agent(&sb, "seed-001", ip, &agent_ip, agent_unit),
        agent_before,
        "the second run restarted the k3s agent"
    );

    // Rotation is due (ACR refresh tokens live 3 h): a new token on every node, and k3s
    // restarted to read it; still no ARM write.
    let (code, out) = siteflow(
        &sb,
        &["run", "--site", site, "--set", "acr_renew_before=4h"],
    );
    assert_eq!(code, 0, "{out}");
    let log = requests(&sb);
    assert_eq!(exchanges(&log), 2, "rotation mints one new token");
    assert_eq!(arm_writes(&log), writes_before, "rotation wrote to ARM");
    let rotated = on_vm(&sb, "seed-001", "server", ip, registries);
    assert_ne!(rotated, server_reg);
    assert_eq!(
        on_agent(&sb, "seed-001", ip, &agent_ip, registries),
        rotated
    );
    assert_ne!(
        on_vm(&sb, "seed-001", "server", ip, server_unit),
        stats_after,
        "k3s restarted to read the rotated credential"
    );
    assert_ne!(
        on_agent(&sb, "seed-001", ip, &agent_ip, agent_unit),
        agent_before,
        "the k3s agent restarted to read the rotated credential"
    );
}

#[test]
fn provision_site_resumes_after_sigkill_without_creating_anything_twice() {
    let trials: usize = std::env::var("SITEFLOW_PROVISION_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let (code, out) = siteflow(&sb, &["sandbox", "up"]);
    assert_eq!(code, 0, "{out}");
    let mut rng = rand::rng();
    for trial in 0..trials {
        let site = format!("crash-{trial}");
        let name = format!("name={site}");
        let mut child = sb
            .command(&["run", "provision-site", "--set", &name, "--set", "git_url="])
            .env("SITEFLOW_WORKFLOWS", workflows())
            .env_remove("AZURE_SUBSCRIPTION_ID")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..16000)));
        let _ = child.kill();
        let _ = child.wait();
        let (_, list) = siteflow(&sb, &["runs", "list"]);
        let run = list
            .lines()
            .find(|l| l.contains("provision-site"))
            .and_then(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with('r') && w.len() > 12)
            })
            .map(str::to_string);
        let Some(run) = run else {
            continue; // killed before the run was stored
        };
        // (The newest run is an earlier trial's when this one died before storing it: its
        // resume finds nothing to do.)
        let (code, out) = siteflow(&sb, &["resume", &run]);
        assert_eq!(code, 0, "trial {trial}: {out}");
        // Each resource of this site was created once, and no accepted PUT was sent again.
        let log = requests(&sb);
        let mut creates: BTreeMap<String, usize> = BTreeMap::new();
        let mut puts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in &log {
            let path = e["path"].as_str().unwrap_or("").to_ascii_lowercase();
            if e["service"] != "arm" || e["method"] != "PUT" || !path.contains(&site) {
                continue;
            }
            let status = e["status"].as_u64().unwrap_or(0);
            if status == 201 {
                *creates.entry(path.clone()).or_default() += 1;
            }
            puts.entry(path).or_default().push(status);
        }
        for (path, n) in &creates {
            assert_eq!(*n, 1, "trial {trial}: {path} created {n} times");
        }
        for (path, statuses) in &puts {
            let accepted = statuses.iter().filter(|s| (200..300).contains(*s)).count();
            assert!(
                accepted <= 1,
                "trial {trial}: PUT {path} accepted {accepted} times: {statuses:?}"
            );
        }
    }
}

fn control(sb: &Sandbox, method: &str, path: &str, body: &str) {
    let i = info(sb);
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            method,
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ])
        .args(["--cacert", i["caPemPath"].as_str().unwrap()])
        .arg(format!(
            "{}/_emulator/{path}",
            i["baseUrl"].as_str().unwrap()
        ))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn step_status(sb: &Sandbox, run: &str, id: &str) -> (String, u64) {
    let (_, doc) = siteflow(sb, &["runs", "show", run, "--output", "json"]);
    let doc: Value = serde_json::from_str(&doc).unwrap_or(Value::Null);
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id).cloned())
        .map(|s| {
            (
                s["status"].as_str().unwrap_or("").to_string(),
                s["attempts"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or_default()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn faults_mid_run_are_absorbed_by_retries_and_waits() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let (code, out) = siteflow(&sb, &["sandbox", "up"]);
    assert_eq!(code, 0, "{out}");
    // A 429 storm on networks, 503s anywhere in ARM, and Arc agents refused for a while.
    control(
        &sb,
        "POST",
        "faults",
        r#"{"resourceType": "Microsoft.Network/virtualNetworks", "fault": {"kind": "throttle", "count": 4, "retryAfterSecs": 1}}"#,
    );
    control(
        &sb,
        "POST",
        "faults",
        r#"{"fault": {"kind": "serverError", "rate": 0.2, "status": 503, "count": 8}}"#,
    );
    control(&sb, "PUT", "arc-agents", r#"{"refuse": true}"#);
    let child = sb
        .command(&[
            "run",
            "provision-site",
            "--set",
            "name=faulty",
            "--set",
            "git_url=",
            "--output",
            "json",
        ])
        .env("SITEFLOW_WORKFLOWS", workflows())
        .env_remove("AZURE_SUBSCRIPTION_ID")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = {
        let mut id = None;
        assert!(wait_for(Duration::from_secs(30), || {
            let (_, list) = siteflow(&sb, &["runs", "list"]);
            id = list
                .lines()
                .find(|l| l.contains("provision-site"))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string);
            id.is_some()
        }));
        id.unwrap()
    };
    // The SSH cut: the agent's link to the virtual network goes down as soon as its VM exists
    // and stays down until the first step that reaches it over SSH (its registries.yaml, over
    // the server as jump host) has failed and is on its second attempt.
    assert!(
        wait_for(Duration::from_secs(60), || {
            hosts(&sb).iter().any(|h| h["name"] == "faulty-agent-0")
        }),
        "the agent VM never came up"
    );
    let agent = host_of(&sb, "faulty-agent-0");
    let vnet = agent["vnetVeth"].as_str().unwrap().to_string();
    let ip = |args: &[&str]| {
        assert!(
            Command::new("ip").args(args).status().unwrap().success(),
            "ip {args:?}"
        );
    };
    ip(&["link", "set", &vnet, "down"]);
    let cut_showed = wait_for(Duration::from_secs(90), || {
        step_status(&sb, &run, "registries-agents[0]").1 >= 2
    });
    ip(&["link", "set", &vnet, "up"]);
    assert!(cut_showed, "the agent's first SSH step never retried");
    // The Arc agent connects late: the cluster waits, Connecting, until it does.
    assert!(
        wait_for(Duration::from_secs(120), || {
            matches!(
                step_status(&sb, &run, "arc").0.as_str(),
                "Running" | "WaitingRetry"
            )
        }),
        "arc never started"
    );
    std::thread::sleep(Duration::from_secs(4));
    // Still not done (Running, or WaitingRetry after an injected 503): it cannot finish
    // before an agent connects.
    let (status, _) = step_status(&sb, &run, "arc");
    assert!(
        status == "Running" || status == "WaitingRetry",
        "arc is {status} while agents were refused"
    );
    control(&sb, "PUT", "arc-agents", r#"{"refuse": false}"#);

    let out = child.wait_with_output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["status"], "Succeeded", "{doc:#}");
    let log = requests(&sb);
    let statuses = |pred: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        log.iter()
            .filter(|e| pred(e))
            .filter_map(|e| e["status"].as_u64())
            .collect()
    };
    let arm = statuses(&|e| e["service"] == "arm");
    assert!(arm.contains(&429), "no 429 was served");
    assert!(arm.contains(&503), "no 503 was served");
    let challenges = statuses(&|e| e["path"] == "/arc-agents/v1/challenge");
    assert!(
        challenges.contains(&503) && challenges.contains(&200),
        "{challenges:?}"
    );
    // The cut shows in the run: the agent's first SSH step took more than one attempt, each
    // recorded; the join after it went through.
    let (status, attempts) = step_status(&sb, &run, "registries-agents[0]");
    assert_eq!(status, "Succeeded");
    assert!(
        attempts >= 2,
        "the SSH cut did not show: {attempts} attempt(s)"
    );
    assert_eq!(step_status(&sb, &run, "k3s-agents[0]").0, "Succeeded");
}

#[test]
fn seed_000_rbac_custom_locations_and_the_graph_error_then_resume() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let (code, out) = siteflow(&sb, &["sandbox", "up"]);
    assert_eq!(code, 0, "{out}");
    // Logged in as a service principal that may not read Graph: the clear error, then resume.
    control(&sb, "PUT", "graph", r#"{"forbidden": true}"#);
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/sites/seed-000.yaml");
    let site = site.to_str().unwrap();
    let (code, out) = siteflow(&sb, &["run", "--site", site]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Microsoft Entra user"), "{out}");
    let (_, list) = siteflow(&sb, &["runs", "list"]);
    let run = list
        .lines()
        .find(|l| l.contains("provision-site"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    control(&sb, "PUT", "graph", r#"{"forbidden": false}"#);
    let (code, out) = siteflow(&sb, &["resume", &run]);
    assert_eq!(code, 0, "{out}");

    let server = host_of(&sb, "seed-000-server");
    let ip = server["publicIp"].as_str().unwrap();
    let sh = |cmd: &str| on_vm(&sb, "seed-000", "server", ip, cmd);
    let args = sh("sudo cat /var/lib/rancher/k3s/server/sim/kube-apiserver-args");
    for flag in [
        "--oidc-issuer-url=https://sts.windows.net/00000000-0000-0000-0000-0000000000aa/",
        "--oidc-client-id=6dae42f8-4368-4678-94ff-3960e28e3630",
        "--oidc-groups-prefix=azure:",
        "--service-account-issuer=",
    ] {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }
    let crb = sh("sudo k3s kubectl get clusterrolebinding siteflow-aad-admins -o json");
    assert!(
        crb.contains("azure:3f1d6a2e-9c1b-4d7a-8a55-2b7c0e9f4d11") && crb.contains("cluster-admin"),
        "{crb}"
    );
    let chart = sh("sudo cat /var/lib/rancher/k3s/server/manifests/azure-arc.yaml");
    let chart: Value = serde_json::from_str(&chart).unwrap_or_else(|e| panic!("{e}: {chart}"));
    let values: Value =
        serde_json::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    // The object id the emulator's Graph has for the Custom Locations RP.
    assert_eq!(
        values["systemDefaultValues"]["customLocations"]["oid"],
        "51dfe1e8-70c6-4de5-a08e-e18aff23d815"
    );
    assert_eq!(
        values["systemDefaultValues"]["clusterconnect-agent"]["enabled"],
        true
    );
    let kubeconfig = sb.read(".siteflow/kubeconfig");
    assert!(
        kubeconfig.contains("seed-000-oidc") && kubeconfig.contains("oidc-login"),
        "{kubeconfig}"
    );
    // The agents rolled with the new values and connected again.
    let (_, doc) = siteflow(&sb, &["runs", "show", &run, "--output", "json"]);
    assert!(doc.contains("\"Connected\""), "{doc}");
}

#[test]
fn two_sites_at_once_share_the_sandbox_but_not_their_networks() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let (code, out) = siteflow(&sb, &["sandbox", "up"]);
    assert_eq!(code, 0, "{out}");
    // Both VNets are 10.0.1.0/24: each site's agent is 10.0.1.5 on its own network, and
    // both sites generate their keys at the same moment.
    let spawn = |name: &str| {
        sb.command(&[
            "run",
            "provision-site",
            "--set",
            &format!("name={name}"),
            "--set",
            "git_url=",
        ])
        .env("SITEFLOW_WORKFLOWS", workflows())
        .env_remove("AZURE_SUBSCRIPTION_ID")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("east"), spawn("west"));
    for (name, child) in [("east", a), ("west", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agents: Vec<Value> = hosts(&sb)
        .into_iter()
        .filter(|h| h["name"].as_str().unwrap_or("").contains("-agent-"))
        .collect();
    assert_eq!(agents.len(), 2);
    // The same private range on two networks: each site's VMs took 10.0.1.4 and 10.0.1.5.
    let ips = |site: &str| -> std::collections::BTreeSet<String> {
        hosts(&sb)
            .into_iter()
            .filter(|h| h["name"].as_str().unwrap_or("").starts_with(site))
            .filter_map(|h| h["privateIp"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ips("east-"), ips("west-"));
    assert_eq!(ips("east-").len(), 2);
    // Both contexts were merged into the one kubeconfig.
    let kubeconfig = sb.read(".siteflow/kubeconfig");
    assert!(
        kubeconfig.contains("name: east") && kubeconfig.contains("name: west"),
        "{kubeconfig}"
    );
}

#[test]
fn seed_002_connects_an_existing_cluster_by_its_kubeconfig() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/sites/seed-002.yaml");
    let site = site.to_str().unwrap();
    let (code, out) = siteflow(&sb, &["run", "--site", site, "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    let doc = json_doc(&out);
    let step = |id: &str| step_of(&doc, id);
    assert_eq!(
        step("arc")["outputs"]["connectivity_status"],
        "Connected",
        "{doc:#}"
    );
    assert_eq!(
        step("flux")["outputs"]["compliance_state"],
        "Compliant",
        "{doc:#}"
    );
    assert_eq!(
        step("admin")["outputs"]["service_account"],
        "kube-system/siteflow-admin"
    );

    // The existing cluster, through its kubeconfig only (TLS against its own CA): the Arc
    // agents' chart, and what Flux fetched from git.
    let kc_path = info(&sb)["existingClusterKubeconfig"]
        .as_str()
        .unwrap()
        .to_string();
    let kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&kc_path).unwrap()).unwrap();
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            kc["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let ca_file = sb.path("existing-ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let admin = kc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |token: &str, path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca_file)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("{server}{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    };
    let (code, chart) = get(
        &admin,
        "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/azure-arc",
    );
    assert_eq!(code, "200", "{chart}");
    let (code, cm) = get(&admin, "/api/v1/namespaces/hello/configmaps/hello");
    assert_eq!(code, "200", "{cm}");
    assert!(cm.contains("reconciled by Flux"), "{cm}");

    // The service account's token is a cluster-admin's, and in no persisted byte.
    let (_, secret) = get(
        &admin,
        "/api/v1/namespaces/kube-system/secrets/siteflow-admin-token",
    );
    let secret: Value = serde_json::from_str(&secret).unwrap();
    let sa_token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        get(&sa_token, "/api/v1/namespaces/hello/configmaps/hello").0,
        "200"
    );
    assert!(
        !db_text(&sb).contains(&sa_token),
        "the token is in the state db"
    );

    // Again: nothing to do.
    let writes = arm_writes(&requests(&sb));
    let (code, out) = siteflow(&sb, &["run", "--site", site]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        arm_writes(&requests(&sb)),
        writes,
        "the second run wrote to ARM"
    );
}

#[test]
fn flux_bootstrap_commits_to_git_applies_and_converges_once() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let args = [
        "run",
        "provision-site",
        "--set",
        "name=boot",
        "--set",
        "flux_via=bootstrap",
        "--output",
        "json",
    ];
    let (code, out) = siteflow(&sb, &args);
    assert_eq!(code, 0, "{out}");
    let doc = json_doc(&out);
    assert_eq!(step_of(&doc, "flux")["status"], "Skipped", "{doc:#}");
    let boot = step_of(&doc, "flux-bootstrap");
    assert_eq!(boot["status"], "Succeeded", "{doc:#}");
    let commit = boot["outputs"]["commit"].as_str().unwrap().to_string();

    // The commit is in the sandbox's repository (pushed over HTTPS with the sandbox token).
    let bare = sb.path(".siteflow/sandbox/git/fleet.git");
    let git = |args: &[&str]| -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(git(&["rev-parse", "refs/heads/main"]), commit);
    let sync = git(&["show", "HEAD:clusters/edge/flux-system/gotk-sync.yaml"]);
    assert!(
        sync.contains("GitRepository") && sync.contains("https://"),
        "{sync}"
    );

    // Flux (the simulator's controllers) fetched that commit and applied the cluster folder.
    let server = host_of(&sb, "boot-server");
    let ip = server["publicIp"].as_str().unwrap();
    let ks = on_vm(
        &sb,
        "_nosite",
        "server",
        ip,
        "sudo k3s kubectl get kustomization flux-system -n flux-system -o json",
    );
    assert!(ks.contains(&format!("main@sha1:{commit}")), "{ks}");
    let cm = on_vm(
        &sb,
        "_nosite",
        "server",
        ip,
        "sudo k3s kubectl get configmap hello -n hello -o json",
    );
    assert!(cm.contains("reconciled by Flux"), "{cm}");
    let token = sb.read(".siteflow/sandbox/git-token");
    assert!(
        !db_text(&sb).contains(token.trim()),
        "the git token is in the state db"
    );

    // Again: nothing to commit, nothing to apply.
    let (code, out) = siteflow(&sb, &args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        git(&["rev-parse", "refs/heads/main"]),
        commit,
        "a second commit"
    );
    assert_eq!(git(&["rev-list", "--count", "HEAD"]), "2");
}

#[test]
fn seed_003_scale_set_agents_scale_out_then_in_draining_departed_nodes() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/sites/seed-003.yaml");
    let site = site.to_str().unwrap();
    let run = |size: &str| -> Value {
        let (code, out) = siteflow(
            &sb,
            &[
                "run",
                "--site",
                site,
                "--set",
                &format!("agent_pool_size={size}"),
                "--output",
                "json",
            ],
        );
        assert_eq!(code, 0, "{out}");
        json_doc(&out)
    };
    let pool_names = |doc: &Value| -> Vec<String> {
        step_of(doc, "pool")["outputs"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["computer_name"].as_str().unwrap().to_string())
            .collect()
    };
    let cluster_nodes = || -> Vec<String> {
        let server = host_of(&sb, "seed-003-server");
        let ip = server["publicIp"].as_str().unwrap();
        let out = on_vm(
            &sb,
            "seed-003",
            "server",
            ip,
            "sudo k3s kubectl get nodes -o json",
        );
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let mut names: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };

    let two = run("2");
    let first = pool_names(&two);
    assert_eq!(first.len(), 2, "{two:#}");
    // The seed's instances: spot B1ls with an S4 OS disk (32 GB of Standard HDD).
    let put = requests(&sb)
        .into_iter()
        .find(|e| {
            e["method"] == "PUT"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/virtualMachineScaleSets/seed-003-pool"))
        })
        .expect("the scale set's PUT");
    assert_eq!(put["body"]["sku"]["name"], "Standard_B1ls", "{put}");
    let model = &put["body"]["properties"]["virtualMachineProfile"];
    assert_eq!(model["priority"], "Spot");
    assert_eq!(
        model["storageProfile"]["osDisk"],
        json!({"createOption": "FromImage", "diskSizeGB": 32,
               "managedDisk": {"storageAccountType": "Standard_LRS"}})
    );
    // Each instance's first boot wrote the file share's mount unit (at the seed's /srv) and
    // its 0600 credentials (the key reached it only through cloud-init; the CIFS mount itself
    // needs Azure Files).
    let ip = host_of(&sb, &first[0])["publicIp"]
        .as_str()
        .unwrap()
        .to_string();
    let unit = on_console(&ip, "cat /etc/systemd/system/srv.mount");
    assert!(
        unit.contains("What=//seed003files.file.core.windows.net/data")
            && unit.contains("Where=/srv\n"),
        "{unit}"
    );
    let cred = on_console(
        &ip,
        "stat -c %a /etc/smbcredentials/seed003files-data.cred; cat /etc/smbcredentials/seed003files-data.cred",
    );
    let key = cred
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap_or_else(|| panic!("{cred}"))
        .to_string();
    assert!(cred.starts_with("600\nusername=seed003files\n"), "{cred}");
    assert!(
        !db_text(&sb).contains(&key),
        "the storage key is in the state database"
    );
    let mut want = vec!["seed-003-server".to_string()];
    want.extend(first.clone());
    want.sort();
    assert_eq!(cluster_nodes(), want);

    // Out to three: one more instance joins; nothing is drained.
    let three = run("3");
    let all = pool_names(&three);
    assert_eq!(all.len(), 3);
    assert_eq!(all[..2], first[..]);
    assert_eq!(
        step_of(&three, "pool-drain")["outputs"]["drained"],
        json!([])
    );
    assert_eq!(cluster_nodes().len(), 4);

    // In to one: the two newest are drained before their VMs go, then their nodes deleted;
    // their hosts are powered off and unlisted.
    let one = run("1");
    assert_eq!(pool_names(&one), all[..1]);
    let mut departed = all[1..].to_vec();
    departed.sort();
    assert_eq!(
        step_of(&one, "pool-drain")["outputs"]["drained"],
        json!(departed),
        "{one:#}"
    );
    assert_eq!(
        step_of(&one, "pool-prune")["outputs"]["deleted"],
        json!(departed)
    );
    let mut want = vec!["seed-003-server".to_string(), all[0].clone()];
    want.sort();
    assert_eq!(cluster_nodes(), want);
    for d in &departed {
        assert!(
            !hosts(&sb).iter().any(|h| h["name"] == d.as_str()),
            "{d} is still listed"
        );
    }

    // Again at one: nothing to do.
    let writes = arm_writes(&requests(&sb));
    run("1");
    assert_eq!(
        arm_writes(&requests(&sb)),
        writes,
        "a run at the same size wrote to ARM"
    );

    // pool-power: powering the set off really stops the instance's host (its sshd is gone),
    // a second power-off sends nothing, start brings it back.
    let ip = host_of(&sb, &all[0])["publicIp"]
        .as_str()
        .unwrap()
        .to_string();
    let ssh_up = || {
        std::net::TcpStream::connect_timeout(
            &format!("{ip}:22").parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_ok()
    };
    assert!(ssh_up());
    let power = |op: &str| {
        let set = format!("operation={op}");
        let (code, out) = siteflow(
            &sb,
            &["run", "pool-power", "--set", "name=seed-003", "--set", &set],
        );
        assert_eq!(code, 0, "{out}");
    };
    power("power_off");
    assert!(!ssh_up(), "the powered-off instance still answers");
    let before = requests(&sb).len();
    power("power_off");
    let writes = arm_writes(&requests(&sb)[before..]);
    assert!(writes.is_empty(), "{writes:?}");

    // The hourly reconcile with every pool instance stopped (as a spot eviction or pool-power
    // leaves them) succeeds: the instance is listed as stopped, no step reaches it (its sshd is
    // gone: one that tried would fail the run), `ready` does not wait for it, and its Node is
    // kept for when it runs again.
    let off = run("1");
    let pool = &step_of(&off, "pool")["outputs"];
    assert_eq!(pool["instances"][0]["power_state"], "stopped", "{pool:#}");
    assert_eq!(pool["running"], json!([]), "{pool:#}");
    let reached: Vec<&str> = off["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .filter(|id| id.starts_with("k3s-pool[") || id.starts_with("registries-pool["))
        .collect();
    assert!(reached.is_empty(), "{reached:?}");
    let prune = &step_of(&off, "pool-prune")["outputs"];
    assert_eq!(prune["nodes"], json!([all[0]]), "{prune:#}");
    assert_eq!(prune["deleted"], json!([]));
    assert!(cluster_nodes().contains(&all[0]));
    assert!(!ssh_up());

    power("start");
    assert!(
        wait_for(Duration::from_secs(20), ssh_up),
        "start left it off"
    );
    // Running again: the next reconcile reaches it and waits for its node to be Ready.
    let on = run("1");
    let pool = &step_of(&on, "pool")["outputs"];
    assert_eq!(
        pool["running"][0]["computer_name"],
        all[0].as_str(),
        "{pool:#}"
    );
    assert_eq!(
        step_of(&on, "k3s-pool[0]")["outputs"]["node_name"],
        all[0].as_str()
    );
    let ready = &step_of(&on, "ready")["outputs"]["nodes"];
    assert!(
        ready.as_array().unwrap().contains(&json!(all[0])),
        "{ready}"
    );

    // destroy-site: the group goes (its hosts powered off and unlisted), the site's keys and
    // kubeconfig entries are forgotten; a second destroy writes nothing.
    let destroy = format!("{}/sites/seed-003-destroy.yaml", workflows());
    let (code, out) = siteflow(&sb, &["run", "--site", &destroy]);
    assert_eq!(code, 0, "{out}");
    // (A delete ends only once the deleted VMs' hosts are off.)
    let gone = !hosts(&sb).iter().any(|h| {
        h["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("seed-003"))
    });
    assert!(gone, "{:?}", hosts(&sb));
    assert!(!sb.path(".siteflow/keys/seed-003").exists());
    assert!(!sb.read(".siteflow/kubeconfig").contains("seed-003"));
    assert!(!ssh_up());
    let before = requests(&sb).len();
    let (code, out) = siteflow(&sb, &["run", "--site", &destroy]);
    assert_eq!(code, 0, "{out}");
    let writes = arm_writes(&requests(&sb)[before..]);
    assert!(writes.is_empty(), "{writes:?}");
}

/// A root console on a sandbox host, through its namespaces (AKS nodes take no SSH login).
fn on_console(ip: &str, cmd: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
    let slot = ip.octets()[2];
    let index = (0..siteflow_testhosts::layout::MAX_HOSTS)
        .find(|i| siteflow_testhosts::layout::host_ip(slot, *i) == ip)
        .expect("a sandbox host's address");
    let out = Command::new("nsenter")
        .arg(format!(
            "--net=/run/netns/{}",
            siteflow_testhosts::layout::netns(slot, index)
        ))
        .arg(format!(
            "--mount={}",
            siteflow_testhosts::layout::mnt_pin(slot, index).display()
        ))
        .args(["--", "sh", "-c", cmd])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The nodes the cluster of this control plane knows: (name, agent pool).
fn aks_nodes(cp_ip: &str) -> Vec<(String, String)> {
    let text = on_console(cp_ip, "k3s kubectl get nodes -o json");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let mut nodes: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"]["kubernetes.azure.com/agentpool"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn seed_004_aks_cluster_has_real_nodes_scales_its_pool_and_again_changes_nothing() {
    let sb = Sandbox::new();
    let _down = Down(&sb);
    let site = format!("{}/sites/seed-004.yaml", workflows());
    let (code, out) = siteflow(&sb, &["run", "--site", &site, "--output", "json"]);
    assert_eq!(code, 0, "{out}");
    let aks = step_of(&json_doc(&out), "aks");
    let issuer = aks["outputs"]["oidc_issuer_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{aks}"))
        .to_string();
    let fic = step_of(&json_doc(&out), "federated-credential");
    assert_eq!(fic["outputs"]["issuer"], issuer.as_str(), "{fic}");

    // The managed cluster is a real (simulated) cluster: a control plane that is no node, a
    // node per pool member labelled with its pool, and the AKS issuer as its service-account
    // issuer.
    let cp = hosts(&sb)
        .into_iter()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("aks-controlplane-"))
        })
        .expect("a control plane host");
    let cp_ip = cp["publicIp"].as_str().unwrap().to_string();
    let nodes = aks_nodes(&cp_ip);
    let pools: Vec<&str> = nodes.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(pools, ["pool0", "pool1"], "{nodes:?}");
    assert!(nodes[0].0.starts_with("aks-pool0-") && nodes[0].0.ends_with("-vmss000000"));
    let args = on_console(
        &cp_ip,
        "cat /var/lib/rancher/k3s/server/sim/kube-apiserver-args",
    );
    assert!(
        args.contains(&format!("--service-account-issuer={issuer}")),
        "{args}"
    );
    // Flux through the microsoft.flux extension: Compliant only because the cluster's
    // extension manager fetched the sandbox's repository and applied it.
    assert_eq!(step_of(&json_doc(&out), "flux")["status"], "Succeeded");
    let hello = on_console(&cp_ip, "k3s kubectl get configmap hello -n hello -o json");
    assert!(hello.contains("\"hello\""), "{hello}");
    // Entra ID only: the merged context signs in with kubelogin.
    let kc = sb.read(".siteflow/kubeconfig");
    assert!(
        kc.contains("kubelogin") && kc.contains("capz-managed-aks"),
        "{kc}"
    );

    // Again: nothing written to ARM.
    let before = requests(&sb).len();
    let (code, out) = siteflow(&sb, &["run", "--site", &site]);
    assert_eq!(code, 0, "{out}");
    let writes = arm_writes(&requests(&sb)[before..]);
    assert!(writes.is_empty(), "{writes:?}");

    // Scale the User pool out: one agentPools PUT, a new node joins; back in: the node is
    // drained and deleted and its host powered off.
    for (size, expect) in [(2, 3), (1, 2)] {
        let before = requests(&sb).len();
        let set = format!("user_pool_size={size}");
        let (code, out) = siteflow(&sb, &["run", "--site", &site, "--set", &set]);
        assert_eq!(code, 0, "{out}");
        let writes = arm_writes(&requests(&sb)[before..]);
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(writes[0].starts_with("PUT ") && writes[0].contains("/agentPools/pool1"));
        let nodes = aks_nodes(&cp_ip);
        assert_eq!(
            nodes.len(),
            expect,
            "{nodes:?}\n{out}\n{}",
            sb.read(".siteflow/sandbox/sandbox.log")
        );
    }
    assert!(
        !hosts(&sb).iter().any(|h| h["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-vmss000001"))),
        "the departed node's host is still listed"
    );

    // Without Entra ID, the admin credential works against the cluster's API server (its
    // CA, its token), and the token is in neither the state database nor the emulator's log.
    let (code, out) = siteflow(
        &sb,
        &[
            "run",
            "--site",
            &site,
            "--set",
            "name=plain-aks",
            "--set",
            "aad_admin_group=",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let kc: Value = serde_saphyr::from_str(&sb.read(".siteflow/kubeconfig")).unwrap();
    let ctx = kc["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plain-aks-admin")
        .unwrap_or_else(|| panic!("{kc}"))
        .clone();
    let cluster = kc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == ctx["context"]["cluster"])
        .unwrap()["cluster"]
        .clone();
    let token = kc["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == ctx["context"]["user"])
        .unwrap()["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    std::fs::write(sb.path("plain-ca.pem"), ca).unwrap();
    let server = cluster["server"].as_str().unwrap();
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(sb.path("plain-ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{server}/api/v1/nodes"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!db_text(&sb).contains(&token));
    assert!(
        !serde_json::to_string(&requests(&sb))
            .unwrap()
            .contains(&token)
    );

    // Seed 000's management-tool principal next to the cluster (rancher-principal): an app
    // with its password in Key Vault, Contributor on the site's group, a managed identity
    // trusting the cluster's issuer; again, nothing is written (ARM, Graph, Key Vault).
    let issuer_set = format!("issuer={issuer}");
    let principal = [
        "run",
        "rancher-principal",
        "--set",
        "name=capz-managed-aks",
        "--set",
        &issuer_set,
        "--output",
        "json",
    ];
    let (code, out) = siteflow(&sb, &principal);
    assert_eq!(code, 0, "{out}");
    let fic = step_of(&json_doc(&out), "federated-credential");
    assert_eq!(fic["outputs"]["issuer"], issuer.as_str(), "{fic}");
    let before = requests(&sb).len();
    let (code, out) = siteflow(&sb, &principal);
    assert_eq!(code, 0, "{out}");
    let changes: Vec<String> = requests(&sb)[before..]
        .iter()
        .filter(|e| e["method"] != "GET" && !e["path"].as_str().unwrap_or("").contains("/token"))
        .map(|e| format!("{} {} {}", e["service"], e["method"], e["path"]))
        .collect();
    assert!(changes.is_empty(), "{changes:?}");

    // destroy-site: the group goes with the cluster, whose control plane and nodes are
    // powered off; its kubeconfig entries are forgotten (the other cluster's stay); a second
    // destroy writes nothing.
    let destroy = format!("{}/sites/seed-004-destroy.yaml", workflows());
    let (code, out) = siteflow(&sb, &["run", "--site", &destroy]);
    assert_eq!(code, 0, "{out}");
    // (A delete ends only once the cluster's hosts are off.)
    assert!(
        !hosts(&sb).iter().any(|h| h["name"] == cp["name"]),
        "{:?}",
        hosts(&sb)
    );
    let cp_down = || {
        std::net::TcpStream::connect_timeout(
            &format!("{cp_ip}:22").parse().unwrap(),
            Duration::from_secs(1),
        )
        .is_err()
    };
    assert!(
        wait_for(Duration::from_secs(10), cp_down),
        "the control plane still runs"
    );
    let kc = sb.read(".siteflow/kubeconfig");
    assert!(
        !kc.contains("capz-managed-aks") && kc.contains("plain-aks"),
        "{kc}"
    );
    let before = requests(&sb).len();
    let (code, out) = siteflow(&sb, &["run", "--site", &destroy]);
    assert_eq!(code, 0, "{out}");
    let writes = arm_writes(&requests(&sb)[before..]);
    assert!(writes.is_empty(), "{writes:?}");
}
