//! The local sandbox: an offline Azure for workflows when no subscription is configured.
//!
//! `siteflow sandbox up` starts a daemon (`siteflow sandbox serve`, detached, logging to
//! `.siteflow/sandbox/sandbox.log`) holding the Azure emulator, a network of test hosts and
//! a git daemon. Every VM the emulator creates is backed by a real OpenSSH host in its own
//! network and mount namespace, with the VM's host key from its cloud-init, its admin key,
//! its private address on a virtual network and the k3s simulator ready to install. The
//! daemon outlives the command that started it, so a crashed run can be resumed against the
//! same Azure; `siteflow sandbox down` removes everything. Needs root (namespaces).

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use siteflow_azure_emulator::{
    Emulator, EmulatorConfig, PowerChange, VmBacking, VmCreated, hook_fns_with_power,
};
use siteflow_testhosts::{TestNet, VmHostSpec};

use crate::Failure;

/// Where a running sandbox is, as `sandbox.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// The daemon's process id.
    pub pid: u32,
    /// The emulator (ARM, Entra, Key Vault, Graph, Arc data plane).
    pub base_url: String,
    /// The emulator's CA certificate.
    pub ca_pem_path: String,
    /// Entra tenant.
    pub tenant_id: String,
    /// Subscription.
    pub subscription_id: String,
    /// The service principal siteflow logs in as.
    pub client_id: String,
    /// A 0600 file with its secret.
    pub client_secret_file: String,
    /// The git repository Flux configurations can point at (`git://`, read only).
    pub git_url: String,
    /// The same repository over HTTPS (the emulator's CA), cloned and pushed with the token
    /// in `env_files["GIT_TOKEN"]`, for `flux.bootstrap`.
    #[serde(default)]
    pub git_https_url: String,
    /// The test net's subnet (the VMs' public addresses).
    pub public_subnet: String,
    /// Where the daemon lists the VMs' hosts.
    pub hosts_file: String,
    /// The kubeconfig of an existing (non-Azure) k3s cluster the sandbox runs, for workflows
    /// that take a cluster by kubeconfig (`connect-cluster`, seed 002).
    #[serde(default)]
    pub existing_cluster_kubeconfig: String,
    /// The `--set` values that point a workflow at this sandbox.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Files (0600) standing in for unset environment variables secrets name: `GIT_TOKEN`,
    /// the token of the sandbox's git server.
    #[serde(default)]
    pub env_files: std::collections::BTreeMap<String, PathBuf>,
}

/// The sandbox directory of a working directory.
pub fn dir() -> PathBuf {
    PathBuf::from(".siteflow/sandbox")
}

