//! Host-key verification: the `strict`, `accept-new` and `pinned` policies and the
//! [`HostKeyStore`] that `accept-new` learns into.

use crate::SshError;
use russh::keys::{Algorithm, HashAlg, PublicKey};
use siteflow_step::StepContext;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How a server's host key is trusted.
#[derive(Clone)]
pub enum HostKeyPolicy {
    /// The key must be recorded for the host in this known_hosts file (OpenSSH format).
    Strict {
        /// Usually `~/.ssh/known_hosts`.
        known_hosts: PathBuf,
    },
    /// Trust on first use: an unknown host's key is learned into the store; afterwards
    /// only that exact key is accepted, whatever algorithm another key would have.
    AcceptNew {
        /// Where learned keys live (the state database, shared by its runs, in the engine).
        store: Arc<dyn HostKeyStore>,
    },
    /// Only the key with this SHA-256 fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints).
    Pinned {
        /// The expected fingerprint.
        fingerprint: String,
    },
}

impl HostKeyPolicy {
    /// `strict` against `~/.ssh/known_hosts`.
    pub fn strict_default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        HostKeyPolicy::Strict {
            known_hosts: home.join(".ssh").join("known_hosts"),
        }
    }

    /// `pinned`, after checking the fingerprint's shape.
    pub fn pinned(fingerprint: &str) -> Result<Self, SshError> {
        let body = fingerprint.strip_prefix("SHA256:").ok_or_else(|| {
            SshError::InvalidInput(format!(
                "use host-key fingerprint {fingerprint:?}: it must start with `SHA256:` \
                 (print it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host)"
            ))
        })?;
        let body = body.trim_end_matches('=');
        if body.is_empty()
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return Err(SshError::InvalidInput(format!(
                "use host-key fingerprint {fingerprint:?}: after `SHA256:` it must be base64"
            )));
        }
        Ok(HostKeyPolicy::Pinned {
            fingerprint: format!("SHA256:{body}"),
        })
    }
}

impl Default for HostKeyPolicy {
    fn default() -> Self {
        Self::strict_default()
    }
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Strict { known_hosts } => f
                .debug_struct("Strict")
                .field("known_hosts", known_hosts)
                .finish(),
            HostKeyPolicy::AcceptNew { .. } => f.write_str("AcceptNew"),
            HostKeyPolicy::Pinned { fingerprint } => f
                .debug_struct("Pinned")
                .field("fingerprint", fingerprint)
                .finish(),
        }
    }
}

/// Where `accept-new` keeps the keys it learned, keyed by host and port.
///
/// Keys are OpenSSH public-key lines (`ssh-ed25519 AAAA…`), so an implementation can
/// persist them as plain strings.
#[async_trait::async_trait]
pub trait HostKeyStore: Send + Sync {
    /// The keys trusted for `host:port` (empty when the host was never seen).
    async fn load(&self, host: &str, port: u16) -> Result<Vec<String>, SshError>;
    /// Records a newly trusted key for `host:port`.
    async fn save(&self, host: &str, port: u16, key: &str) -> Result<(), SshError>;
}

/// A [`HostKeyStore`] in memory: for tests and one-shot tools.
#[derive(Debug, Default)]
pub struct MemoryHostKeyStore {
    keys: Mutex<HashMap<String, Vec<String>>>,
}

impl MemoryHostKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl HostKeyStore for MemoryHostKeyStore {
    async fn load(&self, host: &str, port: u16) -> Result<Vec<String>, SshError> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .get(&store_key(host, port))
            .cloned()
            .unwrap_or_default())
    }

    async fn save(&self, host: &str, port: u16, key: &str) -> Result<(), SshError> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry(store_key(host, port))
            .or_default()
            .push(key.to_string());
        Ok(())
    }
}

/// A [`HostKeyStore`] in the state database (namespace `ssh.host_keys`), shared by every run
/// of that database like a known_hosts file: a key learned by one run is the only key a later
/// run accepts (`siteflow hosts forget HOST` removes it). Keys a run learned before this store
/// existed (in that run's own values) are still honoured.
#[derive(Clone)]
pub struct RunStateHostKeyStore {
    cx: StepContext,
}

