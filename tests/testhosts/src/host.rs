//! One test host: a real `sshd` in its own network, mount and UTS namespaces, with lifecycle
//! (stop/start/restart), link cuts and helpers to look inside it from the test.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::cleanup::{kill_netns_processes, netns_pids};
use crate::command::{run_async, shell_quote};
use crate::hostfs::{self, private_location};
use crate::layout;

/// PATH inside a host for commands the harness runs there.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A test host. Owned by its [`crate::TestNet`], which tears it down.
#[derive(Debug, Serialize)]
pub struct TestHost {
    /// Position in [`crate::TestNet::hosts`].
    pub index: usize,
    /// Host name inside the host (`node1`, `node2`, ...); also what `k3s` uses as node name.
    pub name: String,
    /// Address on the harness subnet, reachable from the test and from the other hosts.
    pub ip: Ipv4Addr,
    /// SSH port (22).
    pub port: u16,
    /// The host's ed25519 public key line (`ssh-ed25519 AAAA... root@nodeN`).
    pub host_key_public: String,
    /// SHA256 fingerprint of the host key (`SHA256:...`).
    pub host_key_fingerprint: String,
    /// Private key (ed25519, no passphrase) authorized for every user on every host.
    pub client_key_path: PathBuf,
    /// A known_hosts file listing every host of the net by IP.
    pub known_hosts_path: PathBuf,
    /// A login with passwordless sudo.
    pub user_nopasswd: String,
    /// A login whose sudo requires [`TestHost::password`].
    pub user_passwd: String,
    /// Password of `user_passwd` (for `sudo -S`).
    pub password: String,
    /// Network namespace (`ip netns` name).
    pub netns: String,
    #[serde(skip)]
    pub(crate) slot: u8,
    #[serde(skip)]
    pub(crate) dir: PathBuf,
    #[serde(skip)]
    pub(crate) sshd: Mutex<Option<Child>>,
}

impl TestHost {
    /// `ip:port` of the host's sshd.
    pub fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// Root-namespace end of the host's veth (what [`TestHost::cut`] takes down).
    pub fn veth(&self) -> String {
        layout::veth(self.slot, self.index)
    }

    /// Root-namespace end of the host's link to the net's virtual network (its `eth1`, when
    /// it has a private address).
    pub fn vnet_veth(&self) -> String {
        layout::vnet_veth(self.slot, self.index)
    }

    /// Directory on the machine with this host's private state (overlay upper dirs, /run, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the host's file `path` can be read from the test (root namespace).
    ///
    /// Files below the private dirs (`/etc`, `/var`, `/home`, `/root`, `/usr/local`, `/opt`,
    /// `/srv`, `/run`, `/tmp`) map into the host's directory; for overlay dirs, a file the host
    /// never wrote falls back to the machine's own path. Other paths are shared and returned
    /// unchanged. For reading only: write through [`TestHost::write_file`].
    pub fn root_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match private_location(&self.dir, path) {
            Some((private, true)) if !private.exists() => path.to_owned(),
            Some((private, _)) => private,
            None => path.to_owned(),
        }
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(format!(
                "--mount={}",
                layout::mnt_pin(self.slot, self.index).display()
            ))
            .arg(format!(
                "--uts={}",
                layout::uts_pin(self.slot, self.index).display()
            ))
            .arg("--")
            .env_clear()
            .env("PATH", HOST_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("USER", "root")
            .env("LOGNAME", "root");
        cmd
    }

    /// Runs `sh -c cmd` as root inside the host's namespaces (like a root console on the VM)
    /// and returns its output whatever its exit status.
    pub async fn exec_local(&self, cmd: &str) -> Result<Output> {
        self.exec_local_with_input(cmd, &[]).await
    }

    /// [`TestHost::exec_local`] that fails unless the command exits 0; returns its stdout.
    ///
    /// The error quotes `cmd`: pass secrets on stdin ([`TestHost::exec_local_with_input`]),
    /// never in `cmd` (it is also the shell's argv, visible in `ps`).
    pub async fn exec_local_ok(&self, cmd: &str) -> Result<String> {
        let out = self.exec_local(cmd).await?;
        self.succeeded(&format!("`{cmd}`"), out)
    }

