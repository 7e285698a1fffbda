//! The private root of a test host: which directories are private, the files written into them
//! before boot (sshd config, host key, /etc/hosts, sudoers) and the in-namespace setup script
//! (overlay mounts, users, authorized keys).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::command::shell_quote;

/// Directories that are an overlay (copy-on-write over the machine's own) in every host:
/// writes stay in the host, reads fall through to the machine's files.
pub const OVERLAY_DIRS: &[&str] = &[
    "/etc",
    "/home",
    "/root",
    "/var",
    "/usr/local",
    "/opt",
    "/srv",
];
/// Directories that start empty in every host (bind mounts of a per-host directory); emptied
/// when the host is stopped, like tmpfs on a rebooting VM. Mounted in this order, and after the
/// overlays: the host directories live below `/run` on the machine.
pub const EMPTY_DIRS: &[&str] = &["/tmp", "/run"];

/// Login with passwordless sudo (like the admin user cloud-init creates on an Azure VM).
pub const USER_NOPASSWD: &str = "azureuser";
/// Login whose sudo asks for [`USER_PASSWORD`].
pub const USER_PASSWD: &str = "opsuser";
/// Password of [`USER_PASSWD`] (for `sudo -S`).
pub const USER_PASSWORD: &str = "siteflow-test-password";

/// Name of an overlay's upper/work subdirectory for a mount point (`/usr/local` → `usr-local`).
fn layer_name(dir: &str) -> String {
    dir.trim_start_matches('/').replace('/', "-")
}

/// Where the host's view of `path` lives on the machine, for paths in [`OVERLAY_DIRS`] or
/// [`EMPTY_DIRS`] (`None` for paths shared with the machine).
///
/// For overlay dirs this is the upper layer: it holds what the host wrote; files the host
/// never touched fall through to the machine's own file.
pub fn private_location(host_dir: &Path, path: &Path) -> Option<(PathBuf, bool)> {
    for dir in OVERLAY_DIRS {
        if let Ok(rest) = path.strip_prefix(dir) {
            return Some((
                host_dir.join("upper").join(layer_name(dir)).join(rest),
                true,
            ));
        }
    }
    for dir in EMPTY_DIRS {
        if let Ok(rest) = path.strip_prefix(dir) {
            return Some((host_dir.join(layer_name(dir)).join(rest), false));
        }
    }
    None
}

/// Everything needed to lay out one host's files.
pub struct HostFiles<'a> {
    pub host_dir: &'a Path,
    pub name: &'a str,
    /// (name, ip) of every host on the subnet, for /etc/hosts.
    pub peers: &'a [(String, Ipv4Addr)],
    pub authorized_key: &'a str,
}

