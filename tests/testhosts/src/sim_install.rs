//! Putting the k3s simulator onto a test host (binary, `systemctl` stand-in, install script) and
//! starting its enabled services when the host boots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use siteflow_step::quote::is_env_name;

use crate::command::shell_quote;
use crate::host::TestHost;
use crate::hostfs::private_location;

/// Directory inside a host with the simulator's "download cache".
pub const SIM_DIR: &str = "/usr/local/lib/k3s-sim";
/// The install script (stand-in for get.k3s.io) inside a host.
pub const INSTALL_SCRIPT: &str = "/usr/local/lib/k3s-sim/install.sh";
/// Marker file (inside a host) saying the simulator's `systemctl` stand-in is installed.
pub const STAND_IN_MARKER: &str = "/usr/local/lib/k3s-sim/systemctl-stand-in";
/// Directory (inside a host) where the `systemctl` stand-in keeps per-unit counters.
pub const STATS_DIR: &str = "/var/lib/systemd-sim";

const INSTALL_SH: &str = include_str!("../assets/k3s-install.sh");

static EMBEDDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that the running executable embeds the simulator (it calls [`crate::sim::main`] when
/// started under one of [`crate::sim::NAMES`]), so it can be installed as k3s itself.
pub fn set_simulator_embedded() {
    EMBEDDED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Where the `k3s-sim` executable is: `$SITEFLOW_K3S_SIM`, next to the running executable
/// (`target/<profile>/k3s-sim`, built by `cargo build/test -p siteflow-testhosts`), or the
/// running executable itself when it embeds the simulator.
pub fn k3s_sim_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SITEFLOW_K3S_SIM") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("k3s-sim");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if EMBEDDED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(exe);
    }
    bail!(
        "k3s-sim not found next to {}: run `cargo build -p siteflow-testhosts --bin k3s-sim` or set SITEFLOW_K3S_SIM",
        exe.display()
    )
}

/// The simulator's place in a host's download cache.
const SIM_BIN: &str = "/usr/local/lib/k3s-sim/k3s-sim";

/// Hard-links the net's shared simulator into the (not yet mounted) upper layer of a host.
pub(crate) fn preload(slot: u8, host_dir: &Path) -> Result<()> {
    let shared = crate::layout::slot_dir(slot).join("k3s-sim");
    let (target, _) =
        private_location(host_dir, Path::new(SIM_BIN)).expect("/usr/local is private");
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&target);
    std::fs::hard_link(&shared, &target)
        .or_else(|_| std::fs::copy(&shared, &target).map(|_| ()))
        .context("preloading the k3s simulator")
}

/// Whether `a` and `b` are the same file (hard links of one inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Restart/start/stop counts the `systemctl` stand-in kept for a unit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct ServiceStats {
    pub starts: u64,
    pub stops: u64,
    pub restarts: u64,
}

impl TestHost {
    /// Installs the k3s prerequisites a VM image would have for an air-gapped k3s install:
    /// the simulator as the "download" at `/usr/local/lib/k3s-sim/k3s-sim`, the install script
    /// at [`INSTALL_SCRIPT`], and the `systemctl` stand-in (`/usr/local/bin/systemctl`, also
    /// bind-mounted over `/usr/bin/systemctl`). k3s itself is then installed by running the
    /// script (over SSH, as siteflow does).
    pub async fn install_k3s_simulator(&self) -> Result<()> {
        // The bytes go in over stdin: the host's /tmp (and anything else private to its
        // mount namespace) may hide the build's own path, e.g. a target dir under /tmp.
        let shared = crate::layout::slot_dir(self.slot).join("k3s-sim");
        if !same_file(&self.root_path(SIM_BIN), &shared) {
            let bin = tokio::fs::read(k3s_sim_binary()?)
                .await
                .context("reading the k3s simulator binary")?;
            self.write_file(SIM_BIN, &bin, 0o755).await?;
        }
        self.write_file(INSTALL_SCRIPT, INSTALL_SH.as_bytes(), 0o755)
            .await?;
        self.exec_local_ok(&format!(
            "set -e
ln -sf {SIM_DIR}/k3s-sim /usr/local/bin/systemctl
if [ -e /usr/bin/systemctl ] && ! mountpoint -q /usr/bin/systemctl; then
  mount --bind {SIM_DIR}/k3s-sim /usr/bin/systemctl
fi
touch {STAND_IN_MARKER}"
        ))
        .await
        .context("installing the k3s simulator")?;
        Ok(())
    }

    /// Installs k3s with the install script as root on the host (a local shortcut for tests;
    /// siteflow runs the same script over SSH). `env` are `NAME=value` pairs; the values may be
    /// secrets (`K3S_TOKEN`): they reach the script through its shell's stdin, never a command
    /// line, and errors name the variables, not their values. `args` are no secrets.
    pub async fn install_k3s(&self, env: &[(&str, &str)], args: &[&str]) -> Result<String> {
        let script = install_script(env, args)?;
        let out = self
            .exec_local_with_input(r#"eval "$(cat)""#, script.as_bytes())
            .await?;
        let mut what = format!("the k3s install script (`{}`", install_command(args));
        if !env.is_empty() {
            let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
            what.push_str(&format!(" with {}", names.join(" ")));
        }
        what.push(')');
        self.succeeded(&what, out)
    }

    /// The stand-in's counters for `unit` (`k3s` or `k3s-agent`); zero if never started.
    pub async fn service_stats(&self, unit: &str) -> Result<ServiceStats> {
        let unit = if unit.contains('.') {
            unit.to_owned()
        } else {
            format!("{unit}.service")
        };
        let out = self
            .exec_local(&format!("cat {STATS_DIR}/{unit}.json"))
            .await?;
        if !out.status.success() {
            return Ok(ServiceStats::default());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// The script [`TestHost::install_k3s`] feeds to a shell on stdin: `env` exported, then the
/// install script run with `args` (stdin closed: it is the script's own text).
fn install_script(env: &[(&str, &str)], args: &[&str]) -> Result<String> {
    let mut script = String::new();
    for (k, v) in env {
        if !is_env_name(k) {
            bail!("install_k3s: {k:?} is no environment variable name");
        }
        script.push_str(&format!("{k}={}; export {k}\n", shell_quote(v)));
    }
    script.push_str(&format!("exec {} </dev/null\n", install_command(args)));
    Ok(script)
}

/// `sh <install script> <args>`, quoted.
fn install_command(args: &[&str]) -> String {
    let mut cmd = format!("sh {INSTALL_SCRIPT}");
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    cmd
}

/// Starts the enabled units of the `systemctl` stand-in, as systemd would at boot.
pub(crate) async fn boot_services(host: &TestHost) -> Result<()> {
    if !host.root_path(STAND_IN_MARKER).exists() {
        return Ok(());
    }
    host.exec_local_ok("systemctl sim-boot").await?;
    Ok(())
}