    /// `out`'s stdout if it exited 0, else an error naming `what` with its status and output.
    pub(crate) fn succeeded(&self, what: &str, out: Output) -> Result<String> {
        if !out.status.success() {
            bail!(
                "on {}: {what} failed ({}): {}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`TestHost::exec_local`] with `input` on the command's stdin.
    pub async fn exec_local_with_input(&self, cmd: &str, input: &[u8]) -> Result<Output> {
        let mut command = tokio::process::Command::from(self.nsenter());
        command
            .args(["/bin/sh", "-c", cmd])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot run nsenter")?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        let feed = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        Ok(out?)
    }

    /// Reads a file as the host sees it.
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let out = self
            .exec_local(&format!("cat {}", shell_quote(path)))
            .await?;
        if !out.status.success() {
            bail!(
                "on {}: cannot read {path}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// Writes a file inside the host (creating parent directories) with the given mode.
    pub async fn write_file(&self, path: &str, content: &[u8], mode: u32) -> Result<()> {
        let p = shell_quote(path);
        let cmd = format!(
            "mkdir -p \"$(dirname {p})\" && cat > {p}.sfth-tmp && chmod {mode:o} {p}.sfth-tmp && mv {p}.sfth-tmp {p}"
        );
        let out = self.exec_local_with_input(&cmd, content).await?;
        if !out.status.success() {
            bail!(
                "on {}: cannot write {path}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// An `ssh` command (system OpenSSH client) logged in as `user` with the test key and
    /// strict host-key checking against the net's known_hosts; append the remote command.
    pub fn ssh_command(&self, user: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(self.ssh_args(user));
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Arguments for the system `ssh` client (without the remote command).
    pub fn ssh_args(&self, user: &str) -> Vec<String> {
        vec![
            "-F".into(),
            "none".into(),
            "-i".into(),
            self.client_key_path.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts_path.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-p".into(),
            self.port.to_string(),
            format!("{user}@{}", self.ip),
        ]
    }

    /// Runs `cmd` over SSH as `user` (system `ssh` client) and returns its output.
    pub async fn ssh(&self, user: &str, cmd: &str) -> Result<Output> {
        Ok(self.ssh_command(user).arg(cmd).output().await?)
    }

    /// Whether this host's sshd process is running.
    pub fn is_running(&self) -> bool {
        let mut guard = self.sshd.lock().expect("sshd lock");
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Process ids of everything running in the host (its network namespace).
    pub fn pids(&self) -> Vec<i32> {
        netns_pids(&self.netns)
    }

    /// Powers the host on: starts sshd, waits until it answers, then starts the enabled
    /// services of the k3s simulator's `systemctl` stand-in, if installed.
    pub async fn start(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // Directories, the log file and the spawn are blocking calls: off the runtime.
        let (dir, mut sshd) = (self.dir.clone(), self.nsenter());
        let child = tokio::task::spawn_blocking(move || -> Result<Child> {
            hostfs::ensure_run_dir(&dir)?;
            let log = File::options()
                .create(true)
                .append(true)
                .open(dir.join("log/sshd.log"))?;
            sshd.args(["/usr/sbin/sshd", "-D", "-e"])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start sshd")
        })
        .await
        .context("starting sshd")??;
        *self.sshd.lock().expect("sshd lock") = Some(child);
        self.wait_for_sshd(Duration::from_secs(15)).await?;
        crate::sim_install::boot_services(self).await
    }

    async fn wait_for_sshd(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if !self.is_running() {
                bail!(
                    "sshd on {} exited: {}",
                    self.name,
                    tokio::fs::read_to_string(self.dir.join("log/sshd.log"))
                        .await
                        .unwrap_or_default()
                );
            }
            if banner(self.ssh_addr()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("sshd on {} did not answer within {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Powers the host off: every process in it dies (sshd, sessions, services); its disk
    /// (overlay dirs) is kept and its /run and /tmp are emptied.
    pub async fn stop(&self) -> Result<()> {
        // Waiting for the processes to die and emptying /run block: off the runtime.
        let sshd = self.sshd.lock().expect("sshd lock").take();
        let (netns, dir) = (self.netns.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            power_off(sshd, &netns);
            hostfs::reset_run_dir(&dir)
        })
        .await
        .context("stopping the host")?
    }

    /// Kills every process in the host, blocking until they are gone (for teardown).
    pub(crate) fn kill_all(&self) {
        power_off(self.sshd.lock().expect("sshd lock").take(), &self.netns);
    }

    /// Reboots the host ([`TestHost::stop`] then [`TestHost::start`]).
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Unplugs the host's network cable (link down): connections to and from it fail until
    /// [`TestHost::restore`].
    pub async fn cut(&self) -> Result<()> {
        run_async("ip", ["link", "set", &self.veth(), "down"]).await?;
        Ok(())
    }

    /// Plugs the cable back in after [`TestHost::cut`].
    pub async fn restore(&self) -> Result<()> {
        run_async("ip", ["link", "set", &self.veth(), "up"]).await?;
        Ok(())
    }
}

/// Kills a host's sshd (reaping it) and every other process in its network namespace
/// `netns`; blocks until they are gone.
fn power_off(sshd: Option<Child>, netns: &str) {
    if let Some(mut child) = sshd {
        let _ = child.kill();
        let _ = child.wait();
    }
    kill_netns_processes(netns);
}

/// Whether an SSH server answers at `addr` with its version banner.
async fn banner(addr: SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 8];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf.starts_with(b"SSH-"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}