impl HostFiles<'_> {
    fn upper(&self, path: &str) -> PathBuf {
        private_location(self.host_dir, Path::new(path))
            .expect("path in a private dir")
            .0
    }

    /// Creates the per-host directories and writes the files that exist before boot.
    /// The host key must be generated (into `/etc/ssh`) separately.
    pub fn prepare(&self) -> Result<()> {
        for dir in OVERLAY_DIRS {
            let name = layer_name(dir);
            std::fs::create_dir_all(self.host_dir.join("upper").join(&name))?;
            std::fs::create_dir_all(self.host_dir.join("work").join(&name))?;
        }
        for dir in EMPTY_DIRS {
            std::fs::create_dir_all(self.host_dir.join(layer_name(dir)))?;
        }
        std::fs::set_permissions(
            self.host_dir.join("tmp"),
            std::fs::Permissions::from_mode(0o1777),
        )?;
        std::fs::create_dir_all(self.host_dir.join("log"))?;
        reset_run_dir(self.host_dir)?;

        std::fs::create_dir_all(self.upper("/etc/ssh"))?;
        write(&self.upper("/etc/ssh/sshd_config"), SSHD_CONFIG, 0o644)?;
        write(
            &self.upper("/etc/hostname"),
            &format!("{}\n", self.name),
            0o644,
        )?;
        let mut hosts = format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            self.name
        );
        for (name, ip) in self.peers {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
        write(&self.upper("/etc/hosts"), &hosts, 0o644)?;
        std::fs::create_dir_all(self.upper("/etc/sudoers.d"))?;
        write(
            &self.upper("/etc/sudoers.d/90-siteflow-testhosts"),
            &format!(
                "# Written by siteflow-testhosts.\n\
                 {USER_NOPASSWD} ALL=(ALL) NOPASSWD:ALL\n\
                 {USER_PASSWD} ALL=(ALL:ALL) ALL\n"
            ),
            0o440,
        )?;
        write(
            &self.host_dir.join("authorized_keys"),
            &format!("{}\n", self.authorized_key),
            0o644,
        )?;
        Ok(())
    }

    /// The script run (as root) inside the new mount and UTS namespaces: drops the copies of
    /// other namespaces' pins, mounts the private dirs, sets the host name and creates the users
    /// (idempotently) with the authorized test key.
    pub fn setup_script(&self, pins_dir: &Path) -> String {
        let q = |p: &Path| shell_quote(&p.to_string_lossy());
        let mut s = String::from("set -e\n");
        // Copies of other hosts' namespace pins would keep those namespaces alive.
        s.push_str("umount -l /run/netns 2>/dev/null || true\n");
        s.push_str(&format!("umount -l {} 2>/dev/null || true\n", q(pins_dir)));
        s.push_str(&format!("hostname {}\n", shell_quote(self.name)));
        for dir in OVERLAY_DIRS {
            let name = layer_name(dir);
            let upper = self.host_dir.join("upper").join(&name);
            let work = self.host_dir.join("work").join(&name);
            s.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={dir},upperdir={},workdir={} {dir}\n",
                q(&upper),
                q(&work)
            ));
        }
        let keys = self.host_dir.join("authorized_keys");
        s.push_str(&format!(
            "cp {} /etc/ssh/siteflow-authorized-keys\n",
            q(&keys)
        ));
        // /tmp and /run last: the host dir may live below them.
        for dir in EMPTY_DIRS {
            s.push_str(&format!(
                "mount --bind {} {dir}\n",
                q(&self.host_dir.join(layer_name(dir)))
            ));
        }
        s.push_str(&format!(
            r#"for u in {USER_NOPASSWD} {USER_PASSWD}; do
  id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group "$u"
done
usermod -p '*' {USER_NOPASSWD}
echo '{USER_PASSWD}:{USER_PASSWORD}' | chpasswd
for home in /root /home/{USER_NOPASSWD} /home/{USER_PASSWD}; do
  owner=$(stat -c %U "$home")
  install -d -m 0700 -o "$owner" -g "$owner" "$home/.ssh"
  install -m 0600 -o "$owner" -g "$owner" /etc/ssh/siteflow-authorized-keys "$home/.ssh/authorized_keys"
done
"#
        ));
        s
    }
}

/// Empties a host's /run and recreates what sshd needs there (boot-time state).
pub fn reset_run_dir(host_dir: &Path) -> Result<()> {
    for dir in EMPTY_DIRS {
        let d = host_dir.join(layer_name(dir));
        if let Ok(rd) = std::fs::read_dir(&d) {
            for entry in rd.flatten() {
                let p = entry.path();
                let _ = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    ensure_run_dir(host_dir)
}

/// Creates what sshd needs in a host's /run (`/run/sshd`, `/run/lock`) if missing.
pub fn ensure_run_dir(host_dir: &Path) -> Result<()> {
    let run = host_dir.join("run");
    for sub in ["sshd", "lock"] {
        std::fs::create_dir_all(run.join(sub))?;
    }
    std::fs::set_permissions(run.join("sshd"), std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write(path: &Path, content: &str, mode: u32) -> Result<()> {
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The complete sshd configuration of a test host (replaces Debian's).
const SSHD_CONFIG: &str = "\
# Written by siteflow-testhosts.
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
MaxStartups 100:30:200
MaxSessions 64
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
";
