//! A set of test hosts on one private subnet: creation, lookup and teardown on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cleanup::cleanup_slot;
use crate::command::{run, run_output};
use crate::host::TestHost;
use crate::hostfs::{self, HostFiles};
use crate::keys;
use crate::layout;
use crate::slot::SlotLock;

/// N test hosts on the subnet `10.250.<slot>.0/24`, connected by a bridge in the root namespace
/// (whose address is [`TestNet::gateway_ip`]). Everything is removed when this is dropped,
/// also while unwinding from a panic.
#[derive(Debug, Serialize)]
pub struct TestNet {
    /// The subnet in CIDR notation.
    pub subnet: String,
    /// Address of the bridge in the root namespace (the test process' address on the subnet).
    pub gateway_ip: Ipv4Addr,
    /// Private key authorized for every user (root, `azureuser`, `opsuser`) on every host.
    pub client_key_path: PathBuf,
    /// Public key line of the client key.
    pub client_public_key: String,
    /// known_hosts file with every host's key, by IP.
    pub known_hosts_path: PathBuf,
    /// The hosts.
    pub hosts: Vec<TestHost>,
    #[serde(skip)]
    slot: u8,
    #[serde(skip)]
    lock: Option<SlotLock>,
    /// Virtual networks by name, each its own bridge.
    #[serde(skip)]
    vnets: std::collections::BTreeMap<String, usize>,
    /// Hosts reserved so far (the next host's index).
    #[serde(skip)]
    reserved: usize,
}

impl TestNet {
    /// Brings up `n` hosts, each with sshd answering, on a free subnet.
    pub async fn new(n: usize) -> Result<TestNet> {
        if n == 0 || n > layout::MAX_HOSTS {
            bail!("a test net has 1..={} hosts, not {n}", layout::MAX_HOSTS);
        }
        let mut net = TestNet::empty()?;
        let client_public = net.client_public_key.clone();
        let peers: Vec<(String, Ipv4Addr)> = (0..n)
            .map(|i| (layout::host_name(i), layout::host_ip(net.slot, i)))
            .collect();
        let mut known_hosts = String::new();
        for i in 0..n {
            let plan = HostPlan {
                name: layout::host_name(i),
                peers: &peers,
                authorized_keys: std::slice::from_ref(&client_public),
                host_key: None,
                private_ip: None,
                preload_k3s_simulator: false,
            };
            let host = create_host(&net.ctx(), i, &plan)
                .with_context(|| format!("cannot create test host {i}"))?;
            known_hosts.push_str(&format!("{} {}\n", host.ip, host.host_key_public));
            net.hosts.push(host);
            net.reserved += 1;
        }
        std::fs::write(&net.known_hosts_path, known_hosts)?;
        for host in &net.hosts {
            host.start().await?;
        }
        Ok(net)
    }

    /// A net with no hosts yet (see [`TestNet::add_vm_host`]).
    pub fn empty() -> Result<TestNet> {
        preflight()?;
        let lock = SlotLock::acquire()?;
        let slot = lock.slot();
        let dir = layout::slot_dir(slot);
        std::fs::create_dir_all(&dir)?;
        let client = keys::generate(&dir.join("client_key"), "siteflow-testhosts")?;
        let net = TestNet {
            subnet: layout::subnet(slot),
            gateway_ip: layout::gateway_ip(slot),
            client_key_path: client.private_key_path.clone(),
            client_public_key: client.public_key.clone(),
            known_hosts_path: dir.join("known_hosts"),
            hosts: Vec::new(),
            slot,
            lock: Some(lock),
            vnets: Default::default(),
            reserved: 0,
        };
        net.create_bridge()?;
        std::fs::write(&net.known_hosts_path, "")?;
        Ok(net)
    }

