//! The sandbox's AKS: each managed cluster the emulator creates gets a real (simulated)
//! Kubernetes. Its control plane is a k3s server on a test host of its own, started with
//! `--disable-agent` (AKS's control plane runs no workloads and is no node) and, when the OIDC
//! issuer is on, the cluster's issuer URL as its service-account issuer; every node of its
//! agent pools is a test host joined as a k3s agent, labelled like an AKS node
//! (`kubernetes.azure.com/agentpool`, `kubernetes.azure.com/mode`, the pool's labels and
//! taints). A create or pool change ends only once the nodes are registered; a scale-in drains
//! and deletes the departed nodes and powers their hosts off; a delete powers everything off.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use siteflow_azure_emulator::{ClusterBacking, ClusterBackingHook, ManagedClusterSpec};
use siteflow_step::shell_quote;
use siteflow_testhosts::{TestHost, TestNet, VmHostSpec};

use crate::sandbox::{HostEntry, Hosts};

/// One backed cluster.
struct Backed {
    control_plane: String,
    backing: ClusterBacking,
    node_token: String,
    /// Node name → its pool.
    nodes: BTreeMap<String, String>,
}

/// The hook the sandbox installs in its emulator.
pub struct Clusters {
    pub net: Arc<tokio::sync::Mutex<TestNet>>,
    pub hosts: Arc<Hosts>,
    /// The emulator's CA (the extension manager trusts it for the extension data plane).
    pub ca_pem_path: PathBuf,
    /// Per cluster (lower-case id), locked while a reconcile runs: two pool changes of one
    /// cluster never build two control planes.
    backed: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Backed>>>>>,
}

impl Clusters {
    pub fn new(
        net: Arc<tokio::sync::Mutex<TestNet>>,
        hosts: Arc<Hosts>,
        ca_pem_path: PathBuf,
    ) -> Self {
        Self {
            net,
            hosts,
            ca_pem_path,
            backed: Default::default(),
        }
    }

    /// A new host with the simulator, set up by `setup` before it is listed.
    async fn host<F, Fut, T>(&self, name: &str, owner: &str, setup: F) -> Result<T, String>
    where
        F: FnOnce(TestHost) -> Fut,
        Fut: Future<Output = Result<(TestHost, T), String>>,
    {
        let reservation = self
            .net
            .lock()
            .await
            .reserve_vm_host(VmHostSpec {
                name: name.to_string(),
                preload_k3s_simulator: true,
                ..VmHostSpec::default()
            })
            .map_err(|e| format!("{e:#}"))?;
        let host = reservation.build().await.map_err(|e| format!("{e:#}"))?;
        host.install_k3s_simulator()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let (host, out) = setup(host).await?;
        let entry = HostEntry {
            name: name.to_string(),
            vm_id: format!("{owner}/nodes/{name}"),
            public_ip: host.ip.to_string(),
            private_ip: String::new(),
            host_key_fingerprint: host.host_key_fingerprint.clone(),
            veth: host.veth(),
            vnet_veth: host.vnet_veth(),
        };
        self.net
            .lock()
            .await
            .adopt(host)
            .map_err(|e| format!("{e:#}"))?;
        self.hosts.change(|h| h.push(entry)).await;
        Ok(out)
    }

    /// Powers the named host off and unlists it.
    async fn release(&self, name: &str) {
        self.hosts.change(|h| h.retain(|e| e.name != name)).await;
        let net = self.net.lock().await;
        // The newest host of that name: a node name comes back when a pool grows again.
        if let Some(host) = net.hosts.iter().rev().find(|x| x.name == name) {
            let _ = host.stop().await;
        }
    }

    /// Runs `cmd` as root on the named (listed) host.
    async fn on(&self, name: &str, cmd: &str) -> Result<String, String> {
        let net = self.net.lock().await;
        let host = net
            .hosts
            .iter()
            .rev()
            .find(|x| x.name == name)
            .ok_or_else(|| format!("no host {name}"))?;
        host.exec_local_ok(cmd).await.map_err(|e| format!("{e:#}"))
    }

