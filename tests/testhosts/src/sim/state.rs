//! The server's datastore (nodes, applied objects, signing key), kept as JSON under
//! `<data-dir>/server/db/state.json` so it survives restarts, like k3s's SQLite database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long after its last heartbeat an agent's node turns NotReady (Unknown).
pub const NODE_GRACE_SECS: u64 = 15;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn rfc3339(t: u64) -> String {
    let days = t / 86400;
    let secs = t % 86400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A registered node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect` or `key:Effect`.
    pub taints: Vec<String>,
    pub internal_ip: String,
    pub hostname: String,
    pub created: u64,
    pub last_heartbeat: u64,
    pub version: String,
    /// The server's own node never goes stale while the server runs.
    pub is_server: bool,
    /// Cordoned (`kubectl cordon`/`drain`): nothing new is scheduled on it.
    #[serde(default)]
    pub unschedulable: bool,
    /// When `kubectl drain` evicted its pods.
    #[serde(default)]
    pub drained_at: Option<u64>,
}

impl NodeRecord {
    pub fn ready(&self) -> bool {
        self.is_server || now().saturating_sub(self.last_heartbeat) <= NODE_GRACE_SECS
    }

    /// The node as the Kubernetes API returns it.
    pub fn to_json(&self) -> Value {
        let taints: Vec<Value> = self
            .taints
            .iter()
            .map(|t| {
                let (kv, effect) = t.rsplit_once(':').unwrap_or((t, "NoSchedule"));
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let mut o = json!({"key": k, "effect": effect});
                if !v.is_empty() {
                    o["value"] = json!(v);
                }
                o
            })
            .collect();
        let ready = self.ready();
        let mut spec =
            json!({"podCIDR": "10.42.0.0/24", "providerID": format!("k3s://{}", self.name)});
        let mut taints = taints;
        if self.unschedulable {
            spec["unschedulable"] = json!(true);
            taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
        }
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "uid": uuidish(&self.name),
                "creationTimestamp": rfc3339(self.created),
                "labels": self.labels,
                "annotations": match self.drained_at {
                    Some(t) => json!({"k3s.io/internal-ip": self.internal_ip, "k3s.io/hostname": self.hostname, "sim.siteflow.io/drained-at": rfc3339(t)}),
                    None => json!({"k3s.io/internal-ip": self.internal_ip, "k3s.io/hostname": self.hostname}),
                },
            },
            "spec": spec,
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": self.internal_ip},
                    {"type": "Hostname", "address": self.hostname},
                ],
                "conditions": [{
                    "type": "Ready",
                    "status": if ready { "True" } else { "Unknown" },
                    "reason": if ready { "KubeletReady" } else { "NodeStatusUnknown" },
                    "message": if ready { "kubelet is posting ready status" } else { "Kubelet stopped posting node status." },
                    "lastHeartbeatTime": rfc3339(self.last_heartbeat),
                }],
                "nodeInfo": {"kubeletVersion": self.version, "kubeProxyVersion": self.version,
                    "containerRuntimeVersion": "containerd://1.7.23-k3s2", "operatingSystem": "linux",
                    "architecture": "amd64"},
            },
        })
    }
}

/// A stable UUID-looking id derived from a name.
pub fn uuidish(name: &str) -> String {
    let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Everything the server keeps.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Applied objects by `kind/namespace/name`.
    pub objects: BTreeMap<String, Value>,
    /// Key signing service-account tokens (hex).
    pub sa_key: String,
}

impl State {
    pub fn path(server_dir: &Path) -> PathBuf {
        server_dir.join("db/state.json")
    }

    pub fn load(server_dir: &Path) -> Result<State> {
        match std::fs::read(Self::path(server_dir)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(_) => Ok(State {
                sa_key: crate::sim::token::random_hex(32),
                ..State::default()
            }),
        }
    }

    pub fn save(&self, server_dir: &Path) -> Result<()> {
        let path = Self::path(server_dir);
        std::fs::create_dir_all(path.parent().expect("db dir"))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)?;
        Ok(())
    }

    /// Server-side apply of one object (namespaced kinds default to `default`); returns
    /// `{key, kind, name, action}`, or `None` for an object without a kind or name.
    pub fn upsert(&mut self, mut obj: Value) -> Option<Value> {
        let key = State::object_key(&obj)?;
        let kind = obj["kind"].as_str().unwrap_or("").to_owned();
        if !cluster_scoped(&kind) && obj.pointer("/metadata/namespace").is_none() {
            obj["metadata"]["namespace"] = json!("default");
        }
        let (action, uid, status) = match self.objects.get(&key) {
            Some(old)
                if *old.get("spec").unwrap_or(&Value::Null)
                    == *obj.get("spec").unwrap_or(&Value::Null)
                    && old.get("data") == obj.get("data")
                    && old.get("stringData") == obj.get("stringData")
                    && old.pointer("/metadata/labels") == obj.pointer("/metadata/labels") =>
            {
                (
                    "unchanged",
                    old.pointer("/metadata/uid").cloned(),
                    old.get("status").cloned(),
                )
            }
            Some(old) => (
                "serverside-applied",
                old.pointer("/metadata/uid").cloned(),
                None,
            ),
            None => ("serverside-applied", None, None),
        };
        obj["metadata"]["uid"] = uid.unwrap_or_else(|| json!(uuidish(&format!("{key}{}", now()))));
        if let Some(st) = status.filter(|_| obj.get("status").is_none()) {
            obj["status"] = st;
        }
        let result =
            json!({"key": key, "kind": kind, "name": obj["metadata"]["name"], "action": action});
        self.objects.insert(key, obj);
        Some(result)
    }

    /// Key of an object: `Kind/namespace/name` (namespace empty for cluster-scoped kinds).
    pub fn object_key(obj: &Value) -> Option<String> {
        let kind = obj.get("kind")?.as_str()?;
        let name = obj.pointer("/metadata/name")?.as_str()?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(if cluster_scoped(kind) { "" } else { "default" });
        Some(format!("{kind}/{ns}/{name}"))
    }
}

/// Kinds without a namespace.
pub fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "Node"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "StorageClass"
            | "PersistentVolume"
            | "PriorityClass"
    )
}