    /// Adds and boots a host standing in for an emulated VM: its host name, the admin's
    /// authorized keys, the host key its cloud-init carries (else a generated one) and, on the
    /// net's virtual network, the private address the VNet gave the VM (the host's `eth1`).
    ///
    /// This holds the net for the whole creation; to create many hosts at once, use
    /// [`TestNet::reserve_vm_host`], [`HostReservation::build`] and [`TestNet::adopt`].
    pub async fn add_vm_host(&mut self, spec: VmHostSpec) -> Result<&TestHost> {
        let reservation = self.reserve_vm_host(spec)?;
        let host = reservation.build().await?;
        self.adopt(host)
    }

    /// Reserves the next host of the net for an emulated VM (its index, addresses and virtual
    /// network link); quick, and the only part of a host's creation that needs the net.
    pub fn reserve_vm_host(&mut self, spec: VmHostSpec) -> Result<HostReservation> {
        let index = self.reserved;
        if index >= layout::MAX_HOSTS {
            bail!("a test net has at most {} hosts", layout::MAX_HOSTS);
        }
        let n_vnets = self.vnets.len();
        let vnet = *self
            .vnets
            .entry(spec.network.clone().unwrap_or_default())
            .or_insert(n_vnets);
        if spec.private_ip.is_some() {
            ensure_vnet_bridge(self.slot, vnet)?;
        }
        if spec.preload_k3s_simulator {
            self.shared_simulator()?;
        }
        self.reserved += 1;
        Ok(HostReservation {
            ctx: self.ctx(),
            index,
            private_ip: spec.private_ip.map(|ip| (ip, vnet)),
            spec,
        })
    }

    /// Lists a host built from a reservation of this net (its key goes into the net's
    /// known_hosts) and returns it.
    pub fn adopt(&mut self, host: TestHost) -> Result<&TestHost> {
        if host.slot != self.slot {
            bail!("host {} belongs to another net", host.name);
        }
        let mut known = std::fs::read_to_string(&self.known_hosts_path).unwrap_or_default();
        known.push_str(&format!("{} {}\n", host.ip, host.host_key_public));
        std::fs::write(&self.known_hosts_path, known)?;
        self.hosts.push(host);
        Ok(self.hosts.last().expect("just pushed"))
    }

    /// The net's one copy of the k3s simulator (a hard link of [`crate::k3s_sim_binary`] when
    /// it is on the same file system), made on the first call.
    pub fn shared_simulator(&self) -> Result<PathBuf> {
        let shared = layout::slot_dir(self.slot).join("k3s-sim");
        if !shared.exists() {
            let source = crate::k3s_sim_binary()?;
            let tmp = shared.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(&source, &tmp).is_err() {
                std::fs::copy(&source, &tmp).context("copying the k3s simulator")?;
            }
            std::fs::rename(&tmp, &shared)?;
        }
        Ok(shared)
    }

    fn ctx(&self) -> NetCtx {
        NetCtx {
            slot: self.slot,
            client_key_path: self.client_key_path.clone(),
            known_hosts_path: self.known_hosts_path.clone(),
        }
    }

    /// The slot number (third octet of the subnet; prefix of the names of its resources).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Name of the bridge in the root namespace.
    pub fn bridge(&self) -> String {
        layout::bridge(self.slot)
    }

    /// The directory holding the net's keys and the hosts' private dirs.
    pub fn dir(&self) -> PathBuf {
        layout::slot_dir(self.slot)
    }

    /// Host by index.
    pub fn host(&self, index: usize) -> &TestHost {
        &self.hosts[index]
    }

    /// Tears everything down now (same as dropping).
    pub fn shutdown(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.lock.is_none() {
            return;
        }
        for host in &self.hosts {
            host.kill_all();
        }
        cleanup_slot(self.slot);
        self.lock = None;
    }

    fn create_bridge(&self) -> Result<()> {
        let br = layout::bridge(self.slot);
        run("ip", ["link", "add", &br, "type", "bridge"])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1");
        run(
            "ip",
            [
                "addr",
                "add",
                &format!("{}/24", layout::gateway_ip(self.slot)),
                "dev",
                &br,
            ],
        )?;
        run("ip", ["link", "set", &br, "up"])?;
        Ok(())
    }
}

