//! Real OpenSSH test hosts, each in its own network and mount namespace, plus a k3s simulator.
//!
//! [`TestNet::new`] brings up N hosts on a private subnet `10.250.<slot>.0/24`. Each host is a
//! real `sshd` (Debian's openssh-server) in its own network, mount and UTS namespace, with
//! copy-on-write overlays over `/etc`, `/home`, `/root`, `/var`, `/usr/local`, `/opt`, `/srv`
//! and empty `/run` and `/tmp`, so it behaves like a small VM: what one host writes under
//! `/etc/rancher` is invisible to the others and to the machine. Each host has users
//! `azureuser` (passwordless sudo) and `opsuser` (sudo with a password), both (and root)
//! accepting the net's ed25519 client key. Everything is removed when the `TestNet` is dropped;
//! [`cleanup_stale`] removes what killed runs left behind.
//!
//! [`TestHost::install_k3s_simulator`] puts the `k3s-sim` binary, a `systemctl` stand-in and
//! an install script (standing in for get.k3s.io) onto a host, so k3s can be "installed" over
//! SSH exactly as on a VM. Needs root, `openssh-server`, `sudo`, `iproute2` and `util-linux`.

mod cleanup;
mod command;
mod host;
mod hostfs;
mod keys;
pub mod layout;
mod net;
pub mod sim;
mod sim_install;
mod slot;

pub use cleanup::{cleanup_stale, slot_has_leftovers};
pub use command::shell_quote;
pub use host::TestHost;
pub use hostfs::{USER_NOPASSWD, USER_PASSWD, USER_PASSWORD};
pub use keys::fingerprint;
pub use net::{HostReservation, TestNet, VmHostSpec};
pub use sim_install::{
    INSTALL_SCRIPT, STATS_DIR, ServiceStats, k3s_sim_binary, set_simulator_embedded,
};
