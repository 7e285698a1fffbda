//! Names and paths of everything a harness instance creates, all derived from its slot number.
//!
//! The slot number (1..=250) picks the subnet `10.250.<slot>.0/24` and prefixes every name,
//! so stale-cleanup can find what a killed run left behind.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Root of the harness' state on this machine (lock files, namespace pins, host directories).
pub const BASE_DIR: &str = "/run/siteflow-testhosts";
/// Prefix of every network namespace, bridge and veth the harness creates.
pub const NAME_PREFIX: &str = "sfth";
/// Slots a harness instance can take; each is a /24.
pub const SLOTS: std::ops::RangeInclusive<u8> = 1..=250;
/// Most hosts one harness instance can bring up.
pub const MAX_HOSTS: usize = 240;
/// Second octet of the subnets (10.250.x.0/24).
const SUBNET_OCTET: u8 = 250;
/// Last octet of the first host's address.
const FIRST_HOST_OCTET: u8 = 10;

/// Directory holding one lock file per slot.
pub fn locks_dir() -> PathBuf {
    PathBuf::from(BASE_DIR).join("locks")
}

/// Lock file of a slot (held with `flock` for the lifetime of a `TestNet`).
pub fn slot_lock(slot: u8) -> PathBuf {
    locks_dir().join(format!("slot-{slot}.lock"))
}

/// Directory whose private bind mount holds the mount/UTS namespace pins.
pub fn pins_dir() -> PathBuf {
    PathBuf::from(BASE_DIR).join("pins")
}

/// Pin file of a host's mount namespace.
pub fn mnt_pin(slot: u8, index: usize) -> PathBuf {
    pins_dir().join(format!("{slot}-{index}.mnt"))
}

/// Pin file of a host's UTS namespace.
pub fn uts_pin(slot: u8, index: usize) -> PathBuf {
    pins_dir().join(format!("{slot}-{index}.uts"))
}

/// Directory of one harness instance (client key, known_hosts, host directories).
pub fn slot_dir(slot: u8) -> PathBuf {
    PathBuf::from(BASE_DIR).join(format!("slot-{slot}"))
}

/// Directory of one host (overlay upper/work dirs, /run, /tmp, logs).
pub fn host_dir(slot: u8, index: usize) -> PathBuf {
    slot_dir(slot).join(format!("host-{index}"))
}

/// Network namespace name of a host.
pub fn netns(slot: u8, index: usize) -> String {
    format!("{NAME_PREFIX}-{slot}-{index}")
}

/// Prefix of the network namespaces of a slot.
pub fn netns_prefix(slot: u8) -> String {
    format!("{NAME_PREFIX}-{slot}-")
}

/// Bridge in the root namespace that connects a slot's hosts.
pub fn bridge(slot: u8) -> String {
    format!("{NAME_PREFIX}br{slot}")
}

/// Bridge in the root namespace for virtual network `n` of a slot (the hosts' second
/// interface, with the addresses an emulated VNet gave them). It has no address of its own,
/// so several networks, and slots, can use the same private range.
pub fn vnet_bridge(slot: u8, n: usize) -> String {
    format!("{}{n}", vnet_bridge_prefix(slot))
}

/// Prefix of a slot's virtual-network bridges.
pub fn vnet_bridge_prefix(slot: u8) -> String {
    format!("{NAME_PREFIX}vn{slot}x")
}

/// Root-namespace end of a host's veth pair on the slot's virtual network (it shares the
/// prefix of [`veth`], so cleanup finds it).
pub fn vnet_veth(slot: u8, index: usize) -> String {
    format!("{NAME_PREFIX}{slot}v{index}p")
}

/// Root-namespace end of a host's veth pair.
pub fn veth(slot: u8, index: usize) -> String {
    format!("{NAME_PREFIX}{slot}v{index}")
}

/// Prefix of the root-namespace veth ends of a slot.
pub fn veth_prefix(slot: u8) -> String {
    format!("{NAME_PREFIX}{slot}v")
}

/// Address of the bridge (the root namespace's address on the subnet).
pub fn gateway_ip(slot: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, SUBNET_OCTET, slot, 1)
}

/// Address of a host.
pub fn host_ip(slot: u8, index: usize) -> Ipv4Addr {
    let last = FIRST_HOST_OCTET as usize + index;
    assert!(
        index < MAX_HOSTS && last < 255,
        "host index {index} out of range"
    );
    Ipv4Addr::new(10, SUBNET_OCTET, slot, last as u8)
}

/// The subnet of a slot in CIDR notation.
pub fn subnet(slot: u8) -> String {
    format!("10.{SUBNET_OCTET}.{slot}.0/24")
}

/// Host name (and k3s node name) of a host: `node1`, `node2`, ...
pub fn host_name(index: usize) -> String {
    format!("node{}", index + 1)
}