/// What [`TestNet::add_vm_host`] needs to know about the VM a host stands in for.
#[derive(Debug, Clone, Default)]
pub struct VmHostSpec {
    /// Host name (the VM's computer name; k3s's node name).
    pub name: String,
    /// Public keys the admin (`azureuser`) and root accept.
    pub authorized_keys: Vec<String>,
    /// The ed25519 host key (OpenSSH private key) from the VM's cloud-init, if any.
    pub host_key_private: Option<String>,
    /// The VM's private address on its virtual network.
    pub private_ip: Option<Ipv4Addr>,
    /// Its virtual network (e.g. the VNet's resource id): hosts of one network share a link,
    /// hosts of different networks cannot reach each other's private addresses.
    pub network: Option<String>,
    /// Preload the net's shared k3s simulator ([`TestNet::shared_simulator`]) into the host's
    /// download cache before it boots: a hard link, not a copy, so hundreds of hosts cost one
    /// binary ([`TestHost::install_k3s_simulator`] then skips the copy).
    pub preload_k3s_simulator: bool,
}

/// What a host's creation needs of its net (cheap to clone, so hosts are created while the
/// net is free for others).
#[derive(Debug, Clone)]
struct NetCtx {
    slot: u8,
    client_key_path: PathBuf,
    known_hosts_path: PathBuf,
}

/// A host reserved on a net by [`TestNet::reserve_vm_host`], not created yet.
#[derive(Debug)]
pub struct HostReservation {
    ctx: NetCtx,
    index: usize,
    spec: VmHostSpec,
    private_ip: Option<(Ipv4Addr, usize)>,
}

impl HostReservation {
    /// The host's index on its net.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The host's address on the net.
    pub fn ip(&self) -> Ipv4Addr {
        layout::host_ip(self.ctx.slot, self.index)
    }

    /// Creates the host (files, keys, namespaces, links) and boots it. Runs the blocking part
    /// on a blocking thread, so many hosts can be built at once; hand the host to
    /// [`TestNet::adopt`] (dropping it instead leaves it to the net's teardown).
    pub async fn build(self) -> Result<TestHost> {
        let name = self.spec.name.clone();
        let host = tokio::task::spawn_blocking(move || {
            let peers = vec![(self.spec.name.clone(), self.ip())];
            let plan = HostPlan {
                name: self.spec.name.clone(),
                peers: &peers,
                authorized_keys: &self.spec.authorized_keys,
                host_key: self.spec.host_key_private.as_deref(),
                private_ip: self.private_ip,
                preload_k3s_simulator: self.spec.preload_k3s_simulator,
            };
            create_host(&self.ctx, self.index, &plan)
        })
        .await
        .context("creating a host panicked")?
        .with_context(|| format!("cannot create the host of VM {name}"))?;
        host.start().await?;
        Ok(host)
    }
}

/// How to lay out one host.
struct HostPlan<'a> {
    name: String,
    peers: &'a [(String, Ipv4Addr)],
    authorized_keys: &'a [String],
    host_key: Option<&'a str>,
    /// The private address and the index of its virtual network.
    private_ip: Option<(Ipv4Addr, usize)>,
    preload_k3s_simulator: bool,
}

