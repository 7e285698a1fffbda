//! Tearing down a slot's namespaces, links, processes and directories, and removing leftovers of
//! killed runs (everything named with the `sfth` prefix whose slot lock is free).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::command::{run_output, run_quiet};
use crate::layout;
use crate::slot::SlotLock;

/// Removes everything of `slot`: processes in its namespaces, namespace pins, network
/// namespaces, veths, the bridge and its directory. Best effort; never fails.
///
/// Call only while holding the slot's lock.
pub fn cleanup_slot(slot: u8) {
    let prefix = layout::netns_prefix(slot);
    let namespaces: Vec<String> = list_dir("/run/netns")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for ns in &namespaces {
        kill_netns_processes(ns);
    }
    let pin_prefix = format!("{slot}-");
    for pin in list_dir(layout::pins_dir()) {
        if pin.starts_with(&pin_prefix) {
            let path = layout::pins_dir().join(&pin);
            run_quiet("umount", ["-l".as_ref(), path.as_os_str()]);
            let _ = std::fs::remove_file(&path);
        }
    }
    for ns in &namespaces {
        run_quiet("ip", ["netns", "del", ns]);
    }
    let veth_prefix = layout::veth_prefix(slot);
    let bridge = layout::bridge(slot);
    let vnets = layout::vnet_bridge_prefix(slot);
    for link in list_dir("/sys/class/net") {
        if link.starts_with(&veth_prefix) || link == bridge || link.starts_with(&vnets) {
            run_quiet("ip", ["link", "del", &link]);
        }
    }
    let dir = layout::slot_dir(slot);
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Removes the leftovers of every slot that no running harness owns. Returns the slots cleaned.
pub fn cleanup_stale() -> anyhow::Result<Vec<u8>> {
    let mut cleaned = Vec::new();
    for slot in layout::SLOTS {
        if !slot_has_leftovers(slot) {
            continue;
        }
        if let Some(lock) = SlotLock::try_take(slot)? {
            cleanup_slot(slot);
            cleaned.push(lock.slot());
        }
    }
    Ok(cleaned)
}

/// Whether anything named after `slot` exists on this machine.
pub fn slot_has_leftovers(slot: u8) -> bool {
    let prefix = layout::netns_prefix(slot);
    let veth_prefix = layout::veth_prefix(slot);
    let bridge = layout::bridge(slot);
    let pin_prefix = format!("{slot}-");
    list_dir("/run/netns")
        .iter()
        .any(|n| n.starts_with(&prefix))
        || list_dir("/sys/class/net")
            .iter()
            .any(|l| l.starts_with(&veth_prefix) || *l == bridge)
        || list_dir(layout::pins_dir())
            .iter()
            .any(|p| p.starts_with(&pin_prefix))
        || layout::slot_dir(slot).exists()
}

/// Process ids whose network namespace is `ns` (as `ip netns pids` reports them).
pub fn netns_pids(ns: &str) -> Vec<i32> {
    match run_output("ip", ["netns", "pids", ns]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The network namespace a process lives in (`net:[inode]`), if it can be read.
fn net_ns_of(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// SIGKILLs every process in network namespace `ns` until none is left (at most ~5 s).
///
/// Never a process that shares the caller's own network namespace: if `ns` ever named the
/// machine's namespace (a stale or mis-made pin), `ip netns pids` would list every process
/// on the machine, and this must not turn into a machine-wide kill.
pub fn kill_netns_processes(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let own = net_ns_of("self");
    loop {
        let pids: Vec<i32> = netns_pids(ns)
            .into_iter()
            .filter(|&p| p != std::process::id() as i32)
            .filter(|&p| own.is_none() || net_ns_of(&p.to_string()) != own)
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn list_dir(path: impl AsRef<Path>) -> Vec<String> {
    match std::fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
