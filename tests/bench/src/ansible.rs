//! The Ansible peer of the `ssh` benchmark: the same commands on the same test hosts with
//! `ansible-playbook` (ansible-core, default settings), timed from outside.

use crate::prefect::workspace_root;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use siteflow_testhosts::TestNet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// What the issue measured for Ansible on this machine (10 hosts × 50 tasks).
pub const ISSUE_SECONDS: f64 = 181.6;

/// The peer's result.
pub struct AnsibleResult {
    /// `ansible-playbook --version`'s first line.
    pub version: String,
    /// Wall time of the `ansible-playbook` process.
    pub wall: Duration,
    /// `ok=` per host in the recap (every host should show the number of commands).
    pub ok_per_host: Vec<(String, u64)>,
    /// Hosts with `failed=` or `unreachable=` not 0.
    pub failed_hosts: Vec<String>,
    /// ControlPersist masters found and stopped after the run.
    pub masters_stopped: usize,
}

async fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().await.with_context(|| format!("run {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// `<workspace>/.ci/ansible-venv` with ansible-core installed; created if missing.
pub async fn ensure_venv() -> Result<PathBuf> {
    let venv = workspace_root().join(".ci/ansible-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("creating {} …", venv.display());
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )
        .await?;
    }
    if !venv.join("bin/ansible-playbook").exists() {
        eprintln!("installing ansible-core into {} …", venv.display());
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "ansible-core"])
                .stdout(Stdio::null()),
            "pip install ansible-core",
        )
        .await?;
    }
    Ok(venv)
}

/// Stops Ansible's ControlPersist masters (`ssh -O exit` on each socket in `dir`, then a
/// kill of any process left whose command line names `dir`) when dropped, so that none
/// outlives the run or the test hosts.
pub struct ControlMasters {
    dir: PathBuf,
    stopped: usize,
}

impl ControlMasters {
    /// Masters whose sockets live in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, stopped: 0 }
    }

    /// Stops them now; returns how many sockets were found.
    pub fn stop(&mut self) -> usize {
        let mut found = 0;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                found += 1;
                let _ = std::process::Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", e.path().display()))
                    .args(["-O", "exit", "siteflow-bench-peer"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Whatever still runs with our private control dir on its command line is ours.
        let needle = self.dir.display().to_string();
        let me = std::process::id().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let pid = p.file_name().to_string_lossy().into_owned();
                if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                    continue;
                };
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        self.stopped += found;
        found
    }
}

impl Drop for ControlMasters {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `commands` × `ansible.builtin.command: true` on every host of `net` with
/// `ansible-playbook`, bounded by `timeout`.
pub async fn run_peer(net: &TestNet, commands: usize, timeout: Duration) -> Result<AnsibleResult> {
    let venv = ensure_venv().await?;
    let work = tempfile::Builder::new()
        .prefix("siteflow-bench-ansible-")
        .tempdir()?;
    // Short: a ControlPath must fit in a Unix socket address (108 bytes).
    let cp_dir = work.path().join("cp");
    std::fs::create_dir_all(&cp_dir)?;
    let mut masters = ControlMasters::new(cp_dir.clone());

    // The generator writes inventory, playbook and an empty config.
    let hosts: Vec<Value> = net
        .hosts
        .iter()
        .map(|h| {
            json!({
                "name": h.name,
                "ip": h.ip.to_string(),
                "user": h.user_nopasswd,
                "private_key_file": h.client_key_path.display().to_string(),
                "known_hosts": h.known_hosts_path.display().to_string(),
            })
        })
        .collect();
    let hosts_json = work.path().join("hosts.json");
    std::fs::write(&hosts_json, serde_json::to_vec(&hosts)?)?;
    let gen_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ansible_gen.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(&gen_script)
        .arg("--hosts-json")
        .arg(&hosts_json)
        .arg("--commands")
        .arg(commands.to_string())
        .arg("--out")
        .arg(work.path())
        .output()
        .await
        .context("run peers/ansible_gen.py")?;
    if !out.status.success() {
        bail!(
            "peers/ansible_gen.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let files: Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("PEER_FILES "))
            .context("peers/ansible_gen.py printed no PEER_FILES line")?,
    )?;
    let file = |k: &str| files.get(k).and_then(Value::as_str).unwrap_or_default();

    let version = Command::new(venv.join("bin/ansible-playbook"))
        .arg("--version")
        .env("ANSIBLE_CONFIG", file("config"))
        .output()
        .await
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|_| "?".into());

    let mut cmd = Command::new(venv.join("bin/ansible-playbook"));
    cmd.arg("-i")
        .arg(file("inventory"))
        .arg(file("playbook"))
        .current_dir(work.path());
    // No influence from the caller's environment: drop every ANSIBLE_* variable, then set
    // only the empty config, strict host-key checking and a private control-socket dir
    // (the default ControlPersist=60s masters, just in a place we can clean up).
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANSIBLE_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("ANSIBLE_CONFIG", file("config"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &cp_dir)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let t = Instant::now();
    let child = cmd.spawn().context("start ansible-playbook")?;
    let pgid = child.id();
    let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let wall = t.elapsed();
    let output = match result {
        Ok(o) => o?,
        Err(_) => {
            // Its forks are in its process group: end them all, then the masters.
            if let Some(pgid) = pgid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pgid}")])
                    .status();
            }
            masters.stop();
            bail!("ansible-playbook did not finish within {timeout:?}");
        }
    };
    let masters_stopped = masters.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // PLAY RECAP lines: `node1 : ok=50 changed=50 unreachable=0 failed=0 …`.
    let mut ok_per_host = vec![];
    let mut failed_hosts = vec![];
    for line in stdout.lines() {
        let Some((host, rest)) = line.split_once(" : ") else {
            continue;
        };
        if !rest.trim_start().starts_with("ok=") {
            continue;
        }
        let field = |name: &str| -> u64 {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let host = host.trim().to_string();
        if field("failed=") > 0 || field("unreachable=") > 0 {
            failed_hosts.push(host.clone());
        }
        ok_per_host.push((host, field("ok=")));
    }
    if !output.status.success() || ok_per_host.is_empty() {
        let tail: Vec<&str> = stdout.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "ansible-playbook failed ({}):\n{}\n{}",
            output.status,
            tail.join("\n"),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(AnsibleResult {
        version,
        wall,
        ok_per_host,
        failed_hosts,
        masters_stopped,
    })
}