impl RunStateHostKeyStore {
    /// The namespace the keys are saved under.
    pub const NAMESPACE: &'static str = "ssh.host_keys";

    /// A store over the state database of the run the context belongs to.
    pub fn new(cx: StepContext) -> Self {
        Self { cx }
    }
}

fn key_list(value: Option<serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[async_trait::async_trait]
impl HostKeyStore for RunStateHostKeyStore {
    async fn load(&self, host: &str, port: u16) -> Result<Vec<String>, SshError> {
        let k = store_key(host, port);
        let err = |e: siteflow_step::StepError| SshError::HostKeyStore(e.to_string());
        let mut keys = key_list(
            self.cx
                .shared_value(Self::NAMESPACE, &k)
                .await
                .map_err(err)?,
        );
        for legacy in key_list(self.cx.run_value(Self::NAMESPACE, &k).await.map_err(err)?) {
            if !keys.contains(&legacy) {
                keys.push(legacy);
            }
        }
        Ok(keys)
    }

    async fn save(&self, host: &str, port: u16, key: &str) -> Result<(), SshError> {
        let mut keys = self.load(host, port).await?;
        keys.push(key.to_string());
        self.cx
            .set_shared_value(
                Self::NAMESPACE,
                &store_key(host, port),
                serde_json::json!(keys),
            )
            .await
            .map_err(|e| SshError::HostKeyStore(e.to_string()))
    }
}

/// `host:port` with brackets for IPv6 literals, as known_hosts writes it.
pub fn store_key(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `SHA256:…` fingerprint of an OpenSSH public-key line, if it parses.
pub fn line_fingerprint(line: &str) -> Option<String> {
    parse_key_line(line).ok().map(|k| fingerprint(&k))
}

/// The `SHA256:…` fingerprint OpenSSH shows for a key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn parse_key_line(line: &str) -> Result<PublicKey, SshError> {
    PublicKey::from_openssh(line.trim())
        .map_err(|e| SshError::HostKeyStore(format!("parse stored host key: {e}")))
}

fn join_fingerprints(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(fingerprint)
        .collect::<Vec<_>>()
        .join(" or ")
}

fn known_hosts_keys(path: &Path, host: &str, port: u16) -> Result<Vec<PublicKey>, SshError> {
    russh::keys::known_hosts::known_host_keys_path(host, port, path)
        .map(|keys| keys.into_iter().map(|(_, k)| k).collect())
        .map_err(|e| {
            SshError::InvalidInput(format!("read known_hosts file {}: {e}", path.display()))
        })
}

/// Keys already trusted for the host, when the policy knows them before connecting.
async fn trusted_keys(
    policy: &HostKeyPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<PublicKey>, SshError> {
    match policy {
        HostKeyPolicy::Strict { known_hosts } => {
            let (path, host) = (known_hosts.clone(), host.to_string());
            tokio::task::spawn_blocking(move || known_hosts_keys(&path, &host, port))
                .await
                .map_err(|e| SshError::HostKeyStore(e.to_string()))?
        }
        HostKeyPolicy::AcceptNew { store } => store
            .load(host, port)
            .await?
            .iter()
            .map(|l| parse_key_line(l))
            .collect(),
        HostKeyPolicy::Pinned { .. } => Ok(Vec::new()),
    }
}

/// Host-key algorithms to offer, the ones we already trust for the host first, so the
/// server presents the key we know rather than another one it also has.
pub(crate) async fn preferred_algorithms(
    policy: &HostKeyPolicy,
    host: &str,
    port: u16,
) -> Vec<Algorithm> {
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let known = trusted_keys(policy, host, port).await.unwrap_or_default();
    let mut out: Vec<Algorithm> = Vec::new();
    for key in &known {
        let algs = match key.algorithm() {
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ],
            other => vec![other],
        };
        for a in algs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    for a in defaults {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Decides whether `presented` is the key of `host:port` under `policy`; `accept-new`
/// learns an unknown host's key here.
pub(crate) async fn verify(
    policy: &HostKeyPolicy,
    host: &str,
    port: u16,
    presented: &PublicKey,
) -> Result<(), SshError> {
    let label = store_key(host, port);
    let presented_fp = fingerprint(presented);
    match policy {
        HostKeyPolicy::Pinned { fingerprint: pin } => {
            if presented_fp.trim_end_matches('=') == pin.trim_end_matches('=') {
                Ok(())
            } else {
                Err(SshError::HostKeyMismatch {
                    host: label,
                    presented: presented_fp,
                    expected: pin.clone(),
                    source_hint: "update the pinned fingerprint".into(),
                })
            }
        }
        HostKeyPolicy::Strict { known_hosts } => {
            let known = trusted_keys(policy, host, port).await?;
            if known.iter().any(|k| same_key(k, presented)) {
                Ok(())
            } else if known.is_empty() {
                Err(SshError::HostKeyUnknown {
                    host: label,
                    known_hosts: known_hosts.display().to_string(),
                    presented: presented_fp,
                })
            } else {
                Err(SshError::HostKeyMismatch {
                    host: label,
                    presented: presented_fp,
                    expected: join_fingerprints(&known),
                    source_hint: format!(
                        "`ssh-keygen -R {} -f {}`",
                        crate::shell_quote(&known_hosts_host(host, port)),
                        crate::shell_quote(&known_hosts.display().to_string())
                    ),
                })
            }
        }
        HostKeyPolicy::AcceptNew { store } => {
            let known = trusted_keys(policy, host, port).await?;
            if known.iter().any(|k| same_key(k, presented)) {
                Ok(())
            } else if known.is_empty() {
                let line = presented
                    .to_openssh()
                    .map_err(|e| SshError::HostKeyStore(format!("encode host key: {e}")))?;
                tracing::info!(host = %label, fingerprint = %presented_fp, "learned new host key");
                store.save(host, port, &line).await
            } else {
                Err(SshError::HostKeyMismatch {
                    host: label,
                    presented: presented_fp,
                    expected: join_fingerprints(&known),
                    source_hint: format!(
                        "an earlier run learned it (accept-new); if the host was re-keyed on purpose, `siteflow hosts forget {}`",
                        crate::shell_quote(&store_key(host, port))
                    ),
                })
            }
        }
    }
}

/// How known_hosts names a host: bare on port 22, `[host]:port` otherwise.
fn known_hosts_host(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn key_a() -> PublicKey {
        PublicKey::from_openssh(KEY_A).unwrap()
    }

    #[test]
    fn pinned_fingerprint_shape() {
        assert!(HostKeyPolicy::pinned("MD5:aa:bb").is_err());
        assert!(HostKeyPolicy::pinned("SHA256:").is_err());
        assert!(HostKeyPolicy::pinned("SHA256:abc$").is_err());
        assert!(HostKeyPolicy::pinned("SHA256:abc+/=").is_ok());
    }

    #[tokio::test]
    async fn pinned_accepts_only_its_key() {
        let fp = fingerprint(&key_a());
        assert!(fp.starts_with("SHA256:"));
        let ok = HostKeyPolicy::pinned(&fp).unwrap();
        verify(&ok, "h", 22, &key_a()).await.unwrap();
        let bad =
            HostKeyPolicy::pinned("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let err = verify(&bad, "h", 22, &key_a()).await.unwrap_err();
        assert_eq!(err.code(), "HostKeyMismatch");
        assert!(err.to_string().contains(&fp));
    }

    #[tokio::test]
    async fn accept_new_learns_then_demands() {
        let store = Arc::new(MemoryHostKeyStore::new());
        let policy = HostKeyPolicy::AcceptNew {
            store: store.clone(),
        };
        verify(&policy, "h", 2222, &key_a()).await.unwrap();
        assert_eq!(store.load("h", 2222).await.unwrap().len(), 1);
        verify(&policy, "h", 2222, &key_a()).await.unwrap();
        assert_eq!(store.load("h", 2222).await.unwrap().len(), 1);
        // Another port is another host.
        assert!(store.load("h", 22).await.unwrap().is_empty());
    }
}