    async fn control_plane(
        &self,
        spec: &ManagedClusterSpec,
        prefix: &str,
    ) -> Result<Backed, String> {
        let name = format!("aks-controlplane-{prefix}");
        let version = format!("v{}+k3s1", spec.kubernetes_version);
        let mut args: Vec<String> = vec!["--disable-agent".into()];
        if let Some(issuer) = &spec.oidc_issuer_url {
            args.push(format!(
                "--kube-apiserver-arg=service-account-issuer={issuer}"
            ));
        }
        let control_plane = name.clone();
        let ca = tokio::fs::read_to_string(&self.ca_pem_path)
            .await
            .map_err(|e| format!("{}: {e}", self.ca_pem_path.display()))?;
        let manager = extension_manager(spec, &ca)?;
        self.host(&name, &spec.resource_id, |host| async move {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            host.install_k3s(&[("INSTALL_K3S_VERSION", &version)], &argv)
                .await
                .map_err(|e| format!("{e:#}"))?;
            // AKS's extension manager, as a chart in kube-system (its token through a 0600
            // file and stdin-free apply: never on a command line).
            const MANIFEST: &str = "/root/aks-extension-manager.yaml";
            host.write_file(MANIFEST, manager.as_bytes(), 0o600)
                .await
                .map_err(|e| format!("{e:#}"))?;
            host.exec_local_ok(&format!(
                "k3s kubectl apply --server-side --field-manager=aks -f {MANIFEST} >/dev/null && rm -f {MANIFEST}"
            ))
            .await
            .map_err(|e| format!("{e:#}"))?;
            let read = |path: &'static str| {
                let host = &host;
                async move {
                    host.read_file(path)
                        .await
                        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                        .map_err(|e| format!("{e:#}"))
                }
            };
            let kubeconfig = read("/etc/rancher/k3s/k3s.yaml").await?;
            let node_token = read("/var/lib/rancher/k3s/server/node-token").await?;
            let field = |key: &str| {
                kubeconfig
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                    .ok_or_else(|| format!("the control plane's kubeconfig has no {key}"))
            };
            let ca_pem = base64::engine::general_purpose::STANDARD
                .decode(field("certificate-authority-data:")?)
                .map_err(|e| e.to_string())?;
            let backing = ClusterBacking {
                server_url: format!("https://{}:6443", host.ip),
                ca_pem: String::from_utf8_lossy(&ca_pem).to_string(),
                admin_token: field("token:")?,
            };
            Ok((
                host,
                Backed {
                    control_plane,
                    backing,
                    node_token,
                    nodes: BTreeMap::new(),
                },
            ))
        })
        .await
    }

    async fn reconcile(&self, spec: ManagedClusterSpec) -> Result<ClusterBacking, String> {
        let id = spec.resource_id.to_ascii_lowercase();
        let slot = self
            .backed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        // As AKS names them: `aks-<pool>-<8 digits>-vmss<6 digits>`, the digits the cluster's.
        let prefix = format!("{:08}", short_hash(&id) % 100_000_000);
        if slot.is_none() {
            *slot = Some(self.control_plane(&spec, &prefix).await?);
        }
        let cluster = slot.as_mut().expect("just set");
        let before = cluster.nodes.len();
        self.nodes(&spec, &prefix, cluster).await?;
        let pools: Vec<String> = spec
            .pools
            .iter()
            .map(|p| format!("{}={}", p.name, p.count))
            .collect();
        eprintln!(
            "managed cluster {}: pools {}; nodes {before} -> {}",
            spec.name,
            pools.join(" "),
            cluster.nodes.len()
        );
        Ok(cluster.backing.clone())
    }

    /// Brings the cluster's nodes to the pools' counts.
    async fn nodes(
        &self,
        spec: &ManagedClusterSpec,
        prefix: &str,
        cluster: &mut Backed,
    ) -> Result<(), String> {
        let mut wanted: BTreeMap<String, &siteflow_azure_emulator::PoolSpec> = BTreeMap::new();
        for pool in &spec.pools {
            for i in 0..pool.count {
                wanted.insert(format!("aks-{}-{prefix}-vmss{i:06}", pool.name), pool);
            }
        }
        // Departed nodes: drained and deleted, their hosts powered off.
        let gone: Vec<String> = cluster
            .nodes
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        // (Drained, then the VM goes, then its Node object: a node deleted while its kubelet
        // still runs registers itself again.)
        for node in gone {
            let quoted = shell_quote(&node);
            self.on(
                &cluster.control_plane,
                &format!(
                    "k3s kubectl drain {quoted} --ignore-daemonsets --delete-emptydir-data --force >/dev/null 2>&1 || true"
                ),
            )
            .await?;
            self.release(&node).await;
            self.on(
                &cluster.control_plane,
                &format!("k3s kubectl delete node {quoted} --ignore-not-found >/dev/null"),
            )
            .await?;
            cluster.nodes.remove(&node);
        }
        // New nodes, created at once.
        let url = cluster.backing.server_url.clone();
        let version = format!("v{}+k3s1", spec.kubernetes_version);
        let mut joins = Vec::new();
        for (node, pool) in wanted
            .iter()
            .filter(|(n, _)| !cluster.nodes.contains_key(*n))
        {
            let mut args: Vec<String> = vec![
                "--node-label".into(),
                format!("kubernetes.azure.com/agentpool={}", pool.name),
                "--node-label".into(),
                format!("agentpool={}", pool.name),
                "--node-label".into(),
                format!(
                    "kubernetes.azure.com/mode={}",
                    pool.mode.to_ascii_lowercase()
                ),
            ];
            for (k, v) in &pool.node_labels {
                args.extend(["--node-label".into(), format!("{k}={v}")]);
            }
            for t in &pool.node_taints {
                args.extend(["--node-taint".into(), t.clone()]);
            }
            let (url, token, version) = (url.clone(), cluster.node_token.clone(), version.clone());
            joins.push(async move {
                self.host(node, &spec.resource_id, |host| async move {
                    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    host.install_k3s(
                        &[
                            ("K3S_URL", &url),
                            ("K3S_TOKEN", &token),
                            ("INSTALL_K3S_VERSION", &version),
                        ],
                        &argv,
                    )
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                    Ok((host, ()))
                })
                .await
                .map(|()| (node.clone(), pool.name.clone()))
            });
        }
        for joined in futures::future::join_all(joins).await {
            let (node, pool) = joined?;
            cluster.nodes.insert(node, pool);
        }
        // Done when every node is registered and no departed one is left, as AKS reports a
        // pool once its nodes are.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let listed = self
                .on(
                    &cluster.control_plane,
                    "k3s kubectl get nodes -o jsonpath='{.items[*].metadata.name}'",
                )
                .await?;
            let names: Vec<&str> = listed.split_whitespace().collect();
            let departed = names
                .iter()
                .any(|n| n.starts_with("aks-") && !wanted.contains_key(*n));
            if wanted.keys().all(|n| names.contains(&n.as_str())) && !departed {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "nodes did not register within 120 s (registered: {listed})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn delete(&self, resource_id: String) {
        let slot = self
            .backed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&resource_id.to_ascii_lowercase());
        let Some(slot) = slot else {
            return;
        };
        let Some(cluster) = slot.lock().await.take() else {
            return;
        };
        for node in cluster.nodes.keys() {
            self.release(node).await;
        }
        self.release(&cluster.control_plane).await;
        eprintln!("released managed cluster {resource_id}: its hosts are powered off");
    }
}