fn create_host(ctx: &NetCtx, index: usize, plan: &HostPlan<'_>) -> Result<TestHost> {
    let slot = ctx.slot;
    let name = plan.name.clone();
    let ip = layout::host_ip(slot, index);
    let dir = layout::host_dir(slot, index);
    let authorized_key = plan.authorized_keys.join("\n");
    let files = HostFiles {
        host_dir: &dir,
        name: &name,
        peers: plan.peers,
        authorized_key: &authorized_key,
    };
    files.prepare()?;
    if plan.preload_k3s_simulator {
        crate::sim_install::preload(slot, &dir)?;
    }
    let host_key_path = hostfs::private_location(&dir, Path::new("/etc/ssh/ssh_host_ed25519_key"))
        .expect("/etc is private")
        .0;
    let host_key = match plan.host_key {
        Some(private) => keys::install(&host_key_path, private, &format!("root@{name}"))?,
        None => keys::generate(&host_key_path, &format!("root@{name}"))?,
    };

    let ns = layout::netns(slot, index);
    let veth = layout::veth(slot, index);
    run("ip", ["netns", "add", &ns])?;
    run(
        "ip",
        [
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
    )?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
    run(
        "ip",
        ["link", "set", &veth, "master", &layout::bridge(slot)],
    )?;
    run("ip", ["link", "set", &veth, "up"])?;
    run(
        "ip",
        ["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    )?;
    run("ip", ["-n", &ns, "link", "set", "eth0", "up"])?;
    run("ip", ["-n", &ns, "link", "set", "lo", "up"])?;
    if let Some((private, vnet)) = plan.private_ip {
        attach_vnet(slot, index, &ns, private, vnet)?;
    }

    let mnt = layout::mnt_pin(slot, index);
    let uts = layout::uts_pin(slot, index);
    std::fs::write(&mnt, "")?;
    std::fs::write(&uts, "")?;
    let script = files.setup_script(&layout::pins_dir());
    let out = run_output(
        "nsenter",
        [
            format!("--net=/run/netns/{ns}"),
            "--".into(),
            "unshare".into(),
            format!("--mount={}", mnt.display()),
            format!("--uts={}", uts.display()),
            "--propagation".into(),
            "private".into(),
            "/bin/sh".into(),
            "-c".into(),
            script,
        ],
    )?;
    if !out.status.success() {
        bail!(
            "setting up {name}'s namespaces failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(TestHost {
        index,
        name,
        ip,
        port: 22,
        host_key_public: host_key.public_key,
        host_key_fingerprint: host_key.fingerprint,
        client_key_path: ctx.client_key_path.clone(),
        known_hosts_path: ctx.known_hosts_path.clone(),
        user_nopasswd: hostfs::USER_NOPASSWD.into(),
        user_passwd: hostfs::USER_PASSWD.into(),
        password: hostfs::USER_PASSWORD.into(),
        netns: ns,
        slot,
        dir,
        sshd: Mutex::new(None),
    })
}

/// Creates virtual network `vnet`'s bridge unless it exists.
fn ensure_vnet_bridge(slot: u8, vnet: usize) -> Result<()> {
    let br = layout::vnet_bridge(slot, vnet);
    if !Path::new(&format!("/sys/class/net/{br}")).exists() {
        run("ip", ["link", "add", &br, "type", "bridge"])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1");
        run("ip", ["link", "set", &br, "up"])?;
    }
    Ok(())
}

/// Gives the host an `eth1` with `private` (/24) on virtual network `vnet`.
/// The bridge must exist ([`ensure_vnet_bridge`]).
fn attach_vnet(slot: u8, index: usize, ns: &str, private: Ipv4Addr, vnet: usize) -> Result<()> {
    let br = layout::vnet_bridge(slot, vnet);
    let veth = layout::vnet_veth(slot, index);
    run(
        "ip",
        [
            "link", "add", &veth, "type", "veth", "peer", "name", "eth1", "netns", ns,
        ],
    )?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
    run("ip", ["link", "set", &veth, "master", &br])?;
    run("ip", ["link", "set", &veth, "up"])?;
    run(
        "ip",
        [
            "-n",
            ns,
            "addr",
            "add",
            &format!("{private}/24"),
            "dev",
            "eth1",
        ],
    )?;
    run("ip", ["-n", ns, "link", "set", "eth1", "up"])?;
    Ok(())
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Fails early with a useful message when a tool the harness needs is missing.
fn preflight() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("siteflow-testhosts needs root (network and mount namespaces)");
    }
    for (tool, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/bin/sudo", "sudo"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/bin/unshare", "util-linux"),
    ] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: apt-get install -y {package}");
        }
    }
    if run_output("ip", ["-V"]).is_err() {
        bail!("`ip` is missing: apt-get install -y iproute2");
    }
    Ok(())
}