fn info_path(dir: &Path) -> PathBuf {
    dir.join("sandbox.json")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The running sandbox of `dir`, if any.
pub fn running(dir: &Path) -> Option<SandboxInfo> {
    let text = std::fs::read_to_string(info_path(dir)).ok()?;
    let info: SandboxInfo = serde_json::from_str(&text).ok()?;
    alive(info.pid).then_some(info)
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure::new(1, msg)
}

/// What the sandbox needs from the machine: (a file it runs, the Debian package with it).
const NEEDS: &[(&str, &str)] = &[
    ("/usr/sbin/sshd", "openssh-server"),
    ("/usr/bin/ssh-keygen", "openssh-client"),
    ("/usr/bin/sudo", "sudo"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/bin/git", "git"),
    ("/usr/sbin/ip", "iproute2"),
];

/// Installs the Debian packages the sandbox needs and lacks (as root, with apt-get), so the
/// main command works on a fresh machine; elsewhere, says what to install.
async fn install_prerequisites() -> Result<(), Failure> {
    let missing: Vec<&str> = NEEDS
        .iter()
        .filter(|(file, _)| {
            // `ip` and `git` may live elsewhere on PATH.
            let elsewhere = match *file {
                "/usr/sbin/ip" => Path::new("/usr/bin/ip").exists(),
                "/usr/bin/git" => Path::new("/usr/local/bin/git").exists(),
                _ => false,
            };
            !Path::new(file).exists() && !elsewhere
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    if !root || !Path::new("/usr/bin/apt-get").exists() {
        return Err(fail(format!(
            "error: the sandbox needs {} (as root: apt-get install -y {})",
            missing.join(", "),
            missing.join(" ")
        )));
    }
    eprintln!("installing what the sandbox needs: {}", missing.join(" "));
    let script = format!(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} >/dev/null",
        missing.join(" ")
    );
    let status = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .status()
        .await
        .map_err(|e| fail(format!("error: apt-get: {e}")))?;
    if !status.success() {
        return Err(fail(format!(
            "error: installing {} failed ({status})",
            missing.join(" ")
        )));
    }
    Ok(())
}

/// Starts the sandbox daemon unless one runs; returns where it is.
pub async fn up(dir: &Path) -> Result<SandboxInfo, Failure> {
    if let Some(info) = running(dir) {
        return Ok(info);
    }
    install_prerequisites().await?;
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("error: {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(info_path(dir));
    let log_path = dir.join("sandbox.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| fail(format!("error: {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(|e| fail(format!("error: {e}")))?;
    let mut child = std::process::Command::new(exe)
        .args(["sandbox", "serve", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(log)
        // Its own process group: Ctrl-C in the terminal stops the run, not the sandbox.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("error: start the sandbox: {e}")))?;
    eprintln!(
        "starting the local sandbox (Azure emulator + test hosts; log: {})",
        log_path.display()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(info) = running(dir)
            && info.pid == child.id()
        {
            return Ok(info);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(fail(format!(
                "error: the sandbox exited ({status}):\n{}",
                tail.lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(fail("error: the sandbox did not start within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the sandbox of `dir` (its hosts, emulator and git daemon); returns whether one ran.
pub async fn down(dir: &Path) -> Result<bool, Failure> {
    let Some(info) = running(dir) else {
        let _ = std::fs::remove_file(info_path(dir));
        return Ok(false);
    };
    let pid = nix::unistd::Pid::from_raw(info.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| fail(format!("error: stop the sandbox (pid {}): {e}", info.pid)))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alive(info.pid) {
        if tokio::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(info_path(dir));
    Ok(true)
}

/// Prints where things are.
pub fn describe(info: &SandboxInfo) -> String {
    let hosts = std::fs::read_to_string(&info.hosts_file).unwrap_or_else(|_| "[]".into());
    let hosts: Vec<serde_json::Value> = serde_json::from_str(&hosts).unwrap_or_default();
    let mut s = format!(
        "sandbox (pid {})\n  Azure emulator  {}  (CA {})\n  subscription    {}\n  git             {}  {}  (token: GIT_TOKEN, or {})\n  hosts           {} (VMs' public addresses on {})\n",
        info.pid,
        info.base_url,
        info.ca_pem_path,
        info.subscription_id,
        info.git_url,
        info.git_https_url,
        info.env_files
            .get("GIT_TOKEN")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        hosts.len(),
        info.public_subnet
    );
    for h in hosts {
        s.push_str(&format!(
            "    {:<20} public {:<15} private {}\n",
            h["name"].as_str().unwrap_or(""),
            h["publicIp"].as_str().unwrap_or(""),
            h["privateIp"].as_str().unwrap_or("")
        ));
    }
    if !info.existing_cluster_kubeconfig.is_empty() {
        s.push_str(&format!(
            "  existing cluster  kubeconfig {}\n",
            info.existing_cluster_kubeconfig
        ));
    }
    s.push_str("  tear down       siteflow sandbox down\n");
    s
}

/// Every `--set` value that points a workflow at the sandbox: its `azure` connection,
/// `key_vault_url`, `git_url`, `acr_registry(_url)`, `admin_cidr` and `install_script_path` inputs. The daemon
/// records them in `sandbox.json`, so other programs (the benchmark) use the same ones.
fn all_sets(info: &SandboxInfo) -> Vec<String> {
    vec![
        format!("azure.subscription={}", info.subscription_id),
        "azure.cloud.name=custom".to_string(),
        format!("azure.cloud.arm_url={}", info.base_url),
        format!("azure.cloud.authority_host={}", info.base_url),
        format!("azure.cloud.graph_url={}", info.base_url),
        format!("azure.cloud.ca_pem_file={}", info.ca_pem_path),
        "azure.credential.kind=client_secret".to_string(),
        format!("azure.credential.tenant_id={}", info.tenant_id),
        format!("azure.credential.client_id={}", info.client_id),
        format!(
            "azure.credential.client_secret_file={}",
            info.client_secret_file
        ),
        format!("key_vault_url={}", info.base_url),
        format!("git_url={}", info.git_url),
        format!("git_push_url={}", info.git_https_url),
        format!("git_ca_file={}", info.ca_pem_path),
        format!("cluster_kubeconfig={}", info.existing_cluster_kubeconfig),
        // The emulator's registry: every node pulls with a rotated ACR token.
        "acr_registry=sandbox.azurecr.io".to_string(),
        format!("acr_registry_url={}", info.base_url),
        format!("admin_cidr={}", info.public_subnet),
        // The sandbox's VM image is air-gapped: k3s and its install script are on it.
        format!("install_script_path={}", siteflow_testhosts::INSTALL_SCRIPT),
    ]
}

/// The sandbox's `--set` values for the inputs a workflow declares.
pub fn sets(info: &SandboxInfo, declared: &[String]) -> Vec<String> {
    info.sets
        .iter()
        .filter(|s| {
            let name = s.split(['=', '.']).next().unwrap_or_default();
            declared.iter().any(|d| d == name)
        })
        .cloned()
        .collect()
}

/// The ed25519 host key a VM's cloud-init installs (`ssh_keys: ed25519_private: |`).
fn cloud_init_host_key(user_data: &str) -> Option<String> {
    let mut lines = user_data.lines();
    lines.position(|l| l.trim() == "ed25519_private: |")?;
    let mut key = String::new();
    for l in lines {
        if !l.starts_with("    ") {
            break;
        }
        key.push_str(l.trim());
        key.push('\n');
    }
    key.contains("PRIVATE KEY").then_some(key)
}

/// A bare repository with a first commit under `clusters/edge`, for Flux configurations, in
/// `dir` (created if missing). Blocking.
fn seed_git(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let bare = dir.join("fleet.git");
    if bare.exists() {
        return Ok(());
    }
    let work = dir.join("fleet-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("clusters/edge")).map_err(|e| e.to_string())?;
    std::fs::write(
        work.join("clusters/edge/hello.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: hello\ndata:\n  message: reconciled by Flux from the sandbox's git repository\n",
    )
    .map_err(|e| e.to_string())?;
    let git = |cwd: &Path, args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("git")
            .current_dir(cwd)
            .args(args)
            .env("GIT_AUTHOR_NAME", "siteflow sandbox")
            .env("GIT_AUTHOR_EMAIL", "sandbox@siteflow.invalid")
            .env("GIT_COMMITTER_NAME", "siteflow sandbox")
            .env("GIT_COMMITTER_EMAIL", "sandbox@siteflow.invalid")
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "sandbox fleet"])?;
    git(dir, &["clone", "-q", "--bare", "fleet-work", "fleet.git"])?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A host of the sandbox as `hosts.json` lists it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostEntry {
    pub(crate) name: String,
    /// The resource it backs (a VM, a scale-set instance, `<managed cluster>/nodes/<node>`).
    pub(crate) vm_id: String,
    pub(crate) public_ip: String,
    pub(crate) private_ip: String,
    pub(crate) host_key_fingerprint: String,
    /// The root-namespace ends of its links (public, and virtual network), for fault tests.
    pub(crate) veth: String,
    pub(crate) vnet_veth: String,
}

impl HostEntry {
    /// Whether this host backs the resource `id` (ids compare ignoring case).
    fn backs(&self, id: &str) -> bool {
        self.vm_id.eq_ignore_ascii_case(id)
    }
}

/// The daemon: runs until SIGTERM or SIGINT.
pub async fn serve(dir: &Path) -> Result<(), Failure> {
    let dir = std::path::absolute(dir).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    siteflow_testhosts::set_simulator_embedded();
    let _ = siteflow_testhosts::cleanup_stale();
    let net =
        TestNet::empty().map_err(|e| fail(format!("error: the sandbox's test net: {e:#}")))?;
    let gateway = net.gateway_ip;
    let public_subnet = net.subnet.clone();
    let net = Arc::new(tokio::sync::Mutex::new(net));
    let hosts = Arc::new(
        Hosts::create(dir.join("hosts.json"))
            .await
            .map_err(|e| fail(e.to_string()))?,
    );

    let hook = {
        let (net, hosts) = (net.clone(), hosts.clone());
        let released = {
            let (net, hosts) = (net.clone(), hosts.clone());
            // A deleted VM (a scale-in, a delete): its host is powered off and unlisted.
            move |resource_id: String| {
                let (net, hosts) = (net.clone(), hosts.clone());
                async move {
                    let name = hosts
                        .change(|h| {
                            let at = h.iter().position(|e| e.backs(&resource_id))?;
                            Some(h.remove(at).name)
                        })
                        .await;
                    let Some(name) = name else { return };
                    let n = net.lock().await;
                    if let Some(host) = n.hosts.iter().find(|x| x.name == name) {
                        let _ = host.stop().await;
                        eprintln!("released VM {name}: its host is powered off");
                    }
                }
            }
        };
        let power = {
            let (net, hosts) = (net.clone(), hosts.clone());
            // A power action: the VM's host really stops or starts. A reimage restarts it; the
            // host's disk is not reset (its private directories persist), see the README.
            move |resource_id: String, change: PowerChange| {
                let (net, hosts) = (net.clone(), hosts.clone());
                async move {
                    let Some(name) = hosts.name_of(&resource_id).await else {
                        return Ok(());
                    };
                    let n = net.lock().await;
                    let Some(host) = n.hosts.iter().find(|x| x.name == name) else {
                        return Ok(());
                    };
                    let result = match change {
                        PowerChange::PowerOff | PowerChange::Deallocate => host.stop().await,
                        PowerChange::Start => host.start().await,
                        PowerChange::Restart | PowerChange::Reimage => host.restart().await,
                    };
                    eprintln!("VM {name}: {change:?}");
                    result.map_err(|e| format!("{e:#}"))
                }
            }
        };
        hook_fns_with_power(
            move |vm: VmCreated| {
                let (net, hosts) = (net.clone(), hosts.clone());
                async move {
                    if vm
                        .admin_username
                        .as_deref()
                        .is_some_and(|u| u != "azureuser")
                    {
                        return Err(format!(
                            "the sandbox backs VMs whose admin user is azureuser, not {:?}",
                            vm.admin_username
                        ));
                    }
                    let private = match vm.private_ip {
                        Some(IpAddr::V4(ip)) => Some(ip),
                        _ => None,
                    };
                    let spec = VmHostSpec {
                        name: vm.computer_name.clone(),
                        authorized_keys: vm.ssh_public_keys.clone(),
                        host_key_private: vm.custom_data.as_deref().and_then(cloud_init_host_key),
                        private_ip: private,
                        // One link per VNet: another site's 10.0.1.5 is not this one's.
                        network: vm.subnet_id.as_deref().and_then(|s| {
                            s.to_ascii_lowercase()
                                .split("/subnets/")
                                .next()
                                .map(str::to_string)
                        }),
                        preload_k3s_simulator: true,
                    };
                    // The net is held only to reserve and to list the host: VMs of many
                    // sites are created at once.
                    let reservation = net
                        .lock()
                        .await
                        .reserve_vm_host(spec)
                        .map_err(|e| format!("{e:#}"))?;
                    let host = reservation.build().await.map_err(|e| format!("{e:#}"))?;
                    host.install_k3s_simulator()
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    for f in crate::first_boot::write_files(vm.custom_data.as_deref().unwrap_or(""))
                    {
                        host.write_file(&f.path, f.content.as_bytes(), f.mode)
                            .await
                            .map_err(|e| format!("{e:#}"))?;
                    }
                    let mut n = net.lock().await;
                    let host = n.adopt(host).map_err(|e| format!("{e:#}"))?;
                    let entry = HostEntry {
                        name: vm.computer_name.clone(),
                        vm_id: vm.resource_id.clone(),
                        public_ip: host.ip.to_string(),
                        private_ip: private.map(|p| p.to_string()).unwrap_or_default(),
                        host_key_fingerprint: host.host_key_fingerprint.clone(),
                        veth: host.veth(),
                        vnet_veth: host.vnet_veth(),
                    };
                    let public = IpAddr::V4(host.ip);
                    drop(n);
                    hosts.change(|h| h.push(entry)).await;
                    eprintln!(
                        "backed VM {} with a test host at {public}",
                        vm.computer_name
                    );
                    Ok(VmBacking {
                        private_ip: vm.private_ip.unwrap_or(public),
                        public_ip: Some(public),
                    })
                }
            },
            released,
            power,
        )
    };

    let scale: f64 = std::env::var("SITEFLOW_SANDBOX_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.05);
    let config = EmulatorConfig {
        ca_pem_path: Some(dir.join("ca.pem")),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::builder()
        .config(config)
        .time_scale(scale)
        .listen_ip(gateway.into())
        .vm_backing_hook(hook)
        .cluster_backing_hook(Arc::new(crate::sandbox_aks::Clusters::new(
            net.clone(),
            hosts.clone(),
            dir.join("ca.pem"),
        )))
        .start()
        .await
        .map_err(|e| fail(format!("error: the Azure emulator: {e}")))?;

    let existing_cluster_kubeconfig = existing_cluster(&net, &hosts, &dir)
        .await
        .map_err(|e| fail(format!("error: the sandbox's existing cluster: {e}")))?;

    let git_dir = dir.join("git");
    let seeded = git_dir.clone();
    // git and the file system block: off the runtime.
    tokio::task::spawn_blocking(move || seed_git(&seeded))
        .await
        .map_err(|e| e.to_string())
        .and_then(|seeded| seeded)
        .map_err(|e| fail(format!("error: the sandbox's git repository: {e}")))?;
    let port = std::net::TcpListener::bind((gateway, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| fail(e.to_string()))?
        .port();
    let mut git_daemon = tokio::process::Command::new("git")
        .args([
            "daemon".to_string(),
            "--reuseaddr".into(),
            "--export-all".into(),
            format!("--base-path={}", git_dir.display()),
            format!("--listen={gateway}"),
            format!("--port={port}"),
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("error: git daemon: {e}")))?;
    // The same repositories over HTTPS, behind a token (pushes need it).
    let git_token_file = dir.join("git-token");
    let git_token = match std::fs::read_to_string(&git_token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 20];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").map_err(|e| fail(e.to_string()))?,
                &mut bytes,
            )
            .map_err(|e| fail(e.to_string()))?;
            let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&git_token_file, &t).map_err(|e| fail(e.to_string()))?;
            t
        }
    };
    let https_listener = tokio::net::TcpListener::bind((gateway, 0))
        .await
        .map_err(|e| fail(format!("error: the sandbox's git server: {e}")))?;
    let https_port = https_listener
        .local_addr()
        .map_err(|e| fail(e.to_string()))?
        .port();
    let git_server = tokio::spawn(crate::gitserve::serve(
        https_listener,
        emu.tls_server_config(),
        Arc::new(crate::gitserve::GitServer {
            root: git_dir.clone(),
            token: git_token,
        }),
    ));

    let principal = emu
        .config()
        .principals
        .first()
        .cloned()
        .ok_or_else(|| fail("no principal"))?;
    let secret_file = dir.join("client-secret");
    write_private(&secret_file, &principal.client_secret).map_err(|e| fail(e.to_string()))?;
    let info = SandboxInfo {
        pid: std::process::id(),
        base_url: emu.base_url().to_string(),
        ca_pem_path: emu.ca_pem_path().display().to_string(),
        tenant_id: emu.tenant_id().to_string(),
        subscription_id: emu.subscription_id().to_string(),
        client_id: principal.client_id.clone(),
        client_secret_file: secret_file.display().to_string(),
        git_url: format!("git://{gateway}:{port}/fleet.git"),
        git_https_url: format!("https://{gateway}:{https_port}/fleet.git"),
        env_files: [("GIT_TOKEN".to_string(), git_token_file.clone())].into(),
        public_subnet,
        hosts_file: hosts.file.display().to_string(),
        existing_cluster_kubeconfig: existing_cluster_kubeconfig.display().to_string(),
        sets: Vec::new(),
    };
    let info = SandboxInfo {
        sets: all_sets(&info),
        ..info
    };
    let tmp = dir.join("sandbox.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(&info).unwrap_or_default(),
    )
    .and_then(|_| std::fs::rename(&tmp, info_path(&dir)))
    .map_err(|e| fail(e.to_string()))?;
    eprintln!("sandbox ready:\n{}", describe(&info));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| fail(e.to_string()))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("sandbox stopping");
    let _ = git_daemon.kill().await;
    git_server.abort();
    emu.shutdown().await;
    let net = Arc::try_unwrap(net).map(|m| m.into_inner());
    drop(net);
    let _ = std::fs::remove_file(info_path(&dir));
    Ok(())
}

/// An existing cluster that is no Azure VM and that siteflow cannot SSH to: a k3s server on a
/// test host of the public net; its admin kubeconfig (the cluster CA, a token) is written to
/// `existing-cluster.kubeconfig` (0600) with the host's address.
async fn existing_cluster(
    net: &tokio::sync::Mutex<TestNet>,
    hosts: &Hosts,
    dir: &Path,
) -> Result<PathBuf, String> {
    let mut n = net.lock().await;
    let host = n
        .add_vm_host(VmHostSpec {
            name: "existing-cluster".into(),
            authorized_keys: Vec::new(),
            host_key_private: None,
            private_ip: None,
            network: None,
            preload_k3s_simulator: true,
        })
        .await
        .map_err(|e| format!("{e:#}"))?;
    host.install_k3s_simulator()
        .await
        .map_err(|e| format!("{e:#}"))?;
    host.install_k3s(&[], &[])
        .await
        .map_err(|e| format!("{e:#}"))?;
    let kubeconfig = host
        .read_file("/etc/rancher/k3s/k3s.yaml")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let kubeconfig = String::from_utf8_lossy(&kubeconfig)
        .replace("https://127.0.0.1:", &format!("https://{}:", host.ip))
        .replace("name: default", "name: existing-cluster")
        .replace("cluster: default", "cluster: existing-cluster")
        .replace("user: default", "user: existing-cluster")
        .replace(
            "current-context: default",
            "current-context: existing-cluster",
        );
    let path = dir.join("existing-cluster.kubeconfig");
    write_private(&path, &kubeconfig).map_err(|e| e.to_string())?;
    let entry = HostEntry {
        name: "existing-cluster".into(),
        vm_id: String::new(),
        public_ip: host.ip.to_string(),
        private_ip: String::new(),
        host_key_fingerprint: host.host_key_fingerprint.clone(),
        veth: host.veth(),
        vnet_veth: host.vnet_veth(),
    };
    drop(n);
    hosts.change(|h| h.push(entry)).await;
    Ok(path)
}

/// The sandbox's hosts, and `hosts.json` listing them for the CLI and tests.
pub(crate) struct Hosts {
    list: tokio::sync::Mutex<Vec<HostEntry>>,
    file: PathBuf,
}

impl Hosts {
    /// No hosts yet; writes the empty list.
    async fn create(file: PathBuf) -> std::io::Result<Hosts> {
        let hosts = Hosts {
            list: Default::default(),
            file,
        };
        hosts.write(&[]).await?;
        Ok(hosts)
    }

    /// Changes the list and rewrites the file (best effort). The file is written while the
    /// list is locked, so it never goes back to an older list than one written before.
    pub(crate) async fn change<R>(&self, change: impl FnOnce(&mut Vec<HostEntry>) -> R) -> R {
        let mut list = self.list.lock().await;
        let out = change(&mut list);
        let _ = self.write(&list).await;
        out
    }

    /// The name of the host backing `resource_id`, if listed.
    async fn name_of(&self, resource_id: &str) -> Option<String> {
        let list = self.list.lock().await;
        list.iter()
            .find(|e| e.backs(resource_id))
            .map(|e| e.name.clone())
    }

    /// Replaces the file (readers never see half a list).
    async fn write(&self, list: &[HostEntry]) -> std::io::Result<()> {
        let tmp = self.file.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(list).unwrap_or_default();
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, &self.file).await
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_from_cloud_init() {
        let ud = "#cloud-config\nssh_deletekeys: true\nssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    abc\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: ssh-ed25519 AAAA\n";
        let k = cloud_init_host_key(ud).unwrap();
        assert_eq!(
            k,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        assert!(cloud_init_host_key("#cloud-config\n").is_none());
    }
}