/// The extension manager's chart and values Secret (YAML documents); `ca` is the emulator's
/// CA (PEM).
fn extension_manager(spec: &ManagedClusterSpec, ca: &str) -> Result<String, String> {
    let values = serde_json::json!({"global": {
        "resourceId": spec.resource_id,
        "extensionAgentToken": spec.extension_agent_token,
        "agentDataPlaneEndpoint": spec.extension_endpoint,
        "proxyCert": ca,
    }});
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "aks-extension-manager-values", "namespace": "kube-system"},
        "stringData": {"values.yaml": values.to_string()}});
    let chart = serde_json::json!({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
        "metadata": {"name": "aks-extension-manager", "namespace": "kube-system"},
        "spec": {"chart": "oci://mcr.microsoft.com/aks/aks-extension-manager",
                 "targetNamespace": "kube-system",
                 "valuesSecrets": [{"name": "aks-extension-manager-values", "keys": ["values.yaml"]}]}});
    let yaml = |v: &serde_json::Value| serde_saphyr::to_string(v).map_err(|e| e.to_string());
    Ok(format!("{}---\n{}", yaml(&secret)?, yaml(&chart)?))
}

/// A short stable hash (the node names' suffix, as AKS derives one per cluster).
fn short_hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

impl ClusterBackingHook for Clusters {
    fn cluster_reconciled(
        &self,
        spec: ManagedClusterSpec,
    ) -> Pin<Box<dyn Future<Output = Result<ClusterBacking, String>> + Send + '_>> {
        Box::pin(self.reconcile(spec))
    }

    fn cluster_deleted(
        &self,
        resource_id: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.delete(resource_id))
    }
}
